//! `firma sidecar`: run the Sidecar in the foreground; `start | stop | status` manage the daemon.

use std::path::PathBuf;

use clap::Args;

use super::lifecycle::{self, SidecarCommand};
use super::{CommandResult, Outcome};
use crate::sidecar::run::{RunOptions, run as run_sidecar};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SidecarArgs {
    #[command(subcommand)]
    pub command: Option<SidecarCommand>,
    #[command(flatten)]
    pub run: SidecarRunArgs,
}

/// Flags of the bare `firma sidecar` (the foreground proxy).
#[derive(Debug, Args)]
pub struct SidecarRunArgs {
    /// State directory for the audit log and the generated CA (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Authority URL overriding [sidecar.authority].url (used by `sidecar start`).
    #[arg(long, value_name = "URL")]
    pub authority_url: Option<String>,
}

pub fn run(args: SidecarArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        Some(command) => lifecycle::run(command, config),
        None => {
            super::logging::init_daemon_logging();
            run_sidecar(RunOptions {
                config,
                state_dir: args.run.state_dir,
                authority_url: args.run.authority_url,
            })?;
            Ok(Outcome::Success)
        }
    }
}
