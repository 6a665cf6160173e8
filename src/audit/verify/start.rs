//! Where the walk starts: at the first record, at a given `seq` (`--from-seq`), at a byte offset
//! (`firma doctor`'s tail check), or after records retention deleted.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::Resume;
use crate::audit::chain::ChainHead;
use crate::audit::event::AuditRecord;
use crate::audit::lines::LineSplitter;
use crate::audit::record;
use crate::error::Hinted;

/// The log's first file starts after records deleted by retention, and a retention marker in
/// the log names exactly them: the walk starts at `head` and must meet that marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetainedStart {
    /// `seq` of the first record present.
    pub first_seq: u64,
    /// The last record deleted (`seq`, hash): the chain head before the first record present.
    pub head: ChainHead,
    /// `seq` of the retention marker that records the deletion.
    pub marker_seq: u64,
}

/// If the first file does not start at `seq` 1, look for the retention marker that explains it
/// (a quick scan for `"retained":` lines; the walk verifies the marker like any record).
pub(super) fn retained_start(files: &[PathBuf]) -> Result<Option<RetainedStart>, Hinted> {
    let Some(first_file) = files.first() else {
        return Ok(None);
    };
    let Some(first) = first_record(first_file)? else {
        return Ok(None);
    };
    if first.seq() <= 1 {
        return Ok(None);
    }
    let mut hash = [0u8; 32];
    if hex::decode_to_slice(first.prev(), &mut hash).is_err() {
        return Ok(None);
    }
    let wanted = (first.seq() - 1, first.prev().to_string());
    let finder = memchr::memmem::Finder::new(b"\"retained\":{");
    for path in files {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|err| read_error(path, &err))?;
            if read == 0 {
                break;
            }
            if finder.find(&line).is_none() {
                continue;
            }
            let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
            if let Ok(AuditRecord::Segment(marker)) = record::parse_record(bytes)
                && let Some(retained) = &marker.retained
                && (retained.last_seq, retained.last_hash.clone()) == wanted
            {
                return Ok(Some(RetainedStart {
                    first_seq: first.seq(),
                    head: ChainHead::advance(wanted.0, hash),
                    marker_seq: marker.seq,
                }));
            }
        }
    }
    Ok(None)
}

/// Start at the record with `seq` (trusting its `prev`; what comes before is not verified):
/// the index of the file it is in, and where in it.
pub fn resume_at_seq(files: &[PathBuf], seq: u64) -> Result<(usize, Resume), Hinted> {
    let not_found = || {
        Hinted::new(format!("no record with seq {seq} in the audit log")).hint(format!(
            "the log's files are {}; pick a seq they hold (`firma audit verify --json` shows \
             each file's first_seq and last_seq)",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    // The last file whose first record is at or before `seq`.
    let mut chosen = None;
    for (index, path) in files.iter().enumerate() {
        if let Some(first) = first_record(path)?
            && first.seq() <= seq
        {
            chosen = Some(index);
        }
    }
    let index = chosen.ok_or_else(not_found)?;
    let path = &files[index];
    let finder = memchr::memmem::Finder::new(b",\"seq\":");
    for line in LineSplitter::open(path).map_err(|err| read_error(path, &err))? {
        let line = line.map_err(|err| read_error(path, &err))?;
        // In a canonical line `,"seq":` can only be the member (quotes in strings are escaped).
        let Some(at) = finder.find(&line.bytes) else {
            continue;
        };
        let digits = &line.bytes[at + 7..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        if std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|d| d.parse().ok())
            != Some(seq)
        {
            continue;
        }
        let record = record::parse_record(&line.bytes).map_err(|problem| {
            Hinted::new(format!(
                "{}:{}: the record with seq {seq} is not readable: {problem}",
                path.display(),
                line.number
            ))
            .hint("verify from an earlier seq, or the whole log")
        })?;
        let head = if seq == 1 {
            ChainHead::GENESIS
        } else {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(record.prev(), &mut hash).map_err(|_| {
                Hinted::new(format!(
                    "{}:{}: the record with seq {seq} has no valid prev",
                    path.display(),
                    line.number
                ))
                .hint("verify from an earlier seq, or the whole log")
            })?;
            ChainHead::advance(seq - 1, hash)
        };
        return Ok((
            index,
            Resume {
                offset: line.offset,
                line: line.number,
                head,
            },
        ));
    }
    Err(not_found())
}

/// A resume point at the first line starting at or after byte `from`: its offset, line number
/// and the chain head of the line before it (trusted, not re-verified).
pub fn resume_at_offset(log: &Path, from: u64) -> Option<Resume> {
    let mut reader = BufReader::new(std::fs::File::open(log).ok()?);
    let mut line_number = 0u64;
    let mut offset = 0u64;
    let mut previous: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    reader.seek(SeekFrom::Start(0)).ok()?;
    while offset < from {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).ok()? as u64;
        if read == 0 || !line.ends_with(b"\n") {
            return None;
        }
        offset += read;
        line_number += 1;
        std::mem::swap(&mut previous, &mut line);
    }
    let previous = previous.strip_suffix(b"\n")?;
    let seq = record::parse_record(previous).ok()?.seq();
    Some(Resume {
        offset,
        line: line_number + 1,
        head: ChainHead::advance(seq, record::line_hash(previous)),
    })
}

/// The first line of `path` as a record (`None`: missing, empty or unreadable first line).
fn first_record(path: &Path) -> Result<Option<AuditRecord>, Hinted> {
    let mut lines = match LineSplitter::open(path) {
        Ok(lines) => lines,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(path, &err)),
    };
    match lines.next() {
        Some(Ok(line)) => Ok(record::parse_record(&line.bytes).ok()),
        Some(Err(err)) => Err(read_error(path, &err)),
        None => Ok(None),
    }
}

fn read_error(path: &Path, err: &std::io::Error) -> Hinted {
    Hinted::new(format!("cannot read audit log {}: {err}", path.display()))
        .hint("check the file's permissions")
}
