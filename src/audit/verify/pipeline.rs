//! The parallel stage of verification: a reader thread cuts the files into chunks of lines,
//! workers (one per core) parse, canonical-check and batch-verify the signatures of a chunk, and
//! the results reach the walker in file order.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signature, VerifyingKey};

use super::VerifyOptions;
use super::walker::Walker;
use crate::audit::event::{AuditRecord, TornLine};
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
    /// SHA-256 of the bytes (zeros for a line too long to buffer).
    pub(super) hash: [u8; 32],
    pub(super) outcome: Result<Checked, LineProblem>,
}

#[derive(Debug)]
pub(super) struct Checked {
    pub(super) seq: u64,
    pub(super) prev: String,
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
    if threads <= 1 {
        produce(options, opened, |chunk| {
            walker.take(check_chunk(&chunk, &options.key, options.batch));
            !(options.stop_at_first && walker.found_problem())
        })
    } else {
        run_parallel(options, opened, threads, walker)
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
                let seq = p.record.seq();
                let prev = p.record.prev().to_string();
                let (segment, marker_torn, marker_retained) = match p.record {
                    AuditRecord::Segment(m) => {
                        let marker = *m;
                        let retained = marker.retained.map(|r| (r.last_seq, r.last_hash));
                        (true, marker.torn, retained)
                    }
                    AuditRecord::Event(_) => (false, None, None),
                };
                Ok(Checked {
                    seq,
                    prev,
                    segment,
                    marker_torn,
                    marker_retained,
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
