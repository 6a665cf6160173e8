//! The sandbox's mount namespace: a private `/tmp` with the needed paths bound back, empty
//! read-only mounts over everything hidden, and the revealed files bound back read-only.
//!
//! Sources that the new mounts cover are opened (`O_PATH`) before they disappear and bound from
//! `/proc/self/fd/N`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::plan::{Layout, TMP};

type Step = Result<(), String>;

/// Apply `layout` in the current (new, private) mount namespace.
pub fn apply(layout: &Layout) -> Step {
    // Nothing done here may propagate back to the host's mounts.
    remount(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_PRIVATE)?;
    let reveals = open_existing(&layout.reveal);
    let keeps = open_existing(layout.keep.iter().map(|k| &k.path));
    // What each hidden path is, seen before the private /tmp: a path that existed under the old
    // /tmp is masked in the new one too, so no decoy can be planted at its name.
    let hidden: Vec<(&PathBuf, bool)> = layout
        .hide
        .iter()
        .filter_map(|path| Some((path, fs::metadata(path).ok()?.is_dir())))
        .collect();

    let empty = empty_file()?;
    tmpfs(Path::new(TMP), "mode=1777", MsFlags::empty())?;
    for (path, source) in &keeps {
        let writable = layout.keep.iter().any(|k| &k.path == path && k.writable);
        bind(source, path, writable)?;
    }

    let mut masked_dirs = Vec::new();
    for (path, is_dir) in hidden {
        if is_dir {
            make_mount_point(path, true)
                .map_err(|e| format!("creating the mount point {}: {e}", path.display()))?;
            tmpfs(path, "mode=0755,size=64k", MsFlags::empty())?;
            masked_dirs.push(path);
        } else {
            bind(&empty, path, false)?;
        }
    }
    for (path, source) in &reveals {
        bind(source, path, false)?;
    }
    for dir in &masked_dirs {
        remount(
            dir,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )
        .map_err(|e| format!("{e} (making the mask of {} read-only)", dir.display()))?;
    }
    Ok(())
}

/// An empty read-only regular file that covers hidden files (a device node such as /dev/null
/// would still accept writes). It is made on a scratch tmpfs on `/tmp` that the private `/tmp`
/// then covers: only the returned handle reaches it.
fn empty_file() -> Result<File, String> {
    let scratch = Path::new(TMP);
    tmpfs(scratch, "mode=0700,size=4k", MsFlags::empty())?;
    let path = scratch.join("empty");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

/// `O_PATH` handles of the paths that exist, in order.
fn open_existing<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<(PathBuf, File)> {
    paths
        .into_iter()
        .filter_map(|path| {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(OFlag::O_PATH.bits())
                .open(path)
                .ok()?;
            Some((path.clone(), file))
        })
        .collect()
}

fn tmpfs(target: &Path, options: &str, extra: MsFlags) -> Step {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra,
        Some(options),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", target.display()))
}

fn remount(target: &Path, flags: MsFlags) -> Step {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remounting {}: {e}", target.display()))
}

/// Bind `source` (an open handle) onto `target`, creating the mount point, read-only unless
/// `writable`.
fn bind(source: &File, target: &Path, writable: bool) -> Step {
    let is_dir = source.metadata().map(|m| m.is_dir()).unwrap_or(false);
    make_mount_point(target, is_dir)
        .map_err(|e| format!("creating the mount point {}: {e}", target.display()))?;
    let from = format!("/proc/self/fd/{}", source.as_raw_fd());
    mount(
        Some(from.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding {}: {e}", target.display()))?;
    if writable {
        return Ok(());
    }
    // A bind remount must repeat the flags the kernel locked on the original mount.
    let locked = statvfs(target)
        .map(|s| s.flags())
        .unwrap_or(FsFlags::empty());
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if locked.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    remount(target, flags)
}

fn make_mount_point(target: &Path, is_dir: bool) -> io::Result<()> {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    if is_dir {
        return fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map(drop)
}
