//! Signed streams: every policy bundle, revocation event and revocation snapshot the Authority
//! sends carries an Ed25519 signature by the Authority key over its canonical bytes, and a
//! Sidecar accepts only what verifies with its pinned `authority.pub` — a process that binds the
//! Authority's port while it is down gets no Sidecar to enforce its bundle.
//!
//! Canonical bytes (documented for other verifiers in docs/authority.md): a domain tag, then each
//! field in order — strings as an 8-byte big-endian length and the UTF-8 bytes, `u32`/`u64` as
//! big-endian integers, timestamps as 8-byte big-endian seconds and 4-byte big-endian nanos.
//!
//! - bundle: `firma-policy-bundle-v2\n`, version, policies, schema, ttl_seconds (u32), sent_at,
//!   revision (u64);
//! - revocation event: `firma-revocation-v2\n`, token_id, reason, revoked_at, revision (u64);
//! - snapshot marker: `firma-revocation-snapshot-v2\n`, sent_at, snapshot_count (u64), the
//!   SHA-256 of the replayed events' canonical bytes, each preceded by its 8-byte length, and
//!   revision (u64);
//! - a bundle at rest in the etcd store: `firma-stored-bundle-v1\n`, runtime policies, issuance
//!   policies, schema, published_at — replicas refuse to serve one that does not verify.
//!
//! Revisions are the store's (etcd's) revision numbers, 0 with the files store: signing them
//! keeps a replayed genuine event from moving a Sidecar's resume position.
//!
//! The domain tags keep one kind of signed message from passing as another, or as a PASETO token
//! (whose signed bytes start with a little-endian count).

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::client::{from_timestamp, timestamp};
use super::token::key_id;
use crate::proto::{PolicyBundle, RevocationEvent};

const BUNDLE_DOMAIN: &[u8] = b"firma-policy-bundle-v2\n";
const REVOCATION_DOMAIN: &[u8] = b"firma-revocation-v2\n";
const SNAPSHOT_DOMAIN: &[u8] = b"firma-revocation-snapshot-v2\n";
const STORED_BUNDLE_DOMAIN: &[u8] = b"firma-stored-bundle-v1\n";

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it carries no signature (an Authority without signed streams, or not an Authority)")]
    Unsigned,
    #[error(
        "its signature does not verify with the pinned key {pinned} (it claims key {claimed:?})"
    )]
    BadSignature { pinned: String, claimed: String },
    #[error("it has no valid {0} timestamp")]
    NoTime(&'static str),
    #[error("the snapshot names {claimed} events but {received} were replayed")]
    CountMismatch { claimed: u64, received: u64 },
}

struct Canonical(Vec<u8>);

impl Canonical {
    fn new(domain: &[u8]) -> Self {
        Self(domain.to_vec())
    }
    fn str(mut self, text: &str) -> Self {
        self.0.extend_from_slice(&(text.len() as u64).to_be_bytes());
        self.0.extend_from_slice(text.as_bytes());
        self
    }
    fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn time(mut self, ts: &Option<prost_types::Timestamp>) -> Self {
        let ts = ts.unwrap_or_default();
        self.0.extend_from_slice(&ts.seconds.to_be_bytes());
        self.0.extend_from_slice(&ts.nanos.to_be_bytes());
        self
    }
    fn bytes(mut self, raw: &[u8]) -> Self {
        self.0.extend_from_slice(raw);
        self
    }
}

fn bundle_bytes(bundle: &PolicyBundle) -> Vec<u8> {
    Canonical::new(BUNDLE_DOMAIN)
        .str(&bundle.version)
        .str(&bundle.policies)
        .str(&bundle.schema)
        .u32(bundle.ttl_seconds)
        .time(&bundle.sent_at)
        .u64(bundle.revision)
        .0
}

fn revocation_bytes(event: &RevocationEvent) -> Vec<u8> {
    Canonical::new(REVOCATION_DOMAIN)
        .str(&event.token_id)
        .str(&event.reason)
        .time(&event.revoked_at)
        .u64(event.revision)
        .0
}

fn snapshot_bytes(marker: &RevocationEvent, digest: &[u8; 32]) -> Vec<u8> {
    Canonical::new(SNAPSHOT_DOMAIN)
        .time(&marker.sent_at)
        .u64(marker.snapshot_count)
        .bytes(digest)
        .u64(marker.revision)
        .0
}

/// The policy bundles as the etcd store keeps them (see [`StoredBundleText`]).
fn stored_bundle_bytes(stored: &StoredBundleText<'_>) -> Vec<u8> {
    Canonical::new(STORED_BUNDLE_DOMAIN)
        .str(stored.runtime)
        .str(stored.issuance)
        .str(stored.schema)
        .str(stored.published_at)
        .0
}

/// The signed fields of the bundles at rest in the etcd store.
pub struct StoredBundleText<'a> {
    pub runtime: &'a str,
    pub issuance: &'a str,
    pub schema: &'a str,
    pub published_at: &'a str,
}

/// The running digest of a revocation replay, kept the same way by sender and receiver.
#[derive(Clone, Default)]
pub struct SnapshotDigest {
    hasher: Sha256,
    count: u64,
}

impl SnapshotDigest {
    pub fn add(&mut self, event: &RevocationEvent) {
        let bytes = revocation_bytes(event);
        self.hasher.update((bytes.len() as u64).to_be_bytes());
        self.hasher.update(&bytes);
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn finish(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// The Authority's side: signs what it streams.
pub struct StreamSigner {
    key: SigningKey,
    key_id: String,
}

impl StreamSigner {
    pub fn new(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    fn sign(&self, bytes: &[u8]) -> (Vec<u8>, String) {
        (
            self.key.sign(bytes).to_bytes().to_vec(),
            self.key_id.clone(),
        )
    }

    pub fn sign_bundle(&self, bundle: &mut PolicyBundle) {
        (bundle.signature, bundle.key_id) = self.sign(&bundle_bytes(bundle));
    }

    pub fn sign_revocation(&self, event: &mut RevocationEvent) {
        (event.signature, event.key_id) = self.sign(&revocation_bytes(event));
    }

    /// The signature of bundles stored for other replicas (hex).
    pub fn sign_stored_bundle(&self, stored: &StoredBundleText<'_>) -> String {
        hex::encode(self.sign(&stored_bundle_bytes(stored)).0)
    }

    /// Whether a stored bundle was signed by this key (replicas share it).
    pub fn verify_stored_bundle(
        &self,
        stored: &StoredBundleText<'_>,
        signature_hex: &str,
    ) -> Result<(), Refused> {
        let signature = hex::decode(signature_hex).unwrap_or_default();
        Pinned::new(self.key.verifying_key()).verify(
            &stored_bundle_bytes(stored),
            &signature,
            &self.key_id,
        )
    }

    /// Complete a snapshot marker for the events `digest` covered, sent now (`marker.revision`,
    /// the store revision it covers, is set by the caller).
    pub fn sign_snapshot(&self, marker: &mut RevocationEvent, digest: &SnapshotDigest) {
        marker.snapshot_complete = true;
        marker.sent_at = Some(timestamp(Utc::now()));
        marker.snapshot_count = digest.count();
        (marker.signature, marker.key_id) = self.sign(&snapshot_bytes(marker, &digest.finish()));
    }
}

/// The Sidecar's side: the pinned Authority key.
#[derive(Clone)]
pub struct Pinned {
    key: VerifyingKey,
    key_id: String,
}

impl Pinned {
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key_id: key_id(&key),
            key,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn verify(&self, bytes: &[u8], signature: &[u8], claimed: &str) -> Result<(), Refused> {
        if signature.is_empty() {
            return Err(Refused::Unsigned);
        }
        let bad = || Refused::BadSignature {
            pinned: self.key_id.clone(),
            claimed: claimed.to_string(),
        };
        let signature = Signature::from_slice(signature).map_err(|_| bad())?;
        self.key.verify_strict(bytes, &signature).map_err(|_| bad())
    }

    /// A bundle's signature; returns its `sent_at`.
    pub fn verify_bundle(&self, bundle: &PolicyBundle) -> Result<DateTime<Utc>, Refused> {
        self.verify(&bundle_bytes(bundle), &bundle.signature, &bundle.key_id)?;
        bundle
            .sent_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or(Refused::NoTime("sent_at"))
    }

    pub fn verify_revocation(&self, event: &RevocationEvent) -> Result<(), Refused> {
        self.verify(&revocation_bytes(event), &event.signature, &event.key_id)
    }

    /// A snapshot marker against the events received before it; returns its `sent_at`.
    pub fn verify_snapshot(
        &self,
        marker: &RevocationEvent,
        received: &SnapshotDigest,
    ) -> Result<DateTime<Utc>, Refused> {
        self.verify(
            &snapshot_bytes(marker, &received.finish()),
            &marker.signature,
            &marker.key_id,
        )?;
        if marker.snapshot_count != received.count() {
            return Err(Refused::CountMismatch {
                claimed: marker.snapshot_count,
                received: received.count(),
            });
        }
        marker
            .sent_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or(Refused::NoTime("sent_at"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bundle() -> PolicyBundle {
        PolicyBundle {
            version: "v1".into(),
            policies: "permit (principal, action, resource);".into(),
            schema: "namespace Firma {}".into(),
            ttl_seconds: 30,
            sent_at: Some(timestamp(Utc::now())),
            ..Default::default()
        }
    }

    fn event(id: &str) -> RevocationEvent {
        RevocationEvent {
            token_id: id.into(),
            reason: "leaked".into(),
            revoked_at: Some(timestamp(Utc::now())),
            ..Default::default()
        }
    }

    #[test]
    fn signed_bundles_verify_and_every_field_is_covered() {
        let key = crate::config::keys::generate();
        let signer = StreamSigner::new(key.clone());
        let pinned = Pinned::new(key.verifying_key());
        let mut signed = bundle();
        assert_eq!(pinned.verify_bundle(&signed), Err(Refused::Unsigned));
        signer.sign_bundle(&mut signed);
        assert!(signed.key_id.starts_with("k4.pid."));
        pinned.verify_bundle(&signed).unwrap();
        let edits: [fn(&mut PolicyBundle); 6] = [
            |b| b.version.push('x'),
            |b| b.policies.push(' '),
            |b| b.schema.push(' '),
            |b| b.ttl_seconds += 1,
            |b| b.sent_at.as_mut().unwrap().nanos ^= 1,
            |b| b.revision += 1,
        ];
        for edit in edits {
            let mut tampered = signed.clone();
            edit(&mut tampered);
            assert!(matches!(
                pinned.verify_bundle(&tampered),
                Err(Refused::BadSignature { .. })
            ));
        }
        let other = Pinned::new(crate::config::keys::generate().verifying_key());
        let err = other.verify_bundle(&signed).unwrap_err().to_string();
        assert!(
            err.contains(other.key_id()) && err.contains(&signed.key_id),
            "{err}"
        );
    }

    #[test]
    fn stored_bundles_verify_with_the_shared_key_only() {
        let key = crate::config::keys::generate();
        let signer = StreamSigner::new(key);
        let text = |runtime| StoredBundleText {
            runtime,
            issuance: "permit (principal, action, resource);",
            schema: "namespace Firma {}",
            published_at: "2026-11-30T00:00:00Z",
        };
        let signature = signer.sign_stored_bundle(&text("forbid (principal, action, resource);"));
        signer
            .verify_stored_bundle(&text("forbid (principal, action, resource);"), &signature)
            .unwrap();
        assert!(signer.verify_stored_bundle(&text(""), &signature).is_err());
        let other = StreamSigner::new(crate::config::keys::generate());
        assert!(
            other
                .verify_stored_bundle(&text("forbid (principal, action, resource);"), &signature)
                .is_err()
        );
        assert!(signer.verify_stored_bundle(&text(""), "zz").is_err());
    }

    #[test]
    fn snapshots_bind_the_replayed_events_and_their_count() {
        let key = crate::config::keys::generate();
        let signer = StreamSigner::new(key.clone());
        let pinned = Pinned::new(key.verifying_key());
        let mut sent = SnapshotDigest::default();
        let events: Vec<_> = ["a", "b"]
            .iter()
            .map(|id| {
                let mut e = event(id);
                signer.sign_revocation(&mut e);
                sent.add(&e);
                e
            })
            .collect();
        let mut marker = RevocationEvent::default();
        signer.sign_snapshot(&mut marker, &sent);
        let mut received = SnapshotDigest::default();
        for e in &events {
            pinned.verify_revocation(e).unwrap();
            received.add(e);
        }
        pinned.verify_snapshot(&marker, &received).unwrap();
        // Revisions are signed: a replayed event or marker cannot move a resume position.
        let mut moved = events[0].clone();
        moved.revision += 1000;
        assert!(pinned.verify_revocation(&moved).is_err());
        let mut moved = marker.clone();
        moved.revision += 1000;
        assert!(pinned.verify_snapshot(&moved, &received).is_err());
        // A replay that withholds an event does not verify.
        let mut withheld = SnapshotDigest::default();
        withheld.add(&events[0]);
        assert!(pinned.verify_snapshot(&marker, &withheld).is_err());
        // Nor does a signed event in another kind's place.
        let mut as_marker = events[0].clone();
        as_marker.snapshot_complete = true;
        assert!(
            pinned
                .verify_snapshot(&as_marker, &SnapshotDigest::default())
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn field_boundaries_are_unambiguous(a in ".{0,8}", b in ".{0,8}", c in ".{0,8}") {
            // Moving bytes between neighbouring fields changes the canonical bytes.
            let one = RevocationEvent { token_id: format!("{a}{b}"), reason: c.clone(), ..Default::default() };
            let two = RevocationEvent { token_id: a.clone(), reason: format!("{b}{c}"), ..Default::default() };
            prop_assume!(!b.is_empty());
            prop_assert_ne!(revocation_bytes(&one), revocation_bytes(&two));
        }
    }
}
