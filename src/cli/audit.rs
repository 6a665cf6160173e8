//! `firma audit verify`: prove `audit.jsonl` untampered.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, not_yet};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify signatures, the hash chain and the checkpoint; report the first bad line.
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
    /// Machine-readable report.
    #[arg(long)]
    pub json: bool,
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(_args: AuditArgs, _config: Option<PathBuf>) -> CommandResult {
    not_yet("firma audit verify")
}
