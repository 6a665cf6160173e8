//! Following one file by name: survives rotation by rename (inode change; the old file is
//! drained first and watched a little longer for late writes), copytruncate (size below the
//! read offset, or the first bytes rewritten), deletion and re-creation. Lines come out whole,
//! once each.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lines::{Item, LineReader};

/// How long a rotated-away file is still read for late writes before it is closed.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);
const FINGERPRINT: usize = 256;

/// What happened to a followed file, for a note on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Truncated,
    Replaced,
    Appeared,
}

struct Open {
    file: File,
    id: (u64, u64),
    reader: LineReader,
    fingerprint: Vec<u8>,
}

impl Open {
    fn new(file: File, pos: u64) -> io::Result<Self> {
        let meta = file.metadata()?;
        let mut open = Self {
            file,
            id: (meta.dev(), meta.ino()),
            reader: LineReader::new(pos),
            fingerprint: Vec::new(),
        };
        open.fingerprint = open.head(FINGERPRINT)?;
        Ok(open)
    }

    fn head(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let mut filled = 0;
        while filled < len {
            match self.file.read_at(&mut buf[filled..], filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Size below our offset, or the first bytes changed: the file was truncated (and maybe
    /// rewritten). Keeps the fingerprint current while the file is short.
    fn truncated(&mut self) -> io::Result<bool> {
        let size = self.file.metadata()?.len();
        if size < self.reader.file_pos() {
            return Ok(true);
        }
        let head = self.head(FINGERPRINT)?;
        let common = head.len().min(self.fingerprint.len());
        if head[..common] != self.fingerprint[..common] {
            return Ok(true);
        }
        if head.len() > self.fingerprint.len() {
            self.fingerprint = head;
        }
        Ok(false)
    }
}

struct Retired {
    open: Open,
    since: Instant,
}

/// One followed path.
pub struct Tail {
    path: PathBuf,
    current: Option<Open>,
    retired: Vec<Retired>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            current: None,
            retired: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the path (if it exists) positioned by `position(file, size)`.
    pub fn open_with(
        &mut self,
        position: impl FnOnce(&File, u64) -> io::Result<u64>,
    ) -> io::Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        let size = file.metadata()?.len();
        let pos = position(&file, size)?;
        file.seek(SeekFrom::Start(pos))?;
        self.current = Some(Open::new(file, pos)?);
        Ok(true)
    }

    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// The next complete line of the current file; `None` at its end (or with no file).
    pub fn next_line(&mut self) -> io::Result<Option<Item<'_>>> {
        match &mut self.current {
            Some(open) => open.reader.next(&open.file),
            None => Ok(None),
        }
    }

    /// The line of the current file that starts at `offset` (without its newline).
    pub fn read_line_at(&self, offset: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(open) = &self.current else {
            return Ok(None);
        };
        let mut line = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = open.file.read_at(&mut chunk, offset + line.len() as u64)?;
            if read == 0 {
                return Ok(Some(line));
            }
            if let Some(end) = memchr::memchr(b'\n', &chunk[..read]) {
                line.extend_from_slice(&chunk[..end]);
                return Ok(Some(line));
            }
            line.extend_from_slice(&chunk[..read]);
            if line.len() > super::lines::MAX_LINE {
                return Ok(None);
            }
        }
    }

    /// The unterminated last line of the current file.
    pub fn pending(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |o| o.reader.pending())
    }

    /// Before reading: restart a truncated file from 0.
    pub fn check_truncation(&mut self) -> io::Result<Option<Change>> {
        let Some(open) = &mut self.current else {
            return Ok(None);
        };
        if !open.truncated()? {
            return Ok(None);
        }
        open.file.seek(SeekFrom::Start(0))?;
        open.reader.restart_at(0);
        open.fingerprint = open.head(FINGERPRINT)?;
        Ok(Some(Change::Truncated))
    }

    /// After draining the current file: if the path now names another file (rotation,
    /// re-creation) or names one for the first time, switch to it, reading from its start.
    /// The old file is kept for [`RETIRE_GRACE`] to catch late writes.
    pub fn check_identity(&mut self) -> io::Result<Option<Change>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let id = (meta.dev(), meta.ino());
        let change = match &self.current {
            Some(open) if open.id == id => return Ok(None),
            Some(_) => Change::Replaced,
            None => Change::Appeared,
        };
        let old = self.current.take();
        if !self.open_with(|_, _| Ok(0))? {
            self.current = old;
            return Ok(None);
        }
        if let Some(open) = old {
            self.retired.push(Retired {
                open,
                since: Instant::now(),
            });
        }
        Ok(Some(change))
    }

    /// Read what late writers appended to rotated-away files; close those past their grace
    /// period, handing out their unterminated last line (so it is not lost).
    pub fn drain_retired(&mut self, emit: &mut dyn FnMut(Item<'_>)) -> io::Result<()> {
        for retired in &mut self.retired {
            while let Some(item) = retired.open.reader.next(&retired.open.file)? {
                emit(item);
            }
        }
        let mut i = 0;
        while i < self.retired.len() {
            if self.retired[i].since.elapsed() >= RETIRE_GRACE {
                let mut gone = self.retired.remove(i);
                if let Some((offset, bytes)) = gone.open.reader.take_pending() {
                    emit(Item::Line {
                        offset,
                        bytes: &bytes,
                    });
                }
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}
