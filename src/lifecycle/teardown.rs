//! Stopping a child the supervisor owns: SIGTERM to its process group, a grace window, SIGKILL
//! to the group, and proof that it is gone (we are the parent: the leader is reaped).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::spawn::Member;
use super::state::Role;
use crate::platform::process::signal_group;

/// How long to wait for a SIGKILLed group to vanish before giving up (state is then kept).
const SETTLE: Duration = Duration::from_secs(2);

/// Wait for a member's exit (forever when the slot is empty).
pub async fn wait_member(member: &mut Option<Member>) -> (Role, std::io::Result<ExitStatus>) {
    match member {
        Some(m) if !m.exit_recorded => (m.role, m.child.wait().await),
        _ => std::future::pending().await,
    }
}

/// SIGTERM the member's group, wait up to `window` for the leader to exit and the group to empty,
/// then SIGKILL the group and wait up to [`SETTLE`]. Returns whether it is proven gone.
pub async fn stop_member(member: &mut Member, window: Duration) -> bool {
    let name = member.role.name();
    if signal_group(&member.identity, Signal::SIGTERM) {
        tracing::info!(
            component = name,
            pid = member.identity.pid,
            "SIGTERM sent to process group"
        );
    }
    if wait_gone(member, Instant::now() + window).await {
        return true;
    }
    tracing::warn!(
        component = name,
        "still running after {window:?}; SIGKILL to its process group"
    );
    signal_group(&member.identity, Signal::SIGKILL);
    let gone = wait_gone(member, Instant::now() + SETTLE).await;
    if !gone {
        tracing::error!(
            component = name,
            pid = member.identity.pid,
            "did not vanish after SIGKILL"
        );
    }
    gone
}

async fn wait_gone(member: &mut Member, until: Instant) -> bool {
    loop {
        let leader_done = matches!(member.child.try_wait(), Ok(Some(_)) | Err(_));
        if leader_done && member.identity.live_group_members().is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        if leader_done {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            tokio::select! {
                _ = member.child.wait() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}
