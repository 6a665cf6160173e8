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
//!   middle of a write) is terminated, kept, and named by a signed segment marker.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nix::fcntl::{Flock, FlockArg};

use super::chain::ChainHead;
use super::checkpoint::{self, Checkpoint};
use super::event::{
    AUDIT_FORMAT_VERSION, AuditDraft, AuditEvent, SEGMENT_KIND, SegmentMarker, TornLine,
};
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

impl OpenReport {
    /// A new segment was started (the Sidecar should log this as a warning).
    pub fn new_segment(&self) -> bool {
        self.torn_tail.is_some()
    }
}

/// RFC 3339 UTC with nanoseconds, as written in `ts`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
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
            .custom_flags(crate::fsutil::NO_FOLLOW)
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
        let mut report = OpenReport {
            path: path.to_path_buf(),
            resumed_seq: 0,
            torn_tail: None,
            marker_seq: None,
            completed_tail: false,
        };
        let verifying = key.verifying_key();
        let tail = read_tail(&file, path)?;
        let cannot_continue = |what: String| {
            Hinted::new(format!(
                "cannot continue audit log {}: {what}",
                path.display()
            ))
            .hint(format!(
                "run `firma audit verify --file {}` to see what is wrong; to start a new log, \
                     move {} and {} aside",
                path.display(),
                path.display(),
                checkpoint_path.display()
            ))
        };
        let mut head = ChainHead::GENESIS;
        if let Some((offset, line)) = &tail.last_line {
            let parsed = record::check_line(line, &verifying).map_err(|problem| {
                cannot_continue(format!(
                    "its last line (byte offset {offset}) is not a record signed by this key: {problem}"
                ))
            })?;
            head = ChainHead::advance(parsed.record.seq(), parsed.hash);
        }
        report.resumed_seq = head.seq;

        let mut pending: Vec<u8> = Vec::new();
        if let Some((offset, bytes)) = &tail.unterminated {
            let whole = record::check_line(bytes, &verifying)
                .ok()
                .filter(|p| head.check(p.record.seq(), p.record.prev()).is_ok());
            pending.push(b'\n');
            if let Some(parsed) = whole {
                head = ChainHead::advance(parsed.record.seq(), parsed.hash);
                report.resumed_seq = head.seq;
                report.completed_tail = true;
            } else {
                let torn = TornLine {
                    offset: *offset,
                    length: bytes.len() as u64,
                    sha256: hex::encode(line_hash(bytes)),
                };
                let marker = SegmentMarker {
                    v: AUDIT_FORMAT_VERSION,
                    seq: head.seq + 1,
                    ts: now_rfc3339(),
                    kind: SEGMENT_KIND.into(),
                    reason: format!(
                        "torn last line ({} bytes at offset {offset}) found on open, \
                         presumably from a crash; new segment",
                        bytes.len()
                    ),
                    torn: Some(torn.clone()),
                    prev: head.hash_hex(),
                    sig: None,
                };
                let sealed = record::seal(record::to_object(&marker), &key);
                head = ChainHead::advance(marker.seq, line_hash(&sealed.line));
                pending.extend_from_slice(&sealed.line);
                pending.push(b'\n');
                report.torn_tail = Some(torn);
                report.marker_seq = Some(marker.seq);
            }
        }

        // The checkpoint must never be ahead of the log: that is truncation, and writing on
        // would overwrite the evidence.
        match checkpoint::read(&checkpoint_path, &verifying)? {
            None if head.seq > 0 => {
                return Err(cannot_continue(format!(
                    "its checkpoint {} is missing, so a truncated tail could not be detected",
                    checkpoint_path.display()
                )));
            }
            None => {}
            Some(Err(problem)) => {
                return Err(cannot_continue(format!(
                    "its checkpoint {} is unusable: {problem}",
                    checkpoint_path.display()
                )));
            }
            Some(Ok(point)) => {
                let last = report.resumed_seq;
                if point.seq > last {
                    return Err(cannot_continue(format!(
                        "the log ends at seq {last} but {} records seq {}: the tail was truncated",
                        checkpoint_path.display(),
                        point.seq
                    )));
                }
                if point.seq == last && point.seq > 0 {
                    let last_hash = match &tail.last_line {
                        _ if report.completed_tail => None,
                        Some((_, line)) => Some(hex::encode(line_hash(line))),
                        None => None,
                    };
                    if last_hash.is_some_and(|h| h != point.head) {
                        return Err(cannot_continue(format!(
                            "its last record (seq {last}) differs from the one {} names",
                            checkpoint_path.display()
                        )));
                    }
                }
            }
        }

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
                .spawn(move || flusher_loop(&shared, head))
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
            sandbox_id: draft.sandbox_id,
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

/// Periodic fsync (batched policy) and checkpoints, until asked to stop.
fn flusher_loop(shared: &Shared, mut checkpointed: ChainHead) {
    let tick = match shared.options.fsync {
        FsyncPolicy::Batched => shared
            .options
            .fsync_interval
            .clamp(Duration::from_millis(1), CHECKPOINT_EVERY),
        FsyncPolicy::Always | FsyncPolicy::Never => CHECKPOINT_EVERY,
    };
    let mut last_checkpoint = Instant::now();
    loop {
        let (stop, due) = {
            let mut flush = lock(&shared.flush);
            if !flush.stop && !flush.checkpoint_due {
                flush = shared
                    .flush_wakeup
                    .wait_timeout(flush, tick)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let due = std::mem::take(&mut flush.checkpoint_due);
            (flush.stop, due)
        };
        let written = shared.written.load(Ordering::Acquire);
        if shared.options.fsync == FsyncPolicy::Batched
            && let Err(err) = shared.sync_through(written)
        {
            shared.record_error(err);
            return;
        }
        let head = lock(&shared.state).head;
        let checkpoint_now =
            head != checkpointed && (stop || due || last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if checkpoint_now {
            // The checkpoint covers only what is durable.
            let result = shared.sync_through(head.seq).and_then(|()| {
                Checkpoint::new(&shared.path, head).write(&shared.checkpoint_path, &shared.key)
            });
            if let Err(err) = result {
                shared.record_error(err);
                return;
            }
            {
                let mut state = lock(&shared.state);
                state.checkpointed_seq = head.seq;
                state.checkpoint_requested = false;
            }
            checkpointed = head;
            last_checkpoint = Instant::now();
        }
        if stop {
            if let Err(err) = shared.sync_through(written) {
                shared.record_error(err);
            }
            return;
        }
    }
}

/// The end of an existing log: its last newline-terminated line and any unterminated bytes
/// after it, each with its byte offset.
struct Tail {
    last_line: Option<(u64, Vec<u8>)>,
    unterminated: Option<(u64, Vec<u8>)>,
}

fn read_tail(file: &File, path: &Path) -> Result<Tail, Hinted> {
    let io_err = |err: std::io::Error| {
        Hinted::new(format!("cannot read audit log {}: {err}", path.display()))
            .hint("check the file's permissions")
    };
    let len = file.metadata().map_err(io_err)?.len();
    const CHUNK: u64 = 64 * 1024;
    let limit = 2 * (MAX_LINE_BYTES as u64 + 1);
    // Read backwards until the buffer holds the last whole line (two newlines, or the start).
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        let ends_with_newline = buf.last() == Some(&b'\n');
        let enough = if ends_with_newline {
            newlines >= 2
        } else {
            newlines >= 2 || (newlines >= 1 && buf.len() > MAX_LINE_BYTES)
        };
        if start == 0 || enough || (len - start) > limit {
            break;
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0; (start - from) as usize];
        file.read_exact_at(&mut chunk, from).map_err(io_err)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let (body, unterminated) = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) if i + 1 < buf.len() => (&buf[..=i], Some(buf[i + 1..].to_vec())),
        Some(i) => (&buf[..=i], None),
        None => (&buf[..0], (!buf.is_empty()).then(|| buf.clone())),
    };
    let unterminated = unterminated.map(|bytes| (len - bytes.len() as u64, bytes));
    let last_line = if body.is_empty() {
        None
    } else {
        let without_newline = &body[..body.len() - 1];
        let line_start = without_newline
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if line_start == 0 && start > 0 {
            return Err(Hinted::new(format!(
                "the last line of audit log {} exceeds {MAX_LINE_BYTES} bytes",
                path.display()
            ))
            .hint("the file is not an audit log written by firma; move it aside"));
        }
        Some((
            start + line_start as u64,
            without_newline[line_start..].to_vec(),
        ))
    };
    Ok(Tail {
        last_line,
        unterminated,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_can_be_shared_by_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<super::AuditWriter>();
    }
}
