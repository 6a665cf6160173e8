//! Reading and writing the daemon files of a state directory (their names are owned by
//! [`crate::state_dir`]): pidfiles (`kill $(cat sidecar.pid)` works), listen files, identity
//! files (`pid= start= session= boot=`, the PID-reuse guard) and `.stack.json`.
//!
//! Every write is atomic (exclusive temp file + rename), so a reader never sees half a file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Hinted;
use crate::fsutil::{self, Durability};
use crate::platform::identity::Identity;
pub use crate::state_dir::{Role, StateDir};

impl StateDir {
    /// Record who a process is (at spawn, before it is ready), so `stop` and a rollback can
    /// always find it.
    pub fn write_identity(&self, role: Role, identity: &Identity) -> Result<(), Hinted> {
        write_atomic(
            &self.identity_file(role),
            identity.encode().as_bytes(),
            0o600,
        )
    }

    /// Record a process: its identity, then the pidfile operators and scripts read.
    pub fn write_process(&self, role: Role, identity: &Identity) -> Result<(), Hinted> {
        self.write_identity(role, identity)?;
        write_atomic(
            &self.pid_file(role),
            format!("{}\n", identity.pid).as_bytes(),
            0o644,
        )
    }

    pub fn write_listen(&self, role: Role, addr: &str) -> Result<(), Hinted> {
        write_atomic(
            &self.listen_file(role),
            format!("{addr}\n").as_bytes(),
            0o644,
        )
    }

    /// The pid in `<role>.pid`, if the file exists and holds one.
    pub fn read_pid(&self, role: Role) -> Option<i32> {
        read_trimmed(&self.pid_file(role))?.parse().ok()
    }

    pub fn read_listen(&self, role: Role) -> Option<String> {
        read_trimmed(&self.listen_file(role)).filter(|s| !s.is_empty())
    }

    /// The recorded identity. It is the only thing firma signals by: a pidfile edited by hand,
    /// or left behind and now naming somebody else's process, is never trusted on its own.
    pub fn read_identity(&self, role: Role) -> Option<Identity> {
        Identity::decode(&read_trimmed(&self.identity_file(role))?)
    }

    pub fn write_meta(&self, meta: &StackMeta) -> Result<(), Hinted> {
        let json = serde_json::to_vec_pretty(meta).unwrap_or_default();
        write_atomic(&self.meta_file(), &json, 0o600)
    }

    pub fn read_meta(&self) -> Option<StackMeta> {
        serde_json::from_slice(&fsutil::read_trusted(&self.meta_file()).ok()??).ok()
    }

    /// Remove one role's pid, listen, identity and health files.
    pub fn remove_process_files(&self, role: Role) {
        for path in [
            self.pid_file(role),
            self.listen_file(role),
            self.identity_file(role),
            self.health_file(role),
            self.metrics_listen_file(role),
        ] {
            remove_if_present(&path);
        }
        match role {
            // A hard-killed Authority leaves its operator socket behind, a Sidecar its control
            // socket.
            Role::Authority => remove_if_present(&self.authority_socket()),
            Role::Sidecar => remove_if_present(&self.sidecar_socket()),
            Role::Supervisor => {}
        }
    }

    /// Remove every pid/listen/identity/health/meta file (not the lock, the exit records, logs,
    /// audit log or CA).
    pub fn remove_runtime_files(&self) {
        for role in Role::ALL {
            self.remove_process_files(role);
        }
        remove_if_present(&self.meta_file());
        remove_if_present(&self.stop_marker());
        self.remove_orphaned_sockets();
    }

    /// Readiness sockets (`.notify-<tag>-<pid>.sock`) whose creator died without removing them
    /// (a launcher killed while waiting). Live creators' sockets are left alone.
    fn remove_orphaned_sockets(&self) {
        let Ok(entries) = fs::read_dir(self.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(StateDir::notify_socket_pid) else {
                continue;
            };
            if crate::platform::identity::ProcStat::read(pid).is_none_or(|s| s.is_exited()) {
                remove_if_present(&entry.path());
            }
        }
    }

    /// Whether any pid/listen/lock file is present (what `stop` reports as leftover state).
    pub fn has_runtime_files(&self) -> bool {
        Role::ALL
            .into_iter()
            .flat_map(|r| [self.pid_file(r), self.listen_file(r), self.identity_file(r)])
            .chain([self.lock_file(), self.meta_file()])
            .any(|p| p.exists())
    }
}

/// How the running pair was started: what `status` needs beyond pids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackMeta {
    /// `local` (start booted the Authority) or `remote` (only the Sidecar; Authority elsewhere).
    pub authority_mode: String,
    /// The URL the Sidecar was given for the Authority.
    pub authority_url: String,
    /// The exact firma.toml passed to both children.
    pub config: PathBuf,
    /// The project it belongs to: the name of the directory holding `.firma/`.
    #[serde(default)]
    pub project: String,
    /// CA certificate used to verify an `https://` Authority, if configured.
    #[serde(default)]
    pub authority_ca_cert: Option<PathBuf>,
    /// Whether a detached `__supervise` owns the pair.
    pub detached: bool,
}

/// These files describe running processes: atomic, but not worth an fsync.
pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Hinted> {
    fsutil::write_atomic(path, contents, mode, Durability::Volatile)
}

/// A pid, listen or identity file's contents. A symlink or a file another uid owns is never
/// trusted (`StateDir::check_trusted` turns it into an error before a command relies on it).
fn read_trimmed(path: &Path) -> Option<String> {
    let bytes = fsutil::read_trusted(path).ok()??;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

pub fn remove_if_present(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove state file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_is_the_pid_and_a_newline_and_identity_must_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let me = Identity::current().unwrap();
        state.write_process(Role::Sidecar, &me).unwrap();
        assert_eq!(
            fs::read_to_string(state.pid_file(Role::Sidecar)).unwrap(),
            format!("{}\n", me.pid)
        );
        assert_eq!(state.read_identity(Role::Sidecar), Some(me.clone()));
        state.write_listen(Role::Sidecar, "127.0.0.1:1").unwrap();
        assert_eq!(
            fs::read_to_string(state.listen_file(Role::Sidecar)).unwrap(),
            "127.0.0.1:1\n"
        );
        let dead = state.notify_socket("launch", 999_999_999);
        fs::write(&dead, "").unwrap();
        let mine = state.notify_socket("launch", std::process::id());
        fs::write(&mine, "").unwrap();
        state.remove_runtime_files();
        assert!(!state.has_runtime_files());
        assert!(!dead.exists());
        assert!(mine.exists(), "a live creator's socket is kept");
    }
}
