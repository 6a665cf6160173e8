//! The Authority's TLS listener: rustls with an optional client-certificate verifier
//! (`client_ca`). Handshakes run here rather than inside tonic so a refused one — an expired
//! certificate, one from another CA — is logged at `warn` with the peer's address instead of
//! vanishing at debug level.
//!
//! Client certificates are optional in the handshake (a presented one must verify): health checks
//! and reflection stay open to every caller, and the service gates its own methods
//! (`roles::Gate::MutualTls`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::Hinted;
use crate::log_throttle::{self, Throttle};

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loaded server TLS: the Authority's certificate and, with `client_ca`, the client verifier.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// Whether client certificates are checked against a `client_ca`.
    pub mutual: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Read `[authority] tls_cert`, `tls_key` and (optionally) `client_ca`.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, Hinted> {
        let chain = read_certs(cert, "tls_cert")?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|err| {
            Hinted::new(format!("cannot read the TLS key {}: {err}", key.display()))
                .hint("tls_key must be the PEM private key of tls_cert")
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| Hinted::new(format!("TLS set-up failed: {err}")))?;
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "client_ca")? {
                    roots.add(cert).map_err(|err| {
                        Hinted::new(format!(
                            "client_ca {} holds an unusable certificate: {err}",
                            ca.display()
                        ))
                        .hint("client_ca must be the PEM certificate of the CA that signs client certificates")
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|err| {
                            Hinted::new(format!("client_ca {} is unusable: {err}", ca.display()))
                                .hint("client_ca must hold at least one CA certificate")
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key_der).map_err(|err| {
            Hinted::new(format!(
                "TLS configuration ({}, {}) is unusable: {err}",
                cert.display(),
                key.display()
            ))
            .hint("tls_cert must be a PEM certificate chain and tls_key its PEM private key")
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mutual: client_ca.is_some(),
        })
    }

    /// Accept connections on `listener` and hand completed handshakes to the gRPC server.
    /// Ends (closing the listener) when the server drops the stream.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => break,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::debug!("accept failed: {err}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(err)) => log_refused(peer, &err.to_string()),
                        Err(_) => log_refused(peer, "handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn log_refused(peer: SocketAddr, why: &str) {
    static REFUSED: Throttle = Throttle::new(log_throttle::WINDOW);
    if let Some(left_out) = REFUSED.admit(&format!("{} {why}", peer.ip())) {
        tracing::warn!(%peer, left_out, "refused a TLS connection: {why}");
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, Hinted> {
    let hint = format!("[authority] {key} must be a PEM file of certificates");
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            Hinted::new(format!("cannot read {} ({key}): {err}", path.display())).hint(&hint)
        })?;
    if certs.is_empty() {
        return Err(
            Hinted::new(format!("{} ({key}) holds no certificate", path.display())).hint(hint),
        );
    }
    Ok(certs)
}
