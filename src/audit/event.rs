//! The audit record: one JSON object per line of `audit.jsonl` (field reference:
//! `docs/audit-log.md`). Field names are a stable contract with verifiers and log collectors.

use serde::{Deserialize, Serialize};

/// Record format version written in `v`.
pub const AUDIT_FORMAT_VERSION: u32 = 1;

/// What the Sidecar decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    Passthrough,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Passthrough => "passthrough",
        }
    }

    pub const ALL: [Decision; 3] = [Self::Allow, Self::Deny, Self::Passthrough];
}

impl std::str::FromStr for Decision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| format!("unknown decision {text:?} (allow, deny or passthrough)"))
    }
}

/// What the call was, as classified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub action_class: String,
    pub method: String,
    pub host: String,
    pub path: String,
}

/// Which policy bundle decided, and which of its policies determined the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub bundle: String,
    pub determining: Vec<String>,
}

/// What a caller (the Sidecar) hands the writer; the writer adds `v`, `seq`, `ts`, `event_id`,
/// `prev` and `sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDraft {
    pub decision: Decision,
    pub reason: String,
    pub agent_id: String,
    pub session_id: String,
    pub token_id: String,
    pub intent: Intent,
    pub policy: PolicyRef,
    pub latency_us: u64,
}

/// One signed, chained line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub v: u32,
    pub seq: u64,
    /// RFC 3339, UTC, nanoseconds (`2026-11-26T23:22:22.123456789Z`); kept as written.
    pub ts: String,
    pub event_id: String,
    pub decision: Decision,
    pub reason: String,
    pub agent_id: String,
    pub session_id: String,
    pub token_id: String,
    pub intent: Intent,
    pub policy: PolicyRef,
    pub latency_us: u64,
    /// Hex SHA-256 of the previous line's bytes (without its newline); 64 zeros on the first.
    pub prev: String,
    /// Base64 Ed25519 signature; absent while the record is being signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl AuditEvent {
    /// The record's time, parsed.
    pub fn timestamp(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.ts)
            .ok()
            .map(|t| t.to_utc())
    }
}
