//! `stack.lock`: one supervisor per state directory.
//!
//! An exclusive `flock` held for the supervisor's whole life. The kernel drops it when the holder
//! dies (SIGKILL, OOM, reboot), so a stale file never blocks a new start: it is simply locked
//! again and overwritten. The file is opened close-on-exec (std's default), so the children do
//! not inherit the lock and cannot keep it alive after the supervisor is gone. The file holds the
//! holder's pid so a refused start can name it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Hinted;

/// The held lock; released (and the file removed) by [`StackLock::release`] or on drop.
#[derive(Debug)]
pub struct StackLock {
    file: Option<File>,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it; its pid as written in the file, if readable.
    Held {
        holder: Option<i32>,
    },
    Io(std::io::Error),
}

impl StackLock {
    /// Take the lock without waiting.
    pub fn try_acquire(path: &Path) -> Result<Self, LockError> {
        // Retry when the file we locked was unlinked by a releasing holder in the meantime: a
        // lock on an unlinked inode protects nothing.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(crate::fsutil::NO_FOLLOW)
                .open(path)
                .map_err(LockError::Io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Held {
                        holder: read_holder(path),
                    });
                }
                Err(TryLockError::Error(err)) => return Err(LockError::Io(err)),
            }
            let same = match (file.metadata(), fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let mut lock = Self {
                file: Some(file),
                path: path.to_path_buf(),
            };
            lock.write_holder().map_err(LockError::Io)?;
            return Ok(lock);
        }
        Err(LockError::Io(std::io::Error::other(
            "stack.lock kept being replaced while locking it",
        )))
    }

    fn write_holder(&mut self) -> std::io::Result<()> {
        let file = self.file.as_mut().expect("lock file present");
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the file while still holding the lock, then unlock (by closing).
    pub fn release(mut self) {
        self.release_inner();
    }

    /// Unlock but leave the file in place (state kept for a later `stop`).
    pub fn keep_file(mut self) {
        drop(self.file.take());
    }

    fn release_inner(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = fs::remove_file(&self.path);
            drop(file);
        }
    }
}

impl Drop for StackLock {
    fn drop(&mut self) {
        self.release_inner();
    }
}

fn read_holder(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The operator message for a lock that could not be taken.
pub fn lock_error(err: LockError, path: &Path, state_dir: &Path) -> Hinted {
    match err {
        LockError::Held { holder } => {
            let who = holder.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"));
            Hinted::new(format!(
                "a firma stack is already running for this state dir: {} is held by {who}",
                path.display()
            ))
            .hint(format!(
                "run `firma sidecar stop --state-dir {}` first, or use another --state-dir",
                state_dir.display()
            ))
        }
        LockError::Io(err) => Hinted::new(format!("cannot lock {}: {err}", path.display()))
            .hint("check that the state directory is writable and on a local filesystem"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_and_names_the_holder_then_release_frees_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stack.lock");
        let first = StackLock::try_acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        match StackLock::try_acquire(&path) {
            Err(LockError::Held { holder }) => assert_eq!(holder, Some(std::process::id() as i32)),
            other => panic!("expected Held, got {other:?}"),
        }
        first.release();
        assert!(!path.exists());
        let again = StackLock::try_acquire(&path).unwrap();
        drop(again);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_file_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stack.lock");
        fs::write(&path, "999999\n").unwrap();
        let lock = StackLock::try_acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        lock.release();
    }
}
