//! The `firma.v1.Authority` gRPC service: maps wire messages to issuance, revocations and
//! policy-bundle streams. Streams end on their own when the server shuts down, so tonic's
//! graceful shutdown never waits on a long-lived stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::client::{from_timestamp, timestamp};
use super::issuance::{IssueOutcome, IssueRequest, Issuer};
use super::policy::PolicyBundle;
use super::revocations::{Revocation, RevocationStore};
use super::roles::Caller;
use super::roles::{Gate, Need};
use super::signed::{SnapshotDigest, StreamSigner};
use super::store::{PolicyStores, short};
use super::witness::{LOCAL_SIDECAR, Refusal, WitnessStore};
use crate::metrics::authority::{Rpc, WatchStream, metrics};
use crate::proto::{
    self, GetWitnessedCheckpointRequest, IssueCapabilityRequest, IssueCapabilityResponse,
    ReportCheckpointRequest, ReportCheckpointResponse, RevocationEvent, RevokeRequest,
    RevokeResponse, WatchPolicyBundleRequest, WatchRevocationsRequest, WitnessedCheckpoint,
    authority_server,
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct AuthorityService {
    /// How this listener's callers are identified.
    gate: Gate,
    issuer: Arc<Issuer>,
    signer: Arc<StreamSigner>,
    witness: Arc<WitnessStore>,
    stores: Arc<PolicyStores>,
    revocations: Arc<RevocationStore>,
    bundle_ttl: Duration,
    shutdown: watch::Receiver<bool>,
}

impl AuthorityService {
    pub fn new(
        issuer: Arc<Issuer>,
        signer: Arc<StreamSigner>,
        witness: Arc<WitnessStore>,
        stores: Arc<PolicyStores>,
        revocations: Arc<RevocationStore>,
        bundle_ttl: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            gate: Gate::OpenTcp,
            issuer,
            signer,
            witness,
            stores,
            revocations,
            bundle_ttl,
            shutdown,
        }
    }

    /// The same service behind another listener's gate.
    pub fn gated(&self, gate: Gate) -> Self {
        Self {
            gate,
            ..self.clone()
        }
    }

    fn ttl_seconds(&self) -> u32 {
        let secs = self.bundle_ttl.as_secs() + u64::from(self.bundle_ttl.subsec_nanos() > 0);
        u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
    }
}

fn bundle_message(
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
        ..Default::default()
    };
    signer.sign_bundle(&mut message);
    message
}

fn revocation_message(entry: &Revocation, signer: &StreamSigner) -> RevocationEvent {
    let mut message = RevocationEvent {
        token_id: entry.token_id.clone(),
        reason: entry.reason.clone(),
        revoked_at: Some(timestamp(entry.revoked_at)),
        ..Default::default()
    };
    signer.sign_revocation(&mut message);
    message
}

/// Send one stream item unless the server is shutting down (a client that stopped reading must
/// not hold shutdown up). `false`: end the stream.
async fn deliver<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    item: Result<T, Status>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

#[tonic::async_trait]
impl authority_server::Authority for AuthorityService {
    async fn issue_capability(
        &self,
        request: Request<IssueCapabilityRequest>,
    ) -> Result<Response<IssueCapabilityResponse>, Status> {
        let _timer = metrics().rpc(Rpc::IssueCapability);
        let caller = self
            .gate
            .admit(&request, "IssueCapability", Need::Operator)?;
        let wire = request.into_inner();
        let parsed = IssueRequest::from_wire(
            &wire.agent_id,
            &wire.actions,
            &wire.resource_scope,
            &wire.session_id,
            wire.ttl_seconds,
        )
        .and_then(|request| request.with_sandbox(&wire.sandbox_id))
        .map_err(Status::invalid_argument)?;
        let outcome = self
            .issuer
            .issue(&parsed, Utc::now())
            .map_err(|err| Status::internal(err.to_string()))?;
        let response = match outcome {
            IssueOutcome::Granted { token, claims } => {
                metrics().token_issued();
                tracing::info!(
                    agent_id = %claims.agent_id,
                    session_id = %claims.session_id,
                    sandbox_id = %claims.sandbox_id,
                    token_id = %claims.token_id,
                    actions = %claims.actions.join(","),
                    resource_scope = %claims.resource_scope,
                    expires_at = %claims.expires_at.to_rfc3339(),
                    caller = %caller,
                    "token issued"
                );
                IssueCapabilityResponse {
                    granted: true,
                    token,
                    token_id: claims.token_id,
                    expires_at: Some(timestamp(claims.expires_at)),
                    deny_reason: String::new(),
                    deny_message: String::new(),
                }
            }
            IssueOutcome::Denied { reason, message } => {
                metrics().token_denied(reason);
                tracing::warn!(
                    agent_id = %parsed.agent_id,
                    actions = %parsed.actions.join(","),
                    reason,
                    caller = %caller,
                    "issuance denied: {message}"
                );
                IssueCapabilityResponse {
                    granted: false,
                    deny_reason: reason.to_string(),
                    deny_message: message,
                    ..Default::default()
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let _timer = metrics().rpc(Rpc::Revoke);
        let caller = self.gate.admit(&request, "Revoke", Need::Operator)?;
        let wire = request.into_inner();
        super::revocations::validate_uuid(&wire.token_id).map_err(Status::invalid_argument)?;
        let expires_at =
            match &wire.expires_at {
                Some(ts) => Some(from_timestamp(ts).ok_or_else(|| {
                    Status::invalid_argument("expires_at is not a valid timestamp")
                })?),
                None => super::revocations::expiry_bound(&wire.token_id, self.issuer.max_ttl()),
            };
        let store = self.revocations.clone();
        let (newly, entry) = tokio::task::spawn_blocking(move || {
            store.revoke(&wire.token_id, &wire.reason, expires_at)
        })
        .await
        .map_err(|err| Status::internal(err.to_string()))?
        .map_err(|err| Status::internal(err.message().to_string()))?;
        if newly {
            metrics().token_revoked();
            tracing::info!(token_id = %entry.token_id, reason = %entry.reason, caller = %caller, "token revoked");
        }
        Ok(Response::new(RevokeResponse {
            newly_revoked: newly,
            revoked_at: Some(timestamp(entry.revoked_at)),
        }))
    }

    async fn report_checkpoint(
        &self,
        request: Request<ReportCheckpointRequest>,
    ) -> Result<Response<ReportCheckpointResponse>, Status> {
        let _timer = metrics().rpc(Rpc::ReportCheckpoint);
        let caller = self
            .gate
            .admit(&request, "ReportCheckpoint", Need::Sidecar)?;
        let wire = request.into_inner();
        let sidecar = sidecar_of(&caller, &wire.sidecar_id, true)?;
        let witness = self.witness.clone();
        let id = sidecar.clone();
        let outcome = tokio::task::spawn_blocking(move || witness.report(&id, &wire.checkpoint))
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        match outcome {
            Ok(seq) => {
                tracing::debug!(sidecar = %sidecar, seq, caller = %caller, "checkpoint witnessed");
                Ok(Response::new(ReportCheckpointResponse {
                    witnessed_seq: seq,
                }))
            }
            Err(refusal) => {
                let status = match refusal {
                    Refusal::UnknownSidecar(why) => Status::failed_precondition(why),
                    Refusal::Invalid(why) => Status::invalid_argument(why),
                    Refusal::Backwards(why) => Status::failed_precondition(why),
                };
                tracing::warn!(
                    sidecar = %sidecar,
                    caller = %caller,
                    "checkpoint refused: {}",
                    status.message()
                );
                Err(status)
            }
        }
    }

    async fn get_witnessed_checkpoint(
        &self,
        request: Request<GetWitnessedCheckpointRequest>,
    ) -> Result<Response<WitnessedCheckpoint>, Status> {
        let _timer = metrics().rpc(Rpc::GetWitnessedCheckpoint);
        let caller = self
            .gate
            .admit(&request, "GetWitnessedCheckpoint", Need::Watcher)?;
        let sidecar = sidecar_of(&caller, &request.get_ref().sidecar_id, false)?;
        let answer = match self.witness.latest(&sidecar) {
            Some((record, fingerprint)) => WitnessedCheckpoint {
                found: true,
                witnessed_at: super::witness::witnessed_at(&record).map(timestamp),
                checkpoint: record.checkpoint.into_bytes(),
                audit_key_fingerprint: fingerprint,
                sidecar_id: sidecar,
            },
            None => WitnessedCheckpoint {
                sidecar_id: sidecar,
                ..Default::default()
            },
        };
        Ok(Response::new(answer))
    }

    type WatchPolicyBundleStream = BoxStream<proto::PolicyBundle>;

    async fn watch_policy_bundle(
        &self,
        request: Request<WatchPolicyBundleRequest>,
    ) -> Result<Response<Self::WatchPolicyBundleStream>, Status> {
        let peer = self
            .gate
            .admit(&request, "WatchPolicyBundle", Need::Watcher)?
            .to_string();
        let known = request.into_inner().current_version;
        let mut bundles = self.stores.subscribe_runtime();
        let mut shutdown = self.shutdown.clone();
        let ttl_seconds = self.ttl_seconds();
        let signer = self.signer.clone();
        // Refresh at half the TTL so a sidecar never enforces with a stale bundle.
        let period = Duration::from_millis(u64::from(ttl_seconds) * 500);
        let (tx, rx) = mpsc::channel(2);
        tracing::debug!(%peer, "policy bundle watcher connected");
        let watching = metrics().watching(WatchStream::PolicyBundle);
        tokio::spawn(async move {
            let _watching = watching;
            let current = bundles.borrow_and_update().clone();
            if current.version != known
                && !deliver(
                    &tx,
                    Ok(bundle_message(&current, ttl_seconds, &signer)),
                    &mut shutdown,
                )
                .await
            {
                return;
            }
            let mut refresh =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let bundle = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = tx.closed() => break,
                    changed = bundles.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        refresh.reset();
                        bundles.borrow_and_update().clone()
                    }
                    _ = refresh.tick() => bundles.borrow().clone(),
                };
                if !deliver(
                    &tx,
                    Ok(bundle_message(&bundle, ttl_seconds, &signer)),
                    &mut shutdown,
                )
                .await
                {
                    break;
                }
            }
            tracing::debug!(%peer, "policy bundle watcher disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchRevocationsStream = BoxStream<RevocationEvent>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let peer = self
            .gate
            .admit(&request, "WatchRevocations", Need::Watcher)?
            .to_string();
        let since = match request.into_inner().since {
            Some(ts) => Some(
                from_timestamp(&ts)
                    .ok_or_else(|| Status::invalid_argument("since is not a valid timestamp"))?,
            ),
            None => None,
        };
        let (replay, mut live) = self.revocations.replay_and_subscribe(since);
        let mut shutdown = self.shutdown.clone();
        let signer = self.signer.clone();
        let (tx, rx) = mpsc::channel(64);
        tracing::debug!(%peer, replay = replay.len(), "revocation watcher connected");
        let watching = metrics().watching(WatchStream::Revocations);
        tokio::spawn(async move {
            let _watching = watching;
            let mut digest = SnapshotDigest::default();
            for entry in &replay {
                let event = revocation_message(entry, &signer);
                digest.add(&event);
                if !deliver(&tx, Ok(event), &mut shutdown).await {
                    return;
                }
            }
            let mut marker = RevocationEvent::default();
            signer.sign_snapshot(&mut marker, &digest);
            if !deliver(&tx, Ok(marker), &mut shutdown).await {
                return;
            }
            loop {
                let event = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = tx.closed() => break,
                    received = live.recv() => received,
                };
                let message = match event {
                    Ok(entry) => Ok(revocation_message(&entry, &signer)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(%peer, missed, "revocation watcher fell behind; asking it to reconnect");
                        Err(Status::aborted(format!(
                            "fell {missed} revocations behind; reconnect with `since` to replay"
                        )))
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let failed = message.is_err();
                if !deliver(&tx, message, &mut shutdown).await || failed {
                    break;
                }
            }
            tracing::debug!(%peer, "revocation watcher disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The Sidecar a witness call is about: a certificate's name binds it; without one, the id
/// asked for (default [`LOCAL_SIDECAR`]).
fn sidecar_of(caller: &Caller, requested: &str, reporting: bool) -> Result<String, Status> {
    match &caller.name {
        Some(name) if requested.is_empty() || requested == name => Ok(name.clone()),
        Some(name) if reporting => Err(Status::permission_denied(format!(
            "sidecar {name:?} may report only its own checkpoints, not {requested:?}"
        ))),
        _ if requested.is_empty() => Ok(LOCAL_SIDECAR.to_string()),
        _ => Ok(requested.to_string()),
    }
}

/// A one-line description of the bundle in force, for logs.
pub fn describe_bundle(bundle: &PolicyBundle) -> String {
    format!(
        "{} ({} policies from {} files)",
        short(&bundle.version),
        bundle.len(),
        bundle.files.len()
    )
}
