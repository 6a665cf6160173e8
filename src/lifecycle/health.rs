//! What a running component says about its own health, for `status` and `doctor`: a component
//! that serves but not as configured (the Authority keeping an older policy bundle because the
//! current files do not load) is **degraded**. The component writes `.<role>.health.json` in the
//! state dir (atomically) whenever that changes; readers never talk to it.
//!
//! Format (stable): `{"degraded": [{"what": "runtime policies", "message": "<file:line: …>",
//! "since": "<RFC 3339>"}]}` — an empty list means healthy.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Hinted;
use crate::state_dir::{Role, StateDir};

/// One way a component is degraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradation {
    /// What is affected, e.g. `runtime policies`.
    pub what: String,
    /// Why, naming the file and line where there is one.
    pub message: String,
    /// RFC 3339 UTC: when it became degraded.
    pub since: String,
}

/// A component's health report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub degraded: Vec<Degradation>,
}

impl Health {
    pub fn is_degraded(&self) -> bool {
        !self.degraded.is_empty()
    }

    /// `what: message; …` in one line.
    pub fn summary(&self) -> String {
        self.degraded
            .iter()
            .map(|d| format!("{}: {}", d.what, d.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl StateDir {
    /// The health `role` last reported (`None`: it reported nothing — not running, or older).
    pub fn read_health(&self, role: Role) -> Option<Health> {
        serde_json::from_slice(&crate::fsutil::read_trusted(&self.health_file(role)).ok()??).ok()
    }
}

/// The writing side, held by the component for its whole life.
#[derive(Debug)]
pub struct HealthReporter {
    state: StateDir,
    role: Role,
    current: Mutex<Health>,
}

impl HealthReporter {
    /// Start healthy (overwriting whatever a previous run left).
    pub fn new(state: StateDir, role: Role) -> Result<Self, Hinted> {
        let reporter = Self {
            state,
            role,
            current: Mutex::new(Health::default()),
        };
        reporter.write(&Health::default())?;
        Ok(reporter)
    }

    /// Mark `what` degraded with `message`. Returns whether it was healthy before.
    pub fn degrade(&self, what: &str, message: &str) -> bool {
        let mut health = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let was_healthy = match health.degraded.iter_mut().find(|d| d.what == what) {
            Some(existing) => {
                existing.message = message.into();
                false
            }
            None => {
                health.degraded.push(Degradation {
                    what: what.into(),
                    message: message.into(),
                    since: super::exits::now_rfc3339(),
                });
                true
            }
        };
        self.write_logged(&health);
        was_healthy
    }

    /// Mark `what` healthy again. Returns whether it was degraded.
    pub fn recover(&self, what: &str) -> bool {
        let mut health = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let before = health.degraded.len();
        health.degraded.retain(|d| d.what != what);
        let was_degraded = health.degraded.len() != before;
        if was_degraded {
            self.write_logged(&health);
        }
        was_degraded
    }

    fn write(&self, health: &Health) -> Result<(), Hinted> {
        let json = serde_json::to_vec(health).unwrap_or_default();
        super::state::write_atomic(&self.state.health_file(self.role), &json, 0o600)
    }

    fn write_logged(&self, health: &Health) {
        if let Err(err) = self.write(health) {
            tracing::warn!(error = %err, "cannot publish the health report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrade_and_recover_are_published_and_report_transitions() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let reporter = HealthReporter::new(state.clone(), Role::Authority).unwrap();
        assert_eq!(state.read_health(Role::Authority), Some(Health::default()));
        assert!(reporter.degrade("runtime policies", "a.cedar:1:2: bad"));
        assert!(!reporter.degrade("runtime policies", "a.cedar:3:4: worse"));
        let health = state.read_health(Role::Authority).unwrap();
        assert!(health.is_degraded());
        assert_eq!(health.summary(), "runtime policies: a.cedar:3:4: worse");
        assert!(reporter.recover("runtime policies"));
        assert!(!reporter.recover("runtime policies"));
        assert!(!state.read_health(Role::Authority).unwrap().is_degraded());
    }
}
