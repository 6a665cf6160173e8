//! The pipeline's two outside collaborators, wired to the real implementations: token checks
//! from `authority::token`, and the signed, chained audit writer.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::pipeline::{AuditSink, Capability, TokenRejection, TokenVerifier};
use crate::audit::event::AuditDraft;
use crate::audit::writer::AuditWriter;
use crate::authority::token::{TokenError, scope_matches, verify_token};
use crate::error::Hinted;

/// Verifies capability tokens offline with the Authority's public key.
pub struct AuthorityTokens {
    key: VerifyingKey,
}

impl AuthorityTokens {
    pub fn new(key: VerifyingKey) -> Self {
        Self { key }
    }
}

impl TokenVerifier for AuthorityTokens {
    fn verify(&self, raw: &str) -> Result<Capability, TokenRejection> {
        match verify_token(raw, &self.key, chrono::Utc::now()) {
            Ok(claims) => Ok(Capability {
                token_id: claims.token_id,
                agent_id: claims.agent_id,
                session_id: claims.session_id,
                actions: claims.actions,
                resource_scope: claims.resource_scope,
            }),
            Err(TokenError::Expired { token_id, .. }) => Err(TokenRejection::Expired { token_id }),
            Err(err) => Err(TokenRejection::Invalid(err.to_string())),
        }
    }

    fn scope_covers(&self, scope: &str, resource: &str) -> bool {
        scope_matches(scope, resource)
    }
}

/// Records decisions with the audit writer (returns after the line is written).
pub struct WriterSink(pub Arc<AuditWriter>);

impl AuditSink for WriterSink {
    fn record(&self, draft: AuditDraft) -> Result<(), Hinted> {
        self.0.append(draft).map(|_| ())
    }
}
