//! The Sidecar's two long-lived streams from the Authority: `WatchPolicyBundle` and
//! `WatchRevocations`. Each runs in its own task and reconnects with exponential backoff
//! (250 ms doubling to 30 s, with jitter), so an Authority restart heals on its own. A bundle
//! that fails to parse is logged and the previous one kept; a bundle not refreshed within its
//! TTL is stale and every call is denied until a fresh one arrives.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::cedar::PolicyBundle;
use super::state::AuthorityState;
use crate::authority::client::Target;
use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;
use crate::proto::{WatchPolicyBundleRequest, WatchRevocationsRequest};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Check the Authority's address (scheme, loopback rule, CA, client identity) and build a
/// lazily connecting channel.
pub fn channel(target: &Target) -> Result<Channel, Hinted> {
    Ok(target.endpoint()?.connect_lazy())
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

    fn target(url: &str, allow_insecure: bool) -> Target {
        Target {
            url: url.into(),
            ca_cert: None,
            identity: None,
            allow_insecure,
            from: "test".into(),
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(channel(&target("http://127.0.0.1:1", false)).is_ok());
        assert!(channel(&target("http://localhost:1", false)).is_ok());
        assert!(channel(&target("http://[::1]:1", false)).is_ok());
        let err = channel(&target("http://10.0.0.1:1", false)).unwrap_err();
        assert!(err.hint_text().unwrap().contains("allow_insecure"));
        assert!(channel(&target("http://10.0.0.1:1", true)).is_ok());
        assert!(channel(&target("ftp://x", false)).is_err());
        assert!(channel(&target("https://a.example:1", false)).is_err());
    }
}
