//! `firma config check`: which firma.toml is in use, and does it load with everything it names
//! (mapping rules; policies validated against the schema; `token_ttl` within `max_ttl`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::flags::JsonFlag;
use super::json::{self, Document};
use super::{CommandResult, Outcome, output};
use crate::authority::policy::{PolicyBundle, load_dir};
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
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

pub fn run(args: ConfigArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        ConfigCommand::Check(args) => check(args, config),
    }
}

/// `config check --json` (docs/schemas/config-check.v1.schema.json).
#[derive(Serialize)]
struct CheckJson {
    config: PathBuf,
    /// `--config`, an env var's name, or `walk-up discovery`.
    selected_by: String,
    mapping_rules: RulesJson,
    /// `null` when the Authority is remote (its policies are not here to check).
    policies: Option<PoliciesJson>,
}

#[derive(Serialize)]
struct RulesJson {
    file: PathBuf,
    count: usize,
}

#[derive(Serialize)]
struct PoliciesJson {
    /// `null`: the built-in schema generated from the action-class registry.
    schema_file: Option<PathBuf>,
    runtime: BundleJson,
    issuance: BundleJson,
}

#[derive(Serialize)]
struct BundleJson {
    dir: PathBuf,
    count: usize,
    version: String,
}

impl BundleJson {
    fn new(dir: &Path, bundle: &PolicyBundle) -> Self {
        Self {
            dir: dir.to_path_buf(),
            count: bundle.len(),
            version: bundle.version.clone(),
        }
    }
}

fn check(args: CheckArgs, config: Option<PathBuf>) -> CommandResult {
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
    if args.json.enabled() {
        json::print(
            Document::ConfigCheck,
            &CheckJson {
                config: loaded.path.clone(),
                selected_by: loaded.source.to_string(),
                mapping_rules: RulesJson {
                    file: loaded.config.sidecar.mapping.rules.clone(),
                    count: table.rules().len(),
                },
                policies: bundles.as_ref().map(|(runtime, issuance)| PoliciesJson {
                    schema_file: runtime.schema_file.clone(),
                    runtime: BundleJson::new(&authority.policies, runtime),
                    issuance: BundleJson::new(&authority.issuance_policies, issuance),
                }),
            },
        )?;
        return Ok(Outcome::Success);
    }
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
