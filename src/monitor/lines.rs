//! Complete lines from a file, read sequentially from an offset. A last line without its
//! newline stays pending until the newline arrives; a line longer than [`MAX_LINE`] is reported
//! once with its length and first bytes instead of being held in memory.

use std::fs::File;
use std::io::{self, Read};

/// Longest line kept whole (longer ones become an [`Item::Oversized`]).
pub const MAX_LINE: usize = 8 << 20;
/// How much of an oversized line is kept to show.
pub const OVERSIZED_HEAD: usize = 4096;
const READ_CHUNK: usize = 256 << 10;

/// One thing read from the file.
#[derive(Debug)]
pub enum Item<'a> {
    Line {
        offset: u64,
        bytes: &'a [u8],
    },
    Oversized {
        offset: u64,
        len: u64,
        head: Vec<u8>,
    },
}

#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    start: usize,
    scanned: usize,
    end: usize,
    /// File offset of `buf[end]`: the next byte to read.
    file_pos: u64,
    /// Inside an oversized line: its offset, length so far, first bytes.
    skipping: Option<(u64, u64, Vec<u8>)>,
}

impl LineReader {
    /// A reader whose next read from the file happens at `pos` (the caller positions the file).
    pub fn new(pos: u64) -> Self {
        Self {
            file_pos: pos,
            ..Self::default()
        }
    }

    /// The file offset of the next byte to read.
    pub fn file_pos(&self) -> u64 {
        self.file_pos
    }

    /// Bytes of an unterminated last line.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Offset of the pending bytes (the first byte not yet handed out as a line).
    pub fn pending_offset(&self) -> u64 {
        self.file_pos.saturating_sub((self.end - self.start) as u64)
    }

    /// The file was truncated: continue reading it at `pos`, keeping a pending partial line
    /// (a writer appending with O_APPEND continues that line at the new start).
    pub fn restart_at(&mut self, pos: u64) {
        self.file_pos = pos;
    }

    /// Take the pending bytes (when a file is abandoned), as an item.
    pub fn take_pending(&mut self) -> Option<(u64, Vec<u8>)> {
        if let Some((offset, len, head)) = self.skipping.take() {
            self.start = self.end;
            self.scanned = self.end;
            return Some((offset, head)).filter(|_| len > 0);
        }
        if self.start == self.end {
            return None;
        }
        let offset = self.pending_offset();
        let bytes = self.buf[self.start..self.end].to_vec();
        self.start = self.end;
        self.scanned = self.end;
        Some((offset, bytes))
    }

    /// The next complete line, reading from `file` as needed; `None` at end of file.
    pub fn next<'a>(&'a mut self, file: &File) -> io::Result<Option<Item<'a>>> {
        Ok(self.advance(file)?.map(|found| self.item(found)))
    }

    /// Like [`LineReader::next`], but what was found does not borrow the reader (so a caller
    /// may move on to another file before it looks at the line): see [`LineReader::item`].
    pub fn advance(&mut self, mut file: &File) -> io::Result<Option<Found>> {
        let (line_start, newline) = loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let newline = self.scanned + pos;
                let line_start = self.start;
                self.start = newline + 1;
                self.scanned = self.start;
                if let Some((offset, len, head)) = self.skipping.take() {
                    let len = len + (newline - line_start) as u64;
                    return Ok(Some(Found::Oversized { offset, len, head }));
                }
                break (line_start, newline);
            }
            self.scanned = self.end;
            if self.end - self.start >= MAX_LINE || self.skipping.is_some() {
                let offset = self.pending_offset();
                let chunk = &self.buf[self.start..self.end];
                let entry = self
                    .skipping
                    .get_or_insert_with(|| (offset, 0, chunk[..OVERSIZED_HEAD].to_vec()));
                entry.1 += chunk.len() as u64;
                self.start = self.end;
                self.scanned = self.end;
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
            let read = loop {
                match file.read(&mut self.buf[self.end..]) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if read == 0 {
                return Ok(None);
            }
            self.end += read;
            self.file_pos += read as u64;
        };
        let offset = self.file_pos.saturating_sub((self.end - line_start) as u64);
        Ok(Some(Found::Line {
            offset,
            start: line_start,
            end: newline,
        }))
    }

    /// The item `found` (just returned by [`LineReader::advance`]) stands for.
    pub fn item(&self, found: Found) -> Item<'_> {
        match found {
            Found::Line { offset, start, end } => Item::Line {
                offset,
                bytes: &self.buf[start..end],
            },
            Found::Oversized { offset, len, head } => Item::Oversized { offset, len, head },
        }
    }
}

/// A line found by [`LineReader::advance`]: where it is in the reader's buffer.
#[derive(Debug)]
pub enum Found {
    Line {
        offset: u64,
        start: usize,
        end: usize,
    },
    Oversized {
        offset: u64,
        len: u64,
        head: Vec<u8>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(content: &[u8]) -> (Vec<(u64, Vec<u8>)>, Vec<u8>) {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(content).unwrap();
        use std::io::Seek;
        tmp.rewind().unwrap();
        let mut reader = LineReader::new(0);
        let mut out = Vec::new();
        while let Some(item) = reader.next(&tmp).unwrap() {
            match item {
                Item::Line { offset, bytes } => out.push((offset, bytes.to_vec())),
                Item::Oversized { offset, len, .. } => {
                    out.push((offset, format!("<{len}>").into()))
                }
            }
        }
        (out, reader.pending().to_vec())
    }

    #[test]
    fn splits_and_keeps_partial() {
        let (out, pending) = lines(b"a\nbc\n\nde");
        assert_eq!(
            out,
            vec![(0, b"a".to_vec()), (2, b"bc".to_vec()), (5, b"".to_vec())]
        );
        assert_eq!(pending, b"de");
    }

    #[test]
    fn long_lines_span_reads() {
        let long = vec![b'x'; READ_CHUNK * 3 + 7];
        let mut content = long.clone();
        content.extend(b"\nok\n");
        let (out, _) = lines(&content);
        assert_eq!(out[0].1, long);
        assert_eq!(out[1], (long.len() as u64 + 1, b"ok".to_vec()));
    }

    #[test]
    fn oversized_lines_are_reported_not_kept() {
        let mut content = vec![b'y'; MAX_LINE + 10];
        content.extend(b"\nnext\n");
        let (out, _) = lines(&content);
        assert_eq!(out[0], (0, format!("<{}>", MAX_LINE + 10).into_bytes()));
        assert_eq!(out[1], (MAX_LINE as u64 + 11, b"next".to_vec()));
    }

    proptest::proptest! {
        #[test]
        fn lines_roundtrip(parts in proptest::collection::vec("[a-z{}\"]{0,20}", 0..20), tail in "[a-z]{0,5}") {
            let mut content = Vec::new();
            for p in &parts { content.extend(p.as_bytes()); content.push(b'\n'); }
            content.extend(tail.as_bytes());
            let (out, pending) = lines(&content);
            let got: Vec<Vec<u8>> = out.into_iter().map(|(_, l)| l).collect();
            let want: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(pending, tail.as_bytes().to_vec());
        }
    }
}
