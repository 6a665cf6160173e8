//! Files firma writes and trusts in its own directories, on a machine where another local user
//! may be hostile (DESIGN §12):
//!
//! - [`write_atomic`]: a reader never sees half a file. The contents go to a temp file created
//!   exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, an unpredictable name) in the same directory, then
//!   are renamed over the target — so a planted symlink, at the temp name or the target, is never
//!   followed.
//! - [`read_trusted`]: read a small file firma wrote itself (pid, listen, identity files),
//!   refusing a symlink or a file another uid owns.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::Hinted;

/// For `OpenOptionsExt::custom_flags`: open a file firma keeps in its own directories without
/// following a symlink planted in its place (the open fails with `ELOOP`).
pub const NO_FOLLOW: i32 = OFlag::O_NOFOLLOW.bits();

/// Whether a write must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: keys, configuration, checkpoints, revocations.
    Durable,
    /// Rename only: files that describe running processes (pid, listen, identity) are worthless
    /// after a machine crash, and an fsync each would delay `start` by tens of milliseconds.
    Volatile,
}

/// How often a fresh temp name is tried before giving up (a collision needs someone to guess
/// 128 random bits; this only bounds the loop).
const TEMP_ATTEMPTS: usize = 4;

/// Atomically replace `path` with `contents`; the file gets exactly `mode`.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<(), Hinted> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (mut file, tmp) = create_temp(dir, path, mode).map_err(|err| cannot_write(path, &err))?;
    let result = (|| -> io::Result<()> {
        // The open mode is filtered by the umask; fchmod makes it exact.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durability == Durability::Durable {
            sync_dir(dir);
        }
        Ok(())
    })();
    result.map_err(|err| {
        let _ = fs::remove_file(&tmp);
        cannot_write(path, &err)
    })
}

/// A new file beside `target`, created exclusively and never through a symlink.
fn create_temp(dir: &Path, target: &Path, mode: u32) -> io::Result<(fs::File, PathBuf)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = io::Error::other("no temp name tried");
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&tmp)
        {
            Ok(file) => return Ok((file, tmp)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}

fn sync_dir(dir: &Path) {
    if let Ok(dir) = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)
    {
        let _ = dir.sync_all();
    }
}

fn cannot_write(path: &Path, err: &io::Error) -> Hinted {
    Hinted::new(format!("cannot write {}: {err}", path.display()))
        .hint("check that the directory exists, is yours and is writable")
}

/// Why [`read_trusted`] refused a file.
#[derive(Debug)]
pub enum Untrusted {
    /// The path is a symbolic link.
    Symlink,
    /// Not a regular file.
    NotAFile,
    /// Owned by another uid.
    ForeignOwner(u32),
    Io(io::Error),
}

impl Untrusted {
    /// The operator-facing error for `path`.
    pub fn to_hinted(&self, path: &Path) -> Hinted {
        let what = match self {
            Self::Symlink => "is a symbolic link".to_string(),
            Self::NotAFile => "is not a regular file".to_string(),
            Self::ForeignOwner(uid) => format!(
                "is owned by uid {uid}, not by you (uid {})",
                nix::unistd::geteuid()
            ),
            Self::Io(err) => return Hinted::new(format!("cannot read {}: {err}", path.display())),
        };
        Hinted::new(format!("refusing to trust {}: it {what}", path.display())).hint(
            "firma writes this file itself; remove it (another local user may have planted it)",
        )
    }
}

/// The contents of a file firma wrote itself, or `None` when it does not exist. A symlink, a
/// non-regular file or a file owned by another uid is refused.
pub fn read_trusted(path: &Path) -> Result<Option<Vec<u8>>, Untrusted> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink fails with ELOOP.
        Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Untrusted::Symlink);
        }
        Err(err) => return Err(Untrusted::Io(err)),
    };
    let meta = file.metadata().map_err(Untrusted::Io)?;
    if !meta.is_file() {
        return Err(Untrusted::NotAFile);
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Untrusted::ForeignOwner(meta.uid()));
    }
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).map_err(Untrusted::Io)?;
    Ok(Some(contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exact_mode_and_replaces_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        for durability in [Durability::Durable, Durability::Volatile] {
            write_atomic(&path, b"one", 0o640, durability).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"one");
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o640
            );
        }
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn a_planted_symlink_at_the_target_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = tmp.path().join("sidecar.listen");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new", 0o644, Durability::Volatile).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    #[test]
    fn read_trusted_refuses_symlinks_and_reports_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::write(&real, "x").unwrap();
        assert_eq!(read_trusted(&real).unwrap().unwrap(), b"x");
        assert!(read_trusted(&tmp.path().join("missing")).unwrap().is_none());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = read_trusted(&link).unwrap_err();
        assert!(matches!(err, Untrusted::Symlink));
        assert!(err.to_hinted(&link).message().contains("symbolic link"));
    }
}
