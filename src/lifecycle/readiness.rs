//! Booting one component and waiting until it really serves: spawn it with its own readiness
//! socket, wait for its `READY=1` (or its early exit, the deadline, an interrupt), then confirm
//! from outside with a probe.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::time::Instant;

use super::channel::{Notification, NotifyChannel};
use super::clash::address_in_use;
use super::spawn::{Member, component_exe, last_log_line, spawn};
use super::state::{Role, StateDir};
use crate::error::Hinted;
use crate::platform::process::ExitCause;
use crate::platform::signals::{Sig, Signals};

/// Env var bounding each component's start-up (humantime, e.g. `30s`, `500ms`; plain seconds ok).
pub const READY_TIMEOUT_ENV: &str = "FIRMA_READY_TIMEOUT";

/// Why a boot step did not succeed.
#[derive(Debug)]
pub enum BootFail {
    /// The component failed (or could not be started); the error says why.
    Failed(Hinted),
    /// A termination signal arrived while waiting.
    Interrupted { signal: Sig, message: Hinted },
}

impl From<Hinted> for BootFail {
    fn from(err: Hinted) -> Self {
        Self::Failed(err)
    }
}

impl BootFail {
    pub fn into_hinted(self) -> Hinted {
        match self {
            Self::Failed(err) | Self::Interrupted { message: err, .. } => err,
        }
    }
}

fn interrupted(signal: Sig, what: String) -> BootFail {
    BootFail::Interrupted {
        signal,
        message: Hinted::new(format!("start interrupted by {signal} {what}"))
            .hint("nothing was left running"),
    }
}

/// Spawn one component with its own readiness socket, record its identity, and wait for its
/// `READY=1`. Returns the member, the address it reported, and the readiness deadline (the
/// confirming probe shares it).
pub async fn boot_component<'a>(
    role: Role,
    args: &[OsString],
    configured: SocketAddr,
    slot: &'a mut Option<Member>,
    state: &StateDir,
    ready_timeout: Duration,
    signals: &mut Signals,
) -> Result<(&'a mut Member, SocketAddr, Instant), BootFail> {
    let channel = bind_channel(state, role)?;
    let exe = component_exe(role)?;
    let member = spawn(role, &exe, args, state, channel.address())?;
    state.write_identity(role, &member.identity)?;
    tracing::info!(pid = member.identity.pid, "{} spawned", role.name());
    let member = slot.insert(member);
    let deadline = Instant::now() + ready_timeout;
    let wait = ReadyWait {
        deadline,
        timeout: ready_timeout,
        configured,
    };
    let note = await_ready(member, &channel, &wait, state, signals).await?;
    drop(channel);
    let bound = reported_listen(role, &note, configured)?;
    Ok((member, bound, deadline))
}

/// A fixed listen address that is already taken fails here with a clear message naming the
/// holder, before a child is spawned only to die on it. (The child's own bind error is still
/// caught if we lose a race.)
pub fn precheck_bind(role: Role, addr: SocketAddr) -> Result<(), Hinted> {
    let key = listen_key(role);
    if addr.port() == 0 {
        return Ok(());
    }
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            Err(address_in_use(role, addr, key))
        }
        Err(err) => Err(
            Hinted::new(format!("{}: cannot bind {addr}: {err}", role.name()))
                .hint(format!("change {key} in firma.toml")),
        ),
    }
}

/// The config key of `role`'s listen address.
fn listen_key(role: Role) -> &'static str {
    match role {
        Role::Authority => "[authority].listen",
        _ => "[sidecar.proxy].listen",
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

pub fn probe_timeout(deadline: Instant) -> Duration {
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

pub fn log_hint(state: &StateDir, role: Role) -> String {
    format!("see {}", state.log_file(role).display())
}

/// How a wait for a child ended, in words (`exit status 3`, `signal SIGKILL`).
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => ExitCause::of(*s).to_string(),
        Err(err) => format!("wait failed: {err}"),
    }
}

fn exited_early(
    role: Role,
    status: &std::io::Result<ExitStatus>,
    state: &StateDir,
    configured: Option<SocketAddr>,
) -> Hinted {
    let last = last_log_line(&state.log_file(role))
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    let message = format!(
        "{}: exited before becoming ready ({}){last}",
        role.name(),
        describe(status)
    );
    let clash = configured.filter(|addr| addr.port() != 0 && last.contains("in use"));
    let hint = if let Some(addr) = clash {
        // Lost the race after the precheck: say who holds it now.
        let clash = address_in_use(role, addr, listen_key(role));
        format!(
            "{}; {}",
            clash.hint_text().unwrap_or_default(),
            log_hint(state, role)
        )
    } else {
        log_hint(state, role)
    };
    Hinted::new(message).hint(hint)
}

/// What a readiness wait is bounded by.
struct ReadyWait {
    deadline: Instant,
    timeout: Duration,
    /// The configured listen address (port 0: the OS picks).
    configured: SocketAddr,
}

/// Wait for the child's `READY=1`, its early exit, the deadline, or an interrupt.
async fn await_ready(
    member: &mut Member,
    channel: &NotifyChannel,
    wait: &ReadyWait,
    state: &StateDir,
    signals: &mut Signals,
) -> Result<Notification, BootFail> {
    let role = member.role;
    let (deadline, timeout) = (wait.deadline, wait.timeout);
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
                    return Err(Hinted::new(format!("{}: readiness socket failed: {err}", role.name())).into());
                }
            },
            status = member.child.wait() => {
                return Err(exited_early(role, &status, state, Some(wait.configured)).into());
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Hinted::new(format!(
                    "{}: did not become ready within {} (no READY=1 on its NOTIFY_SOCKET)",
                    role.name(),
                    humantime::format_duration(timeout)
                ))
                .hint(format!("{}; raise {READY_TIMEOUT_ENV} if it is only slow", log_hint(state, role))).into());
            }
            sig = signals.recv() => {
                return Err(interrupted(sig, format!("while waiting for the {}", role.name())));
            }
        }
    }
}

/// After `READY=1`, confirm from outside; retried until the deadline (a probe may race the
/// first accept), failing early if the child dies.
pub async fn confirm<F, Fut>(
    member: &mut Member,
    deadline: Instant,
    state: &StateDir,
    signals: &mut Signals,
    mut probe: F,
) -> Result<(), BootFail>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let role = member.role;
    loop {
        let result = tokio::select! {
            r = probe() => r,
            status = member.child.wait() => {
                return Err(exited_early(role, &status, state, None).into());
            }
            sig = signals.recv() => {
                return Err(interrupted(sig, format!("while probing the {}", role.name())));
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
            .hint(log_hint(state, role))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retry `probe` until it passes or the deadline passes.
pub async fn retry_probe<F, Fut>(deadline: Instant, mut probe: F) -> Result<(), String>
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
