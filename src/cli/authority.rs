//! `firma authority`: run the Authority (gRPC) in the foreground.

use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, not_yet};

#[derive(Debug, Args)]
pub struct AuthorityArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(_args: AuthorityArgs, _config: Option<PathBuf>) -> CommandResult {
    not_yet("firma authority")
}
