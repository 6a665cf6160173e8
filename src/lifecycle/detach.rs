//! `start --detach`: the launcher re-executes this binary as the hidden `firma __supervise` (never
//! `fork()` once a tokio runtime exists), stdin from /dev/null, stdout+stderr appended to
//! `<state>/supervisor.log`, and `NOTIFY_SOCKET` naming a socket the launcher listens on. The
//! supervisor calls `setsid()` (it is not a group leader, so it may), boots the pair as the
//! children's parent, and reports `READY=1` — or `X_FIRMA_ERROR=` after its rollback — over the
//! same protocol a child uses with it and it uses with systemd. The launcher exits 0 only after
//! `READY=1`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

use super::channel::NotifyChannel;
use super::notify::NOTIFY_SOCKET_ENV;
use super::spawn::{component_exe, open_run_log};
use super::state::{Role, StateDir};
use crate::config::dirs::ensure_private_dir;
use crate::error::Hinted;
use crate::platform::process::{new_session, signal_child};
use crate::platform::signals::Signals;

/// The hidden subcommand the launcher runs.
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// What the launcher learned from the supervisor's `READY=1`.
#[derive(Debug, Clone)]
pub struct Launched {
    pub supervisor_pid: u32,
    pub sidecar_listen: Option<String>,
    pub authority_url: Option<String>,
}

pub async fn launch(
    config: &Path,
    state: &StateDir,
    ready_timeout: Duration,
    signals: &mut Signals,
) -> Result<Launched, Hinted> {
    ensure_private_dir(state.path())?;
    let channel = NotifyChannel::bind(state, "launch").map_err(|err| {
        Hinted::new(format!(
            "cannot create the readiness socket in {}: {err}",
            state.path().display()
        ))
        .hint("check that the state directory is writable")
    })?;
    let log_path = state.log_file(Role::Supervisor);
    let out = open_run_log(state, Role::Supervisor)?;
    let err = out
        .try_clone()
        .map_err(|e| Hinted::new(format!("cannot open {}: {e}", log_path.display())))?;
    let exe = component_exe(Role::Supervisor)?;
    let mut child = Command::new(&exe)
        .arg(SUPERVISE_COMMAND)
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state.path())
        .env(NOTIFY_SOCKET_ENV, channel.address())
        // A daemon must not pin the operator's working directory (every path it needs is
        // absolute: the config file, and paths inside it resolve against the file).
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            Hinted::new(format!(
                "cannot run {} {SUPERVISE_COMMAND}: {e}",
                exe.display()
            ))
            .hint("reinstall firma")
        })?;
    let pid = child.id().unwrap_or(0);
    let log_hint = format!("see {}", log_path.display());
    // The supervisor bounds each component by `ready_timeout`; this only guards against a hang.
    let outer = ready_timeout * 2 + Duration::from_secs(15);
    let give_up = tokio::time::sleep(outer);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            biased;
            note = channel.recv() => {
                let note = note.map_err(|e| Hinted::new(format!("readiness socket failed: {e}")))?;
                if note.ready {
                    return Ok(Launched {
                        supervisor_pid: pid,
                        sidecar_listen: note.listen,
                        authority_url: note.authority,
                    });
                }
                if let Some(message) = note.error {
                    // The supervisor rolled back before reporting; let it finish exiting.
                    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                    return Err(Hinted::new(message).hint(note.hint.unwrap_or(log_hint)));
                }
            }
            status = child.wait() => {
                // It reports before exiting; a report may still be queued.
                while let Some(note) = channel.try_recv() {
                    if let Some(message) = note.error {
                        return Err(Hinted::new(message).hint(note.hint.unwrap_or(log_hint)));
                    }
                }
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(Hinted::new(format!("the supervisor exited before the pair was ready ({status})"))
                    .hint(log_hint));
            }
            _ = &mut give_up => {
                terminate(&mut child, pid).await;
                return Err(Hinted::new(format!("the supervisor did not report ready within {}", humantime::format_duration(outer)))
                    .hint(log_hint));
            }
            sig = signals.recv() => {
                terminate(&mut child, pid).await;
                return Err(Hinted::new(format!("start interrupted by {sig}; the supervisor rolled back"))
                    .hint(log_hint));
            }
        }
    }
}

/// The detached supervisor's first step, before any runtime or thread exists: leave the
/// launcher's session, so closing its terminal does not reach the daemon. The launcher did not
/// make us a group leader, so this succeeds; if it does not (run by hand as a job leader), we
/// carry on in the caller's session — returned so it can be logged once logging is set up.
pub fn enter_own_session() -> Result<(), std::io::Error> {
    new_session()
}

/// Ask the supervisor to roll back (SIGTERM) and wait for it.
async fn terminate(child: &mut tokio::process::Child, pid: u32) {
    signal_child(pid, Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
