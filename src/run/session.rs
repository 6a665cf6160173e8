//! One `firma run`, start to finish: project, daemon, capability, relay, the agent (sandboxed
//! or not), token refresh, signals, exit status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::layout::{self, RunPaths};
use super::relay::{self, CurrentToken, ProxyCredentials};
use super::sandbox::{self, SandboxMode};
use super::{Failure, Notices, env, refresh, signals};
use crate::authority::client::{CapabilityRequest, Target};
use crate::config::dirs::{StateDirSource, resolve_data_dir, trusted_state_dir};
use crate::config::providers::{DEFAULT_PROVIDER, find_agent};
use crate::config::scaffold::{AuthorityChoice, ScaffoldOptions, scaffold};
use crate::config::schema::{DEFAULT_AUTHORITY_LISTEN, DEFAULT_SIDECAR_LISTEN};
use crate::config::{Discovery, LoadedConfig};
use crate::error::Hinted;
use crate::lifecycle::occupancy::project_mismatch;
use crate::state_dir::StateDir;

/// How many refused relay requests are reported one by one.
const REFUSALS_SHOWN: usize = 10;

/// What `firma run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub agent: String,
    /// What follows `--`; empty: the agent's usual executable.
    pub command: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// `--sandbox`; `None`: `[run] sandbox`.
    pub sandbox: Option<SandboxMode>,
}

/// A failure before (or instead of) the agent's own exit status.
#[derive(Debug)]
pub struct RunError {
    pub failure: Failure,
    pub error: Hinted,
}

fn setup(error: Hinted) -> RunError {
    RunError {
        failure: Failure::Error,
        error,
    }
}

fn not_found(error: Hinted) -> RunError {
    RunError {
        failure: Failure::CommandNotFound,
        error,
    }
}

/// Run the agent; `Ok` carries its exit status.
pub async fn execute(options: RunOptions, notices: Arc<dyn Notices>) -> Result<u8, RunError> {
    let (state, source) = trusted_state_dir(options.state_dir.as_deref()).map_err(setup)?;
    let command = resolve_command(&options).map_err(not_found)?;
    let loaded =
        ensure_project(&options.agent, options.config.clone(), &state, &*notices).map_err(setup)?;
    // The stack on this state dir must serve this project, unless the operator named the state
    // dir explicitly (the rule of `cli::project`, which `firma token` applies too).
    if source != StateDirSource::Flag
        && let Some(mismatch) = project_mismatch(&state, &loaded.path)
    {
        return Err(setup(mismatch.into_error()));
    }
    let mode = options.sandbox.unwrap_or(loaded.config.run.sandbox);

    let sidecar = match super::sidecar_running(&state) {
        Some(addr) => addr,
        None => {
            notices.info(&format!(
                "daemon not running: starting it (firma sidecar start --detach --state-dir {})",
                state.path().display()
            ));
            super::start_daemon(&loaded.path, &state).map_err(setup)?;
            super::sidecar_running(&state).ok_or_else(|| {
                setup(
                    Hinted::new("the daemon started but its sidecar does not answer").hint(
                        "check `firma sidecar status` and sidecar.log in the state directory",
                    ),
                )
            })?
        }
    };

    let sandbox_id = (mode != SandboxMode::Off).then(new_sandbox_id);
    let project = &loaded.config.project;
    let authority = Target::locate(&state, Some(&loaded)).map_err(setup)?;
    let request = CapabilityRequest {
        agent: options.agent.clone(),
        actions: project.actions.clone(),
        scope: "*".to_string(),
        session_id: uuid::Uuid::now_v7().to_string(),
        sandbox_id: sandbox_id.clone().unwrap_or_default(),
        ttl: project.token_ttl,
    };
    let issued = authority.issue(&request).await.map_err(setup)?;
    notices.info(&format!(
        "capability {} for agent {} (session {}, expires {})",
        issued.token_id,
        options.agent,
        request.session_id,
        issued.expires_at.format("%H:%M:%SZ")
    ));

    let token = CurrentToken::new(issued.token.clone());
    let credentials = ProxyCredentials::generate();
    let (bundle, ca_cert) = env::write_ca_bundle(&state).map_err(setup)?;
    // Variables that are not UTF-8 cannot travel in the sandbox's spec; they are dropped.
    let inherited = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let agent_env = env::agent_env(inherited, &bundle, &ca_cert);
    let relay = Relay {
        sidecar,
        token: token.clone(),
        credentials,
        notices: notices.clone(),
        state: state.clone(),
        published: std::sync::Mutex::new(None),
    };

    let mut child = match (mode, sandbox_id) {
        (SandboxMode::Off, _) | (_, None) => relay.spawn_unconfined(&command, agent_env).await?,
        (mode, Some(id)) => {
            let data = resolve_data_dir().ok();
            let paths = RunPaths {
                loaded: &loaded,
                state: &state,
                data: data.as_ref(),
                agent: &options.agent,
                cwd: std::env::current_dir().map_err(|err| {
                    setup(Hinted::new(format!(
                        "cannot read the working directory: {err}"
                    )))
                })?,
                home: std::env::var_os("HOME").map(PathBuf::from),
                runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
                ca_files: [bundle.clone(), ca_cert.clone()],
            };
            match relay
                .spawn_sandboxed(mode, &id, &command, agent_env, &paths)
                .await?
            {
                Spawned::Agent(child) => child,
                Spawned::LauncherExited(code) => return Ok(code),
            }
        }
    };
    tokio::spawn(refresh::refresh_forever(
        authority, request, issued, token, notices,
    ));
    signals::forward_signals_until_exit(&mut child)
        .await
        .map_err(setup)
}

/// A short random id naming one sandbox in audit records.
fn new_sandbox_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// The relay's parts, and the two ways of starting the agent behind it.
struct Relay {
    sidecar: SocketAddr,
    token: CurrentToken,
    credentials: ProxyCredentials,
    notices: Arc<dyn Notices>,
    state: StateDir,
    /// A loopback relay's published address (the Sidecar never forwards to it); removed with
    /// the relay.
    published: std::sync::Mutex<Option<relay::Published>>,
}

enum Spawned {
    Agent(tokio::process::Child),
    /// The launcher refused or failed (it said why); its status is the run's.
    LauncherExited(u8),
}

impl Relay {
    fn serve(&self, listener: std::net::TcpListener) -> Result<(), RunError> {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|err| setup(Hinted::new(format!("cannot start the local relay: {err}"))))?;
        let notices = self.notices.clone();
        let refusals = AtomicUsize::new(0);
        relay::serve(
            listener,
            self.sidecar,
            self.token.clone(),
            self.credentials.clone(),
            Arc::new(move |peer| {
                // Someone hammering the relay must not flood the operator's terminal.
                match refusals.fetch_add(1, Ordering::Relaxed) {
                    n if n < REFUSALS_SHOWN => notices.warn(&format!(
                        "relay refused a request from {peer}: it lacks this run's proxy \
                         credentials (only the agent firma run started may use the relay)"
                    )),
                    REFUSALS_SHOWN => notices.warn("relay: further refused requests are not shown"),
                    _ => {}
                }
            }),
        );
        Ok(())
    }

    /// `--sandbox off`: the agent runs as the operator, the relay on a loopback port.
    async fn spawn_unconfined(
        &self,
        command: &[String],
        agent_env: Vec<(String, String)>,
    ) -> Result<tokio::process::Child, RunError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|err| setup(Hinted::new(format!("cannot start the local relay: {err}"))))?;
        let addr = listener
            .local_addr()
            .map_err(|err| setup(Hinted::new(format!("cannot start the local relay: {err}"))))?;
        let port = addr.port();
        let published = relay::publish(&self.state, addr).map_err(setup)?;
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some(published);
        self.serve(listener)?;
        tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .envs(agent_env)
            .envs(env::proxy_env(&self.credentials.proxy_url(port)))
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                not_found(
                    Hinted::new(format!("cannot run {:?}: {err}", command[0]))
                        .hint("check that the command exists and is executable (is it on PATH?)"),
                )
            })
    }

    #[cfg(target_os = "linux")]
    async fn spawn_sandboxed(
        &self,
        mode: SandboxMode,
        id: &str,
        command: &[String],
        agent_env: Vec<(String, String)>,
        paths: &RunPaths<'_>,
    ) -> Result<Spawned, RunError> {
        if let Some(home) = &paths.home {
            layout::ensure_agent_dirs(paths.agent, home);
        }
        let layout = sandbox::plan(&layout::plan_inputs(paths)).map_err(setup)?;
        let spec = sandbox::Spec {
            mode,
            command: command.to_vec(),
            cwd: paths.cwd.clone(),
            env: agent_env,
            proxy_userinfo: self.credentials.userinfo(),
            layout,
            simulate_missing: sandbox::Facility::simulated_missing(),
        };
        let started = match sandbox::start(spec).await.map_err(setup)? {
            Ok(started) => started,
            Err(mut launcher) => {
                let status = launcher.wait().await.map_err(|err| {
                    setup(Hinted::new(format!(
                        "waiting for the sandbox launcher: {err}"
                    )))
                })?;
                return Ok(Spawned::LauncherExited(signals::exit_code(status)));
            }
        };
        self.serve(started.listener)?;
        let obtained = &started.obtained;
        match obtained.degraded_warning() {
            Some(warning) => self.notices.warn(&warning),
            None => self.notices.info(&format!(
                "sandbox {id}: user, network and mount namespaces, Landlock ABI {}",
                obtained.landlock_abi.unwrap_or_default()
            )),
        }
        Ok(Spawned::Agent(started.child))
    }

    #[cfg(not(target_os = "linux"))]
    async fn spawn_sandboxed(
        &self,
        mode: SandboxMode,
        _id: &str,
        command: &[String],
        agent_env: Vec<(String, String)>,
        _paths: &RunPaths<'_>,
    ) -> Result<Spawned, RunError> {
        let reason = "the sandbox is built on Linux facilities; this platform is not sandboxed";
        if mode == SandboxMode::Required {
            return Err(setup(
                Hinted::new(format!("--sandbox required: {reason}"))
                    .hint("use --sandbox off to run the agent unconfined"),
            ));
        }
        self.notices.warn(reason);
        self.spawn_unconfined(command, agent_env)
            .await
            .map(Spawned::Agent)
    }
}

/// The command to run: what follows `--`, else the agent's usual executable.
fn resolve_command(options: &RunOptions) -> Result<Vec<String>, Hinted> {
    if !options.command.is_empty() {
        return Ok(options.command.clone());
    }
    match find_agent(&options.agent).and_then(|a| a.command) {
        Some(exe) => Ok(vec![exe.to_string()]),
        None => Err(
            Hinted::new(format!("no default command for agent {:?}", options.agent)).hint(format!(
                "pass it after --, e.g. firma run {} -- python3 agent.py",
                options.agent
            )),
        ),
    }
}

/// The discovered project, or the same scaffold `firma init --yes` writes, in the working directory.
fn ensure_project(
    agent: &str,
    config: Option<PathBuf>,
    state: &StateDir,
    notices: &dyn Notices,
) -> Result<LoadedConfig, Hinted> {
    let discovery = Discovery::new(config);
    if let Some(loaded) = discovery.load_optional()? {
        return Ok(loaded);
    }
    notices.info(&format!(
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
        audit_dir: None,
    })?;
    discovery.load()
}
