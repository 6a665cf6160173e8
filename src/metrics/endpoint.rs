//! The metrics listener: `GET /metrics` answers the registry in OpenMetrics text, anything else
//! is 404/405. Its own port, never the proxy's; loopback unless the config allows otherwise
//! (checked when the config loads, and again here). The bound address is published in the state
//! dir (`<role>.metrics.listen`) so a scraper set up after start can find a port-0 listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::schema::MetricsConfig;
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::state_dir::{Role, StateDir};

/// What the OpenMetrics exposition format is served as.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A slow or silent client is dropped after this long.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Called before each scrape, to set the gauges that are read rather than counted (queue
/// depth, cache sizes, bundle age).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// What the listener serves.
pub struct Exposition {
    pub registry: Registry,
    pub refresh: Option<Refresh>,
}

impl Exposition {
    /// The registry as OpenMetrics text.
    pub fn render(&self) -> String {
        if let Some(refresh) = &self.refresh {
            refresh();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A running metrics listener; dropping it (or [`MetricsServer::shutdown`]) stops it and removes
/// the published address.
pub struct MetricsServer {
    addr: SocketAddr,
    published: Option<PathBuf>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(path) = &self.published {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The metrics address `role` published in `state`, if it serves metrics (another daemon's
/// listener, which the Sidecar keeps out of reach of calls).
pub fn published(state: &StateDir, role: Role) -> Option<SocketAddr> {
    std::fs::read_to_string(state.metrics_listen_file(role))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Start serving `exposition` as `config` says; `Ok(None)` when metrics are off. `role` names the
/// section in messages and the file the address is published in (when `state` is given).
pub async fn serve(
    config: &MetricsConfig,
    role: Role,
    state: Option<&StateDir>,
    exposition: Arc<Exposition>,
) -> Result<Option<MetricsServer>, Hinted> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    let section = format!("[{}.metrics]", role.name());
    if !listen.ip().is_loopback() && !config.allow_remote {
        return Err(Hinted::new(format!(
            "{section} listen {listen} is not a loopback address"
        ))
        .hint(format!(
            "serve metrics on 127.0.0.1, or set allow_remote = true in {section}"
        )));
    }
    let listener = TcpListener::bind(listen).await.map_err(|err| {
        Hinted::new(format!(
            "cannot listen for metrics on {listen} ({section} listen): {err}"
        ))
        .hint("pick a free port (0 picks one and publishes it in the state dir)")
    })?;
    let addr = listener
        .local_addr()
        .map_err(|err| Hinted::new(format!("metrics listener on {listen}: {err}")))?;
    let published = match state {
        Some(state) => {
            let path = state.metrics_listen_file(role);
            write_atomic(
                &path,
                format!("{addr}\n").as_bytes(),
                0o644,
                Durability::Volatile,
            )?;
            Some(path)
        }
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, exposition, stopped));
    tracing::info!(addr = %addr, "metrics endpoint listening (GET /metrics)");
    Ok(Some(MetricsServer {
        addr,
        published,
        stop,
        task: Some(task),
    }))
}

async fn accept_loop(
    listener: TcpListener,
    exposition: Arc<Exposition>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            () = until_stopped(&mut stopped) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let exposition = exposition.clone();
                async move { Ok::<_, Infallible>(answer(&request, &exposition)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
        });
    }
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn answer(request: &Request<Incoming>, exposition: &Exposition) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, exposition.render())
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "firma serves only /metrics here\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
