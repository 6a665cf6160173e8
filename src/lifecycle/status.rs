//! `firma sidecar status`: what runs in a state dir, read from the files and confirmed by probes.
//!
//! | state | meaning |
//! |---|---|
//! | `running` | the recorded process is alive (identity checked) and its endpoint answers (Authority: gRPC health `SERVING`; Sidecar: TCP connect) |
//! | `unhealthy` | alive, but the endpoint does not answer (or is not published yet) |
//! | `stopped` | no record, the process is gone, or the pid now belongs to somebody else |

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::identity::Liveness;
use super::probes::{self, ProbeTls};
use super::state::{Role, StateDir};

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Unhealthy,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Unhealthy => "unhealthy",
            Self::Stopped => "stopped",
        }
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// `authority`, `sidecar` or `supervisor`.
    pub name: &'static str,
    pub pid: Option<i32>,
    pub state: State,
    /// `ip:port` (or the URL of a remote Authority).
    pub listen: Option<String>,
    pub uptime_secs: Option<u64>,
    /// RFC 3339 UTC.
    pub started_at: Option<String>,
    /// True for an Authority `start` did not boot (`[authority] mode = "remote"`).
    pub remote: bool,
}

/// The whole report (`--json` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackStatus {
    pub state_dir: String,
    /// The supervisor's pid when it runs (the `--daemon` value).
    pub daemon_pid: Option<i32>,
    /// Whether the supervisor is a detached `__supervise` (null when nothing runs).
    pub detached: Option<bool>,
    /// `local` or `remote` (null when nothing runs).
    pub authority_mode: Option<String>,
    pub components: Vec<Component>,
}

impl StackStatus {
    pub fn all_running(&self) -> bool {
        self.components.iter().all(|c| c.state == State::Running)
    }
}

pub async fn status(state: &StateDir) -> StackStatus {
    let meta = state.read_meta();
    let supervisor = process_row(state, Role::Supervisor, "supervisor");
    let authority = match &meta {
        Some(m) if m.authority_mode == "remote" => {
            let tls = ProbeTls {
                ca_cert: m.authority_ca_cert.clone(),
            };
            let healthy = supervisor.state == State::Running
                && probes::grpc_health(&m.authority_url, &tls, PROBE_TIMEOUT)
                    .await
                    .is_ok();
            Component {
                name: "authority",
                pid: None,
                state: if supervisor.state != State::Running {
                    State::Stopped
                } else if healthy {
                    State::Running
                } else {
                    State::Unhealthy
                },
                listen: Some(m.authority_url.clone()),
                uptime_secs: None,
                started_at: None,
                remote: true,
            }
        }
        _ => {
            let mut row = process_row(state, Role::Authority, "authority");
            if row.state == State::Running {
                let ok = match &row.listen {
                    Some(listen) => {
                        let url = match listen.parse() {
                            Ok(addr) => format!("http://{}", probes::dialable(addr)),
                            Err(_) => listen.clone(),
                        };
                        let url = match &meta {
                            Some(m) if m.authority_url.starts_with("https://") => {
                                m.authority_url.clone()
                            }
                            _ => url,
                        };
                        let tls = ProbeTls {
                            ca_cert: meta.as_ref().and_then(|m| m.authority_ca_cert.clone()),
                        };
                        probes::grpc_health(&url, &tls, PROBE_TIMEOUT).await.is_ok()
                    }
                    None => false,
                };
                if !ok {
                    row.state = State::Unhealthy;
                }
            }
            row
        }
    };
    let mut sidecar = process_row(state, Role::Sidecar, "sidecar");
    if sidecar.state == State::Running {
        let ok = match sidecar.listen.as_deref().and_then(|l| l.parse().ok()) {
            Some(addr) => probes::tcp_accepts(addr, Duration::from_millis(200))
                .await
                .is_ok(),
            None => false,
        };
        // A Sidecar whose audit log is unavailable refuses every call (evidence or nothing).
        if !ok || !audit_available(state).await {
            sidecar.state = State::Unhealthy;
        }
    }
    let running = supervisor.state == State::Running;
    StackStatus {
        state_dir: state.path().display().to_string(),
        daemon_pid: supervisor.pid.filter(|_| running),
        detached: meta.as_ref().filter(|_| running).map(|m| m.detached),
        authority_mode: meta
            .as_ref()
            .filter(|_| running)
            .map(|m| m.authority_mode.clone()),
        components: vec![authority, sidecar, supervisor],
    }
}

/// Whether the Sidecar's control socket reports its audit log usable (a Sidecar that does not
/// answer on it counts as usable: the TCP probe judges it).
async fn audit_available(state: &StateDir) -> bool {
    let socket = state.sidecar_socket();
    tokio::task::spawn_blocking(move || {
        crate::audit::control::health(&socket, PROBE_TIMEOUT).map_or(true, |h| h.is_ok())
    })
    .await
    .unwrap_or(true)
}

/// Liveness from the recorded identity; pid from the pidfile (or the identity while booting).
fn process_row(state: &StateDir, role: Role, name: &'static str) -> Component {
    let pidfile = state.read_pid(role);
    let identity = state.read_identity(role);
    let alive = identity
        .as_ref()
        .filter(|id| id.liveness() == Liveness::Alive);
    let mut row = Component {
        name,
        pid: pidfile.or(identity.as_ref().map(|i| i.pid)),
        state: State::Stopped,
        listen: None,
        uptime_secs: None,
        started_at: None,
        remote: false,
    };
    if let Some(id) = alive {
        row.pid = Some(id.pid);
        row.listen = state.read_listen(role);
        row.state = if role == Role::Supervisor || pidfile == Some(id.pid) {
            State::Running
        } else {
            // Alive but not (yet) published: still booting, or its pidfile was replaced.
            State::Unhealthy
        };
        if let Some(started) = id.started_at() {
            row.uptime_secs = SystemTime::now()
                .duration_since(started)
                .ok()
                .map(|d| d.as_secs());
            row.started_at = Some(
                chrono::DateTime::<chrono::Utc>::from(started)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
    }
    row
}

/// `HH:MM:SS` (hours grow past 24).
pub fn format_uptime(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The docker-ps-style table.
pub fn render_table(status: &StackStatus) -> String {
    let mut out = format!(
        "{:<12}{:<9}{:<11}{:<28}{}\n",
        "NAME", "PID", "STATE", "LISTEN", "UPTIME"
    );
    for c in &status.components {
        let pid = c.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let listen = match (&c.listen, c.remote) {
            (Some(l), true) => format!("{l} (remote)"),
            (Some(l), false) => l.clone(),
            (None, _) => "-".into(),
        };
        let uptime = c.uptime_secs.map_or_else(|| "-".to_string(), format_uptime);
        out.push_str(&format!(
            "{:<12}{:<9}{:<11}{:<28}{}\n",
            c.name,
            pid,
            c.state.as_str(),
            listen,
            uptime
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StackStatus {
        StackStatus {
            state_dir: "/run/firma".into(),
            daemon_pid: Some(40),
            detached: Some(true),
            authority_mode: Some("local".into()),
            components: vec![
                Component {
                    name: "authority",
                    pid: Some(41),
                    state: State::Running,
                    listen: Some("127.0.0.1:50051".into()),
                    uptime_secs: Some(3725),
                    started_at: Some("2026-01-01T00:00:00Z".into()),
                    remote: false,
                },
                Component {
                    name: "sidecar",
                    pid: Some(42),
                    state: State::Stopped,
                    listen: None,
                    uptime_secs: None,
                    started_at: None,
                    remote: false,
                },
                Component {
                    name: "supervisor",
                    pid: Some(40),
                    state: State::Running,
                    listen: None,
                    uptime_secs: Some(59),
                    started_at: Some("2026-01-01T00:00:00Z".into()),
                    remote: false,
                },
            ],
        }
    }

    #[test]
    fn table_snapshot() {
        insta::assert_snapshot!(render_table(&sample()));
    }

    #[test]
    fn json_snapshot() {
        insta::assert_json_snapshot!(sample());
    }

    #[test]
    fn uptime_format() {
        assert_eq!(format_uptime(0), "00:00:00");
        assert_eq!(format_uptime(3725), "01:02:05");
        assert_eq!(format_uptime(90000), "25:00:00");
    }
}
