//! `firma sidecar start | stop | status` and the hidden `firma __supervise`: flags and messages.
//! The mechanics live in `crate::lifecycle`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, not_yet};

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Boot the Authority and the Sidecar as one daemon-mode pair (foreground, or --detach).
    Start(StartArgs),
    /// Tear the pair down: Sidecar first, then supervisor and Authority; hard-kill after --timeout.
    Stop(StopArgs),
    /// Show the daemon's components (docker-ps style), --json, or --daemon for the pid only.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// firma.toml passed to both children (env: FIRMA_SIDECAR_CONFIG_FILE) [default: discovered firma.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (env: FIRMA_STATE_DIR) [default: $XDG_RUNTIME_DIR/firma, else /tmp/firma-$UID].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Return after readiness, leaving a supervisor process that owns the pair.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait after the soft signal before hard-killing survivors.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Print only the daemon-mode (supervisor) pid.
    #[arg(long)]
    pub daemon: bool,
}

pub fn run(command: SidecarCommand, _config: Option<PathBuf>) -> CommandResult {
    match command {
        SidecarCommand::Start(_) => not_yet("firma sidecar start"),
        SidecarCommand::Stop(_) => not_yet("firma sidecar stop"),
        SidecarCommand::Status(_) => not_yet("firma sidecar status"),
    }
}
