//! [`Record`]: one line of one source, parsed — what filters judge and formatters write.

use std::cell::RefCell;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// What a line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A structured event (an audit record): `raw` is its exact line, a JSON object.
    Event,
    /// A structured log line: `raw` is a JSON object.
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
    /// Whether field filters (`--decision`, `--agent`, …) judge this record. True for events
    /// and logs; false for raw and malformed lines, which cannot be judged, and for records a
    /// source marks as outside what its filters are about (an audit segment marker has no
    /// decision, agent or sandbox). Records that are not judged pass: shown, never hidden.
    pub filterable: bool,
    /// Parsed fields, on first use (see [`Record::fields`]).
    fields: OnceLock<Map<String, Value>>,
    /// The line exactly as read, without its newline.
    pub raw: Vec<u8>,
}

thread_local! {
    /// Buffers of dropped records, reused for new ones: a run that copies millions of lines
    /// allocates a few buffers, not one per line.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// How many spare buffers are kept, and up to what size (a huge line's buffer is let go).
const SPARE_BUFFERS: usize = 64;
const SPARE_CAPACITY: usize = 64 << 10;

fn buffer_with(bytes: &[u8]) -> Vec<u8> {
    let mut buf = SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default();
    buf.clear();
    buf.extend_from_slice(bytes);
    buf
}

impl Drop for Record {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.raw);
        if buf.capacity() == 0 || buf.capacity() > SPARE_CAPACITY {
            return;
        }
        // During thread teardown the pool may be gone: then the buffer is simply freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        });
    }
}

impl Record {
    pub fn new(source: &'static str, offset: u64, kind: Kind, raw: &[u8]) -> Self {
        Self {
            source,
            offset,
            time: None,
            filterable: matches!(kind, Kind::Event | Kind::Log),
            kind,
            fields: OnceLock::new(),
            raw: buffer_with(raw),
        }
    }

    /// The record's fields: for events and logs the JSON object in `raw`, parsed on first use
    /// (a run that only copies lines never pays for it); empty for raw and malformed lines.
    pub fn fields(&self) -> &Map<String, Value> {
        self.fields.get_or_init(|| match self.kind {
            Kind::Event | Kind::Log => serde_json::from_slice(&self.raw).unwrap_or_default(),
            _ => Map::new(),
        })
    }

    /// Set the fields when the source already parsed them.
    pub fn set_fields(&mut self, fields: Map<String, Value>) {
        self.fields = OnceLock::from(fields);
    }

    /// A field by dotted path (`intent.action_class`).
    pub fn field(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.fields().get(parts.next()?)?;
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
