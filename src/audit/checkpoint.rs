//! `audit.checkpoint`: one signed canonical JSON line beside the log naming its last durable
//! record (`seq` and line hash), so truncating the tail of the log is caught. Refreshed by the
//! writer at least every 1,000 records or 1 s, always after the log was fsynced.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::ChainHead;
use super::record::{self, LineProblem};
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};

/// Domain tag of checkpoint signatures (distinct from records', so neither replays as the other).
pub const CHECKPOINT_DOMAIN: &[u8] = b"firma-audit-checkpoint-v1\n";
/// `kind` of a checkpoint.
pub const CHECKPOINT_KIND: &str = "checkpoint";

/// The checkpoint file's single line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    /// Always [`CHECKPOINT_KIND`].
    pub kind: String,
    /// File name of the log it covers (`audit.jsonl`).
    pub log: String,
    /// `seq` of the last record covered (0: an empty log).
    pub seq: u64,
    /// Hex SHA-256 of that record's line (64 zeros for an empty log).
    pub head: String,
    /// When it was written (RFC 3339 UTC).
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Checkpoint {
    pub fn new(log: &Path, head: ChainHead) -> Self {
        Self {
            v: super::event::AUDIT_FORMAT_VERSION,
            kind: CHECKPOINT_KIND.into(),
            log: log
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            seq: head.seq,
            head: head.hash_hex(),
            ts: super::event::now_rfc3339(),
            sig: None,
        }
    }

    /// Sign it: the signed line (with newline) and its `sig`.
    pub fn seal(&self, key: &SigningKey) -> (Vec<u8>, String) {
        let sealed = record::seal_with(CHECKPOINT_DOMAIN, record::to_object(self), key);
        let mut line = sealed.line;
        line.push(b'\n');
        (line, sealed.sig)
    }

    /// The signed line (with newline).
    pub fn to_line(&self, key: &SigningKey) -> Vec<u8> {
        self.seal(key).0
    }

    /// Sign and atomically replace the checkpoint file; returns the line written.
    pub fn write(&self, path: &Path, key: &SigningKey) -> Result<Vec<u8>, Hinted> {
        let (line, _) = self.seal(key);
        write_atomic(path, &line, 0o600, Durability::Durable)?;
        Ok(line)
    }
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// Not a canonical signed checkpoint line.
    Unreadable(String),
    /// Its signature does not verify with the key.
    BadSignature,
}

impl std::fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) => write!(f, "not a checkpoint: {why}"),
            Self::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

/// Read a checkpoint file: `Ok(None)` when it does not exist; `Err` only for I/O errors.
pub fn read(
    path: &Path,
    key: &VerifyingKey,
) -> Result<Option<Result<Checkpoint, CheckpointProblem>>, Hinted> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(
                Hinted::new(format!("cannot read {}: {err}", path.display()))
                    .hint("check the file's permissions"),
            );
        }
    };
    Ok(Some(parse(&bytes, key)))
}

/// Check a checkpoint file's contents.
pub fn parse(bytes: &[u8], key: &VerifyingKey) -> Result<Checkpoint, CheckpointProblem> {
    let line = bytes.strip_suffix(b"\n").ok_or_else(|| {
        CheckpointProblem::Unreadable("not a single newline-terminated line".into())
    })?;
    let (value, message, signature) =
        record::parse_signed(line, CHECKPOINT_DOMAIN).map_err(|problem| match problem {
            LineProblem::BadSignature => CheckpointProblem::BadSignature,
            other => CheckpointProblem::Unreadable(other.to_string()),
        })?;
    let checkpoint: Checkpoint = serde_json::from_value(value)
        .map_err(|err| CheckpointProblem::Unreadable(err.to_string()))?;
    if checkpoint.kind != CHECKPOINT_KIND {
        return Err(CheckpointProblem::Unreadable(format!(
            "kind {:?} is not {CHECKPOINT_KIND:?}",
            checkpoint.kind
        )));
    }
    key.verify_strict(&message, &signature)
        .map_err(|_| CheckpointProblem::BadSignature)?;
    Ok(checkpoint)
}
