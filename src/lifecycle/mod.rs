//! The fixed core of `firma sidecar start | stop | status | restart`: processes and files, never
//! policies. What is OS-specific (process identity, groups, sessions, signals) lives in
//! [`crate::platform`].
//!
//! - `state`: the state dir's daemon files; `lock`: `stack.lock`; `exits`: how components
//!   ended (`.exits.json`); `health`: what a running component reports (degraded).
//! - `notify` (send) / `channel` (receive): sd_notify-style readiness.
//! - `spawn`, `readiness`, `probes`, `teardown`, `supervisor`: boot with rollback, supervise
//!   (with optional restarts), tear down; `clash`: who holds a listen address.
//! - `detach`: the `--detach` launcher; `stop`, `status`: the other commands; `occupancy`: is a
//!   stack running here, and whose (guards for destructive commands and project mix-ups).

pub mod channel;
pub mod clash;
pub mod detach;
pub mod exits;
pub mod health;
pub mod lock;
pub mod notify;
pub mod occupancy;
pub mod probes;
pub mod readiness;
pub mod spawn;
pub mod state;
pub mod status;
pub mod stop;
pub mod supervisor;
pub mod teardown;
