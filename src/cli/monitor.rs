//! `firma monitor`: read-only live tail of audit events and daemon logs. The `--source` and
//! `--format` choices come from the plugin registries (`sources/`, `formatters/`).

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};

use super::flags::StateDirArg;
use super::{CommandResult, Outcome, output};
use crate::config::dirs::resolve_state_dir;
use crate::error::Hinted;
use crate::monitor::since::{ACCEPTED_FORMS, parse_since};
use crate::monitor::{self, FieldEquals, Filters, Notice, Plan, Since};

/// Set (to anything but `0`) to follow by polling instead of a filesystem watcher — for state
/// directories on network filesystems, where watchers receive no events.
pub const POLL_ENV: &str = "FIRMA_MONITOR_POLL";

const EXAMPLES: &str = "\
Examples:
  # Everything: audit events plus authority + sidecar logs.
  firma monitor --state-dir /var/run/firma
  # Just denials, last 15 minutes, JSON output for piping into jq or a collector.
  firma monitor --state-dir /var/run/firma --source audit --decision deny --since 15m --format json
  # Authority logs only, one shot (no follow).
  firma monitor --state-dir /var/run/firma --source authority --no-follow
  # Filter by action class.
  firma monitor --state-dir /var/run/firma --source audit --action-class communication.external.send

Following starts at the end of each file (add --since to backfill first); backfilled records are
merged in timestamp order, live records are shown as they arrive. Rotation (rename), truncation
and re-creation of the files are followed. FIRMA_MONITOR_POLL=1 follows by polling (network filesystems). `--config` is accepted but never
used to find the state directory. JSON schema and recipes: docs/monitor.md.";

/// `all` plus every registered source, sorted by name.
fn source_parser() -> PossibleValuesParser {
    let mut values = vec![PossibleValue::new("all").help("every source below")];
    values.extend(
        monitor::sources()
            .into_iter()
            .map(|s| PossibleValue::new(s.name()).help(s.about())),
    );
    PossibleValuesParser::new(values)
}

/// Every registered formatter, sorted by name.
fn format_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        monitor::formatters()
            .into_iter()
            .map(|f| PossibleValue::new(f.name()).help(f.about())),
    )
}

#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,

    /// Which source to show.
    #[arg(long, value_name = "SOURCE", default_value = "all", value_parser = source_parser())]
    pub source: String,

    /// Read once and exit (default: keep following the files).
    #[arg(long)]
    pub no_follow: bool,

    /// Audit events only: show this decision (log lines are not filtered).
    #[arg(long, value_name = "DECISION", value_parser = PossibleValuesParser::new(["allow", "deny", "passthrough"]))]
    pub decision: Option<String>,

    /// Audit events only: exact match on intent.action_class (log lines are not filtered).
    #[arg(long, value_name = "CLASS")]
    pub action_class: Option<String>,

    /// Backfill window: a duration back from now (15m, 2h, 1d; also 30s) or an RFC 3339
    /// timestamp with offset (2026-11-26T10:00:00Z). Applies to every source.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "pretty", value_parser = format_parser())]
    pub format: String,
}

pub fn run(args: MonitorArgs, config: Option<PathBuf>) -> CommandResult {
    // `--config` does not choose the state dir; it only names the project for this warning.
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    super::project::warn_if_other_project(&state, config);
    let stdout = io::stdout();
    let mut lock = stdout.lock();
    let color = output::color_choice().for_stdout();
    execute(args, color, &mut lock)
}

/// Build the plan from the flags and run it, writing records to `out`.
pub fn execute(args: MonitorArgs, color: bool, out: &mut dyn Write) -> CommandResult {
    let plan = plan(args, color)?;
    if !plan.follow && !plan.state.path().is_dir() {
        return Err(Hinted::new(format!(
            "state directory {} does not exist",
            plan.state.path().display()
        ))
        .hint(
            "pass the daemon's --state-dir (or set FIRMA_STATE_DIR); `firma sidecar start` creates it",
        ));
    }
    match monitor::run(&plan, out, &mut print_notice) {
        Ok(()) => Ok(Outcome::Success),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
        Err(err) => Err(Hinted::new(format!(
            "monitor failed reading {}: {err}",
            plan.state.path().display()
        ))
        .hint("check that the state directory and its files are readable")),
    }
}

fn plan(args: MonitorArgs, color: bool) -> Result<Plan, Hinted> {
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    let sources = if args.source == "all" {
        monitor::sources()
    } else {
        let source = monitor::find_source(&args.source).ok_or_else(|| {
            Hinted::new(format!("unknown source {:?}", args.source))
                .hint("see `firma monitor --help` for the sources")
        })?;
        vec![source]
    };
    let formatter = monitor::find_formatter(&args.format).ok_or_else(|| {
        Hinted::new(format!("unknown format {:?}", args.format))
            .hint("see `firma monitor --help` for the formats")
    })?;
    let mut filters = Filters::new();
    if let Some(decision) = args.decision {
        filters = filters.with(FieldEquals::new("decision", decision));
    }
    if let Some(class) = args.action_class {
        filters = filters.with(FieldEquals::new("intent.action_class", class));
    }
    if let Some(since) = args.since {
        let bound = parse_since(&since, chrono::Utc::now())
            .map_err(|err| Hinted::new(err).hint(format!("--since takes {ACCEPTED_FORMS}")))?;
        filters = filters.with(Since(bound));
    }
    Ok(Plan {
        state,
        sources,
        filters,
        formatter,
        follow: !args.no_follow,
        color,
        watch: std::env::var_os(POLL_ENV).is_none_or(|v| v.is_empty() || v == "0"),
    })
}

fn print_notice(notice: Notice) {
    let text = match notice {
        Notice::Missing(path) => {
            format!("{} does not exist; nothing to show from it", path.display())
        }
        Notice::Waiting(path) => format!("waiting for {} to appear", path.display()),
        Notice::Appeared(path) => format!("{} appeared; following it", path.display()),
        Notice::Truncated(path) => {
            format!("{}: file truncated; reading from its start", path.display())
        }
        Notice::Replaced(path) => format!(
            "{} has been replaced (rotated or re-created); following the new file",
            path.display()
        ),
        Notice::Polling { dir, reason } => format!(
            "cannot watch {} ({reason}); checking for changes every {} ms instead",
            dir.display(),
            monitor::engine::POLL_INTERVAL.as_millis()
        ),
        Notice::Incomplete { path, bytes } => format!(
            "{} ends with an unterminated line ({bytes} bytes), not shown",
            path.display()
        ),
    };
    output::warn(format!("monitor: {text}"));
}
