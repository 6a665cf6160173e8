//! Following one source's files by name: the live file, and for a source whose writer rotates
//! (`audit.jsonl` → `audit.jsonl.1`, older ones shifted) the files it rotated away. Survives
//! rotation by rename (inode change: the old file is read to its end — and watched a little
//! longer for late writes — then every file rotated after it, oldest first, then the new live
//! file), copytruncate (size below the read offset, or the first bytes rewritten), deletion and
//! re-creation. Lines come out whole, once each.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lines::{Item, LineReader};

/// How long a rotated-away file is still read for late writes before it is closed.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);
const FINGERPRINT: usize = 256;
/// How often the rotated files are listed again when they shift while being opened.
const LIST_ATTEMPTS: usize = 8;

/// Every file of a source, oldest first, the live one last (see `Source::files`).
pub type Lister = Box<dyn Fn() -> Vec<PathBuf>>;

/// What happened to a followed file, for a note on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Truncated,
    Replaced,
    Appeared,
}

type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

struct Open {
    file: File,
    id: FileId,
    /// Whether it was opened as the live path (not as a rotated file).
    live: bool,
    /// Tells files apart for [`Tail::read_line_at`].
    serial: u64,
    reader: LineReader,
    fingerprint: Vec<u8>,
}

impl Open {
    fn new(mut file: File, pos: u64, live: bool, serial: u64) -> io::Result<Self> {
        let meta = file.metadata()?;
        file.seek(SeekFrom::Start(pos))?;
        let mut open = Self {
            file,
            id: file_id(&meta),
            live,
            serial,
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

/// One source's files, followed.
pub struct Tail {
    /// The live file.
    path: PathBuf,
    list: Lister,
    current: Option<Open>,
    /// Files to read after the current one, in order (rotated files, then the live one).
    queue: VecDeque<Open>,
    retired: Vec<Retired>,
    serial: u64,
}

impl Tail {
    /// Follow the live file `path`; `list` names every file of the source, oldest first.
    pub fn new(path: PathBuf, list: Lister) -> Self {
        Self {
            path,
            list,
            current: None,
            queue: VecDeque::new(),
            retired: Vec::new(),
            serial: 0,
        }
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start reading `files` (opened, in reading order, each with the offset to start at).
    pub fn start(&mut self, files: Vec<(File, u64)>) -> io::Result<()> {
        let live_id = std::fs::metadata(&self.path).ok().map(|m| file_id(&m));
        for (file, pos) in files {
            let live = Some(file_id(&file.metadata()?)) == live_id;
            let open = self.open(file, pos, live)?;
            self.queue.push_back(open);
        }
        self.current = self.queue.pop_front();
        Ok(())
    }

    fn open(&mut self, file: File, pos: u64, live: bool) -> io::Result<Open> {
        self.serial += 1;
        Open::new(file, pos, live, self.serial)
    }

    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// The next complete line, with the serial of its file (for [`Tail::read_line_at`]); at
    /// the end of a file, the next file's lines. `None` at the end of the last one (or with
    /// no file).
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Item<'_>)>> {
        loop {
            let Some(open) = &mut self.current else {
                return Ok(None);
            };
            if let Some(found) = open.reader.advance(&open.file)? {
                let open = self.current.as_ref().expect("just read");
                return Ok(Some((open.serial, open.reader.item(found))));
            }
            let Some(next) = self.queue.pop_front() else {
                return Ok(None);
            };
            if let Some(done) = self.current.replace(next) {
                self.retired.push(Retired {
                    open: done,
                    since: Instant::now(),
                });
            }
        }
    }

    /// The line that starts at `offset` of file `serial`, if that is still the current file
    /// (without its newline).
    pub fn read_line_at(&self, serial: u64, offset: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(open) = self.current.as_ref().filter(|o| o.serial == serial) else {
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

    /// After draining the current file: if the live path now names another file (rotation,
    /// re-creation) or names one for the first time, queue it — after every file the source
    /// rotated since the last one we know, so nothing rotated away unseen is skipped. The file
    /// being read is finished first and kept for [`RETIRE_GRACE`] to catch late writes.
    pub fn check_identity(&mut self) -> io::Result<Option<Change>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let known = self.queue.back().or(self.current.as_ref());
        if known.is_some_and(|open| open.id == file_id(&meta)) {
            return Ok(None);
        }
        let change = match known {
            Some(open) if open.live => Change::Replaced,
            _ => Change::Appeared,
        };
        let newer = self.files_after(known.map(|open| open.id))?;
        if newer.is_empty() {
            return Ok(None);
        }
        for (file, live) in newer {
            let open = self.open(file, 0, live)?;
            self.queue.push_back(open);
        }
        if self.current.is_none() {
            self.current = self.queue.pop_front();
        }
        Ok(Some(change))
    }

    /// The source's files that come after the file `known` (by identity), opened, the live one
    /// last. When `known` is not among them (a source that does not list its rotated files,
    /// or one deleted meanwhile), only the live file. Names shift while a writer rotates, so
    /// every file opened is checked to be the one listed, or the listing is taken again.
    fn files_after(&self, known: Option<FileId>) -> io::Result<Vec<(File, bool)>> {
        for attempt in 0..LIST_ATTEMPTS {
            if attempt > 0 {
                // Give a rotation in progress (renames shifting the names) time to finish.
                std::thread::sleep(Duration::from_millis(2));
            }
            let listed: Vec<(PathBuf, FileId)> = (self.list)()
                .into_iter()
                .filter_map(|path| {
                    let meta = std::fs::metadata(&path).ok()?;
                    Some((path, file_id(&meta)))
                })
                .collect();
            let wanted = match listed.iter().position(|(_, id)| Some(*id) == known) {
                Some(at) => &listed[at + 1..],
                // A listing taken while names shift can miss the known file: list again
                // before concluding the source does not list it (which would skip files).
                // A listing of the live file alone has nothing to skip.
                None if known.is_some() && listed.len() > 1 && attempt + 1 < LIST_ATTEMPTS => {
                    continue;
                }
                None => match listed.last() {
                    Some(last) if last.0 == self.path => std::slice::from_ref(last),
                    _ => &[],
                },
            };
            let mut opened = Vec::with_capacity(wanted.len());
            for (path, id) in wanted {
                match File::open(path) {
                    Ok(file) if file_id(&file.metadata()?) == *id => {
                        opened.push((file, *path == self.path));
                    }
                    Ok(_) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    Err(err) => return Err(err),
                }
            }
            if opened.len() == wanted.len() {
                return Ok(opened);
            }
        }
        // Rotating faster than we can list: take the live file as it is now.
        match File::open(&self.path) {
            Ok(file) => Ok(vec![(file, true)]),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err),
        }
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
