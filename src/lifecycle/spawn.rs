//! Starting one component: the same executable run as `firma authority …` or `firma sidecar …`,
//! in its own process group, stdin from /dev/null, stdout+stderr to `<state>/<name>.log`
//! (truncated on every start), `NOTIFY_SOCKET` naming the channel it reports readiness on.
//!
//! Test/diagnostic hook: `FIRMA_TEST_AUTHORITY_EXE` / `FIRMA_TEST_SIDECAR_EXE` name an executable
//! run instead of the current one for that component, with the same arguments. It exists so the
//! test suite can inject faults (a child that never becomes ready, one that ignores SIGTERM);
//! operators have no reason to set it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::identity::Identity;
use super::notify::NOTIFY_SOCKET_ENV;
use super::state::Role;
use crate::error::Hinted;

/// The test hook's env var for `role`.
pub fn test_exe_env(role: Role) -> &'static str {
    match role {
        Role::Authority => "FIRMA_TEST_AUTHORITY_EXE",
        Role::Sidecar => "FIRMA_TEST_SIDECAR_EXE",
        Role::Supervisor => "FIRMA_TEST_SUPERVISOR_EXE",
    }
}

/// The executable to run for `role`: the test hook if set, else this binary.
pub fn component_exe(role: Role) -> Result<PathBuf, Hinted> {
    if let Some(exe) = std::env::var_os(test_exe_env(role)).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(exe));
    }
    std::env::current_exe().map_err(|err| {
        Hinted::new(format!("cannot locate the firma executable: {err}"))
            .hint("run firma from an installed path")
    })
}

/// A spawned component: the child handle (we are its parent and reap it) and its identity.
#[derive(Debug)]
pub struct Member {
    pub role: Role,
    pub child: Child,
    pub identity: Identity,
}

/// Open a log for a child: created 0600, truncated, then written in append mode.
pub fn open_log(path: &Path, truncate: bool) -> Result<File, Hinted> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(crate::fsutil::NO_FOLLOW)
        .open(path)
        .map_err(|err| {
            Hinted::new(format!("cannot open log {}: {err}", path.display()))
                .hint("check that the state directory is writable")
        })?;
    if truncate {
        file.set_len(0)
            .map_err(|err| Hinted::new(format!("cannot truncate {}: {err}", path.display())))?;
    }
    Ok(file)
}

/// Spawn `exe args…` as `role` in its own process group.
pub fn spawn(
    role: Role,
    exe: &Path,
    args: &[OsString],
    log: &Path,
    notify_socket: &str,
) -> Result<Member, Hinted> {
    let out = open_log(log, true)?;
    let err = out
        .try_clone()
        .map_err(|e| Hinted::new(format!("cannot open log {}: {e}", log.display())))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(NOTIFY_SOCKET_ENV, notify_socket)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn().map_err(|err| {
        Hinted::new(format!(
            "{}: cannot run {}: {err}",
            role.name(),
            exe.display()
        ))
        .hint("reinstall firma, or check the path and permissions of the executable")
    })?;
    let pid = child.id().map(|p| p as i32).unwrap_or(-1);
    let identity = Identity::of(pid).ok_or_else(|| {
        Hinted::new(format!(
            "{}: started as pid {pid} but /proc/{pid}/stat is unreadable",
            role.name()
        ))
        .hint("firma needs a mounted /proc")
    })?;
    Ok(Member {
        role,
        child,
        identity,
    })
}

/// The last meaningful line of a child's log, for an error message: the last `error: …` line or
/// ERROR-level JSON line (its `message` plus `error`-like fields), else the last line.
pub fn last_log_line(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(16 * 1024)..];
    let tail = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let json = |line: &str| match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let is_error = |line: &str| {
        line.starts_with("error:")
            || json(line).is_some_and(|m| m.get("level").and_then(|v| v.as_str()) == Some("ERROR"))
    };
    let line = lines
        .iter()
        .rev()
        .find(|l| is_error(l))
        .or_else(|| lines.last())?;
    if let Some(rest) = line.strip_prefix("error:") {
        return Some(rest.trim().to_string());
    }
    if let Some(map) = json(line) {
        let mut text = map
            .get("message")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        for key in ["error", "err", "reason"] {
            if let Some(v) = map.get(key) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                text.push_str(&format!(" ({key}: {v})"));
            }
        }
        if !text.is_empty() {
            return Some(text);
        }
    }
    Some(line.chars().take(400).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_log_line_reads_json_messages_and_raw_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("a.log");
        std::fs::write(
            &log,
            "{\"level\":\"ERROR\",\"message\":\"cannot bind\",\"error\":\"address in use\"}\n{\"level\":\"INFO\",\"message\":\"x\"}\n\n",
        )
        .unwrap();
        assert_eq!(
            last_log_line(&log).unwrap(),
            "cannot bind (error: address in use)"
        );
        std::fs::write(&log, "error: bad policy at a.cedar:1:2\n  hint: fix it\n").unwrap();
        assert_eq!(last_log_line(&log).unwrap(), "bad policy at a.cedar:1:2");
        std::fs::write(&log, "thread 'main' panicked at x\n").unwrap();
        assert_eq!(last_log_line(&log).unwrap(), "thread 'main' panicked at x");
    }
}
