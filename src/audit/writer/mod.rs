//! The one appender of `audit.jsonl`, shared by every task of the Sidecar.
//!
//! - `append` assigns `seq`, `ts` and `prev`, signs, and returns only after write(2) of the whole
//!   line: "write the record, then act" is a rule callers can keep.
//! - One mutex orders appends, so lines never interleave and `seq` has no gaps.
//! - fsync: `always` (the caller waits; concurrent callers share one fsync — group commit),
//!   `batched` (a flusher thread fsyncs every `fsync_interval` whatever was written since), or
//!   `never` (only the checkpoint's own fsync).
//! - The flusher refreshes `audit.checkpoint` after fsyncing the log, every 1,000 records or 1 s.
//! - Evidence or nothing: the writer checks at least every 100 ms (and before acknowledging an
//!   append when the last check is older) that the log's path still leads to the file it
//!   writes, whole. Deleted, renamed, replaced or truncated, or a failed write or fsync: every
//!   later append fails
//!   (the Sidecar answers 503), the state change is logged once and published ([`AuditHealth`]).
//!   Recovery is an operator's restart.
//! - `open` resumes the chain from the log's last record; a torn last line (a crash in the
//!   middle of a write) is terminated, kept, and named by a signed segment marker (`recover`);
//!   the checkpoint must agree with what was found (`reconcile`).
//! - Rotation (`rotate`): by size, interval or on request, the live file becomes `audit.jsonl.1`
//!   and a new file starts with a signed marker continuing the chain; retention deletes the
//!   oldest rotations after recording them in a signed marker.

mod flusher;
mod live;
mod reconcile;
mod recover;
mod rotate;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Map, Value};
use tokio::sync::watch;

use self::live::{LiveFile, PathCheck};
pub use self::rotate::{RetentionReport, RotationReport, Trigger};
use super::chain::ChainHead;
use super::checkpoint::Checkpoint;
use super::event::{
    AUDIT_FORMAT_VERSION, AuditDraft, AuditEvent, SegmentMarker, TornLine, now_rfc3339,
};
use super::record::{self, MAX_LINE_BYTES, line_hash};
use crate::config::schema::{AuditConfig, FsyncPolicy};
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::metrics::sidecar::metrics;
use crate::state_dir::AuditFiles;

/// Checkpoint at least every this many records…
pub const CHECKPOINT_EVERY_RECORDS: u64 = 1_000;
/// …and at least this often while records arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How stale the check that the log's path still leads to the open file may be when an append
/// is acknowledged.
pub const IDENTITY_CHECK_EVERY: Duration = Duration::from_millis(100);

/// `[sidecar.audit]` settings the writer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    /// Rotate when the live file reaches this many bytes (`None`: never by size).
    pub rotate_size: Option<u64>,
    /// Rotate when the live file is this old and holds a record (`None`: never by time).
    pub rotate_interval: Option<Duration>,
    /// Keep at most this many rotated files (`None`: no limit).
    pub keep: Option<usize>,
    /// Keep the log's files (live + rotated) under this many bytes in all, deleting the oldest
    /// rotations (`None`: no limit).
    pub max_total_size: Option<u64>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self::from_config(&AuditConfig::default())
    }
}

impl WriterOptions {
    pub fn from_config(config: &AuditConfig) -> Self {
        Self {
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            rotate_size: config.rotate_size.map(|s| s.bytes()).filter(|&s| s > 0),
            rotate_interval: config.rotate_interval,
            keep: config.keep,
            max_total_size: config.max_total_size.map(|s| s.bytes()),
        }
    }
}

/// What `open` found in an existing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub path: PathBuf,
    /// `seq` of the last record already in the log (0 for a new or empty log).
    pub resumed_seq: u64,
    /// A torn last line was found, kept, and a new segment started after it.
    pub torn_tail: Option<TornLine>,
    /// `seq` of the segment marker written after the torn line.
    pub marker_seq: Option<u64>,
    /// The last record was whole but missed its newline (added).
    pub completed_tail: bool,
    /// The live file was empty or missing after a rotation (a crash between the rename and the
    /// new file's first line): the chain was resumed from `audit.jsonl.1` and the rotation
    /// completed.
    pub completed_rotation: bool,
}

/// Whether the writer accepts records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditHealth {
    Ok,
    /// Every append fails until an operator restarts the Sidecar.
    Unavailable {
        /// Why, for operators (names the file).
        reason: String,
        /// When it happened (RFC 3339 UTC).
        since: String,
    },
}

/// A signed checkpoint the writer has just written (for witnesses such as the Authority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointNotice {
    /// The checkpoint, with its `sig`.
    pub checkpoint: Checkpoint,
    /// The exact signed line written to `audit.checkpoint` (with its newline).
    pub line: Vec<u8>,
}

/// Shared handle to the appender (cheap to clone).
#[derive(Clone)]
pub struct AuditWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.inner.shared.files.live())
            .finish_non_exhaustive()
    }
}

/// Owned by the handles; stops the flusher when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    files: AuditFiles,
    key: SigningKey,
    options: WriterOptions,
    state: Mutex<State>,
    /// `seq` of the last line whose write(2) finished.
    written: AtomicU64,
    /// `seq` up to which the log is fsynced (the mutex serialises group commits and rotations;
    /// always taken before `state`).
    synced: Mutex<u64>,
    /// Serialises checkpoint writes; the last head written.
    checkpoint: Mutex<ChainHead>,
    /// Serialises rotations (flusher, operator).
    rotation: Mutex<()>,
    flush: Mutex<FlushRequest>,
    flush_wakeup: Condvar,
    health: watch::Sender<AuditHealth>,
    checkpoints: watch::Sender<Option<CheckpointNotice>>,
}

struct State {
    head: ChainHead,
    live: Arc<LiveFile>,
    /// Bytes in the live file.
    live_bytes: u64,
    /// When the live file was started (or opened), for `rotate_interval`.
    live_since: Instant,
    /// Records appended to the live file since it was started or opened.
    live_records: u64,
    /// When the path was last found to lead to the live file.
    identity_checked: Instant,
    /// `seq` named by the last checkpoint written.
    checkpointed_seq: u64,
    /// The flusher was asked for a checkpoint and has not written it yet.
    checkpoint_requested: bool,
    /// The flusher was asked to rotate and has not yet.
    rotation_requested: bool,
    /// Set by the first write, fsync or identity failure: nothing more may be chained until a
    /// restart recovers the log.
    failed: Option<Hinted>,
    closed: bool,
}

#[derive(Default)]
struct FlushRequest {
    checkpoint_due: bool,
    rotation_due: bool,
    stop: bool,
    /// The flusher's first error, returned by `shutdown`.
    error: Option<Hinted>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AuditWriter {
    /// Open (or create) the log whose live file is `path`, resume its chain, and start the
    /// flusher.
    pub fn open(
        path: &Path,
        key: SigningKey,
        options: WriterOptions,
    ) -> Result<(AuditWriter, OpenReport), Hinted> {
        let files = AuditFiles::of_log(path);
        let live = LiveFile::open(path, false)?;
        let resumed = recover::resume(&live, &files, &key)?;
        reconcile::check(&files, &key.verifying_key(), &resumed)?;
        let recover::Resumed {
            head,
            pending,
            report,
            ..
        } = resumed;

        if !pending.is_empty() {
            (&*live.file).write_all(&pending).map_err(|err| {
                Hinted::new(format!("cannot write audit log {}: {err}", path.display()))
                    .hint("check free disk space and the file's permissions")
            })?;
        }
        live.file.sync_data().map_err(|err| {
            Hinted::new(format!("cannot fsync audit log {}: {err}", path.display()))
                .hint("check the file system holding the audit log")
        })?;
        let live_bytes = live.len().unwrap_or(0);
        let now = Instant::now();
        let (health, _) = watch::channel(AuditHealth::Ok);
        let (checkpoints, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            files,
            key,
            options,
            state: Mutex::new(State {
                head,
                live: Arc::new(live),
                live_bytes,
                live_since: now,
                live_records: 0,
                identity_checked: now,
                checkpointed_seq: head.seq,
                checkpoint_requested: false,
                rotation_requested: false,
                failed: None,
                closed: false,
            }),
            written: AtomicU64::new(head.seq),
            synced: Mutex::new(head.seq),
            checkpoint: Mutex::new(ChainHead::GENESIS),
            rotation: Mutex::new(()),
            flush: Mutex::new(FlushRequest::default()),
            flush_wakeup: Condvar::new(),
            health,
            checkpoints,
        });
        shared.write_checkpoint(head)?;
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("audit-flusher".into())
                .spawn(move || flusher::run(&shared, head))
                .map_err(|err| Hinted::new(format!("cannot start the audit flusher: {err}")))?
        };
        let writer = AuditWriter {
            inner: Arc::new(Inner {
                shared,
                flusher: Mutex::new(Some(flusher)),
            }),
        };
        Ok((writer, report))
    }

    /// Sign, chain and write one record; returns it (with `seq`, `ts`, `prev`, `sig`) after the
    /// whole line was written (and, with `fsync = always`, fsynced).
    pub fn append(&self, draft: AuditDraft) -> Result<AuditEvent, Hinted> {
        let shared = &self.inner.shared;
        let event_id = uuid::Uuid::now_v7().to_string();
        // Everything that does not depend on the chain is prepared outside the lock.
        let mut object = record::to_object(&draft);
        object.insert("v".into(), AUDIT_FORMAT_VERSION.into());
        object.insert("event_id".into(), event_id.clone().into());
        let appended = shared.append_object(object)?;
        if shared.options.fsync == FsyncPolicy::Always {
            shared.sync_through(appended.seq)?;
        }
        Ok(AuditEvent {
            v: AUDIT_FORMAT_VERSION,
            seq: appended.seq,
            ts: appended.ts,
            event_id,
            decision: draft.decision,
            reason: draft.reason,
            agent_id: draft.agent_id,
            session_id: draft.session_id,
            token_id: draft.token_id,
            sandbox_id: draft.sandbox_id,
            intent: draft.intent,
            policy: draft.policy,
            latency_us: draft.latency_us,
            prev: appended.prev,
            sig: Some(appended.sig),
        })
    }

    /// Rotate now (`firma audit rotate`): see [`RotationReport`].
    pub fn rotate(&self, trigger: Trigger) -> Result<RotationReport, Hinted> {
        self.inner.shared.rotate(trigger)
    }

    /// Whether appends are accepted; changes are published to every receiver.
    pub fn health(&self) -> watch::Receiver<AuditHealth> {
        self.inner.shared.health.subscribe()
    }

    /// The signed checkpoints as they are written (the latest one; `None` before the first).
    /// A Sidecar reports them to its witness from here.
    pub fn checkpoints(&self) -> watch::Receiver<Option<CheckpointNotice>> {
        self.inner.shared.checkpoints.subscribe()
    }

    /// `seq` of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.written.load(Ordering::Acquire)
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        self.inner.shared.files.live()
    }

    /// The log's files.
    pub fn files(&self) -> &AuditFiles {
        &self.inner.shared.files
    }

    /// Stop accepting records, fsync, and write the final checkpoint. Idempotent.
    pub fn shutdown(&self) -> Result<(), Hinted> {
        self.inner.stop()
    }
}

impl Inner {
    fn stop(&self) -> Result<(), Hinted> {
        lock(&self.shared.state).closed = true;
        {
            let mut flush = lock(&self.shared.flush);
            flush.stop = true;
        }
        self.shared.flush_wakeup.notify_one();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
        match lock(&self.shared.flush).error.clone() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What `append_object` wrote.
struct Appended {
    seq: u64,
    ts: String,
    prev: String,
    sig: String,
}

impl Shared {
    /// Chain, sign and write one record given as an object (`seq`, `ts`, `prev` are set here).
    fn append_object(&self, mut object: Map<String, Value>) -> Result<Appended, Hinted> {
        let mut state = lock(&self.state);
        self.usable(&mut state)?;
        let seq = state.head.seq + 1;
        let ts = now_rfc3339();
        let prev = state.head.hash_hex();
        object.insert("seq".into(), seq.into());
        object.insert("ts".into(), ts.clone().into());
        object.insert("prev".into(), prev.clone().into());
        let sealed = record::seal(object, &self.key);
        let mut line = sealed.line;
        if line.len() > MAX_LINE_BYTES {
            return Err(Hinted::new(format!(
                "audit record of {} bytes exceeds the {MAX_LINE_BYTES}-byte line limit",
                line.len()
            ))
            .hint("a request field (path, reason) is implausibly long; the call is refused"));
        }
        let hash = line_hash(&line);
        line.push(b'\n');
        if let Err(err) = (&*state.live.file).write_all(&line) {
            return Err(self.fail(
                &mut state,
                format!("cannot write {}: {err}", self.files.live().display()),
            ));
        }
        state.head = ChainHead::advance(seq, hash);
        metrics().audit_written(line.len());
        state.live_bytes += line.len() as u64;
        state.live_records += 1;
        self.written.store(seq, Ordering::Release);
        // Before the record is acknowledged, the path must still lead to the file it went to.
        if state.identity_checked.elapsed() >= IDENTITY_CHECK_EVERY {
            self.check_identity(&mut state)?;
        }
        let checkpoint_due =
            !state.checkpoint_requested && seq - state.checkpointed_seq >= CHECKPOINT_EVERY_RECORDS;
        state.checkpoint_requested |= checkpoint_due;
        let rotation_due = !state.rotation_requested
            && self
                .options
                .rotate_size
                .is_some_and(|size| state.live_bytes >= size);
        state.rotation_requested |= rotation_due;
        drop(state);

        if checkpoint_due || rotation_due {
            let mut flush = lock(&self.flush);
            flush.checkpoint_due |= checkpoint_due;
            flush.rotation_due |= rotation_due;
            drop(flush);
            self.flush_wakeup.notify_one();
        }
        Ok(Appended {
            seq,
            ts,
            prev,
            sig: sealed.sig,
        })
    }

    /// Err if no record may be written now.
    fn usable(&self, state: &mut State) -> Result<(), Hinted> {
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        if state.closed {
            return Err(Hinted::new(format!(
                "audit writer for {} is shut down",
                self.files.live().display()
            ))
            .hint("no record can be written after shutdown"));
        }
        Ok(())
    }

    /// Does the log's path still lead to the live file? If not, the writer fails.
    fn check_identity(&self, state: &mut State) -> Result<(), Hinted> {
        let path = self.files.live();
        let problem = match state.live.check_path(path, state.live_bytes) {
            PathCheck::Same => {
                state.identity_checked = Instant::now();
                return Ok(());
            }
            PathCheck::Missing => format!("{} was deleted or renamed", path.display()),
            PathCheck::Replaced => format!("{} was replaced by another file", path.display()),
            PathCheck::Truncated { size } => format!(
                "{} was truncated to {size} bytes (the writer wrote {})",
                path.display(),
                state.live_bytes
            ),
            PathCheck::Unknown(err) => format!("{} cannot be checked: {err}", path.display()),
        };
        Err(self.fail(state, problem))
    }

    /// Enter the failed state (once: the first cause is kept), log it and publish it; returns
    /// the error every later append gets.
    fn fail(&self, state: &mut State, cause: String) -> Hinted {
        if let Some(err) = &state.failed {
            return err.clone();
        }
        let err = Hinted::new(format!("audit log unavailable: {cause}")).hint(
            "no call is forwarded until an operator restores the log and restarts the Sidecar \
             (docs/security.md, \"audit_unavailable\")",
        );
        tracing::error!(
            log = %self.files.live().display(),
            cause = %cause,
            "audit log unavailable: refusing every call (503 audit_unavailable) until the \
             Sidecar is restarted"
        );
        state.failed = Some(err.clone());
        lock(&self.flush).error.get_or_insert_with(|| err.clone());
        self.health.send_replace(AuditHealth::Unavailable {
            reason: cause,
            since: now_rfc3339(),
        });
        err
    }

    /// Record an error found outside an append (flusher, rotation).
    fn record_error(&self, err: Hinted) {
        let mut state = lock(&self.state);
        self.fail(&mut state, err.message().to_string());
    }

    /// Group commit: make every record up to `seq` durable, sharing one fsync among callers.
    fn sync_through(&self, seq: u64) -> Result<(), Hinted> {
        let mut synced = lock(&self.synced);
        if *synced >= seq {
            return Ok(());
        }
        let (live, target) = {
            let state = lock(&self.state);
            (Arc::clone(&state.live), state.head.seq)
        };
        let started = Instant::now();
        if let Err(err) = live.file.sync_data() {
            let mut state = lock(&self.state);
            return Err(self.fail(
                &mut state,
                format!("cannot fsync {}: {err}", self.files.live().display()),
            ));
        }
        metrics().audit_fsynced(target.saturating_sub(*synced), started.elapsed());
        *synced = target;
        Ok(())
    }

    /// Sign and write the checkpoint naming `head` (never one older than the last written), and
    /// publish it.
    fn write_checkpoint(&self, head: ChainHead) -> Result<(), Hinted> {
        let mut last = lock(&self.checkpoint);
        if head.seq < last.seq {
            return Ok(());
        }
        let mut point = Checkpoint::new(self.files.live(), head);
        let (line, sig) = point.seal(&self.key);
        write_atomic(&self.files.checkpoint(), &line, 0o600, Durability::Durable)?;
        *last = head;
        point.sig = Some(sig);
        self.checkpoints.send_replace(Some(CheckpointNotice {
            checkpoint: point,
            line,
        }));
        Ok(())
    }
}

/// Chain `marker` after `head` and sign it: the line (with newline) and the head after it.
fn seal_marker(
    mut marker: SegmentMarker,
    head: ChainHead,
    key: &SigningKey,
) -> (Vec<u8>, ChainHead) {
    marker.seq = head.seq + 1;
    marker.ts = now_rfc3339();
    marker.prev = head.hash_hex();
    marker.sig = None;
    let sealed = record::seal(record::to_object(&marker), key);
    let after = ChainHead::advance(marker.seq, line_hash(&sealed.line));
    let mut line = sealed.line;
    line.push(b'\n');
    (line, after)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_can_be_shared_by_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<super::AuditWriter>();
    }
}
