//! `firma audit verify`: check one log (or its rotations, oldest first) and its checkpoint, and
//! say what is wrong at the first bad line — modified, deleted, inserted, reordered,
//! duplicated, truncated, wrong key, non-canonical — or that a torn tail is a crash, not
//! tampering.
//!
//! Pipeline (memory flat in file size): a reader thread cuts the files into chunks of lines;
//! workers (one per core) parse, check the canonical form and batch-verify the signatures of a
//! chunk; this thread walks the results in order and checks the chain. After the first problem
//! it keeps reading to classify it (is the missing `seq` further down? do all later lines fail
//! the key?).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use super::chain::{ChainHead, ChainProblem};
use super::checkpoint::{self, Checkpoint, CheckpointProblem};
use super::event::AuditRecord;
use super::progress::{Progress, ProgressHook};
use super::reader::{LineSplitter, RawLine};
use super::record::{self, LineProblem, key_fingerprint, line_hash};
use crate::error::Hinted;

/// Lines per unit of work.
const CHUNK_LINES: usize = 2048;
/// Recent line hashes kept to recognise a duplicated line (bounded memory).
const DUPLICATE_WINDOW: usize = 4096;

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
        let checkpoint = files.last().map(|f| checkpoint::path_for(f));
        Self {
            files,
            key,
            checkpoint,
            threads: 0,
            batch: true,
            resume: None,
            stop_at_first: false,
            progress: None,
        }
    }
}

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

/// What a worker found in one line.
#[derive(Debug)]
struct LineCheck {
    file: usize,
    number: u64,
    offset: u64,
    len: u64,
    terminated: bool,
    /// SHA-256 of the bytes (zeros for a line too long to buffer).
    hash: [u8; 32],
    outcome: Result<Checked, LineProblem>,
}

#[derive(Debug)]
struct Checked {
    seq: u64,
    prev: String,
    segment: bool,
    marker_torn: Option<super::event::TornLine>,
}

struct Chunk {
    index: u64,
    file: usize,
    lines: Vec<RawLine>,
}

/// Verify the files against the key and checkpoint.
pub fn verify(options: &VerifyOptions) -> Result<VerifyReport, Hinted> {
    if options.key.is_weak() {
        return Err(
            Hinted::new("the public key is a weak (small-order) Ed25519 key")
                .hint("pass the audit.pub written by `firma init`"),
        );
    }
    for (i, file) in options.files.iter().enumerate() {
        if let Err(err) = std::fs::metadata(file) {
            // A deleted log whose checkpoint survived is evidence, not an input error: verify
            // it as empty and let the checkpoint report the truncation.
            let checkpointed = options.checkpoint.as_ref().is_some_and(|c| c.exists());
            if i + 1 == options.files.len()
                && err.kind() == std::io::ErrorKind::NotFound
                && checkpointed
            {
                continue;
            }
            return Err(
                Hinted::new(format!("cannot read audit log {}: {err}", file.display())).hint(
                    "check the path; the Sidecar creates <state dir>/audit.jsonl, \
                     `firma init` an empty one",
                ),
            );
        }
    }
    let checkpoint = match &options.checkpoint {
        Some(path) => Some((path.clone(), checkpoint::read(path, &options.key)?)),
        None => None,
    };
    let expected = match &checkpoint {
        Some((_, Some(Ok(point)))) => Some(point.clone()),
        _ => None,
    };
    let mut walker = Walker::new(options, expected.as_ref());

    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    if threads <= 1 {
        produce(options, |chunk| {
            walker.take(check_chunk(&chunk, &options.key, options.batch));
            !(options.stop_at_first && walker.first.is_some())
        })?;
    } else {
        run_parallel(options, threads, &mut walker)?;
    }
    Ok(walker.finish(options, checkpoint))
}

/// Cut the files into chunks and hand each to `sink` (which returns false to stop).
fn produce(options: &VerifyOptions, mut sink: impl FnMut(Chunk) -> bool) -> Result<(), Hinted> {
    let mut index = 0;
    // Stopping early only pays if the walker sees lines as soon as they are read.
    let chunk_lines = if options.stop_at_first {
        1
    } else {
        CHUNK_LINES
    };
    for (file_index, path) in options.files.iter().enumerate() {
        let lines = match options.resume {
            Some(resume) if file_index == 0 => {
                LineSplitter::open_at(path, resume.line, resume.offset)
            }
            _ => LineSplitter::open(path),
        };
        let lines = match lines {
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound
                    && file_index + 1 == options.files.len() =>
            {
                continue; // a deleted last log (see `verify`)
            }
            other => other.map_err(|err| read_error(path, &err))?,
        };
        let mut chunk = Vec::with_capacity(chunk_lines);
        for line in lines {
            chunk.push(line.map_err(|err| read_error(path, &err))?);
            if chunk.len() == chunk_lines {
                let lines = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_lines));
                if !sink(Chunk {
                    index,
                    file: file_index,
                    lines,
                }) {
                    return Ok(());
                }
                index += 1;
            }
        }
        if !chunk.is_empty() {
            if !sink(Chunk {
                index,
                file: file_index,
                lines: chunk,
            }) {
                return Ok(());
            }
            index += 1;
        }
    }
    Ok(())
}

fn read_error(path: &Path, err: &std::io::Error) -> Hinted {
    Hinted::new(format!("cannot read audit log {}: {err}", path.display()))
        .hint("check the file's permissions")
}

fn run_parallel(
    options: &VerifyOptions,
    threads: usize,
    walker: &mut Walker,
) -> Result<(), Hinted> {
    let (work_tx, work_rx) = sync_channel::<Chunk>(threads * 2);
    let (done_tx, done_rx) = sync_channel::<(u64, Vec<LineCheck>)>(threads * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(options, |chunk| work_tx.send(chunk).is_ok()));
        for _ in 0..threads {
            let work_rx = Arc::clone(&work_rx);
            let done_tx: SyncSender<_> = done_tx.clone();
            scope.spawn(move || worker(&work_rx, &done_tx, options));
        }
        drop(done_tx);
        reorder(&done_rx, walker);
        producer
            .join()
            .unwrap_or_else(|_| Err(Hinted::new("audit reader thread panicked")))
    })
}

fn worker(
    work: &Mutex<Receiver<Chunk>>,
    done: &SyncSender<(u64, Vec<LineCheck>)>,
    options: &VerifyOptions,
) {
    loop {
        let chunk = match work.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(chunk) = chunk else { return };
        let checks = check_chunk(&chunk, &options.key, options.batch);
        if done.send((chunk.index, checks)).is_err() {
            return;
        }
    }
}

/// Hand chunk results to the walker in order.
fn reorder(done: &Receiver<(u64, Vec<LineCheck>)>, walker: &mut Walker) {
    let mut next = 0;
    let mut pending = BTreeMap::new();
    for (index, checks) in done {
        pending.insert(index, checks);
        while let Some(checks) = pending.remove(&next) {
            walker.take(checks);
            next += 1;
        }
    }
}

/// Parse, canonical-check and signature-check every line of a chunk.
fn check_chunk(chunk: &Chunk, key: &VerifyingKey, batch: bool) -> Vec<LineCheck> {
    let parsed: Vec<(Result<record::ParsedLine, LineProblem>, [u8; 32])> = chunk
        .lines
        .iter()
        .map(|line| {
            if line.too_long() {
                (Err(LineProblem::TooLong(line.len)), [0; 32])
            } else {
                (record::parse_line(&line.bytes), line_hash(&line.bytes))
            }
        })
        .collect();
    let good: Vec<&record::ParsedLine> =
        parsed.iter().filter_map(|(p, _)| p.as_ref().ok()).collect();
    let batch_ok = batch && !good.is_empty() && {
        let messages: Vec<&[u8]> = good.iter().map(|p| p.message.as_slice()).collect();
        let signatures: Vec<Signature> = good.iter().map(|p| p.signature).collect();
        let keys = vec![*key; good.len()];
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    chunk
        .lines
        .iter()
        .zip(parsed)
        .map(|(line, (parsed, hash))| {
            let outcome = parsed.and_then(|p| {
                if !batch_ok {
                    p.verify(key)?;
                }
                Ok(Checked {
                    seq: p.record.seq(),
                    prev: p.record.prev().to_string(),
                    segment: matches!(p.record, AuditRecord::Segment(_)),
                    marker_torn: match p.record {
                        AuditRecord::Segment(m) => m.torn,
                        AuditRecord::Event(_) => None,
                    },
                })
            });
            LineCheck {
                file: chunk.file,
                number: line.number,
                offset: line.offset,
                len: line.len,
                terminated: line.terminated,
                hash,
                outcome,
            }
        })
        .collect()
}

/// Why the chain stopped at the first bad line, before classification.
#[derive(Debug)]
enum Cause {
    Line(LineProblem),
    Chain {
        problem: ChainProblem,
        seq: u64,
        hash: [u8; 32],
    },
    Rewritten {
        seq: u64,
    },
}

#[derive(Debug)]
struct FirstProblem {
    file: usize,
    line: u64,
    cause: Cause,
    /// Head of the chain just before the bad line.
    head: ChainHead,
    // Evidence gathered after it:
    next_continues: Option<bool>,
    lines_after: u64,
    all_after_bad_signature: bool,
    missing_seq_found_later: bool,
    /// A later line's `prev` names the bad line: it belongs to this chain (moved, not foreign).
    referenced_later: bool,
}

/// The sequential stage: chain, checkpoint, first problem and its evidence.
struct Walker {
    head: ChainHead,
    /// Line number (in the last file read) of the head record.
    head_line: u64,
    expected: Option<(u64, String)>,
    files: Vec<FileSummary>,
    lines: u64,
    verified: u64,
    segments: u64,
    /// Ring of recent (seq, hash) for duplicate detection.
    recent: Vec<Option<(u64, [u8; 32])>>,
    torn_candidate: Option<LineCheck>,
    first: Option<FirstProblem>,
    notices: Vec<Finding>,
    checkpoint_matched: bool,
    progress: Option<ProgressHook>,
    bytes: u64,
}

impl Walker {
    fn new(options: &VerifyOptions, checkpoint: Option<&Checkpoint>) -> Self {
        Self {
            head: options.resume.map_or(ChainHead::GENESIS, |r| r.head),
            head_line: options.resume.map_or(0, |r| r.line.saturating_sub(1)),
            expected: checkpoint.map(|c| (c.seq, c.head.clone())),
            files: options
                .files
                .iter()
                .map(|path| FileSummary {
                    path: path.clone(),
                    lines: 0,
                    first_seq: None,
                    last_seq: None,
                })
                .collect(),
            lines: 0,
            verified: 0,
            segments: 0,
            recent: vec![None; DUPLICATE_WINDOW],
            torn_candidate: None,
            first: None,
            notices: Vec::new(),
            checkpoint_matched: false,
            progress: options.progress.clone(),
            bytes: 0,
        }
    }

    fn take(&mut self, checks: Vec<LineCheck>) {
        for check in checks {
            self.lines += 1;
            self.bytes += check.len + u64::from(check.terminated);
            let summary = &mut self.files[check.file];
            summary.lines += 1;
            if let Ok(c) = &check.outcome {
                summary.first_seq.get_or_insert(c.seq);
                summary.last_seq = Some(c.seq);
            }
            if self.first.is_some() {
                self.gather(&check);
            } else {
                self.step(check);
            }
        }
        if let Some(progress) = &self.progress {
            progress.report(Progress {
                lines: self.lines,
                bytes: self.bytes,
            });
        }
    }

    fn step(&mut self, check: LineCheck) {
        if let Some(torn) = self.torn_candidate.take() {
            let names_it = matches!(&check.outcome, Ok(Checked { marker_torn: Some(t), seq, prev, .. })
                if t.offset == torn.offset && t.length == torn.len
                    && t.sha256 == hex::encode(torn.hash)
                    && self.head.check(*seq, prev).is_ok()
                    && check.file == torn.file);
            if names_it {
                self.notices.push(Finding {
                    kind: FindingKind::TornLineRecovered,
                    file: self.files[torn.file].path.clone(),
                    line: Some(torn.number),
                    seq: None,
                    message: format!(
                        "line {} is a torn write ({} bytes) left by a crash; the signed segment \
                         marker on line {} names it and continues the chain",
                        torn.number, torn.len, check.number
                    ),
                });
            } else {
                let problem = torn
                    .outcome
                    .as_ref()
                    .err()
                    .cloned()
                    .unwrap_or(LineProblem::NonCanonical);
                self.fail(&torn, Cause::Line(problem));
                self.gather(&check);
                return;
            }
        }
        match &check.outcome {
            Err(LineProblem::Malformed(_) | LineProblem::TooLong(_)) => {
                self.torn_candidate = Some(check);
            }
            Err(problem) => {
                let problem = problem.clone();
                self.fail(&check, Cause::Line(problem));
            }
            Ok(c) => match self.head.check(c.seq, &c.prev) {
                Ok(()) => {
                    if let Some((seq, head)) = &self.expected
                        && *seq == c.seq
                    {
                        if *head != hex::encode(check.hash) {
                            self.fail(&check, Cause::Rewritten { seq: c.seq });
                            return;
                        }
                        self.checkpoint_matched = true;
                    }
                    self.head = ChainHead::advance(c.seq, check.hash);
                    self.head_line = if check.file + 1 == self.files.len() {
                        check.number
                    } else {
                        0
                    };
                    self.recent[(c.seq as usize) % DUPLICATE_WINDOW] = Some((c.seq, check.hash));
                    self.verified += 1;
                    if c.segment {
                        self.segments += 1;
                    }
                }
                Err(problem) => {
                    let cause = Cause::Chain {
                        problem,
                        seq: c.seq,
                        hash: check.hash,
                    };
                    self.fail(&check, cause);
                }
            },
        }
    }

    fn fail(&mut self, check: &LineCheck, cause: Cause) {
        self.first = Some(FirstProblem {
            file: check.file,
            line: check.number,
            cause,
            head: self.head,
            next_continues: None,
            lines_after: 0,
            all_after_bad_signature: true,
            missing_seq_found_later: false,
            referenced_later: false,
        });
    }

    /// Evidence after the first problem.
    fn gather(&mut self, check: &LineCheck) {
        let Some(first) = self.first.as_mut() else {
            return;
        };
        first.lines_after += 1;
        if !matches!(check.outcome, Err(LineProblem::BadSignature)) {
            first.all_after_bad_signature = false;
        }
        if let Ok(c) = &check.outcome {
            if first.next_continues.is_none() {
                first.next_continues = Some(first.head.check(c.seq, &c.prev).is_ok());
            }
            if let Cause::Chain { seq, hash, .. } = first.cause {
                if c.seq > first.head.seq && c.seq < seq {
                    first.missing_seq_found_later = true;
                }
                if !first.referenced_later && c.prev == hex::encode(hash) {
                    first.referenced_later = true;
                }
            }
        } else if first.next_continues.is_none() {
            first.next_continues = Some(false);
        }
    }

    fn finish(
        mut self,
        options: &VerifyOptions,
        checkpoint: Option<(PathBuf, Option<Result<Checkpoint, CheckpointProblem>>)>,
    ) -> VerifyReport {
        if let Some(torn) = self.torn_candidate.take() {
            let is_last_line = torn.file + 1 == self.files.len() && !torn.terminated;
            if is_last_line {
                self.notices.push(Finding {
                    kind: FindingKind::TornTail,
                    file: self.files[torn.file].path.clone(),
                    line: Some(torn.number),
                    seq: None,
                    message: format!(
                        "the last line ({} bytes) has no newline and is not a record: a write cut \
                         short by a crash (or still in progress); the writer starts a new segment \
                         after it on its next start",
                        torn.len
                    ),
                });
            } else {
                let problem = torn
                    .outcome
                    .as_ref()
                    .err()
                    .cloned()
                    .unwrap_or(LineProblem::NonCanonical);
                self.fail(&torn, Cause::Line(problem));
            }
        }
        let mut problem = self.first.take().map(|first| self.classify(first));

        let mut report_checkpoint = CheckpointReport {
            path: options.checkpoint.clone(),
            status: CheckpointStatus::Skipped,
            seq: None,
            ts: None,
        };
        if let Some((path, found)) = checkpoint {
            let ckpt_finding = |kind, message: String| Finding {
                kind,
                file: path.clone(),
                line: None,
                seq: None,
                message,
            };
            let finding = match found {
                None => {
                    report_checkpoint.status = CheckpointStatus::Missing;
                    (self.lines > 0).then(|| {
                        ckpt_finding(
                            FindingKind::CheckpointMissing,
                            format!(
                                "checkpoint {} is missing beside a non-empty log, so a truncated \
                                 tail cannot be ruled out",
                                path.display()
                            ),
                        )
                    })
                }
                Some(Err(why)) => {
                    report_checkpoint.status = CheckpointStatus::Invalid;
                    Some(ckpt_finding(
                        FindingKind::CheckpointInvalid,
                        format!("checkpoint {}: {why}", path.display()),
                    ))
                }
                Some(Ok(point)) => {
                    report_checkpoint.seq = Some(point.seq);
                    report_checkpoint.ts = Some(point.ts.clone());
                    if self.checkpoint_matched || point.seq == 0 {
                        report_checkpoint.status = CheckpointStatus::Ok;
                        None
                    } else if problem.is_some() && point.seq > self.head.seq {
                        report_checkpoint.status = CheckpointStatus::Unchecked;
                        None
                    } else if matches!(&problem, Some(p) if p.kind == FindingKind::Rewritten) {
                        report_checkpoint.status = CheckpointStatus::Mismatch;
                        None
                    } else {
                        report_checkpoint.status = CheckpointStatus::Ahead;
                        let last_file = self.files.len().saturating_sub(1);
                        Some(Finding {
                            kind: FindingKind::Truncated,
                            file: self.files[last_file].path.clone(),
                            line: Some(self.head_line + 1),
                            seq: Some(self.head.seq + 1),
                            message: format!(
                                "the log ends at seq {} but checkpoint {} records seq {}: \
                                 records {}..={} were cut from the tail",
                                self.head.seq,
                                path.display(),
                                point.seq,
                                self.head.seq + 1,
                                point.seq
                            ),
                        })
                    }
                }
            };
            if problem.is_none() {
                problem = finding;
            }
        }
        if matches!(&problem, Some(p) if p.kind == FindingKind::Rewritten) {
            report_checkpoint.status = CheckpointStatus::Mismatch;
        }
        VerifyReport {
            ok: problem.is_none(),
            key_fingerprint: key_fingerprint(&options.key),
            files: self.files,
            lines: self.lines,
            verified: self.verified,
            segments: self.segments,
            last_seq: self.head.seq,
            checkpoint: report_checkpoint,
            problem,
            notices: self.notices,
        }
    }

    fn classify(&self, first: FirstProblem) -> Finding {
        let file = self.files[first.file].path.clone();
        let line = first.line;
        let expected = first.head.seq + 1;
        let at = |kind, seq: Option<u64>, message: String| Finding {
            kind,
            file: file.clone(),
            line: Some(line),
            seq,
            message,
        };
        match first.cause {
            Cause::Line(LineProblem::BadSignature) => {
                if first.all_after_bad_signature && first.lines_after >= 1 {
                    at(
                        FindingKind::WrongKey,
                        Some(expected),
                        format!(
                            "no line from line {line} on verifies with this key: the log was \
                             signed (or re-signed) with another key"
                        ),
                    )
                } else {
                    at(
                        FindingKind::Modified,
                        Some(expected),
                        format!("line {line} was modified: its signature does not verify"),
                    )
                }
            }
            Cause::Line(LineProblem::NonCanonical) => at(
                FindingKind::NonCanonical,
                Some(expected),
                format!(
                    "line {line} is not in RFC 8785 canonical form: it was edited or re-encoded"
                ),
            ),
            Cause::Line(problem) => at(
                FindingKind::Malformed,
                Some(expected),
                format!("line {line} is not a valid audit record ({problem}): it was edited"),
            ),
            Cause::Rewritten { seq } => at(
                FindingKind::Rewritten,
                Some(seq),
                format!(
                    "line {line} (seq {seq}) is not the record the checkpoint names: the log \
                     was replaced or rewritten"
                ),
            ),
            Cause::Chain { problem, seq, hash } => {
                let duplicate_of = self.recent[(seq as usize) % DUPLICATE_WINDOW]
                    .filter(|(s, h)| *s == seq && *h == hash)
                    .map(|_| seq);
                let line_of_seq = |s: u64| {
                    // Up to the first problem the chain is intact, so seqs map to lines.
                    line.saturating_sub(first.head.seq.saturating_sub(s) + 1)
                };
                if first.next_continues == Some(true) && !(seq > expected && first.referenced_later)
                {
                    match duplicate_of {
                        Some(seq) if self.files.len() == 1 => at(
                            FindingKind::Duplicated,
                            Some(seq),
                            format!(
                                "line {line} duplicates line {} (seq {seq})",
                                line_of_seq(seq)
                            ),
                        ),
                        Some(seq) => at(
                            FindingKind::Duplicated,
                            Some(seq),
                            format!("line {line} duplicates the earlier record seq {seq}"),
                        ),
                        None => at(
                            FindingKind::Inserted,
                            Some(seq),
                            format!(
                                "line {line} (seq {seq}) was inserted: it is validly signed but \
                                 belongs to another chain; the next line continues from line {}",
                                line.saturating_sub(1)
                            ),
                        ),
                    }
                } else if seq > expected {
                    if first.missing_seq_found_later {
                        at(
                            FindingKind::Reordered,
                            Some(seq),
                            format!(
                                "line {line} holds seq {seq} where seq {expected} was expected; \
                                 seq {expected} appears later: lines were reordered"
                            ),
                        )
                    } else {
                        let missing = if seq - expected == 1 {
                            format!("record seq {expected} is")
                        } else {
                            format!("records seq {expected}..={} are", seq - 1)
                        };
                        at(
                            FindingKind::Deleted,
                            Some(expected),
                            format!("{missing} missing before line {line} (which holds seq {seq})"),
                        )
                    }
                } else if seq < expected {
                    match duplicate_of {
                        Some(seq) => at(
                            FindingKind::Duplicated,
                            Some(seq),
                            format!("line {line} repeats the earlier record seq {seq}"),
                        ),
                        None => at(
                            FindingKind::Reordered,
                            Some(seq),
                            format!(
                                "line {line} holds seq {seq} after seq {}: lines were reordered \
                                 or spliced",
                                first.head.seq
                            ),
                        ),
                    }
                } else {
                    at(
                        FindingKind::Inserted,
                        Some(seq),
                        format!(
                            "line {line} is validly signed but does not chain from line {} \
                             ({problem}): it comes from another log",
                            line.saturating_sub(1)
                        ),
                    )
                }
            }
        }
    }
}
