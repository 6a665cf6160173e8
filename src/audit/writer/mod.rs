//! The one appender of `audit.jsonl`, shared by every task of the Sidecar.
//!
//! - `append` assigns `seq`, `ts` and `prev`, signs, and returns only after write(2) of the whole
//!   line: "write the record, then act" is a rule callers can keep.
//! - One mutex orders appends, so lines never interleave and `seq` has no gaps.
//! - fsync: `always` (the caller waits; concurrent callers share one fsync — group commit),
//!   `batched` (a flusher thread fsyncs every `fsync_interval` whatever was written since), or
//!   `never` (only the checkpoint's own fsync).
//! - The flusher refreshes `audit.checkpoint` after fsyncing the log, every 1,000 records or 1 s.
//! - `open` resumes the chain from the file's last record; a torn last line (a crash in the
//!   middle of a write) is terminated, kept, and named by a signed segment marker (`recover`);
//!   the checkpoint must agree with what was found (`reconcile`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nix::fcntl::{Flock, FlockArg};

mod flusher;
mod reconcile;
mod recover;

use super::chain::ChainHead;
use super::checkpoint::{self, Checkpoint};
use super::event::{AUDIT_FORMAT_VERSION, AuditDraft, AuditEvent, TornLine, now_rfc3339};
use super::record::{self, MAX_LINE_BYTES, line_hash};
use crate::config::schema::{AuditConfig, FsyncPolicy};
use crate::error::Hinted;

/// Checkpoint at least every this many records…
pub const CHECKPOINT_EVERY_RECORDS: u64 = 1_000;
/// …and at least this often while records arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// `[sidecar.audit]` fsync settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
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
        }
    }
}

/// What `open` found in an existing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub path: PathBuf,
    /// `seq` of the last record already in the file (0 for a new or empty log).
    pub resumed_seq: u64,
    /// A torn last line was found, kept, and a new segment started after it.
    pub torn_tail: Option<TornLine>,
    /// `seq` of the segment marker written after the torn line.
    pub marker_seq: Option<u64>,
    /// The last record was whole but missed its newline (added).
    pub completed_tail: bool,
}

/// Shared handle to the appender (cheap to clone).
#[derive(Clone)]
pub struct AuditWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.inner.shared.path)
            .finish_non_exhaustive()
    }
}

/// Owned by the handles; stops the flusher when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    path: PathBuf,
    checkpoint_path: PathBuf,
    key: SigningKey,
    options: WriterOptions,
    /// Opened for append and exclusively flock'ed: one writer per log.
    file: Flock<File>,
    state: Mutex<State>,
    /// `seq` of the last line whose write(2) finished.
    written: AtomicU64,
    /// `seq` up to which the log is fsynced (the mutex serialises group commits).
    synced: Mutex<u64>,
    flush: Mutex<FlushRequest>,
    flush_wakeup: Condvar,
}

struct State {
    head: ChainHead,
    /// `seq` named by the last checkpoint written.
    checkpointed_seq: u64,
    /// The flusher was asked for a checkpoint and has not written it yet.
    checkpoint_requested: bool,
    /// Set by the first write or fsync error: the log may end in a torn line, so nothing more
    /// may be chained after it until a restart recovers it.
    failed: Option<Hinted>,
    closed: bool,
}

#[derive(Default)]
struct FlushRequest {
    checkpoint_due: bool,
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
    /// Open (or create) the log, resume its chain, and start the flusher.
    pub fn open(
        path: &Path,
        key: SigningKey,
        options: WriterOptions,
    ) -> Result<(AuditWriter, OpenReport), Hinted> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|err| {
                Hinted::new(format!("cannot open audit log {}: {err}", path.display()))
                    .hint("check that the state directory exists and is writable")
            })?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            Hinted::new(format!(
                "audit log {} is locked by another writer ({errno})",
                path.display()
            ))
            .hint("another Sidecar is running on this state directory; stop it first")
        })?;
        let checkpoint_path = checkpoint::path_for(path);
        let resumed = recover::resume(&file, path, &key, &checkpoint_path)?;
        reconcile::check(&checkpoint_path, &key.verifying_key(), &resumed, path)?;
        let recover::Resumed {
            head,
            pending,
            report,
            ..
        } = resumed;

        if !pending.is_empty() {
            (&*file).write_all(&pending).map_err(|err| {
                Hinted::new(format!("cannot write audit log {}: {err}", path.display()))
                    .hint("check free disk space and the file's permissions")
            })?;
        }
        file.sync_data().map_err(|err| {
            Hinted::new(format!("cannot fsync audit log {}: {err}", path.display()))
                .hint("check the file system holding the state directory")
        })?;
        Checkpoint::new(path, head).write(&checkpoint_path, &key)?;

        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            checkpoint_path,
            key,
            options,
            file,
            state: Mutex::new(State {
                head,
                checkpointed_seq: head.seq,
                checkpoint_requested: false,
                failed: None,
                closed: false,
            }),
            written: AtomicU64::new(head.seq),
            synced: Mutex::new(head.seq),
            flush: Mutex::new(FlushRequest::default()),
            flush_wakeup: Condvar::new(),
        });
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
        let mut state = lock(&shared.state);
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        if state.closed {
            return Err(Hinted::new(format!(
                "audit writer for {} is shut down",
                shared.path.display()
            ))
            .hint("no record can be written after shutdown"));
        }
        let seq = state.head.seq + 1;
        let ts = now_rfc3339();
        let prev = state.head.hash_hex();
        object.insert("seq".into(), seq.into());
        object.insert("ts".into(), ts.clone().into());
        object.insert("prev".into(), prev.clone().into());
        let sealed = record::seal(object, &shared.key);
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
        if let Err(err) = (&*shared.file).write_all(&line) {
            let err = Hinted::new(format!(
                "cannot write audit log {}: {err}",
                shared.path.display()
            ))
            .hint("check free disk space; restart the Sidecar to recover the log");
            state.failed = Some(err.clone());
            return Err(err);
        }
        state.head = ChainHead::advance(seq, hash);
        let checkpoint_due =
            !state.checkpoint_requested && seq - state.checkpointed_seq >= CHECKPOINT_EVERY_RECORDS;
        state.checkpoint_requested |= checkpoint_due;
        shared.written.store(seq, Ordering::Release);
        drop(state);

        if checkpoint_due {
            lock(&shared.flush).checkpoint_due = true;
            shared.flush_wakeup.notify_one();
        }
        if shared.options.fsync == FsyncPolicy::Always {
            shared.sync_through(seq)?;
        }
        Ok(AuditEvent {
            v: AUDIT_FORMAT_VERSION,
            seq,
            ts,
            event_id,
            decision: draft.decision,
            reason: draft.reason,
            agent_id: draft.agent_id,
            session_id: draft.session_id,
            token_id: draft.token_id,
            intent: draft.intent,
            policy: draft.policy,
            latency_us: draft.latency_us,
            prev,
            sig: Some(sealed.sig),
        })
    }

    /// `seq` of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.written.load(Ordering::Acquire)
    }

    pub fn path(&self) -> &Path {
        &self.inner.shared.path
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

impl Shared {
    /// Group commit: make every record up to `seq` durable, sharing one fsync among callers.
    fn sync_through(&self, seq: u64) -> Result<(), Hinted> {
        let mut synced = lock(&self.synced);
        if *synced >= seq {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        if let Err(err) = self.file.sync_data() {
            let err = Hinted::new(format!(
                "cannot fsync audit log {}: {err}",
                self.path.display()
            ))
            .hint("check the file system holding the state directory; restart the Sidecar");
            lock(&self.state).failed = Some(err.clone());
            return Err(err);
        }
        *synced = target;
        Ok(())
    }

    fn record_error(&self, err: Hinted) {
        lock(&self.state).failed.get_or_insert(err.clone());
        lock(&self.flush).error.get_or_insert(err);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_can_be_shared_by_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<super::AuditWriter>();
    }
}
