//! The live file of the log: opened for append, exclusively locked (one writer per log), and
//! known by its identity (device, inode) so the writer notices when the path no longer leads to
//! it — deleted, renamed or replaced under a running Sidecar.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::error::Hinted;

/// The open live file.
pub(super) struct LiveFile {
    pub file: Flock<File>,
    dev: u64,
    ino: u64,
}

impl std::fmt::Debug for LiveFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFile")
            .field("dev", &self.dev)
            .field("ino", &self.ino)
            .finish_non_exhaustive()
    }
}

/// How the path compares with the open file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathCheck {
    Same,
    /// Nothing at the path: deleted, or renamed away.
    Missing,
    /// Another file (or a symlink, or a directory) at the path.
    Replaced,
    /// The file is shorter than what was written to it: cut in place.
    Truncated {
        size: u64,
    },
    /// The path cannot be examined (its directory is gone or unreadable).
    Unknown(String),
}

impl LiveFile {
    /// Open (or create) `path` for append and lock it. Never follows a symlink at `path`.
    pub fn open(path: &Path, create_new: bool) -> Result<Self, Hinted> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .append(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits() | OFlag::O_CLOEXEC.bits());
        if create_new {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(path).map_err(|err| {
            Hinted::new(format!("cannot open audit log {}: {err}", path.display())).hint(
                "check that the audit directory exists, is writable, and that the log is a \
                 regular file (not a symlink)",
            )
        })?;
        let meta = file.metadata().map_err(|err| {
            Hinted::new(format!("cannot stat audit log {}: {err}", path.display()))
        })?;
        if !meta.file_type().is_file() {
            return Err(Hinted::new(format!(
                "audit log {} is not a regular file",
                path.display()
            ))
            .hint("move it aside; the Sidecar creates a new log"));
        }
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            Hinted::new(format!(
                "audit log {} is locked by another writer ({errno})",
                path.display()
            ))
            .hint("another Sidecar is running on this state directory; stop it first")
        })?;
        Ok(Self {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Does `path` still lead to this file, holding at least the `written` bytes? (`lstat`: a
    /// symlink put in its place is a replacement.)
    pub fn check_path(&self, path: &Path, written: u64) -> PathCheck {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if meta.len() < written {
                    PathCheck::Truncated { size: meta.len() }
                } else {
                    PathCheck::Same
                }
            }
            Ok(_) => PathCheck::Replaced,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => PathCheck::Missing,
            Err(err) => PathCheck::Unknown(err.to_string()),
        }
    }

    /// Its size now.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// fsync a directory, so renames and creations in it are durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
