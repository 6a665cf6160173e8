//! The revocations a replica holds in memory, in store-revision order, with the broadcast to
//! its watchers. Applying an entry and taking a snapshot share one lock, so a watcher's replay
//! and its live events neither overlap nor leave a gap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::{Position, Snapshot};
use crate::authority::revocations::{BROADCAST_CAPACITY, Revocation};

#[derive(Default)]
struct State {
    /// By store revision (each revocation is created at its own revision).
    entries: BTreeMap<u64, Revocation>,
    by_id: HashMap<String, u64>,
    /// The store revision everything up to which has been applied.
    revision: u64,
}

pub struct RevocationSet {
    state: Mutex<State>,
    live: broadcast::Sender<Revocation>,
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            live: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }
}

impl RevocationSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `entry` (from the store, in revision order); a new one is broadcast. Returns whether
    /// it was new.
    pub fn apply(&self, entry: Revocation) -> bool {
        let mut state = self.lock();
        state.revision = state.revision.max(entry.revision);
        if state.by_id.contains_key(&entry.token_id) {
            return false;
        }
        state.by_id.insert(entry.token_id.clone(), entry.revision);
        state.entries.insert(entry.revision, entry.clone());
        let _ = self.live.send(entry);
        true
    }

    /// A revocation left the store (pruned). Sidecars keep what they have.
    pub fn remove(&self, token_id: &str) {
        let mut state = self.lock();
        if let Some(revision) = state.by_id.remove(token_id) {
            state.entries.remove(&revision);
        }
    }

    /// Everything up to `revision` has been applied.
    pub fn advance(&self, revision: u64) {
        let mut state = self.lock();
        state.revision = state.revision.max(revision);
    }

    /// The ids held now (for a resync's diff).
    pub fn ids(&self) -> Vec<String> {
        self.lock().by_id.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Entries whose tokens can no longer be valid at `now`.
    pub fn moot(&self, now: DateTime<Utc>) -> Vec<Revocation> {
        self.lock()
            .entries
            .values()
            .filter(|e| e.is_moot(now))
            .cloned()
            .collect()
    }

    pub fn snapshot(&self, position: Position) -> Snapshot {
        let state = self.lock();
        Snapshot {
            replay: state
                .entries
                .values()
                .filter(|e| position.precedes(e))
                .cloned()
                .collect(),
            revision: state.revision,
            live: self.live.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, revision: u64) -> Revocation {
        Revocation {
            token_id: id.into(),
            revoked_at: Utc::now(),
            expires_at: None,
            reason: "r".into(),
            revision,
        }
    }

    #[test]
    fn replay_and_live_split_at_the_snapshot_revision() {
        let set = RevocationSet::default();
        assert!(set.apply(entry("a", 5)));
        assert!(set.apply(entry("b", 7)));
        assert!(!set.apply(entry("a", 9)), "one entry per token");
        let all = set.snapshot(Position::default());
        assert_eq!(all.replay.len(), 2);
        assert_eq!(all.revision, 9);
        let mut after = set.snapshot(Position {
            since: None,
            since_revision: 5,
        });
        assert_eq!(after.replay.len(), 1);
        assert_eq!(after.replay[0].token_id, "b");
        set.apply(entry("c", 11));
        assert_eq!(after.live.try_recv().unwrap().token_id, "c");
        set.remove("a");
        let ids: Vec<_> = set
            .snapshot(Position::default())
            .replay
            .into_iter()
            .map(|e| e.token_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(set.len(), 2);
    }
}
