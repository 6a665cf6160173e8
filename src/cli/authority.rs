//! `firma authority`: run the Authority (gRPC) in the foreground.

use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Outcome};
use crate::authority::run::{RunOptions, run as run_authority};

const AFTER_HELP: &str = "\
Serves firma.v1.Authority (IssueCapability, Revoke, WatchPolicyBundle, WatchRevocations), the
standard grpc.health.v1.Health service and gRPC server reflection on [authority].listen (port 0
picks a free port; the bound address is logged as `ready` with field `addr`). Edits of policies/
and issuance-policies/ are hot-reloaded; revocations live in $XDG_DATA_HOME/firma/revocations.txt.
SIGTERM, SIGINT or SIGHUP stops it within a second, open streams included. Logs are JSON lines
when stderr is not a terminal (FIRMA_LOG sets the filter, default info). See docs/authority.md.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct AuthorityArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(args: AuthorityArgs, config: Option<PathBuf>) -> CommandResult {
    super::logging::init_daemon_logging();
    run_authority(RunOptions {
        config,
        state_dir: args.state_dir,
    })?;
    Ok(Outcome::Success)
}
