//! Starting one component: the same executable run as `firma authority …` or `firma sidecar …`,
//! in its own process group, stdin from /dev/null, stdout+stderr appended to
//! `<state>/<name>.log` after a start banner (logs are never truncated: the cause of a crash
//! must survive the next start), `NOTIFY_SOCKET` naming the channel it reports readiness on.
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

use super::notify::NOTIFY_SOCKET_ENV;
use super::state::{Role, StateDir};
use crate::error::Hinted;
use crate::platform::identity::Identity;
use crate::platform::process::in_own_group;

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
    /// Its end is already in `.exits.json` (a crash); a later teardown must not overwrite it.
    pub exit_recorded: bool,
}

/// Open a daemon log for appending (created 0600).
pub fn open_log(path: &Path) -> Result<File, Hinted> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(crate::fsutil::NO_FOLLOW)
        .open(path)
        .map_err(|err| {
            Hinted::new(format!("cannot open log {}: {err}", path.display()))
                .hint("check that the state directory is writable")
        })
}

/// The field that marks a start banner in a daemon log.
const BANNER_FIELD: &str = "banner";

/// Append the start banner: one JSON log line (the daemons' own format, so `firma monitor`
/// renders it) that separates this run's lines from the previous runs'.
pub fn write_banner(log: &mut File, role: Role) -> Result<(), Hinted> {
    use std::io::Write;
    let line = serde_json::json!({
        "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "level": "INFO",
        "target": "firma::lifecycle",
        "message": format!("{} starting (firma {})", role.name(), env!("CARGO_PKG_VERSION")),
        BANNER_FIELD: true,
        "supervisor_pid": std::process::id(),
    });
    writeln!(log, "{line}").map_err(|err| Hinted::new(format!("cannot write to a log: {err}")))
}

/// `role`'s log in `state` (the directory created 0700 if missing), opened for appending, with
/// this run's start banner written.
pub fn open_run_log(state: &StateDir, role: Role) -> Result<File, Hinted> {
    crate::config::dirs::ensure_private_dir(state.path())?;
    let mut log = open_log(&state.log_file(role))?;
    write_banner(&mut log, role)?;
    Ok(log)
}

/// Spawn `exe args…` as `role` in its own process group, its output appended to `log` after a
/// start banner.
pub fn spawn(
    role: Role,
    exe: &Path,
    args: &[OsString],
    state: &StateDir,
    notify_socket: &str,
) -> Result<Member, Hinted> {
    let out = open_run_log(state, role)?;
    let err = out.try_clone().map_err(|e| {
        Hinted::new(format!(
            "cannot open log {}: {e}",
            state.log_file(role).display()
        ))
    })?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(NOTIFY_SOCKET_ENV, notify_socket)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    in_own_group(&mut command);
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
        exit_recorded: false,
    })
}

/// The last meaningful line of a child's log, for an error message: the last `error: …` line or
/// ERROR-level JSON line (its `message` plus `error`-like fields), else the last line.
pub fn last_log_line(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(16 * 1024)..];
    let tail = String::from_utf8_lossy(tail);
    let json = |line: &str| match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let mut lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // Only this run's lines: those after the last start banner.
    if let Some(at) = lines.iter().rposition(|l| {
        l.contains(BANNER_FIELD)
            && json(l).is_some_and(|m| m.get(BANNER_FIELD) == Some(&serde_json::Value::Bool(true)))
    }) {
        lines.drain(..=at);
    }
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
        // A previous run's error does not speak for this run.
        let mut file = open_log(&log).unwrap();
        write_banner(&mut file, Role::Sidecar).unwrap();
        assert_eq!(last_log_line(&log), None);
        std::io::Write::write_all(&mut file, b"listening\n").unwrap();
        assert_eq!(last_log_line(&log).unwrap(), "listening");
    }
}
