//! `firma sidecar start | stop | status` and the hidden `firma __supervise`: flags and messages.
//! The mechanics live in `crate::lifecycle`.
//!
//! Exit codes: `start` 0 once ready (`--detach`) or after a requested teardown (foreground), 2 on
//! any error or when a child died on its own; `stop` 0 (graceful or hard-kill), 2 on error;
//! `status` 0 when every component runs, 1 when any does not, 2 on error.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{CommandResult, Outcome, output};
use crate::config::Discovery;
use crate::config::dirs::trusted_state_dir;
use crate::error::Hinted;
use crate::lifecycle::channel::{AUTHORITY_FIELD, ERROR_FIELD, HINT_FIELD};
use crate::lifecycle::notify::{self, LISTEN_FIELD};
use crate::lifecycle::signals::Signals;
use crate::lifecycle::state::{Role, StateDir};
use crate::lifecycle::supervisor::{self, Ended, StackInfo, StartOptions};
use crate::lifecycle::{detach, status, stop};

/// Env var `start` consults for `--config` before `FIRMA_CONFIG`.
pub const START_CONFIG_ENV: &str = "FIRMA_SIDECAR_CONFIG_FILE";

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Boot the Authority and the Sidecar as one daemon-mode pair (foreground, or --detach).
    Start(StartArgs),
    /// Tear the pair down: Sidecar first, then supervisor and Authority; hard-kill after --timeout.
    Stop(StopArgs),
    /// Show the daemon's components (docker-ps style), --json, or --daemon for the pid only.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Order: stack.lock, Authority (own process group) until its gRPC health check passes, Sidecar
(own process group) until its port accepts and generated-firma-ca/ exists, then *.pid/*.listen.
Any failure rolls everything back (exit 2). Each component must report ready within
FIRMA_READY_TIMEOUT (default 30s). Foreground: Ctrl-C, SIGTERM or SIGHUP stops the pair (exit 0);
a child dying on its own stops the other (exit 2).")]
pub struct StartArgs {
    /// firma.toml passed to both children (env: FIRMA_SIDECAR_CONFIG_FILE) [default: discovered firma.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (env: FIRMA_STATE_DIR) [default: $XDG_RUNTIME_DIR/firma, else /tmp/firma-$UID].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Return after readiness, leaving a supervisor process that owns the pair.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait after the soft signal before hard-killing survivors.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
#[command(after_help = "\
States: running (alive and its endpoint answers), unhealthy (alive, endpoint not answering),
stopped (no process, or the pidfile names somebody else's). Exit 0 when all run, 1 otherwise.")]
pub struct StatusArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Print only the daemon-mode (supervisor) pid.
    #[arg(long, conflicts_with = "json")]
    pub daemon: bool,
}

/// `firma __supervise` (hidden): the detached supervisor `start --detach` runs.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

pub fn run(command: SidecarCommand, config: Option<PathBuf>) -> CommandResult {
    match command {
        SidecarCommand::Start(args) => start(args, config),
        SidecarCommand::Stop(args) => stop_cmd(args),
        SidecarCommand::Status(args) => status_cmd(args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Hinted> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))
}

fn start(args: StartArgs, global_config: Option<PathBuf>) -> CommandResult {
    let config = Discovery::new(args.config.or(global_config))
        .with_env_first(START_CONFIG_ENV)
        .load()?;
    let state = trusted_state_dir(args.state_dir.as_deref())?;
    let ready_timeout = supervisor::ready_timeout_from_env()?;
    if args.detach {
        let rt = runtime()?;
        let launched = rt.block_on(async {
            let mut signals = install_signals(false)?;
            detach::launch(&config.path, &state, ready_timeout, &mut signals).await
        })?;
        output::ok(format!(
            "sidecar running (detached, supervisor pid {}): proxy {}, authority {}; state_dir={}",
            launched.supervisor_pid,
            launched.sidecar_listen.as_deref().unwrap_or("?"),
            launched.authority_url.as_deref().unwrap_or("?"),
            state.path().display()
        ));
        return Ok(Outcome::Success);
    }
    crate::cli::logging::init_daemon_logging();
    let opts = StartOptions {
        config,
        state,
        detached: false,
        ready_timeout,
    };
    supervise_until_done(opts, |info, state| {
        output::ok(format!(
            "sidecar running: proxy {}, authority {}; state_dir={} (Ctrl-C stops both)",
            info.sidecar_listen,
            info.authority_url,
            state.path().display()
        ));
    })
}

/// `firma __supervise`: a new session, logs to supervisor.log (its stdout/stderr), then the same
/// supervisor as a foreground start.
pub fn supervise(args: SuperviseArgs) -> CommandResult {
    // Before any runtime or thread exists. The launcher did not make us a group leader, so
    // setsid() succeeds; if it does not (run by hand as a job leader), carry on in this session.
    let setsid = nix::unistd::setsid();
    crate::cli::logging::init_daemon_logging();
    if let Err(err) = setsid {
        tracing::warn!(error = %err, "setsid failed; the supervisor stays in its caller's session");
    }
    let result = (|| {
        let config = Discovery::new(Some(args.config.clone())).load()?;
        let ready_timeout = supervisor::ready_timeout_from_env()?;
        Ok::<_, Hinted>(StartOptions {
            config,
            state: StateDir::new(args.state_dir.clone()),
            detached: true,
            ready_timeout,
        })
    })();
    let opts = match result {
        Ok(opts) => opts,
        Err(err) => {
            report_error(&err);
            return Err(err);
        }
    };
    supervise_until_done(opts, |info, _| {
        tracing::info!(
            sidecar = %info.sidecar_listen,
            authority = %info.authority_url,
            "pair ready; supervising"
        );
    })
}

/// Boot, tell whoever waits (systemd or the `--detach` launcher) `READY=1`, supervise, tear down.
fn supervise_until_done(
    opts: StartOptions,
    on_ready: impl FnOnce(&StackInfo, &StateDir),
) -> CommandResult {
    let rt = runtime()?;
    let detached = opts.detached;
    rt.block_on(async move {
        let mut signals = install_signals(detached)?;
        let running = match supervisor::boot(&opts, &mut signals).await {
            Ok(running) => running,
            Err(err) => {
                report_error(&err);
                return Err(err);
            }
        };
        let info = running.info.clone();
        let status = format!(
            "proxy {} authority {}",
            info.sidecar_listen, info.authority_url
        );
        let _ = notify::notify(&[
            ("READY", "1"),
            (LISTEN_FIELD, &info.sidecar_listen),
            (AUTHORITY_FIELD, &info.authority_url),
            ("STATUS", &status),
        ]);
        on_ready(&info, running.state());
        let (ended, clean) = running.supervise(&mut signals).await;
        let _ = notify::notify(&[("STOPPING", "1")]);
        match ended {
            Ended::Exited { role, status } => {
                let other = match role {
                    Role::Authority => "sidecar",
                    _ => "authority",
                };
                Err(Hinted::new(format!(
                    "{} exited unexpectedly ({status}); the {other} was torn down",
                    role.name()
                ))
                .hint(format!("see {}", opts.state.log_file(role).display())))
            }
            _ if !clean => Err(Hinted::new(
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
    })
}

/// Forward a start failure to whoever waits on our NOTIFY_SOCKET (the `--detach` launcher prints
/// it; systemd shows STATUS).
fn report_error(err: &Hinted) {
    let one_line = |s: &str| s.replace('\n', " ");
    let message = one_line(err.message());
    let hint = err.hint_text().map(one_line).unwrap_or_default();
    let status = format!("start failed: {message}");
    let _ = notify::notify(&[
        (ERROR_FIELD, &message),
        (HINT_FIELD, &hint),
        ("STATUS", &status),
    ]);
}

fn install_signals(ignore_hup: bool) -> Result<Signals, Hinted> {
    Signals::install(ignore_hup)
        .map_err(|err| Hinted::new(format!("cannot install signal handlers: {err}")))
}

fn stop_cmd(args: StopArgs) -> CommandResult {
    if !args.timeout.is_finite() || args.timeout < 0.0 {
        return Err(Hinted::new(format!(
            "--timeout {} is not a number of seconds",
            args.timeout
        ))
        .hint("pass e.g. --timeout 2 or --timeout 0.5"));
    }
    let state = trusted_state_dir(args.state_dir.as_deref())?;
    let report = stop::stop(&state, Duration::from_secs_f64(args.timeout))?;
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
        return Ok(Outcome::Success);
    }
    let names: Vec<&str> = report
        .stopped
        .iter()
        .map(|r| match r {
            Role::Supervisor => "supervisor",
            r => r.name(),
        })
        .collect();
    let forced = if report.hard_killed.is_empty() {
        String::new()
    } else {
        let killed: Vec<&str> = report.hard_killed.iter().map(|r| r.name()).collect();
        format!(
            " (hard-killed after {}s: {})",
            args.timeout,
            killed.join(", ")
        )
    };
    output::ok(format!(
        "stopped {}{forced}; state_dir={}",
        names.join(", "),
        state.path().display()
    ));
    Ok(Outcome::Success)
}

fn status_cmd(args: StatusArgs) -> CommandResult {
    let state = trusted_state_dir(args.state_dir.as_deref())?;
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
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|err| Hinted::new(format!("cannot encode status: {err}")))?;
        println!("{json}");
    } else {
        print!("{}", status::render_table(&report));
    }
    Ok(if report.all_running() {
        Outcome::Success
    } else {
        Outcome::FoundProblems
    })
}
