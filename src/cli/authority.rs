//! `firma authority`: run the Authority (gRPC) in the foreground.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::flags::StateDirArg;
use super::{CommandResult, Outcome};
use crate::authority::server;
use crate::config::Discovery;
use crate::error::Hinted;
use crate::platform::signals::{Sig, Signals};

const AFTER_HELP: &str = "\
Serves firma.v1.Authority (IssueCapability, Revoke, WatchPolicyBundle, WatchRevocations), the
standard grpc.health.v1.Health service and gRPC server reflection on [authority].listen (port 0
picks a free port; the bound address is logged as `ready` with field `addr`). Edits of policies/
and issuance-policies/ are hot-reloaded; revocations live in $XDG_DATA_HOME/firma/revocations.txt.
The Authority publishes its health in the state directory (degraded while an older policy bundle
is in force). SIGTERM or SIGINT stops it within a second, open streams included. Logs are JSON lines when stderr
is not a terminal (FIRMA_LOG sets the filter, default info). See docs/authority.md.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct AuthorityArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

pub fn run(args: AuthorityArgs, config: Option<PathBuf>) -> CommandResult {
    let loaded = Discovery::new(config).load()?;
    let settings = server::Settings::from_config(&loaded.config.authority)?;
    super::logging::init_daemon_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    let config_path = loaded.path.clone();
    let result = runtime.block_on(async move {
        let mut signals = Signals::install(Sig::TERMINATE)?;
        let authority = server::start(settings).await?;
        let (state, _) = crate::config::dirs::resolve_state_dir(args.state_dir.as_deref());
        match crate::lifecycle::health::HealthReporter::new(state, crate::state_dir::Role::Authority) {
            Ok(reporter) => authority.stores().report_health_to(reporter),
            Err(err) => tracing::warn!(error = %err, "cannot publish health; status will not show a degraded bundle"),
        }
        let addr = authority.local_addr().to_string();
        tracing::info!(addr = %addr, config = %config_path.display(), "ready");
        if let Err(err) = crate::lifecycle::notify::notify_ready(&addr, "authority ready") {
            tracing::warn!("cannot send the readiness notification: {err}");
        }
        let signal = signals.recv().await;
        tracing::info!(signal = signal.name(), "shutting down");
        authority.shutdown().await;
        tracing::info!("stopped");
        Ok::<(), Hinted>(())
    });
    // Stragglers (aborted connection tasks) get a moment, never more.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.map(|()| Outcome::Success)
}
