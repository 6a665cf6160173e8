//! Holding a resumed log against its checkpoint before writing on: the checkpoint must never be
//! ahead of the log (that is truncation) nor name another record (a rewrite) — writing on would
//! bury the evidence.

use ed25519_dalek::VerifyingKey;

use super::recover::{Resumed, cannot_continue};
use crate::audit::checkpoint;
use crate::error::Hinted;
use crate::state_dir::AuditFiles;

/// Refuse to continue a log its checkpoint contradicts.
pub(super) fn check(
    files: &AuditFiles,
    key: &VerifyingKey,
    resumed: &Resumed,
) -> Result<(), Hinted> {
    let checkpoint_path = files.checkpoint();
    let refuse = |what: String| Err(cannot_continue(files, what));
    let last = resumed.last_record;
    match checkpoint::read(&checkpoint_path, key)? {
        None if last.seq > 0 => refuse(format!(
            "its checkpoint {} is missing, so a truncated tail could not be detected",
            checkpoint_path.display()
        )),
        None => Ok(()),
        Some(Err(problem)) => refuse(format!(
            "its checkpoint {} is unusable: {problem}",
            checkpoint_path.display()
        )),
        Some(Ok(point)) if point.seq > last.seq => refuse(format!(
            "the log ends at seq {} but {} records seq {}: the tail was truncated",
            last.seq,
            checkpoint_path.display(),
            point.seq
        )),
        Some(Ok(point))
            if point.seq == last.seq && last.seq > 0 && point.head != last.hash_hex() =>
        {
            refuse(format!(
                "its last record (seq {}) differs from the one {} names",
                last.seq,
                checkpoint_path.display()
            ))
        }
        Some(Ok(_)) => Ok(()),
    }
}
