//! The supervisor: boots the pair in order with readiness and rollback, owns the children while
//! they run (it is their parent: it reaps them and sees a crash at once), and tears them down in
//! the stop order. The foreground `firma sidecar start` and the detached `firma __supervise` are
//! this same code.
//!
//! Boot order: take `stack.lock` → record the supervisor (`stack.pid`) → Authority in its own
//! process group → its `READY=1` → a real gRPC health check → Sidecar in its own process group
//! (given the Authority's bound URL) → its `READY=1` → TCP connect + `generated-firma-ca/`
//! material → publish `*.pid` and `*.listen`. Any failure: every spawned group is signalled,
//! reaped or proven gone, and the files this start created are removed.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::channel::{Notification, NotifyChannel};
use super::identity::Identity;
use super::lock::{StackLock, lock_error};
use super::probes::{self, ProbeTls};
use super::procs::signal_group;
use super::signals::Signals;
use super::spawn::{Member, component_exe, last_log_line, spawn};
use super::state::{Role, StackMeta, StateDir};
use crate::config::LoadedConfig;
use crate::config::dirs::ensure_private_dir;
use crate::config::schema::AuthorityMode;
use crate::error::Hinted;

/// Env var bounding each component's start-up (humantime, e.g. `30s`, `500ms`; plain seconds ok).
pub const READY_TIMEOUT_ENV: &str = "FIRMA_READY_TIMEOUT";
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace a child gets after SIGTERM when the supervisor tears the pair down (Ctrl-C, SIGTERM,
/// SIGHUP, a crashed sibling) before its process group is SIGKILLed.
pub const TEARDOWN_WINDOW: Duration = Duration::from_secs(10);
/// Grace during a rollback (nothing is serving yet).
pub const ROLLBACK_WINDOW: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed group to vanish before giving up (state is then kept).
const SETTLE: Duration = Duration::from_secs(2);

/// `FIRMA_READY_TIMEOUT`, or the default.
pub fn ready_timeout_from_env() -> Result<Duration, Hinted> {
    match std::env::var(READY_TIMEOUT_ENV) {
        Ok(v) if !v.trim().is_empty() => parse_timeout(v.trim()).ok_or_else(|| {
            Hinted::new(format!("{READY_TIMEOUT_ENV}={v} is not a duration"))
                .hint("use e.g. 30s, 500ms or a number of seconds")
        }),
        _ => Ok(DEFAULT_READY_TIMEOUT),
    }
}

fn parse_timeout(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(v).ok().filter(|d| !d.is_zero())
}

/// What `start` needs to know.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub config: LoadedConfig,
    pub state: StateDir,
    pub detached: bool,
    pub ready_timeout: Duration,
}

/// Where the running pair can be reached.
#[derive(Debug, Clone, Default)]
pub struct StackInfo {
    pub authority_url: String,
    pub authority_remote: bool,
    pub authority_listen: Option<String>,
    pub sidecar_listen: String,
}

/// Why supervision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A termination signal reached the supervisor.
    Signal(&'static str),
    /// `firma sidecar stop` asked for it.
    StopRequested,
    /// A child exited on its own: the other was torn down.
    Exited { role: Role, status: String },
}

/// A booted, ready pair owned by this process.
#[derive(Debug)]
pub struct Running {
    state: StateDir,
    lock: Option<StackLock>,
    authority: Option<Member>,
    sidecar: Option<Member>,
    /// Whether this start took over the state files (after checking no live process of an
    /// earlier stack owns them). Before that, a rollback must not touch them.
    claimed: bool,
    pub info: StackInfo,
}

/// Boot the pair; on any failure roll back and return the error.
pub async fn boot(opts: &StartOptions, signals: &mut Signals) -> Result<Running, Hinted> {
    let state = opts.state.clone();
    ensure_private_dir(state.path())?;
    let lock_path = state.lock_file();
    let lock =
        StackLock::try_acquire(&lock_path).map_err(|e| lock_error(e, &lock_path, state.path()))?;
    let mut running = Running {
        state,
        lock: Some(lock),
        authority: None,
        sidecar: None,
        claimed: false,
        info: StackInfo::default(),
    };
    match boot_inner(&mut running, opts, signals).await {
        Ok(()) => Ok(running),
        Err(err) => {
            tracing::error!(error = %err, "start failed; rolling back");
            if running.shutdown(ROLLBACK_WINDOW).await {
                Err(err)
            } else {
                let state_dir = running.state.path().display().to_string();
                Err(Hinted::new(format!(
                    "{}; rollback incomplete: a child could not be proven gone, state files kept",
                    err.message()
                ))
                .hint(format!("run `firma sidecar stop --state-dir {state_dir}`")))
            }
        }
    }
}

async fn boot_inner(
    running: &mut Running,
    opts: &StartOptions,
    signals: &mut Signals,
) -> Result<(), Hinted> {
    let state = running.state.clone();
    refuse_orphans(&state)?;
    // We hold the lock: whatever pid/listen files exist were left by a dead stack.
    running.claimed = true;
    state.remove_runtime_files();
    let me = Identity::current()
        .ok_or_else(|| Hinted::new("cannot read /proc/self/stat").hint("firma needs /proc"))?;
    state.write_process(Role::Supervisor, &me)?;

    let config = &opts.config.config;
    let config_path = &opts.config.path;
    let remote = config.authority.mode == AuthorityMode::Remote;
    let stop_hint = format!(
        "run `firma sidecar stop --state-dir {}` first",
        state.path().display()
    );
    let tls = ProbeTls {
        ca_cert: config.sidecar.authority.ca_cert.clone(),
    };
    let common_args = |sub: &str| -> Vec<OsString> {
        vec![
            sub.into(),
            "--config".into(),
            config_path.into(),
            "--state-dir".into(),
            state.path().into(),
        ]
    };

    // 1. The Authority (or a health check of the remote one).
    let authority_url = if remote {
        let url = config.authority.url.clone().ok_or_else(|| {
            Hinted::new(format!(
                "{}: [authority] mode = \"remote\" needs url",
                config_path.display()
            ))
            .hint("set [authority].url, or re-run `firma init --authority <URL>`")
        })?;
        running.info.authority_remote = true;
        state.write_meta(&meta(opts, "remote", &url))?;
        let deadline = Instant::now() + opts.ready_timeout;
        retry_probe(deadline, || {
            probes::grpc_health(&url, &tls, probe_timeout(deadline))
        })
        .await
        .map_err(|e| {
            Hinted::new(format!("authority: remote Authority is not healthy: {e}")).hint(format!(
                "check [authority].url in {} and that the Authority runs",
                config_path.display()
            ))
        })?;
        tracing::info!(url = %url, "remote authority healthy");
        url
    } else {
        let listen = config.authority.listen.ok_or_else(|| {
            Hinted::new(format!(
                "{}: [authority] mode = \"local\" needs listen",
                config_path.display()
            ))
            .hint("set [authority].listen, e.g. 127.0.0.1:50051")
        })?;
        precheck_bind(Role::Authority, listen, "[authority].listen", &stop_hint)?;
        let args = common_args("authority");
        let slot = &mut running.authority;
        let (member, bound, deadline) =
            boot_component(Role::Authority, &args, listen, slot, &state, opts, signals).await?;
        let url = crate::authority::client::local_url(&config.authority, bound);
        confirm(member, deadline, &state, signals, || {
            probes::grpc_health(&url, &tls, probe_timeout(deadline))
        })
        .await?;
        tracing::info!(listen = %bound, "authority ready");
        running.info.authority_listen = Some(bound.to_string());
        state.write_meta(&meta(opts, "local", &url))?;
        url
    };
    running.info.authority_url = authority_url.clone();

    // 2. The Sidecar, pointed at the Authority's actual address.
    let listen = config.sidecar.proxy.listen;
    precheck_bind(Role::Sidecar, listen, "[sidecar.proxy].listen", &stop_hint)?;
    let mut args = common_args("sidecar");
    args.extend(["--authority-url".into(), authority_url.clone().into()]);
    let slot = &mut running.sidecar;
    let (member, bound, deadline) =
        boot_component(Role::Sidecar, &args, listen, slot, &state, opts, signals).await?;
    let probe_state = state.clone();
    confirm(member, deadline, &state, signals, || {
        let state = probe_state.clone();
        async move {
            probes::tcp_accepts(bound, probe_timeout(deadline)).await?;
            let missing = probes::missing_ca_files(&state);
            match missing.first() {
                None => Ok(()),
                Some(path) => Err(format!("{} does not exist", path.display())),
            }
        }
    })
    .await?;
    tracing::info!(listen = %bound, "sidecar ready");
    running.info.sidecar_listen = bound.to_string();

    // 3. Publish: a pidfile exists only for a component that passed readiness.
    if let Some(authority) = &running.authority {
        state.write_process(Role::Authority, &authority.identity)?;
        if let Some(listen) = &running.info.authority_listen {
            state.write_listen(Role::Authority, listen)?;
        }
    }
    state.write_process(
        Role::Sidecar,
        &running.sidecar.as_ref().expect("sidecar").identity,
    )?;
    state.write_listen(Role::Sidecar, &running.info.sidecar_listen)?;
    Ok(())
}

/// Spawn one component with its own readiness socket, record its identity, and wait for its
/// `READY=1`. Returns the member, the address it reported, and the readiness deadline (the
/// confirming probe shares it).
async fn boot_component<'a>(
    role: Role,
    args: &[OsString],
    configured: SocketAddr,
    slot: &'a mut Option<Member>,
    state: &StateDir,
    opts: &StartOptions,
    signals: &mut Signals,
) -> Result<(&'a mut Member, SocketAddr, Instant), Hinted> {
    let channel = bind_channel(state, role)?;
    let exe = component_exe(role)?;
    let member = spawn(role, &exe, args, &state.log_file(role), channel.address())?;
    state.write_identity(role, &member.identity)?;
    tracing::info!(pid = member.identity.pid, "{} spawned", role.name());
    let member = slot.insert(member);
    let deadline = Instant::now() + opts.ready_timeout;
    let note = await_ready(
        member,
        &channel,
        deadline,
        opts.ready_timeout,
        state,
        signals,
    )
    .await?;
    drop(channel);
    let bound = reported_listen(role, &note, configured)?;
    Ok((member, bound, deadline))
}

fn meta(opts: &StartOptions, mode: &str, url: &str) -> StackMeta {
    StackMeta {
        authority_mode: mode.into(),
        authority_url: url.into(),
        config: opts.config.path.clone(),
        authority_ca_cert: opts.config.config.sidecar.authority.ca_cert.clone(),
        detached: opts.detached,
    }
}

/// A previous stack whose supervisor died may have left live children: booting beside them would
/// orphan them for good (their pidfiles overwritten), so refuse and point at `stop`.
fn refuse_orphans(state: &StateDir) -> Result<(), Hinted> {
    for role in [Role::Authority, Role::Sidecar] {
        if let Some(id) = state.read_identity(role)
            && super::procs::group_present(&id)
        {
            return Err(Hinted::new(format!(
                "{}: a previous {} (pid {}) is still running without its supervisor",
                role.name(),
                role.name(),
                id.pid
            ))
            .hint(format!(
                "run `firma sidecar stop --state-dir {}` first",
                state.path().display()
            )));
        }
    }
    Ok(())
}

/// A fixed listen address that is already taken fails here with a clear message, before a child
/// is spawned only to die on it. (The child's own bind error is still caught if we lose a race.)
fn precheck_bind(role: Role, addr: SocketAddr, key: &str, stop_hint: &str) -> Result<(), Hinted> {
    if addr.port() == 0 {
        return Ok(());
    }
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Err(Hinted::new(format!(
            "{}: address {addr} already in use",
            role.name()
        ))
        .hint(format!("{stop_hint}, or change {key} in firma.toml"))),
        Err(err) => Err(
            Hinted::new(format!("{}: cannot bind {addr}: {err}", role.name()))
                .hint(format!("change {key} in firma.toml")),
        ),
    }
}

fn bind_channel(state: &StateDir, role: Role) -> Result<NotifyChannel, Hinted> {
    NotifyChannel::bind(state, role.name()).map_err(|err| {
        Hinted::new(format!(
            "{}: cannot create the readiness socket in {}: {err}",
            role.name(),
            state.path().display()
        ))
        .hint("check that the state directory is writable")
    })
}

fn probe_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(50), Duration::from_secs(2))
}

fn reported_listen(
    role: Role,
    note: &Notification,
    configured: SocketAddr,
) -> Result<SocketAddr, Hinted> {
    match note.listen.as_deref() {
        Some(text) => text.trim().parse().map_err(|_| {
            Hinted::new(format!(
                "{}: reported an unparseable listen address {text:?}",
                role.name()
            ))
            .hint("this is a bug in firma; please report it")
        }),
        None if configured.port() != 0 => Ok(configured),
        None => Err(Hinted::new(format!(
            "{}: reported READY=1 without X_FIRMA_LISTEN, and its configured port is 0",
            role.name()
        ))
        .hint("this is a bug in firma; please report it")),
    }
}

fn log_hint(state: &StateDir, role: Role) -> String {
    format!("see {}", state.log_file(role).display())
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => Signal::try_from(sig).map_or_else(
                |_| format!("signal {sig}"),
                |s| format!("signal {}", s.as_str()),
            ),
            _ => s.to_string(),
        },
        Err(err) => format!("wait failed: {err}"),
    }
}

fn exited_early(role: Role, status: &std::io::Result<ExitStatus>, state: &StateDir) -> Hinted {
    let last = last_log_line(&state.log_file(role))
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    let mut err = Hinted::new(format!(
        "{}: exited before becoming ready ({}){last}",
        role.name(),
        describe(status)
    ));
    let hint = if last.contains("in use") {
        format!(
            "run `firma sidecar stop --state-dir {}` or change the listen address in firma.toml; {}",
            state.path().display(),
            log_hint(state, role)
        )
    } else {
        log_hint(state, role)
    };
    err = err.hint(hint);
    err
}

/// Wait for the child's `READY=1`, its early exit, the deadline, or an interrupt.
async fn await_ready(
    member: &mut Member,
    channel: &NotifyChannel,
    deadline: Instant,
    timeout: Duration,
    state: &StateDir,
    signals: &mut Signals,
) -> Result<Notification, Hinted> {
    let role = member.role;
    loop {
        tokio::select! {
            note = channel.recv() => match note {
                Ok(note) if note.ready => return Ok(note),
                Ok(note) => {
                    if let Some(status) = note.status {
                        tracing::info!(component = role.name(), status = %status, "status");
                    }
                }
                Err(err) => {
                    return Err(Hinted::new(format!("{}: readiness socket failed: {err}", role.name())));
                }
            },
            status = member.child.wait() => return Err(exited_early(role, &status, state)),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Hinted::new(format!(
                    "{}: did not become ready within {} (no READY=1 on its NOTIFY_SOCKET)",
                    role.name(),
                    humantime::format_duration(timeout)
                ))
                .hint(format!("{}; raise {READY_TIMEOUT_ENV} if it is only slow", log_hint(state, role))));
            }
            sig = signals.recv() => {
                return Err(Hinted::new(format!("start interrupted by {sig} while waiting for the {}", role.name()))
                    .hint("nothing was left running"));
            }
        }
    }
}

/// After `READY=1`, confirm from outside; retried until the deadline (a probe may race the
/// first accept), failing early if the child dies.
async fn confirm<F, Fut>(
    member: &mut Member,
    deadline: Instant,
    state: &StateDir,
    signals: &mut Signals,
    mut probe: F,
) -> Result<(), Hinted>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let role = member.role;
    loop {
        let result = tokio::select! {
            r = probe() => r,
            status = member.child.wait() => return Err(exited_early(role, &status, state)),
            sig = signals.recv() => {
                return Err(Hinted::new(format!("start interrupted by {sig} while probing the {}", role.name()))
                    .hint("nothing was left running"));
            }
        };
        let last = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Hinted::new(format!(
                "{}: reported ready, but the readiness probe failed: {last}",
                role.name()
            ))
            .hint(log_hint(state, role)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn retry_probe<F, Fut>(deadline: Instant, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    loop {
        let last = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Running {
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Supervise until a signal, a stop request, or a child's exit; then tear down (stop order)
    /// and clean up. Returns why it ended.
    pub async fn supervise(mut self, signals: &mut Signals) -> (Ended, bool) {
        let ended = {
            let authority = &mut self.authority;
            let sidecar = &mut self.sidecar;
            tokio::select! {
                sig = signals.recv() => Ended::Signal(sig),
                (role, status) = wait_member(authority) => self_exit(&self.state, role, &status),
                (role, status) = wait_member(sidecar) => self_exit(&self.state, role, &status),
            }
        };
        match &ended {
            Ended::Signal(sig) => tracing::info!(signal = sig, "received; stopping the pair"),
            Ended::StopRequested => tracing::info!("stop requested; stopping the pair"),
            Ended::Exited { role, status } => tracing::error!(
                component = role.name(),
                status = %status,
                "exited unexpectedly; tearing the other component down"
            ),
        }
        // A second Ctrl-C (or SIGTERM) during the graceful window means "now": hard-kill.
        // Not while `firma sidecar stop` runs: it signals us as part of its own order.
        let stop_marker = self.state.stop_marker();
        let graceful = {
            let shutdown = self.shutdown(TEARDOWN_WINDOW);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    clean = &mut shutdown => break Some(clean),
                    sig = signals.recv() => {
                        if stop_marker.exists() {
                            continue;
                        }
                        tracing::warn!(signal = sig, "second signal: hard-killing the pair");
                        break None;
                    }
                }
            }
        };
        let clean = match graceful {
            Some(clean) => clean,
            None => self.shutdown(Duration::ZERO).await,
        };
        (ended, clean)
    }

    /// Stop the children in the stop order (Sidecar first, so the Authority's graceful shutdown
    /// is not held up by its streams), then remove the runtime files and the lock. Files are
    /// kept if a child could not be proven gone, so `firma sidecar stop` can retry.
    pub async fn shutdown(&mut self, window: Duration) -> bool {
        let mut clean = true;
        for member in [self.sidecar.as_mut(), self.authority.as_mut()]
            .into_iter()
            .flatten()
        {
            clean &= stop_member(member, window).await;
        }
        if clean && self.claimed {
            self.state.remove_runtime_files();
        } else if !clean {
            tracing::error!(
                "a component could not be proven gone; state files kept for `firma sidecar stop`"
            );
        }
        if let Some(lock) = self.lock.take() {
            if clean {
                lock.release();
            } else {
                lock.keep_file();
            }
        }
        tracing::info!(clean, "stack stopped");
        clean
    }
}

fn self_exit(state: &StateDir, role: Role, status: &std::io::Result<ExitStatus>) -> Ended {
    if state.stop_marker().exists() {
        Ended::StopRequested
    } else {
        Ended::Exited {
            role,
            status: describe(status),
        }
    }
}

async fn wait_member(member: &mut Option<Member>) -> (Role, std::io::Result<ExitStatus>) {
    match member {
        Some(m) => (m.role, m.child.wait().await),
        None => std::future::pending().await,
    }
}

/// SIGTERM the member's group, wait up to `window` for the leader to exit and the group to empty,
/// then SIGKILL the group and wait up to [`SETTLE`]. We are the parent: the leader is reaped.
async fn stop_member(member: &mut Member, window: Duration) -> bool {
    let name = member.role.name();
    if signal_group(&member.identity, Signal::SIGTERM) {
        tracing::info!(
            component = name,
            pid = member.identity.pid,
            "SIGTERM sent to process group"
        );
    }
    if wait_gone(member, Instant::now() + window).await {
        return true;
    }
    tracing::warn!(
        component = name,
        "still running after {window:?}; SIGKILL to its process group"
    );
    signal_group(&member.identity, Signal::SIGKILL);
    let gone = wait_gone(member, Instant::now() + SETTLE).await;
    if !gone {
        tracing::error!(
            component = name,
            pid = member.identity.pid,
            "did not vanish after SIGKILL"
        );
    }
    gone
}

async fn wait_gone(member: &mut Member, until: Instant) -> bool {
    loop {
        let leader_done = matches!(member.child.try_wait(), Ok(Some(_)) | Err(_));
        if leader_done && member.identity.live_group_members().is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        if leader_done {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            tokio::select! {
                _ = member.child.wait() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_seconds_or_humantime() {
        assert_eq!(parse_timeout("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_timeout("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("0"), None);
        assert_eq!(parse_timeout("soon"), None);
    }
}
