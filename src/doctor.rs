//! `firma doctor`'s checks as data: each is OK / WARN / FAIL with a reason and, when it is not
//! OK, a fix. The checks only read (files, `/proc`, the daemons' health endpoints); `cli/doctor.rs`
//! renders them. A fresh install with no daemon running never FAILs on the daemon (it WARNs
//! with the command that starts it); a crashed or degraded one does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::verify::{VerifyOptions, resume_at_offset, verify};
use crate::config::dirs::resolve_data_dir;
use crate::config::schema::AuthorityMode;
use crate::config::{Discovery, LoadedConfig, keys};
use crate::lifecycle::status::{Component, StackStatus, State};
use crate::sidecar::ca::{CaStatus, inspect};
use crate::sidecar::mapping::MappingTable;
use crate::state_dir::StateDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    /// What to do about a WARN or FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            reason: reason.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The whole report (`--json` prints it, versioned by `cli::json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub worst: Status,
}

/// What to examine.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub state: StateDir,
    /// `--config`, if given (else discovery decides).
    pub config: Option<PathBuf>,
    /// Verify the whole audit log instead of its tail.
    pub full_audit: bool,
    /// What `firma sidecar status` reports for the state dir.
    pub daemon: StackStatus,
}

/// Run every check, in the order they are shown.
pub fn diagnose(inputs: &Inputs) -> Report {
    let state = &inputs.state;
    let mut checks = vec![binary_check()];
    let loaded = match Discovery::new(inputs.config.clone()).load_optional() {
        Ok(Some(loaded)) => {
            checks.push(Check::ok(
                "config",
                format!("{} (selected by {})", loaded.path.display(), loaded.source),
            ));
            Some(loaded)
        }
        Ok(None) => {
            checks.push(Check::warn(
                "config",
                "no firma.toml found (no --config, FIRMA_CONFIG unset, no .firma/ above this directory)",
                "run `firma init` in your project",
            ));
            None
        }
        Err(err) => {
            checks.push(Check::fail(
                "config",
                err.message(),
                err.hint_text().unwrap_or("fix the file"),
            ));
            None
        }
    };
    if let Some(loaded) = &loaded {
        checks.push(mapping_check(loaded));
        checks.extend(key_checks(loaded));
    }
    checks.push(daemon_check(state, &inputs.daemon));
    checks.push(ca_check(state));
    if let Some(loaded) = &loaded {
        let state = &state
            .clone()
            .with_audit_dir(loaded.config.sidecar.audit.dir.clone());
        checks.push(audit_check(loaded, state, inputs.full_audit));
        checks.push(audit_placement_check(state));
        checks.extend(witness_check(loaded, state));
    }
    checks.extend(audit_health_check(state));
    checks.push(dir_check(
        "state dir",
        state.path(),
        "`firma init` or `firma sidecar start` creates it",
    ));
    match resolve_data_dir() {
        Ok(dir) => checks.push(dir_check("data dir", dir.path(), "`firma init` creates it")),
        Err(err) => checks.push(Check::warn(
            "data dir",
            err.message(),
            err.hint_text().unwrap_or(""),
        )),
    }
    checks.push(clock_check());
    checks.push(sandbox_check());
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    Report { checks, worst }
}

/// What `firma run`'s sandbox can use here (probed in a throwaway process).
fn sandbox_check() -> Check {
    let offered = crate::run::sandbox::probe();
    if offered.missing().is_empty() {
        Check::ok("sandbox", offered.summary())
    } else {
        Check::warn("sandbox", offered.summary(), offered.remedies())
    }
}

fn binary_check() -> Check {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::current_exe() {
        Ok(path) => Check::ok("binary", format!("{} (v{version})", path.display())),
        Err(err) => Check::fail(
            "binary",
            format!("cannot locate the running binary: {err}"),
            "reinstall firma",
        ),
    }
}

fn mapping_check(loaded: &LoadedConfig) -> Check {
    let path = &loaded.config.sidecar.mapping.rules;
    match MappingTable::load(path) {
        Ok(table) => Check::ok(
            "mapping rules",
            format!("{} rules in {}", table.rules().len(), path.display()),
        ),
        Err(err) => Check::fail(
            "mapping rules",
            err.message(),
            err.hint_text().unwrap_or("fix the file"),
        ),
    }
}

fn key_checks(loaded: &LoadedConfig) -> Vec<Check> {
    let mut keys_to_check = vec![("audit key", loaded.config.sidecar.audit.key.clone())];
    if loaded.config.authority.mode == AuthorityMode::Local {
        keys_to_check.push(("authority key", loaded.config.authority.key.clone()));
    }
    keys_to_check
        .into_iter()
        .map(|(name, path)| match keys::load_signing_key(&path) {
            Ok(_) => Check::ok(name, format!("{} (mode 0600)", path.display())),
            Err(err) => Check::fail(name, err.message(), err.hint_text().unwrap_or("")),
        })
        .collect()
}

fn dir_check(name: &'static str, dir: &Path, creator: &str) -> Check {
    match std::fs::metadata(dir) {
        Err(_) => Check::warn(name, format!("{} not present yet", dir.display()), creator),
        Ok(meta) if !meta.is_dir() => Check::fail(
            name,
            format!("{} is not a directory", dir.display()),
            "move it away",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode == 0o700 {
                Check::ok(name, format!("{} (mode 0700)", dir.display()))
            } else {
                Check::fail(
                    name,
                    format!("{} has mode {mode:04o}; expected 0700", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                )
            }
        }
    }
}

/// The daemon pair: all running is OK; nothing running after a clean stop (or never started) is
/// a WARN; a crashed, degraded, unhealthy or partly running pair is a FAIL with the cause.
fn daemon_check(state: &StateDir, status: &StackStatus) -> Check {
    let dir = state.path().display();
    let start = format!("firma sidecar start --detach --state-dir {dir}");
    if status.all_running() {
        let summary = status
            .components
            .iter()
            .map(|c| format!("{} {}", c.name, c.state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        return Check::ok("daemon", summary);
    }
    let problem = |state: State| status.components.iter().filter(move |c| c.state == state);
    let details = |rows: Vec<&Component>| {
        rows.iter()
            .filter_map(|c| c.detail())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let degraded: Vec<&Component> = problem(State::Degraded).collect();
    if !degraded.is_empty() {
        return Check::fail(
            "daemon",
            details(degraded),
            "fix the named file; the Authority reloads it on save and logs `policy bundle reloaded` (`firma monitor --source authority`)",
        );
    }
    let crashed: Vec<&Component> = problem(State::Crashed).collect();
    if let Some(first) = crashed.first() {
        let log = state.log_file(first.role);
        return Check::fail(
            "daemon",
            details(crashed),
            format!(
                "see {}; then {start} (or set [sidecar.supervise] restart = \"on-failure\")",
                log.display()
            ),
        );
    }
    if status.quiet() {
        return Check::warn("daemon", "not running", start);
    }
    let summary = status
        .components
        .iter()
        .map(|c| format!("{} {}", c.name, c.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    Check::fail(
        "daemon",
        summary,
        format!("firma sidecar stop --state-dir {dir}, then {start}"),
    )
}

/// How close to expiry the Sidecar's CA may get before doctor warns.
const CA_WARN_DAYS: i64 = 30;

fn ca_check(state: &StateDir) -> Check {
    let (path, not_after) = match inspect(state) {
        CaStatus::Missing { path } => {
            return Check::warn(
                "sidecar CA",
                format!("{} not present yet", path.display()),
                "the Sidecar creates it on first start (`firma sidecar start`)",
            );
        }
        CaStatus::Unreadable { path, error } => {
            return Check::fail(
                "sidecar CA",
                format!("{} is not a PEM certificate: {error}", path.display()),
                "stop the daemon, move generated-firma-ca/ away, and start again to regenerate it",
            );
        }
        CaStatus::Present { path, not_after } => (path, not_after),
    };
    let days_left = (not_after - chrono::Utc::now().timestamp()) / 86_400;
    if days_left < 0 {
        Check::fail(
            "sidecar CA",
            format!("{} has expired", path.display()),
            "move generated-firma-ca/ away and restart the daemon",
        )
    } else if days_left < CA_WARN_DAYS {
        Check::warn(
            "sidecar CA",
            format!("{} expires in {days_left} days", path.display()),
            "plan a CA rotation: move generated-firma-ca/ away and restart",
        )
    } else {
        Check::ok(
            "sidecar CA",
            format!("{} (valid for {days_left} more days)", path.display()),
        )
    }
}

/// Above this size doctor verifies only the last part of the log unless `--full`.
const TAIL_BYTES: u64 = 4 << 20;

fn audit_check(loaded: &LoadedConfig, state: &StateDir, full: bool) -> Check {
    let log = state.audit_log();
    let size = match std::fs::metadata(&log) {
        Ok(meta) => meta.len(),
        Err(_) => {
            return Check::warn(
                "audit log",
                format!("{} not present yet", log.display()),
                "`firma init` or the Sidecar creates it",
            );
        }
    };
    let key_path = keys::public_path(&loaded.config.sidecar.audit.key);
    let key = match keys::load_verifying_key(&key_path) {
        Ok(key) => key,
        Err(err) => return Check::fail("audit log", err.message(), err.hint_text().unwrap_or("")),
    };
    let mut options = VerifyOptions::new(vec![log.clone()], key);
    let mut scope = "all of it";
    if !full && size > TAIL_BYTES {
        match resume_at_offset(&log, size - TAIL_BYTES) {
            Some(resume) => {
                options.resume = Some(resume);
                scope = "the last 4 MiB (--full for all)";
            }
            None => scope = "all of it (no line boundary in the tail)",
        }
    }
    match verify(&options) {
        Ok(report) if report.ok => Check::ok(
            "audit log",
            format!("{} verified records, {scope}", report.verified),
        ),
        Ok(report) => {
            let problem = report.problem.map(|p| match p.line {
                Some(line) => format!("line {line}: {}", p.message),
                None => p.message,
            });
            Check::fail(
                "audit log",
                problem.unwrap_or_else(|| "verification failed".into()),
                format!(
                    "firma audit verify --state-dir {} for the full report",
                    state.path().display()
                ),
            )
        }
        Err(err) => Check::fail("audit log", err.message(), err.hint_text().unwrap_or("")),
    }
}

/// The log against the checkpoint the Authority witnessed — when there is an Authority to ask
/// (a local one whose operator socket exists, or a remote one).
fn witness_check(loaded: &LoadedConfig, state: &StateDir) -> Option<Check> {
    use crate::authority::witness_check::{check, describe};
    let local = loaded.config.authority.mode == AuthorityMode::Local;
    if local && !state.authority_socket().exists() {
        return None;
    }
    let key_path = keys::public_path(&loaded.config.sidecar.audit.key);
    let key = keys::load_verifying_key(&key_path).ok()?;
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| crate::error::Hinted::new(format!("cannot start the async runtime: {err}")))
        .and_then(|runtime| runtime.block_on(check(state, loaded, &state.audit_files(), &key)));
    let verify = format!(
        "firma audit verify --witness --state-dir {}",
        state.path().display()
    );
    Some(match asked {
        Ok(report) if report.witnessed.is_none() => Check::warn(
            "witness",
            describe(&report),
            "the Sidecar reports its checkpoint every second; register its audit.pub in witness_keys if the Authority refuses it (authority.log)",
        ),
        Ok(report) if report.is_ok() => Check::ok("witness", describe(&report)),
        Ok(report) => Check::fail("witness", describe(&report), verify),
        Err(err) => Check::warn("witness", err.message(), err.hint_text().unwrap_or("")),
    })
}

/// Evidence on a tmpfs is gone at the next reboot or logout.
fn audit_placement_check(state: &StateDir) -> Check {
    let dir = state.audit_dir();
    match crate::audit::place::volatile_fs(&dir) {
        Some(fs) => Check::warn(
            "audit placement",
            format!(
                "the audit log is in {} on a {fs}: it is lost at reboot or logout",
                dir.display()
            ),
            "keep the evidence on a persistent disk: set [sidecar.audit] dir = \"/var/lib/firma/audit\" \
             (any persistent directory) in firma.toml and restart the Sidecar",
        ),
        None => Check::ok("audit placement", format!("{} (persistent)", dir.display())),
    }
}

/// The running Sidecar's own word on its audit log (none when no Sidecar answers).
fn audit_health_check(state: &StateDir) -> Option<Check> {
    let health = crate::audit::control::health(
        &state.sidecar_socket(),
        std::time::Duration::from_millis(500),
    )
    .ok()?;
    Some(if health.is_ok() {
        Check::ok(
            "audit writer",
            format!(
                "the Sidecar records to {} (seq {})",
                health.log.display(),
                health.last_seq
            ),
        )
    } else {
        Check::fail(
            "audit writer",
            format!(
                "audit_unavailable since {}: {}; the Sidecar refuses every call",
                health.since.unwrap_or_default(),
                health.reason.unwrap_or_default()
            ),
            "see docs/security.md, \"Recovering from audit_unavailable\": preserve the files, \
             restore or free the log's disk, then restart the Sidecar",
        )
    })
}

/// Timestamps in tokens and audit records are only as good as the clock.
fn clock_check() -> Check {
    let now = chrono::Utc::now();
    let floor = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    if now < floor {
        Check::fail(
            "clock",
            format!("system time {now} is before 2025"),
            "set the system clock (e.g. enable NTP)",
        )
    } else {
        Check::ok("clock", format!("{}", now.format("%Y-%m-%dT%H:%M:%SZ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::exits::ExitRecord;
    use crate::lifecycle::health::{Degradation, Health};
    use crate::platform::process::ExitCause;
    use crate::state_dir::Role;

    fn daemon(authority: State, sidecar: State, supervisor: State) -> StackStatus {
        let row = |role: Role, state: State| {
            Component {
            role,
            name: role.name(),
            pid: Some(40),
            state,
            listen: None,
            uptime_secs: None,
            started_at: None,
            remote: false,
            restarts: 0,
            last_exit: (state == State::Crashed).then(|| ExitRecord {
                pid: 40,
                cause: ExitCause::Signal("SIGKILL".into()),
                at: "2026-01-01T01:00:00Z".into(),
                requested: false,
                log: Some("cannot reach upstream (error: connection reset)".into()),
            }),
            health: (state == State::Degraded).then(|| Health {
                degraded: vec![Degradation {
                    what: "runtime policies".into(),
                    message: "/p/.firma/policies/broken.cedar:1:41: unexpected end of input (bundle 0a1b2c3d4e5f kept)".into(),
                    since: "2026-01-01T01:00:00Z".into(),
                }],
            }),
        }
        };
        StackStatus {
            state_dir: "/run/firma".into(),
            daemon_pid: None,
            detached: None,
            authority_mode: None,
            project: None,
            components: vec![
                row(Role::Authority, authority),
                row(Role::Sidecar, sidecar),
                row(Role::Supervisor, supervisor),
            ],
        }
    }

    #[test]
    fn daemon_check_snapshot() {
        use State::*;
        let state = StateDir::new("/run/firma");
        let checks: Vec<Check> = [
            (Running, Running, Running),
            (Stopped, Stopped, Stopped),
            (Stopped, Crashed, Stopped),
            (Degraded, Running, Running),
            (Running, Stopped, Stopped),
        ]
        .into_iter()
        .map(|(a, s, v)| daemon_check(&state, &daemon(a, s, v)))
        .collect();
        insta::assert_json_snapshot!(checks);
    }
}
