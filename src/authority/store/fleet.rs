//! The fleet view: every Sidecar a replica has seen — its id and host, the bundle revision it
//! was sent, its latest witnessed checkpoint, when it was last seen and whether a stream is
//! open now. With the etcd store each replica also writes its sightings under the prefix
//! (`sidecars/`), so any replica answers for the whole fleet (`firma fleet status`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One Sidecar as seen by a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// Its id: the client certificate's name, else what it calls itself (`local` by default).
    pub sidecar_id: String,
    /// The host name it reported.
    pub host: String,
    /// The address it connected from.
    pub address: String,
    /// The replica it is (or was last) attached to.
    pub replica: String,
    pub bundle_revision: u64,
    pub bundle_version: String,
    /// The latest witnessed checkpoint's `seq` (0: none yet) and when.
    pub checkpoint_seq: u64,
    pub checkpoint_at: Option<DateTime<Utc>>,
    pub last_seen: DateTime<Utc>,
    /// A stream is open to `replica` (as far as that replica last wrote).
    pub connected: bool,
}

impl Sighting {
    /// The key a Sidecar is listed under: its id on its host.
    pub fn key(&self) -> String {
        key(&self.sidecar_id, &self.host)
    }
}

/// What `firma fleet status` shows: the replica that answered and the Sidecars it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    pub replica: String,
    /// `files` or `etcd`.
    pub backend: String,
    pub sidecars: Vec<Sighting>,
}

/// This machine's host name (for sightings and replica names); empty when unknown.
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn key(sidecar_id: &str, host: &str) -> String {
    format!("{sidecar_id}@{host}")
}

struct Local {
    sighting: Sighting,
    streams: usize,
}

pub struct FleetView {
    replica: String,
    local: Mutex<HashMap<String, Local>>,
    /// Sightings written by other replicas (etcd store).
    remote: Mutex<HashMap<String, Sighting>>,
    /// Where changed local sightings go to be shared (etcd store).
    outbox: OnceLock<mpsc::UnboundedSender<Sighting>>,
}

impl FleetView {
    pub fn new(replica: &str) -> Arc<Self> {
        Arc::new(Self {
            replica: replica.to_string(),
            local: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            outbox: OnceLock::new(),
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Share every change of a local sighting through `outbox` from now on.
    pub fn share_through(&self, outbox: mpsc::UnboundedSender<Sighting>) {
        let _ = self.outbox.set(outbox);
    }

    fn share(&self, sighting: &Sighting) {
        if let Some(outbox) = self.outbox.get() {
            let _ = outbox.send(sighting.clone());
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream of Sidecar `sidecar_id` on `host` opened from `address`; the returned guard
    /// marks it closed when dropped.
    pub fn attach(self: &Arc<Self>, sidecar_id: &str, host: &str, address: &str) -> Attachment {
        let host = if host.is_empty() { address } else { host };
        let key = key(sidecar_id, host);
        let now = Utc::now();
        let shared = {
            let mut local = self.local();
            let entry = local.entry(key.clone()).or_insert_with(|| Local {
                sighting: Sighting {
                    sidecar_id: sidecar_id.to_string(),
                    host: host.to_string(),
                    address: String::new(),
                    replica: self.replica.clone(),
                    bundle_revision: 0,
                    bundle_version: String::new(),
                    checkpoint_seq: 0,
                    checkpoint_at: None,
                    last_seen: now,
                    connected: false,
                },
                streams: 0,
            });
            entry.streams += 1;
            entry.sighting.address = address.to_string();
            entry.sighting.last_seen = now;
            let changed = !entry.sighting.connected;
            entry.sighting.connected = true;
            changed.then(|| entry.sighting.clone())
        };
        if let Some(sighting) = shared {
            self.share(&sighting);
        }
        Attachment {
            fleet: self.clone(),
            key,
        }
    }

    /// The bundle `revision` / `version` was sent on an attached stream.
    pub fn bundle_sent(&self, attachment: &Attachment, revision: u64, version: &str) {
        let shared = {
            let mut local = self.local();
            let Some(entry) = local.get_mut(&attachment.key) else {
                return;
            };
            entry.sighting.last_seen = Utc::now();
            let changed = entry.sighting.bundle_version != version
                || entry.sighting.bundle_revision != revision;
            entry.sighting.bundle_revision = revision;
            entry.sighting.bundle_version = version.to_string();
            changed.then(|| entry.sighting.clone())
        };
        if let Some(sighting) = shared {
            self.share(&sighting);
        }
    }

    /// A checkpoint of Sidecar `sidecar_id` was witnessed at `seq`.
    pub fn checkpoint(&self, sidecar_id: &str, seq: u64) {
        let now = Utc::now();
        let shared: Vec<Sighting> = {
            let mut local = self.local();
            local
                .values_mut()
                .filter(|e| e.sighting.sidecar_id == sidecar_id)
                .filter_map(|e| {
                    e.sighting.last_seen = now;
                    (e.sighting.checkpoint_seq != seq).then(|| {
                        e.sighting.checkpoint_seq = seq;
                        e.sighting.checkpoint_at = Some(now);
                        e.sighting.clone()
                    })
                })
                .collect()
        };
        for sighting in &shared {
            self.share(sighting);
        }
    }

    fn detach(&self, key: &str) {
        let shared = {
            let mut local = self.local();
            let Some(entry) = local.get_mut(key) else {
                return;
            };
            entry.streams = entry.streams.saturating_sub(1);
            entry.sighting.last_seen = Utc::now();
            (entry.streams == 0).then(|| {
                entry.sighting.connected = false;
                entry.sighting.clone()
            })
        };
        if let Some(sighting) = shared {
            self.share(&sighting);
        }
    }

    /// What another replica wrote (etcd store); our own writes come back too and are skipped.
    pub fn merge_remote(&self, sighting: Sighting) {
        if sighting.replica == self.replica {
            return;
        }
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sighting.key(), sighting);
    }

    /// Every Sidecar seen, by key: where one is known twice, the replica it is attached to (or
    /// the latest sighting) wins.
    pub fn list(&self) -> Vec<Sighting> {
        let now = Utc::now();
        let mut all: HashMap<String, Sighting> = self
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (key, entry) in self.local().iter() {
            let mut mine = entry.sighting.clone();
            if mine.connected {
                mine.last_seen = now;
            }
            let keep_remote = all
                .get(key)
                .is_some_and(|other| !mine.connected && other.last_seen > mine.last_seen);
            if !keep_remote {
                all.insert(key.clone(), mine);
            }
        }
        let mut list: Vec<Sighting> = all.into_values().collect();
        list.sort_by_key(Sighting::key);
        list
    }
}

/// An open stream of one Sidecar; dropping it records the disconnect.
pub struct Attachment {
    fleet: Arc<FleetView>,
    key: String,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.fleet.detach(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_checkpoints_and_other_replicas() {
        let fleet = FleetView::new("r1");
        let (tx, mut shared) = mpsc::unbounded_channel();
        fleet.share_through(tx);
        let bundles = fleet.attach("host-b", "b.example", "10.0.0.2:4000");
        let revocations = fleet.attach("host-b", "b.example", "10.0.0.2:4001");
        fleet.bundle_sent(&bundles, 7, "abc");
        fleet.checkpoint("host-b", 3);
        let list = fleet.list();
        assert_eq!(list.len(), 1);
        let seen = &list[0];
        assert!(seen.connected);
        assert_eq!(
            (
                seen.bundle_revision,
                seen.checkpoint_seq,
                seen.replica.as_str()
            ),
            (7, 3, "r1")
        );
        drop(bundles);
        assert!(fleet.list()[0].connected, "one stream is still open");
        drop(revocations);
        assert!(!fleet.list()[0].connected);
        // attach, bundle, checkpoint, detach: four shared changes.
        let mut count = 0;
        while shared.try_recv().is_ok() {
            count += 1;
        }
        assert_eq!(count, 4);

        // The Sidecar moved to r2: r2's newer sighting wins over r1's closed one.
        let mut moved = fleet.list()[0].clone();
        moved.replica = "r2".into();
        moved.connected = true;
        moved.last_seen = Utc::now() + chrono::Duration::seconds(1);
        fleet.merge_remote(moved);
        let list = fleet.list();
        assert_eq!((list.len(), list[0].replica.as_str()), (1, "r2"));
        // Our own writes coming back through etcd are not "remote".
        let mut own = list[0].clone();
        own.replica = "r1".into();
        own.sidecar_id = "other".into();
        fleet.merge_remote(own);
        assert_eq!(fleet.list().len(), 1);
    }
}
