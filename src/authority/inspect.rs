//! Tokens as an operator handles them: what `firma token inspect` reports, and what
//! `firma token revoke` accepts (a token id, or a whole token whose id is read after its
//! signature verified).

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::token::{
    CapabilityClaims, LEEWAY_SECONDS, TOKEN_PREFIX, TokenError, key_id, verify_signature,
};
use crate::error::Hinted;

/// What `token revoke` was given, resolved: the id and, from a whole token, its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeTarget {
    pub token_id: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Is `arg` a whole token (`v4.public.…`)?
pub fn is_token(arg: &str) -> bool {
    arg.trim().starts_with(TOKEN_PREFIX)
}

/// A `token revoke` argument: a token id (a UUID), or a whole token verified with `key`
/// (`key_file` names it in errors).
pub fn revoke_target(
    arg: &str,
    key: Option<(&VerifyingKey, &std::path::Path)>,
) -> Result<RevokeTarget, Hinted> {
    if !is_token(arg) {
        super::revocations::validate_uuid(arg.trim()).map_err(|why| {
            Hinted::new(format!("<TOKEN>: {why}, nor a token (v4.public.…)")).hint(
                "pass the token id printed by `firma token issue --json`, or the token itself",
            )
        })?;
        return Ok(RevokeTarget {
            token_id: arg.trim().to_string(),
            expires_at: None,
        });
    }
    let (key, key_file) = key.ok_or_else(|| {
        Hinted::new("a whole token is verified before it is revoked, but no firma.toml names the Authority's public key")
            .hint("run inside the project, pass --config, or revoke by token id")
    })?;
    let claims = verify_signature(arg, key).map_err(|err| refused(&err, key_file))?;
    Ok(RevokeTarget {
        token_id: claims.token_id,
        expires_at: Some(claims.expires_at),
    })
}

fn refused(err: &TokenError, key_file: &std::path::Path) -> Hinted {
    Hinted::new(format!("{err} (checked with {})", key_file.display())).hint(
        "only tokens of this project's Authority can be read; check --config, or that the \
         token was copied whole",
    )
}

/// Where a token stands in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    Valid,
    Expired,
    NotYetValid,
}

/// Whether the Authority holds a revocation for the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RevocationStatus {
    NotRevoked,
    Revoked {
        revoked_at: DateTime<Utc>,
        reason: String,
    },
    /// The Authority could not be asked.
    Unknown {
        why: String,
    },
}

/// A verified token, as `firma token inspect` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    pub token_id: String,
    pub issuer: String,
    pub audience: String,
    pub agent_id: String,
    pub session_id: String,
    pub actions: Vec<String>,
    pub resource_scope: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The public key file the signature was verified with.
    pub verified_with: String,
    /// The deployment this project serves; Sidecars refuse tokens for another.
    pub expected_audience: String,
    pub audience_matches: bool,
    pub validity: Validity,
    pub revocation: RevocationStatus,
}

impl Inspection {
    /// Verify `token` with `key` and read it at `now`; the revocation status is filled in by
    /// the caller (it needs the Authority).
    pub fn verify(
        token: &str,
        key: &VerifyingKey,
        key_file: &std::path::Path,
        expected_audience: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, Hinted> {
        let claims = verify_signature(token, key).map_err(|err| refused(&err, key_file))?;
        if claims.issuer != key_id(key) {
            return Err(refused(
                &TokenError::WrongIssuer {
                    token_id: claims.token_id.clone(),
                    expected: key_id(key),
                    got: claims.issuer,
                },
                key_file,
            ));
        }
        let validity = validity(&claims, now);
        Ok(Self {
            audience_matches: claims.audience == expected_audience,
            expected_audience: expected_audience.to_string(),
            verified_with: key_file.display().to_string(),
            validity,
            revocation: RevocationStatus::Unknown {
                why: "not asked".into(),
            },
            token_id: claims.token_id,
            issuer: claims.issuer,
            audience: claims.audience,
            agent_id: claims.agent_id,
            session_id: claims.session_id,
            actions: claims.actions,
            resource_scope: claims.resource_scope,
            issued_at: claims.issued_at,
            expires_at: claims.expires_at,
        })
    }

    /// Whether a Sidecar of this project would accept the token now (as far as is known).
    pub fn is_usable(&self) -> bool {
        self.validity == Validity::Valid
            && self.audience_matches
            && !matches!(self.revocation, RevocationStatus::Revoked { .. })
    }
}

/// The verifiers' rule, with their leeway (see `token::check_validity`).
fn validity(claims: &CapabilityClaims, now: DateTime<Utc>) -> Validity {
    let leeway = chrono::Duration::seconds(LEEWAY_SECONDS);
    if claims.expires_at + leeway <= now {
        Validity::Expired
    } else if claims.issued_at - leeway > now {
        Validity::NotYetValid
    } else {
        Validity::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::token::sign_token;

    fn token(key: &ed25519_dalek::SigningKey, ttl: i64) -> (String, CapabilityClaims) {
        let now = Utc::now();
        let claims = CapabilityClaims {
            token_id: uuid::Uuid::now_v7().to_string(),
            issuer: key_id(&key.verifying_key()),
            audience: "proj".into(),
            agent_id: "codex".into(),
            session_id: "s".into(),
            sandbox_id: String::new(),
            actions: vec!["code.read".into()],
            resource_scope: "*".into(),
            issued_at: now - chrono::Duration::minutes(30),
            expires_at: now + chrono::Duration::minutes(ttl),
        };
        (sign_token(key, &claims).unwrap(), claims)
    }

    #[test]
    fn revoke_accepts_ids_and_verified_tokens_only() {
        let key = crate::config::keys::generate();
        let public = key.verifying_key();
        let file = std::path::Path::new("authority.pub");
        let (raw, claims) = token(&key, 10);
        let target = revoke_target(&raw, Some((&public, file))).unwrap();
        assert_eq!(target.token_id, claims.token_id);
        assert_eq!(target.expires_at, Some(claims.expires_at));
        assert_eq!(
            revoke_target(&claims.token_id, None).unwrap().token_id,
            claims.token_id
        );
        let err = revoke_target("not-a-uuid", None).unwrap_err();
        assert!(
            err.message().contains("\"not-a-uuid\" is not a token id"),
            "{err}"
        );
        let other = crate::config::keys::generate().verifying_key();
        let err = revoke_target(&raw, Some((&other, file))).unwrap_err();
        assert!(err.message().contains("authority.pub"), "{err}");
        assert!(revoke_target(&raw, None).is_err());
    }

    #[test]
    fn inspection_reports_validity_and_audience() {
        let key = crate::config::keys::generate();
        let public = key.verifying_key();
        let file = std::path::Path::new("authority.pub");
        let now = Utc::now();
        let (live, _) = token(&key, 10);
        let seen = Inspection::verify(&live, &public, file, "proj", now).unwrap();
        assert_eq!(seen.validity, Validity::Valid);
        assert!(seen.audience_matches);
        let (old, _) = token(&key, -10);
        let seen = Inspection::verify(&old, &public, file, "other", now).unwrap();
        assert_eq!(seen.validity, Validity::Expired);
        assert!(!seen.audience_matches && !seen.is_usable());
    }
}
