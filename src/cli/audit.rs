//! `firma audit verify`: prove `audit.jsonl` untampered.
//!
//! Exit codes: 0 clean (notices such as a torn tail after a crash allowed), 1 tampering found,
//! 2 error (a file or key that cannot be read).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::progress::VerifyBar;
use super::{CommandResult, Outcome, output};
use crate::audit::verify::{CheckpointStatus, VerifyOptions, VerifyReport, verify};
use crate::authority::witness_check::WitnessReport;
use crate::config::Discovery;
use crate::config::dirs::resolve_state_dir;
use crate::config::keys::{load_verifying_key, public_path};
use crate::error::Hinted;
use crate::state_dir::StateDir;

const VERIFY_AFTER_HELP: &str = "\
Exit status: 0 clean, 1 tampering found, 2 error (a file or key that cannot be read).
On a terminal, logs over 4 MiB show a progress bar on stderr (records/s, ETA); never with --json
or when stderr is not a terminal.

Examples:
  firma audit verify
  firma audit verify --json | jq .problem
  firma audit verify --file audit.jsonl.2 --file audit.jsonl.1 --file audit.jsonl --key audit.pub";

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify signatures, the hash chain and the checkpoint; report the first bad line.
    #[command(after_help = VERIFY_AFTER_HELP)]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Log file(s) to verify, oldest first [default: <state dir>/audit.jsonl and its rotations].
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Public key (PEM) [default: audit.pub beside [sidecar.audit].key].
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<PathBuf>,
    /// Checkpoint to check the tail against [default: beside the last file, `.checkpoint`].
    #[arg(long, value_name = "PATH", conflicts_with = "no_checkpoint")]
    pub checkpoint: Option<PathBuf>,
    /// Do not check the tail against a checkpoint (for a copied log without one).
    #[arg(long)]
    pub no_checkpoint: bool,
    #[command(flatten)]
    pub json: JsonFlag,
    /// Also compare the log with the checkpoint the Authority witnessed: a tail removed together
    /// with audit.checkpoint is `truncated` (docs/audit-log.md#witnessed-checkpoints).
    #[arg(long)]
    pub witness: bool,
    /// Worker threads for signatures [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: AuditArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        AuditCommand::Verify(args) => run_verify(args, config),
    }
}

fn run_verify(args: VerifyArgs, config: Option<PathBuf>) -> CommandResult {
    let files = if args.files.is_empty() {
        default_files(&resolve_state_dir(args.state_dir.as_deref()).0)?
    } else {
        args.files.clone()
    };
    let config_for_witness = config.clone();
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => default_key(config)?,
    };
    let key = load_verifying_key(&key_path)?;
    let witness = if args.witness {
        Some(witness(&args, config_for_witness, &files, &key)?)
    } else {
        None
    };
    let mut options = VerifyOptions::new(files, key);
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    if args.no_checkpoint {
        options.checkpoint = None;
    } else if let Some(path) = &args.checkpoint {
        options.checkpoint = Some(path.clone());
    }
    let bar = VerifyBar::for_files(&options.files, args.json.enabled());
    options.progress = bar.as_ref().map(VerifyBar::hook);
    let report = verify(&options);
    if let Some(bar) = bar {
        bar.finish();
    }
    let report = report?;
    let witness_ok = witness.as_ref().is_none_or(WitnessReport::is_ok);
    if args.json.enabled() {
        let mut json = serde_json::to_value(&report).expect("reports always serialise");
        if let Some(witness) = &witness {
            json["witness"] = serde_json::to_value(witness).expect("reports always serialise");
            json["ok"] = (report.ok && witness_ok).into();
        }
        json::print(Document::AuditVerify, &json)?;
    } else {
        print_human(&report, &key_path);
        if let Some(witness) = &witness {
            let line = crate::authority::witness_check::describe(witness);
            if witness_ok {
                output::ok(format!("witness: {line}"));
            } else {
                output::error(&Hinted::new(format!("witness: {line}")).hint(
                    "the log lost records the Authority saw: restore it from a backup, and \
                     treat the gap as tampering",
                ));
            }
        }
    }
    Ok(if report.ok && witness_ok {
        Outcome::Success
    } else {
        Outcome::FoundProblems
    })
}

/// What the Authority witnessed for this project's Sidecar, compared with `files`.
fn witness(
    args: &VerifyArgs,
    config: Option<PathBuf>,
    files: &[PathBuf],
    key: &ed25519_dalek::VerifyingKey,
) -> Result<WitnessReport, Hinted> {
    let loaded = Discovery::new(config).load()?;
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?
        .block_on(crate::authority::witness_check::check(
            &state, &loaded, files, key,
        ))
}

/// The state dir's audit files (rotations, then the live log).
fn default_files(state: &StateDir) -> Result<Vec<PathBuf>, Hinted> {
    let log = state.audit_log();
    // A missing log beside a surviving checkpoint is verified (as deleted), not an error.
    if !log.exists() && !state.audit_checkpoint().exists() {
        return Err(
            Hinted::new(format!("no audit log at {}", log.display())).hint(
                "start the Sidecar (`firma sidecar start`) or `firma init` to create it, pass \
             --state-dir / FIRMA_STATE_DIR for another state directory, or --file PATH",
            ),
        );
    }
    Ok(state.audit_files())
}

/// `audit.pub` beside `[sidecar.audit].key` of the discovered configuration.
fn default_key(config: Option<PathBuf>) -> Result<PathBuf, Hinted> {
    let loaded = Discovery::new(config).load().map_err(|err| {
        Hinted::new(format!(
            "no public key to verify with: {} (the key is found through firma.toml)",
            err.message()
        ))
        .hint("pass --key <audit.pub>, or --config <firma.toml> of the project that wrote the log")
    })?;
    Ok(public_path(&loaded.config.sidecar.audit.key))
}

fn print_human(report: &VerifyReport, key_path: &Path) {
    let names: Vec<String> = report
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    let files = names.join(", ");
    for notice in &report.notices {
        output::warn(format!(
            "{}{}: {}",
            notice.file.display(),
            notice.line.map(|l| format!(":{l}")).unwrap_or_default(),
            notice.message
        ));
    }
    match &report.problem {
        None => {
            let checkpoint = match report.checkpoint.status {
                CheckpointStatus::Ok => format!(
                    "checkpoint seq {} matches",
                    report.checkpoint.seq.unwrap_or_default()
                ),
                CheckpointStatus::Skipped => "checkpoint not checked".into(),
                _ => match report
                    .checkpoint
                    .path
                    .as_deref()
                    .and_then(|p| p.file_name())
                {
                    Some(name) => format!("no checkpoint ({})", name.to_string_lossy()),
                    None => "no checkpoint".to_string(),
                },
            };
            output::ok(format!(
                "{files}: {} records verified (last seq {}), chain intact, {checkpoint}",
                report.verified, report.last_seq
            ));
        }
        Some(problem) => {
            output::info(format!(
                "{files}: {} records verified before the first problem (key {})",
                report.verified,
                key_path.display()
            ));
            let location = match problem.line {
                Some(line) => format!("{}:{line}", problem.file.display()),
                None => problem.file.display().to_string(),
            };
            output::error(
                &Hinted::new(format!(
                    "{location}: {}: {}",
                    problem.kind.as_str(),
                    problem.message
                ))
                .hint(hint_for(problem.kind)),
            );
        }
    }
}

fn hint_for(kind: crate::audit::verify::FindingKind) -> &'static str {
    use crate::audit::verify::FindingKind as K;
    match kind {
        K::WrongKey => {
            "check --key: it must be the audit.pub of the project that wrote this log; if it is, \
             the log was re-signed"
        }
        K::CheckpointMissing => {
            "if this is a copy of a log without its checkpoint, pass --no-checkpoint"
        }
        K::Truncated | K::Rewritten => {
            "records after the last good line are gone or replaced; compare with an exported \
             checkpoint or a backup"
        }
        _ => "records from this line on cannot be trusted; preserve the file for investigation",
    }
}
