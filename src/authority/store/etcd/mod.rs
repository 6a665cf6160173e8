//! The etcd store: the shared state of several Authority replicas under one key prefix
//! ([`records`] lists the keys). Each replica holds the state in memory, follows the prefix with
//! an etcd watch ([`follow`]) and streams changes to its Sidecars; writes go to etcd first and
//! are acknowledged only once etcd has.
//!
//! Revisions: a revocation is ordered by the etcd revision that created it, the bundles by the
//! revision that last wrote them — the same numbers on every replica, so a Sidecar moving from
//! one replica to another resumes where it was.
//!
//! Health: a quorum read every [`PROBE_EVERY`]; while it fails the replica refuses to mint and
//! revoke and ends its Sidecars' streams (`UNAVAILABLE`), so they move to a replica that can see
//! the store — and when none can, their bundles age and they fail closed at their
//! `max_bundle_age`, rather than trusting a replica that cannot see the store.

mod client;
mod follow;
mod proto;
pub mod records;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use client::endpoint_url;
use client::{EtcdClient, txn_current};
use records::{Keys, StoredBundle, StoredRevocation};

use super::revocation_set::RevocationSet;
use super::{
    FleetView, PolicyStores, Position, Publication, Published, SharedState, Sighting, Snapshot,
    StoreError, StoreSettings,
};
use crate::authority::policy::{self, PolicyBundle};
use crate::authority::revocations::{Revocation, validate_token_id};
use crate::authority::signed::StreamSigner;
use crate::authority::witness::{
    Accepted, Chain, Latest, Refusal, WitnessKeys, Witnessed, parse_record,
};
use crate::config::schema::StoreBackend;
use crate::error::Hinted;

/// How often a replica checks that etcd answers a quorum read.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long sightings are gathered before they are written (one write per Sidecar).
const SIGHTINGS_EVERY: Duration = Duration::from_millis(250);

/// The latest witnessed checkpoint per chain, with the etcd mod revision of its key.
type Checkpoints = HashMap<Chain, (Latest, i64)>;

/// What the replica's tasks share.
pub(crate) struct Inner {
    client: EtcdClient,
    keys: Keys,
    signer: Arc<StreamSigner>,
    policies: Arc<PolicyStores>,
    revocations: RevocationSet,
    checkpoints: Mutex<Checkpoints>,
    fleet: Arc<FleetView>,
    /// The store revision the follower has applied.
    applied: watch::Sender<u64>,
    /// The mod revision of the bundle key as last seen, also when its value was refused (a
    /// publication replaces whatever is there, the compare-and-swap is against this).
    bundle_key_revision: AtomicI64,
    health: watch::Sender<bool>,
    /// Why the last probe failed.
    trouble: Mutex<String>,
}

pub struct EtcdState {
    inner: Arc<Inner>,
    witness_keys: WitnessKeys,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl EtcdState {
    /// Connect, read the prefix (seeding the bundles from the local policy directories when
    /// none was published yet), and start following it.
    pub async fn open(
        settings: &StoreSettings,
        signer: Arc<StreamSigner>,
    ) -> Result<Arc<Self>, Hinted> {
        let client = EtcdClient::new(&settings.config)?;
        let keys = Keys::new(&settings.prefix);
        let unreachable = |err: StoreError| {
            Hinted::new(format!(
                "cannot read the Authority's state from etcd ({}) under {}: {err}",
                client.endpoints().join(", "),
                settings.prefix
            ))
            .hint("start the etcd cluster (a majority of its members), or fix [authority.store] endpoints")
        };
        let mut range = client
            .range_prefix(keys.prefix().as_bytes())
            .await
            .map_err(unreachable)?;
        let bundle_key = keys.bundle();
        if !range.kvs.iter().any(|kv| kv.key == bundle_key) {
            seed(&client, &keys, &signer, settings).await?;
            range = client
                .range_prefix(keys.prefix().as_bytes())
                .await
                .map_err(unreachable)?;
        }
        let stored = range
            .kvs
            .iter()
            .find(|kv| kv.key == bundle_key)
            .ok_or_else(|| {
                Hinted::new(format!("{}bundle vanished while starting", settings.prefix))
            })?;
        let (runtime, issuance) = install_stored(&signer, &stored.value, stored.mod_revision)
            .map_err(|why| {
                Hinted::new(format!(
                    "the policy bundle at {}bundle (revision {}) cannot be used: {why}",
                    settings.prefix, stored.mod_revision
                ))
                .hint("publish the policies again with `firma authority publish` from a replica's project")
            })?;
        let policies = Arc::new(PolicyStores::from_bundles(
            runtime,
            issuance,
            &settings.policies_dir,
            &settings.issuance_dir,
        ));
        let revision = range.header.as_ref().map_or(0, |h| h.revision);
        let inner = Arc::new(Inner {
            client,
            keys,
            signer,
            policies,
            revocations: RevocationSet::default(),
            checkpoints: Mutex::new(HashMap::new()),
            fleet: FleetView::new(&settings.replica),
            applied: watch::Sender::new(0),
            bundle_key_revision: AtomicI64::new(stored.mod_revision),
            health: watch::Sender::new(true),
            trouble: Mutex::new(String::new()),
        });
        follow::apply_all(&inner, range.kvs, revision);

        let (outbox, sightings) = mpsc::unbounded_channel();
        inner.fleet.share_through(outbox);
        let tasks = vec![
            tokio::spawn(follow::follow(inner.clone(), revision + 1)),
            tokio::spawn(probe(inner.clone())),
            tokio::spawn(write_sightings(inner.clone(), sightings)),
        ];
        Ok(Arc::new(Self {
            inner,
            witness_keys: WitnessKeys::new(
                &settings.witness_keys,
                settings.local_audit_key.clone(),
            ),
            tasks: Mutex::new(tasks),
        }))
    }

    /// Wait (at most the store timeout) until the follower applied `revision`, so what this
    /// replica serves next includes the write just acknowledged.
    async fn caught_up(&self, revision: u64) {
        let mut applied = self.inner.applied.subscribe();
        let _ = tokio::time::timeout(
            self.inner.client.timeout(),
            applied.wait_for(|r| *r >= revision),
        )
        .await;
    }
}

/// The first replica of a new prefix publishes its local policy directories.
async fn seed(
    client: &EtcdClient,
    keys: &Keys,
    signer: &StreamSigner,
    settings: &StoreSettings,
) -> Result<(), Hinted> {
    let runtime = policy::load_dir(&settings.policies_dir, &settings.policies_dir)?;
    let issuance = policy::load_dir(&settings.issuance_dir, &settings.policies_dir)?;
    let stored = stored_bundle(signer, &runtime, &issuance, "seeded by the first replica");
    let value = serde_json::to_vec(&stored).expect("plain struct");
    let txn = client
        .put_if("the first policy bundle", &keys.bundle(), 0, value)
        .await
        .map_err(|err| Hinted::new(format!("cannot seed {}bundle: {err}", keys.prefix())))?;
    if txn.succeeded {
        tracing::info!(
            prefix = keys.prefix(),
            runtime = %runtime.version,
            "seeded the etcd store with the policies of {} and {}",
            settings.policies_dir.display(),
            settings.issuance_dir.display()
        );
    }
    Ok(())
}

fn stored_bundle(
    signer: &StreamSigner,
    runtime: &PolicyBundle,
    issuance: &PolicyBundle,
    by: &str,
) -> StoredBundle {
    let names = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| {
                f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect()
    };
    let mut stored = StoredBundle {
        runtime: runtime.policies.clone(),
        issuance: issuance.policies.clone(),
        schema: runtime.schema_text.clone(),
        runtime_files: names(&runtime.files),
        issuance_files: names(&issuance.files),
        published_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        published_by: by.to_string(),
        signature: String::new(),
    };
    stored.signature = signer.sign_stored_bundle(&stored.signed_text());
    stored
}

/// Verify and load a stored bundle value written at `revision`.
pub(crate) fn install_stored(
    signer: &StreamSigner,
    value: &[u8],
    revision: i64,
) -> Result<(Arc<PolicyBundle>, Arc<PolicyBundle>), String> {
    let stored: StoredBundle =
        serde_json::from_slice(value).map_err(|err| format!("it is not a stored bundle: {err}"))?;
    signer
        .verify_stored_bundle(&stored.signed_text(), &stored.signature)
        .map_err(|err| format!("{err} (not published by a replica holding this Authority key)"))?;
    let revision = u64::try_from(revision).unwrap_or(0);
    let build = |origin: &str, text: &str, files: &[String]| {
        policy::from_text(
            origin,
            text,
            &stored.schema,
            files.iter().map(PathBuf::from).collect(),
        )
        .map(|bundle| {
            let mut bundle = Arc::unwrap_or_clone(bundle);
            bundle.revision = revision;
            Arc::new(bundle)
        })
        .map_err(|err| err.message().to_string())
    };
    Ok((
        build(
            "published runtime policies",
            &stored.runtime,
            &stored.runtime_files,
        )?,
        build(
            "published issuance policies",
            &stored.issuance,
            &stored.issuance_files,
        )?,
    ))
}

/// Probe etcd every [`PROBE_EVERY`]; publish the verdict.
async fn probe(inner: Arc<Inner>) {
    let key = inner.keys.bundle();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inner.client.probe(&key).await {
            Ok(_) => {
                if !*inner.health.borrow() {
                    tracing::info!(
                        prefix = inner.keys.prefix(),
                        "the etcd store answers again: minting, revoking and serving Sidecars resume"
                    );
                }
                inner
                    .health
                    .send_if_modified(|h| !std::mem::replace(h, true));
            }
            Err(err) => {
                if *inner.health.borrow() {
                    tracing::error!(
                        prefix = inner.keys.prefix(),
                        "the etcd store does not answer: {err}; refusing to mint and revoke and ending the Sidecars' streams until it does"
                    );
                }
                *inner.trouble.lock().unwrap_or_else(|e| e.into_inner()) = err.to_string();
                inner
                    .health
                    .send_if_modified(|h| std::mem::replace(h, false));
            }
        }
    }
}

/// Write changed sightings, at most one per Sidecar every [`SIGHTINGS_EVERY`] (best effort:
/// the fleet view is informational).
async fn write_sightings(inner: Arc<Inner>, mut changes: mpsc::UnboundedReceiver<Sighting>) {
    while let Some(first) = changes.recv().await {
        tokio::time::sleep(SIGHTINGS_EVERY).await;
        let mut latest: HashMap<String, Sighting> = HashMap::new();
        latest.insert(first.key(), first);
        while let Ok(more) = changes.try_recv() {
            latest.insert(more.key(), more);
        }
        for (key, sighting) in latest {
            let value = serde_json::to_vec(&sighting).expect("plain struct");
            if let Err(err) = inner
                .client
                .put("a fleet sighting", &inner.keys.sidecar(&key), value)
                .await
            {
                tracing::debug!(sidecar = %key, "cannot share a fleet sighting: {err}");
            }
        }
    }
}

#[tonic::async_trait]
impl SharedState for EtcdState {
    fn backend(&self) -> StoreBackend {
        StoreBackend::Etcd
    }

    fn describe(&self) -> String {
        format!(
            "etcd: prefix {} at {}, revision {}, {} revocations",
            self.inner.keys.prefix(),
            self.inner.client.endpoints().join(", "),
            *self.inner.applied.borrow(),
            self.inner.revocations.len()
        )
    }

    fn policies(&self) -> &Arc<PolicyStores> {
        &self.inner.policies
    }

    fn fleet(&self) -> &Arc<FleetView> {
        &self.inner.fleet
    }

    fn writable(&self) -> Result<(), StoreError> {
        if *self.inner.health.borrow() {
            return Ok(());
        }
        let trouble = self
            .inner
            .trouble
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Err(StoreError::Unavailable(format!(
            "the etcd store does not answer ({trouble}); this replica mints and revokes only \
             while a majority of the etcd members is reachable"
        )))
    }

    fn health(&self) -> watch::Receiver<bool> {
        self.inner.health.subscribe()
    }

    async fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(bool, Revocation), StoreError> {
        validate_token_id(token_id).map_err(StoreError::Invalid)?;
        self.writable()?;
        let entry = Revocation::now(token_id, expires_at, reason);
        let value = serde_json::to_vec(&StoredRevocation::from_entry(&entry)).expect("plain");
        let txn = self
            .inner
            .client
            .put_if(
                "the revocation",
                &self.inner.keys.revocation(token_id),
                0,
                value.clone(),
            )
            .await?;
        // A retried attempt finds this very record (the first one committed after all): new.
        let ours = txn_current(&txn).filter(|kv| kv.value == value);
        if let Some(kv) = ours {
            let revision = u64::try_from(kv.create_revision).unwrap_or(0);
            self.caught_up(revision).await;
            return Ok((true, Revocation { revision, ..entry }));
        }
        if !txn.succeeded {
            let existing = txn_current(&txn)
                .and_then(|kv| {
                    let stored: StoredRevocation = serde_json::from_slice(&kv.value).ok()?;
                    Some(stored.into_entry(u64::try_from(kv.create_revision).unwrap_or(0)))
                })
                .ok_or_else(|| {
                    StoreError::Failed(format!(
                        "{token_id} is revoked in etcd but its record does not parse"
                    ))
                })?;
            return Ok((false, existing));
        }
        let revision = txn
            .header
            .map_or(0, |h| u64::try_from(h.revision).unwrap_or(0));
        self.caught_up(revision).await;
        Ok((true, Revocation { revision, ..entry }))
    }

    fn revocations_since(&self, position: Position) -> Snapshot {
        self.inner.revocations.snapshot(position)
    }

    fn revocation_count(&self) -> usize {
        self.inner.revocations.len()
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let moot = self.inner.revocations.moot(now);
        for entry in &moot {
            self.inner
                .client
                .delete(
                    "pruning a revocation",
                    &self.inner.keys.revocation(&entry.token_id),
                )
                .await?;
        }
        if !moot.is_empty() {
            tracing::info!(
                pruned = moot.len(),
                "pruned {} revocation(s) of expired tokens from etcd",
                moot.len()
            );
        }
        Ok(moot.len())
    }

    async fn witness(&self, sidecar: &str, line: &[u8]) -> Result<u64, Refusal> {
        // Another replica may have written the chain meanwhile: then read, place, try again.
        for _ in 0..3 {
            let accepted = {
                let checkpoints = self
                    .inner
                    .checkpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.witness_keys.check(sidecar, line, |chain| {
                    checkpoints
                        .get(chain)
                        .map(|((seq, head, _), _)| (*seq, head.clone()))
                })?
            };
            let (chain, seq, head, record) = match accepted {
                Accepted::Already(seq) => return Ok(seq),
                Accepted::Ahead {
                    chain,
                    seq,
                    head,
                    record,
                } => (chain, seq, head, record),
            };
            let known = self
                .inner
                .checkpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&chain)
                .map_or(0, |(_, m)| *m);
            let key = self.inner.keys.checkpoint(&chain.0, &chain.1);
            let value = serde_json::to_vec(&record).expect("plain struct");
            let txn = self
                .inner
                .client
                .put_if("the checkpoint", &key, known, value)
                .await
                .map_err(|err| Refusal::Unavailable(err.to_string()))?;
            let mut checkpoints = self
                .inner
                .checkpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if txn.succeeded {
                let revision = txn.header.map_or(0, |h| h.revision);
                checkpoints.insert(chain, ((seq, head, record), revision));
                return Ok(seq);
            }
            if let Some(kv) = txn_current(&txn)
                && let Ok((chain, latest)) = parse_record(&String::from_utf8_lossy(&kv.value))
            {
                checkpoints.insert(chain, (latest, kv.mod_revision));
            }
        }
        Err(Refusal::Unavailable(
            "the checkpoint kept changing in etcd while it was being witnessed; report again"
                .into(),
        ))
    }

    fn witnessed(&self, sidecar: &str) -> Option<(Witnessed, String)> {
        let checkpoints = self
            .inner
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let latest: HashMap<Chain, Latest> = checkpoints
            .iter()
            .filter(|((id, _), _)| id == sidecar)
            .map(|(chain, (latest, _))| (chain.clone(), latest.clone()))
            .collect();
        self.witness_keys.latest_of(sidecar, &latest)
    }

    async fn publish(&self, publication: Publication) -> Result<Published, StoreError> {
        self.writable()?;
        let names = |files: &[PathBuf]| files.to_vec();
        let invalid = |err: Hinted| StoreError::Invalid(err.message().to_string());
        let runtime = policy::from_text(
            "published runtime policies",
            &publication.runtime,
            &publication.schema,
            names(&publication.runtime_files),
        )
        .map_err(invalid)?;
        let issuance = policy::from_text(
            "published issuance policies",
            &publication.issuance,
            &publication.schema,
            names(&publication.issuance_files),
        )
        .map_err(invalid)?;
        let (current, current_issuance) = (
            self.inner.policies.runtime(),
            self.inner.policies.issuance(),
        );
        let key_revision = self.inner.bundle_key_revision.load(Ordering::Relaxed);
        let in_force = u64::try_from(key_revision).is_ok_and(|r| r == current.revision);
        if in_force
            && runtime.version == current.version
            && issuance.version == current_issuance.version
        {
            return Ok(Published {
                revision: current.revision,
                runtime_version: runtime.version.clone(),
                issuance_version: issuance.version.clone(),
                changed: false,
            });
        }
        let stored = stored_bundle(&self.inner.signer, &runtime, &issuance, &publication.by);
        let value = serde_json::to_vec(&stored).expect("plain struct");
        let txn = self
            .inner
            .client
            .put_if(
                "the publication",
                &self.inner.keys.bundle(),
                key_revision,
                value.clone(),
            )
            .await?;
        // A retried attempt may find this very record (the first one committed after all).
        let ours = txn_current(&txn)
            .filter(|kv| kv.value == value)
            .map(|kv| kv.mod_revision);
        if !txn.succeeded && ours.is_none() {
            return Err(StoreError::Conflict(format!(
                "another publication replaced revision {key_revision} meanwhile; publish again"
            )));
        }
        let revision = ours
            .or(txn.header.map(|h| h.revision))
            .map_or(0, |r| u64::try_from(r).unwrap_or(0));
        self.caught_up(revision).await;
        tracing::info!(revision, runtime = %runtime.version, issuance = %issuance.version, by = %publication.by, "policies published");
        Ok(Published {
            revision,
            runtime_version: runtime.version.clone(),
            issuance_version: issuance.version.clone(),
            changed: true,
        })
    }

    async fn close(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}
