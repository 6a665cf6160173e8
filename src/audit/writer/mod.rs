//! The one appender of `audit.jsonl`, shared by every task of the Sidecar.
//!
//! - A record goes through three stages. **Chain** (serial, under the state lock): assign `seq`,
//!   `ts` and `prev`, fill in the record's body (its canonical bytes without `sig`) and hash it —
//!   in format 2 that hash is what the next record's `prev` names, so the next record can be
//!   chained at once. **Sign** (parallel, no lock): the caller's own thread signs its record.
//!   **Write** (serial, in `seq` order): a signed record is written at once when every earlier
//!   one is; else it waits in line and whoever writes the record before it writes it too (with
//!   one write(2) for all that are ready).
//! - `append` (blocking) and `record` (for async callers: it never waits for other records'
//!   signatures) return only after write(2) of the whole line: "write the record, then act" is a
//!   rule callers can keep. Lines never interleave and `seq` has no gaps: a record chained but
//!   never written (its caller panicked) fails the writer.
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
//!   the checkpoint must agree with what was found (`reconcile`). A log whose last record is of
//!   format 1 continues in format 2 after a segment marker that says so.
//! - Rotation (`rotate`): by size, interval or on request, the live file becomes `audit.jsonl.1`
//!   and a new file starts with a signed marker continuing the chain; retention deletes the
//!   oldest rotations after recording them in a signed marker.

mod flusher;
mod live;
mod reconcile;
mod recover;
mod rotate;

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};

use self::live::{LiveFile, PathCheck};
pub use self::rotate::{RetentionReport, RotationReport, Trigger};
use super::chain::ChainHead;
use super::checkpoint::Checkpoint;
use super::event::{
    AUDIT_FORMAT_VERSION, AuditDraft, AuditEvent, DraftRef, SegmentMarker, TornLine, WriterFields,
    new_event_id, now_rfc3339,
};
use super::event_bytes::{EventTemplate, Unsigned};
use super::record::{self, MAX_LINE_BYTES, RECORD_DOMAIN_V2, RecordSigner, line_hash};
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
/// Bytes `,"sig":"<88 base64 digits>"` adds to a record's body.
const SIG_MEMBER_BYTES: usize = 97;

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
    /// The last record was of this older format: a segment marker (`marker_seq`) switched the
    /// log to the current one.
    pub upgraded_from: Option<u64>,
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

/// What [`AuditWriter::record`] did with a record.
#[derive(Debug)]
pub enum Recorded {
    /// Written (before `record` returned).
    Written { seq: u64 },
    /// Signed and waiting for an earlier record, still being signed by another caller: written
    /// when `written` resolves (with the writer's error if it failed meanwhile).
    Queued {
        seq: u64,
        written: oneshot::Receiver<Result<(), Hinted>>,
    },
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
    /// Signs checkpoints.
    key: SigningKey,
    /// Signs records.
    signer: RecordSigner,
    options: WriterOptions,
    state: Mutex<State>,
    /// With `state`: records drained (a rotation waits for that), a rotation finished (appends
    /// wait for that), the writer failed.
    progress: Condvar,
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
    /// The last record chained (possibly still being signed): the next one chains to it.
    chained: ChainHead,
    /// The last record written to the live file.
    written: ChainHead,
    /// Records chained but not yet written, from `written.seq + 1` on.
    in_flight: VecDeque<Slot>,
    /// A rotation is waiting for the records in flight and holds back new ones.
    rotating: bool,
    /// Threads waiting on `progress`.
    waiting: usize,
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

/// A record in flight: its chain hash, and once signed its line and who waits for it.
struct Slot {
    hash: [u8; 32],
    line: Option<Vec<u8>>,
    waiter: Option<Waiter>,
}

/// Who learns that a queued record was written.
enum Waiter {
    Task(oneshot::Sender<Result<(), Hinted>>),
    Thread(std::sync::mpsc::SyncSender<Result<(), Hinted>>),
}

impl Waiter {
    fn tell(self, outcome: Result<(), Hinted>) {
        match self {
            Self::Task(sender) => drop(sender.send(outcome)),
            Self::Thread(sender) => drop(sender.send(outcome)),
        }
    }
}

/// How a caller waits for its record when an earlier one is still being signed.
#[derive(Clone, Copy)]
enum Wait {
    Task,
    Thread,
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
        let signer = RecordSigner::new(&key);
        let resumed = recover::resume(&live, &files, &signer)?;
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
            signer,
            options,
            state: Mutex::new(State {
                chained: head,
                written: head,
                in_flight: VecDeque::new(),
                rotating: false,
                waiting: 0,
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
            progress: Condvar::new(),
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

    /// Chain, sign and write one record; returns it (with `seq`, `ts`, `prev`, `sig`) after the
    /// whole line was written (and, with `fsync = always`, fsynced). Blocks while an earlier
    /// record is being signed by another caller.
    pub fn append(&self, draft: AuditDraft) -> Result<AuditEvent, Hinted> {
        let shared = &self.inner.shared;
        let event_id = new_event_id();
        let template = event_template(&draft.borrowed(), &event_id)?;
        let (link, sig, queued) = shared.append_event(&template, Wait::Thread)?;
        if let Some(Queued::Thread(written)) = queued {
            written.recv().unwrap_or_else(|_| Err(shared.gone()))?;
        }
        if shared.options.fsync == FsyncPolicy::Always {
            shared.sync_through(link.seq)?;
        }
        Ok(draft.into_event(WriterFields {
            v: AUDIT_FORMAT_VERSION,
            seq: link.seq,
            ts: link.ts,
            event_id,
            prev: link.prev,
            sig: Some(sig),
        }))
    }

    /// Chain, sign and write one record without waiting for other callers' signatures: an
    /// async caller awaits [`Recorded::Queued`] instead of blocking a worker. With
    /// `fsync = always` the caller must then make it durable ([`AuditWriter::sync_through`],
    /// which blocks) before acting on it.
    pub fn record(&self, draft: &DraftRef<'_>) -> Result<Recorded, Hinted> {
        let shared = &self.inner.shared;
        let event_id = new_event_id();
        let template = event_template(draft, &event_id)?;
        let (link, _, queued) = shared.append_event(&template, Wait::Task)?;
        Ok(match queued {
            Some(Queued::Task(written)) => Recorded::Queued {
                seq: link.seq,
                written,
            },
            _ => Recorded::Written { seq: link.seq },
        })
    }

    /// Whether every record must be fsynced before it is acted on (`fsync = always`).
    pub fn syncs_every_record(&self) -> bool {
        self.inner.shared.options.fsync == FsyncPolicy::Always
    }

    /// Make every record up to `seq` durable (one fsync shared by concurrent callers).
    pub fn sync_through(&self, seq: u64) -> Result<(), Hinted> {
        self.inner.shared.sync_through(seq)
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

    /// Stop accepting records, write those in flight, fsync, and write the final checkpoint.
    /// Idempotent.
    pub fn shutdown(&self) -> Result<(), Hinted> {
        self.inner.stop()
    }
}

/// The template of a decision event, or why it cannot be written.
fn event_template(draft: &DraftRef<'_>, event_id: &str) -> Result<EventTemplate, Hinted> {
    EventTemplate::new(draft, event_id, AUDIT_FORMAT_VERSION).map_err(|err| {
        Hinted::new(format!("audit record cannot be encoded: {err}"))
            .hint("a request field is implausible; the call is refused")
    })
}

impl Inner {
    fn stop(&self) -> Result<(), Hinted> {
        {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            // Records already chained are written before the final checkpoint.
            while !state.in_flight.is_empty() && state.failed.is_none() {
                state = self.shared.wait(state);
            }
        }
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

/// The chain fields of a record, as assigned when it was chained.
#[derive(Debug, Clone)]
struct Link {
    seq: u64,
    ts: String,
    prev: String,
}

/// A record chained but not yet handed over for writing. Dropped without [`Shared::commit`]
/// (its caller panicked), it leaves a gap no later record may pass: the writer fails.
struct Pending<'a> {
    shared: &'a Shared,
    link: Link,
    unsigned: Unsigned,
    committed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let mut state = lock(&self.shared.state);
            self.shared.fail(
                &mut state,
                format!(
                    "record seq {} was chained but never written (its caller stopped)",
                    self.link.seq
                ),
            );
        }
    }
}

/// A record waiting in line, and how its caller learns it was written.
enum Queued {
    Task(oneshot::Receiver<Result<(), Hinted>>),
    Thread(std::sync::mpsc::Receiver<Result<(), Hinted>>),
}

impl Shared {
    /// Chain, sign and commit a decision event.
    fn append_event(
        &self,
        template: &EventTemplate,
        wait: Wait,
    ) -> Result<(Link, String, Option<Queued>), Hinted> {
        let pending = self.chain(|link| {
            template
                .fill(RECORD_DOMAIN_V2, &link.prev, link.seq, &link.ts)
                .map_err(|err| Hinted::new(format!("audit record cannot be encoded: {err}")))
        })?;
        let link = pending.link.clone();
        let (sig, queued) = self.commit(pending, wait)?;
        Ok((link, sig, queued))
    }

    /// Chain, sign and write a record given as an object (`seq`, `ts`, `prev` are set here),
    /// waiting until it is written: its `seq`.
    fn append_object(&self, object: Map<String, Value>) -> Result<u64, Hinted> {
        let pending = self.chain(|link| {
            let mut object = object;
            object.insert("seq".into(), link.seq.into());
            object.insert("ts".into(), link.ts.clone().into());
            object.insert("prev".into(), link.prev.clone().into());
            object.insert("v".into(), AUDIT_FORMAT_VERSION.into());
            Ok(record::unsigned(RECORD_DOMAIN_V2, &object))
        })?;
        let seq = pending.link.seq;
        if let (_, Some(Queued::Thread(written))) = self.commit(pending, Wait::Thread)? {
            written.recv().unwrap_or_else(|_| Err(self.gone()))?;
        }
        Ok(seq)
    }

    /// Stage 1, serial: assign `seq`, `ts` and `prev`, let `prepare` build the record's body,
    /// and make its hash the chain's head.
    fn chain(
        &self,
        prepare: impl FnOnce(&Link) -> Result<Unsigned, Hinted>,
    ) -> Result<Pending<'_>, Hinted> {
        let mut state = lock(&self.state);
        while state.rotating && state.failed.is_none() {
            state = self.wait(state);
        }
        self.usable(&mut state)?;
        let link = Link {
            seq: state.chained.seq + 1,
            ts: now_rfc3339(),
            prev: state.chained.hash_hex(),
        };
        let unsigned = prepare(&link)?;
        let line_len = unsigned.body().len() + SIG_MEMBER_BYTES;
        if line_len > MAX_LINE_BYTES {
            return Err(Hinted::new(format!(
                "audit record of {line_len} bytes exceeds the {MAX_LINE_BYTES}-byte line limit"
            ))
            .hint("a request field (path, reason) is implausibly long; the call is refused"));
        }
        let hash = line_hash(unsigned.body());
        state.chained = ChainHead::advance(link.seq, hash);
        state.in_flight.push_back(Slot {
            hash,
            line: None,
            waiter: None,
        });
        Ok(Pending {
            shared: self,
            link,
            unsigned,
            committed: false,
        })
    }

    /// Stages 2 and 3: sign (on the caller's thread, no lock held), then write — now, if every
    /// earlier record is written, else when the last of them is (the caller then waits as
    /// `wait` says). Returns the signature, and how to wait if the record is queued.
    fn commit(
        &self,
        mut pending: Pending<'_>,
        wait: Wait,
    ) -> Result<(String, Option<Queued>), Hinted> {
        let (line, sig) = record::sign(&pending.unsigned, &self.signer, 1);
        pending.committed = true;
        let seq = pending.link.seq;
        let mut state = lock(&self.state);
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        let index = usize::try_from(seq - state.written.seq - 1).expect("in flight");
        let slot = &mut state.in_flight[index];
        slot.line = Some(line);
        if index > 0 {
            // An earlier record is still being signed; its caller writes this one too.
            let queued = match wait {
                Wait::Task => {
                    let (tell, written) = oneshot::channel();
                    slot.waiter = Some(Waiter::Task(tell));
                    Queued::Task(written)
                }
                Wait::Thread => {
                    let (tell, written) = std::sync::mpsc::sync_channel(1);
                    slot.waiter = Some(Waiter::Thread(tell));
                    Queued::Thread(written)
                }
            };
            return Ok((sig, Some(queued)));
        }
        self.write_ready(&mut state)?;
        Ok((sig, None))
    }

    /// Write the signed records at the head of the line (one write(2)), and tell whoever waits
    /// for them.
    fn write_ready(&self, state: &mut State) -> Result<(), Hinted> {
        let ready = state
            .in_flight
            .iter()
            .take_while(|slot| slot.line.is_some())
            .count();
        let mut slots: Vec<Slot> = state.in_flight.drain(..ready).collect();
        let mut batch = slots[0].line.take().expect("ready");
        for slot in &mut slots[1..] {
            batch.extend_from_slice(&slot.line.take().expect("ready"));
        }
        let outcome = self.write_batch(state, &batch, &slots);
        for slot in slots {
            if let Some(waiter) = slot.waiter {
                waiter.tell(outcome.clone());
            }
        }
        if state.waiting > 0 {
            self.progress.notify_all();
        }
        outcome
    }

    fn write_batch(&self, state: &mut State, batch: &[u8], slots: &[Slot]) -> Result<(), Hinted> {
        if let Err(err) = (&*state.live.file).write_all(batch) {
            return Err(self.fail(
                state,
                format!("cannot write {}: {err}", self.files.live().display()),
            ));
        }
        let last = state.written.seq + slots.len() as u64;
        state.written = ChainHead::advance(last, slots[slots.len() - 1].hash);
        metrics().audit_written(batch.len());
        state.live_bytes += batch.len() as u64;
        state.live_records += slots.len() as u64;
        self.written.store(last, Ordering::Release);
        // Before the records are acknowledged, the path must still lead to the file they went to.
        if state.identity_checked.elapsed() >= IDENTITY_CHECK_EVERY {
            self.check_identity(state)?;
        }
        let checkpoint_due = !state.checkpoint_requested
            && last - state.checkpointed_seq >= CHECKPOINT_EVERY_RECORDS;
        state.checkpoint_requested |= checkpoint_due;
        let rotation_due = !state.rotation_requested
            && self
                .options
                .rotate_size
                .is_some_and(|size| state.live_bytes >= size);
        state.rotation_requested |= rotation_due;
        if checkpoint_due || rotation_due {
            let mut flush = lock(&self.flush);
            flush.checkpoint_due |= checkpoint_due;
            flush.rotation_due |= rotation_due;
            drop(flush);
            self.flush_wakeup.notify_one();
        }
        Ok(())
    }

    /// Wait on `progress` (a rotation finished, records drained, the writer failed).
    fn wait<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.waiting += 1;
        let mut state = self
            .progress
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.waiting -= 1;
        state
    }

    /// The error of a record whose writer went away without a word (cannot happen while the
    /// writer lives; said plainly if it does).
    fn gone(&self) -> Hinted {
        Hinted::new(format!(
            "audit writer for {} stopped before writing the record",
            self.files.live().display()
        ))
        .hint("restart the Sidecar")
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

    /// Enter the failed state (once: the first cause is kept), log it and publish it, and tell
    /// every record in line; returns the error every later append gets.
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
        for slot in &mut state.in_flight {
            if let Some(waiter) = slot.waiter.take() {
                waiter.tell(Err(err.clone()));
            }
        }
        self.progress.notify_all();
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
            (Arc::clone(&state.live), state.written.seq)
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
    signer: &RecordSigner,
) -> (Vec<u8>, ChainHead) {
    marker.v = AUDIT_FORMAT_VERSION;
    marker.seq = head.seq + 1;
    marker.ts = now_rfc3339();
    marker.prev = head.hash_hex();
    marker.sig = None;
    let sealed = record::seal_by(record::to_object(&marker), signer);
    let after = ChainHead::advance(marker.seq, sealed.chain_hash);
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
