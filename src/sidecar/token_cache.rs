//! Capability tokens checked offline with the Authority's public key, remembered once verified.
//!
//! An agent presents the same token on every call and the signature check dominates the
//! per-call cost, so a token whose signature verified once is remembered; its validity window is
//! checked on every call, revocation by the pipeline. The cache is keyed by the *parsed* token
//! (its decoded bytes), so the spellings of one token share one entry, and it is bounded by
//! bytes ([`TOKEN_CACHE_BYTES`]).

use std::sync::Arc;

use base64::Engine;
use chrono::Utc;

use super::cache::{BoundedCache, CacheKind};
use super::pipeline::{TokenRejection, TokenVerifier};
use crate::authority::token::{CapabilityClaims, TokenError, TrustedIssuer};

/// The PASETO header every capability token starts with.
const HEADER: &str = "v4.public.";

/// Verifies capability tokens with the Authority's public key (and audience).
pub struct VerifiedTokens {
    trust: TrustedIssuer,
    verified: BoundedCache<Vec<u8>, Arc<CapabilityClaims>>,
}

impl VerifiedTokens {
    pub fn new(trust: TrustedIssuer) -> Self {
        Self {
            trust,
            verified: BoundedCache::of(CacheKind::Tokens),
        }
    }

    fn signature_checked(&self, raw: &str) -> Result<Arc<CapabilityClaims>, TokenError> {
        let key = parsed(raw);
        if let Some(claims) = key.as_ref().and_then(|k| self.verified.get(k)) {
            return Ok(claims);
        }
        let claims = Arc::new(self.trust.verify_signature(raw)?);
        if let Some(key) = key {
            let bytes = key.len() + claims_size(&claims);
            self.verified.insert(key, claims.clone(), bytes);
        }
        Ok(claims)
    }
}

impl TokenVerifier for VerifiedTokens {
    fn verify(&self, raw: &str) -> Result<Arc<CapabilityClaims>, TokenRejection> {
        let claims = self
            .signature_checked(raw)
            .map_err(|err| TokenRejection::Invalid(err.to_string()))?;
        match claims.validity_at(Utc::now()) {
            Ok(()) => Ok(claims),
            Err(TokenError::Expired { token_id, .. }) => Err(TokenRejection::Expired { token_id }),
            Err(err) => Err(TokenRejection::Invalid(err.to_string())),
        }
    }
}

/// The token's decoded bytes (signed part, then footer): one key for every spelling of a token.
/// `None` when it does not decode strictly (such a token is checked, never cached).
fn parsed(raw: &str) -> Option<Vec<u8>> {
    let body = raw.trim().strip_prefix(HEADER)?;
    let (signed, footer) = body.split_once('.').unwrap_or((body, ""));
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut key = engine.decode(signed).ok()?;
    key.push(b'.');
    key.extend(engine.decode(footer).ok()?);
    Some(key)
}

/// What a cached claim set holds on the heap, roughly.
fn claims_size(claims: &CapabilityClaims) -> usize {
    std::mem::size_of::<CapabilityClaims>()
        + claims.token_id.len()
        + claims.agent_id.len()
        + claims.session_id.len()
        + claims.resource_scope.len()
        + claims
            .actions
            .iter()
            .map(|a| a.len() + std::mem::size_of::<String>())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::token::{key_id, sign_token};

    fn claims(expires_in: chrono::Duration) -> CapabilityClaims {
        let now = Utc::now();
        CapabilityClaims {
            token_id: "t1".into(),
            issuer: key_id(&ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]).verifying_key()),
            audience: "proj".into(),
            sandbox_id: String::new(),
            agent_id: "codex".into(),
            session_id: "s".into(),
            actions: vec!["code.read".into()],
            resource_scope: "*".into(),
            issued_at: now - chrono::Duration::hours(2),
            expires_at: now + expires_in,
        }
    }

    #[test]
    fn cached_tokens_still_expire_and_forgeries_never_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let tokens = VerifiedTokens::new(TrustedIssuer::new(key.verifying_key(), "proj"));
        let valid = sign_token(&key, &claims(chrono::Duration::hours(1))).unwrap();
        assert_eq!(tokens.verify(&valid).unwrap().agent_id, "codex");
        assert_eq!(tokens.verify(&valid).unwrap().token_id, "t1"); // cache hit
        assert_eq!(tokens.verified.len(), 1);
        let expired = sign_token(&key, &claims(-chrono::Duration::hours(1))).unwrap();
        assert_eq!(
            tokens.verify(&expired),
            Err(TokenRejection::Expired {
                token_id: "t1".into()
            })
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
        // Signed by another key, naming itself as the issuer: not the trusted issuer.
        let forged_claims = CapabilityClaims {
            issuer: key_id(&other.verifying_key()),
            ..claims(chrono::Duration::hours(1))
        };
        let forged = sign_token(&other, &forged_claims).unwrap();
        assert!(matches!(
            tokens.verify(&forged),
            Err(TokenRejection::Invalid(_))
        ));
    }

    #[test]
    fn spellings_of_one_token_share_one_entry() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let tokens = VerifiedTokens::new(TrustedIssuer::new(key.verifying_key(), "proj"));
        let valid = sign_token(&key, &claims(chrono::Duration::hours(1))).unwrap();
        tokens.verify(&valid).unwrap();
        tokens.verify(&format!("  {valid} ")).unwrap();
        assert_eq!(tokens.verified.len(), 1);
        // A spliced token (another token's signature on this payload) never hits the entry.
        let mut spliced = valid.clone();
        spliced.pop();
        spliced.push(if valid.ends_with('A') { 'B' } else { 'A' });
        assert!(tokens.verify(&spliced).is_err());
        assert_eq!(parsed("not a token"), None);
    }

    #[test]
    fn a_wildcard_action_grants_nothing() {
        let mut wild = claims(chrono::Duration::hours(1));
        wild.actions = vec!["*".into()];
        assert!(!wild.allows_action("code.read"));
        assert!(!wild.allows_action("communication.internal.send"));
        assert!(claims(chrono::Duration::hours(1)).allows_action("code.read"));
    }
}
