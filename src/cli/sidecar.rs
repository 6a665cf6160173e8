//! `firma sidecar`: the foreground proxy, and `start | stop | status | restart` of the daemon
//! pair (plus the hidden `firma __supervise` that `start --detach` runs). Flags and messages
//! only: the mechanics live in `crate::lifecycle` and `crate::sidecar::run`.
//!
//! Exit codes: `start` 0 once ready (`--detach`) or after a requested teardown (foreground), 2 on
//! any error or when a child died on its own (and was not restarted); `stop` 0 (graceful or
//! hard-kill), 2 on error; `status` 0 when every component runs, 1 when any does not, 2 on
//! error; `restart` as `start --detach`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::flags::{JsonFlag, StateDirArg, StopTimeoutArg};
use super::json::{self, Document};
use super::project::warn_if_other_project;
use super::{CommandResult, Outcome, output};
use crate::config::dirs::{StateDirSource, trusted_state_dir};
use crate::config::{Discovery, LoadedConfig};
use crate::error::Hinted;
use crate::lifecycle::occupancy::live_stack;
use crate::lifecycle::spawn::open_run_log;
use crate::lifecycle::state::{Role, StateDir};
use crate::lifecycle::supervisor::{self, Ended, Finished, StartOptions, install_signals};
use crate::lifecycle::{detach, status, stop};
use crate::sidecar::run::{RunOptions, run as run_sidecar};

/// Env var `start` consults for `--config` before `FIRMA_CONFIG`.
pub const START_CONFIG_ENV: &str = "FIRMA_SIDECAR_CONFIG_FILE";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SidecarArgs {
    #[command(subcommand)]
    pub command: Option<SidecarCommand>,
    #[command(flatten)]
    pub run: SidecarRunArgs,
}

/// Flags of the bare `firma sidecar` (the foreground proxy).
#[derive(Debug, Args)]
pub struct SidecarRunArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// Authority URL overriding [sidecar.authority].url (used by `sidecar start`).
    #[arg(long, value_name = "URL")]
    pub authority_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Boot the Authority and the Sidecar as one daemon-mode pair (foreground, or --detach).
    Start(StartArgs),
    /// Tear the pair down: Sidecar first, then supervisor and Authority; hard-kill after --timeout.
    Stop(StopArgs),
    /// Show the daemon's components (docker-ps style), --json, or --daemon for the pid only.
    Status(StatusArgs),
    /// Stop the pair, then start it again (detached) with the same config and state dir.
    Restart(RestartArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Order: stack.lock, Authority (own process group) until its gRPC health check passes, Sidecar
(own process group) until its port accepts and generated-firma-ca/ exists, then *.pid/*.listen.
Any failure rolls everything back (exit 2). Each component must report ready within
FIRMA_READY_TIMEOUT (default 30s). Foreground: Ctrl-C, SIGTERM or SIGHUP stops the pair (exit 0);
a child dying on its own stops the other (exit 2), unless [sidecar.supervise] restart =
\"on-failure\" restarts it. The firma.toml passed to both children: --config, then
FIRMA_SIDECAR_CONFIG_FILE, then FIRMA_CONFIG, then the discovered one.")]
pub struct StartArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// Return after readiness, leaving a supervisor process that owns the pair.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    #[command(flatten)]
    pub timeout: StopTimeoutArg,
}

#[derive(Debug, Args)]
#[command(after_help = "\
States: running (alive and its endpoint answers), degraded (running, but serving an older policy
bundle: why is printed below the table), unhealthy (alive, endpoint not answering), crashed
(ended on its own: exit status or signal, and when), stopped (not running). Exit 0 when all run,
1 otherwise.")]
pub struct StatusArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    #[command(flatten)]
    pub json: JsonFlag,
    /// Print only the daemon-mode (supervisor) pid.
    #[arg(long, conflicts_with = "json")]
    pub daemon: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Restarts with the config the running pair serves (or --config); when nothing runs, it starts
the discovered config. The new pair always runs detached.")]
pub struct RestartArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    #[command(flatten)]
    pub timeout: StopTimeoutArg,
}

/// `firma __supervise` (hidden): the detached supervisor `start --detach` runs.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

pub fn run(args: SidecarArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        Some(SidecarCommand::Start(args)) => start(args, config),
        Some(SidecarCommand::Stop(args)) => stop_cmd(args),
        Some(SidecarCommand::Status(args)) => status_cmd(args, config),
        Some(SidecarCommand::Restart(args)) => restart(args, config),
        None => {
            super::logging::init_daemon_logging();
            run_sidecar(RunOptions {
                config,
                state_dir: args.run.state_dir.into_flag(),
                authority_url: args.run.authority_url,
            })?;
            Ok(Outcome::Success)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Hinted> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))
}

fn start(args: StartArgs, global_config: Option<PathBuf>) -> CommandResult {
    let config = Discovery::new(global_config)
        .with_env_first(START_CONFIG_ENV)
        .load()?;
    let (state, source) = trusted_state_dir(args.state_dir.as_deref())?;
    if args.detach {
        return start_detached(&config, &state, source);
    }
    super::logging::init_supervisor_logging(open_run_log(&state, Role::Supervisor)?);
    let opts = StartOptions {
        config,
        state,
        detached: false,
        ready_timeout: supervisor::ready_timeout_from_env()?,
    };
    let finished = runtime()?.block_on(async {
        let mut signals = install_signals(false)?;
        supervisor::run(&opts, &mut signals, |info, state| {
            output::ok(format!(
                "sidecar running: proxy {}, authority {}; state_dir={} (Ctrl-C stops both)",
                info.sidecar_listen,
                info.authority_url,
                state.path().display()
            ));
        })
        .await
    })?;
    finish(finished, &opts.state, false)
}

fn start_detached(
    config: &LoadedConfig,
    state: &StateDir,
    source: StateDirSource,
) -> CommandResult {
    let ready_timeout = supervisor::ready_timeout_from_env()?;
    let launched = runtime()?.block_on(async {
        let mut signals = install_signals(false)?;
        detach::launch(&config.path, state, ready_timeout, &mut signals).await
    })?;
    output::ok(format!(
        "sidecar running (detached, supervisor pid {}): project {}, proxy {}, authority {}; state_dir={}",
        launched.supervisor_pid,
        config.project_name(),
        launched.sidecar_listen.as_deref().unwrap_or("?"),
        launched.authority_url.as_deref().unwrap_or("?"),
        state.path().display()
    ));
    let flag = state_dir_flag(state, source);
    output::next_steps(&[
        (format!("firma sidecar status{flag}"), "what runs"),
        (
            format!("firma monitor{flag}"),
            "watch decisions and daemon logs",
        ),
        (format!("firma sidecar stop{flag}"), "tear the pair down"),
    ]);
    Ok(Outcome::Success)
}

/// ` --state-dir X` when the operator chose X with the flag (so copied next steps use it too).
fn state_dir_flag(state: &StateDir, source: StateDirSource) -> String {
    match source {
        StateDirSource::Flag => format!(" --state-dir {}", state.path().display()),
        _ => String::new(),
    }
}

/// `firma __supervise`: a new session, logs to supervisor.log (its stdout/stderr), then the same
/// supervisor as a foreground start.
pub fn supervise(args: SuperviseArgs) -> CommandResult {
    // Before any runtime or thread exists.
    let session = detach::enter_own_session();
    super::logging::init_daemon_logging();
    if let Err(err) = session {
        tracing::warn!(error = %err, "setsid failed; the supervisor stays in its caller's session");
    }
    let state = StateDir::new(args.state_dir.clone());
    let prepared = (|| {
        Ok::<_, Hinted>(StartOptions {
            config: Discovery::new(Some(args.config.clone())).load()?,
            state: state.clone(),
            detached: true,
            ready_timeout: supervisor::ready_timeout_from_env()?,
        })
    })();
    let opts = prepared.inspect_err(|err| {
        let _ = crate::lifecycle::notify::Notification::start_failed(err).send();
    })?;
    let finished = runtime()?.block_on(async {
        let mut signals = install_signals(true)?;
        supervisor::run(&opts, &mut signals, |info, _| {
            tracing::info!(
                sidecar = %info.sidecar_listen,
                authority = %info.authority_url,
                "pair ready; supervising"
            );
        })
        .await
    })?;
    finish(finished, &state, true)
}

/// How a supervised run ended, as an outcome and a message.
fn finish(finished: Finished, state: &StateDir, detached: bool) -> CommandResult {
    match finished.ended {
        Ended::Exited {
            role,
            status,
            gave_up_after,
        } => {
            let other = match role {
                Role::Authority => Role::Sidecar,
                _ => Role::Authority,
            };
            let what = match gave_up_after {
                Some(n) => format!(
                    "kept failing ({status}); gave up after {n} restarts ([sidecar.supervise] start_limit_burst)"
                ),
                None => format!("exited unexpectedly ({status})"),
            };
            Err(Hinted::new(format!(
                "{} {what}; the {} was torn down",
                role.name(),
                other.name()
            ))
            .hint(format!("see {}", state.log_file(role).display())))
        }
        _ if !finished.clean => Err(Hinted::new(
            "a component could not be proven gone after SIGKILL; state files kept",
        )
        .hint("run `firma sidecar stop` to retry")),
        Ended::Signal(sig) => {
            if !detached {
                output::info(format!("{sig}: stopped the sidecar and the authority"));
            }
            Ok(Outcome::Success)
        }
        Ended::StopRequested => {
            if !detached {
                output::info("stopped by `firma sidecar stop`");
            }
            Ok(Outcome::Success)
        }
    }
}

fn stop_cmd(args: StopArgs) -> CommandResult {
    let timeout = args.timeout.duration();
    let (state, _) = trusted_state_dir(args.state_dir.as_deref())?;
    let report = stop::stop(&state, timeout)?;
    print_stop_report(&report, &state, args.timeout.seconds());
    Ok(Outcome::Success)
}

fn print_stop_report(report: &stop::StopReport, state: &StateDir, timeout: f64) {
    if report.nothing_running {
        let extra = if report.removed_stale_files {
            " (removed stale pid/lock files)"
        } else {
            ""
        };
        output::info(format!(
            "nothing running in {}{extra}",
            state.path().display()
        ));
        return;
    }
    let names: Vec<&str> = report.stopped.iter().map(|r| r.name()).collect();
    let forced = if report.hard_killed.is_empty() {
        String::new()
    } else {
        let killed: Vec<&str> = report.hard_killed.iter().map(|r| r.name()).collect();
        format!(" (hard-killed after {timeout}s: {})", killed.join(", "))
    };
    output::ok(format!(
        "stopped {}{forced}; state_dir={}",
        names.join(", "),
        state.path().display()
    ));
}

fn status_cmd(args: StatusArgs, config: Option<PathBuf>) -> CommandResult {
    let (state, _) = trusted_state_dir(args.state_dir.as_deref())?;
    warn_if_other_project(&state, config);
    let report = runtime()?.block_on(status::status(&state));
    if args.daemon {
        return match report.daemon_pid {
            Some(pid) => {
                println!("{pid}");
                Ok(Outcome::Success)
            }
            None => Ok(Outcome::FoundProblems),
        };
    }
    if args.json.enabled() {
        json::print(Document::SidecarStatus, &report)?;
    } else {
        print!("{}", status::render_table(&report));
    }
    Ok(if report.all_running() {
        Outcome::Success
    } else {
        Outcome::FoundProblems
    })
}

fn restart(args: RestartArgs, global_config: Option<PathBuf>) -> CommandResult {
    let timeout = args.timeout.duration();
    let (state, source) = trusted_state_dir(args.state_dir.as_deref())?;
    let running_config = live_stack(&state).and_then(|s| s.meta).map(|m| m.config);
    let chosen = global_config;
    let config = match (chosen, running_config) {
        (Some(flag), _) => Discovery::new(Some(flag)).load()?,
        (None, Some(running)) => load_running_config(&running)?,
        (None, None) => Discovery::new(None)
            .with_env_first(START_CONFIG_ENV)
            .load()?,
    };
    let report = stop::stop(&state, timeout)?;
    print_stop_report(&report, &state, args.timeout.seconds());
    start_detached(&config, &state, source)
}

fn load_running_config(path: &Path) -> Result<LoadedConfig, Hinted> {
    Discovery::new(Some(path.to_path_buf()))
        .load()
        .map_err(|err| {
            Hinted::new(format!(
                "the running pair's config no longer loads: {}",
                err.message()
            ))
            .hint("fix it, or pass --config; the running pair was left alone")
        })
}
