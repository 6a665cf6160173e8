//! The fixed core of `firma sidecar start | stop | status`: processes and files, never policies.
//!
//! - `state`: the state dir's files and formats; `lock`: `stack.lock`; `identity`: PID-reuse
//!   guard; `procs`: signalling process groups through identities.
//! - `notify` (send) / `channel` (receive): sd_notify-style readiness.
//! - `spawn`, `probes`, `signals`, `supervisor`: boot with rollback, supervise, tear down.
//! - `detach`: the `--detach` launcher; `stop`, `status`: the other two commands.

pub mod channel;
pub mod detach;
pub mod identity;
pub mod lock;
pub mod notify;
pub mod probes;
pub mod procs;
pub mod signals;
pub mod spawn;
pub mod state;
pub mod status;
pub mod stop;
pub mod supervisor;
