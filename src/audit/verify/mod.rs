//! `firma audit verify`: check one log (or its rotations, oldest first) and its checkpoint, and
//! say what is wrong at the first bad line — modified, deleted, inserted, reordered,
//! duplicated, truncated, wrong key, non-canonical — or that a torn tail is a crash, not
//! tampering.
//!
//! - [`pipeline`]: memory flat in file size — a reader thread cuts the files into chunks of
//!   lines; workers (one per core) parse, check the canonical form and batch-verify the
//!   signatures of a chunk ([`batch`]: one key, so half the work of a general batch);
//! - [`walker`]: this thread takes the results in order, checks the chain and the checkpoint, and
//!   after the first problem keeps reading to gather evidence about it;
//! - [`classify`]: turns the first problem and its evidence into a kind (is the missing `seq`
//!   further down? do all later lines fail the key?);
//! - [`start`]: where the walk starts — the first record, `--from-seq`, a byte offset, or after
//!   records retention deleted (named by a signed marker);
//! - [`report`]: what comes out (`--json` prints it).

mod batch;
mod classify;
mod pipeline;
mod report;
mod start;
mod walker;

use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;

pub use self::report::{
    CheckpointReport, CheckpointStatus, FileSummary, Finding, FindingKind, VerifyReport,
};
pub use self::start::{resume_at_offset, resume_at_seq};
use self::walker::Walker;
use super::chain::ChainHead;
use super::checkpoint;
use super::progress::ProgressHook;
use crate::error::Hinted;
use crate::state_dir::AuditFiles;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Log files, oldest first; the chain runs across them.
    pub files: Vec<PathBuf>,
    pub key: VerifyingKey,
    /// The checkpoint to hold the log against (`None`: do not check the tail).
    pub checkpoint: Option<PathBuf>,
    /// Worker threads for parsing and signatures (0: one per core; 1: no threads at all).
    pub threads: usize,
    /// Verify signatures in batches (falls back to single checks to find a bad one).
    pub batch: bool,
    /// Start in the first file at a line already verified up to (incremental verification).
    pub resume: Option<Resume>,
    /// Stop at the first problem instead of reading on to classify it (kinds are then less
    /// precise: a bad signature is reported as `modified`, a chain break without lookahead).
    pub stop_at_first: bool,
    /// The fingerprint `key` must have (`--key-fingerprint`, `[sidecar.audit] key_fingerprint`):
    /// verifying with another key is a `wrong_key` problem.
    pub pinned_fingerprint: Option<String>,
    /// Told how far the walk has come (`firma audit verify`'s progress bar).
    pub progress: Option<ProgressHook>,
}

/// A trusted point to continue verification from: the first file is read from byte `offset`
/// (the start of line `line`), and the record before it is `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub offset: u64,
    pub line: u64,
    pub head: ChainHead,
}

impl VerifyOptions {
    pub fn new(files: Vec<PathBuf>, key: VerifyingKey) -> Self {
        let checkpoint = files.last().map(|f| AuditFiles::of_log(f).checkpoint());
        Self {
            files,
            key,
            checkpoint,
            threads: 0,
            batch: true,
            resume: None,
            stop_at_first: false,
            pinned_fingerprint: None,
            progress: None,
        }
    }
}

/// Verify the files against the key and checkpoint.
pub fn verify(options: &VerifyOptions) -> Result<VerifyReport, Hinted> {
    if options.key.is_weak() {
        return Err(
            Hinted::new("the public key is a weak (small-order) Ed25519 key")
                .hint("pass the audit.pub written by `firma init`"),
        );
    }
    // The checkpoint first, then the files: the log only grows after the checkpoint was read.
    let checkpoint = match &options.checkpoint {
        Some(path) => Some((path.clone(), checkpoint::read(path, &options.key)?)),
        None => None,
    };
    let opened = open_files(options)?;
    let expected = match &checkpoint {
        Some((_, Some(Ok(point)))) => Some(point.clone()),
        _ => None,
    };
    let retained = match options.resume {
        None => start::retained_start(&options.files)?,
        Some(_) => None,
    };
    let mut walker = Walker::new(options, expected.as_ref(), retained);
    pipeline::run(options, opened, &mut walker)?;
    Ok(walker.finish(options, checkpoint))
}

/// Open every file before reading any, so a rotation while verifying (which renames files)
/// cannot swap one under the walk.
fn open_files(options: &VerifyOptions) -> Result<Vec<Option<std::fs::File>>, Hinted> {
    let last = options.files.len().saturating_sub(1);
    options
        .files
        .iter()
        .enumerate()
        .map(|(i, file)| match std::fs::File::open(file) {
            Ok(opened) => Ok(Some(opened)),
            // A deleted log whose checkpoint survived is evidence, not an input error: verify
            // it as empty and let the checkpoint report the truncation.
            Err(err)
                if i == last
                    && err.kind() == std::io::ErrorKind::NotFound
                    && options.checkpoint.as_ref().is_some_and(|c| c.exists()) =>
            {
                Ok(None)
            }
            Err(err) => {
                Err(
                    Hinted::new(format!("cannot read audit log {}: {err}", file.display())).hint(
                        "check the path; the Sidecar creates <state dir>/audit.jsonl, \
                     `firma init` an empty one",
                    ),
                )
            }
        })
        .collect()
}
