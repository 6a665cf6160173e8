//! The pipeline's two outside collaborators, wired to the real implementations: token checks
//! from `authority::token`, and the signed, chained audit writer.

use std::collections::HashMap;
use std::sync::{RwLock, mpsc};

use chrono::Utc;
use tokio::sync::oneshot;

use super::pipeline::{AuditSink, Capability, TokenRejection, TokenVerifier};
use crate::audit::event::AuditDraft;
use crate::audit::writer::AuditWriter;
use crate::authority::token::{
    CapabilityClaims, TokenError, TrustedIssuer, check_validity, scope_matches,
};
use crate::error::Hinted;

/// Tokens whose signature was already checked, before the cache starts over.
const VERIFIED_CACHE_CAPACITY: usize = 4096;

/// Verifies capability tokens offline with the Authority's public key.
///
/// An agent presents the same token on every call, so a token whose signature verified once is
/// remembered (signature checks dominate the per-call cost); its validity window is checked on
/// every call, and revocation by the pipeline.
pub struct AuthorityTokens {
    trust: TrustedIssuer,
    verified: RwLock<HashMap<String, CapabilityClaims>>,
}

impl AuthorityTokens {
    pub fn new(trust: TrustedIssuer) -> Self {
        Self {
            trust,
            verified: RwLock::new(HashMap::new()),
        }
    }

    fn signature_checked(&self, raw: &str) -> Result<CapabilityClaims, TokenError> {
        if let Some(claims) = self.verified.read().expect("token cache").get(raw) {
            return Ok(claims.clone());
        }
        let claims = self.trust.verify_signature(raw)?;
        let mut cache = self.verified.write().expect("token cache");
        if cache.len() >= VERIFIED_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(raw.to_string(), claims.clone());
        Ok(claims)
    }
}

impl TokenVerifier for AuthorityTokens {
    fn verify(&self, raw: &str) -> Result<Capability, TokenRejection> {
        let checked = self
            .signature_checked(raw)
            .and_then(|claims| check_validity(claims, Utc::now()));
        match checked {
            Ok(claims) => Ok(Capability {
                token_id: claims.token_id,
                agent_id: claims.agent_id,
                session_id: claims.session_id,
                actions: claims.actions,
                resource_scope: claims.resource_scope,
                sandbox_id: claims.sandbox_id,
            }),
            Err(TokenError::Expired { token_id, .. }) => Err(TokenRejection::Expired { token_id }),
            Err(err) => Err(TokenRejection::Invalid(err.to_string())),
        }
    }

    fn scope_covers(&self, scope: &str, resource: &str) -> bool {
        scope_matches(scope, resource)
    }
}

/// Records decisions with the audit writer on a dedicated thread.
///
/// `AuditWriter::append` signs and writes under the writer's lock; called from the proxy's async
/// workers, a worker waiting for that lock could serve no one else. Here the workers hand the
/// draft over and await the outcome (the call still waits for its record — no decision without
/// one), while the appender thread does the signing and the write(2). Measured against the
/// alternatives (docs/performance.md): signing on the workers under the lock, a combining
/// appender (whichever worker holds the lock writes the queued records too), and writing the
/// queued records in one write(2) were all slower — the thread pipelines with the workers.
pub struct AppenderThread {
    jobs: mpsc::Sender<Job>,
}

type Job = (AuditDraft, oneshot::Sender<Result<(), Hinted>>);

impl AppenderThread {
    pub fn start(writer: AuditWriter) -> Result<Self, Hinted> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("firma-audit".into())
            .spawn(move || {
                for (draft, reply) in queue {
                    let _ = reply.send(writer.append(draft).map(|_| ()));
                }
            })
            .map_err(|err| Hinted::new(format!("cannot start the audit thread: {err}")))?;
        Ok(Self { jobs })
    }
}

impl AuditSink for AppenderThread {
    fn submit(&self, draft: AuditDraft) -> oneshot::Receiver<Result<(), Hinted>> {
        let (reply, outcome) = oneshot::channel();
        // If the thread is gone the reply sender is dropped and the caller sees an error.
        let _ = self.jobs.send((draft, reply));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::token::{LEEWAY_SECONDS, key_id, sign_token};

    fn claims(key: &ed25519_dalek::SigningKey, expires_in: chrono::Duration) -> CapabilityClaims {
        let now = Utc::now();
        CapabilityClaims {
            token_id: "t1".into(),
            issuer: key_id(&key.verifying_key()),
            audience: "proj".into(),
            agent_id: "codex".into(),
            session_id: "s".into(),
            actions: vec!["code.read".into()],
            resource_scope: "*".into(),
            issued_at: now - chrono::Duration::hours(2),
            expires_at: now + expires_in,
            sandbox_id: String::new(),
        }
    }

    #[test]
    fn cached_tokens_still_expire_and_forgeries_never_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let tokens = AuthorityTokens::new(TrustedIssuer::new(key.verifying_key(), "proj"));
        let valid = sign_token(&key, &claims(&key, chrono::Duration::hours(1))).unwrap();
        assert_eq!(tokens.verify(&valid).unwrap().agent_id, "codex");
        assert_eq!(tokens.verify(&valid).unwrap().token_id, "t1"); // cache hit
        // A cached token past its expiry is rejected.
        let cached = tokens.signature_checked(&valid).unwrap();
        let later = cached.expires_at + chrono::Duration::seconds(LEEWAY_SECONDS);
        assert!(matches!(
            check_validity(cached, later),
            Err(TokenError::Expired { .. })
        ));
        let expired = sign_token(&key, &claims(&key, -chrono::Duration::hours(1))).unwrap();
        assert_eq!(
            tokens.verify(&expired),
            Err(TokenRejection::Expired {
                token_id: "t1".into()
            })
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
        let forged = sign_token(&other, &claims(&other, chrono::Duration::hours(1))).unwrap();
        assert!(matches!(
            tokens.verify(&forged),
            Err(TokenRejection::Invalid(_))
        ));
    }
}
