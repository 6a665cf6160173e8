//! The one place firma listens for signals. Every long-running command (the supervisor, the
//! Authority, the Sidecar, `firma run`'s agent wrapper) installs a [`Signals`] set for the
//! signals it cares about, before it starts anything, and awaits them with [`Signals::recv`].
//!
//! A Windows port supplies the same type over `SetConsoleCtrlHandler` (Ctrl-C, Ctrl-Break,
//! close) — see `platform/mod.rs`.

use std::fmt;

use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

/// A signal firma reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sig {
    Int,
    Term,
    Hup,
    Quit,
}

impl Sig {
    /// What a daemon stops on: Ctrl-C, SIGTERM, and the terminal hanging up.
    pub const SHUTDOWN: &'static [Sig] = &[Sig::Int, Sig::Term, Sig::Hup];
    /// What a daemon whose lifecycle is `stop` (not the terminal) stops on.
    pub const TERMINATE: &'static [Sig] = &[Sig::Int, Sig::Term];

    pub fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
            Self::Hup => "SIGHUP",
            Self::Quit => "SIGQUIT",
        }
    }

    fn kind(self) -> SignalKind {
        match self {
            Self::Int => SignalKind::interrupt(),
            Self::Term => SignalKind::terminate(),
            Self::Hup => SignalKind::hangup(),
            Self::Quit => SignalKind::quit(),
        }
    }

    /// The same signal, to send to another process.
    pub fn to_nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            Self::Int => Signal::SIGINT,
            Self::Term => Signal::SIGTERM,
            Self::Hup => Signal::SIGHUP,
            Self::Quit => Signal::SIGQUIT,
        }
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Installed handlers for a set of signals (their default action is replaced for the life of
/// the process, so install before spawning anything that a signal must not orphan).
pub struct Signals {
    streams: Vec<(Sig, Stream)>,
    /// Received, logged, and otherwise ignored (their default action stays replaced).
    ignored: Vec<Sig>,
    why: &'static str,
}

impl Signals {
    /// Install handlers for `set`. Needs a tokio runtime with the IO driver.
    pub fn install(set: &[Sig]) -> Result<Self, crate::error::Hinted> {
        let streams = set
            .iter()
            .map(|&sig| {
                signal(sig.kind())
                    .map(|stream| (sig, stream))
                    .map_err(|err| {
                        crate::error::Hinted::new(format!(
                            "cannot install the {sig} handler: {err}"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            streams,
            ignored: Vec::new(),
            why: "",
        })
    }

    /// Keep `sig` from ending the process without reacting to it: [`Self::recv`] logs it at INFO
    /// with `why` and waits on (a detached daemon has no terminal to hang up).
    #[must_use]
    pub fn ignore(mut self, sig: Sig, why: &'static str) -> Self {
        self.ignored.push(sig);
        self.why = why;
        self
    }

    /// The next signal of the set that is not ignored.
    pub async fn recv(&mut self) -> Sig {
        loop {
            let sig = self.recv_any().await;
            if !self.ignored.contains(&sig) {
                return sig;
            }
            tracing::info!(signal = sig.name(), "{} ignored: {}", sig, self.why);
        }
    }

    async fn recv_any(&mut self) -> Sig {
        let waits = self.streams.iter_mut().map(|(sig, stream)| {
            let sig = *sig;
            Box::pin(async move {
                stream.recv().await;
                sig
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raised_signal_of_the_set_is_received_by_name() {
        let mut signals = Signals::install(&[Sig::Hup]).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        assert_eq!(signals.recv().await, Sig::Hup);
    }

    #[tokio::test]
    async fn an_ignored_signal_is_skipped() {
        let mut signals = Signals::install(&[Sig::Quit, Sig::Hup])
            .unwrap()
            .ignore(Sig::Hup, "test");
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGQUIT).unwrap();
        assert_eq!(signals.recv().await, Sig::Quit);
    }
}
