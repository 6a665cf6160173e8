//! [`Record`]: one line of one source, parsed — what filters judge and formatters write.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// What a line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A structured event (an audit record); `fields` holds it, `raw` is its exact line.
    Event,
    /// A structured log line (a JSON object); `fields` holds it.
    Log,
    /// A line that is not structured (a panic message); shown as is.
    Raw,
    /// A line a source expected to be structured but is not; never dropped, always reported.
    Malformed { reason: String },
}

/// One line of one source.
#[derive(Debug, Clone)]
pub struct Record {
    /// The source's registered name (`audit`, `authority`, …).
    pub source: &'static str,
    /// Byte offset of the line in its file.
    pub offset: u64,
    /// The record's own time, when it carries one.
    pub time: Option<DateTime<Utc>>,
    pub kind: Kind,
    /// Parsed fields (empty for raw and malformed lines).
    pub fields: Map<String, Value>,
    /// The line exactly as read, without its newline.
    pub raw: Vec<u8>,
}

impl Record {
    pub fn new(source: &'static str, offset: u64, kind: Kind, raw: &[u8]) -> Self {
        Self {
            source,
            offset,
            time: None,
            kind,
            fields: Map::new(),
            raw: raw.to_vec(),
        }
    }

    /// A field by dotted path (`intent.action_class`).
    pub fn field(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.fields.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    /// A string field by dotted path, or `""`.
    pub fn str_field(&self, path: &str) -> &str {
        self.field(path).and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, Kind::Malformed { .. })
    }
}
