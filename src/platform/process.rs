//! Processes, groups and sessions — signalling what firma started, and only that: every signal
//! goes through a recorded [`Identity`], to the whole process group of a component (so
//! grandchildren are not orphaned), also after the group's leader has exited.

use std::process::ExitStatus;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::identity::{Identity, Liveness};

/// Whether the component's process group still has a live (non-zombie) member of ours.
pub fn group_present(id: &Identity) -> bool {
    id.liveness() == Liveness::Alive || !id.live_group_members().is_empty()
}

/// Send `signal` to the component's process group if it is still ours. Returns whether a
/// signal was sent.
pub fn signal_group(id: &Identity, signal: Signal) -> bool {
    if !group_present(id) {
        return false;
    }
    match killpg(Pid::from_raw(id.pid), signal) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(pid = id.pid, %signal, error = %err, "killpg failed");
            false
        }
    }
}

/// Whether the process itself (not its group) is alive and ours.
pub fn process_present(id: &Identity) -> bool {
    id.liveness() == Liveness::Alive
}

/// Send `signal` to the process only (the supervisor shares no group with its children).
pub fn signal_process(id: &Identity, signal: Signal) -> bool {
    if !process_present(id) {
        return false;
    }
    kill(Pid::from_raw(id.pid), signal).is_ok()
}

/// Send `signal` to a child we hold a handle of (no identity needed: we are its parent, so its
/// pid cannot be reused before we reap it).
pub fn signal_child(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), signal).is_ok())
}

/// Make `command`'s child the leader of a new process group, so the group can be signalled as
/// one (the component and whatever it starts).
pub fn in_own_group(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.process_group(0)
}

/// Leave the caller's session (and its controlling terminal): the detached supervisor's first
/// step, so a terminal hanging up does not reach it. Fails when this process leads a group.
pub fn new_session() -> std::io::Result<()> {
    nix::unistd::setsid()
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitCause {
    /// It exited with this status code.
    Code(i32),
    /// A signal ended it (its name, e.g. `SIGKILL`).
    Signal(String),
}

impl ExitCause {
    pub fn of(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(sig)) => Self::Signal(
                Signal::try_from(sig)
                    .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().into()),
            ),
            _ => Self::Code(-1),
        }
    }

    /// Whether this counts as a failure (anything but exit status 0).
    pub fn is_failure(&self) -> bool {
        *self != Self::Code(0)
    }

    /// `SIGKILL` or `exit status 3`: what a status line shows.
    pub fn short(&self) -> String {
        match self {
            Self::Code(code) => format!("exit status {code}"),
            Self::Signal(name) => name.clone(),
        }
    }
}

impl std::fmt::Display for ExitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit status {code}"),
            Self::Signal(name) => write!(f, "signal {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    #[test]
    fn group_kill_reaches_grandchildren_after_the_leader_exits() {
        // Leader starts a grandchild that ignores SIGTERM, then exits on SIGTERM itself. The
        // grandchild says when its trap is set (signalled earlier, it would die of SIGTERM).
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("trapped");
        let mut leader = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'trap \"\" TERM; : > \"$0\"; while :; do sleep 0.05; done' \"$0\" & wait",
            ])
            .arg(&ready)
            .process_group(0)
            .spawn()
            .unwrap();
        let id = Identity::of(leader.id() as i32).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ready.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(signal_group(&id, Signal::SIGTERM));
        leader.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Gone);
        assert!(
            group_present(&id),
            "the SIGTERM-ignoring grandchild survives"
        );
        assert!(signal_group(&id, Signal::SIGKILL));
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_present(&id) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_present(&id));
        assert!(!signal_group(&id, Signal::SIGTERM));
    }

    #[test]
    fn a_reused_pid_is_never_signalled() {
        let me = Identity::current().unwrap();
        let stranger = Identity {
            start_ticks: me.start_ticks.wrapping_add(7),
            ..me
        };
        assert!(!signal_process(&stranger, Signal::SIGTERM));
        assert!(!signal_group(&stranger, Signal::SIGTERM));
    }
}
