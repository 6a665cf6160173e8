//! The plugin claim: a source and a formatter that exist only in their own test files
//! (`tests/monitor_plugins/`) are picked up by the registries, the CLI's choices and help, the
//! filters and the engine, and `pretty` shows what the source summarises — with no change to
//! the tailer, the filters, the formatters or the CLI.

#[path = "monitor_plugins/metrics_source.rs"]
mod metrics_source;
#[path = "monitor_plugins/tsv_formatter.rs"]
mod tsv_formatter;

use std::fs;

use clap::{CommandFactory, Parser};
use firma::monitor::{FieldEquals, Filters, Plan};

/// `firma monitor <args>` through the real CLI, one shot, output as a string.
fn monitor(dir: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec![
        "firma",
        "monitor",
        "--state-dir",
        dir.to_str().unwrap(),
        "--no-follow",
    ];
    all.extend_from_slice(args);
    let cli = firma::cli::Cli::try_parse_from(all).expect("the CLI accepts the test plugins");
    let firma::cli::Command::Monitor(args) = cli.command else {
        panic!("not monitor")
    };
    let mut out = Vec::new();
    firma::cli::monitor::execute(args, None, false, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The values clap offers for `firma monitor --<flag>`.
fn choices(flag: &str) -> Vec<String> {
    let cli = firma::cli::Cli::command();
    let monitor = cli.find_subcommand("monitor").unwrap();
    let arg = monitor
        .get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .unwrap();
    arg.get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect()
}

#[test]
fn test_plugins_are_registered_next_to_the_built_in_ones() {
    let sources: Vec<_> = firma::monitor::sources().iter().map(|s| s.name()).collect();
    for name in ["audit", "authority", "sidecar", "metrics"] {
        assert!(sources.contains(&name), "{name} not in {sources:?}");
    }
    let formats: Vec<_> = firma::monitor::formatters()
        .iter()
        .map(|f| f.name())
        .collect();
    for name in ["json", "pretty", "tsv"] {
        assert!(formats.contains(&name), "{name} not in {formats:?}");
    }
    // The CLI's choices are the registries, whatever they hold.
    let mut want = vec!["all".to_string()];
    want.extend(sources.iter().map(|s| s.to_string()));
    assert_eq!(choices("source"), want);
    assert_eq!(
        choices("format"),
        formats.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn filter_help_names_the_sources_that_declare_the_field() {
    let mut cli = firma::cli::Cli::command();
    let help = cli
        .find_subcommand_mut("monitor")
        .unwrap()
        .render_help()
        .to_string();
    assert!(
        help.contains("Judges audit, metrics records only"),
        "{help}"
    );
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
        last: None,
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
    assert_eq!(
        monitor(dir.path(), &["--source", "metrics", "--format", "tsv"]),
        "metrics\tevent\t{\"decision\":\"allow\",\"value\":\"9\"}\n"
    );
}

#[test]
fn pretty_shows_what_the_test_source_summarises() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("metrics.csv"), "5,allow,9\n6,deny,10\n").unwrap();
    assert_eq!(
        monitor(dir.path(), &["--source", "metrics", "--decision", "deny"]),
        "1970-01-01T00:00:06.000Z  metrics  DENY    value 10\n"
    );
    // A built-in formatter and a test source, a test formatter and a built-in source.
    fs::write(
        dir.path().join("sidecar.log"),
        "{\"timestamp\":\"1970-01-01T00:00:07Z\",\"level\":\"INFO\",\"message\":\"m\"}\n",
    )
    .unwrap();
    assert_eq!(
        monitor(dir.path(), &["--source", "sidecar", "--format", "tsv"]),
        "sidecar\tlog\t{\"timestamp\":\"1970-01-01T00:00:07Z\",\"level\":\"INFO\",\"message\":\"m\"}\n"
    );
}
