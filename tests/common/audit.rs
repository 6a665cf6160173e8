//! Audit fixtures: one builder for the drafts tests and benches hand the real writer, logs written
//! with it, and the records of a world's audit log. Benches include this file on its own
//! (`#[path = "../tests/common/audit.rs"]`), so it needs nothing else of `tests/common`.
#![allow(dead_code)]

use std::path::Path;

use ed25519_dalek::SigningKey;
use firma::audit::event::{AuditDraft, Decision, Intent, PolicyRef};
use firma::audit::writer::{AuditWriter, WriterOptions};

/// Draft number `i`: a deny for every third `i` (0, 3, 6 …), an allow otherwise; `i` appears in
/// the reason, the token id and the path, and `latency_us` is `100 + i`, so a test can tell the
/// records apart and map one back to its `i`. Vary a field with the [`Vary`] setters.
pub fn draft(i: u64) -> AuditDraft {
    AuditDraft {
        decision: if i.is_multiple_of(3) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason: format!("policy decision {i}"),
        agent_id: "codex".into(),
        session_id: "s-1".into(),
        token_id: format!("tok-{i}"),
        sandbox_id: String::new(),
        intent: Intent {
            action_class: "communication.external.send".into(),
            method: "POST".into(),
            host: "api.example.com".into(),
            path: format!("/v1/send/{i}"),
            ..Intent::default()
        },
        policy: PolicyRef {
            bundle: "b-1".into(),
            determining: vec!["p0".into()],
        },
        latency_us: 100 + i,
    }
}

/// Setters for the fields tests vary: `draft(i).decision(Decision::Allow).agent("a")`.
pub trait Vary: Sized {
    fn decision(self, decision: Decision) -> Self;
    fn reason(self, reason: impl Into<String>) -> Self;
    fn agent(self, agent_id: impl Into<String>) -> Self;
    fn session(self, session_id: impl Into<String>) -> Self;
    fn token(self, token_id: impl Into<String>) -> Self;
    fn action_class(self, action_class: impl Into<String>) -> Self;
    fn host(self, host: impl Into<String>) -> Self;
    fn path(self, path: impl Into<String>) -> Self;
    /// Where the call was forwarded: the port and the address (`ip:port`).
    fn forwarded_to(self, addr: &str) -> Self;
    fn policy(self, bundle: &str, determining: &[&str]) -> Self;
    fn latency_us(self, latency_us: u64) -> Self;
}

impl Vary for AuditDraft {
    fn decision(self, decision: Decision) -> Self {
        Self { decision, ..self }
    }
    fn reason(self, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self { reason, ..self }
    }
    fn agent(self, agent_id: impl Into<String>) -> Self {
        let agent_id = agent_id.into();
        Self { agent_id, ..self }
    }
    fn session(self, session_id: impl Into<String>) -> Self {
        let session_id = session_id.into();
        Self { session_id, ..self }
    }
    fn token(self, token_id: impl Into<String>) -> Self {
        let token_id = token_id.into();
        Self { token_id, ..self }
    }
    fn action_class(mut self, action_class: impl Into<String>) -> Self {
        self.intent.action_class = action_class.into();
        self
    }
    fn host(mut self, host: impl Into<String>) -> Self {
        self.intent.host = host.into();
        self
    }
    fn path(mut self, path: impl Into<String>) -> Self {
        self.intent.path = path.into();
        self
    }
    fn forwarded_to(mut self, addr: &str) -> Self {
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok());
        self.intent.port = Some(port.expect("an ip:port address"));
        self.intent.addr = Some(addr.into());
        self
    }
    fn policy(self, bundle: &str, determining: &[&str]) -> Self {
        let policy = PolicyRef {
            bundle: bundle.into(),
            determining: determining.iter().map(|p| p.to_string()).collect(),
        };
        Self { policy, ..self }
    }
    fn latency_us(self, latency_us: u64) -> Self {
        Self { latency_us, ..self }
    }
}

/// Append `drafts` to the log at `path` with the real writer (default options), then shut it
/// down: a log exactly as the Sidecar leaves it.
pub fn write_records(path: &Path, key: &SigningKey, drafts: impl IntoIterator<Item = AuditDraft>) {
    let (writer, _) = AuditWriter::open(path, key.clone(), WriterOptions::default()).unwrap();
    for draft in drafts {
        writer.append(draft).unwrap();
    }
    writer.shutdown().unwrap();
}

/// Every line of the audit log in `state_dir` that parses as JSON: decisions and segment markers.
pub fn records(state_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(firma::state_dir::StateDir::new(state_dir).audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The decision records of the audit log in `state_dir` (segment markers left out).
pub fn decisions(state_dir: &Path) -> Vec<serde_json::Value> {
    records(state_dir)
        .into_iter()
        .filter(|record| record.get("decision").is_some())
        .collect()
}

/// The reason code of an audit record (its `reason` up to the first `:`).
pub fn reason(record: &serde_json::Value) -> String {
    record["reason"]
        .as_str()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}
