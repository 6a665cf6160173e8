//! Wait for the agent while passing on the signals meant for it.

use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::error::Hinted;
use crate::platform::process::signal_child;
use crate::platform::signals::{Sig, Signals};

/// The status `firma run` exits with for a child's: its code, or `128 + N` when signal `N`
/// ended it (as shells report it).
pub fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

/// Wait for the agent, passing on SIGTERM, SIGHUP and SIGQUIT. SIGINT is passed on only when
/// stdin is not a terminal: on a terminal, Ctrl-C already reaches the agent (same process group).
pub async fn forward_signals_until_exit(child: &mut tokio::process::Child) -> Result<u8, Hinted> {
    let mut signals = Signals::install(&[Sig::Term, Sig::Hup, Sig::Quit, Sig::Int])?;
    let tty = std::io::stdin().is_terminal();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|err| {
                    Hinted::new(format!("waiting for the agent failed: {err}"))
                })?;
                return Ok(exit_code(status));
            }
            sig = signals.recv() => {
                let forward = sig != Sig::Int || !tty;
                if forward && let Some(pid) = child.id() {
                    signal_child(pid, sig.to_nix());
                }
            }
        }
    }
}
