//! The lines of an audit log file, in order, with memory flat in the file's size (one line
//! buffered at a time; lines over [`MAX_LINE_BYTES`] are measured, not buffered). What a line
//! means is the verifier's business (`verify/`).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::record::MAX_LINE_BYTES;

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

    /// Read an open file from byte `offset`, which is the start of line `number`.
    pub fn reading(mut file: File, number: u64, offset: u64) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
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
            let (take, found) = match memchr::memchr(b'\n', available) {
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
