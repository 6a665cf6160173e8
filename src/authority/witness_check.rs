//! The operator's side of witnessed checkpoints (`firma audit verify --witness`, `doctor`):
//! fetch what the Authority witnessed for this project's Sidecar and compare the local log
//! with it. A log whose tail and `audit.checkpoint` were both deleted verifies on its own, but
//! not against the witness: it is `truncated`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::client::{Target, from_timestamp};
use super::witness::{Verdict, compare, sidecar_id};
use crate::audit::checkpoint;
use crate::audit::record::key_fingerprint;
use crate::config::LoadedConfig;
use crate::config::schema::AuthorityMode;
use crate::error::Hinted;
use crate::state_dir::StateDir;

/// What the comparison found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WitnessReport {
    pub sidecar_id: String,
    /// The Authority asked (a URL or `unix:` socket).
    pub authority: String,
    /// Nothing witnessed yet, or the witnessed checkpoint verified and was compared.
    pub witnessed: Option<WitnessedHead>,
    /// `None` when nothing was witnessed (nothing to compare).
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WitnessedHead {
    pub seq: u64,
    pub head: String,
    /// When the checkpoint was written (its `ts`).
    pub ts: String,
    pub witnessed_at: Option<DateTime<Utc>>,
}

impl WitnessReport {
    /// False when the local log is behind or beside what was witnessed.
    pub fn is_ok(&self) -> bool {
        self.verdict.as_ref().is_none_or(Verdict::is_ok)
    }
}

/// Where the witness is asked: the local Authority's operator socket, or (remote mode) the
/// Authority the Sidecar reports to, with the Sidecar's certificate.
fn witness_target(state: &StateDir, loaded: &LoadedConfig) -> Result<Target, Hinted> {
    match loaded.config.authority.mode {
        AuthorityMode::Local => Target::locate(state, Some(loaded)),
        AuthorityMode::Remote => Ok(Target::for_sidecar(loaded, None)),
    }
}

/// Ask the Authority and compare the log `files` (oldest first), verified with `audit_key`.
pub async fn check(
    state: &StateDir,
    loaded: &LoadedConfig,
    files: &[PathBuf],
    audit_key: &VerifyingKey,
) -> Result<WitnessReport, Hinted> {
    let sidecar = sidecar_id(loaded)?;
    let target = witness_target(state, loaded)?;
    let answer = target.witnessed(&sidecar).await?;
    let mut report = WitnessReport {
        sidecar_id: sidecar.clone(),
        authority: target.url.clone(),
        witnessed: None,
        verdict: None,
    };
    if !answer.found {
        return Ok(report);
    }
    let fingerprint = key_fingerprint(audit_key);
    if answer.audit_key_fingerprint != fingerprint {
        return Err(Hinted::new(format!(
            "the Authority at {} witnessed sidecar {sidecar:?} under audit key {}, but this log is \
             verified with {fingerprint}",
            target.url, answer.audit_key_fingerprint
        ))
        .hint("register the Sidecar's current audit.pub with the Authority (witness_keys), or check --key"));
    }
    let mut line = answer.checkpoint.clone();
    line.push(b'\n');
    let witnessed = checkpoint::parse(&line, audit_key).map_err(|problem| {
        Hinted::new(format!(
            "the checkpoint the Authority at {} witnessed does not verify: {problem}",
            target.url
        ))
        .hint("check that --key is the audit.pub of this Sidecar")
    })?;
    report.verdict = Some(compare(files, &witnessed)?);
    report.witnessed = Some(WitnessedHead {
        seq: witnessed.seq,
        head: witnessed.head,
        ts: witnessed.ts,
        witnessed_at: answer.witnessed_at.as_ref().and_then(from_timestamp),
    });
    Ok(report)
}

/// One operator line about `report`.
pub fn describe(report: &WitnessReport) -> String {
    match (&report.witnessed, &report.verdict) {
        (Some(w), Some(Verdict::Ok { .. })) => format!(
            "the log holds seq {} as witnessed by the Authority ({}, sidecar {:?})",
            w.seq, report.authority, report.sidecar_id
        ),
        (Some(w), Some(Verdict::Truncated { local_last_seq, .. })) => format!(
            "truncated: the Authority ({}) witnessed seq {} (checkpoint of {}) but the local log \
             ends at seq {local_last_seq}: records were removed together with the checkpoint",
            report.authority, w.seq, w.ts
        ),
        (Some(w), Some(Verdict::Rewritten { seq })) => format!(
            "rewritten: record seq {seq} is not the one the Authority ({}) witnessed (head {})",
            report.authority, w.head
        ),
        _ => format!(
            "nothing witnessed yet for sidecar {:?} at {}",
            report.sidecar_id, report.authority
        ),
    }
}
