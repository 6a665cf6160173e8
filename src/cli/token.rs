//! `firma token issue | revoke`: drive the running Authority.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use std::path::Path;

use serde::Serialize;

use super::{CommandResult, Outcome, output};
use crate::authority::client::{CapabilityRequest, Target};
use crate::config::{Discovery, dirs};
use crate::error::Hinted;

const AFTER_HELP: &str = "\
Examples:
  firma token issue --agent codex --action communication.external.send --scope api.anthropic.com
  firma token issue --agent codex --action code.read --action code.write --ttl 1h --json
  firma token revoke 0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42 --reason \"leaked in CI logs\"

The running Authority is found through <state_dir>/authority.listen (written by
`firma sidecar start`), else [authority] listen (or url) in firma.toml. `issue` prints the token
alone on stdout. See docs/tokens.md and docs/authority.md.";

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
    /// Revoke a token by id.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Agent id (the token's principal).
    #[arg(long, value_name = "AGENT")]
    pub agent: String,
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
    /// Print the token, its id and expiry as JSON.
    #[arg(long)]
    pub json: bool,
    /// State directory holding authority.listen (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Id of the token to revoke.
    pub token_id: String,
    /// Why (recorded in revocations.txt).
    #[arg(long, default_value = "operator-revoked")]
    pub reason: String,
    /// State directory holding authority.listen (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(args: TokenArgs, config: Option<PathBuf>) -> CommandResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(async move {
        match args.command {
            TokenCommand::Issue(issue_args) => issue(issue_args, config).await,
            TokenCommand::Revoke(revoke_args) => revoke(revoke_args, config).await,
        }
    })
}

/// The running Authority, found the way every client finds it.
fn locate(state_dir: Option<&Path>, config: Option<PathBuf>) -> Result<Target, Hinted> {
    let (state, _) = dirs::resolve_state_dir(state_dir);
    let loaded = Discovery::new(config).load().ok();
    Target::locate(&state, loaded.as_ref())
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

async fn issue(args: IssueArgs, config: Option<PathBuf>) -> CommandResult {
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
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let target = locate(args.state_dir.as_deref(), config)?;
    let issued = target
        .issue(&CapabilityRequest {
            agent: args.agent.clone(),
            actions: args.actions.clone(),
            scope: args.scope.clone(),
            session_id: session.clone(),
            ttl,
        })
        .await?;
    let expires_at = issued
        .expires_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if args.json {
        let json = IssuedJson {
            token: &issued.token,
            token_id: &issued.token_id,
            expires_at,
            agent_id: &args.agent,
            session_id: &session,
            actions: &args.actions,
            resource_scope: &args.scope,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("plain struct")
        );
    } else {
        println!("{}", issued.token);
        eprintln!("info: token id {} expires {expires_at}", issued.token_id);
    }
    Ok(Outcome::Success)
}

async fn revoke(args: RevokeArgs, config: Option<PathBuf>) -> CommandResult {
    if let Err(why) = crate::authority::revocations::validate_token_id(&args.token_id) {
        return Err(Hinted::new(format!("<token-id>: {why}"))
            .hint("pass the token id printed by `firma token issue --json`"));
    }
    let target = locate(args.state_dir.as_deref(), config)?;
    let response = target.revoke(&args.token_id, &args.reason).await?;
    let at = response
        .revoked_at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    if response.newly_revoked {
        output::ok(format!("revoked {} ({})", args.token_id, args.reason));
    } else {
        output::info(format!("{} was already revoked at {at}", args.token_id));
    }
    Ok(Outcome::Success)
}
