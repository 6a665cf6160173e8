//! The supervisor: boots the pair in order with readiness and rollback, owns the children while
//! they run (it is their parent: it reaps them and sees a crash at once), records how each one
//! ended, restarts a failed one when `[sidecar.supervise] restart = "on-failure"`, and tears
//! them down in the stop order. The foreground `firma sidecar start` and the detached
//! `firma __supervise` are this same code ([`run`]).
//!
//! Boot order: take `stack.lock` → record the supervisor (`stack.pid`) → Authority in its own
//! process group → its `READY=1` → a real gRPC health check → Sidecar in its own process group
//! (given the Authority's bound URL) → its `READY=1` → TCP connect + `generated-firma-ca/`
//! material → publish `*.pid` and `*.listen`. Any failure: every spawned group is signalled,
//! reaped or proven gone, and the files this start created are removed.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::time::Duration;

use tokio::time::Instant;

use super::channel::Notification;
use super::exits::{ExitRecord, now_rfc3339};
use super::lock::{StackLock, lock_error};
use super::probes::{self, ProbeTls};
use super::readiness::{
    BootFail, READY_TIMEOUT_ENV, boot_component, confirm, describe, precheck_bind, probe_timeout,
    retry_probe,
};
use super::spawn::{Member, last_log_line};
use super::state::{Role, StackMeta, StateDir};
use super::teardown::{stop_member, wait_member};
use crate::config::LoadedConfig;
use crate::config::dirs::ensure_private_dir;
use crate::config::schema::{AuthorityMode, RestartPolicy, SuperviseConfig};
use crate::error::Hinted;
use crate::platform::identity::Identity;
use crate::platform::process::ExitCause;
use crate::platform::signals::{Sig, Signals};

pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace a child gets after SIGTERM when the supervisor tears the pair down (Ctrl-C, SIGTERM,
/// SIGHUP, a crashed sibling) before its process group is SIGKILLed.
pub const TEARDOWN_WINDOW: Duration = Duration::from_secs(10);
/// Grace during a rollback (nothing is serving yet).
pub const ROLLBACK_WINDOW: Duration = Duration::from_secs(2);

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

/// The signals a supervisor stops on. A detached one has no terminal: a stray SIGHUP must not
/// take the daemon down.
pub fn install_signals(detached: bool) -> Result<Signals, Hinted> {
    let signals = Signals::install(Sig::SHUTDOWN)?;
    Ok(if detached {
        signals.ignore(
            Sig::Hup,
            "the detached supervisor has no terminal; use `firma sidecar stop`",
        )
    } else {
        signals
    })
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
    Signal(Sig),
    /// `firma sidecar stop` asked for it.
    StopRequested,
    /// A child exited on its own and was not (or no longer) restarted: the other was torn down.
    Exited {
        role: Role,
        status: String,
        /// Set when `restart = "on-failure"` gave up after this many restarts.
        gave_up_after: Option<u32>,
    },
}

/// How a whole run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub ended: Ended,
    /// Every child was proven gone and the runtime files were removed.
    pub clean: bool,
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

/// Boot, tell whoever waits (systemd or the `--detach` launcher) `READY=1`, call `on_ready`,
/// supervise until a signal, `stop`, or a child's end, and tear down. A failed start is reported
/// to the waiter (after its rollback) and returned.
pub async fn run(
    opts: &StartOptions,
    signals: &mut Signals,
    on_ready: impl FnOnce(&StackInfo, &StateDir),
) -> Result<Finished, Hinted> {
    let running = match boot(opts, signals).await {
        Ok(running) => running,
        Err(err) => {
            let _ = Notification::start_failed(&err).send();
            return Err(err);
        }
    };
    let info = running.info.clone();
    let _ = Notification::stack_ready(&info.sidecar_listen, &info.authority_url).send();
    on_ready(&info, &running.state);
    let finished = running.supervise(opts, signals).await;
    let _ = Notification::stopping().send();
    Ok(finished)
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
    match running.boot_pair(opts, signals).await {
        Ok(()) => Ok(running),
        Err(fail) => {
            let err = fail.into_hinted();
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

fn meta(opts: &StartOptions, mode: &str, url: &str) -> StackMeta {
    StackMeta {
        authority_mode: mode.into(),
        authority_url: url.into(),
        config: opts.config.path.clone(),
        project: opts.config.project_name(),
        authority_ca_cert: opts.config.config.sidecar.authority.ca_cert.clone(),
        detached: opts.detached,
    }
}

/// A previous stack whose supervisor died may have left live children: booting beside them would
/// orphan them for good (their pidfiles overwritten), so refuse and point at `stop`.
fn refuse_orphans(state: &StateDir) -> Result<(), Hinted> {
    for role in [Role::Authority, Role::Sidecar] {
        if let Some(id) = state.read_identity(role)
            && crate::platform::process::group_present(&id)
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

impl Running {
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    async fn boot_pair(
        &mut self,
        opts: &StartOptions,
        signals: &mut Signals,
    ) -> Result<(), BootFail> {
        let state = self.state.clone();
        refuse_orphans(&state)?;
        // We hold the lock: whatever pid/listen files exist were left by a dead stack.
        self.claimed = true;
        state.remove_runtime_files();
        state.reset_exits();
        let me = Identity::current()
            .ok_or_else(|| Hinted::new("cannot read /proc/self/stat").hint("firma needs /proc"))?;
        state.write_process(Role::Supervisor, &me)?;
        self.boot_authority(opts, signals).await?;
        self.boot_sidecar(opts, signals).await?;
        Ok(())
    }

    /// The arguments both children get: the exact config file and the state dir.
    fn child_args(&self, opts: &StartOptions, sub: &str) -> Vec<OsString> {
        vec![
            sub.into(),
            "--config".into(),
            opts.config.path.clone().into(),
            "--state-dir".into(),
            self.state.path().into(),
        ]
    }

    /// The Authority (or a health check of the remote one); publishes its files when it runs.
    async fn boot_authority(
        &mut self,
        opts: &StartOptions,
        signals: &mut Signals,
    ) -> Result<(), BootFail> {
        let state = self.state.clone();
        let config = &opts.config.config;
        let config_path = &opts.config.path;
        let tls = ProbeTls {
            ca_cert: config.sidecar.authority.ca_cert.clone(),
        };
        if config.authority.mode == AuthorityMode::Remote {
            let url = config.authority.url.clone().ok_or_else(|| {
                Hinted::new(format!(
                    "{}: [authority] mode = \"remote\" needs url",
                    config_path.display()
                ))
                .hint("set [authority].url, or re-run `firma init --authority <URL>`")
            })?;
            self.info.authority_remote = true;
            state.write_meta(&meta(opts, "remote", &url))?;
            let deadline = Instant::now() + opts.ready_timeout;
            retry_probe(deadline, || {
                probes::grpc_health(&url, &tls, probe_timeout(deadline))
            })
            .await
            .map_err(|e| {
                Hinted::new(format!("authority: remote Authority is not healthy: {e}")).hint(
                    format!(
                        "check [authority].url in {} and that the Authority runs",
                        config_path.display()
                    ),
                )
            })?;
            tracing::info!(url = %url, "remote authority healthy");
            self.info.authority_url = url;
            return Ok(());
        }
        let listen = config.authority.listen.ok_or_else(|| {
            Hinted::new(format!(
                "{}: [authority] mode = \"local\" needs listen",
                config_path.display()
            ))
            .hint("set [authority].listen, e.g. 127.0.0.1:50051")
        })?;
        precheck_bind(Role::Authority, listen)?;
        let args = self.child_args(opts, "authority");
        let slot = &mut self.authority;
        let (member, bound, deadline) = boot_component(
            Role::Authority,
            &args,
            listen,
            slot,
            &state,
            opts.ready_timeout,
            signals,
        )
        .await?;
        let url = crate::authority::client::local_url(&config.authority, bound);
        confirm(member, deadline, &state, signals, || {
            probes::grpc_health(&url, &tls, probe_timeout(deadline))
        })
        .await?;
        tracing::info!(listen = %bound, "authority ready");
        state.write_meta(&meta(opts, "local", &url))?;
        state.write_process(Role::Authority, &member.identity)?;
        state.write_listen(Role::Authority, &bound.to_string())?;
        self.info.authority_listen = Some(bound.to_string());
        self.info.authority_url = url;
        Ok(())
    }

    /// The Sidecar, pointed at the Authority's actual address; publishes its files when ready.
    async fn boot_sidecar(
        &mut self,
        opts: &StartOptions,
        signals: &mut Signals,
    ) -> Result<(), BootFail> {
        let state = self.state.clone();
        let listen = opts.config.config.sidecar.proxy.listen;
        precheck_bind(Role::Sidecar, listen)?;
        let mut args = self.child_args(opts, "sidecar");
        args.extend([
            "--authority-url".into(),
            self.info.authority_url.clone().into(),
        ]);
        let slot = &mut self.sidecar;
        let (member, bound, deadline) = boot_component(
            Role::Sidecar,
            &args,
            listen,
            slot,
            &state,
            opts.ready_timeout,
            signals,
        )
        .await?;
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
        // A pidfile exists only for a component that passed readiness.
        state.write_process(Role::Sidecar, &member.identity)?;
        state.write_listen(Role::Sidecar, &bound.to_string())?;
        self.info.sidecar_listen = bound.to_string();
        Ok(())
    }

    /// Supervise until a signal, a stop request, or a child's end that is not restarted; then
    /// tear down (stop order) and clean up.
    pub async fn supervise(mut self, opts: &StartOptions, signals: &mut Signals) -> Finished {
        let policy = opts.config.config.sidecar.supervise.clone();
        let mut restarts = RestartHistory::default();
        let ended = loop {
            let event = {
                let authority = &mut self.authority;
                let sidecar = &mut self.sidecar;
                tokio::select! {
                    sig = signals.recv() => Err(Ended::Signal(sig)),
                    (role, status) = wait_member(authority) => Ok((role, status)),
                    (role, status) = wait_member(sidecar) => Ok((role, status)),
                }
            };
            let (role, status) = match event {
                Ok(exit) => exit,
                Err(ended) => break ended,
            };
            if self.state.stop_marker().exists() {
                break Ended::StopRequested;
            }
            let cause = status.as_ref().map(|s| ExitCause::of(*s)).ok();
            self.record_crash(role, cause.clone());
            let failed = cause.as_ref().is_none_or(ExitCause::is_failure);
            let status = describe(&status);
            tracing::error!(component = role.name(), status = %status, "exited unexpectedly");
            if policy.restart == RestartPolicy::OnFailure && failed {
                match self
                    .restart(role, opts, &policy, &mut restarts, signals)
                    .await
                {
                    Ok(()) => continue,
                    Err(RestartEnd::Signal(sig)) => break Ended::Signal(sig),
                    Err(RestartEnd::GaveUp(count)) => {
                        break Ended::Exited {
                            role,
                            status,
                            gave_up_after: Some(count),
                        };
                    }
                }
            }
            break Ended::Exited {
                role,
                status,
                gave_up_after: None,
            };
        };
        match &ended {
            Ended::Signal(sig) => {
                tracing::info!(signal = sig.name(), "received; stopping the pair")
            }
            Ended::StopRequested => tracing::info!("stop requested; stopping the pair"),
            Ended::Exited { role, .. } => {
                tracing::error!(component = role.name(), "tearing the other component down")
            }
        }
        let clean = self.teardown(signals).await;
        Finished { ended, clean }
    }

    /// Note a child's unexpected end in `.exits.json` (with its last log line).
    fn record_crash(&mut self, role: Role, cause: Option<ExitCause>) {
        let Some(member) = self.member_mut(role) else {
            return;
        };
        member.exit_recorded = true;
        let pid = member.identity.pid;
        self.state.record_exit(
            role,
            ExitRecord {
                pid,
                cause: cause.unwrap_or(ExitCause::Code(-1)),
                at: now_rfc3339(),
                requested: false,
                log: last_log_line(&self.state.log_file(role)),
            },
        );
        // What it published no longer holds; its identity stays until a new one replaces it
        // (`stop` may still need it for leftover group members).
        crate::lifecycle::state::remove_if_present(&self.state.pid_file(role));
        crate::lifecycle::state::remove_if_present(&self.state.listen_file(role));
        crate::lifecycle::state::remove_if_present(&self.state.health_file(role));
        crate::lifecycle::state::remove_if_present(&self.state.metrics_listen_file(role));
    }

    fn member_mut(&mut self, role: Role) -> Option<&mut Member> {
        match role {
            Role::Authority => self.authority.as_mut(),
            Role::Sidecar => self.sidecar.as_mut(),
            Role::Supervisor => None,
        }
    }

    /// Restart `failed` (the Authority restarts the pair: the Sidecar was pointed at its
    /// address) after the backoff, until it boots or the start limit is reached.
    async fn restart(
        &mut self,
        failed: Role,
        opts: &StartOptions,
        policy: &SuperviseConfig,
        history: &mut RestartHistory,
        signals: &mut Signals,
    ) -> Result<(), RestartEnd> {
        loop {
            let Some(delay) = history.next_delay(failed, policy) else {
                let count = policy.start_limit_burst;
                tracing::error!(
                    component = failed.name(),
                    restarts = count,
                    "start limit hit: {count} restarts within {}; giving up",
                    humantime::format_duration(policy.start_limit_interval)
                );
                return Err(RestartEnd::GaveUp(count));
            };
            tracing::warn!(
                component = failed.name(),
                delay = %humantime::format_duration(delay),
                "restarting in {}",
                humantime::format_duration(delay)
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                sig = signals.recv() => return Err(RestartEnd::Signal(sig)),
            }
            if self.state.stop_marker().exists() {
                return Err(RestartEnd::Signal(Sig::Term));
            }
            let count = self.state.record_restart(failed);
            let result = self.reboot(failed, opts, signals).await;
            match result {
                Ok(()) => {
                    tracing::info!(component = failed.name(), restarts = count, "restarted");
                    return Ok(());
                }
                Err(BootFail::Interrupted { signal, .. }) => {
                    return Err(RestartEnd::Signal(signal));
                }
                Err(BootFail::Failed(err)) => {
                    tracing::error!(component = failed.name(), error = %err, "restart failed");
                    if let Some(member) = self.member_mut(failed)
                        && !member.exit_recorded
                    {
                        let status = member.child.try_wait().ok().flatten();
                        self.record_crash(failed, status.map(ExitCause::of));
                    }
                }
            }
        }
    }

    /// Boot `failed` again (and, for the Authority, the Sidecar after it). Leftovers of the
    /// previous process group are stopped first.
    async fn reboot(
        &mut self,
        failed: Role,
        opts: &StartOptions,
        signals: &mut Signals,
    ) -> Result<(), BootFail> {
        if failed == Role::Authority
            && let Some(mut sidecar) = self.sidecar.take()
        {
            stop_recorded(&self.state, &mut sidecar, TEARDOWN_WINDOW).await;
        }
        if let Some(mut old) = match failed {
            Role::Authority => self.authority.take(),
            _ => self.sidecar.take(),
        } {
            stop_member(&mut old, ROLLBACK_WINDOW).await;
        }
        if failed == Role::Authority {
            self.boot_authority(opts, signals).await?;
        }
        self.boot_sidecar(opts, signals).await
    }

    /// The teardown after supervision: graceful within [`TEARDOWN_WINDOW`], but a second Ctrl-C
    /// (or SIGTERM) means "now" — except while `firma sidecar stop` runs, which signals us as
    /// part of its own order.
    async fn teardown(&mut self, signals: &mut Signals) -> bool {
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
                        tracing::warn!(signal = sig.name(), "second signal: hard-killing the pair");
                        break None;
                    }
                }
            }
        };
        match graceful {
            Some(clean) => clean,
            None => self.shutdown(Duration::ZERO).await,
        }
    }

    /// Stop the children in the stop order (Sidecar first, so the Authority's graceful shutdown
    /// is not held up by its streams), then remove the runtime files and the lock. Files are
    /// kept if a child could not be proven gone, so `firma sidecar stop` can retry.
    pub async fn shutdown(&mut self, window: Duration) -> bool {
        let mut clean = true;
        // In place, not taken out: a second signal drops this future midway, and the hard-kill
        // pass that follows must still find both members.
        for member in [self.sidecar.as_mut(), self.authority.as_mut()]
            .into_iter()
            .flatten()
        {
            clean &= stop_recorded(&self.state, member, window).await;
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

/// Stop a member as part of a requested teardown and record that end (unless its crash is
/// already recorded). Returns whether it is proven gone.
async fn stop_recorded(state: &StateDir, member: &mut Member, window: Duration) -> bool {
    let gone = stop_member(member, window).await;
    if !member.exit_recorded {
        let cause = member
            .child
            .try_wait()
            .ok()
            .flatten()
            .map_or(ExitCause::Signal("SIGKILL".into()), ExitCause::of);
        member.exit_recorded = true;
        state.record_exit(
            member.role,
            ExitRecord {
                pid: member.identity.pid,
                cause,
                at: now_rfc3339(),
                requested: true,
                log: None,
            },
        );
    }
    gone
}

/// Why restarting stopped.
enum RestartEnd {
    Signal(Sig),
    /// The start limit was reached after this many restarts.
    GaveUp(u32),
}

/// Recent restarts per component, for the backoff and the start limit.
#[derive(Debug, Default)]
struct RestartHistory {
    times: HashMap<Role, VecDeque<std::time::Instant>>,
}

impl RestartHistory {
    /// The delay before the next restart of `role` (doubling per restart within the window), or
    /// `None` when the start limit is reached. Counts the restart.
    fn next_delay(&mut self, role: Role, policy: &SuperviseConfig) -> Option<Duration> {
        let now = std::time::Instant::now();
        let times = self.times.entry(role).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.start_limit_interval)
        {
            times.pop_front();
        }
        let recent = u32::try_from(times.len()).unwrap_or(u32::MAX);
        if recent >= policy.start_limit_burst {
            return None;
        }
        times.push_back(now);
        let factor = 2u32.saturating_pow(recent);
        Some(
            policy
                .restart_sec
                .saturating_mul(factor)
                .min(policy.restart_max_delay),
        )
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

    #[test]
    fn restart_delays_double_up_to_the_cap_and_stop_at_the_burst() {
        let policy = SuperviseConfig {
            restart: RestartPolicy::OnFailure,
            restart_sec: Duration::from_secs(1),
            restart_max_delay: Duration::from_secs(3),
            start_limit_burst: 4,
            start_limit_interval: Duration::from_secs(3600),
        };
        let mut history = RestartHistory::default();
        let delays: Vec<_> = (0..5)
            .map(|_| history.next_delay(Role::Sidecar, &policy))
            .collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(delays, [secs(1), secs(2), secs(3), secs(3), None]);
        // Another component has its own budget.
        assert_eq!(history.next_delay(Role::Authority, &policy), secs(1));
    }
}
