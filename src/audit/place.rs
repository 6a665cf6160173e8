//! Where the audit log lives: the state dir by default, or `[sidecar.audit] dir` (a persistent
//! disk). The Sidecar publishes a configured directory in the state dir (`audit.dir`) so every
//! reader finds the log through [`StateDir`], also without the configuration.

use std::path::{Path, PathBuf};

use crate::config::dirs::ensure_private_dir;
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::state_dir::StateDir;

/// Put the log in `dir` (`None`: the state dir): create the directory (0700) and publish it, or
/// withdraw an earlier publication. Returns the state dir that knows where the log is.
pub fn place(state: StateDir, dir: Option<PathBuf>) -> Result<StateDir, Hinted> {
    let pointer = state.audit_dir_pointer();
    match &dir {
        Some(dir) => {
            if !dir.is_absolute() {
                return Err(Hinted::new(format!(
                    "[sidecar.audit] dir {} is not an absolute path",
                    dir.display()
                ))
                .hint("relative paths in firma.toml resolve against its directory; use an absolute path"));
            }
            ensure_private_dir(dir)?;
            let mut text = dir.as_os_str().as_encoded_bytes().to_vec();
            text.push(b'\n');
            write_atomic(&pointer, &text, 0o600, Durability::Durable)?;
        }
        None => match std::fs::remove_file(&pointer) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(
                    Hinted::new(format!("cannot remove {}: {err}", pointer.display()))
                        .hint("remove it by hand: the audit log lives in the state dir"),
                );
            }
        },
    }
    Ok(state.with_audit_dir(dir))
}

/// `ramfs`'s magic number (statfs(2)); nix names only tmpfs's.
const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);

/// The file system type, when `dir` is on one whose content does not survive a reboot
/// (`tmpfs`, `ramfs`).
pub fn volatile_fs(dir: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    let kind = statfs(dir).ok()?.filesystem_type();
    if kind == TMPFS_MAGIC {
        Some("tmpfs")
    } else if kind == RAMFS_MAGIC {
        Some("ramfs")
    } else {
        None
    }
}
