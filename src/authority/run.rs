//! `firma authority`: the daemon's runtime — load, serve, publish health, announce readiness,
//! and stop on SIGTERM/SIGINT within a second (the Sidecar's twin is `sidecar::run`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::server;
use crate::config::Discovery;
use crate::config::dirs::resolve_state_dir;
use crate::config::schema::MetricsConfig;
use crate::error::Hinted;
use crate::metrics::authority::metrics;
use crate::metrics::endpoint::{self, Exposition, MetricsServer};
use crate::platform::signals::{Sig, Signals};
use crate::state_dir::{Role, StateDir};

/// What the command line hands the daemon.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

/// Run the Authority until it is told to stop. Errors are start-up failures.
pub fn run(options: RunOptions) -> Result<(), Hinted> {
    let loaded = Discovery::new(options.config).load()?;
    let (state, _) = resolve_state_dir(options.state_dir.as_deref());
    let settings = server::Settings::from_config(&loaded, &state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("firma-authority")
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    let config_path = loaded.path.clone();
    let metrics_config = loaded.config.authority.metrics.clone();
    let result = runtime.block_on(async move {
        let mut signals = Signals::install(Sig::TERMINATE)?;
        let authority = server::start(settings).await?;
        let metrics = serve_metrics(&metrics_config, &state, &authority).await?;
        match crate::lifecycle::health::HealthReporter::new(
            state.clone(),
            crate::state_dir::Role::Authority,
        ) {
            Ok(reporter) => authority.stores().report_health_to(reporter),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot publish health; status will not show a degraded bundle"
            ),
        }
        let addr = authority.local_addr().to_string();
        tracing::info!(addr = %addr, config = %config_path.display(), "ready");
        if let Err(err) = crate::lifecycle::notify::notify_ready(&addr, "authority ready") {
            tracing::warn!("cannot send the readiness notification: {err}");
        }
        let signal = signals.recv().await;
        tracing::info!(signal = signal.name(), "shutting down");
        if let Some(metrics) = metrics {
            metrics.shutdown().await;
        }
        authority.shutdown().await;
        tracing::info!("stopped");
        Ok::<(), Hinted>(())
    });
    // Stragglers (aborted connection tasks) get a moment, never more.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// `[authority.metrics]`: the Prometheus endpoint, when configured (the revocations held are
/// read at each scrape).
async fn serve_metrics(
    config: &MetricsConfig,
    state: &StateDir,
    authority: &server::Authority,
) -> Result<Option<MetricsServer>, Hinted> {
    let store = authority.store().clone();
    let exposition = Exposition {
        registry: metrics().registry(),
        refresh: Some(Arc::new(move || {
            metrics().set_revoked_tokens(store.revocation_count());
        })),
    };
    endpoint::serve(config, Role::Authority, Some(state), Arc::new(exposition)).await
}
