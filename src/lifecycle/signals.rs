//! The termination signals a supervisor reacts to, installed before the first child is spawned so
//! an interrupt during start-up rolls back instead of leaving half a daemon.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    /// A detached supervisor has no terminal; a stray SIGHUP must not take the daemon down.
    ignore_hup: bool,
}

impl Signals {
    pub fn install(ignore_hup: bool) -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            ignore_hup,
        })
    }

    /// Wait for the next signal that means "shut down"; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.int.recv() => return "SIGINT",
                _ = self.term.recv() => return "SIGTERM",
                _ = self.hup.recv() => {
                    if !self.ignore_hup {
                        return "SIGHUP";
                    }
                    tracing::info!("SIGHUP ignored: the detached supervisor has no terminal; use `firma sidecar stop`");
                }
            }
        }
    }
}
