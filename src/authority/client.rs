//! Connecting to an Authority: `http://` (plain, loopback only unless explicitly allowed) or
//! `https://` verified against a CA file. Shared by the Sidecar, `firma token` and `firma run`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connect to `url` (`http://ip:port` to loopback, or `https://host:port` with `ca_cert`).
pub async fn connect(
    url: &str,
    ca_cert: Option<&Path>,
) -> Result<AuthorityClient<Channel>, Hinted> {
    connect_with(url, ca_cert, false).await
}

/// [`connect`], optionally allowing plain `http://` to a non-loopback host (logged loudly).
pub async fn connect_with(
    url: &str,
    ca_cert: Option<&Path>,
    allow_insecure: bool,
) -> Result<AuthorityClient<Channel>, Hinted> {
    let endpoint = endpoint(url, ca_cert, allow_insecure)?;
    let channel = endpoint.connect().await.map_err(|err| {
        Hinted::new(format!(
            "cannot reach the Authority at {url}: {}",
            crate::error::chain(&err)
        ))
        .hint(
            "start it (`firma sidecar start`, or `firma authority` in the foreground), or check \
             the address, --state-dir and firma.toml",
        )
    })?;
    Ok(AuthorityClient::new(channel))
}

/// The configured (not yet connected) endpoint for `url`; checks scheme, loopback rule and CA.
pub fn endpoint(
    url: &str,
    ca_cert: Option<&Path>,
    allow_insecure: bool,
) -> Result<Endpoint, Hinted> {
    let uri: http::Uri = url.parse().map_err(|_| {
        Hinted::new(format!("{url:?} is not a URL"))
            .hint("use http://127.0.0.1:50051 or https://authority.example:50051")
    })?;
    let host = uri.host().unwrap_or_default().to_string();
    let base = Endpoint::from_shared(url.to_string())
        .map_err(|err| Hinted::new(format!("{url:?} is not a usable gRPC URL: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    match uri.scheme_str() {
        Some("http") => {
            if !is_loopback_host(&host) {
                if !allow_insecure {
                    return Err(Hinted::new(format!(
                        "refusing plain-text gRPC to {url}: {host} is not a loopback address"
                    ))
                    .hint(
                        "use https:// with a CA file ([sidecar.authority] ca_cert), or (not \
                         recommended) allow_insecure = true",
                    ));
                }
                tracing::warn!(
                    url,
                    "INSECURE: plain-text gRPC to a non-loopback Authority; tokens and policies travel unencrypted"
                );
            }
            Ok(base)
        }
        Some("https") => {
            let ca_cert = ca_cert.ok_or_else(|| {
                Hinted::new(format!("{url} uses TLS but no CA certificate is configured"))
                    .hint("set [sidecar.authority] ca_cert to the PEM file of the CA that signed the Authority's certificate")
            })?;
            let pem = std::fs::read(ca_cert).map_err(|err| {
                Hinted::new(format!(
                    "cannot read CA certificate {}: {err}",
                    ca_cert.display()
                ))
                .hint("fix [sidecar.authority] ca_cert in firma.toml")
            })?;
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
            base.tls_config(tls).map_err(|err| {
                Hinted::new(format!(
                    "TLS setup for {url} with CA {} failed: {}",
                    ca_cert.display(),
                    crate::error::chain(&err)
                ))
                .hint("the CA file must hold PEM certificates")
            })
        }
        _ => Err(Hinted::new(format!(
            "{url:?}: the Authority URL must start with http:// or https://"
        ))
        .hint("e.g. http://127.0.0.1:50051")),
    }
}

/// `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(endpoint("http://127.0.0.1:1", None, false).is_ok());
        assert!(endpoint("http://[::1]:1", None, false).is_ok());
        assert!(endpoint("http://localhost:1", None, false).is_ok());
        let err = endpoint("http://10.0.0.1:1", None, false).unwrap_err();
        assert!(err.message().contains("10.0.0.1"), "{err}");
        assert!(endpoint("http://10.0.0.1:1", None, true).is_ok());
        assert!(endpoint("https://a.example:1", None, false).is_err());
        assert!(endpoint("ftp://a:1", None, false).is_err());
    }
}
