//! `firma fleet status`: the operator's one view of the fleet — the Sidecars an Authority
//! replica has seen (with the etcd store: every replica's), asked over the operator socket or,
//! remotely, with the operator certificate.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::{CommandResult, Outcome};
use crate::authority::store::fleet::{FleetReport, Sighting};
use crate::config::Discovery;
use crate::error::Hinted;

const AFTER_HELP: &str = "\
Examples:
  firma fleet status
  firma fleet status --json

Each Sidecar reports its id (its client certificate's name, else `local`) and host when it opens
its streams; the replica records the bundle revision it sent, the latest witnessed checkpoint and
when it last heard from it. With [authority.store] backend = \"etcd\" every replica writes what it
sees to etcd, so any replica answers for the whole fleet. See docs/fleet.md.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The Sidecars the Authority has seen: id, host, replica, bundle revision, last checkpoint, last seen.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub json: JsonFlag,
    /// Holds the operator socket.
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: FleetArgs, config: Option<PathBuf>) -> CommandResult {
    let FleetCommand::Status(args) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    let report = runtime.block_on(async move {
        let loaded = Discovery::new(config).load_optional()?;
        let target = super::token::locate(args.state_dir.as_deref(), loaded.as_ref())?;
        target.fleet().await
    })?;
    if args.json.enabled() {
        json::print(Document::FleetStatus, &report)?;
    } else {
        print!("{}", render(&report, Utc::now()));
    }
    Ok(Outcome::Success)
}

/// The report as a table (one line per Sidecar), headed by the replica that answered.
pub fn render(report: &FleetReport, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "replica {} (store: {}), {} sidecar(s)\n",
        report.replica,
        report.backend,
        report.sidecars.len()
    );
    if report.sidecars.is_empty() {
        return out;
    }
    let header = [
        "SIDECAR",
        "HOST",
        "REPLICA",
        "BUNDLE",
        "CHECKPOINT",
        "LAST SEEN",
        "STATE",
    ];
    let rows: Vec<[String; 7]> = report.sidecars.iter().map(|s| row(s, now)).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    out.push_str(&line(&header));
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

fn row(s: &Sighting, now: DateTime<Utc>) -> [String; 7] {
    let version = &s.bundle_version[..s.bundle_version.len().min(12)];
    let bundle = match (s.bundle_revision, version.is_empty()) {
        (_, true) => "-".to_string(),
        (0, false) => version.to_string(),
        (revision, false) => format!("r{revision} {version}"),
    };
    let checkpoint = match (s.checkpoint_seq, s.checkpoint_at) {
        (0, _) => "-".to_string(),
        (seq, Some(at)) => format!("seq {seq} ({} ago)", ago(now, at)),
        (seq, None) => format!("seq {seq}"),
    };
    [
        s.sidecar_id.clone(),
        s.host.clone(),
        s.replica.clone(),
        bundle,
        checkpoint,
        if s.connected {
            "now".to_string()
        } else {
            format!("{} ago", ago(now, s.last_seen))
        },
        if s.connected {
            "connected"
        } else {
            "disconnected"
        }
        .to_string(),
    ]
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_sidecar() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let seen = |id: &str, replica: &str, connected: bool, ago_s: i64| Sighting {
            sidecar_id: id.into(),
            host: format!("{id}.example"),
            address: "10.0.0.2:4000".into(),
            replica: replica.into(),
            bundle_revision: 42,
            bundle_version: "0123456789abcdef".into(),
            checkpoint_seq: 7,
            checkpoint_at: Some(now - chrono::Duration::seconds(3)),
            last_seen: now - chrono::Duration::seconds(ago_s),
            connected,
        };
        let report = FleetReport {
            replica: "authority-1:50051".into(),
            backend: "etcd".into(),
            sidecars: vec![
                seen("host-b", "authority-1:50051", true, 0),
                seen("host-c", "authority-2:50051", false, 125),
            ],
        };
        insta::assert_snapshot!(render(&report, now));
    }
}
