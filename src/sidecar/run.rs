//! `firma sidecar`: the daemon's startup order and shutdown.
//!
//! 1. load `firma.toml`, the mapping rules, the Authority's public key and the audit key;
//! 2. open the audit log and load (or generate) the CA in the state dir;
//! 3. connect to the Authority and wait for the first policy bundle and the revocation
//!    snapshot — a call is never judged against no policy;
//! 4. only then open the listen port, log `ready` with the bound address and notify the
//!    supervisor; 5. on SIGTERM/SIGINT stop accepting, drain briefly, exit 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::audit_sink::AuditSink;
use super::authority_link;
use super::ca::{CaOrigin, CertificateAuthority};
use super::destination::{Destinations, Resolver};
use super::mapping::MappingTable;
use super::pipeline::Pipeline;
use super::proxy::Proxy;
use super::request_threads;
use super::state::AuthorityState;
use super::token_cache::VerifiedTokens;
use super::upstream;
use crate::audit::writer::{AuditWriter, WriterOptions};
use crate::authority::signed::Pinned;
use crate::authority::token::TrustedIssuer;
use crate::config::dirs::{ensure_private_dir, resolve_state_dir};
use crate::config::{Discovery, keys};
use crate::error::Hinted;
use crate::metrics::endpoint::{self, MetricsServer};
use crate::metrics::sidecar as sidecar_metrics;
use crate::platform::signals::{Sig, Signals};
use crate::state_dir::Role;

/// How long in-flight requests may finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

/// What the command line hands the daemon.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub authority_url: Option<String>,
}

/// Run the Sidecar until it is told to stop. Errors are startup failures.
pub fn run(options: RunOptions) -> Result<(), Hinted> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Requests are served on their own threads (`request_threads`); this runtime runs the
        // Authority streams, the control socket and signals.
        .worker_threads(1)
        .enable_all()
        .thread_name("firma-sidecar")
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(serve(options))
}

async fn serve(options: RunOptions) -> Result<(), Hinted> {
    let loaded = Discovery::new(options.config.clone()).load()?;
    let config = loaded.config.sidecar.clone();
    let (state, _) = resolve_state_dir(options.state_dir.as_deref());
    ensure_private_dir(state.path())?;

    let mapping = MappingTable::load(&config.mapping.rules)?;
    let authority_key = keys::load_verifying_key(&config.authority.public_key)?;
    let audit_key = keys::load_signing_key(&config.audit.key)?;
    let state = crate::audit::place::place(state, config.audit.dir.clone())?;
    let audit_path = state.audit_log();
    let (writer, report) = AuditWriter::open(
        &audit_path,
        audit_key,
        WriterOptions::from_config(&config.audit),
    )?;
    if let Some(torn) = &report.torn_tail {
        // A crash left half a line: it is kept and a signed marker starts a new segment.
        tracing::warn!(
            path = %audit_path.display(),
            torn = ?torn,
            marker_seq = report.marker_seq,
            "audit log had a torn last line (crash?); started a new segment after it"
        );
    }
    if report.completed_rotation {
        tracing::warn!(
            path = %audit_path.display(),
            marker_seq = report.marker_seq,
            "audit log rotation had been cut short (crash?); completed it"
        );
    }
    if let Some(from) = report.upgraded_from {
        tracing::info!(
            path = %audit_path.display(),
            from,
            marker_seq = report.marker_seq,
            "audit log continues in the current record format after a segment marker"
        );
    }
    tracing::info!(
        path = %audit_path.display(),
        resumed_seq = report.resumed_seq,
        "audit log open"
    );
    // Rotation and health for `firma audit rotate`, `status` and `doctor`.
    let _control = crate::audit::control::serve(&state.sidecar_socket(), writer.clone())?;
    let writer = Arc::new(writer);

    let (ca, origin) = CertificateAuthority::load_or_generate(&state)?;
    match origin {
        CaOrigin::Generated => {
            tracing::info!(cert = %ca.cert_path.display(), "generated the interception CA")
        }
        CaOrigin::Loaded => {
            tracing::info!(cert = %ca.cert_path.display(), "loaded the interception CA")
        }
    }
    let tls = upstream::tls_config()?;
    let resolver = Resolver::from_env()?;

    let link = authority_link::Link::new(&loaded, options.authority_url.clone()).await?;
    let url = link.replicas.names();
    let authority = Arc::new(AuthorityState::default());
    link.spawn(authority.clone(), Pinned::new(authority_key));
    let witness = link.reporter(state.audit_checkpoint());

    // `[sidecar.metrics]`: a listener of its own, up before the first bundle (so a scrape shows
    // `ready 0`); like every firma listener, no call through the proxy may reach it.
    let exposition = sidecar_metrics::exposition(authority.clone(), writer.health());
    let metrics = endpoint::serve(
        &config.metrics,
        Role::Sidecar,
        Some(&state),
        Arc::new(exposition),
    )
    .await?;

    let mut signals = Signals::install(Sig::TERMINATE)?;

    tracing::info!(authority = %url, "waiting for the first policy bundle and the revocation snapshot");
    tokio::select! {
        _ = authority.wait_ready() => {}
        _ = signals.recv() => return close_audit(&writer),
    }

    let listener = TcpListener::bind(config.proxy.listen).await.map_err(|err| {
        Hinted::new(format!(
            "cannot listen on {} ([sidecar.proxy].listen): {err}",
            config.proxy.listen
        ))
        .hint("another process uses the address: stop it (`firma sidecar stop`), or change [sidecar.proxy].listen (port 0 picks a free port)")
    })?;
    let addr = listener
        .local_addr()
        .map_err(|err| Hinted::new(format!("cannot read the bound address: {err}")))?;

    let mut listeners = vec![addr];
    listeners.extend(authority_addrs(&url).await);
    listeners.extend(metrics.as_ref().map(MetricsServer::local_addr));
    listeners.extend(endpoint::published(&state, Role::Authority));
    let destinations = Destinations::new(resolver, listeners, state.relay_listen_dir());
    let pipeline = Pipeline {
        mapping,
        unmapped: config.mapping.unmapped,
        verifier: Arc::new(VerifiedTokens::new(TrustedIssuer::new(
            authority_key,
            loaded.deployment(),
        ))),
        authority: authority.clone(),
        audit: AuditSink::new((*writer).clone()),
    };
    let proxy = Arc::new(Proxy {
        pipeline,
        destinations,
        tls,
        ca: Arc::new(ca),
        intercept_hosts: config
            .proxy
            .intercept_hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        upstream_timeout: config.proxy.upstream_timeout,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(request_threads::serve(
        proxy,
        listener,
        request_threads::count(),
        stop_rx,
        DRAIN,
    )?);

    let bundle = authority
        .bundle()
        .map(|b| b.version.clone())
        .unwrap_or_default();
    tracing::info!(addr = %addr, bundle = %bundle, config = %loaded.path.display(), "ready");
    if let Err(err) = crate::lifecycle::notify::notify_ready(&addr.to_string(), "sidecar ready") {
        tracing::warn!(error = %err, "cannot send the readiness notification");
    }

    tokio::select! {
        sig = signals.recv() => tracing::info!("{sig}: draining"),
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    close_audit(&writer)?;
    // The final checkpoint, so the witness holds the log's last record.
    witness.flush(Duration::from_millis(500)).await;
    tracing::info!("stopped");
    Ok(())
}

/// The addresses the Authority's URL reaches: never a destination of a call.
async fn authority_addrs(url: &str) -> Vec<std::net::SocketAddr> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Vec::new();
    };
    let Some(host) = uri.host() else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(err) => {
            tracing::warn!(authority = %url, error = %err, "cannot resolve the Authority's address to keep it unreachable through the proxy");
            Vec::new()
        }
    }
}

/// Flush the audit log and write its final checkpoint.
fn close_audit(writer: &AuditWriter) -> Result<(), Hinted> {
    writer.shutdown().inspect_err(|err| {
        tracing::error!(error = %err, "audit log did not close cleanly");
    })
}
