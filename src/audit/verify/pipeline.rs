//! The parallel stage of verification: a reader thread cuts the files into chunks of lines,
//! workers (one per core) parse, canonical-check and batch-verify the signatures of a chunk, and
//! the results reach the walker in file order.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signature, VerifyingKey};

use super::batch::BatchKey;

use super::VerifyOptions;
use super::walker::Walker;
use crate::audit::event::{AUDIT_FORMAT_V1, AuditRecord, TornLine};
use crate::audit::event_bytes::check_event_line;
use crate::audit::lines::{LineSplitter, RawLine};
use crate::audit::record::{self, LineProblem, line_hash};
use crate::error::Hinted;

/// Lines per unit of work.
const CHUNK_LINES: usize = 2048;

/// What a worker found in one line.
#[derive(Debug)]
pub(super) struct LineCheck {
    pub(super) file: usize,
    pub(super) number: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) terminated: bool,
    /// SHA-256 of the bytes of a line that is not a record (a torn line is named by it); zeros
    /// for a record (see [`Checked::chain_hash`]) and for a line too long to buffer.
    pub(super) hash: [u8; 32],
    pub(super) outcome: Result<Checked, LineProblem>,
}

#[derive(Debug)]
pub(super) struct Checked {
    pub(super) seq: u64,
    pub(super) prev: String,
    /// The format version (`v`).
    pub(super) version: u64,
    /// What the next record's `prev` names (`record::chain_hash`).
    pub(super) chain_hash: [u8; 32],
    pub(super) segment: bool,
    pub(super) marker_torn: Option<TornLine>,
    /// A retention marker's (`last_seq`, `last_hash`).
    pub(super) marker_retained: Option<(u64, String)>,
}

struct Chunk {
    index: u64,
    file: usize,
    lines: Vec<RawLine>,
}

/// Check every line of `options.files` (already open, so a rotation during the walk moves no
/// file under it; `None`: a deleted last log) and hand the results to `walker` in order.
pub(super) fn run(
    options: &VerifyOptions,
    opened: Vec<Option<File>>,
    walker: &mut Walker,
) -> Result<(), Hinted> {
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let batch = options.batch.then(|| BatchKey::new(&options.key));
    if threads <= 1 {
        produce(options, opened, |chunk| {
            walker.take(check_chunk(&chunk, &options.key, batch.as_ref()));
            !(options.stop_at_first && walker.found_problem())
        })
    } else {
        run_parallel(options, opened, threads, batch.as_ref(), walker)
    }
}

/// Cut the files into chunks and hand each to `sink` (which returns false to stop).
fn produce(
    options: &VerifyOptions,
    opened: Vec<Option<File>>,
    mut sink: impl FnMut(Chunk) -> bool,
) -> Result<(), Hinted> {
    let mut index = 0;
    // Stopping early only pays if the walker sees lines as soon as they are read.
    let chunk_lines = if options.stop_at_first {
        1
    } else {
        CHUNK_LINES
    };
    for (file_index, (path, file)) in options.files.iter().zip(opened).enumerate() {
        let Some(file) = file else {
            continue; // a deleted last log (see `verify`)
        };
        let lines = match options.resume {
            Some(resume) if file_index == 0 => {
                LineSplitter::reading(file, resume.line, resume.offset)
            }
            _ => LineSplitter::reading(file, 1, 0),
        }
        .map_err(|err| read_error(path, &err))?;
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
    opened: Vec<Option<File>>,
    threads: usize,
    batch: Option<&BatchKey>,
    walker: &mut Walker,
) -> Result<(), Hinted> {
    let (work_tx, work_rx) = sync_channel::<Chunk>(threads * 2);
    let (done_tx, done_rx) = sync_channel::<(u64, Vec<LineCheck>)>(threads * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    std::thread::scope(|scope| {
        let producer =
            scope.spawn(move || produce(options, opened, |chunk| work_tx.send(chunk).is_ok()));
        for _ in 0..threads {
            let work_rx = Arc::clone(&work_rx);
            let done_tx: SyncSender<_> = done_tx.clone();
            scope.spawn(move || worker(&work_rx, &done_tx, options, batch));
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
    batch: Option<&BatchKey>,
) {
    loop {
        let chunk = match work.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(chunk) = chunk else { return };
        let checks = check_chunk(&chunk, &options.key, batch);
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

/// A line ready for its signature check: the signed message, the signature, and what the walker
/// needs.
struct Readable {
    message: Vec<u8>,
    signature: Signature,
    checked: Checked,
}

/// Parse, canonical-check and signature-check every line of a chunk.
fn check_chunk(chunk: &Chunk, key: &VerifyingKey, batch: Option<&BatchKey>) -> Vec<LineCheck> {
    let mut scratch = Vec::with_capacity(1024);
    let read: Vec<Result<Readable, LineProblem>> = chunk
        .lines
        .iter()
        .map(|line| {
            if line.too_long() {
                Err(LineProblem::TooLong(line.len))
            } else {
                read_line(&line.bytes, &mut scratch)
            }
        })
        .collect();
    let batch_ok = batch.is_some_and(|batch| {
        let good: Vec<&Readable> = read.iter().filter_map(|r| r.as_ref().ok()).collect();
        !good.is_empty()
            && batch.verify_all(good.iter().map(|r| (r.message.as_slice(), &r.signature)))
    });
    chunk
        .lines
        .iter()
        .zip(read)
        .map(|(line, read)| {
            let outcome = read.and_then(|r| {
                if !batch_ok {
                    key.verify_strict(&r.message, &r.signature)
                        .map_err(|_| LineProblem::BadSignature)?;
                }
                Ok(r.checked)
            });
            let hash = match (&outcome, line.too_long()) {
                (Err(_), false) => line_hash(&line.bytes),
                _ => [0; 32],
            };
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

/// Everything about one line but its signature: decision events the writer's way take the fast
/// path (`event_bytes`), anything else the general parser.
fn read_line(bytes: &[u8], scratch: &mut Vec<u8>) -> Result<Readable, LineProblem> {
    if let Some(event) = check_event_line(bytes, scratch) {
        let Some(domain) = record::record_domain(event.v) else {
            return Err(LineProblem::UnsupportedVersion(event.v));
        };
        let signature = record::decode_signature_text(&event.sig)?;
        let (cut_from, cut_to) = event.sig_member;
        let mut message = Vec::with_capacity(domain.len() + bytes.len());
        message.extend_from_slice(domain);
        message.extend_from_slice(&bytes[..cut_from]);
        message.extend_from_slice(&bytes[cut_to..]);
        let chain_hash = if event.v == u64::from(AUDIT_FORMAT_V1) {
            line_hash(bytes)
        } else {
            line_hash(&message[domain.len()..])
        };
        return Ok(Readable {
            message,
            signature,
            checked: Checked {
                seq: event.seq,
                prev: event.prev,
                version: event.v,
                chain_hash,
                segment: false,
                marker_torn: None,
                marker_retained: None,
            },
        });
    }
    let parsed = record::parse_line(bytes)?;
    let seq = parsed.record.seq();
    let prev = parsed.record.prev().to_string();
    let (segment, marker_torn, marker_retained) = match parsed.record {
        AuditRecord::Segment(m) => {
            let marker = *m;
            let retained = marker.retained.map(|r| (r.last_seq, r.last_hash));
            (true, marker.torn, retained)
        }
        AuditRecord::Event(_) => (false, None, None),
    };
    Ok(Readable {
        message: parsed.message,
        signature: parsed.signature,
        checked: Checked {
            seq,
            prev,
            version: parsed.version,
            chain_hash: parsed.chain_hash,
            segment,
            marker_torn,
            marker_retained,
        },
    })
}
