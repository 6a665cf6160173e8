//! The `firma.v1.Authority` gRPC service: maps wire messages to issuance, the shared state
//! (revocations, witnessed checkpoints, published policies, the fleet view — `store`) and the
//! two signed streams (`streams`). Streams end on their own when the server shuts down, so
//! tonic's graceful shutdown never waits on a long-lived stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::client::{from_timestamp, timestamp};
use super::issuance::{IssueOutcome, IssueRequest, Issuer};
use super::policy::PolicyBundle;
use super::roles::{Caller, Gate, Need, Role};
use super::signed::StreamSigner;
use super::store::{Position, Publication, SharedState, short};
use super::streams::{BundleStream, RevocationStream};
use super::witness::{LOCAL_SIDECAR, Refusal};
use crate::metrics::authority::{Rpc, WatchStream, metrics};
use crate::proto::{
    self, GetWitnessedCheckpointRequest, IssueCapabilityRequest, IssueCapabilityResponse,
    ListSidecarsRequest, ListSidecarsResponse, PublishRequest, PublishResponse,
    ReportCheckpointRequest, ReportCheckpointResponse, RevocationEvent, RevokeRequest,
    RevokeResponse, SidecarSighting, WatchPolicyBundleRequest, WatchRevocationsRequest,
    WitnessedCheckpoint, authority_server,
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct AuthorityService {
    /// How this listener's callers are identified.
    gate: Gate,
    issuer: Arc<Issuer>,
    signer: Arc<StreamSigner>,
    store: Arc<dyn SharedState>,
    bundle_ttl: Duration,
    shutdown: watch::Receiver<bool>,
}

impl AuthorityService {
    pub fn new(
        issuer: Arc<Issuer>,
        signer: Arc<StreamSigner>,
        store: Arc<dyn SharedState>,
        bundle_ttl: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            gate: Gate::OpenTcp,
            issuer,
            signer,
            store,
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

    /// The fleet view's record of a Sidecar's stream (operators watching are not listed).
    fn attach(
        &self,
        caller: &Caller,
        sidecar_id: &str,
        host: &str,
    ) -> Result<Option<super::store::fleet::Attachment>, Status> {
        if caller.role != Role::Sidecar {
            return Ok(None);
        }
        let id = sidecar_of(caller, sidecar_id, true)?;
        let host = host.chars().take(253).collect::<String>();
        Ok(Some(self.store.fleet().attach(&id, &host, &caller.peer)))
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
        self.store.writable().inspect_err(|err| {
            tracing::warn!(caller = %caller, "refusing to mint: {err}");
        })?;
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
        let (newly, entry) = self
            .store
            .revoke(&wire.token_id, &wire.reason, expires_at)
            .await
            .inspect_err(|err| {
                tracing::warn!(token_id = %wire.token_id, caller = %caller, "revocation refused: {err}");
            })?;
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
        match self.store.witness(&sidecar, &wire.checkpoint).await {
            Ok(seq) => {
                self.store.fleet().checkpoint(&sidecar, seq);
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
                    Refusal::Unavailable(why) => Status::unavailable(why),
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
        let answer = match self.store.witnessed(&sidecar) {
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
        let caller = self
            .gate
            .admit(&request, "WatchPolicyBundle", Need::Watcher)?;
        let wire = request.into_inner();
        let attachment = self.attach(&caller, &wire.sidecar_id, &wire.host)?;
        let (tx, rx) = mpsc::channel(2);
        tracing::debug!(peer = %caller, "policy bundle watcher connected");
        let stream = BundleStream {
            store: self.store.clone(),
            signer: self.signer.clone(),
            ttl_seconds: self.ttl_seconds(),
            known_version: wire.current_version,
            known_revision: wire.current_revision,
            shutdown: self.shutdown.clone(),
            attachment,
            peer: caller.to_string(),
        };
        let watching = metrics().watching(WatchStream::PolicyBundle);
        tokio::spawn(async move {
            let _watching = watching;
            stream.run(tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchRevocationsStream = BoxStream<RevocationEvent>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = self
            .gate
            .admit(&request, "WatchRevocations", Need::Watcher)?;
        let wire = request.into_inner();
        let since = match wire.since {
            Some(ts) => Some(
                from_timestamp(&ts)
                    .ok_or_else(|| Status::invalid_argument("since is not a valid timestamp"))?,
            ),
            None => None,
        };
        let attachment = self.attach(&caller, &wire.sidecar_id, &wire.host)?;
        let (tx, rx) = mpsc::channel(64);
        let stream = RevocationStream {
            store: self.store.clone(),
            signer: self.signer.clone(),
            position: Position {
                since,
                since_revision: wire.since_revision,
            },
            shutdown: self.shutdown.clone(),
            attachment,
            peer: caller.to_string(),
        };
        let watching = metrics().watching(WatchStream::Revocations);
        tokio::spawn(async move {
            let _watching = watching;
            stream.run(tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let caller = self.gate.admit(&request, "Publish", Need::Operator)?;
        let wire = request.into_inner();
        let publication = Publication {
            runtime: wire.runtime_policies,
            issuance: wire.issuance_policies,
            schema: wire.schema,
            runtime_files: wire.runtime_files.into_iter().map(Into::into).collect(),
            issuance_files: wire.issuance_files.into_iter().map(Into::into).collect(),
            by: caller.to_string(),
        };
        let published = self.store.publish(publication).await.inspect_err(|err| {
            tracing::warn!(caller = %caller, "publication refused: {err}");
        })?;
        Ok(Response::new(PublishResponse {
            revision: published.revision,
            runtime_version: published.runtime_version,
            issuance_version: published.issuance_version,
            changed: published.changed,
        }))
    }

    async fn list_sidecars(
        &self,
        request: Request<ListSidecarsRequest>,
    ) -> Result<Response<ListSidecarsResponse>, Status> {
        self.gate.admit(&request, "ListSidecars", Need::Operator)?;
        let fleet = self.store.fleet();
        let sidecars = fleet
            .list()
            .into_iter()
            .map(|s| SidecarSighting {
                sidecar_id: s.sidecar_id,
                host: s.host,
                address: s.address,
                replica: s.replica,
                bundle_revision: s.bundle_revision,
                bundle_version: s.bundle_version,
                checkpoint_seq: s.checkpoint_seq,
                checkpoint_at: s.checkpoint_at.map(timestamp),
                last_seen: Some(timestamp(s.last_seen)),
                connected: s.connected,
            })
            .collect();
        Ok(Response::new(ListSidecarsResponse {
            sidecars,
            replica: fleet.replica().to_string(),
            backend: self.store.backend().name().to_string(),
        }))
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
