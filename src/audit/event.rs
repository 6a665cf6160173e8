//! The audit record: one JSON object per line of `audit.jsonl` (field reference:
//! `docs/audit-log.md`). Field names are a stable contract with verifiers and log collectors.

use serde::{Deserialize, Serialize};

/// Record format version the writer writes in `v`. Version 1 chained each record to the hash of
/// the whole previous line; version 2 chains it to the hash of the previous record *without* its
/// `sig`, so records can be signed in parallel (docs/audit-log.md, "Format versions").
pub const AUDIT_FORMAT_VERSION: u32 = 2;

/// The first format version (still read by `firma audit verify`).
pub const AUDIT_FORMAT_V1: u32 = 1;

/// The current time as written in `ts`: RFC 3339, UTC, nanoseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A new record's `event_id`: a UUIDv7 (its first 48 bits the Unix time in ms, the rest
/// random). The random bits come from a per-thread buffer refilled from the OS 1 KiB at a time,
/// instead of one `getrandom` call per record as `Uuid::now_v7` makes.
pub fn new_event_id() -> String {
    use std::cell::RefCell;

    use rand_core::RngCore as _;

    const POOL: usize = 1020;
    thread_local! {
        static RANDOM: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    const BITS: usize = 10;
    let mut bits = [0u8; BITS];
    RANDOM.with_borrow_mut(|(pool, used)| {
        if *used + BITS > POOL {
            rand_core::OsRng.fill_bytes(pool);
            *used = 0;
        }
        bits.copy_from_slice(&pool[*used..*used + BITS]);
        // Never hand the same bytes out twice.
        pool[*used..*used + BITS].fill(0);
        *used += BITS;
    });
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    uuid::Builder::from_unix_timestamp_millis(millis, &bits)
        .into_uuid()
        .to_string()
}

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
    /// The destination port (absent in records written before ports were recorded, and for
    /// requests without a target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The address the call was forwarded to (`ip:port`), resolved once by the Sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
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
    /// The `firma run` sandbox the agent ran in (from its token); empty: none (not written).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox_id: String,
    pub intent: Intent,
    pub policy: PolicyRef,
    pub latency_us: u64,
}

/// What the writer adds to a draft to make it a record ([`AuditDraft::into_event`]).
pub struct WriterFields {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub event_id: String,
    pub prev: String,
    pub sig: Option<String>,
}

impl AuditDraft {
    /// The record this draft becomes with the writer's fields.
    pub fn into_event(self, fields: WriterFields) -> AuditEvent {
        AuditEvent {
            v: fields.v,
            seq: fields.seq,
            ts: fields.ts,
            event_id: fields.event_id,
            decision: self.decision,
            reason: self.reason,
            agent_id: self.agent_id,
            session_id: self.session_id,
            token_id: self.token_id,
            sandbox_id: self.sandbox_id,
            intent: self.intent,
            policy: self.policy,
            latency_us: self.latency_us,
            prev: fields.prev,
            sig: fields.sig,
        }
    }

    /// The draft's fields, borrowed.
    pub fn borrowed(&self) -> DraftRef<'_> {
        DraftRef {
            decision: self.decision,
            reason: &self.reason,
            agent_id: &self.agent_id,
            session_id: &self.session_id,
            token_id: &self.token_id,
            sandbox_id: &self.sandbox_id,
            action_class: &self.intent.action_class,
            method: &self.intent.method,
            host: &self.intent.host,
            path: &self.intent.path,
            port: self.intent.port,
            addr: self.intent.addr.as_deref(),
            bundle: &self.policy.bundle,
            determining: &self.policy.determining,
            latency_us: self.latency_us,
        }
    }
}

/// An [`AuditDraft`] borrowed from wherever its fields live (the Sidecar's verdict and call), so
/// recording a decision copies no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftRef<'a> {
    pub decision: Decision,
    pub reason: &'a str,
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub token_id: &'a str,
    /// Empty: none (not written).
    pub sandbox_id: &'a str,
    pub action_class: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub port: Option<u16>,
    pub addr: Option<&'a str>,
    pub bundle: &'a str,
    pub determining: &'a [String],
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
    /// Present only for calls of an agent `firma run` sandboxed (signed like every field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox_id: String,
    pub intent: Intent,
    pub policy: PolicyRef,
    pub latency_us: u64,
    /// Hex SHA-256 naming the previous record (its chain hash: in format 2 its canonical bytes
    /// without `sig`, in format 1 its whole line); 64 zeros on the first.
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

/// `kind` of a segment marker line. Decision events carry no `kind` member.
pub const SEGMENT_KIND: &str = "segment";

/// A line the writer found torn (unterminated and unparsable) when it reopened the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornLine {
    /// Byte offset of the torn line in the file.
    pub offset: u64,
    /// Its length in bytes (the writer terminated it with a newline, not counted here).
    pub length: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
}

/// Why a new file of the log was started (in the marker that opens it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// `size` (`rotate_size` reached), `interval` (`rotate_interval` elapsed), `operator`
    /// (`firma audit rotate`) or `resume` (a rotation interrupted by a crash, completed on open).
    pub trigger: String,
    /// File name the previous lines were moved to (`audit.jsonl.1`; older files shift up).
    pub previous: String,
}

/// Records removed by retention (`keep`, `max_total_size`): named in a marker in the live file
/// before the files are deleted, so a verifier can tell retention from truncation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    /// `seq` of the first record removed.
    pub first_seq: u64,
    /// `seq` of the last record removed: the first kept file starts at `last_seq + 1`.
    pub last_seq: u64,
    /// Hex SHA-256 of that last record's line: the `prev` of the first kept record.
    pub last_hash: String,
    /// The file names deleted, oldest first.
    pub files: Vec<String>,
}

/// A signed line that records something about the log itself instead of a decision. It chains
/// like any record (`seq` +1, `prev` = hash of the previous line) and has a `kind` member
/// ([`SEGMENT_KIND`]; decision events have none). Written:
/// - after a torn last line left by a crash (`torn` names it, so a verifier can tell a crash
///   from tampering);
/// - as the first line of a file started by rotation (`rotation`);
/// - before rotated files are deleted by retention (`retained`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMarker {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    /// Always [`SEGMENT_KIND`].
    pub kind: String,
    /// Why the segment starts, for people.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<TornLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<Retained>,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl SegmentMarker {
    /// A marker saying `reason`, to be chained and signed by the writer.
    pub fn new(reason: String) -> Self {
        Self {
            v: AUDIT_FORMAT_VERSION,
            seq: 0,
            ts: String::new(),
            kind: SEGMENT_KIND.into(),
            reason,
            torn: None,
            rotation: None,
            retained: None,
            prev: String::new(),
            sig: None,
        }
    }
}

/// Any line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecord {
    Event(Box<AuditEvent>),
    Segment(Box<SegmentMarker>),
}

impl AuditRecord {
    /// Decode a parsed line: an object with a `kind` member is a marker, any other an event.
    pub fn from_value(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        if value.get("kind").is_some() {
            Ok(Self::Segment(Box::new(serde_json::from_value(value)?)))
        } else {
            Ok(Self::Event(Box::new(serde_json::from_value(value)?)))
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Self::Event(e) => e.seq,
            Self::Segment(m) => m.seq,
        }
    }

    pub fn prev(&self) -> &str {
        match self {
            Self::Event(e) => &e.prev,
            Self::Segment(m) => &m.prev,
        }
    }

    pub fn ts(&self) -> &str {
        match self {
            Self::Event(e) => &e.ts,
            Self::Segment(m) => &m.ts,
        }
    }

    pub fn sig(&self) -> Option<&str> {
        match self {
            Self::Event(e) => e.sig.as_deref(),
            Self::Segment(m) => m.sig.as_deref(),
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            Self::Event(e) => e.v,
            Self::Segment(m) => m.v,
        }
    }

    /// The decision event, if this line is one.
    pub fn as_event(&self) -> Option<&AuditEvent> {
        match self {
            Self::Event(e) => Some(e),
            Self::Segment(_) => None,
        }
    }
}
