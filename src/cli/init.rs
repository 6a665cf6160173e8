//! `firma init`: scaffold `<workspace>/.firma/` and the user data dir.
//!
//! With `--yes`, or when stdin is not a terminal, flags and defaults decide everything (a note
//! says so when no terminal is present); otherwise a short wizard asks for each value a flag
//! did not give.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::flags::StateDirArg;
use super::prompt::ask;
use super::{CommandResult, Outcome, output};
use crate::config::dirs::{StateDirSource, resolve_data_dir, resolve_state_dir};
use crate::config::load::validate_agent_id;
use crate::config::providers::{self, DEFAULT_AGENT, DEFAULT_PROVIDER, KNOWN_AGENTS};
use crate::config::scaffold::{
    AuthorityChoice, FileOutcome, ScaffoldOptions, ScaffoldReport, parse_listen, scaffold,
};
use crate::config::schema::{DEFAULT_AUTHORITY_LISTEN, DEFAULT_SIDECAR_LISTEN};
use crate::error::Hinted;
use crate::lifecycle::occupancy::ensure_no_stack;
use crate::state_dir::{DataDir, StateDir};

const INIT_EXAMPLES: &str = "\
Examples:
  firma init                                   # interactive wizard
  firma init --agent codex --provider anthropic --workspace ./proj --authority local --yes
  firma init --force --sidecar-listen 127.0.0.1:8181 --yes";

#[derive(Debug, Args)]
#[command(after_help = INIT_EXAMPLES)]
pub struct InitArgs {
    /// Agent id: the Cedar principal and the agent_id in tokens and audit records
    /// (claude, codex, generic, or your own name).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,

    /// Model provider whose API hosts the default rules and policy allow.
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,

    /// Project root; the config goes to <workspace>/.firma/ [default: current directory].
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// `local` (sidecar start boots the Authority) or the URL of a remote Authority.
    #[arg(long, value_name = "local|URL")]
    pub authority: Option<String>,

    /// Do not prompt: take flags and defaults.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Overwrite existing files, including keys (a previous audit log is archived, not deleted).
    /// Refused while a stack runs on the state dir (see --stop).
    #[arg(long)]
    pub force: bool,

    /// With --force: stop the stack running on the state dir first (as `firma sidecar stop`).
    #[arg(long, requires = "force")]
    pub stop: bool,

    /// gRPC listen address of the local Authority.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_AUTHORITY_LISTEN)]
    pub authority_listen: String,

    /// Listen address of the Sidecar's HTTP(S) proxy.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_SIDECAR_LISTEN)]
    pub sidecar_listen: String,

    #[command(flatten)]
    pub state_dir: StateDirArg,

    /// Keep the audit log in DIR, a persistent disk ([sidecar.audit] dir) [default: the state
    /// dir, usually wiped at reboot].
    #[arg(long, value_name = "DIR")]
    pub audit_dir: Option<PathBuf>,
}

pub fn run(args: InitArgs, _config: Option<PathBuf>) -> CommandResult {
    // Flags are checked before any prompt so a typo fails fast.
    let authority_listen = parse_listen("--authority-listen", &args.authority_listen)?;
    let sidecar_listen = parse_listen("--sidecar-listen", &args.sidecar_listen)?;
    let authority = args
        .authority
        .as_deref()
        .map(AuthorityChoice::parse)
        .transpose()?;
    if let Some(agent) = &args.agent {
        check_agent(agent).map_err(|err| flag_error("--agent", err))?;
    }
    if let Some(provider) = &args.provider {
        check_provider(provider).map_err(|err| flag_error("--provider", err))?;
    }
    let interactive = !args.yes && std::io::stdin().is_terminal();
    if !args.yes && !interactive {
        output::info("stdin is not a terminal: using flags and defaults (as with --yes)");
    }
    let (state, state_source) = resolve_state_dir(args.state_dir.as_deref());
    let data = resolve_data_dir()?;
    if args.force
        && let Some(report) = ensure_no_stack(
            &state,
            "`init --force` would replace the keys and config it uses and archive the audit log it writes",
            args.stop,
            "--stop",
        )?
    {
        output::info(format!(
            "stopped {} (--stop)",
            report
                .stopped
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let audit_dir = args.audit_dir.as_deref().map(absolute).transpose()?;

    let options = if interactive {
        wizard(
            &args,
            authority,
            authority_listen,
            sidecar_listen,
            state,
            data,
            audit_dir,
        )?
    } else {
        ScaffoldOptions {
            workspace: args.workspace.clone().unwrap_or_else(|| PathBuf::from(".")),
            agent: args.agent.clone().unwrap_or_else(|| DEFAULT_AGENT.into()),
            provider: args
                .provider
                .clone()
                .unwrap_or_else(|| DEFAULT_PROVIDER.into()),
            authority: authority.unwrap_or(AuthorityChoice::Local),
            authority_listen,
            sidecar_listen,
            state: state.with_audit_dir(audit_dir.clone()),
            data,
            force: args.force,
            audit_dir,
        }
    };
    let report = scaffold(&options)?;
    let state_flag = match state_source {
        StateDirSource::Flag => format!(" --state-dir {}", report.state.path().display()),
        _ => String::new(),
    };
    print_report(&report, &options, &state_flag);
    Ok(Outcome::Success)
}

/// `dir` made absolute against the working directory (firma.toml holds it as written).
fn absolute(dir: &Path) -> Result<PathBuf, Hinted> {
    std::path::absolute(dir).map_err(|err| {
        Hinted::new(format!("--audit-dir {}: {err}", dir.display()))
            .hint("pass an absolute directory")
    })
}

/// Name the flag that carried a bad value.
fn flag_error(flag: &str, err: Hinted) -> Hinted {
    let hinted = Hinted::new(format!("{flag}: {}", err.message()));
    match err.hint_text() {
        Some(hint) => hinted.hint(hint),
        None => hinted,
    }
}

fn check_agent(agent: &str) -> Result<String, Hinted> {
    validate_agent_id(agent)
        .map(|()| agent.to_string())
        .map_err(|reason| {
            Hinted::new(format!("agent {agent:?} {reason}"))
                .hint("use letters, digits, '.', '_' or '-' (at most 64), e.g. codex")
        })
}

fn check_provider(provider: &str) -> Result<String, Hinted> {
    providers::find(provider)
        .map(|p| p.name.to_string())
        .ok_or_else(|| {
            Hinted::new(format!("unknown provider {provider:?}"))
                .hint(format!("choose one of: {}", providers::names().join(", ")))
        })
}

fn wizard(
    args: &InitArgs,
    authority: Option<AuthorityChoice>,
    authority_listen: SocketAddr,
    sidecar_listen: SocketAddr,
    state: StateDir,
    data: DataDir,
    audit_dir: Option<PathBuf>,
) -> Result<ScaffoldOptions, Hinted> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => ask(&mut input, "workspace path", ".", |answer| {
            let path = PathBuf::from(answer);
            let existing = path
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(Path::new("/"));
            if existing.is_dir() {
                Ok(path)
            } else {
                Err(Hinted::new(format!(
                    "{} is not a directory",
                    existing.display()
                )))
            }
        })?,
    };
    let agents: Vec<&str> = KNOWN_AGENTS.iter().map(|a| a.name).collect();
    let agent = match &args.agent {
        Some(agent) => agent.clone(),
        None => ask(
            &mut input,
            &format!("agent ({})", agents.join(" | ")),
            DEFAULT_AGENT,
            check_agent,
        )?,
    };
    let provider = match &args.provider {
        Some(provider) => provider.clone(),
        None => ask(
            &mut input,
            &format!("provider ({})", providers::names().join(" | ")),
            DEFAULT_PROVIDER,
            check_provider,
        )?,
    };
    let authority = match authority {
        Some(choice) => choice,
        None => ask(
            &mut input,
            "authority (`local` or a URL like https://firma-auth.example)",
            "local",
            AuthorityChoice::parse,
        )?,
    };
    let audit_dir = match audit_dir {
        Some(dir) => Some(dir),
        None => ask(
            &mut input,
            "audit log directory (a persistent disk; empty: the state dir, wiped at reboot)",
            "",
            |answer| {
                if answer.is_empty() {
                    Ok(None)
                } else {
                    absolute(Path::new(answer)).map(Some)
                }
            },
        )?,
    };
    Ok(ScaffoldOptions {
        workspace,
        agent,
        provider,
        authority,
        authority_listen,
        sidecar_listen,
        state: state.with_audit_dir(audit_dir.clone()),
        data,
        force: args.force,
        audit_dir,
    })
}

/// `state_flag`: ` --state-dir X` when the operator chose the state dir with the flag, so the
/// printed next steps use the same one.
fn print_report(report: &ScaffoldReport, options: &ScaffoldOptions, state_flag: &str) {
    output::ok(format!(
        "firma project initialized in {}",
        report.project_dir.display()
    ));
    let mut kept = 0;
    for (path, outcome) in &report.files {
        let label = match outcome {
            FileOutcome::Written => "wrote",
            FileOutcome::Replaced => "replaced",
            FileOutcome::Kept => {
                kept += 1;
                "kept"
            }
        };
        println!("  {label:<9}{}", path.display());
    }
    println!(
        "  state dir {}  (pids, logs, audit.jsonl; never set in firma.toml)",
        report.state.path().display()
    );
    if let Some(dir) = &options.audit_dir {
        println!(
            "  audit dir {}  (audit.jsonl, its rotations and checkpoint)",
            dir.display()
        );
    }
    println!(
        "  data dir  {}  (revocations.txt)",
        report.data.path().display()
    );
    match &options.authority {
        AuthorityChoice::Local => println!(
            "  authority local, gRPC on {} (plain text on loopback)",
            options.authority_listen
        ),
        AuthorityChoice::Remote(url) => {
            println!("  authority remote at {url}");
            output::warn(format!(
                "copy the remote Authority's public key to {} before starting the sidecar",
                report.project_dir.join("authority.pub").display()
            ));
        }
    }
    if kept > 0 {
        output::warn(format!(
            "kept {kept} existing file(s); use --force to regenerate them"
        ));
    }
    if let Some(archive) = &report.archived_audit {
        output::warn(format!(
            "audit.key was regenerated; the previous audit log was moved to {}",
            archive.display()
        ));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let discovered = cwd.starts_with(
        report
            .config_path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/")),
    );
    let config_flag = if discovered {
        String::new()
    } else {
        format!(" --config {}", report.config_path.display())
    };
    output::next_steps(&[
        (
            format!("firma sidecar start{config_flag}{state_flag}"),
            "boot the Authority and the Sidecar",
        ),
        (
            format!("firma monitor{state_flag}"),
            "watch decisions and daemon logs",
        ),
    ]);
}
