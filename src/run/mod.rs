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
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::LoadedConfig;
use crate::config::schema::AuthorityMode;
use crate::error::Hinted;
use crate::proto::IssueCapabilityRequest;
use crate::state_dir::{Role, StateDir};

/// A granted capability.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub token_id: String,
    pub expires_at: DateTime<Utc>,
}

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

/// The Authority's gRPC URL: the local daemon's published address, or the remote URL.
pub fn authority_url(loaded: &LoadedConfig, state: &StateDir) -> Result<String, Hinted> {
    match loaded.config.authority.mode {
        AuthorityMode::Remote => Ok(loaded.config.authority.url.clone().unwrap_or_default()),
        AuthorityMode::Local => read_listen(state, Role::Authority)
            .map(|addr| format!("http://{addr}"))
            .ok_or_else(|| {
                Hinted::new(format!(
                    "{} is missing",
                    state.listen_file(Role::Authority).display()
                ))
                .hint("start the daemon with `firma sidecar start`")
            }),
    }
}

/// What `firma run` asks the Authority for; asked again (same session) to refresh.
#[derive(Debug, Clone)]
pub struct CapabilityRequest {
    /// gRPC URL of the Authority.
    pub authority: String,
    /// CA for an `https://` Authority.
    pub ca_cert: Option<PathBuf>,
    pub agent: String,
    pub actions: Vec<String>,
    pub session_id: String,
    /// The sandbox the agent runs in (empty: none); the token carries it into audit records.
    pub sandbox_id: String,
    pub ttl: Duration,
}

impl CapabilityRequest {
    /// Ask the Authority for a capability.
    pub async fn issue(&self) -> Result<Issued, Hinted> {
        let url = &self.authority;
        let agent = &self.agent;
        let mut client = crate::authority::client::connect(url, self.ca_cert.as_deref()).await?;
        let response = client
            .issue_capability(IssueCapabilityRequest {
                agent_id: agent.clone(),
                actions: self.actions.clone(),
                resource_scope: "*".to_string(),
                session_id: self.session_id.clone(),
                sandbox_id: self.sandbox_id.clone(),
                ttl_seconds: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|status| {
                Hinted::new(format!(
                    "the Authority at {url} rejected the request: {}",
                    status.message()
                ))
                .hint("check [project].agent and [project].actions in firma.toml")
            })?
            .into_inner();
        if !response.granted {
            return Err(Hinted::new(format!(
                "the Authority denied a capability for agent {agent:?}: {} ({})",
                response.deny_message, response.deny_reason
            ))
            .hint("allow it in issuance-policies/, or run the agent named in [project].agent"));
        }
        let expires_at = response
            .expires_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .unwrap_or_else(|| Utc::now() + self.ttl);
        Ok(Issued {
            token: response.token,
            token_id: response.token_id,
            expires_at,
        })
    }
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
