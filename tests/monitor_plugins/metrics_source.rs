//! A test-only source, `metrics`: `metrics.csv` lines of `seconds,outcome,value`. It declares
//! `decision` filterable (so the built-in `--decision` judges it) and summarises its records
//! for `pretty` itself. Nothing outside this file names it.

use firma::monitor::{Kind, Record, Source, SourcePlugin, Summary, Tone};
use firma::state_dir::StateDir;

pub struct CsvMetrics;

impl Source for CsvMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }
    fn about(&self) -> &'static str {
        "test-only CSV metrics"
    }
    fn path(&self, state: &StateDir) -> std::path::PathBuf {
        state.path().join("metrics.csv")
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        let text = String::from_utf8_lossy(line);
        let parts: Vec<&str> = text.split(',').collect();
        let [secs, outcome, value] = parts[..] else {
            let reason = "expected 3 columns".to_string();
            return Record::new(self.name(), offset, Kind::Malformed { reason }, line);
        };
        let fields = serde_json::json!({ "decision": outcome, "value": value });
        let json = serde_json::to_string(&fields).unwrap();
        let mut record = Record::new(self.name(), offset, Kind::Event, json.as_bytes());
        record.time = chrono::DateTime::from_timestamp(secs.parse().unwrap_or(0), 0);
        record.set_fields(fields.as_object().unwrap().clone());
        record
    }
    fn filterable_fields(&self) -> &'static [&'static str] {
        &["decision"]
    }
    fn summary(&self, record: &Record) -> Option<Summary> {
        let tone = match record.str_field("decision") {
            "deny" => Tone::Alert,
            _ => Tone::Good,
        };
        Some(
            Summary::new(record.str_field("decision").to_uppercase(), 6, tone)
                .text("value ")
                .dim(record.str_field("value")),
        )
    }
}

inventory::submit!(SourcePlugin(&CsvMetrics));
