//! Rotation and retention, both chain-preserving.
//!
//! Rotation: older rotations shift up (`audit.jsonl.1` → `.2`, …), then — under the append lock,
//! so no record is in flight — the live file is renamed to `audit.jsonl.1` and a new live file
//! is created whose first line is a signed marker continuing the chain (`prev` = the hash of the
//! previous file's last line). The fsyncs and the checkpoint follow outside the append lock, so
//! a call waits only for a rename, a create and one signature.
//!
//! Retention (`keep`, `max_total_size`): after a rotation, the oldest rotations beyond the limits
//! are named in a signed marker in the live file (the `seq` range and the hash of the last
//! record dropped), fsynced, and only then deleted — so `firma audit verify` can tell retention
//! from truncation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::live::{LiveFile, sync_dir};
use super::recover::read_tail;
use super::{Shared, lock, seal_marker};
use crate::audit::chain::ChainHead;
use crate::audit::event::{Retained, Rotation, SegmentMarker};
use crate::audit::lines::LineSplitter;
use crate::audit::record;
use crate::error::Hinted;

/// Why a rotation happens (written in the new file's marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The live file reached `rotate_size`.
    Size,
    /// `rotate_interval` elapsed.
    Interval,
    /// `firma audit rotate`.
    Operator,
    /// A rotation interrupted by a crash, completed when the log was opened again.
    Resume,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Interval => "interval",
            Self::Operator => "operator",
            Self::Resume => "resume",
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Where the previous live file went (`audit.jsonl.1`).
    pub rotated_to: PathBuf,
    /// `seq` of its last record.
    pub last_seq: u64,
    /// `seq` of the marker that starts the new live file.
    pub marker_seq: u64,
    /// Rotations deleted by retention afterwards, if any.
    pub retention: Option<RetentionReport>,
}

/// What retention deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub retained: Retained,
    /// `seq` of the marker that records it.
    pub marker_seq: u64,
}

impl Shared {
    pub(super) fn rotate(&self, trigger: Trigger) -> Result<RotationReport, Hinted> {
        let _rotating = lock(&self.rotation);
        {
            let mut state = lock(&self.state);
            self.usable(&mut state)?;
            self.check_identity(&mut state)?;
        }
        self.shift_rotations()?;
        let target = self.files.rotated(1);
        let previous = file_name(&target);
        let live_path = self.files.live();

        let mut synced = lock(&self.synced);
        let (old, last, marker_head) = {
            let mut state = lock(&self.state);
            self.usable(&mut state)?;
            self.check_identity(&mut state)?;
            std::fs::rename(live_path, &target).map_err(|err| {
                Hinted::new(format!(
                    "cannot rotate {} to {}: {err}",
                    live_path.display(),
                    target.display()
                ))
                .hint("check the audit directory's permissions; the log is unchanged")
            })?;
            let new = match LiveFile::open(live_path, true) {
                Ok(new) => new,
                Err(err) => {
                    // Put the log back as it was.
                    if let Err(back) = std::fs::rename(&target, live_path) {
                        return Err(self.fail(
                            &mut state,
                            format!(
                                "rotation failed ({}) and {} could not be renamed back: {back}",
                                err.message(),
                                target.display()
                            ),
                        ));
                    }
                    return Err(err);
                }
            };
            let mut marker = SegmentMarker::new(format!(
                "rotation ({}): the previous lines are in {previous}",
                trigger.as_str()
            ));
            marker.rotation = Some(Rotation {
                trigger: trigger.as_str().into(),
                previous: previous.clone(),
            });
            let (line, after) = seal_marker(marker, state.head, &self.key);
            let last = state.head;
            let old = std::mem::replace(&mut state.live, Arc::new(new));
            let now = Instant::now();
            state.identity_checked = now;
            if let Err(err) = (&*state.live.file).write_all(&line) {
                return Err(self.fail(
                    &mut state,
                    format!("cannot write {}: {err}", live_path.display()),
                ));
            }
            state.head = after;
            state.live_bytes = line.len() as u64;
            state.live_since = now;
            state.live_records = 0;
            state.rotation_requested = false;
            self.written.store(after.seq, Ordering::Release);
            (old, last, after)
        };
        // Durable: the old file's tail, then the new file and the directory entries.
        let durable = (|| -> std::io::Result<ChainHead> {
            old.file.sync_data()?;
            let (live, head) = {
                let state = lock(&self.state);
                (Arc::clone(&state.live), state.head)
            };
            live.file.sync_data()?;
            sync_dir(self.files.dir())?;
            Ok(head)
        })();
        let head = match durable {
            Ok(head) => head,
            Err(err) => {
                drop(synced);
                let mut state = lock(&self.state);
                return Err(self.fail(
                    &mut state,
                    format!("cannot fsync the rotated audit log: {err}"),
                ));
            }
        };
        *synced = head.seq;
        drop(synced);
        if let Err(err) = self.write_checkpoint(head) {
            self.record_error(err.clone());
            return Err(err);
        }
        {
            let mut state = lock(&self.state);
            state.checkpointed_seq = state.checkpointed_seq.max(head.seq);
        }
        tracing::info!(
            rotated_to = %target.display(),
            last_seq = last.seq,
            trigger = trigger.as_str(),
            "audit log rotated"
        );
        let retention = match self.apply_retention() {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!(error = %err, "audit log retention not applied");
                None
            }
        };
        Ok(RotationReport {
            rotated_to: target,
            last_seq: last.seq,
            marker_seq: marker_head.seq,
            retention,
        })
    }

    /// `audit.jsonl.N` → `.N+1`, highest first, so `.1` is free. Gaps (from a crash during an
    /// earlier shift) are kept: only the order matters.
    fn shift_rotations(&self) -> Result<(), Hinted> {
        for (n, path) in self.files.rotations().into_iter().rev() {
            let to = self.files.rotated(n + 1);
            std::fs::rename(&path, &to).map_err(|err| {
                Hinted::new(format!(
                    "cannot rename {} to {}: {err}",
                    path.display(),
                    to.display()
                ))
                .hint("check the audit directory's permissions")
            })?;
        }
        Ok(())
    }

    /// Delete the oldest rotations beyond `keep` / `max_total_size`, after recording them.
    fn apply_retention(&self) -> Result<Option<RetentionReport>, Hinted> {
        let (keep, max_total) = (self.options.keep, self.options.max_total_size);
        if keep.is_none() && max_total.is_none() {
            return Ok(None);
        }
        // Newest first.
        let rotations = self.files.rotations();
        let sizes: Vec<u64> = rotations
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let live_bytes = lock(&self.state).live_bytes;
        let mut kept = keep.map_or(rotations.len(), |k| k.min(rotations.len()));
        if let Some(max) = max_total {
            while kept > 0 && live_bytes + sizes[..kept].iter().sum::<u64>() > max {
                kept -= 1;
            }
        }
        if kept == rotations.len() {
            return Ok(None);
        }
        let dropped: Vec<&Path> = rotations[kept..]
            .iter()
            .rev()
            .map(|(_, p)| p.as_path())
            .collect();
        let first_seq = first_seq(dropped[0])?;
        let newest_dropped = dropped[dropped.len() - 1];
        let (last_seq, last_hash) = last_record(newest_dropped, &self.key.verifying_key())?;
        let retained = Retained {
            first_seq,
            last_seq,
            last_hash,
            files: dropped.iter().map(|p| file_name(p)).collect(),
        };
        let mut marker = SegmentMarker::new(format!(
            "retention: records {first_seq}..={last_seq} ({} file(s)) deleted by the \
             configured limits (keep / max_total_size)",
            dropped.len()
        ));
        marker.retained = Some(retained.clone());
        let appended = self.append_object(record::to_object(&marker))?;
        self.sync_through(appended.seq)?;
        for path in &dropped {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %err, "cannot delete a rotated audit file");
            }
        }
        let _ = sync_dir(self.files.dir());
        tracing::info!(
            first_seq,
            last_seq,
            files = dropped.len(),
            "audit retention deleted the oldest rotations"
        );
        Ok(Some(RetentionReport {
            retained,
            marker_seq: appended.seq,
        }))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `seq` of the first line of a rotated file.
fn first_seq(path: &Path) -> Result<u64, Hinted> {
    let unusable = |why: String| {
        Hinted::new(format!(
            "cannot read the first record of {}: {why}",
            path.display()
        ))
        .hint("the file is not a rotation firma wrote; move it out of the audit directory")
    };
    let first = LineSplitter::open(path)
        .map_err(|err| unusable(err.to_string()))?
        .next()
        .ok_or_else(|| unusable("the file is empty".into()))?
        .map_err(|err| unusable(err.to_string()))?;
    record::parse_record(&first.bytes)
        .map(|r| r.seq())
        .map_err(|problem| unusable(problem.to_string()))
}

/// `seq` and hex hash of the last line of a rotated file (which must verify with the key).
fn last_record(path: &Path, key: &ed25519_dalek::VerifyingKey) -> Result<(u64, String), Hinted> {
    let file = std::fs::File::open(path)
        .map_err(|err| Hinted::new(format!("cannot read {}: {err}", path.display())))?;
    let tail = read_tail(&file, path)?;
    let (_, line) = tail
        .last_line
        .ok_or_else(|| Hinted::new(format!("{} holds no whole record", path.display())))?;
    let parsed = record::check_line(&line, key).map_err(|problem| {
        Hinted::new(format!(
            "the last line of {} is not a record signed by this key: {problem}",
            path.display()
        ))
    })?;
    Ok((parsed.record.seq(), hex::encode(parsed.hash)))
}
