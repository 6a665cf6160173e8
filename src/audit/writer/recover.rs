//! Resuming an existing log on open: find its last record, complete a last record that only
//! missed its newline, keep a torn last line (a crash mid-write) and name it in a signed segment
//! marker that continues the chain, and complete a rotation a crash interrupted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ed25519_dalek::SigningKey;

use super::live::LiveFile;
use super::rotate::Trigger;
use super::{OpenReport, seal_marker};
use crate::audit::chain::ChainHead;
use crate::audit::event::{Rotation, SegmentMarker, TornLine};
use crate::audit::record::{self, MAX_LINE_BYTES, line_hash};
use crate::error::Hinted;
use crate::state_dir::AuditFiles;

/// Where the chain continues, and what must be written before the next record.
pub(super) struct Resumed {
    /// Head after `pending` is written.
    pub head: ChainHead,
    /// The last whole record found (before any marker): what the checkpoint may name.
    pub last_record: ChainHead,
    /// Bytes to append first: a newline closing the last line, and a segment marker.
    pub pending: Vec<u8>,
    pub report: OpenReport,
}

/// The error for a log the writer must not continue.
pub(super) fn cannot_continue(files: &AuditFiles, what: String) -> Hinted {
    let path = files.live();
    Hinted::new(format!(
        "cannot continue audit log {}: {what}",
        path.display()
    ))
    .hint(format!(
        "run `firma audit verify --file {}` to see what is wrong; to start a new log, \
         move the log's files ({}*, {}) aside",
        path.display(),
        path.display(),
        files.checkpoint().display()
    ))
}

/// Read the end of the log and work out how to continue it.
pub(super) fn resume(
    live: &LiveFile,
    files: &AuditFiles,
    key: &SigningKey,
) -> Result<Resumed, Hinted> {
    let path = files.live();
    let verifying = key.verifying_key();
    let tail = read_tail(&live.file, path)?;
    let mut report = OpenReport {
        path: path.to_path_buf(),
        resumed_seq: 0,
        torn_tail: None,
        marker_seq: None,
        completed_tail: false,
        completed_rotation: false,
    };
    let last_of = |file: &Path, offset: u64, line: &[u8]| {
        record::check_line(line, &verifying)
            .map(|parsed| ChainHead::advance(parsed.record.seq(), parsed.hash))
            .map_err(|problem| {
                cannot_continue(
                    files,
                    format!(
                        "the last line of {} (byte offset {offset}) is not a record signed by \
                         this key: {problem}",
                        file.display()
                    ),
                )
            })
    };
    let mut head = ChainHead::GENESIS;
    // With no whole line in the live file, the chain ends in the newest rotation, if any: a
    // crash came between a rotation's rename and the new file's first line.
    let mut resumed_from: Option<String> = None;
    if let Some((offset, line)) = &tail.last_line {
        head = last_of(path, *offset, line)?;
    } else if let Some((_, newest)) = files.rotations().first() {
        let file = File::open(newest).map_err(|err| {
            Hinted::new(format!("cannot read audit log {}: {err}", newest.display()))
                .hint("check the file's permissions")
        })?;
        let previous = read_tail(&file, newest)?;
        if previous.unterminated.is_some() {
            return Err(cannot_continue(
                files,
                format!("the rotated file {} ends in a torn line", newest.display()),
            ));
        }
        if let Some((offset, line)) = &previous.last_line {
            head = last_of(newest, *offset, line)?;
            resumed_from = newest.file_name().map(|n| n.to_string_lossy().into_owned());
        }
    }
    let last_record = head;
    let mut pending: Vec<u8> = Vec::new();
    if let Some((offset, bytes)) = &tail.unterminated {
        let whole = record::check_line(bytes, &verifying)
            .ok()
            .filter(|p| head.check(p.record.seq(), p.record.prev()).is_ok());
        pending.push(b'\n');
        if let Some(parsed) = whole {
            head = ChainHead::advance(parsed.record.seq(), parsed.hash);
            report.completed_tail = true;
            report.resumed_seq = head.seq;
            return Ok(Resumed {
                head,
                last_record: head,
                pending,
                report,
            });
        }
        let torn = TornLine {
            offset: *offset,
            length: bytes.len() as u64,
            sha256: hex::encode(line_hash(bytes)),
        };
        let mut marker = SegmentMarker::new(format!(
            "torn last line ({} bytes at offset {offset}) found on open, presumably from a \
             crash; new segment",
            bytes.len()
        ));
        marker.torn = Some(torn.clone());
        let (line, after) = seal_marker(marker, head, key);
        report.marker_seq = Some(after.seq);
        report.torn_tail = Some(torn);
        pending.extend_from_slice(&line);
        head = after;
    } else if let Some(previous) = resumed_from {
        let mut marker = SegmentMarker::new(format!(
            "rotation completed on open: the live file had no record, the chain continues \
             from {previous}"
        ));
        marker.rotation = Some(Rotation {
            trigger: Trigger::Resume.as_str().into(),
            previous,
        });
        let (line, after) = seal_marker(marker, head, key);
        report.marker_seq = Some(after.seq);
        report.completed_rotation = true;
        pending.extend_from_slice(&line);
        head = after;
    }
    report.resumed_seq = last_record.seq;
    Ok(Resumed {
        head,
        last_record,
        pending,
        report,
    })
}

/// The end of an existing log: its last newline-terminated line and any unterminated bytes
/// after it, each with its byte offset.
pub(super) struct Tail {
    pub last_line: Option<(u64, Vec<u8>)>,
    pub unterminated: Option<(u64, Vec<u8>)>,
}

pub(super) fn read_tail(file: &File, path: &Path) -> Result<Tail, Hinted> {
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
