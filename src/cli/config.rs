//! `firma config check`: which firma.toml is in use, and does it load with everything it names
//! (mapping rules; policies validated against the schema; `token_ttl` within `max_ttl`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, Outcome, output};
use crate::authority::policy::load_dir;
use crate::authority::store::short;
use crate::config::Discovery;
use crate::config::load::strict_checks;
use crate::config::schema::AuthorityMode;
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
    strict_checks(&loaded)?;
    let table = MappingTable::load(&loaded.config.sidecar.mapping.rules)?;
    let authority = &loaded.config.authority;
    // Everything is loaded before anything is printed: `ok` means the whole project loads.
    let bundles = if authority.mode == AuthorityMode::Local {
        let runtime = load_dir(&authority.policies, &authority.policies)?;
        let issuance = load_dir(&authority.issuance_policies, &authority.policies)?;
        Some((runtime, issuance))
    } else {
        None
    };
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
    if let Some((runtime, issuance)) = bundles {
        let schema = runtime.schema_file.as_ref().map_or_else(
            || "the built-in schema".to_string(),
            |p| p.display().to_string(),
        );
        for (what, dir, bundle) in [
            ("runtime", &authority.policies, &runtime),
            ("issuance", &authority.issuance_policies, &issuance),
        ] {
            output::info(format!(
                "{} {what} policies in {} validate against {schema} (version {})",
                bundle.len(),
                dir.display(),
                short(&bundle.version)
            ));
        }
    }
    Ok(Outcome::Success)
}
