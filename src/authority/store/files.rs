//! The files store (default): one Authority, no extra service. Revocations in
//! `revocations.txt` and witnessed checkpoints in `witnessed-checkpoints.jsonl` (data dir), the
//! policies read from the policy directories and hot-reloaded, hand edits of the revocations
//! file picked up — exactly the single-Authority behaviour of docs/authority.md.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{
    FleetView, PolicyStores, Position, Publication, Published, SharedState, Snapshot, StoreError,
    StoreSettings,
};
use crate::authority::revocations::{Revocation, RevocationStore};
use crate::authority::watch::{DirWatch, watch_dirs};
use crate::authority::witness::{Refusal, WitnessStore, Witnessed};
use crate::config::schema::StoreBackend;
use crate::error::Hinted;

pub struct FilesState {
    policies: Arc<PolicyStores>,
    revocations: Arc<RevocationStore>,
    witness: Arc<WitnessStore>,
    fleet: Arc<FleetView>,
    watches: Mutex<Vec<DirWatch>>,
    /// Always healthy: the files are local.
    health: tokio::sync::watch::Sender<bool>,
}

impl FilesState {
    /// Load the policy directories and open both files; watch them for edits. Must be called
    /// inside a tokio runtime.
    pub fn open(settings: &StoreSettings) -> Result<Self, Hinted> {
        let policies = Arc::new(PolicyStores::load(
            &settings.policies_dir,
            &settings.issuance_dir,
        )?);
        let revocations = RevocationStore::open(&settings.revocations_file)?;
        let witness = Arc::new(WitnessStore::open(
            &settings.witness_file,
            &settings.witness_keys,
            settings.local_audit_key.clone(),
        )?);

        let mut watches = Vec::new();
        let reload_stores = policies.clone();
        let mut dirs = vec![settings.policies_dir.clone()];
        if settings.issuance_dir != settings.policies_dir {
            dirs.push(settings.issuance_dir.clone());
        }
        watches.push(watch_dirs(&dirs, move |_| reload_stores.reload())?);
        let revocations_dir = settings
            .revocations_file
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let reload_revocations = revocations.clone();
        let revocations_name = settings.revocations_file.file_name().map(ToOwned::to_owned);
        watches.push(watch_dirs(&[revocations_dir], move |paths| {
            // By name: editors save through temporary files renamed over the original.
            if paths
                .iter()
                .any(|p| p.file_name() == revocations_name.as_deref())
            {
                reload_revocations.reload();
            }
        })?);
        Ok(Self {
            policies,
            revocations,
            witness,
            fleet: FleetView::new(&settings.replica),
            watches: Mutex::new(watches),
            health: tokio::sync::watch::Sender::new(true),
        })
    }
}

/// Run blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Failed(err.to_string()))
}

#[tonic::async_trait]
impl SharedState for FilesState {
    fn backend(&self) -> StoreBackend {
        StoreBackend::Files
    }

    fn describe(&self) -> String {
        format!(
            "files: {} revocations in {}",
            self.revocations.len(),
            self.revocations.path().display()
        )
    }

    fn policies(&self) -> &Arc<PolicyStores> {
        &self.policies
    }

    fn fleet(&self) -> &Arc<FleetView> {
        &self.fleet
    }

    fn writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.subscribe()
    }

    async fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(bool, Revocation), StoreError> {
        let (store, id, reason) = (
            self.revocations.clone(),
            token_id.to_string(),
            reason.to_string(),
        );
        Ok(blocking(move || store.revoke(&id, &reason, expires_at)).await??)
    }

    fn revocations_since(&self, position: Position) -> Snapshot {
        let (replay, live) = self.revocations.replay_and_subscribe(position.since);
        Snapshot {
            replay,
            revision: 0,
            live,
        }
    }

    fn revocation_count(&self) -> usize {
        self.revocations.len()
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let store = self.revocations.clone();
        Ok(blocking(move || store.prune(now)).await??)
    }

    async fn witness(&self, sidecar: &str, line: &[u8]) -> Result<u64, Refusal> {
        let (witness, id, line) = (self.witness.clone(), sidecar.to_string(), line.to_vec());
        blocking(move || witness.report(&id, &line))
            .await
            .map_err(|err| Refusal::Invalid(err.to_string()))?
    }

    fn witnessed(&self, sidecar: &str) -> Option<(Witnessed, String)> {
        self.witness.latest(sidecar)
    }

    async fn publish(&self, _publication: Publication) -> Result<Published, StoreError> {
        Err(StoreError::Unsupported(format!(
            "this Authority reads its policies from {} and {} (store backend \"files\") and \
             reloads them when they change: edit the files there; publishing is for the etcd \
             store (docs/fleet.md)",
            self.policies.policies_dir().display(),
            self.policies.issuance_dir().display()
        )))
    }

    async fn close(&self) {
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
