//! How each component of the current run ended, and how often it was restarted: written by the
//! supervisor (the components' parent, the one process that sees every exit) to `.exits.json`,
//! read by `status` (`crashed (SIGKILL, 2m ago)`, the RESTARTS column) and `doctor`. Reset when a
//! new run boots; kept after it ends, so a crash stays visible after the pair is gone.
//!
//! Format (stable): `{"components": {"sidecar": {"restarts": 1, "last": {"pid": 4242,
//! "cause": {"signal": "SIGKILL"} | {"code": 3}, "at": "<RFC 3339>", "requested": false,
//! "log": "<the last error line of its log>"}}}}`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Hinted;
use crate::platform::process::ExitCause;
use crate::state_dir::{Role, StateDir};

/// One component's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: i32,
    pub cause: ExitCause,
    /// RFC 3339 UTC.
    pub at: String,
    /// Asked for (`firma sidecar stop`, Ctrl-C, or torn down after its sibling died), as opposed
    /// to a crash.
    pub requested: bool,
    /// The last error line of its log (or its last line), for a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl ExitRecord {
    /// Whether this end was a crash: not asked for.
    pub fn crashed(&self) -> bool {
        !self.requested
    }

    /// How long before `now` it ended, if the timestamp parses and is not in the future.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let at = chrono::DateTime::parse_from_rfc3339(&self.at).ok()?;
        now.duration_since(SystemTime::from(at.to_utc())).ok()
    }

    /// `SIGKILL, 2m ago` (as seen at `now`).
    pub fn summary(&self, now: SystemTime) -> String {
        match self.age(now) {
            Some(age) => format!("{}, {} ago", self.cause.short(), ago(age)),
            None => self.cause.short(),
        }
    }
}

/// The coarse age operators read: `12s`, `2m`, `3h`, `4d`.
pub fn ago(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// One component's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentExits {
    /// How often the supervisor restarted it this run (`[sidecar.supervise] restart`).
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ExitRecord>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitLog {
    #[serde(default)]
    pub components: BTreeMap<String, ComponentExits>,
}

impl ExitLog {
    pub fn get(&self, role: Role) -> Option<&ComponentExits> {
        self.components.get(role.name())
    }

    fn entry(&mut self, role: Role) -> &mut ComponentExits {
        self.components.entry(role.name().to_string()).or_default()
    }
}

impl StateDir {
    pub fn read_exits(&self) -> ExitLog {
        crate::fsutil::read_trusted(&self.exits_file())
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write_exits(&self, log: &ExitLog) -> Result<(), Hinted> {
        let json = serde_json::to_vec_pretty(log).unwrap_or_default();
        super::state::write_atomic(&self.exits_file(), &json, 0o600)
    }

    /// A new run: forget the previous run's exits and restart counts.
    pub fn reset_exits(&self) {
        super::state::remove_if_present(&self.exits_file());
    }

    /// Record how `role` ended (logged, never fatal: the supervisor is tearing down or restarting).
    pub fn record_exit(&self, role: Role, record: ExitRecord) {
        let mut log = self.read_exits();
        log.entry(role).last = Some(record);
        if let Err(err) = self.write_exits(&log) {
            tracing::warn!(error = %err, "cannot record the exit");
        }
    }

    /// Count a restart of `role`; returns the new count.
    pub fn record_restart(&self, role: Role) -> u32 {
        let mut log = self.read_exits();
        let entry = log.entry(role);
        entry.restarts += 1;
        let count = entry.restarts;
        if let Err(err) = self.write_exits(&log) {
            tracing::warn!(error = %err, "cannot record the restart");
        }
        count
    }
}

/// Now, RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_restarts_accumulate_and_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        assert_eq!(state.read_exits(), ExitLog::default());
        let record = ExitRecord {
            pid: 7,
            cause: ExitCause::Signal("SIGKILL".into()),
            at: now_rfc3339(),
            requested: false,
            log: Some("boom".into()),
        };
        state.record_exit(Role::Sidecar, record.clone());
        assert_eq!(state.record_restart(Role::Sidecar), 1);
        assert_eq!(state.record_restart(Role::Sidecar), 2);
        let log = state.read_exits();
        let sidecar = log.get(Role::Sidecar).unwrap();
        assert_eq!(sidecar.restarts, 2);
        assert_eq!(sidecar.last.as_ref(), Some(&record));
        assert!(record.crashed());
        let later = SystemTime::now() + Duration::from_secs(150);
        assert_eq!(record.summary(later), "SIGKILL, 2m ago");
        state.reset_exits();
        assert_eq!(state.read_exits(), ExitLog::default());
    }

    #[test]
    fn a_planted_symlink_is_not_read_as_exit_records_or_health() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let forged = tmp.path().join("forged.json");
        std::fs::write(
            &forged,
            r#"{"components":{"sidecar":{"restarts":9}},"degraded":[{"what":"x","message":"y","since":"z"}]}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(&forged, state.exits_file()).unwrap();
        std::os::unix::fs::symlink(&forged, state.health_file(Role::Authority)).unwrap();
        assert_eq!(state.read_exits(), ExitLog::default());
        assert_eq!(state.read_health(Role::Authority), None);
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(ago(Duration::from_secs(5)), "5s");
        assert_eq!(ago(Duration::from_secs(150)), "2m");
        assert_eq!(ago(Duration::from_secs(7300)), "2h");
        assert_eq!(ago(Duration::from_secs(200_000)), "2d");
    }
}
