//! The Authority's shared state behind one trait (DESIGN §12): revocations, witnessed
//! checkpoints, the policy bundles in force and the fleet view.
//!
//! - [`files`] (default): revocations and witnessed checkpoints in the data dir, policies read
//!   and hot-reloaded from the policy directories — one Authority, no extra service;
//! - [`etcd`]: everything under one key prefix of an etcd cluster, so several Authority
//!   replicas serve the same state; each replica follows the prefix with an etcd watch and
//!   streams changes to its Sidecars. Writes that must not be lost (revocations, checkpoints)
//!   are acknowledged only after etcd acknowledged them.
//!
//! The gRPC service only talks to [`SharedState`]; `docs/fleet.md` describes the layout.

pub mod etcd;
pub mod files;
pub mod fleet;
pub mod policies;
mod revocation_set;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

pub use fleet::{FleetView, Sighting};
pub use policies::{PolicyStores, short};

use super::revocations::Revocation;
use super::signed::StreamSigner;
use super::witness::{Refusal, Witnessed};
use crate::config::schema::{StoreBackend, StoreConfig};
use crate::error::Hinted;

/// Why the store did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes now (etcd unreachable, no quorum, timed out).
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// This store does not do that (e.g. publish with the files store).
    #[error("{0}")]
    Unsupported(String),
    /// Someone else changed the same thing first (two publications at once).
    #[error("{0}")]
    Conflict(String),
    /// Anything else (a local file that cannot be written).
    #[error("{0}")]
    Failed(String),
}

impl From<Hinted> for StoreError {
    fn from(err: Hinted) -> Self {
        Self::Failed(match err.hint_text() {
            Some(hint) => format!("{} ({hint})", err.message()),
            None => err.message().to_string(),
        })
    }
}

impl From<StoreError> for tonic::Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(why) => tonic::Status::unavailable(why),
            StoreError::Invalid(why) => tonic::Status::invalid_argument(why),
            StoreError::Unsupported(why) => tonic::Status::failed_precondition(why),
            StoreError::Conflict(why) => tonic::Status::aborted(why),
            StoreError::Failed(why) => tonic::Status::internal(why),
        }
    }
}

/// Where a revocation watcher resumes: after a time (files store) or a store revision (etcd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub since: Option<DateTime<Utc>>,
    pub since_revision: u64,
}

impl Position {
    /// Whether `entry` comes after this position.
    pub fn precedes(&self, entry: &Revocation) -> bool {
        self.since.is_none_or(|s| entry.revoked_at > s)
            && (self.since_revision == 0 || entry.revision > self.since_revision)
    }
}

/// What a revocation watcher gets: the replay, the store revision it covers, and the live
/// revocations after it (taken together, so nothing falls between).
pub struct Snapshot {
    pub replay: Vec<Revocation>,
    pub revision: u64,
    pub live: broadcast::Receiver<Revocation>,
}

/// Policies as `firma authority publish` sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub runtime: String,
    pub issuance: String,
    pub schema: String,
    pub runtime_files: Vec<PathBuf>,
    pub issuance_files: Vec<PathBuf>,
    /// Who published (the operator), for logs and the stored record.
    pub by: String,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub revision: u64,
    pub runtime_version: String,
    pub issuance_version: String,
    pub changed: bool,
}

/// The Authority's shared state, whatever holds it.
#[tonic::async_trait]
pub trait SharedState: Send + Sync {
    fn backend(&self) -> StoreBackend;

    /// One line for the start-up log: where the state lives.
    fn describe(&self) -> String;

    /// The bundles in force.
    fn policies(&self) -> &Arc<PolicyStores>;

    /// The Sidecars seen.
    fn fleet(&self) -> &Arc<FleetView>;

    /// Whether writes can be taken now; mint asks first, so a replica cut off from the store
    /// stops minting under bundles that may be stale.
    fn writable(&self) -> Result<(), StoreError>;

    /// `true` while the store answers: a replica serves Sidecars only then (their streams end
    /// when it turns `false`), so a replica cut off from etcd makes no claim that its bundle is
    /// still the one in force and its Sidecars move to one that can see the store.
    fn health(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Revoke (durably) and return whether it was new and the entry in force.
    async fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(bool, Revocation), StoreError>;

    fn revocations_since(&self, position: Position) -> Snapshot;

    fn revocation_count(&self) -> usize;

    /// Drop revocations of tokens that have expired; returns how many.
    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Witness a checkpoint (durably); returns the witnessed `seq`.
    async fn witness(&self, sidecar: &str, line: &[u8]) -> Result<u64, Refusal>;

    fn witnessed(&self, sidecar: &str) -> Option<(Witnessed, String)>;

    /// Put published policies in force on every replica.
    async fn publish(&self, publication: Publication) -> Result<Published, StoreError>;

    /// Stop background work (watches, reloads).
    async fn close(&self);
}

/// Everything a store needs, resolved from `[authority]` and `[authority.store]`.
#[derive(Clone)]
pub struct StoreSettings {
    pub config: StoreConfig,
    /// The key prefix (default `/firma/<deployment>/`), ending in `/`.
    pub prefix: String,
    pub policies_dir: PathBuf,
    pub issuance_dir: PathBuf,
    pub revocations_file: PathBuf,
    pub witness_file: PathBuf,
    pub witness_keys: PathBuf,
    pub local_audit_key: Option<PathBuf>,
    pub max_ttl: Duration,
    /// This replica's name in the fleet view.
    pub replica: String,
}

impl StoreSettings {
    /// The default prefix of a deployment.
    pub fn default_prefix(deployment: &str) -> String {
        format!("/firma/{deployment}/")
    }
}

/// Open the configured store. Errors are start-up errors naming what to fix.
pub async fn open(
    settings: &StoreSettings,
    signer: Arc<StreamSigner>,
) -> Result<Arc<dyn SharedState>, Hinted> {
    match settings.config.backend {
        StoreBackend::Files => Ok(Arc::new(files::FilesState::open(settings)?)),
        StoreBackend::Etcd => Ok(etcd::EtcdState::open(settings, signer).await?),
    }
}

/// Check `[authority.store]` at load time (`at`: where in firma.toml).
pub fn validate_config(store: &StoreConfig, at: &str) -> Result<(), Hinted> {
    match store.backend {
        StoreBackend::Files => {
            if !store.endpoints.is_empty() {
                return Err(Hinted::new(format!(
                    "{at}: [authority.store] endpoints are set but backend is \"files\""
                ))
                .hint("set backend = \"etcd\" to use them, or remove endpoints"));
            }
        }
        StoreBackend::Etcd => {
            if store.endpoints.is_empty() {
                return Err(Hinted::new(format!(
                    "{at}: [authority.store] backend = \"etcd\" needs endpoints"
                ))
                .hint("e.g. endpoints = [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]"));
            }
            for endpoint in &store.endpoints {
                etcd::endpoint_url(endpoint, store.ca_cert.is_some()).map_err(|why| {
                    Hinted::new(format!("{at}: [authority.store] endpoint {endpoint:?} {why}"))
                        .hint("endpoints are etcd client URLs: http://host:2379 or https://host:2379 (with ca_cert)")
                })?;
            }
        }
    }
    if let Some(prefix) = &store.prefix
        && (!prefix.starts_with('/') || prefix.len() < 2)
    {
        return Err(Hinted::new(format!(
            "{at}: [authority.store] prefix {prefix:?} must start with '/' and name something"
        ))
        .hint("e.g. prefix = \"/firma/my-deployment/\""));
    }
    if store.client_cert.is_some() != store.client_key.is_some() {
        return Err(Hinted::new(format!(
            "{at}: [authority.store] client_cert and client_key go together"
        ))
        .hint("set both (etcd's client certificate and its key) or neither"));
    }
    Ok(())
}
