//! Connections to upstream servers: plain HTTP/1.1 for absolute-form requests, and TLS for
//! decrypted (intercepted) HTTPS traffic. Each client connection keeps its own upstream
//! connection alive between requests (see `proxy.rs`).
//!
//! Upstream TLS trusts the Mozilla roots (webpki-roots) plus, when `FIRMA_SIDECAR_UPSTREAM_CA`
//! names a PEM file, every certificate in it — for internal services with a private CA (and for
//! tests with a local HTTPS upstream).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::Hinted;

/// Extra PEM CA bundle upstream TLS trusts, besides the Mozilla roots.
pub const UPSTREAM_CA_ENV: &str = "FIRMA_SIDECAR_UPSTREAM_CA";

/// Open a TCP connection to `addr` (the address the call was decided and recorded with; `host`
/// names it in messages).
pub async fn connect_tcp(host: &str, addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect {host} ({addr}): {err}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Open a plain TCP connection to `addr` and an HTTP/1.1 client connection over it.
pub async fn connect_http(host: &str, addr: SocketAddr) -> Result<SendRequest<Incoming>, String> {
    let tcp = connect_tcp(host, addr).await?;
    handshake(TokioIo::new(tcp), host, addr).await
}

async fn handshake<T>(io: T, host: &str, addr: SocketAddr) -> Result<SendRequest<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|err| format!("HTTP handshake with {host} ({addr}): {err}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection closed");
        }
    });
    Ok(sender)
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

/// Open a TLS connection to `addr`, verifying the certificate for `host`, and an HTTP/1.1
/// client connection over it.
pub async fn connect_tls(
    tls: Arc<ClientConfig>,
    host: &str,
    addr: SocketAddr,
) -> Result<SendRequest<Incoming>, String> {
    let tcp = connect_tcp(host, addr).await?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|err| format!("server name {host:?}: {err}"))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS handshake with {host} ({addr}): {err}"))?;
    handshake(TokioIo::new(stream), host, addr).await
}
