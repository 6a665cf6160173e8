//! The two per-user directories firma owns besides the project's `.firma/`:
//! the volatile **state dir** (pids, listens, logs, audit log, CA) and the durable **data dir**
//! (revocations). Neither is ever a config-file key.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Hinted;

pub const STATE_DIR_ENV: &str = "FIRMA_STATE_DIR";

/// How the state dir was chosen, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDirSource {
    Flag,
    Env,
    XdgRuntime,
    Tmp,
}

/// `--state-dir` → `FIRMA_STATE_DIR` → `$XDG_RUNTIME_DIR/firma` → `/tmp/firma-$UID`.
/// The result is absolute (relative inputs resolve against the working directory).
pub fn resolve_state_dir(flag: Option<&Path>) -> (PathBuf, StateDirSource) {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let (dir, source) = if let Some(flag) = flag {
        (flag.to_path_buf(), StateDirSource::Flag)
    } else if let Some(env) = nonempty(STATE_DIR_ENV) {
        (PathBuf::from(env), StateDirSource::Env)
    } else if let Some(runtime) = nonempty("XDG_RUNTIME_DIR") {
        (
            PathBuf::from(runtime).join("firma"),
            StateDirSource::XdgRuntime,
        )
    } else {
        (
            PathBuf::from(format!("/tmp/firma-{}", nix::unistd::getuid())),
            StateDirSource::Tmp,
        )
    };
    (std::path::absolute(&dir).unwrap_or(dir), source)
}

/// `$XDG_DATA_HOME/firma`, else `~/.local/share/firma`.
pub fn resolve_data_dir() -> Result<PathBuf, Hinted> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("firma"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/firma")),
        None => Err(Hinted::new(
            "cannot locate the data directory: neither XDG_DATA_HOME nor HOME is set",
        )
        .hint("set XDG_DATA_HOME or HOME")),
    }
}

/// Create `dir` (and parents) if missing; firma-owned leaf directories are made 0700.
/// An existing directory keeps its mode (doctor reports a wrong one).
pub fn ensure_private_dir(dir: &Path) -> Result<(), Hinted> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(
                Hinted::new(format!("{} exists and is not a directory", dir.display()))
                    .hint("move it away or choose another directory"),
            );
        }
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
        .map_err(|err| Hinted::new(format!("cannot chmod {}: {err}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_is_made_absolute() {
        let (dir, source) = resolve_state_dir(Some(Path::new("rel/state")));
        assert!(dir.is_absolute());
        assert!(dir.ends_with("rel/state"));
        assert_eq!(source, StateDirSource::Flag);
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
