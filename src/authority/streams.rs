//! The two long-lived streams a Sidecar holds: `WatchPolicyBundle` and `WatchRevocations`.
//! Each runs in its own task, ends when the server shuts down (so graceful shutdown never waits
//! on one), and carries the store revisions a Sidecar resumes from on another replica.
//!
//! - bundles: the bundle in force at once, every change, and a refresh every `ttl / 2`. A
//!   Sidecar that already holds a newer revision gets nothing older.
//! - revocations: the replay after the caller's position, a signed snapshot marker naming the
//!   revision it covers, then live revocations — none at or before the caller's position.
//!
//! Both streams live only while the store answers ([`SharedState::health`]): a replica cut off
//! from etcd ends them with `UNAVAILABLE` (and refuses new ones), so its Sidecars move to a
//! replica that can see the store — and when none can, nobody refreshes their bundles, which
//! age towards their `max_bundle_age` and then fail closed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, mpsc, watch};

use super::client::timestamp;
use super::policy::PolicyBundle;
use super::revocations::Revocation;
use super::signed::{SnapshotDigest, StreamSigner};
use super::store::fleet::Attachment;
use super::store::{Position, SharedState, Snapshot};
use crate::proto::{self, RevocationEvent};

type Item<T> = Result<T, tonic::Status>;

/// Why a replica cut off from its store ends its streams.
fn store_gone() -> tonic::Status {
    tonic::Status::unavailable(
        "this replica's store (etcd) does not answer: use another replica; bundles and \
         revocations from here could be out of date",
    )
}

/// Wait until the store stops answering (never for a store that always does).
async fn store_lost(health: &mut watch::Receiver<bool>) {
    if health.wait_for(|healthy| !*healthy).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Send one stream item unless the server is shutting down (a client that stopped reading must
/// not hold shutdown up). `false`: end the stream.
pub async fn deliver<T>(
    tx: &mpsc::Sender<Item<T>>,
    item: Item<T>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

pub fn bundle_message(
    bundle: &PolicyBundle,
    ttl_seconds: u32,
    signer: &StreamSigner,
) -> proto::PolicyBundle {
    let mut message = proto::PolicyBundle {
        version: bundle.version.clone(),
        policies: bundle.policies.clone(),
        schema: bundle.schema_text.clone(),
        ttl_seconds,
        sent_at: Some(timestamp(Utc::now())),
        revision: bundle.revision,
        ..Default::default()
    };
    signer.sign_bundle(&mut message);
    message
}

pub fn revocation_message(entry: &Revocation, signer: &StreamSigner) -> RevocationEvent {
    let mut message = RevocationEvent {
        token_id: entry.token_id.clone(),
        reason: entry.reason.clone(),
        revoked_at: Some(timestamp(entry.revoked_at)),
        revision: entry.revision,
        ..Default::default()
    };
    signer.sign_revocation(&mut message);
    message
}

/// What one bundle stream needs.
pub struct BundleStream {
    pub store: Arc<dyn SharedState>,
    pub signer: Arc<StreamSigner>,
    pub ttl_seconds: u32,
    /// The version and revision the caller holds.
    pub known_version: String,
    pub known_revision: u64,
    pub shutdown: watch::Receiver<bool>,
    /// The fleet view's record of this Sidecar (none for operators).
    pub attachment: Option<Attachment>,
    pub peer: String,
}

impl BundleStream {
    pub async fn run(mut self, tx: mpsc::Sender<Item<proto::PolicyBundle>>) {
        let mut bundles = self.store.policies().subscribe_runtime();
        let mut health = self.store.health();
        // Refresh at half the TTL so a Sidecar never enforces with a stale bundle.
        let period = Duration::from_millis(u64::from(self.ttl_seconds) * 500);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = false;
        if !*health.borrow_and_update() {
            let _ = deliver(&tx, Err(store_gone()), &mut self.shutdown).await;
            return;
        }
        let current = bundles.borrow_and_update().clone();
        let first = (current.version != self.known_version).then_some(current);
        if let Some(bundle) = first
            && !self.send(&tx, &bundle).await
        {
            return;
        }
        loop {
            let bundle = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => break,
                _ = tx.closed() => break,
                changed = bundles.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    refresh.reset();
                    bundles.borrow_and_update().clone()
                }
                () = store_lost(&mut health) => {
                    tracing::info!(peer = %self.peer, "the store does not answer: sending the Sidecar to another replica");
                    lost = true;
                    break;
                }
                _ = refresh.tick() => bundles.borrow().clone(),
            };
            if !self.send(&tx, &bundle).await {
                break;
            }
        }
        if lost {
            let _ = deliver(&tx, Err(store_gone()), &mut self.shutdown).await;
        }
        tracing::debug!(peer = %self.peer, "policy bundle watcher disconnected");
    }

    /// Send `bundle` unless the caller holds a newer revision. `false`: end the stream.
    async fn send(
        &mut self,
        tx: &mpsc::Sender<Item<proto::PolicyBundle>>,
        bundle: &PolicyBundle,
    ) -> bool {
        if bundle.revision != 0 && bundle.revision < self.known_revision {
            tracing::debug!(peer = %self.peer, revision = bundle.revision, known = self.known_revision, "not sending an older bundle than the caller holds");
            return true;
        }
        let message = bundle_message(bundle, self.ttl_seconds, &self.signer);
        if !deliver(tx, Ok(message), &mut self.shutdown).await {
            return false;
        }
        self.known_revision = self.known_revision.max(bundle.revision);
        if let Some(attachment) = &self.attachment {
            self.store
                .fleet()
                .bundle_sent(attachment, bundle.revision, &bundle.version);
        }
        true
    }
}

/// What one revocation stream needs.
pub struct RevocationStream {
    pub store: Arc<dyn SharedState>,
    pub signer: Arc<StreamSigner>,
    pub position: Position,
    pub shutdown: watch::Receiver<bool>,
    pub attachment: Option<Attachment>,
    pub peer: String,
}

impl RevocationStream {
    pub async fn run(mut self, tx: mpsc::Sender<Item<RevocationEvent>>) {
        let mut health = self.store.health();
        if !*health.borrow_and_update() {
            let _ = deliver(&tx, Err(store_gone()), &mut self.shutdown).await;
            return;
        }
        let Snapshot {
            replay,
            revision,
            mut live,
        } = self.store.revocations_since(self.position);
        tracing::debug!(peer = %self.peer, replay = replay.len(), revision, "revocation watcher connected");
        let mut digest = SnapshotDigest::default();
        for entry in &replay {
            let event = revocation_message(entry, &self.signer);
            digest.add(&event);
            if !deliver(&tx, Ok(event), &mut self.shutdown).await {
                return;
            }
        }
        let mut marker = RevocationEvent {
            revision: revision.max(self.position.since_revision),
            ..Default::default()
        };
        self.signer.sign_snapshot(&mut marker, &digest);
        if !deliver(&tx, Ok(marker), &mut self.shutdown).await {
            return;
        }
        // The caller already has everything up to here (its position or the snapshot).
        let seen = revision.max(self.position.since_revision);
        let mut lost = false;
        loop {
            let event = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => break,
                _ = tx.closed() => break,
                () = store_lost(&mut health) => {
                    lost = true;
                    break;
                }
                received = live.recv() => received,
            };
            let message = match event {
                Ok(entry) if entry.revision != 0 && entry.revision <= seen => continue,
                Ok(entry) => Ok(revocation_message(&entry, &self.signer)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(peer = %self.peer, missed, "revocation watcher fell behind; asking it to reconnect");
                    Err(tonic::Status::aborted(format!(
                        "fell {missed} revocations behind; reconnect with `since` (or `since_revision`) to replay"
                    )))
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let failed = message.is_err();
            if !deliver(&tx, message, &mut self.shutdown).await || failed {
                break;
            }
        }
        if lost {
            let _ = deliver(&tx, Err(store_gone()), &mut self.shutdown).await;
        }
        drop(self.attachment.take());
        tracing::debug!(peer = %self.peer, "revocation watcher disconnected");
    }
}
