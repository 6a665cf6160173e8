//! firma: an authority layer for AI agents. See `docs/architecture.md` for the map of modules.

pub mod audit;
pub mod authority;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
#[path = "../formatters/mod.rs"]
pub mod formatters;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub mod log_throttle;
pub mod metrics;
pub mod monitor;
pub mod platform;
pub mod proto;
pub mod run;
pub mod sidecar;
#[path = "../sources/mod.rs"]
pub mod sources;
pub mod state_dir;
