//! Connections to upstream servers: a pooled plain-HTTP client for absolute-form requests, and
//! TLS connections for decrypted (intercepted) HTTPS traffic.
//!
//! Upstream TLS trusts the Mozilla roots (webpki-roots) plus, when `FIRMA_SIDECAR_UPSTREAM_CA`
//! names a PEM file, every certificate in it — for internal services with a private CA (and for
//! tests with a local HTTPS upstream).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::Hinted;

/// Extra PEM CA bundle upstream TLS trusts, besides the Mozilla roots.
pub const UPSTREAM_CA_ENV: &str = "FIRMA_SIDECAR_UPSTREAM_CA";

pub type HttpClient = Client<HttpConnector, Incoming>;

/// Pooled keep-alive client for plain HTTP upstreams.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// TLS client settings for upstream servers.
pub fn tls_config() -> Result<Arc<ClientConfig>, Hinted> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os(UPSTREAM_CA_ENV).filter(|v| !v.is_empty()) {
        let path = Path::new(&path);
        let bad = |why: String| {
            Hinted::new(format!("{UPSTREAM_CA_ENV}={}: {why}", path.display()))
                .hint("point it at a PEM file of CA certificates, or unset it")
        };
        let pem = std::fs::read(path).map_err(|err| bad(err.to_string()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| bad(err.to_string()))?;
            roots.add(cert).map_err(|err| bad(err.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate found".into()));
        }
        tracing::info!(file = %path.display(), certificates = added, "trusting extra upstream CA certificates");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| Hinted::new(format!("upstream TLS: {err}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Open a TLS connection to `host:port` and an HTTP/1.1 client connection over it.
pub async fn connect_tls(
    tls: Arc<ClientConfig>,
    host: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|err| format!("connect {host}:{port}: {err}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_string())
        .map_err(|err| format!("server name {host:?}: {err}"))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS handshake with {host}:{port}: {err}"))?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake with {host}:{port}: {err}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream TLS connection closed");
        }
    });
    Ok(sender)
}
