//! `firma monitor`: read-only live tail of audit events and daemon logs.

use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, not_yet};

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(_args: MonitorArgs, _config: Option<PathBuf>) -> CommandResult {
    not_yet("firma monitor")
}
