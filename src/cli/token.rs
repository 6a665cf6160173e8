//! `firma token issue | revoke`: drive the running Authority.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use std::path::Path;

use serde::Serialize;

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::{CommandResult, Outcome, output};
use crate::authority::client;
use crate::authority::service::from_timestamp;
use crate::config::schema::AuthorityMode;
use crate::config::{Discovery, LoadedConfig, dirs};
use crate::error::Hinted;
use crate::proto::{IssueCapabilityRequest, RevokeRequest};
use crate::state_dir::Role;

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
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Id of the token to revoke.
    pub token_id: String,
    /// Why (recorded in revocations.txt).
    #[arg(long, default_value = "operator-revoked")]
    pub reason: String,
    #[command(flatten)]
    pub state_dir: StateDirArg,
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

/// Where the running Authority is: `<state_dir>/authority.listen` (written by `sidecar start`),
/// else the config's `[authority]` listen address or URL.
struct Target {
    url: String,
    ca_cert: Option<PathBuf>,
    allow_insecure: bool,
    /// What told us the address, for messages.
    from: String,
}

fn locate(state_dir: Option<&Path>, config: Option<PathBuf>) -> Result<Target, Hinted> {
    let (state, source) = dirs::resolve_state_dir(state_dir);
    let listen_file = state.listen_file(Role::Authority);
    let loaded: Result<LoadedConfig, Hinted> = Discovery::new(config).load();
    if let Ok(l) = &loaded {
        let explicit = source == dirs::StateDirSource::Flag;
        super::project::refuse_other_project(&state, &l.path, explicit)?;
    }
    let (tls, ca_cert, allow_insecure) = match &loaded {
        Ok(l) => (
            l.config.authority.tls_cert.is_some(),
            l.config.sidecar.authority.ca_cert.clone(),
            l.config.sidecar.authority.allow_insecure,
        ),
        Err(_) => (false, None, false),
    };
    let scheme = if tls { "https" } else { "http" };
    match std::fs::read_to_string(&listen_file) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(Target {
                url: format!("{scheme}://{}", text.trim()),
                ca_cert,
                allow_insecure,
                from: listen_file.display().to_string(),
            });
        }
        _ => {}
    }
    let loaded = loaded?;
    let authority = &loaded.config.authority;
    let url = match (authority.mode, authority.listen, &authority.url) {
        (AuthorityMode::Remote, _, Some(url)) => url.clone(),
        (_, Some(listen), _) if listen.port() != 0 => {
            // A wildcard listen address is reached over loopback.
            let host = if listen.ip().is_unspecified() {
                if listen.is_ipv4() {
                    "127.0.0.1".to_string()
                } else {
                    "[::1]".to_string()
                }
            } else if listen.is_ipv6() {
                format!("[{}]", listen.ip())
            } else {
                listen.ip().to_string()
            };
            format!("{scheme}://{host}:{}", listen.port())
        }
        _ => {
            return Err(Hinted::new(format!(
                "cannot find the running Authority: no {} and [authority] in {} has no fixed address",
                listen_file.display(),
                loaded.path.display()
            ))
            .hint("start it with `firma sidecar start` (which writes authority.listen), or pass --state-dir"));
        }
    };
    Ok(Target {
        url,
        ca_cert,
        allow_insecure,
        from: loaded.path.display().to_string(),
    })
}

async fn connect(
    target: &Target,
) -> Result<crate::proto::authority_client::AuthorityClient<tonic::transport::Channel>, Hinted> {
    client::connect_with(
        &target.url,
        target.ca_cert.as_deref(),
        target.allow_insecure,
    )
    .await
    .map_err(|err| {
        Hinted::new(format!("{} (address from {})", err.message(), target.from))
            .hint(err.hint_text().unwrap_or_default())
    })
}

fn rpc_error(target: &Target, status: &tonic::Status) -> Hinted {
    match status.code() {
        tonic::Code::InvalidArgument => Hinted::new(format!(
            "the Authority rejected the request: {}",
            status.message()
        ))
        .hint("see `firma token issue --help` for the accepted values"),
        tonic::Code::Unavailable => Hinted::new(format!(
            "the Authority at {} is unavailable: {}",
            target.url,
            status.message()
        ))
        .hint("check that it is running (`firma sidecar status`)"),
        _ => Hinted::new(format!(
            "the Authority at {} failed: {} ({:?})",
            target.url,
            status.message(),
            status.code()
        ))
        .hint("see authority.log in the state directory"),
    }
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
    let mut client = connect(&target).await?;
    let response = client
        .issue_capability(IssueCapabilityRequest {
            agent_id: args.agent.clone(),
            actions: args.actions.clone(),
            resource_scope: args.scope.clone(),
            session_id: session.clone(),
            ttl_seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        })
        .await
        .map_err(|status| rpc_error(&target, &status))?
        .into_inner();
    if !response.granted {
        return Err(Hinted::new(format!(
            "the Authority denied the token ({}): {}",
            response.deny_reason, response.deny_message
        ))
        .hint("issuance is decided by the Cedar policies in issuance-policies/ (see docs/authority.md)"));
    }
    let expires_at = response
        .expires_at
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    if args.json.enabled() {
        let issued = IssuedJson {
            token: &response.token,
            token_id: &response.token_id,
            expires_at,
            agent_id: &args.agent,
            session_id: &session,
            actions: &args.actions,
            resource_scope: &args.scope,
        };
        json::print(Document::TokenIssue, &issued)?;
    } else {
        println!("{}", response.token);
        eprintln!("info: token id {} expires {expires_at}", response.token_id);
    }
    Ok(Outcome::Success)
}

async fn revoke(args: RevokeArgs, config: Option<PathBuf>) -> CommandResult {
    if let Err(why) = crate::authority::revocations::validate_token_id(&args.token_id) {
        return Err(Hinted::new(format!("<token-id>: {why}"))
            .hint("pass the token id printed by `firma token issue --json`"));
    }
    let target = locate(args.state_dir.as_deref(), config)?;
    let mut client = connect(&target).await?;
    let response = client
        .revoke(RevokeRequest {
            token_id: args.token_id.clone(),
            reason: args.reason.clone(),
        })
        .await
        .map_err(|status| rpc_error(&target, &status))?
        .into_inner();
    let at = response
        .revoked_at
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    if response.newly_revoked {
        output::ok(format!("revoked {} ({})", args.token_id, args.reason));
    } else {
        output::info(format!("{} was already revoked at {at}", args.token_id));
    }
    Ok(Outcome::Success)
}
