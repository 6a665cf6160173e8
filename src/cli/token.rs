//! `firma token issue | revoke | inspect`: drive the running Authority, read a token.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::{CommandResult, Outcome, output};
use crate::authority::client::{CapabilityRequest, Target};
use crate::authority::inspect::{self, Inspection, RevocationStatus, Validity};
use crate::authority::signed::Pinned;
use crate::config::{Discovery, LoadedConfig, dirs, keys};
use crate::error::Hinted;

const AFTER_HELP: &str = "\
Examples:
  firma token issue --action communication.external.send --scope api.anthropic.com
  firma token issue --agent codex --action code.read --action code.write --ttl 1h --json
  firma token inspect \"$TOKEN\" --json
  firma token revoke 0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42 --reason \"leaked in CI logs\"
  firma token revoke \"$TOKEN\"

A local Authority is reached over its operator socket <state_dir>/authority.sock (only its own
user may mint and revoke there); a remote one at [authority] url with the operator certificate
[authority] client_cert. `issue` prints the token alone on stdout. See docs/tokens.md and
docs/authority.md.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Ask the Authority for a capability token.
    Issue(IssueArgs),
    /// Revoke a token, by id or given whole.
    Revoke(RevokeArgs),
    /// Verify a token and show its claims, expiry and revocation status (exit 1: not usable).
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Agent id (the token's principal) [default: [project].agent].
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
    /// Action class to grant (repeatable).
    #[arg(long = "action", value_name = "CLASS", required = true)]
    pub actions: Vec<String>,
    /// Session id [default: a new UUID].
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Resource scope: `*`, a host, `*.domain`, or a host/path prefix.
    #[arg(long, value_name = "SCOPE", default_value = "*")]
    pub scope: String,
    /// Requested lifetime (clamped to the Authority's max_ttl).
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub ttl: String,
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (a UUID), or the whole token (verified first, then its id is revoked).
    #[arg(value_name = "TOKEN")]
    pub token: String,
    /// Why (recorded in revocations.txt).
    #[arg(long, default_value = "operator-revoked")]
    pub reason: String,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The token (`v4.public.…`).
    #[arg(value_name = "TOKEN")]
    pub token: String,
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: TokenArgs, config: Option<PathBuf>) -> CommandResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(async move {
        let loaded = Discovery::new(config).load_optional()?;
        match args.command {
            TokenCommand::Issue(args) => issue(args, loaded).await,
            TokenCommand::Revoke(args) => revoke(args, loaded).await,
            TokenCommand::Inspect(args) => inspect(args, loaded).await,
        }
    })
}

/// The running Authority, found the way every client finds it — refusing the stack of another
/// project unless the state dir was named explicitly.
pub(super) fn locate(
    state_dir: Option<&Path>,
    loaded: Option<&LoadedConfig>,
) -> Result<Target, Hinted> {
    let (state, source) = dirs::resolve_state_dir(state_dir);
    if let Some(loaded) = loaded {
        let explicit = source == dirs::StateDirSource::Flag;
        super::project::refuse_other_project(&state, &loaded.path, explicit)?;
    }
    Target::locate(&state, loaded)
}

/// The Authority's public key the project pins (`[sidecar.authority] public_key`).
fn pinned_key(
    loaded: Option<&LoadedConfig>,
) -> Result<Option<(ed25519_dalek::VerifyingKey, PathBuf)>, Hinted> {
    let Some(loaded) = loaded else {
        return Ok(None);
    };
    let path = loaded.config.sidecar.authority.public_key.clone();
    Ok(Some((keys::load_verifying_key(&path)?, path)))
}

#[derive(Serialize)]
struct IssuedJson<'a> {
    token: &'a str,
    token_id: &'a str,
    expires_at: String,
    agent_id: &'a str,
    session_id: &'a str,
    actions: &'a [String],
    resource_scope: &'a str,
}

async fn issue(args: IssueArgs, loaded: Option<LoadedConfig>) -> CommandResult {
    let ttl = humantime::parse_duration(&args.ttl).map_err(|err| {
        Hinted::new(format!("--ttl {:?} is not a duration: {err}", args.ttl))
            .hint("use e.g. --ttl 15m, --ttl 1h, --ttl 90s")
    })?;
    if ttl.as_secs() == 0 {
        return Err(
            Hinted::new(format!("--ttl {:?} is shorter than a second", args.ttl))
                .hint("use e.g. --ttl 15m"),
        );
    }
    let agent = match (&args.agent, &loaded) {
        (Some(agent), _) => agent.clone(),
        (None, Some(l)) => l.config.project.agent.clone(),
        (None, None) => {
            return Err(Hinted::new("--agent is required outside a project").hint(
                "pass --agent <id>, or run inside a project (its [project].agent is the default)",
            ));
        }
    };
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let target = locate(args.state_dir.as_deref(), loaded.as_ref())?;
    let issued = target
        .issue(&CapabilityRequest {
            agent: agent.clone(),
            actions: args.actions.clone(),
            scope: args.scope.clone(),
            session_id: session.clone(),
            sandbox_id: String::new(),
            ttl,
        })
        .await?;
    let expires_at = issued
        .expires_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if args.json.enabled() {
        let issued_json = IssuedJson {
            token: &issued.token,
            token_id: &issued.token_id,
            expires_at,
            agent_id: &agent,
            session_id: &session,
            actions: &args.actions,
            resource_scope: &args.scope,
        };
        json::print(Document::TokenIssue, &issued_json)?;
    } else {
        println!("{}", issued.token);
        eprintln!(
            "info: token id {} for agent {agent} expires {expires_at}",
            issued.token_id
        );
    }
    Ok(Outcome::Success)
}

async fn revoke(args: RevokeArgs, loaded: Option<LoadedConfig>) -> CommandResult {
    let key = if inspect::is_token(&args.token) {
        pinned_key(loaded.as_ref())?
    } else {
        None
    };
    let target = inspect::revoke_target(
        &args.token,
        key.as_ref().map(|(key, path)| (key, path.as_path())),
    )?;
    let authority = locate(args.state_dir.as_deref(), loaded.as_ref())?;
    let response = authority
        .revoke(&target.token_id, &args.reason, target.expires_at)
        .await?;
    let at = response
        .revoked_at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    if response.newly_revoked {
        output::ok(format!("revoked {} ({})", target.token_id, args.reason));
    } else {
        output::info(format!("{} was already revoked at {at}", target.token_id));
    }
    Ok(Outcome::Success)
}

async fn inspect(args: InspectArgs, loaded: Option<LoadedConfig>) -> CommandResult {
    let loaded = loaded.ok_or_else(|| {
        Hinted::new(
            "a token is verified with the project's authority.pub, but no firma.toml was found",
        )
        .hint("run inside the project, or pass --config")
    })?;
    let (key, key_file) = pinned_key(Some(&loaded))?.expect("a loaded config names a key");
    let mut report = Inspection::verify(
        &args.token,
        &key,
        &key_file,
        &loaded.deployment(),
        chrono::Utc::now(),
    )?;
    report.revocation = match locate(args.state_dir.as_deref(), Some(&loaded)) {
        Ok(authority) => match authority
            .revocation_of(&report.token_id, &Pinned::new(key))
            .await
        {
            Ok(Some((revoked_at, reason))) => RevocationStatus::Revoked { revoked_at, reason },
            Ok(None) => RevocationStatus::NotRevoked,
            Err(err) => RevocationStatus::Unknown {
                why: err.message().to_string(),
            },
        },
        Err(err) => RevocationStatus::Unknown {
            why: err.message().to_string(),
        },
    };
    if args.json.enabled() {
        json::print(Document::TokenInspect, &report)?;
    } else {
        print!("{}", render(&report, chrono::Utc::now()));
    }
    Ok(if report.is_usable() {
        Outcome::Success
    } else {
        Outcome::FoundProblems
    })
}

/// The human report: one `label  value` line per fact, the verdict last.
fn render(report: &Inspection, now: chrono::DateTime<chrono::Utc>) -> String {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ago = |d: chrono::Duration| {
        humantime::format_duration(std::time::Duration::from_secs(
            d.num_seconds().unsigned_abs(),
        ))
        .to_string()
    };
    let expiry = match report.validity {
        Validity::Expired => format!(
            "{} (expired {} ago)",
            time(&report.expires_at),
            ago(now - report.expires_at)
        ),
        _ => format!(
            "{} (in {})",
            time(&report.expires_at),
            ago(report.expires_at - now)
        ),
    };
    let audience = if report.audience_matches {
        report.audience.clone()
    } else {
        format!(
            "{} (this project's Sidecars serve {:?} and refuse it)",
            report.audience, report.expected_audience
        )
    };
    let revocation = match &report.revocation {
        RevocationStatus::NotRevoked => "not revoked".to_string(),
        RevocationStatus::Revoked { revoked_at, reason } => {
            format!("REVOKED at {} ({reason})", time(revoked_at))
        }
        RevocationStatus::Unknown { why } => format!("unknown: {why}"),
    };
    let verdict = if report.is_usable() {
        "usable".to_string()
    } else {
        let mut why = Vec::new();
        match report.validity {
            Validity::Expired => why.push("expired"),
            Validity::NotYetValid => why.push("not yet valid"),
            Validity::Valid => {}
        }
        if !report.audience_matches {
            why.push("another deployment");
        }
        if matches!(report.revocation, RevocationStatus::Revoked { .. }) {
            why.push("revoked");
        }
        format!("NOT usable: {}", why.join(", "))
    };
    let rows = [
        ("token id", report.token_id.clone()),
        ("agent", report.agent_id.clone()),
        ("session", report.session_id.clone()),
        ("actions", report.actions.join(", ")),
        ("scope", report.resource_scope.clone()),
        ("audience", audience),
        ("issuer", report.issuer.clone()),
        (
            "verified",
            format!("signature ok with {}", report.verified_with),
        ),
        ("issued", time(&report.issued_at)),
        ("expires", expiry),
        ("revocation", revocation),
        ("status", verdict),
    ];
    rows.iter()
        .map(|(label, value)| format!("{label:<11} {value}\n"))
        .collect()
}
