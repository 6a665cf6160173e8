//! `firma monitor`: read-only live tail of audit events and daemon logs. The `--source` and
//! `--format` choices come from the plugin registries (`sources/`, `formatters/`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{ArgAction, Args};

use super::flags::StateDirArg;
use super::{CommandResult, Outcome, output};
use crate::audit::event::Decision;
use crate::config::Discovery;
use crate::config::action_classes;
use crate::config::dirs::resolve_state_dir;
use crate::error::Hinted;
use crate::monitor::since::{ACCEPTED_FORMS, parse_since};
use crate::monitor::{
    self, FieldEquals, Filters, Level, LevelAtLeast, Notice, Plan, Since, Source,
};
use crate::state_dir::StateDir;

/// The record fields the filter flags judge (sources declare which of them they have).
const DECISION: &str = "decision";
const ACTION_CLASS: &str = "intent.action_class";
const AGENT: &str = "agent_id";
const SANDBOX_ID: &str = "sandbox_id";

/// `-n` when following without `--since`, as `tail` and `journalctl -f` do.
const DEFAULT_LINES: usize = 10;

/// Set (to anything but `0`) to follow by polling instead of a filesystem watcher — for state
/// directories on network filesystems, where watchers receive no events.
pub const POLL_ENV: &str = "FIRMA_MONITOR_POLL";

const EXAMPLES: &str = "\
Examples:
  # Everything: audit events plus the daemons' logs.
  firma monitor --state-dir /var/run/firma
  # Just denials, last 15 minutes, JSON output for piping into jq or a collector.
  firma monitor --state-dir /var/run/firma --source audit --decision deny --since 15m --format json
  # Authority logs only, one shot (no follow).
  firma monitor --state-dir /var/run/firma --source authority --no-follow
  # Filter by action class.
  firma monitor --state-dir /var/run/firma --source audit --action-class communication.external.send
  # The last 50 denials of one agent, then follow; warnings and errors of both daemons.
  firma monitor -n 50 --decision deny --agent codex
  firma monitor --source authority,sidecar --level warn

Following first shows the last 10 matching records (-n), then what comes; --since backfills
its whole window instead. Backfilled records are merged in timestamp order, live records are
shown as they arrive. Rotation (rename, also the Sidecar's audit.jsonl.N), truncation and
re-creation of the files are followed. Filters are ANDed; each judges only the sources that
have its field. FIRMA_MONITOR_POLL=1 follows by polling (network filesystems). --config never
chooses the state directory; its [sidecar.audit] dir says where the audit log is. JSON schema
and recipes: docs/monitor.md.";

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

/// Every decision the audit log records.
fn decision_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(Decision::ALL.map(Decision::as_str))
}

/// A filter's help: what it does, and which registered sources it judges (the others' records
/// pass it), so a new source that declares the field shows up here by itself.
fn filter_help(what: &str, path: &str) -> String {
    let names: Vec<&str> = monitor::sources_filterable_by(path)
        .iter()
        .map(|s| s.name())
        .collect();
    match names.as_slice() {
        [] => format!("{what} (no source has this field)"),
        _ => format!(
            "{what}. Judges {} records only; other sources' lines pass",
            names.join(", ")
        ),
    }
}

/// Every registered formatter, sorted by name.
fn format_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        monitor::formatters()
            .into_iter()
            .map(|f| PossibleValue::new(f.name()).help(f.about())),
    )
}

/// `-n`: a count, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    Last(usize),
    All,
}

fn parse_lines(text: &str) -> Result<Lines, String> {
    if text == "all" {
        return Ok(Lines::All);
    }
    text.parse()
        .map(Lines::Last)
        .map_err(|_| "expected a number of records (0, 10, 500) or `all`".to_string())
}

/// `--action-class` must name a registered class (a typo would silently match nothing).
fn parse_action_class(text: &str) -> Result<String, String> {
    if action_classes::is_registered(text) {
        return Ok(text.to_string());
    }
    let closest = action_classes::names()
        .into_iter()
        .map(|name| (strsim::jaro_winkler(text, name), name))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.8);
    Err(match closest {
        Some((_, name)) => format!(
            "not a registered action class; did you mean {name:?}? (the registry: docs/configuration.md#action-classes)"
        ),
        None => {
            "not a registered action class (the registry: docs/configuration.md#action-classes)"
                .to_string()
        }
    })
}

/// Every level, most severe first.
fn level_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(Level::ALL.map(Level::as_str))
}

#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,

    /// Which sources to show: repeat the flag or separate with commas (`audit,sidecar`).
    #[arg(long, value_name = "SOURCE", default_value = "all", value_parser = source_parser(),
          value_delimiter = ',', action = ArgAction::Append)]
    pub source: Vec<String>,

    /// Keep following the files (the default; for `tail -f` habits).
    #[arg(short = 'f', long, overrides_with = "no_follow")]
    pub follow: bool,

    /// Read once and exit (default: keep following the files).
    #[arg(long, overrides_with = "follow")]
    pub no_follow: bool,

    /// Show the last N matching records already written (`all`: every one), then follow.
    /// Default: 10 when following without --since, else all (the whole --since window, or
    /// the whole log with --no-follow). `-n 0` shows only what comes.
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_lines)]
    pub lines: Option<Lines>,

    #[arg(long, value_name = "DECISION", value_parser = decision_parser(),
          help = filter_help("Show only this decision", DECISION))]
    pub decision: Option<String>,

    #[arg(long, value_name = "CLASS", value_parser = parse_action_class,
          help = filter_help("Exact match on intent.action_class, a registered class", ACTION_CLASS))]
    pub action_class: Option<String>,

    #[arg(long, value_name = "AGENT",
          help = filter_help("Exact match on the agent id", AGENT))]
    pub agent: Option<String>,

    #[arg(long, value_name = "ID",
          help = filter_help("Exact match on the sandbox id of a sandboxed `firma run`", SANDBOX_ID))]
    pub sandbox_id: Option<String>,

    #[arg(long, value_name = "LEVEL", value_parser = level_parser(),
          help = filter_help("Log records at this level or more severe (warn: WARN and ERROR)", LevelAtLeast::FIELD))]
    pub level: Option<String>,

    /// Backfill window: a duration back from now (15m, 2h, 1d; also 30s) or an RFC 3339
    /// timestamp with offset (2026-11-26T10:00:00Z). Applies to every source.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "pretty", value_parser = format_parser())]
    pub format: String,
}

pub fn run(args: MonitorArgs, config: Option<PathBuf>) -> CommandResult {
    // A short-lived reader needs a few hundred KiB: transparent huge pages would make the
    // allocator fault in (and zero) 2 MiB at a time — measurable on a 2 ms `--since` run.
    let _ = nix::sys::prctl::set_thp_disable(true);
    // `--config` does not choose the state dir; it names the project for this warning and
    // where the project places its audit log.
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    super::project::warn_if_other_project(&state, config.clone());
    let stdout = io::stdout();
    let mut lock = stdout.lock();
    let color = output::color_choice().for_stdout();
    execute(args, config, color, &mut lock)
}

/// Build the plan from the flags (and the project's `config`, for where its audit log lives)
/// and run it, writing records to `out`.
pub fn execute(
    args: MonitorArgs,
    config: Option<PathBuf>,
    color: bool,
    out: &mut dyn Write,
) -> CommandResult {
    let plan = plan(args, config, color)?;
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

/// The state dir, with the audit log where the project's `[sidecar.audit] dir` puts it (as
/// `audit verify` finds it), else where the Sidecar published it, else in the state dir. Fixed
/// for the whole run: the live file and its rotations are looked for in one directory.
fn state_dir(flag: Option<&Path>, config: Option<PathBuf>) -> StateDir {
    let (state, _) = resolve_state_dir(flag);
    // A config that does not load is not the monitor's business (`firma config check` says why).
    let placed = Discovery::new(config)
        .load_optional()
        .ok()
        .flatten()
        .and_then(|loaded| loaded.config.sidecar.audit.dir);
    let state = state.with_audit_dir(placed);
    let dir = state.audit_dir();
    state.with_audit_dir(Some(dir))
}

fn plan(args: MonitorArgs, config: Option<PathBuf>, color: bool) -> Result<Plan, Hinted> {
    let state = state_dir(args.state_dir.as_deref(), config);
    let sources = if args.source.iter().any(|name| name == "all") {
        monitor::sources()
    } else {
        let mut chosen = Vec::new();
        for name in &args.source {
            let source = monitor::find_source(name).ok_or_else(|| {
                Hinted::new(format!("unknown source {name:?}"))
                    .hint("see `firma monitor --help` for the sources")
            })?;
            if !chosen.iter().any(|s: &&dyn Source| s.name() == name) {
                chosen.push(source);
            }
        }
        chosen
    };
    let formatter = monitor::find_formatter(&args.format).ok_or_else(|| {
        Hinted::new(format!("unknown format {:?}", args.format))
            .hint("see `firma monitor --help` for the formats")
    })?;
    let mut filters = Filters::new();
    for (path, value) in [
        (DECISION, args.decision),
        (ACTION_CLASS, args.action_class),
        (AGENT, args.agent),
        (SANDBOX_ID, args.sandbox_id),
    ] {
        if let Some(value) = value {
            filters = filters.with(FieldEquals::new(path, value));
        }
    }
    if let Some(level) = args.level.as_deref().and_then(Level::parse) {
        filters = filters.with(LevelAtLeast(level));
    }
    let since = args.since.is_some();
    if let Some(since) = args.since {
        let bound = parse_since(&since, chrono::Utc::now())
            .map_err(|err| Hinted::new(err).hint(format!("--since takes {ACCEPTED_FORMS}")))?;
        filters = filters.with(Since(bound));
    }
    let follow = !args.no_follow;
    let last = match args.lines {
        Some(Lines::Last(n)) => Some(n),
        Some(Lines::All) => None,
        None if follow && !since => Some(DEFAULT_LINES),
        None => None,
    };
    Ok(Plan {
        state,
        sources,
        filters,
        formatter,
        last,
        follow,
        color,
        watch: std::env::var_os(POLL_ENV).is_none_or(|v| v.is_empty() || v == "0"),
    })
}

fn print_notice(notice: Notice) {
    let text = match &notice {
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
    // stdout carries the records: notes of either level go to stderr.
    if notice.is_warning() {
        output::warn(format!("monitor: {text}"));
    } else {
        output::info_to_stderr(format!("monitor: {text}"));
    }
}
