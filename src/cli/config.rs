//! `firma config check`: which firma.toml is in use, and does it load with everything it names.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, Outcome, output};
use crate::config::Discovery;
use crate::sidecar::mapping::MappingTable;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show which firma.toml discovery selects and check that it and the files it names load.
    Check,
}

pub fn run(args: ConfigArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        ConfigCommand::Check => check(config),
    }
}

fn check(config: Option<PathBuf>) -> CommandResult {
    let loaded = Discovery::new(config).load()?;
    let table = MappingTable::load(&loaded.config.sidecar.mapping.rules)?;
    output::ok(format!(
        "{} (selected by {})",
        loaded.path.display(),
        loaded.source
    ));
    output::info(format!(
        "{} mapping rules in {}",
        table.rules().len(),
        loaded.config.sidecar.mapping.rules.display()
    ));
    Ok(Outcome::Success)
}
