//! Streaming reader of `audit.jsonl`: one item per line, in order, with memory flat in the file's
//! size (one line buffered at a time; lines over [`MAX_LINE_BYTES`] are skipped, not buffered).
//!
//! Two modes: [`ReadMode::ParseOnly`] (cheap: JSON → record, for `firma monitor`) and
//! [`ReadMode::Verify`] (canonical form, signature, chain — line by line; `firma audit verify`
//! uses the parallel pipeline in `verify.rs` built from the same pieces).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use super::chain::{ChainHead, ChainProblem};
use super::event::AuditRecord;
use super::record::{self, LineProblem, MAX_LINE_BYTES};

/// One raw line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// The bytes without the newline (empty if the line was too long to buffer).
    pub bytes: Vec<u8>,
    /// Length in bytes without the newline (also for a line too long to buffer).
    pub len: u64,
    /// False for a last line without a newline (a torn write, or one still being written).
    pub terminated: bool,
}

impl RawLine {
    pub fn too_long(&self) -> bool {
        self.len as usize > MAX_LINE_BYTES
    }
}

/// Splits a byte stream into lines without ever holding more than one bounded line.
pub struct LineSplitter<R> {
    input: R,
    number: u64,
    offset: u64,
}

impl<R: BufRead> LineSplitter<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            number: 0,
            offset: 0,
        }
    }
}

impl<R: BufRead> LineSplitter<R> {
    /// Lines of `input`, which starts at byte `offset` of a file, the first being line `number`.
    pub fn starting_at(input: R, number: u64, offset: u64) -> Self {
        Self {
            input,
            number: number.saturating_sub(1),
            offset,
        }
    }
}

impl LineSplitter<BufReader<File>> {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::new(BufReader::with_capacity(
            256 * 1024,
            File::open(path)?,
        )))
    }

    /// Read `path` from byte `offset`, which is the start of line `number`.
    pub fn open_at(path: &Path, number: u64, offset: u64) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self::starting_at(
            BufReader::with_capacity(256 * 1024, file),
            number,
            offset,
        ))
    }
}

impl<R: BufRead> Iterator for LineSplitter<R> {
    type Item = io::Result<RawLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut bytes = Vec::new();
        let mut len: u64 = 0;
        let terminated = loop {
            let available = match self.input.fill_buf() {
                Ok(buf) => buf,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Some(Err(err)),
            };
            if available.is_empty() {
                break false;
            }
            let (take, found) = match memchr(available) {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            if len as usize + take <= MAX_LINE_BYTES {
                bytes.extend_from_slice(&available[..take]);
            } else if !bytes.is_empty() {
                bytes = Vec::new();
            }
            len += take as u64;
            self.input.consume(take + usize::from(found));
            if found {
                break true;
            }
        };
        if !terminated && len == 0 {
            return None;
        }
        self.number += 1;
        let line = RawLine {
            number: self.number,
            offset: self.offset,
            bytes,
            len,
            terminated,
        };
        self.offset += len + u64::from(terminated);
        Some(Ok(line))
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// What the reader checks.
#[derive(Debug, Clone)]
pub enum ReadMode {
    /// Parse each line into a record; no canonical, signature or chain checks.
    ParseOnly,
    /// Check every line's canonical form and signature with this key, and the chain.
    Verify(VerifyingKey),
}

/// What is wrong with a line, in reading order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadProblem {
    /// The line on its own is not a valid record.
    Line(LineProblem),
    /// A valid record that does not continue the chain from the previous valid one.
    Chain(ChainProblem),
    /// The last line has no newline: a torn write (or one in progress).
    Unterminated,
}

impl std::fmt::Display for ReadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(p) => p.fmt(f),
            Self::Chain(p) => write!(f, "chain break: {p}"),
            Self::Unterminated => f.write_str("last line has no newline (torn or in progress)"),
        }
    }
}

/// One line read: where it is, its bytes, and the record or what is wrong with it.
#[derive(Debug, Clone)]
pub struct ReadItem {
    pub line: RawLine,
    pub result: Result<AuditRecord, ReadProblem>,
}

/// Streaming iterator over the lines of one log file.
pub struct AuditReader<R> {
    lines: LineSplitter<R>,
    mode: ReadMode,
    head: ChainHead,
}

impl AuditReader<BufReader<File>> {
    /// Read `path` from the start.
    pub fn open(path: &Path, mode: ReadMode) -> io::Result<Self> {
        Ok(Self::new(
            BufReader::with_capacity(256 * 1024, File::open(path)?),
            mode,
        ))
    }
}

impl<R: Read> AuditReader<BufReader<R>> {
    pub fn from_reader(input: R, mode: ReadMode) -> Self {
        Self::new(BufReader::new(input), mode)
    }
}

impl<R: BufRead> AuditReader<R> {
    pub fn new(input: R, mode: ReadMode) -> Self {
        Self {
            lines: LineSplitter::new(input),
            mode,
            head: ChainHead::GENESIS,
        }
    }

    /// Continue a chain from an earlier file (rotations are read oldest first).
    #[must_use]
    pub fn continuing(mut self, head: ChainHead) -> Self {
        self.head = head;
        self
    }

    /// The last record accepted in `Verify` mode.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    fn judge(&mut self, line: &RawLine) -> Result<AuditRecord, ReadProblem> {
        if line.too_long() {
            return Err(ReadProblem::Line(LineProblem::TooLong(line.len)));
        }
        match &self.mode {
            ReadMode::ParseOnly => {
                let record = record::parse_record(&line.bytes).map_err(ReadProblem::Line);
                if !line.terminated && record.is_err() {
                    return Err(ReadProblem::Unterminated);
                }
                record
            }
            ReadMode::Verify(key) => {
                let parsed = match record::check_line(&line.bytes, key) {
                    Ok(parsed) => parsed,
                    Err(_) if !line.terminated => return Err(ReadProblem::Unterminated),
                    Err(problem) => return Err(ReadProblem::Line(problem)),
                };
                self.head
                    .check(parsed.record.seq(), parsed.record.prev())
                    .map_err(ReadProblem::Chain)?;
                self.head = ChainHead::advance(parsed.record.seq(), parsed.hash);
                Ok(parsed.record)
            }
        }
    }
}

impl<R: BufRead> Iterator for AuditReader<R> {
    type Item = io::Result<ReadItem>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(line) => line,
            Err(err) => return Some(Err(err)),
        };
        let result = self.judge(&line);
        Some(Ok(ReadItem { line, result }))
    }
}
