//! Daemon log lines (`tracing` JSON: `timestamp`, `level`, `target`, `message`, fields):
//! shared by the log sources. Anything that is not a JSON object is a raw line, shown as is.

use chrono::DateTime;
use serde_json::{Map, Value};

use super::record::{Kind, Record};

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
