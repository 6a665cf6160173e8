//! Daemon log files (`tracing` JSON lines: `timestamp`, `level`, `target`, `message`, fields):
//! [`LogFile`] is the source type the daemon-log plugins (`sources/authority.rs`, …) are
//! instances of. Anything that is not a JSON object is a raw line, shown as is.

use std::path::PathBuf;

use chrono::DateTime;
use serde_json::{Map, Value};

use super::filter::LevelAtLeast;
use super::plugin::Source;
use super::record::{Kind, Record};
use super::summary::{Summary, Tone};
use super::text::value_text;
use crate::state_dir::{Role, StateDir};

/// The log file of one firma process.
pub struct LogFile {
    pub name: &'static str,
    pub about: &'static str,
    /// Whose log it is (the state dir owns the file name).
    pub role: Role,
}

/// Wide enough for the longest level, `ERROR`.
const LABEL_WIDTH: usize = 5;

impl Source for LogFile {
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn path(&self, state: &StateDir) -> PathBuf {
        state.log_file(self.role)
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        parse_log_line(self.name, line, offset)
    }
    fn filterable_fields(&self) -> &'static [&'static str] {
        &[LevelAtLeast::FIELD]
    }
    /// `LEVEL  target: message  key=value…`.
    fn summary(&self, record: &Record) -> Option<Summary> {
        if record.kind != Kind::Log {
            return None;
        }
        let level = record.str_field("level").to_uppercase();
        let tone = match level.as_str() {
            "ERROR" => Tone::Alert,
            "WARN" => Tone::Caution,
            "INFO" => Tone::Good,
            _ => Tone::Quiet,
        };
        let mut summary = Summary::new(level, LABEL_WIDTH, tone);
        let target = record.str_field("target");
        if !target.is_empty() {
            summary = summary.dim(target).text(": ");
        }
        summary = summary.text(record.str_field("message"));
        for (key, value) in record.fields() {
            if !matches!(key.as_str(), "timestamp" | "level" | "target" | "message") {
                summary = summary.text(format!("  {key}={}", value_text(value)));
            }
        }
        Some(summary)
    }
}

/// Parse one daemon log line.
pub fn parse_log_line(source: &'static str, line: &[u8], offset: u64) -> Record {
    match serde_json::from_slice::<Map<String, Value>>(line) {
        Ok(fields) => {
            let mut record = Record::new(source, offset, Kind::Log, line);
            record.time = fields
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc());
            record.set_fields(fields);
            record
        }
        Err(_) => Record::new(source, offset, Kind::Raw, line),
    }
}
