//! The Sidecar's two long-lived streams from the Authority: `WatchPolicyBundle` and
//! `WatchRevocations`. Each runs in its own task and reconnects with exponential backoff
//! (250 ms doubling to 30 s, with jitter), so an Authority restart heals on its own. A bundle
//! that fails to parse is logged and the previous one kept; a bundle not refreshed within its
//! TTL is stale and every call is denied until a fresh one arrives.
//!
//! Everything on both streams is signed by the Authority key (`authority::signed`) and checked
//! against the pinned `authority.pub` before it is used. What does not verify is refused and
//! logged (`error`), and the stream is dropped and re-dialled: a rogue process on the
//! Authority's address never gets its bundle enforced, nor can it withhold revocations from the
//! snapshot the Sidecar waits for before it reports ready. A bundle must also be newer than the
//! one in force and still within its TTL, and a snapshot at most [`SNAPSHOT_MAX_AGE`] old, so a
//! recorded genuine message cannot be replayed later.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::cedar::PolicyBundle;
use super::state::AuthorityState;
use crate::authority::client::Target;
use crate::authority::signed::{Pinned, SnapshotDigest};
use crate::authority::token::LEEWAY_SECONDS;
use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;
use crate::proto::{ReportCheckpointRequest, WatchPolicyBundleRequest, WatchRevocationsRequest};

/// How often the audit checkpoint file is looked at for a new checkpoint to report.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How far a revocation snapshot's `sent_at` may be from this host's clock.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(60);

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Check the Authority's address (scheme, loopback rule, CA, client identity) and build a
/// lazily connecting channel.
pub fn channel(target: &Target) -> Result<Channel, Hinted> {
    Ok(target.endpoint()?.connect_lazy())
}

/// Start both stream tasks; `pinned` is the Authority key everything must be signed with.
pub fn spawn(channel: Channel, url: String, state: Arc<AuthorityState>, pinned: Pinned) {
    tokio::spawn(watch_bundles(
        channel.clone(),
        url.clone(),
        state.clone(),
        pinned.clone(),
    ));
    tokio::spawn(watch_revocations(channel, url, state, pinned));
}

/// Reports each new signed audit checkpoint to the Authority, to be witnessed there
/// (`ReportCheckpoint`). The checkpoint file is looked at every [`REPORT_EVERY`] (it is replaced
/// atomically, so a read sees a whole checkpoint); [`Self::flush`] reports the last one at
/// shutdown.
pub struct CheckpointReporter {
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl CheckpointReporter {
    /// Start reporting `checkpoint` (the file) as Sidecar `sidecar_id`.
    pub fn spawn(channel: Channel, url: String, checkpoint: PathBuf, sidecar_id: String) -> Self {
        let (flush, requests) = mpsc::channel(1);
        tokio::spawn(report_checkpoints(
            channel, url, checkpoint, sidecar_id, requests,
        ));
        Self { flush }
    }

    /// Report the current checkpoint now (waiting at most `timeout`): the final one, written
    /// when the audit log closed.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

async fn report_checkpoints(
    channel: Channel,
    url: String,
    checkpoint: PathBuf,
    sidecar_id: String,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut client = AuthorityClient::new(channel);
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<Vec<u8>> = None;
    let mut last_error: Option<String> = None;
    loop {
        let flush = tokio::select! {
            _ = tick.tick() => None,
            request = flushes.recv() => match request {
                Some(done) => Some(done),
                None => break,
            },
        };
        let current = std::fs::read(&checkpoint).ok();
        if let Some(bytes) = current.filter(|b| reported.as_ref() != Some(b)) {
            let request = ReportCheckpointRequest {
                sidecar_id: sidecar_id.clone(),
                checkpoint: bytes.clone(),
            };
            match client.report_checkpoint(request).await {
                Ok(response) => {
                    if last_error.take().is_some() {
                        tracing::info!(authority = %url, "audit checkpoints are witnessed again");
                    }
                    tracing::debug!(
                        seq = response.into_inner().witnessed_seq,
                        "checkpoint witnessed"
                    );
                    reported = Some(bytes);
                }
                Err(status) => {
                    let why = status.message().to_string();
                    // Once per distinct problem: it is retried every second.
                    if last_error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(authority = %url, sidecar = %sidecar_id, code = ?status.code(), "the Authority did not witness the audit checkpoint: {why}");
                        last_error = Some(why);
                    }
                }
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

/// Whether a verified bundle sent at `sent_at` may replace one sent at `previous`: not older,
/// and not already past its TTL (a replay of a recorded bundle).
fn fresh_bundle(
    sent_at: DateTime<Utc>,
    ttl: Duration,
    previous: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if previous.is_some_and(|p| sent_at < p) {
        return Err(format!(
            "it was sent at {sent_at}, before the bundle in force (a replayed older bundle)"
        ));
    }
    let leeway = chrono::Duration::seconds(LEEWAY_SECONDS);
    let expires = sent_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    if expires + leeway < now {
        return Err(format!(
            "it was sent at {sent_at} and expired at {expires} (a replayed bundle, or clocks apart)"
        ));
    }
    Ok(())
}

/// Whether a verified snapshot sent at `sent_at` is recent.
fn fresh_snapshot(sent_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    let skew = (now - sent_at).abs().to_std().unwrap_or(Duration::MAX);
    if skew > SNAPSHOT_MAX_AGE {
        return Err(format!(
            "it was taken at {sent_at}, more than {}s from this host's clock (a replayed snapshot, or clocks apart)",
            SNAPSHOT_MAX_AGE.as_secs()
        ));
    }
    Ok(())
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

async fn watch_bundles(channel: Channel, url: String, state: Arc<AuthorityState>, pinned: Pinned) {
    let mut client = AuthorityClient::new(channel);
    let mut backoff = Backoff::new();
    let mut current = String::new();
    let mut current_sent_at: Option<DateTime<Utc>> = None;
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
                            let ttl = Duration::from_secs(u64::from(wire.ttl_seconds));
                            let checked = pinned
                                .verify_bundle(&wire)
                                .map_err(|err| err.to_string())
                                .and_then(|sent_at| {
                                    fresh_bundle(sent_at, ttl, current_sent_at, Utc::now())
                                        .map(|()| sent_at)
                                });
                            let sent_at = match checked {
                                Ok(sent_at) => sent_at,
                                Err(why) => {
                                    tracing::error!(
                                        authority = %url,
                                        bundle = %wire.version,
                                        "policy bundle refused: {why}; keeping the previous one and reconnecting"
                                    );
                                    break;
                                }
                            };
                            backoff.reset();
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
                                    current_sent_at = Some(sent_at);
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

async fn watch_revocations(
    channel: Channel,
    url: String,
    state: Arc<AuthorityState>,
    pinned: Pinned,
) {
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
                let mut replayed = Some(SnapshotDigest::default());
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            let checked = if event.snapshot_complete {
                                match &replayed {
                                    Some(digest) => pinned
                                        .verify_snapshot(&event, digest)
                                        .map_err(|err| err.to_string())
                                        .and_then(|at| fresh_snapshot(at, Utc::now())),
                                    None => Err("a second snapshot marker on one stream".into()),
                                }
                            } else {
                                pinned
                                    .verify_revocation(&event)
                                    .map_err(|err| err.to_string())
                            };
                            if let Err(why) = checked {
                                let what = if event.snapshot_complete {
                                    "revocation snapshot"
                                } else {
                                    "revocation event"
                                };
                                tracing::error!(
                                    authority = %url,
                                    token_id = %event.token_id,
                                    "{what} refused: {why}; reconnecting"
                                );
                                break;
                            }
                            backoff.reset();
                            if event.snapshot_complete {
                                replayed = None;
                                if !state.readiness().revocations {
                                    tracing::info!("revocation snapshot received");
                                }
                                state.revocation_snapshot_complete();
                                continue;
                            }
                            if let Some(digest) = replayed.as_mut() {
                                digest.add(&event);
                            }
                            if !event.token_id.is_empty() && state.revoke(&event.token_id) {
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

    #[test]
    fn bundles_must_be_newer_and_within_their_ttl() {
        let now = Utc::now();
        let ttl = Duration::from_secs(30);
        let ago = |s| now - chrono::Duration::seconds(s);
        assert!(fresh_bundle(ago(1), ttl, None, now).is_ok());
        assert!(fresh_bundle(ago(1), ttl, Some(ago(2)), now).is_ok());
        assert!(
            fresh_bundle(ago(2), ttl, Some(ago(1)), now)
                .unwrap_err()
                .contains("before")
        );
        assert!(
            fresh_bundle(ago(34), ttl, None, now).is_ok(),
            "within the leeway"
        );
        assert!(
            fresh_bundle(ago(40), ttl, None, now)
                .unwrap_err()
                .contains("expired")
        );
        assert!(fresh_snapshot(ago(59), now).is_ok());
        assert!(fresh_snapshot(ago(61), now).is_err());
        assert!(fresh_snapshot(now + chrono::Duration::seconds(61), now).is_err());
    }
}
