//! What the etcd store keeps under its prefix, and how keys are named:
//!
//! | key | value |
//! |---|---|
//! | `<prefix>bundle` | [`StoredBundle`]: runtime and issuance policies, schema, signed |
//! | `<prefix>revocations/<token-id>` | [`StoredRevocation`] (its create revision orders it) |
//! | `<prefix>checkpoints/<sidecar>/<key-fingerprint>` | the latest witnessed checkpoint (`Witnessed`) |
//! | `<prefix>sidecars/<sidecar>@<host>` | the fleet view's `Sighting` |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::authority::revocations::Revocation;
use crate::authority::signed::StoredBundleText;

const BUNDLE: &str = "bundle";
const REVOCATIONS: &str = "revocations/";
const CHECKPOINTS: &str = "checkpoints/";
const SIDECARS: &str = "sidecars/";

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bundle,
    Revocation(String),
    Checkpoint,
    Sidecar,
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn bundle(&self) -> Vec<u8> {
        format!("{}{BUNDLE}", self.prefix).into_bytes()
    }

    pub fn revocation(&self, token_id: &str) -> Vec<u8> {
        format!("{}{REVOCATIONS}{token_id}", self.prefix).into_bytes()
    }

    pub fn checkpoint(&self, sidecar: &str, fingerprint: &str) -> Vec<u8> {
        format!("{}{CHECKPOINTS}{sidecar}/{fingerprint}", self.prefix).into_bytes()
    }

    pub fn sidecar(&self, key: &str) -> Vec<u8> {
        format!("{}{SIDECARS}{key}", self.prefix).into_bytes()
    }

    pub fn kind(&self, key: &[u8]) -> Kind {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.prefix))
        else {
            return Kind::Other;
        };
        if rest == BUNDLE {
            Kind::Bundle
        } else if let Some(id) = rest.strip_prefix(REVOCATIONS) {
            Kind::Revocation(id.to_string())
        } else if rest.starts_with(CHECKPOINTS) {
            Kind::Checkpoint
        } else if rest.starts_with(SIDECARS) {
            Kind::Sidecar
        } else {
            Kind::Other
        }
    }
}

/// The policy bundles in force, as published: signed with the Authority key every replica
/// holds, so a value planted in etcd by someone else is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBundle {
    pub runtime: String,
    pub issuance: String,
    pub schema: String,
    pub runtime_files: Vec<String>,
    pub issuance_files: Vec<String>,
    pub published_at: String,
    pub published_by: String,
    /// Hex Ed25519 signature (see `signed::StoredBundleText`).
    pub signature: String,
}

impl StoredBundle {
    pub fn signed_text(&self) -> StoredBundleText<'_> {
        StoredBundleText {
            runtime: &self.runtime,
            issuance: &self.issuance,
            schema: &self.schema,
            published_at: &self.published_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRevocation {
    pub token_id: String,
    pub revoked_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

impl StoredRevocation {
    pub fn from_entry(entry: &Revocation) -> Self {
        Self {
            token_id: entry.token_id.clone(),
            revoked_at: entry.revoked_at,
            expires_at: entry.expires_at,
            reason: entry.reason.clone(),
        }
    }

    /// The entry, created at store revision `revision`.
    pub fn into_entry(self, revision: u64) -> Revocation {
        Revocation {
            token_id: self.token_id,
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
            reason: self.reason,
            revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_their_kind() {
        let keys = Keys::new("/firma/x/");
        assert_eq!(keys.kind(&keys.bundle()), Kind::Bundle);
        assert_eq!(
            keys.kind(&keys.revocation("abc")),
            Kind::Revocation("abc".into())
        );
        assert_eq!(keys.kind(&keys.checkpoint("b", "f")), Kind::Checkpoint);
        assert_eq!(keys.kind(&keys.sidecar("b@h")), Kind::Sidecar);
        assert_eq!(keys.kind(b"/firma/y/bundle"), Kind::Other);
        assert_eq!(keys.kind(b"/firma/x/unknown"), Kind::Other);
    }
}
