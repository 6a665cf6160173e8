//! What a verification found: the report `firma audit verify --json` prints (schema in
//! `docs/audit-log.md`) and the kinds of findings.

use std::path::PathBuf;

use serde::Serialize;

/// What was found wrong (or, for notices, worth knowing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A line's signature does not verify: its content was edited.
    Modified,
    /// A line is not a record at all (not JSON, missing members, bad signature encoding).
    Malformed,
    /// A line is valid JSON but not its RFC 8785 canonical form (re-encoded or edited).
    NonCanonical,
    /// Records are missing (their `seq` never appears).
    Deleted,
    /// A validly signed line that does not belong to this chain (e.g. from another log).
    Inserted,
    /// Records appear out of order.
    Reordered,
    /// A line repeats an earlier one.
    Duplicated,
    /// The checkpoint names records after the log's end: the tail was cut off.
    Truncated,
    /// The record at the checkpoint's `seq` differs from the one it names.
    Rewritten,
    /// No line from here on verifies with the key: signed (or re-signed) with another key.
    WrongKey,
    /// The checkpoint file is missing beside a non-empty log.
    CheckpointMissing,
    /// The checkpoint file is unreadable or its signature does not verify.
    CheckpointInvalid,
    /// Notice: the last line has no newline and is not a record — a write cut short by a
    /// crash (or in progress). Not tampering.
    TornTail,
    /// Notice: a torn line, terminated and named by the signed segment marker after it.
    TornLineRecovered,
    /// Notice: the first records were deleted by retention, as a signed marker records.
    Retained,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Malformed => "malformed",
            Self::NonCanonical => "non_canonical",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::Duplicated => "duplicated",
            Self::Truncated => "truncated",
            Self::Rewritten => "rewritten",
            Self::WrongKey => "wrong_key",
            Self::CheckpointMissing => "checkpoint_missing",
            Self::CheckpointInvalid => "checkpoint_invalid",
            Self::TornTail => "torn_tail",
            Self::TornLineRecovered => "torn_line_recovered",
            Self::Retained => "retained",
        }
    }
}

/// A problem or notice, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The file it is in (the checkpoint file for checkpoint findings).
    pub file: PathBuf,
    /// 1-based line number in `file` (absent for checkpoint findings).
    pub line: Option<u64>,
    /// The `seq` involved, when known.
    pub seq: Option<u64>,
    pub message: String,
}

/// Per file: how many lines and which `seq`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

/// How the checkpoint compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    /// It verifies and names a record of the log with the same hash.
    Ok,
    /// Not checked (`--no-checkpoint`).
    Skipped,
    /// No file (fine only for an empty log).
    Missing,
    /// Unreadable or bad signature.
    Invalid,
    /// Names a `seq` beyond the log's end.
    Ahead,
    /// Names a record whose hash differs.
    Mismatch,
    /// Not compared because the log is broken before the checkpointed record.
    Unchecked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub path: Option<PathBuf>,
    pub status: CheckpointStatus,
    pub seq: Option<u64>,
    pub ts: Option<String>,
}

/// The outcome of a verification (`--json` prints it; schema in `docs/audit-log.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when no problem was found (notices allowed).
    pub ok: bool,
    /// Hex SHA-256 of the raw public key used.
    pub key_fingerprint: String,
    /// The fingerprint the key had to have, when one was pinned.
    pub pinned_fingerprint: Option<String>,
    /// Verification started at this `seq` (`--from-seq`, or a tail check): earlier records
    /// were not verified.
    pub from_seq: Option<u64>,
    /// The log starts at this `seq` because retention deleted the records before it, as a
    /// signed marker in the log records.
    pub retained_from: Option<u64>,
    pub files: Vec<FileSummary>,
    /// Lines read in all files.
    pub lines: u64,
    /// Records that verified and chained, up to the first problem.
    pub verified: u64,
    /// Of those, segment markers.
    pub segments: u64,
    /// `seq` of the last verified record (0 when none).
    pub last_seq: u64,
    pub checkpoint: CheckpointReport,
    /// The first problem, if any.
    pub problem: Option<Finding>,
    /// Things that are not tampering (a torn tail after a crash, a recovered torn line).
    pub notices: Vec<Finding>,
}
