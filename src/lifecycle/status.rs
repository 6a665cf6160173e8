//! `firma sidecar status`: what runs in a state dir, read from the files and confirmed by probes.
//!
//! | state | meaning |
//! |---|---|
//! | `running` | the recorded process is alive (identity checked) and its endpoint answers (Authority: gRPC health `SERVING`; Sidecar: TCP connect) |
//! | `degraded` | running, but not as configured: it reports a problem in its health file (the Authority serving an older policy bundle because the current files do not load) |
//! | `unhealthy` | alive, but the endpoint does not answer (or is not published yet) |
//! | `crashed` | not running, and the supervisor recorded that it ended on its own (exit status or signal, and when) |
//! | `stopped` | no record, the process is gone after a requested stop, or the pid now belongs to somebody else |

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::exits::{ExitLog, ExitRecord};
use super::health::{Degradation, Health};
use super::probes::{self, ProbeTls};
use super::state::{Role, StackMeta, StateDir};
use crate::platform::identity::Liveness;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Degraded,
    Unhealthy,
    Crashed,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Crashed => "crashed",
            Self::Stopped => "stopped",
        }
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    #[serde(skip)]
    pub role: Role,
    /// `authority`, `sidecar` or `supervisor` (the role's name).
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
    /// How often the supervisor restarted it this run.
    pub restarts: u32,
    /// How it last ended this run (null while it never ended).
    pub last_exit: Option<ExitRecord>,
    /// What it reports about its own health (`degraded` lists why; null when it reports nothing).
    pub health: Option<Health>,
}

impl Component {
    /// The STATE column as seen at `now`: `crashed (SIGKILL, 2m ago)`, else the state's name.
    pub fn state_text(&self, now: SystemTime) -> String {
        match (&self.state, &self.last_exit) {
            (State::Crashed, Some(exit)) => format!("crashed ({})", exit.summary(now)),
            (state, _) => state.as_str().to_string(),
        }
    }

    /// The explanation printed under the table, for a degraded, crashed or explained unhealthy
    /// component.
    pub fn detail(&self) -> Option<String> {
        match self.state {
            State::Degraded => self
                .health
                .as_ref()
                .map(|h| format!("{} degraded: {}", self.name, h.summary())),
            // An unhealthy Sidecar says why when it can (its audit log is unavailable).
            State::Unhealthy => self
                .health
                .as_ref()
                .filter(|h| h.is_degraded())
                .map(|h| format!("{} unhealthy: {}", self.name, h.summary())),
            State::Crashed => self.last_exit.as_ref().map(|exit| {
                let log = exit
                    .log
                    .as_deref()
                    .map(|l| format!("; last log line: {l}"))
                    .unwrap_or_default();
                format!("{} crashed ({}) at {}{log}", self.name, exit.cause, exit.at)
            }),
            _ => None,
        }
    }
}

/// Which project a stack serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectRef {
    /// The workspace directory's name.
    pub name: String,
    /// The exact firma.toml both children were given.
    pub config: String,
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
    /// The project the running stack serves (null when nothing runs).
    pub project: Option<ProjectRef>,
    pub components: Vec<Component>,
}

impl StackStatus {
    pub fn all_running(&self) -> bool {
        self.components.iter().all(|c| c.state == State::Running)
    }

    /// Whether nothing runs and nothing ended badly: a fresh install, or a clean stop.
    pub fn quiet(&self) -> bool {
        self.components
            .iter()
            .all(|c| c.state == State::Stopped || c.remote)
    }
}

pub async fn status(state: &StateDir) -> StackStatus {
    let meta = state.read_meta();
    let exits = state.read_exits();
    let supervisor = process_row(state, Role::Supervisor, &exits);
    let running = supervisor.state == State::Running;
    let authority = match &meta {
        Some(m) if m.authority_mode == "remote" => remote_authority_row(m, running).await,
        _ => {
            let mut row = process_row(state, Role::Authority, &exits);
            if row.state == State::Running && !authority_answers(&row, meta.as_ref()).await {
                row.state = State::Unhealthy;
            }
            row
        }
    };
    let mut sidecar = process_row(state, Role::Sidecar, &exits);
    if sidecar.state == State::Running {
        let ok = match sidecar.listen.as_deref().and_then(|l| l.parse().ok()) {
            Some(addr) => probes::tcp_accepts(addr, Duration::from_millis(200))
                .await
                .is_ok(),
            None => false,
        };
        if !ok {
            sidecar.state = State::Unhealthy;
        }
        // A Sidecar whose audit log is unavailable refuses every call (evidence or nothing).
        if let Some(problem) = audit_unavailable(state).await {
            sidecar.state = State::Unhealthy;
            sidecar
                .health
                .get_or_insert_with(Health::default)
                .degraded
                .push(problem);
        }
    }
    let meta = meta.filter(|_| running);
    StackStatus {
        state_dir: state.path().display().to_string(),
        daemon_pid: supervisor.pid.filter(|_| running),
        detached: meta.as_ref().map(|m| m.detached),
        authority_mode: meta.as_ref().map(|m| m.authority_mode.clone()),
        project: meta.as_ref().map(|m| ProjectRef {
            name: m.project.clone(),
            config: m.config.display().to_string(),
        }),
        components: vec![authority, sidecar, supervisor],
    }
}

async fn remote_authority_row(meta: &StackMeta, supervisor_running: bool) -> Component {
    let tls = ProbeTls {
        ca_cert: meta.authority_ca_cert.clone(),
    };
    let state = if !supervisor_running {
        State::Stopped
    } else if probes::grpc_health(&meta.authority_url, &tls, PROBE_TIMEOUT)
        .await
        .is_ok()
    {
        State::Running
    } else {
        State::Unhealthy
    };
    Component {
        role: Role::Authority,
        name: Role::Authority.name(),
        pid: None,
        state,
        listen: Some(meta.authority_url.clone()),
        uptime_secs: None,
        started_at: None,
        remote: true,
        restarts: 0,
        last_exit: None,
        health: None,
    }
}

/// The local Authority's gRPC health check, over TLS when it serves TLS.
async fn authority_answers(row: &Component, meta: Option<&StackMeta>) -> bool {
    let Some(listen) = &row.listen else {
        return false;
    };
    let url = match meta {
        Some(m) if m.authority_url.starts_with("https://") => m.authority_url.clone(),
        _ => match listen.parse() {
            Ok(addr) => crate::authority::client::url_of(false, addr),
            Err(_) => listen.clone(),
        },
    };
    let tls = ProbeTls {
        ca_cert: meta.and_then(|m| m.authority_ca_cert.clone()),
    };
    probes::grpc_health(&url, &tls, PROBE_TIMEOUT).await.is_ok()
}

/// What the Sidecar's control socket says when its audit log is unavailable (`None`: usable, or
/// no answer — the TCP probe judges that).
async fn audit_unavailable(state: &StateDir) -> Option<Degradation> {
    let socket = state.sidecar_socket();
    let health = tokio::task::spawn_blocking(move || {
        crate::audit::control::health(&socket, PROBE_TIMEOUT).ok()
    })
    .await
    .ok()??;
    (!health.is_ok()).then(|| Degradation {
        what: "audit log".into(),
        message: format!(
            "audit_unavailable: {}; every call is refused",
            health.reason.unwrap_or_default()
        ),
        since: health.since.unwrap_or_default(),
    })
}

/// Liveness from the recorded identity; pid from the pidfile (or the identity while booting);
/// a crash from the supervisor's exit record; degradation from the component's health file.
fn process_row(state: &StateDir, role: Role, exits: &ExitLog) -> Component {
    let pidfile = state.read_pid(role);
    let identity = state.read_identity(role);
    let alive = identity
        .as_ref()
        .filter(|id| id.liveness() == Liveness::Alive);
    let recorded = exits.get(role);
    let mut row = Component {
        role,
        name: role.name(),
        pid: pidfile.or(identity.as_ref().map(|i| i.pid)),
        state: State::Stopped,
        listen: None,
        uptime_secs: None,
        started_at: None,
        remote: false,
        restarts: recorded.map_or(0, |r| r.restarts),
        last_exit: recorded.and_then(|r| r.last.clone()),
        health: None,
    };
    let Some(id) = alive else {
        if row.last_exit.as_ref().is_some_and(ExitRecord::crashed) {
            row.state = State::Crashed;
            row.pid = row.last_exit.as_ref().map(|e| e.pid);
        }
        return row;
    };
    row.pid = Some(id.pid);
    row.listen = state.read_listen(role);
    row.state = if role == Role::Supervisor || pidfile == Some(id.pid) {
        State::Running
    } else {
        // Alive but not (yet) published: still booting, or its pidfile was replaced.
        State::Unhealthy
    };
    row.health = state.read_health(role);
    if row.state == State::Running && row.health.as_ref().is_some_and(Health::is_degraded) {
        row.state = State::Degraded;
    }
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
    row
}

/// `HH:MM:SS` (hours grow past 24).
pub fn format_uptime(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The docker-ps-style table, then one line per degraded or crashed component saying why.
pub fn render_table(status: &StackStatus) -> String {
    render_table_at(status, SystemTime::now())
}

/// [`render_table`] as seen at `now` (ages like `2m ago` are relative to it).
pub fn render_table_at(status: &StackStatus, now: SystemTime) -> String {
    let project = status.project.as_ref().map(|p| p.name.as_str());
    let rows: Vec<[String; 7]> = status
        .components
        .iter()
        .map(|c| {
            let listen = match (&c.listen, c.remote) {
                (Some(l), true) => format!("{l} (remote)"),
                (Some(l), false) => l.clone(),
                (None, _) => "-".into(),
            };
            let restarts = if c.role == Role::Supervisor || c.remote {
                "-".to_string()
            } else {
                c.restarts.to_string()
            };
            [
                c.name.to_string(),
                c.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                c.state_text(now),
                listen,
                c.uptime_secs.map_or_else(|| "-".to_string(), format_uptime),
                restarts,
                project.unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME", "PID", "STATE", "LISTEN", "UPTIME", "RESTARTS", "PROJECT",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(row));
    }
    for detail in status.components.iter().filter_map(Component::detail) {
        out.push_str(&detail);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::process::ExitCause;

    fn row(role: Role, state: State) -> Component {
        Component {
            role,
            name: role.name(),
            pid: None,
            state,
            listen: None,
            uptime_secs: None,
            started_at: None,
            remote: false,
            restarts: 0,
            last_exit: None,
            health: None,
        }
    }

    fn sample() -> StackStatus {
        StackStatus {
            state_dir: "/run/firma".into(),
            daemon_pid: Some(40),
            detached: Some(true),
            authority_mode: Some("local".into()),
            project: Some(ProjectRef {
                name: "proj".into(),
                config: "/home/u/proj/.firma/firma.toml".into(),
            }),
            components: vec![
                Component {
                    pid: Some(41),
                    listen: Some("127.0.0.1:50051".into()),
                    uptime_secs: Some(3725),
                    started_at: Some("2026-01-01T00:00:00Z".into()),
                    health: Some(Health {
                        degraded: vec![Degradation {
                            what: "runtime policies".into(),
                            message: "/home/u/proj/.firma/policies/broken.cedar:1:41: unexpected end of input (bundle 0a1b2c3d4e5f kept)".into(),
                            since: "2026-01-01T01:00:00Z".into(),
                        }],
                    }),
                    ..row(Role::Authority, State::Degraded)
                },
                Component {
                    pid: Some(42),
                    restarts: 1,
                    last_exit: Some(ExitRecord {
                        pid: 42,
                        cause: ExitCause::Signal("SIGKILL".into()),
                        at: "2026-01-01T01:00:00Z".into(),
                        requested: false,
                        log: Some("listening on 127.0.0.1:8080".into()),
                    }),
                    ..row(Role::Sidecar, State::Crashed)
                },
                Component {
                    pid: Some(40),
                    uptime_secs: Some(59),
                    started_at: Some("2026-01-01T00:00:00Z".into()),
                    ..row(Role::Supervisor, State::Running)
                },
            ],
        }
    }

    fn now() -> SystemTime {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:02:30Z").unwrap();
        SystemTime::from(at.to_utc())
    }

    #[test]
    fn table_snapshot() {
        insta::assert_snapshot!(render_table_at(&sample(), now()));
    }

    #[test]
    fn json_snapshot() {
        insta::assert_json_snapshot!(sample());
    }

    #[test]
    fn nothing_running_reads_stopped_without_details() {
        let status = StackStatus {
            state_dir: "/s".into(),
            daemon_pid: None,
            detached: None,
            authority_mode: None,
            project: None,
            components: vec![
                row(Role::Authority, State::Stopped),
                row(Role::Sidecar, State::Stopped),
                row(Role::Supervisor, State::Stopped),
            ],
        };
        assert!(status.quiet() && !status.all_running());
        insta::assert_snapshot!(render_table_at(&status, now()));
    }

    #[test]
    fn uptime_format() {
        assert_eq!(format_uptime(0), "00:00:00");
        assert_eq!(format_uptime(3725), "01:02:05");
        assert_eq!(format_uptime(90000), "25:00:00");
    }
}
