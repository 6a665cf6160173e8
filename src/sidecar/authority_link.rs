//! The Sidecar's two long-lived streams from the Authority: `WatchPolicyBundle` and
//! `WatchRevocations`. Each runs in its own task and reconnects with exponential backoff
//! (250 ms doubling to 30 s, with jitter), so an Authority restart heals on its own. A bundle
//! that fails to parse is logged and the previous one kept; a bundle not refreshed within its
//! TTL is stale and every call is denied until a fresh one arrives.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::cedar::PolicyBundle;
use super::state::AuthorityState;
use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;
use crate::proto::{WatchPolicyBundleRequest, WatchRevocationsRequest};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Check the Authority URL and build a lazily connecting channel to it.
pub fn channel(url: &str, ca_cert: Option<&Path>, allow_insecure: bool) -> Result<Channel, Hinted> {
    let bad = |why: &str| {
        Hinted::new(format!("authority URL {url:?} {why}"))
            .hint("set [sidecar.authority].url to http://HOST:PORT or https://HOST:PORT")
    };
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !allow_insecure {
            return Err(Hinted::new(format!(
                "authority URL {url:?} is plain http to a non-loopback host"
            ))
            .hint("use https:// with [sidecar.authority].ca_cert, or set [sidecar.authority].allow_insecure = true"));
        }
        rest
    } else {
        return Err(bad("is not an http:// or https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|err| bad(&format!("is invalid: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let ca = ca_cert.ok_or_else(|| {
            Hinted::new(format!("authority URL {url:?} uses https but no CA is configured"))
                .hint("set [sidecar.authority].ca_cert to the PEM certificate that signed the Authority's")
        })?;
        let pem = std::fs::read(ca).map_err(|err| {
            Hinted::new(format!("cannot read authority CA {}: {err}", ca.display()))
                .hint("check [sidecar.authority].ca_cert")
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|err| bad(&format!("TLS setup failed: {err}")))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Start both stream tasks.
pub fn spawn(channel: Channel, url: String, state: Arc<AuthorityState>) {
    tokio::spawn(watch_bundles(channel.clone(), url.clone(), state.clone()));
    tokio::spawn(watch_revocations(channel, url, state));
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(MIN_BACKOFF)
    }
    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
    async fn wait(&mut self) {
        // ±15 % jitter from the clock's sub-second noise: enough to spread reconnect storms.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.85 + f64::from(nanos % 300) / 1000.0;
        tokio::time::sleep(self.0.mul_f64(jitter)).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

async fn watch_bundles(channel: Channel, url: String, state: Arc<AuthorityState>) {
    let mut client = AuthorityClient::new(channel);
    let mut backoff = Backoff::new();
    let mut current = String::new();
    loop {
        let request = WatchPolicyBundleRequest {
            current_version: current.clone(),
        };
        match client.watch_policy_bundle(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(wire)) => {
                            backoff.reset();
                            let ttl = Duration::from_secs(u64::from(wire.ttl_seconds));
                            match PolicyBundle::parse(
                                &wire.version,
                                &wire.policies,
                                &wire.schema,
                                ttl,
                            ) {
                                Ok((bundle, warnings)) => {
                                    for warning in warnings {
                                        tracing::warn!(bundle = %wire.version, %warning, "policy does not validate against the schema");
                                    }
                                    if wire.version != current {
                                        tracing::info!(bundle = %wire.version, policies = bundle.len(), ttl_s = wire.ttl_seconds, "policy bundle loaded");
                                    } else {
                                        tracing::debug!(bundle = %wire.version, "policy bundle refreshed");
                                    }
                                    current = wire.version.clone();
                                    state.set_bundle(bundle);
                                }
                                Err(err) => {
                                    tracing::error!(bundle = %wire.version, error = %err, "policy bundle rejected; keeping the previous one");
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(authority = %url, "policy bundle stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(authority = %url, error = %status.message(), "policy bundle stream failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(authority = %url, error = %status.message(), "cannot watch policy bundles; retrying");
            }
        }
        backoff.wait().await;
    }
}

async fn watch_revocations(channel: Channel, url: String, state: Arc<AuthorityState>) {
    let mut client = AuthorityClient::new(channel);
    let mut backoff = Backoff::new();
    loop {
        // Replaying everything on reconnect is cheap and cannot miss a revocation that shares a
        // timestamp with the last one seen.
        match client
            .watch_revocations(WatchRevocationsRequest { since: None })
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            backoff.reset();
                            if event.snapshot_complete {
                                if !state.readiness().revocations {
                                    tracing::info!("revocation snapshot received");
                                }
                                state.revocation_snapshot_complete();
                            } else if !event.token_id.is_empty() && state.revoke(&event.token_id) {
                                tracing::info!(token_id = %event.token_id, reason = %event.reason, "token revoked");
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(authority = %url, "revocation stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(authority = %url, error = %status.message(), "revocation stream failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(authority = %url, error = %status.message(), "cannot watch revocations; retrying");
            }
        }
        backoff.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(channel("http://127.0.0.1:1", None, false).is_ok());
        assert!(channel("http://localhost:1", None, false).is_ok());
        assert!(channel("http://[::1]:1", None, false).is_ok());
        let err = channel("http://10.0.0.1:1", None, false).unwrap_err();
        assert!(err.hint_text().unwrap().contains("allow_insecure"));
        assert!(channel("http://10.0.0.1:1", None, true).is_ok());
        assert!(channel("ftp://x", None, false).is_err());
        assert!(channel("https://a.example:1", None, false).is_err());
    }
}
