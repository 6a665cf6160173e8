//! What the Authority streams to the Sidecar, shared between the stream tasks and the proxy:
//! the current policy bundle, the revoked token ids, and whether both have arrived.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::cedar::PolicyBundle;
use crate::metrics::sidecar::metrics;

/// Whether the Sidecar may judge calls yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A policy bundle was received and parsed.
    pub bundle: bool,
    /// The revocation replay finished (`snapshot_complete`).
    pub revocations: bool,
}

impl Readiness {
    pub fn is_ready(self) -> bool {
        self.bundle && self.revocations
    }
}

pub struct AuthorityState {
    bundle: RwLock<Option<Arc<PolicyBundle>>>,
    revoked: RwLock<HashSet<String>>,
    readiness: watch::Sender<Readiness>,
    /// Bumped on every new bundle and revocation: open tunnels re-check their authority.
    changes: watch::Sender<u64>,
}

impl Default for AuthorityState {
    fn default() -> Self {
        Self {
            bundle: RwLock::new(None),
            revoked: RwLock::new(HashSet::new()),
            readiness: watch::Sender::new(Readiness::default()),
            changes: watch::Sender::new(0),
        }
    }
}

impl AuthorityState {
    /// The bundle to enforce with, if any arrived.
    pub fn bundle(&self) -> Option<Arc<PolicyBundle>> {
        self.bundle.read().expect("bundle lock").clone()
    }

    pub fn set_bundle(&self, bundle: PolicyBundle) {
        *self.bundle.write().expect("bundle lock") = Some(Arc::new(bundle));
        self.readiness.send_modify(|r| r.bundle = true);
        self.changes.send_modify(|n| *n += 1);
        metrics().bundle_received();
    }

    /// Notified whenever a bundle or a revocation arrives.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked
            .read()
            .expect("revocation lock")
            .contains(token_id)
    }

    /// How many token ids are revoked.
    pub fn revoked_count(&self) -> usize {
        self.revoked.read().expect("revocation lock").len()
    }

    /// Record a revocation; returns whether it was new.
    pub fn revoke(&self, token_id: &str) -> bool {
        let new = self
            .revoked
            .write()
            .expect("revocation lock")
            .insert(token_id.to_string());
        if new {
            self.changes.send_modify(|n| *n += 1);
        }
        new
    }

    pub fn revocation_snapshot_complete(&self) {
        self.readiness.send_modify(|r| r.revocations = true);
    }

    pub fn readiness(&self) -> Readiness {
        *self.readiness.borrow()
    }

    /// Resolves once both the first bundle and the revocation snapshot arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.readiness.subscribe();
        let _ = rx.wait_for(|r| r.is_ready()).await;
    }
}
