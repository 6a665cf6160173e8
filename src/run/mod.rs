//! `firma run`: wrap an agent so every call it makes goes through the Sidecar.
//!
//! Steps ([`session::execute`]): find (or implicitly scaffold) the project, make sure the daemon
//! pair runs (starting it with `firma sidecar start --detach` when it does not), obtain a
//! capability token from the Authority, start the credential relay, run the agent — inside the
//! sandbox ([`sandbox`]) unless `--sandbox off` — with proxy and CA variables, keep the token
//! fresh ([`refresh`]), forward signals ([`signals`]), and exit with the agent's status.

pub mod env;
pub mod layout;
pub mod refresh;
pub mod relay;
pub mod sandbox;
pub mod session;
pub mod signals;

pub use session::{RunError, RunOptions, execute};

/// Why `firma run` (or its sandbox launcher) ended before the agent's own exit status; the CLI
/// maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// firma itself failed, or refused (a `--sandbox required` that cannot be met).
    Error,
    /// The agent's command could not be found or executed.
    CommandNotFound,
}

/// Where `firma run` sends its own operator lines (the CLI renders them on stderr: stdout
/// belongs to the agent).
pub trait Notices: Send + Sync {
    fn info(&self, message: &str);
    fn warn(&self, message: &str);
}

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Hinted;
use crate::state_dir::{Role, StateDir};

/// The address the lifecycle core published for `role` (`authority.listen`, `sidecar.listen`).
pub fn read_listen(state: &StateDir, role: Role) -> Option<SocketAddr> {
    state.read_listen(role)?.parse().ok()
}

/// Whether the daemon's Sidecar answers on its published address.
pub fn sidecar_running(state: &StateDir) -> Option<SocketAddr> {
    let addr = read_listen(state, Role::Sidecar)?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .ok()
        .map(|_| addr)
}

/// Start the daemon pair through the lifecycle core (`firma sidecar start --detach`).
pub fn start_daemon(config: &Path, state: &StateDir) -> Result<(), Hinted> {
    let exe = std::env::current_exe()
        .map_err(|err| Hinted::new(format!("cannot locate the firma binary: {err}")))?;
    let output = std::process::Command::new(exe)
        .args(["sidecar", "start", "--detach", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Hinted::new(format!("cannot run `firma sidecar start`: {err}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(stderr.trim());
    Err(
        Hinted::new(format!("starting the daemon failed: {detail}")).hint(format!(
            "run `firma sidecar start --state-dir {}` to see the full error",
            state.path().display()
        )),
    )
}

/// When to ask for the next token: two thirds into the lifetime, and at least 5 s before expiry.
pub fn refresh_delay(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Duration {
    let remaining = (expires_at - now).to_std().unwrap_or_default();
    let two_thirds = remaining.mul_f64(2.0 / 3.0);
    two_thirds
        .min(remaining.saturating_sub(Duration::from_secs(5)))
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_happens_before_expiry() {
        let now = Utc::now();
        let delay = refresh_delay(now, now + chrono::Duration::minutes(15));
        assert_eq!(delay, Duration::from_secs(600));
        let delay = refresh_delay(now, now + chrono::Duration::seconds(6));
        assert_eq!(delay, Duration::from_secs(1));
        assert_eq!(
            refresh_delay(now, now - chrono::Duration::seconds(5)),
            Duration::from_secs(1)
        );
    }
}
