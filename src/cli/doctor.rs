//! `firma doctor`: read-only checks, each OK / WARN / FAIL with a reason and a fix.
//!
//! Exit codes: 0 when every check is OK or WARN, 1 when any FAILs, 2 on an internal error.
//! A fresh install with no daemon running never FAILs on the daemon (it WARNs with the command
//! that starts it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use owo_colors::OwoColorize;
use serde::Serialize;

use super::{CommandResult, Outcome, output};
use crate::audit::chain::ChainHead;
use crate::audit::verify::{Resume, VerifyOptions, verify};
use crate::config::dirs::{resolve_data_dir, resolve_state_dir};
use crate::config::{Discovery, LoadedConfig, keys};
use crate::lifecycle;
use crate::lifecycle::status::State;
use crate::sidecar::mapping::MappingTable;
use crate::state_dir::StateDir;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output: one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Verify the whole audit log instead of its tail.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    /// What to do about a WARN or FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            reason: reason.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    version: u32,
    checks: &'a [Check],
    worst: Status,
}

pub fn run(args: DoctorArgs, config: Option<PathBuf>) -> CommandResult {
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    let mut checks = vec![binary_check()];
    let loaded = match Discovery::new(config).load_optional() {
        Ok(Some(loaded)) => {
            checks.push(Check::ok(
                "config",
                format!("{} (selected by {})", loaded.path.display(), loaded.source),
            ));
            Some(loaded)
        }
        Ok(None) => {
            checks.push(Check::warn(
                "config",
                "no firma.toml found (no --config, FIRMA_CONFIG unset, no .firma/ above this directory)",
                "run `firma init` in your project",
            ));
            None
        }
        Err(err) => {
            checks.push(Check::fail(
                "config",
                err.message(),
                err.hint_text().unwrap_or("fix the file"),
            ));
            None
        }
    };
    if let Some(loaded) = &loaded {
        checks.push(mapping_check(loaded));
        checks.extend(key_checks(loaded));
    }
    checks.push(daemon_check(&state));
    checks.push(ca_check(&state));
    if let Some(loaded) = &loaded {
        checks.push(audit_check(loaded, &state, args.full));
    }
    checks.push(dir_check(
        "state dir",
        state.path(),
        "`firma init` or `firma sidecar start` creates it",
    ));
    match resolve_data_dir() {
        Ok(dir) => checks.push(dir_check("data dir", dir.path(), "`firma init` creates it")),
        Err(err) => checks.push(Check::warn(
            "data dir",
            err.message(),
            err.hint_text().unwrap_or(""),
        )),
    }
    checks.push(clock_check());

    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    if args.json {
        let report = Report {
            version: 1,
            checks: &checks,
            worst,
        };
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
    } else {
        print_pretty(&checks);
    }
    Ok(if worst == Status::Fail {
        Outcome::FoundProblems
    } else {
        Outcome::Success
    })
}

fn print_pretty(checks: &[Check]) {
    let color = output::color_choice().for_stdout();
    println!("firma doctor");
    println!("============");
    for check in checks {
        let tag = match check.status {
            Status::Ok => "[OK]  ",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
        };
        let tag = match (color, check.status) {
            (false, _) => tag.to_string(),
            (true, Status::Ok) => tag.green().to_string(),
            (true, Status::Warn) => tag.yellow().to_string(),
            (true, Status::Fail) => tag.red().bold().to_string(),
        };
        println!("{tag} {:<14} {}", check.name, check.reason);
        if let Some(fix) = &check.fix {
            println!("       {:<14} fix: {fix}", "");
        }
    }
}

fn binary_check() -> Check {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::current_exe() {
        Ok(path) => Check::ok("binary", format!("{} (v{version})", path.display())),
        Err(err) => Check::fail(
            "binary",
            format!("cannot locate the running binary: {err}"),
            "reinstall firma",
        ),
    }
}

fn mapping_check(loaded: &LoadedConfig) -> Check {
    let path = &loaded.config.sidecar.mapping.rules;
    match MappingTable::load(path) {
        Ok(table) => Check::ok(
            "mapping rules",
            format!("{} rules in {}", table.rules().len(), path.display()),
        ),
        Err(err) => Check::fail(
            "mapping rules",
            err.message(),
            err.hint_text().unwrap_or("fix the file"),
        ),
    }
}

fn key_checks(loaded: &LoadedConfig) -> Vec<Check> {
    let mut keys_to_check = vec![("audit key", loaded.config.sidecar.audit.key.clone())];
    if loaded.config.authority.mode == crate::config::schema::AuthorityMode::Local {
        keys_to_check.push(("authority key", loaded.config.authority.key.clone()));
    }
    keys_to_check
        .into_iter()
        .map(|(name, path)| match keys::load_signing_key(&path) {
            Ok(_) => Check::ok(name, format!("{} (mode 0600)", path.display())),
            Err(err) => Check::fail(name, err.message(), err.hint_text().unwrap_or("")),
        })
        .collect()
}

fn dir_check(name: &'static str, dir: &Path, creator: &str) -> Check {
    match std::fs::metadata(dir) {
        Err(_) => Check::warn(name, format!("{} not present yet", dir.display()), creator),
        Ok(meta) if !meta.is_dir() => Check::fail(
            name,
            format!("{} is not a directory", dir.display()),
            "move it away",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode == 0o700 {
                Check::ok(name, format!("{} (mode 0700)", dir.display()))
            } else {
                Check::fail(
                    name,
                    format!("{} has mode {mode:04o}; expected 0700", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                )
            }
        }
    }
}

/// The daemon pair: all running is OK; nothing running is a WARN (a fresh install); a partly
/// running or unhealthy pair is a FAIL.
fn daemon_check(state: &StateDir) -> Check {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return Check::fail("daemon", format!("cannot probe: {err}"), "retry"),
    };
    let status = runtime.block_on(lifecycle::status::status(state));
    let summary = status
        .components
        .iter()
        .map(|c| format!("{} {}", c.name, c.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let start = format!(
        "firma sidecar start --detach --state-dir {}",
        state.path().display()
    );
    if status.all_running() {
        Check::ok("daemon", summary)
    } else if status
        .components
        .iter()
        .all(|c| c.state == State::Stopped || c.remote)
    {
        Check::warn("daemon", "not running", start)
    } else {
        Check::fail(
            "daemon",
            summary,
            format!(
                "firma sidecar stop --state-dir {0}, then {start}",
                state.path().display()
            ),
        )
    }
}

/// How close to expiry the Sidecar's CA may get before doctor warns.
const CA_WARN_DAYS: i64 = 30;

fn ca_check(state: &StateDir) -> Check {
    let path = state.ca_cert();
    let Ok(pem) = std::fs::read(&path) else {
        return Check::warn(
            "sidecar CA",
            format!("{} not present yet", path.display()),
            "the Sidecar creates it on first start (`firma sidecar start`)",
        );
    };
    let parsed = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|err| err.to_string())
        .and_then(|(_, pem)| {
            pem.parse_x509()
                .map(|cert| cert.validity().not_after.timestamp())
                .map_err(|err| err.to_string())
        });
    let not_after = match parsed {
        Ok(not_after) => not_after,
        Err(err) => {
            return Check::fail(
                "sidecar CA",
                format!("{} is not a PEM certificate: {err}", path.display()),
                "stop the daemon, move generated-firma-ca/ away, and start again to regenerate it",
            );
        }
    };
    let days_left = (not_after - chrono::Utc::now().timestamp()) / 86_400;
    if days_left < 0 {
        Check::fail(
            "sidecar CA",
            format!("{} has expired", path.display()),
            "move generated-firma-ca/ away and restart the daemon",
        )
    } else if days_left < CA_WARN_DAYS {
        Check::warn(
            "sidecar CA",
            format!("{} expires in {days_left} days", path.display()),
            "plan a CA rotation: move generated-firma-ca/ away and restart",
        )
    } else {
        Check::ok(
            "sidecar CA",
            format!("{} (valid for {days_left} more days)", path.display()),
        )
    }
}

/// Above this size doctor verifies only the last part of the log unless `--full`.
const TAIL_BYTES: u64 = 4 << 20;

fn audit_check(loaded: &LoadedConfig, state: &StateDir, full: bool) -> Check {
    let log = state.audit_log();
    let size = match std::fs::metadata(&log) {
        Ok(meta) => meta.len(),
        Err(_) => {
            return Check::warn(
                "audit log",
                format!("{} not present yet", log.display()),
                "`firma init` or the Sidecar creates it",
            );
        }
    };
    let key_path = keys::public_path(&loaded.config.sidecar.audit.key);
    let key = match keys::load_verifying_key(&key_path) {
        Ok(key) => key,
        Err(err) => return Check::fail("audit log", err.message(), err.hint_text().unwrap_or("")),
    };
    let mut options = VerifyOptions::new(vec![log.clone()], key);
    let mut scope = "all of it";
    if !full && size > TAIL_BYTES {
        match tail_resume(&log, size - TAIL_BYTES) {
            Some(resume) => {
                options.resume = Some(resume);
                scope = "the last 4 MiB (--full for all)";
            }
            None => scope = "all of it (no line boundary in the tail)",
        }
    }
    match verify(&options) {
        Ok(report) if report.ok => Check::ok(
            "audit log",
            format!("{} verified records, {scope}", report.verified),
        ),
        Ok(report) => {
            let problem = report.problem.map(|p| match p.line {
                Some(line) => format!("line {line}: {}", p.message),
                None => p.message,
            });
            Check::fail(
                "audit log",
                problem.unwrap_or_else(|| "verification failed".into()),
                format!(
                    "firma audit verify --state-dir {} for the full report",
                    state.path().display()
                ),
            )
        }
        Err(err) => Check::fail("audit log", err.message(), err.hint_text().unwrap_or("")),
    }
}

/// A resume point at the first line starting at or after `from`: its offset, line number and
/// the chain head of the line before it (trusted, not re-verified, in a tail check).
fn tail_resume(log: &Path, from: u64) -> Option<Resume> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    let mut reader = BufReader::new(std::fs::File::open(log).ok()?);
    // The previous line ends at the first newline at or after `from - 1`; find its start too.
    let mut line_number = 0u64;
    let mut offset = 0u64;
    let mut previous: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    reader.seek(SeekFrom::Start(0)).ok()?;
    while offset < from {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).ok()? as u64;
        if read == 0 || !line.ends_with(b"\n") {
            return None;
        }
        offset += read;
        line_number += 1;
        std::mem::swap(&mut previous, &mut line);
    }
    let previous = previous.strip_suffix(b"\n")?;
    let seq = serde_json::from_slice::<serde_json::Value>(previous).ok()?["seq"].as_u64()?;
    use sha2::Digest;
    let hash: [u8; 32] = sha2::Sha256::digest(previous).into();
    Some(Resume {
        offset,
        line: line_number + 1,
        head: ChainHead { seq, hash },
    })
}

/// Timestamps in tokens and audit records are only as good as the clock.
fn clock_check() -> Check {
    let now = chrono::Utc::now();
    let floor = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    if now < floor {
        Check::fail(
            "clock",
            format!("system time {now} is before 2025"),
            "set the system clock (e.g. enable NTP)",
        )
    } else {
        Check::ok("clock", format!("{}", now.format("%Y-%m-%dT%H:%M:%SZ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{AuditDraft, Decision, Intent, PolicyRef};
    use crate::audit::writer::{AuditWriter, WriterOptions};
    use crate::config::schema::FsyncPolicy;

    #[test]
    fn tail_check_resumes_mid_file_and_still_catches_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let key = keys::generate();
        let options = WriterOptions {
            fsync: FsyncPolicy::Never,
            ..WriterOptions::default()
        };
        let (writer, _) = AuditWriter::open(&log, key.clone(), options).unwrap();
        for i in 0..3000 {
            writer
                .append(AuditDraft {
                    decision: Decision::Allow,
                    reason: "allowed".into(),
                    agent_id: "codex".into(),
                    session_id: "s".into(),
                    token_id: format!("t{i}"),
                    intent: Intent {
                        action_class: "communication.internal.send".into(),
                        method: "GET".into(),
                        host: "127.0.0.1".into(),
                        path: format!("/{}", "x".repeat(200)),
                        ..Default::default()
                    },
                    policy: PolicyRef::default(),
                    latency_us: 1,
                })
                .unwrap();
        }
        writer.shutdown().unwrap();
        let size = std::fs::metadata(&log).unwrap().len();
        let resume = tail_resume(&log, size / 2).expect("a resume point");
        assert!(resume.offset >= size / 2 && resume.head.seq > 1000);
        let mut options = VerifyOptions::new(vec![log.clone()], key.verifying_key());
        options.resume = Some(resume);
        let report = verify(&options).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.last_seq, 3000);

        // Flip a byte in the tail: the tail check sees it.
        let mut bytes = std::fs::read(&log).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        std::fs::write(&log, bytes).unwrap();
        assert!(!verify(&options).unwrap().ok);
    }
}
