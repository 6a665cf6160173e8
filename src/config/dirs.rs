//! The two per-user directories firma owns besides the project's `.firma/`:
//! the volatile **state dir** (pids, listens, logs, audit log, CA) and the durable **data dir**
//! (revocations). Neither is ever a config-file key.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Hinted;
use crate::fsutil;
use crate::state_dir::{DataDir, Role, StateDir};

pub const STATE_DIR_ENV: &str = "FIRMA_STATE_DIR";

/// The platform whose directory rules apply. Resolution is a pure function of this and the
/// environment, so the Windows rules are unit-tested on Linux too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Unix,
    Windows,
}

impl Platform {
    pub const fn current() -> Self {
        if cfg!(windows) {
            Self::Windows
        } else {
            Self::Unix
        }
    }

    /// `base` joined with `parts`, using this platform's separator.
    fn join(self, base: &OsStr, parts: &[&str]) -> PathBuf {
        let mut path = base.to_os_string();
        let sep = match self {
            Self::Unix => "/",
            Self::Windows => "\\",
        };
        for part in parts {
            let text = path.to_string_lossy();
            if !text.ends_with(sep) {
                path.push(sep);
            }
            path.push(part);
        }
        PathBuf::from(path)
    }
}

/// How the state dir was chosen, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDirSource {
    Flag,
    Env,
    /// Unix: `$XDG_RUNTIME_DIR/firma`; Windows: `%LOCALAPPDATA%\\firma\\runtime`.
    Runtime,
    /// Unix: `/tmp/firma-$UID`; Windows: `%TEMP%\\firma`.
    Temp,
}

/// The process environment, as the resolvers read it (empty values count as unset).
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The state-dir rule of the guide: `--state-dir` → `FIRMA_STATE_DIR` → the platform default
/// (Unix: `$XDG_RUNTIME_DIR/firma`, then `/tmp/firma-$UID`; Windows:
/// `%LOCALAPPDATA%\\firma\\runtime`, then `%TEMP%\\firma`).
pub fn state_dir_for(
    platform: Platform,
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
    uid: u32,
) -> (PathBuf, StateDirSource) {
    if let Some(flag) = flag {
        return (flag.to_path_buf(), StateDirSource::Flag);
    }
    if let Some(dir) = env(STATE_DIR_ENV) {
        return (PathBuf::from(dir), StateDirSource::Env);
    }
    match platform {
        Platform::Unix => match env("XDG_RUNTIME_DIR") {
            Some(runtime) => (platform.join(&runtime, &["firma"]), StateDirSource::Runtime),
            None => (
                PathBuf::from(format!("/tmp/firma-{uid}")),
                StateDirSource::Temp,
            ),
        },
        Platform::Windows => match env("LOCALAPPDATA") {
            Some(local) => (
                platform.join(&local, &["firma", "runtime"]),
                StateDirSource::Runtime,
            ),
            None => {
                let temp = env("TEMP").unwrap_or_else(|| OsString::from("C:\\Windows\\Temp"));
                (platform.join(&temp, &["firma"]), StateDirSource::Temp)
            }
        },
    }
}

/// The data-dir rule: Unix `$XDG_DATA_HOME/firma`, else `~/.local/share/firma`; Windows
/// `%LOCALAPPDATA%\\firma`.
pub fn data_dir_for(
    platform: Platform,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, Hinted> {
    match platform {
        Platform::Unix => {
            if let Some(xdg) = env("XDG_DATA_HOME") {
                return Ok(platform.join(&xdg, &["firma"]));
            }
            env("HOME")
                .map(|home| platform.join(&home, &[".local", "share", "firma"]))
                .ok_or_else(|| {
                    Hinted::new(
                        "cannot locate the data directory: neither XDG_DATA_HOME nor HOME is set",
                    )
                    .hint("set XDG_DATA_HOME or HOME")
                })
        }
        Platform::Windows => env("LOCALAPPDATA")
            .map(|local| platform.join(&local, &["firma"]))
            .ok_or_else(|| {
                Hinted::new("cannot locate the data directory: LOCALAPPDATA is not set")
                    .hint("set LOCALAPPDATA")
            }),
    }
}

/// This process's state dir. The result is absolute (relative inputs resolve against the
/// working directory).
pub fn resolve_state_dir(flag: Option<&Path>) -> (StateDir, StateDirSource) {
    let (dir, source) = state_dir_for(
        Platform::current(),
        flag,
        &process_env,
        nix::unistd::getuid().as_raw(),
    );
    (
        StateDir::new(std::path::absolute(&dir).unwrap_or(dir)),
        source,
    )
}

/// This process's data dir.
pub fn resolve_data_dir() -> Result<DataDir, Hinted> {
    data_dir_for(Platform::current(), &process_env).map(DataDir::new)
}

/// This process's state dir, checked before anything in it is trusted: the directory is the
/// user's own and private ([`check_private_dir`]), and no pid, listen, identity, lock or meta file
/// in it is a symlink or another uid's. A missing directory is fine (`start` creates it).
pub fn trusted_state_dir(flag: Option<&Path>) -> Result<(StateDir, StateDirSource), Hinted> {
    let (state, source) = resolve_state_dir(flag);
    check_state_dir(&state)?;
    Ok((state, source))
}

/// See [`trusted_state_dir`].
pub fn check_state_dir(state: &StateDir) -> Result<(), Hinted> {
    match fs::symlink_metadata(state.path()) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => check_private_dir(state.path())?,
    }
    let files = Role::ALL
        .into_iter()
        .flat_map(|role| {
            [
                state.pid_file(role),
                state.listen_file(role),
                state.identity_file(role),
            ]
        })
        .chain([state.lock_file(), state.meta_file()]);
    for file in files {
        fsutil::read_trusted(&file).map_err(|why| why.to_hinted(&file))?;
    }
    Ok(())
}

/// Refuse a directory another local user could have planted or can write into — as ssh-agent
/// and systemd do: it must be owned by this user (a symlink to it too) and not writable by group
/// or others.
pub fn check_private_dir(dir: &Path) -> Result<(), Hinted> {
    let me = nix::unistd::geteuid().as_raw();
    let inspect = |meta: io::Result<fs::Metadata>| {
        meta.map_err(|err| {
            Hinted::new(format!("cannot inspect {}: {err}", dir.display()))
                .hint("check the permissions of its parent directories")
        })
    };
    let link = inspect(fs::symlink_metadata(dir))?;
    if link.is_symlink() && link.uid() != me {
        return Err(foreign(dir, "is a symbolic link owned by", link.uid()));
    }
    let meta = inspect(fs::metadata(dir))?;
    if !meta.is_dir() {
        return Err(
            Hinted::new(format!("{} exists and is not a directory", dir.display()))
                .hint("move it away or choose another directory"),
        );
    }
    if meta.uid() != me {
        return Err(foreign(dir, "is owned by", meta.uid()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(Hinted::new(format!(
            "refusing to use {}: it is writable by group or others (mode {mode:o})",
            dir.display()
        ))
        .hint(format!(
            "run `chmod go-w {}` (firma creates its directories 0700)",
            dir.display()
        )));
    }
    Ok(())
}

fn foreign(dir: &Path, what: &str, uid: u32) -> Hinted {
    Hinted::new(format!(
        "refusing to use {}: it {what} uid {uid}, not by you (uid {})",
        dir.display(),
        nix::unistd::geteuid()
    ))
    .hint(
        "another local user may have created it first; remove it, or choose your own directory \
         with --state-dir / FIRMA_STATE_DIR (or set XDG_RUNTIME_DIR)",
    )
}

/// Create `dir` (and parents) if missing; firma-owned leaf directories are made 0700.
/// An existing directory must pass [`check_private_dir`] (its mode is otherwise kept).
pub fn ensure_private_dir(dir: &Path) -> Result<(), Hinted> {
    match fs::symlink_metadata(dir) {
        Ok(_) => return check_private_dir(dir),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(
                Hinted::new(format!("cannot inspect {}: {err}", dir.display()))
                    .hint("check the permissions of its parent directories"),
            );
        }
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            Hinted::new(format!("cannot create directory {}: {err}", dir.display()))
                .hint("check that the parent directory exists and is writable")
        })?;
    // DirBuilder's mode is filtered by the umask; make the leaf exactly 0700.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|err| Hinted::new(format!("cannot chmod {}: {err}", dir.display())))?;
    // Another user may have won a race for the name (e.g. in /tmp).
    check_private_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_is_made_absolute() {
        let (dir, source) = resolve_state_dir(Some(Path::new("rel/state")));
        assert!(dir.path().is_absolute());
        assert!(dir.path().ends_with("rel/state"));
        assert_eq!(source, StateDirSource::Flag);
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn unix_state_dir_order() {
        let u = Platform::Unix;
        let all = env_of(&[
            ("FIRMA_STATE_DIR", "/e"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ]);
        assert_eq!(
            state_dir_for(u, Some(Path::new("/f")), &all, 7),
            (PathBuf::from("/f"), StateDirSource::Flag)
        );
        assert_eq!(
            state_dir_for(u, None, &all, 7),
            (PathBuf::from("/e"), StateDirSource::Env)
        );
        let xdg = env_of(&[("XDG_RUNTIME_DIR", "/run/user/7/")]);
        assert_eq!(
            state_dir_for(u, None, &xdg, 7),
            (PathBuf::from("/run/user/7/firma"), StateDirSource::Runtime)
        );
        assert_eq!(
            state_dir_for(u, None, &env_of(&[]), 7),
            (PathBuf::from("/tmp/firma-7"), StateDirSource::Temp)
        );
    }

    #[test]
    fn windows_state_and_data_dirs() {
        let w = Platform::Windows;
        let local = env_of(&[
            ("LOCALAPPDATA", "C:\\Users\\ana\\AppData\\Local"),
            ("TEMP", "C:\\Temp"),
        ]);
        assert_eq!(
            state_dir_for(w, None, &local, 0).0,
            PathBuf::from("C:\\Users\\ana\\AppData\\Local\\firma\\runtime")
        );
        assert_eq!(
            data_dir_for(w, &local).unwrap(),
            PathBuf::from("C:\\Users\\ana\\AppData\\Local\\firma")
        );
        let temp = env_of(&[("TEMP", "C:\\Temp")]);
        assert_eq!(
            state_dir_for(w, None, &temp, 0),
            (PathBuf::from("C:\\Temp\\firma"), StateDirSource::Temp)
        );
        assert!(data_dir_for(w, &temp).is_err());
        let env = env_of(&[("FIRMA_STATE_DIR", "D:\\s"), ("LOCALAPPDATA", "C:\\L")]);
        assert_eq!(state_dir_for(w, None, &env, 0).0, PathBuf::from("D:\\s"));
    }

    #[test]
    fn unix_data_dir() {
        let u = Platform::Unix;
        assert_eq!(
            data_dir_for(u, &env_of(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/firma")
        );
        assert_eq!(
            data_dir_for(u, &env_of(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.local/share/firma")
        );
        assert!(data_dir_for(u, &env_of(&[])).is_err());
    }

    #[test]
    fn foreign_or_shared_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            err.message().contains("writable by group or others"),
            "{err}"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(ensure_private_dir(&file).is_err());
    }

    #[test]
    fn private_dir_is_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
