//! `firma audit verify`: prove `audit.jsonl` untampered. `firma audit rotate`: ask the running
//! Sidecar to rotate its log.
//!
//! Exit codes: 0 clean (notices such as a torn tail after a crash allowed), 1 tampering found,
//! 2 error (a file or key that cannot be read, no Sidecar to rotate).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::progress::VerifyBar;
use super::{CommandResult, Outcome, output};
use crate::audit::control;
use crate::audit::verify::{
    CheckpointStatus, FindingKind, VerifyOptions, VerifyReport, resume_at_seq, verify,
};
use crate::authority::witness_check::WitnessReport;
use crate::config::keys::{load_verifying_key, public_path};
use crate::config::{Discovery, LoadedConfig};
use crate::error::Hinted;
use crate::state_dir::StateDir;

const VERIFY_AFTER_HELP: &str = "\
Exit status: 0 clean, 1 tampering found, 2 error (a file or key that cannot be read).
On a terminal, logs over 4 MiB show a progress bar on stderr (records/s, ETA); never with --json
or when stderr is not a terminal.

Examples:
  firma audit verify
  firma audit verify --json | jq .problem
  firma audit verify --from-seq 120000
  firma audit verify --key-fingerprint 3f1c…(64 hex)
  firma audit verify --file audit.jsonl.2 --file audit.jsonl.1 --file audit.jsonl --key audit.pub";

const ROTATE_AFTER_HELP: &str = "\
The running Sidecar finishes the live file, renames it audit.jsonl.1 (older rotations shift up)
and starts a new file whose first line is a signed marker continuing the chain; retention
([sidecar.audit] keep / max_total_size) then applies. Do not rotate audit.jsonl with logrotate:
a rename by anyone but the Sidecar makes it refuse every call (audit_unavailable).

Exit status: 0 rotated, 2 error (no Sidecar answers on the state dir's control socket).";

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
    /// Ask the running Sidecar to rotate its audit log now.
    #[command(after_help = ROTATE_AFTER_HELP)]
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub state_dir: StateDirArg,
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
    /// Start at the record with this seq (its `prev` is trusted; earlier records are not
    /// verified).
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// The key must have this fingerprint (hex SHA-256 of the public key, as printed)
    /// [default: [sidecar.audit] key_fingerprint]; another key is `wrong_key`.
    #[arg(long, value_name = "HEX")]
    pub key_fingerprint: Option<String>,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: AuditArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        AuditCommand::Verify(args) => run_verify(args, config),
        AuditCommand::Rotate(args) => run_rotate(args),
    }
}

fn run_verify(args: VerifyArgs, config: Option<PathBuf>) -> CommandResult {
    // The project's configuration names the key, its pin and where the log lives; it is needed
    // only for what the flags do not say.
    let loaded = Discovery::new(config).load();
    let state = args.state_dir.resolve().0;
    let state = match &loaded {
        Ok(loaded) => state.with_audit_dir(loaded.config.sidecar.audit.dir.clone()),
        Err(_) => state,
    };
    // The files' layout (names, inodes, first lines) before they are listed: if it differs once
    // all were read, the Sidecar rotated meanwhile (see below).
    let live = state.audit();
    // (Files named on the command line are read as given, never listed again.)
    let mut listed_at = if args.files.is_empty() {
        live.layout()
    } else {
        Vec::new()
    };
    let files = if args.files.is_empty() {
        default_files(&state)?
    } else {
        args.files.clone()
    };
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => default_key(&loaded)?,
    };
    let pin = match &args.key_fingerprint {
        Some(pin) => Some(normalise_fingerprint(pin, "--key-fingerprint")?),
        None => match &loaded {
            Ok(loaded) => loaded
                .config
                .sidecar
                .audit
                .key_fingerprint
                .as_deref()
                .map(|pin| normalise_fingerprint(pin, "[sidecar.audit] key_fingerprint"))
                .transpose()?,
            Err(_) => None,
        },
    };
    let key = load_verifying_key(&key_path)?;
    let witness = if args.witness {
        Some(witness(&args, &loaded, &files, &key)?)
    } else {
        None
    };
    let options = |mut files: Vec<PathBuf>| -> Result<VerifyOptions, Hinted> {
        let checkpoint = files
            .last()
            .map(|f| crate::state_dir::AuditFiles::of_log(f).checkpoint());
        let resume = match args.from_seq {
            Some(seq) => {
                let (index, resume) = resume_at_seq(&files, seq)?;
                files.drain(..index);
                Some(resume)
            }
            None => None,
        };
        let mut options = VerifyOptions::new(files, key);
        options.checkpoint = checkpoint;
        options.resume = resume;
        options.pinned_fingerprint = pin.clone();
        if let Some(threads) = args.threads {
            options.threads = threads.max(1);
        }
        if args.no_checkpoint {
            options.checkpoint = None;
        } else if let Some(path) = &args.checkpoint {
            options.checkpoint = Some(path.clone());
        }
        Ok(options)
    };
    let attempt = |files: Vec<PathBuf>| {
        let mut options = options(files)?;
        let bar = VerifyBar::for_files(&options.files, args.json.enabled());
        options.progress = bar.as_ref().map(VerifyBar::hook);
        let report = verify(&options);
        if let Some(bar) = bar {
            bar.finish();
        }
        report
    };
    let mut result = attempt(files);
    // A rotation renames files and retention deletes them: one between listing and reading can
    // look like a gap or a missing file. Then list and verify again (a log that is really broken
    // fails again, with no rotation in between). A Sidecar under load with a tiny rotate_size
    // rotates every few milliseconds, so a few attempts may all meet one. The whole layout is
    // compared, not only the live file's inode: a rotation renames `.N` to `.N+1` first (a read
    // in between sees files shifted under it while the live file is the same), and a new live
    // file may get the inode retention just freed (`FileMark`).
    for _ in 0..20 {
        // A listed file that is gone (an error) is retried even when the layout looks the
        // same: its inode may be a deleted file's, reused by a later rotation.
        let settled = !args.files.is_empty()
            || match &result {
                Ok(report) => report.ok || live.layout() == listed_at,
                Err(_) => false,
            };
        if settled {
            break;
        }
        listed_at = live.layout();
        result = default_files(&state).and_then(attempt);
    }
    let report = result?;
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
    loaded: &Result<LoadedConfig, Hinted>,
    files: &[PathBuf],
    key: &ed25519_dalek::VerifyingKey,
) -> Result<WitnessReport, Hinted> {
    let loaded = loaded.as_ref().map_err(Clone::clone)?;
    let (state, _) = args.state_dir.resolve();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?
        .block_on(crate::authority::witness_check::check(
            &state, loaded, files, key,
        ))
}

fn run_rotate(args: RotateArgs) -> CommandResult {
    let state = args.state_dir.resolve().0;
    let rotated = control::rotate(&state.sidecar_socket(), Duration::from_secs(30))?;
    if args.json.enabled() {
        json::print(Document::AuditRotate, &rotated)?;
        return Ok(Outcome::Success);
    }
    output::ok(format!(
        "rotated the audit log: records up to seq {} are in {}; the live file continues at seq {}",
        rotated.last_seq,
        rotated.rotated_to.display(),
        rotated.marker_seq
    ));
    if let Some(retained) = &rotated.retained {
        output::info(format!(
            "retention deleted {} (records {}..={}), recorded in the log",
            retained.files.join(", "),
            retained.first_seq,
            retained.last_seq
        ));
    }
    Ok(Outcome::Success)
}

/// A pinned fingerprint as `verify` prints it: 64 lowercase hex digits (colons and case are
/// forgiven).
fn normalise_fingerprint(pin: &str, source: &str) -> Result<String, Hinted> {
    let hex: String = pin
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(Hinted::new(format!(
            "{source} {pin:?} is not a key fingerprint (64 hex digits)"
        ))
        .hint("copy the fingerprint `firma audit verify` prints (`key …`), or from its --json report's key_fingerprint"))
    }
}

/// The audit files (rotations, then the live log).
fn default_files(state: &StateDir) -> Result<Vec<PathBuf>, Hinted> {
    let files = state.audit();
    let log = files.live();
    // A missing log beside a surviving checkpoint is verified (as deleted), not an error.
    if !log.exists() && !files.checkpoint().exists() {
        return Err(
            Hinted::new(format!("no audit log at {}", log.display())).hint(
                "start the Sidecar (`firma sidecar start`) or `firma init` to create it, pass \
             --state-dir / FIRMA_STATE_DIR for another state directory, or --file PATH",
            ),
        );
    }
    Ok(files.oldest_first())
}

/// `audit.pub` beside `[sidecar.audit].key` of the discovered configuration.
fn default_key(loaded: &Result<LoadedConfig, Hinted>) -> Result<PathBuf, Hinted> {
    match loaded {
        Ok(loaded) => Ok(public_path(&loaded.config.sidecar.audit.key)),
        Err(err) => Err(Hinted::new(format!(
            "no public key to verify with: {} (the key is found through firma.toml)",
            err.message()
        ))
        .hint(
            "pass --key <audit.pub>, or --config <firma.toml> of the project that wrote the log",
        )),
    }
}

fn print_human(report: &VerifyReport, key_path: &Path) {
    let names: Vec<String> = report
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    let files = names.join(", ");
    for notice in &report.notices {
        let text = format!(
            "{}{}: {}",
            notice.file.display(),
            notice.line.map(|l| format!(":{l}")).unwrap_or_default(),
            notice.message
        );
        if notice.kind == FindingKind::Retained {
            output::info(text);
        } else {
            output::warn(text);
        }
    }
    let pinned = match &report.pinned_fingerprint {
        Some(pin) if *pin == report.key_fingerprint => ", as pinned",
        Some(_) => ", NOT the pinned key",
        None => "",
    };
    output::info(format!(
        "key {} ({}{pinned})",
        report.key_fingerprint,
        key_path.display()
    ));
    let range = match (report.from_seq.or(report.retained_from), report.verified) {
        (Some(first), n) if n > 0 => format!("seq {first}..={}", report.last_seq),
        _ => format!("last seq {}", report.last_seq),
    };
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
            let retained = match report.retained_from {
                Some(seq) => format!(", retained from seq {seq}"),
                None => String::new(),
            };
            output::ok(format!(
                "{files}: {} records verified ({range}{retained}), chain intact, {checkpoint}",
                report.verified
            ));
        }
        Some(problem) => {
            output::info(format!(
                "{files}: {} records verified before the first problem ({range})",
                report.verified
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

fn hint_for(kind: FindingKind) -> &'static str {
    use FindingKind as K;
    match kind {
        K::WrongKey => {
            "check --key: it must be the audit.pub of the project that wrote this log (and match \
             the pinned fingerprint, if one is set); if it is, the log was re-signed"
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
