//! `firma sidecar stop`: find the pair through the state dir alone and tear it down in the stop
//! order — Sidecar soft-signalled first (its long-lived gRPC streams would otherwise hold up the
//! Authority's graceful shutdown), then the supervisor and the Authority. Survivors past the
//! timeout are SIGKILLed (the whole process group, also when its leader already exited). Every
//! signal goes through a recorded identity (PID-reuse safe). A zombie counts as gone: `stop` is
//! not the parent and never reaps; the supervisor (or init) does.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::lock::{LockError, StackLock};
use super::state::{Role, StateDir, remove_if_present};
use crate::error::Hinted;
use crate::platform::identity::Identity;
use crate::platform::process::{group_present, process_present, signal_group, signal_process};

/// How long to wait for SIGKILLed processes to vanish.
const SETTLE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(5);

/// What `stop` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Nothing was running (stale files, if any, were removed).
    pub nothing_running: bool,
    /// Leftover files of a dead stack were removed.
    pub removed_stale_files: bool,
    /// Roles that were running and are now gone, in stop order.
    pub stopped: Vec<Role>,
    /// Roles that needed SIGKILL.
    pub hard_killed: Vec<Role>,
}

struct Target {
    role: Role,
    id: Identity,
}

impl Target {
    fn present(&self) -> bool {
        match self.role {
            Role::Supervisor => process_present(&self.id),
            _ => group_present(&self.id),
        }
    }
    fn signal(&self, signal: Signal) -> bool {
        match self.role {
            Role::Supervisor => signal_process(&self.id, signal),
            _ => signal_group(&self.id, signal),
        }
    }
}

pub fn stop(state: &StateDir, timeout: Duration) -> Result<StopReport, Hinted> {
    let mut report = StopReport::default();
    if !state.path().is_dir() {
        report.nothing_running = true;
        return Ok(report);
    }
    let targets: Vec<Target> = [Role::Sidecar, Role::Supervisor, Role::Authority]
        .into_iter()
        .filter_map(|role| {
            Some(Target {
                role,
                id: state.read_identity(role)?,
            })
        })
        .filter(Target::present)
        .collect();
    if targets.is_empty() {
        report.nothing_running = true;
        report.removed_stale_files = clean_files(state)?;
        return Ok(report);
    }
    report.stopped = targets.iter().map(|t| t.role).collect();
    // Tell the supervisor the exits it is about to see were asked for.
    std::fs::write(state.stop_marker(), format!("{}\n", std::process::id())).map_err(|err| {
        Hinted::new(format!(
            "cannot write {}: {err}",
            state.stop_marker().display()
        ))
        .hint("check the permissions of the state directory")
    })?;
    let deadline = Instant::now() + timeout;

    // 1. The Sidecar, alone, so its streams to the Authority close first.
    if let Some(sidecar) = targets.iter().find(|t| t.role == Role::Sidecar) {
        sidecar.signal(Signal::SIGTERM);
        wait_until(deadline, || !sidecar.present());
    }
    // 2. The supervisor and the Authority.
    for target in targets.iter().filter(|t| t.role != Role::Sidecar) {
        target.signal(Signal::SIGTERM);
    }
    wait_until(deadline, || targets.iter().all(|t| !t.present()));

    // 3. Survivors are hard-killed.
    for target in targets.iter().filter(|t| t.present()) {
        tracing::warn!(component = target.role.name(), "SIGKILL after --timeout");
        target.signal(Signal::SIGKILL);
        report.hard_killed.push(target.role);
    }
    if !wait_until(Instant::now() + SETTLE, || {
        targets.iter().all(|t| !t.present())
    }) {
        let left: Vec<String> = targets
            .iter()
            .filter(|t| t.present())
            .map(|t| format!("{} (pid {})", t.role.name(), t.id.pid))
            .collect();
        return Err(Hinted::new(format!(
            "still running after SIGKILL: {}; state files kept",
            left.join(", ")
        ))
        .hint("a process stuck in the kernel (state D) cannot be killed; check `ps` and retry `firma sidecar stop`"));
    }
    clean_files(state)?;
    Ok(report)
}

/// Remove the runtime files under the lock (so a start racing us keeps its own files).
/// Returns whether there was anything to remove.
fn clean_files(state: &StateDir) -> Result<bool, Hinted> {
    // The supervisor releases the lock as it exits; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(1);
    // Looked at before locking: taking the lock creates `stack.lock`.
    let had = state.has_runtime_files();
    loop {
        match StackLock::try_acquire(&state.lock_file()) {
            Ok(lock) => {
                state.remove_runtime_files();
                lock.release();
                return Ok(had);
            }
            Err(LockError::Held { holder }) => {
                if Instant::now() >= deadline {
                    remove_if_present(&state.stop_marker());
                    let who =
                        holder.map_or_else(|| "another process".into(), |p| format!("pid {p}"));
                    return Err(Hinted::new(format!(
                        "{} is held by {who}, but no firma process is recorded in {}",
                        state.lock_file().display(),
                        state.path().display()
                    ))
                    .hint("a start may be in progress; wait for it and run `firma sidecar stop` again"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(LockError::Io(err)) => {
                return Err(Hinted::new(format!(
                    "cannot lock {}: {err}",
                    state.lock_file().display()
                ))
                .hint("check the permissions of the state directory"));
            }
        }
    }
}

fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
