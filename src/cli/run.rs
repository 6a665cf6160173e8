//! `firma run <agent> [-- command args…]`: run an agent through the Sidecar.
//!
//! Exit status: the command's own (128 + signal number when a signal ended it); 127 when the
//! command cannot be found or started; 2 when firma itself fails before the command runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::exit_code;
use super::flags::StateDirArg;
use super::output;
use super::project::refuse_other_project;
use crate::config::dirs::{StateDirSource, resolve_data_dir, resolve_state_dir};
use crate::config::providers::{DEFAULT_PROVIDER, KNOWN_AGENTS};
use crate::config::scaffold::{AuthorityChoice, ScaffoldOptions, scaffold};
use crate::config::schema::{DEFAULT_AUTHORITY_LISTEN, DEFAULT_SIDECAR_LISTEN};
use crate::config::{Discovery, LoadedConfig};
use crate::error::Hinted;
use crate::platform::process::signal_child;
use crate::platform::signals::{Sig, Signals};
use crate::run::{self, env, relay};
use crate::state_dir::StateDir;

const RUN_EXAMPLES: &str = "\
Examples:
  firma run codex                       # runs `codex` through the Sidecar
  firma run generic -- python3 agent.py
  firma run claude -- claude --model sonnet";

#[derive(Debug, Args)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// Agent id to obtain a capability for (must match the issuance policies).
    pub agent: String,
    /// Command to run [default: the agent's usual executable, e.g. `codex`, `claude`].
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: RunArgs, config: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::error(&Hinted::new(format!(
                "cannot start the async runtime: {err}"
            )));
            return ExitCode::from(exit_code::ERROR);
        }
    };
    match runtime.block_on(execute(args, config)) {
        Ok(code) => ExitCode::from(code),
        Err((code, err)) => {
            output::error(&err);
            ExitCode::from(code)
        }
    }
}

type RunError = (u8, Hinted);

fn setup(err: Hinted) -> RunError {
    (exit_code::ERROR, err)
}

async fn execute(args: RunArgs, config: Option<PathBuf>) -> Result<u8, RunError> {
    let (state, source) = resolve_state_dir(args.state_dir.as_deref());
    let command = resolve_command(&args).map_err(|err| (exit_code::COMMAND_NOT_FOUND, err))?;
    let loaded = ensure_project(&args.agent, config, &state).map_err(setup)?;
    let explicit = source == StateDirSource::Flag;
    refuse_other_project(&state, &loaded.path, explicit).map_err(setup)?;

    let sidecar = match run::sidecar_running(&state) {
        Some(addr) => addr,
        None => {
            output::info(format!(
                "daemon not running: starting it (firma sidecar start --detach --state-dir {})",
                state.path().display()
            ));
            run::start_daemon(&loaded.path, &state).map_err(setup)?;
            run::sidecar_running(&state).ok_or_else(|| {
                setup(
                    Hinted::new("the daemon started but its sidecar does not answer").hint(
                        "check `firma sidecar status` and sidecar.log in the state directory",
                    ),
                )
            })?
        }
    };

    let authority = run::authority_url(&loaded, &state).map_err(setup)?;
    let project = &loaded.config.project;
    let request = run::CapabilityRequest {
        authority,
        ca_cert: loaded.config.sidecar.authority.ca_cert.clone(),
        agent: args.agent.clone(),
        actions: project.actions.clone(),
        session_id: uuid::Uuid::now_v7().to_string(),
        ttl: project.token_ttl,
    };
    let issued = request.issue().await.map_err(setup)?;
    output::info(format!(
        "capability {} for agent {} (session {}, expires {})",
        issued.token_id,
        args.agent,
        request.session_id,
        issued.expires_at.format("%H:%M:%SZ")
    ));

    let token = relay::CurrentToken::new(issued.token.clone());
    let relay_addr = relay::start(sidecar, token.clone())
        .await
        .map_err(|err| setup(Hinted::new(format!("cannot start the local relay: {err}"))))?;
    let (bundle, ca_cert) = env::write_ca_bundle(&state).map_err(setup)?;
    tokio::spawn(refresh_forever(request, issued, token));

    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .envs(env::agent_env(relay_addr, &bundle, &ca_cert));
    let mut child = child.spawn().map_err(|err| {
        (
            exit_code::COMMAND_NOT_FOUND,
            Hinted::new(format!("cannot run {:?}: {err}", command[0]))
                .hint("check that the command exists and is executable (is it on PATH?)"),
        )
    })?;
    forward_signals_until_exit(&mut child).await.map_err(setup)
}

/// The command to run: what follows `--`, else the agent's usual executable.
fn resolve_command(args: &RunArgs) -> Result<Vec<String>, Hinted> {
    if !args.command.is_empty() {
        return Ok(args.command.clone());
    }
    match KNOWN_AGENTS.iter().find(|(name, _)| *name == args.agent) {
        Some((_, Some(exe))) => Ok(vec![(*exe).to_string()]),
        _ => Err(
            Hinted::new(format!("no default command for agent {:?}", args.agent)).hint(format!(
                "pass it after --, e.g. firma run {} -- python3 agent.py",
                args.agent
            )),
        ),
    }
}

/// The discovered project, or the same scaffold `firma init --yes` writes, in the working directory.
fn ensure_project(
    agent: &str,
    config: Option<PathBuf>,
    state: &StateDir,
) -> Result<LoadedConfig, Hinted> {
    let discovery = Discovery::new(config);
    if let Some(loaded) = discovery.load_optional()? {
        return Ok(loaded);
    }
    output::info(format!(
        "no firma.toml found: scaffolding ./.firma for agent {agent} (as `firma init --yes --agent {agent}`)"
    ));
    scaffold(&ScaffoldOptions {
        workspace: PathBuf::from("."),
        agent: agent.to_string(),
        provider: DEFAULT_PROVIDER.to_string(),
        authority: AuthorityChoice::Local,
        authority_listen: DEFAULT_AUTHORITY_LISTEN.parse().expect("constant"),
        sidecar_listen: DEFAULT_SIDECAR_LISTEN.parse().expect("constant"),
        state: state.clone(),
        data: resolve_data_dir()?,
        force: false,
    })?;
    discovery.load()
}

/// Renew the capability before it expires; the relay picks the new token up at once.
async fn refresh_forever(
    request: run::CapabilityRequest,
    mut current: run::Issued,
    token: relay::CurrentToken,
) {
    loop {
        tokio::time::sleep(run::refresh_delay(chrono::Utc::now(), current.expires_at)).await;
        match request.issue().await {
            Ok(next) => {
                token.replace(next.token.clone());
                current = next;
            }
            Err(err) => {
                output::warn(format!(
                    "token refresh failed (retrying): {}",
                    err.message()
                ));
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}

/// Wait for the agent, passing on SIGTERM, SIGHUP and SIGQUIT. SIGINT is passed on only when
/// stdin is not a terminal: on a terminal, Ctrl-C already reaches the agent (same process group).
async fn forward_signals_until_exit(child: &mut tokio::process::Child) -> Result<u8, Hinted> {
    let mut signals = Signals::install(&[Sig::Term, Sig::Hup, Sig::Quit, Sig::Int])?;
    let tty = std::io::stdin().is_terminal();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|err| Hinted::new(format!("waiting for the agent failed: {err}")))?;
                use std::os::unix::process::ExitStatusExt;
                let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
                return Ok(u8::try_from(code).unwrap_or(1));
            }
            sig = signals.recv() => {
                // On a terminal, Ctrl-C already reached the agent (same process group).
                let forward = sig != Sig::Int || !tty;
                if forward && let Some(pid) = child.id() {
                    signal_child(pid, sig.to_nix());
                }
            }
        }
    }
}
