//! The plugin claim: a source and a formatter defined only here (the test crate) are picked up
//! by the registries, the CLI's choices and the engine — with no change to the tailer, the
//! filters or the CLI. (Kept apart from tests/monitor.rs, whose registry check is exact.)

use std::fs;

use clap::Parser;
use firma::monitor::{
    FieldEquals, Filters, FormatContext, Formatter, FormatterPlugin, Kind, Plan, Record, Source,
    SourcePlugin,
};

/// `metrics.csv`: `seconds,name,value` lines.
struct CsvMetrics;

impl Source for CsvMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }
    fn about(&self) -> &'static str {
        "test-only CSV metrics"
    }
    fn path(&self, state: &firma::state_dir::StateDir) -> std::path::PathBuf {
        state.path().join("metrics.csv")
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        let text = String::from_utf8_lossy(line);
        let parts: Vec<&str> = text.split(',').collect();
        let [secs, name, value] = parts[..] else {
            return Record::new(
                self.name(),
                offset,
                Kind::Malformed {
                    reason: "expected 3 columns".into(),
                },
                line,
            );
        };
        let fields = serde_json::json!({ "decision": name, "value": value });
        let mut record = Record::new(
            self.name(),
            offset,
            Kind::Event,
            serde_json::to_string(&fields).unwrap().as_bytes(),
        );
        record.time = chrono::DateTime::from_timestamp(secs.parse().unwrap_or(0), 0);
        record.set_fields(fields.as_object().unwrap().clone());
        record
    }
    fn filterable_fields(&self) -> &'static [&'static str] {
        &["decision"]
    }
}

inventory::submit!(SourcePlugin(&CsvMetrics));

/// `tsv`: source, kind, raw.
struct Tsv;

impl Formatter for Tsv {
    fn name(&self) -> &'static str {
        "tsv"
    }
    fn about(&self) -> &'static str {
        "test-only tab-separated output"
    }
    fn write(&self, record: &Record, _ctx: &FormatContext, out: &mut Vec<u8>) {
        let kind = match record.kind {
            Kind::Event => "event",
            Kind::Log => "log",
            Kind::Raw => "raw",
            Kind::Malformed { .. } => "malformed",
        };
        out.extend_from_slice(format!("{}\t{kind}\t", record.source).as_bytes());
        out.extend_from_slice(&record.raw);
        out.push(b'\n');
    }
}

inventory::submit!(FormatterPlugin(&Tsv));

#[test]
fn test_plugins_are_registered_next_to_the_built_in_ones() {
    let sources: Vec<_> = firma::monitor::sources().iter().map(|s| s.name()).collect();
    assert_eq!(sources, ["audit", "authority", "metrics", "sidecar"]);
    let formats: Vec<_> = firma::monitor::formatters()
        .iter()
        .map(|f| f.name())
        .collect();
    assert_eq!(formats, ["json", "pretty", "tsv"]);
}

#[test]
fn test_plugins_run_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("metrics.csv"),
        "20,deny,1\n10,allow,2\nbroken line\n30,deny,3\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("sidecar.log"),
        "{\"timestamp\":\"1970-01-01T00:00:15Z\",\"level\":\"INFO\",\"message\":\"m\"}\n",
    )
    .unwrap();
    let plan = Plan {
        state: firma::state_dir::StateDir::new(dir.path()),
        sources: vec![
            firma::monitor::find_source("metrics").unwrap(),
            firma::monitor::find_source("sidecar").unwrap(),
        ],
        // The built-in decision filter judges the test source, which declared the field.
        filters: Filters::new().with(FieldEquals::new("decision", "deny")),
        formatter: firma::monitor::find_formatter("tsv").unwrap(),
        follow: false,
        color: false,
        watch: true,
    };
    let mut out = Vec::new();
    let mut notices = Vec::new();
    firma::monitor::run(&plan, &mut out, &mut |n| notices.push(n)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "sidecar\tlog\t{\"timestamp\":\"1970-01-01T00:00:15Z\",\"level\":\"INFO\",\"message\":\"m\"}\n\
         metrics\tevent\t{\"decision\":\"deny\",\"value\":\"1\"}\n\
         metrics\tmalformed\tbroken line\n\
         metrics\tevent\t{\"decision\":\"deny\",\"value\":\"3\"}\n"
    );
    assert!(notices.is_empty());
}

#[test]
fn test_plugins_are_choices_of_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("metrics.csv"), "5,allow,9\n").unwrap();
    let cli = firma::cli::Cli::try_parse_from([
        "firma",
        "monitor",
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--source",
        "metrics",
        "--format",
        "tsv",
        "--no-follow",
    ])
    .expect("the CLI accepts the test plugins");
    let firma::cli::Command::Monitor(args) = cli.command else {
        panic!("not monitor")
    };
    let mut out = Vec::new();
    firma::cli::monitor::execute(args, false, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "metrics\tevent\t{\"decision\":\"allow\",\"value\":\"9\"}\n"
    );
}
