//! Signalling what firma started, and only that: every signal goes through a recorded
//! [`Identity`], to the whole process group of a component (so grandchildren are not orphaned),
//! also after the group's leader has exited.

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    #[test]
    fn group_kill_reaches_grandchildren_after_the_leader_exits() {
        // Leader starts a grandchild that ignores SIGTERM, then exits on SIGTERM itself.
        let mut leader = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' & wait",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let id = Identity::of(leader.id() as i32).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while id.live_group_members().len() < 2 && Instant::now() < deadline {
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
