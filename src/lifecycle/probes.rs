//! Readiness and health probes: a child's own `READY=1` says it is ready; these confirm it from
//! the outside. Authority: a real `grpc.health.v1.Health/Check` answering `SERVING`. Sidecar: its
//! listen port accepts a TCP connection and the generated CA material exists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::state_dir::StateDir;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A wildcard bind is dialled on loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Whether `addr` accepts a TCP connection within `timeout`.
pub async fn tcp_accepts(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(dialable(addr))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("{addr} does not accept connections: {err}")),
        Err(_) => Err(format!(
            "{addr} did not accept a connection within {timeout:?}"
        )),
    }
}

/// The CA files the Sidecar has not written yet.
pub fn missing_ca_files(state: &StateDir) -> Vec<PathBuf> {
    state
        .ca_files()
        .into_iter()
        .filter(|p| !p.is_file())
        .collect()
}

/// TLS material for probing an `https://` Authority.
#[derive(Debug, Clone, Default)]
pub struct ProbeTls {
    /// CA certificate (PEM) that signs the Authority's certificate.
    pub ca_cert: Option<PathBuf>,
}

/// `grpc.health.v1.Health/Check` (overall server health, service `""`) must answer `SERVING`.
pub async fn grpc_health(url: &str, tls: &ProbeTls, timeout: Duration) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|err| format!("invalid Authority URL {url}: {err}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if url.starts_with("https://") {
        // Like the Sidecar's own link: TLS to the Authority is verified against the configured CA.
        let ca = tls
            .ca_cert
            .as_ref()
            .ok_or_else(|| format!("{url} uses TLS but [sidecar.authority].ca_cert is not set"))?;
        let pem = std::fs::read(ca)
            .map_err(|err| format!("cannot read CA certificate {}: {err}", ca.display()))?;
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        endpoint = endpoint
            .tls_config(config)
            .map_err(|err| format!("TLS setup for {url}: {err}"))?;
    }
    let check = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| format!("cannot connect to {url}: {}", crate::error::chain(&err)))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| format!("health check at {url} failed: {}", status.message()))?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!(
                "health check at {url} answered {}",
                other.as_str_name()
            )),
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("health check at {url} timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_dialled_on_loopback() {
        assert_eq!(
            dialable("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            dialable("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            dialable("10.0.0.1:80".parse().unwrap()),
            "10.0.0.1:80".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn tcp_probe_sees_a_listener_and_its_absence() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        tcp_accepts(addr, Duration::from_secs(2)).await.unwrap();
        drop(listener);
        assert!(tcp_accepts(addr, Duration::from_secs(2)).await.is_err());
    }

    #[tokio::test]
    async fn health_probe_fails_on_a_closed_port() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = grpc_health(
            &format!("http://{addr}"),
            &ProbeTls::default(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
