//! `firma token issue | revoke`: drive the running Authority.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, not_yet};

#[derive(Debug, Args)]
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
    /// Resource scope (`*`, a host, or host/path prefix).
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

pub fn run(_args: TokenArgs, _config: Option<PathBuf>) -> CommandResult {
    not_yet("firma token")
}
