//! Wait for the agent while passing on the signals meant for it.

use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::Hinted;

/// Wait for the agent, passing on SIGTERM, SIGHUP and SIGQUIT. SIGINT is passed on only when
/// stdin is not a terminal: on a terminal, Ctrl-C already reaches the agent (same process group).
/// Returns the agent's exit status (`128 + N` when signal `N` ended it).
pub async fn forward_signals_until_exit(child: &mut tokio::process::Child) -> Result<u8, Hinted> {
    let listen = |kind| {
        signal(kind).map_err(|err| Hinted::new(format!("cannot install signal handlers: {err}")))
    };
    let (mut term, mut hup, mut quit, mut int) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::hangup())?,
        listen(SignalKind::quit())?,
        listen(SignalKind::interrupt())?,
    );
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let forward = |sig: Signal| {
        if let Some(pid) = pid {
            let _ = kill(pid, sig);
        }
    };
    let tty = std::io::stdin().is_terminal();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|err| {
                    Hinted::new(format!("waiting for the agent failed: {err}"))
                })?;
                let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
                return Ok(u8::try_from(code).unwrap_or(1));
            }
            _ = term.recv() => forward(Signal::SIGTERM),
            _ = hup.recv() => forward(Signal::SIGHUP),
            _ = quit.recv() => forward(Signal::SIGQUIT),
            _ = int.recv() => if !tty { forward(Signal::SIGINT) },
        }
    }
}
