//! Capability tokens: PASETO `v4.public` (Ed25519) carrying [`CapabilityClaims`] as JSON.
//!
//! The payload is a JSON object with exactly these claims (format documented in `docs/tokens.md`):
//! `jti` (token id), `iss` (the PASERK id of the signing key), `aud` (the deployment id), `sub`
//! (agent id), `sid` (session id), `actions` (action classes), `scope` (resource scope), `iat`
//! and `exp` (RFC 3339, UTC). Unknown claims are rejected: a verifier never silently ignores a
//! restriction it does not understand. A Sidecar accepts only tokens whose `iss` is its pinned
//! key and whose `aud` is its own deployment ([`TrustedIssuer`]).

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::{Public, version4};
use serde::{Deserialize, Serialize};

/// The PASETO header every firma token starts with.
pub const TOKEN_PREFIX: &str = "v4.public.";

/// Clock skew tolerated between the Authority and a verifier, in seconds: a token is accepted
/// until `expires_at + LEEWAY` and from `issued_at - LEEWAY`.
pub const LEEWAY_SECONDS: i64 = 5;

/// What a capability token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityClaims {
    pub token_id: String,
    /// `iss`: the PASERK id (`k4.pid.…`) of the key that signed the token ([`key_id`]).
    pub issuer: String,
    /// `aud`: the deployment the token is for (`[project] deployment`).
    pub audience: String,
    pub agent_id: String,
    pub session_id: String,
    /// Action classes the holder may perform (e.g. `communication.external.send`).
    pub actions: Vec<String>,
    /// Where the actions apply; see [`scope_matches`].
    pub resource_scope: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The `firma run` sandbox the holder runs in; empty when none.
    pub sandbox_id: String,
}

impl CapabilityClaims {
    /// Whether the token grants `action_class` — the one rule, used by the Sidecar for every
    /// call. A token grants exactly the classes it lists: there is no wildcard. Issuance only
    /// signs registered classes (which `*` is not), so a `"*"` in a token grants nothing.
    pub fn allows_action(&self, action_class: &str) -> bool {
        self.actions.iter().any(|a| a == action_class)
    }

    /// The time checks of [`verify_token`] on a borrowed claim set (see [`check_validity`]).
    pub fn validity_at(&self, now: DateTime<Utc>) -> Result<(), TokenError> {
        let leeway = chrono::Duration::seconds(LEEWAY_SECONDS);
        if self.expires_at + leeway <= now {
            return Err(TokenError::Expired {
                token_id: self.token_id.clone(),
                expires_at: self.expires_at,
            });
        }
        if self.issued_at - leeway > now {
            return Err(TokenError::NotYetValid {
                token_id: self.token_id.clone(),
                issued_at: self.issued_at,
            });
        }
        Ok(())
    }
}

/// Why a token was not accepted (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a PASETO v4.public token, or its claims are missing, mistyped or inconsistent.
    #[error("malformed capability token: {0}")]
    Malformed(String),
    /// Well-formed, but not signed by the expected key (or altered).
    #[error("capability token signature does not verify")]
    BadSignature,
    #[error("capability token {token_id} expired at {expires_at}")]
    Expired {
        token_id: String,
        expires_at: DateTime<Utc>,
    },
    /// Issued in the future beyond the leeway: a clock problem or a forged time.
    #[error("capability token {token_id} is not valid before {issued_at}")]
    NotYetValid {
        token_id: String,
        issued_at: DateTime<Utc>,
    },
    /// Signed by the pinned key but naming another issuer (a mis-built token).
    #[error("capability token {token_id} names issuer {got:?}, not the pinned key {expected}")]
    WrongIssuer {
        token_id: String,
        expected: String,
        got: String,
    },
    /// Genuine, but for another deployment.
    #[error(
        "capability token {token_id} is for deployment {got:?}; this Sidecar serves {expected:?}"
    )]
    WrongAudience {
        token_id: String,
        expected: String,
        got: String,
    },
}

impl TokenError {
    /// A stable, machine-readable code (audit reasons, deny bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "TOKEN_MALFORMED",
            Self::BadSignature => "TOKEN_BAD_SIGNATURE",
            Self::Expired { .. } => "TOKEN_EXPIRED",
            Self::NotYetValid { .. } => "TOKEN_NOT_YET_VALID",
            Self::WrongIssuer { .. } => "TOKEN_WRONG_ISSUER",
            Self::WrongAudience { .. } => "TOKEN_WRONG_AUDIENCE",
        }
    }
}

/// The JSON payload, field for field.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    jti: String,
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    actions: Vec<String>,
    scope: String,
    iat: String,
    exp: String,
    /// Absent unless the holder runs in a `firma run` sandbox.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sandbox_id: String,
}

fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, TokenError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| TokenError::Malformed(format!("claim `{name}` is not RFC 3339: {err}")))
}

/// Claims every token must satisfy, whether being signed or verified.
fn check_shape(claims: &CapabilityClaims) -> Result<(), TokenError> {
    let nonempty = [
        ("jti", &claims.token_id),
        ("iss", &claims.issuer),
        ("aud", &claims.audience),
        ("sub", &claims.agent_id),
        ("sid", &claims.session_id),
        ("scope", &claims.resource_scope),
    ];
    for (name, value) in nonempty {
        if value.is_empty() {
            return Err(TokenError::Malformed(format!("claim `{name}` is empty")));
        }
    }
    if claims.actions.is_empty() || claims.actions.iter().any(String::is_empty) {
        return Err(TokenError::Malformed(
            "claim `actions` must list at least one non-empty action class".into(),
        ));
    }
    if claims.expires_at <= claims.issued_at {
        return Err(TokenError::Malformed(
            "claim `exp` is not after `iat`".into(),
        ));
    }
    Ok(())
}

/// The pasetors form of an ed25519-dalek key (seed ‖ public key).
fn secret_key(key: &SigningKey) -> AsymmetricSecretKey<V4> {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&key.to_bytes());
    bytes[32..].copy_from_slice(key.verifying_key().as_bytes());
    AsymmetricSecretKey::<V4>::from(&bytes).expect("64 bytes of a valid Ed25519 key pair")
}

fn public_key(key: &VerifyingKey) -> AsymmetricPublicKey<V4> {
    AsymmetricPublicKey::<V4>::from(key.as_bytes()).expect("32-byte Ed25519 public key")
}

/// The PASERK id (`k4.pid.…`) of an Authority public key: how tokens (`iss`), signed streams and
/// messages name a key. Any PASERK implementation computes the same id from `authority.pub`.
pub fn key_id(key: &VerifyingKey) -> String {
    use pasetors::paserk::{FormatAsPaserk, Id};
    let mut id = String::new();
    Id::from(&public_key(key))
        .fmt(&mut id)
        .expect("writing to a String cannot fail");
    id
}

/// Sign `claims` into a `v4.public.` token; `claims.issuer` must be the key's [`key_id`].
pub fn sign_token(key: &SigningKey, claims: &CapabilityClaims) -> Result<String, TokenError> {
    check_shape(claims)?;
    let own = key_id(&key.verifying_key());
    if claims.issuer != own {
        return Err(TokenError::Malformed(format!(
            "claim `iss` {:?} does not name the signing key {own}",
            claims.issuer
        )));
    }
    let payload = Payload {
        jti: claims.token_id.clone(),
        iss: claims.issuer.clone(),
        aud: claims.audience.clone(),
        sub: claims.agent_id.clone(),
        sid: claims.session_id.clone(),
        actions: claims.actions.clone(),
        scope: claims.resource_scope.clone(),
        iat: rfc3339(&claims.issued_at),
        exp: rfc3339(&claims.expires_at),
        sandbox_id: claims.sandbox_id.clone(),
    };
    let message = serde_json::to_vec(&payload).expect("plain struct serialises");
    version4::PublicToken::sign(&secret_key(key), &message, None, None)
        .map_err(|err| TokenError::Malformed(format!("cannot sign: {err}")))
}

/// Parse a token's claims after checking its signature, without looking at the clock.
pub fn verify_signature(token: &str, key: &VerifyingKey) -> Result<CapabilityClaims, TokenError> {
    let token = token.trim();
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(TokenError::Malformed(format!(
            "does not start with `{TOKEN_PREFIX}`"
        )));
    }
    let untrusted = UntrustedToken::<Public, V4>::try_from(token)
        .map_err(|_| TokenError::Malformed("not a PASETO v4.public token".into()))?;
    let trusted = PublicToken::verify(&public_key(key), &untrusted, None, None)
        .map_err(|_| TokenError::BadSignature)?;
    let payload: Payload = serde_json::from_str(trusted.payload())
        .map_err(|err| TokenError::Malformed(format!("claims: {err}")))?;
    let claims = CapabilityClaims {
        issued_at: parse_time("iat", &payload.iat)?,
        expires_at: parse_time("exp", &payload.exp)?,
        token_id: payload.jti,
        issuer: payload.iss,
        audience: payload.aud,
        agent_id: payload.sub,
        session_id: payload.sid,
        actions: payload.actions,
        resource_scope: payload.scope,
        sandbox_id: payload.sandbox_id,
    };
    check_shape(&claims)?;
    Ok(claims)
}

/// Whom a verifier trusts: the pinned Authority key (by which tokens are signed and which their
/// `iss` names) and its own deployment (which their `aud` must name). What the Sidecar uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    key: VerifyingKey,
    key_id: String,
    audience: String,
}

impl TrustedIssuer {
    pub fn new(key: VerifyingKey, audience: impl Into<String>) -> Self {
        Self {
            key_id: key_id(&key),
            key,
            audience: audience.into(),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signature, claims shape, issuer and audience — everything but the clock.
    pub fn verify_signature(&self, token: &str) -> Result<CapabilityClaims, TokenError> {
        let claims = verify_signature(token, &self.key)?;
        if claims.issuer != self.key_id {
            return Err(TokenError::WrongIssuer {
                token_id: claims.token_id,
                expected: self.key_id.clone(),
                got: claims.issuer,
            });
        }
        if claims.audience != self.audience {
            return Err(TokenError::WrongAudience {
                token_id: claims.token_id,
                expected: self.audience.clone(),
                got: claims.audience,
            });
        }
        Ok(claims)
    }

    /// [`Self::verify_signature`] and validity at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<CapabilityClaims, TokenError> {
        check_validity(self.verify_signature(token)?, now)
    }
}

/// Verify signature, claims shape and validity at `now` (± [`LEEWAY_SECONDS`]); not the
/// audience (see [`TrustedIssuer`]).
pub fn verify_token(
    token: &str,
    key: &VerifyingKey,
    now: DateTime<Utc>,
) -> Result<CapabilityClaims, TokenError> {
    check_validity(verify_signature(token, key)?, now)
}

/// The time checks of [`verify_token`] alone, for callers that cache signature checks: valid
/// from `issued_at - LEEWAY` until `expires_at + LEEWAY` (exclusive).
pub fn check_validity(
    claims: CapabilityClaims,
    now: DateTime<Utc>,
) -> Result<CapabilityClaims, TokenError> {
    claims.validity_at(now).map(|()| claims)
}

/// Whether a token's resource `scope` covers `resource` (`host` + `path`, e.g.
/// `api.openai.com/v1/chat/completions`).
///
/// - `*` covers everything.
/// - `host` covers that host with any path: `api.openai.com` covers `api.openai.com` and
///   `api.openai.com/v1/x`, but not `api.openai.com.evil` or `xapi.openai.com`.
/// - `*.example.com` covers every subdomain of `example.com` (not `example.com` itself).
/// - `host/path` covers that path and everything below it on segment boundaries:
///   `github.com/org` covers `github.com/org` and `github.com/org/repo`, not `github.com/organic`.
/// - A trailing `/*` means the same as without it (`github.com/org/*` = `github.com/org`).
///
/// Hosts compare case-insensitively, paths case-sensitively. A query string in `resource` is
/// ignored. An empty scope covers nothing.
pub fn scope_matches(scope: &str, resource: &str) -> bool {
    let scope = scope.trim();
    if scope == "*" {
        return true;
    }
    let scope = scope.strip_suffix("/*").unwrap_or(scope);
    if scope.is_empty() {
        return false;
    }
    let resource = resource.split(['?', '#']).next().unwrap_or_default();
    let (scope_host, scope_path) = split_host(scope);
    let (res_host, res_path) = split_host(resource);
    let host_ok = match scope_host.strip_prefix("*.") {
        Some(suffix) => {
            res_host.len() > suffix.len() + 1
                && res_host.as_bytes()[res_host.len() - suffix.len() - 1] == b'.'
                && res_host[res_host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => scope_host.eq_ignore_ascii_case(res_host),
    };
    if !host_ok {
        return false;
    }
    let scope_path = scope_path.trim_end_matches('/');
    if scope_path.is_empty() {
        return true;
    }
    res_path == scope_path
        || res_path
            .strip_prefix(scope_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `host/path` → (`host`, `/path`); `host` → (`host`, ``).
fn split_host(text: &str) -> (&str, &str) {
    match text.find('/') {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    }
}

/// Check that a scope is one [`scope_matches`] understands; `Err` says why not.
pub fn validate_scope(scope: &str) -> Result<(), String> {
    if scope == "*" {
        return Ok(());
    }
    if scope.is_empty() {
        return Err("is empty (use \"*\" for any resource)".into());
    }
    if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace".into());
    }
    let base = scope.strip_suffix("/*").unwrap_or(scope);
    let (host, path) = split_host(base);
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() || bare.contains('*') {
        return Err("needs a host: `*`, `host`, `*.domain`, or `host/path`".into());
    }
    if path.contains('*') {
        return Err(
            "`*` is allowed only as the whole scope, a leading `*.` or a trailing `/*`".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(now: DateTime<Utc>) -> CapabilityClaims {
        CapabilityClaims {
            token_id: "0193-tok".into(),
            issuer: String::new(),
            audience: "proj".into(),
            agent_id: "codex".into(),
            session_id: "s1".into(),
            actions: vec!["communication.external.send".into()],
            resource_scope: "*".into(),
            issued_at: now,
            expires_at: now + chrono::Duration::minutes(15),
            sandbox_id: String::new(),
        }
    }

    fn signed_claims(key: &SigningKey, now: DateTime<Utc>) -> CapabilityClaims {
        CapabilityClaims {
            issuer: key_id(&key.verifying_key()),
            ..claims(now)
        }
    }

    #[test]
    fn the_sandbox_claim_round_trips_and_is_absent_when_empty() {
        let key = crate::config::keys::generate();
        let now = Utc::now();
        let plain = sign_token(&key, &signed_claims(&key, now)).unwrap();
        let payload = |token: &str| {
            let untrusted = UntrustedToken::<Public, V4>::try_from(token).unwrap();
            let trusted =
                PublicToken::verify(&public_key(&key.verifying_key()), &untrusted, None, None)
                    .unwrap();
            trusted.payload().to_string()
        };
        assert!(!payload(&plain).contains("sandbox_id"));
        let sandboxed = CapabilityClaims {
            sandbox_id: "5f1c0a2b9d3e4f60".into(),
            ..signed_claims(&key, now)
        };
        let token = sign_token(&key, &sandboxed).unwrap();
        assert!(payload(&token).contains("\"sandbox_id\":\"5f1c0a2b9d3e4f60\""));
        assert_eq!(
            verify_token(&token, &key.verifying_key(), now).unwrap(),
            sandboxed
        );
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = crate::config::keys::generate();
        let now = Utc::now();
        let token = sign_token(&key, &signed_claims(&key, now)).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(
            verify_token(&token, &key.verifying_key(), now).unwrap(),
            signed_claims(&key, now)
        );
        let other = crate::config::keys::generate();
        assert_eq!(
            verify_token(&token, &other.verifying_key(), now),
            Err(TokenError::BadSignature)
        );
        let mut bytes = token.clone().into_bytes();
        let i = TOKEN_PREFIX.len() + 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            verify_token(&tampered, &key.verifying_key(), now),
            Err(TokenError::BadSignature | TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify_token("v3.public.xx", &key.verifying_key(), now),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        let key = crate::config::keys::generate();
        let now = Utc::now();
        let token = sign_token(&key, &signed_claims(&key, now)).unwrap();
        let trust = TrustedIssuer::new(key.verifying_key(), "proj");
        assert!(trust.verify(&token, now).is_ok());
        let other_deployment = TrustedIssuer::new(key.verifying_key(), "prod");
        let err = other_deployment.verify(&token, now).unwrap_err();
        assert_eq!(err.code(), "TOKEN_WRONG_AUDIENCE");
        assert!(err.to_string().contains("\"proj\"") && err.to_string().contains("\"prod\""));
        // `iss` must name the signing key, at signing and at verification.
        let mut c = signed_claims(&key, now);
        c.issuer = "k4.pid.someone-else".into();
        assert!(matches!(
            sign_token(&key, &c),
            Err(TokenError::Malformed(_))
        ));
        let payload = format!(
            r#"{{"jti":"t","iss":"k4.pid.x","aud":"proj","sub":"a","sid":"s","actions":["x"],"scope":"*","iat":"{}","exp":"{}"}}"#,
            rfc3339(&now),
            rfc3339(&(now + chrono::Duration::minutes(1)))
        );
        let forged =
            version4::PublicToken::sign(&secret_key(&key), payload.as_bytes(), None, None).unwrap();
        assert_eq!(
            trust.verify(&forged, now).unwrap_err().code(),
            "TOKEN_WRONG_ISSUER"
        );
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let key = crate::config::keys::generate();
        let now = Utc::now();
        let c = signed_claims(&key, now);
        let token = sign_token(&key, &c).unwrap();
        let vk = key.verifying_key();
        let just_after = c.expires_at + chrono::Duration::seconds(LEEWAY_SECONDS - 1);
        assert!(verify_token(&token, &vk, just_after).is_ok());
        let too_late = c.expires_at + chrono::Duration::seconds(LEEWAY_SECONDS);
        assert!(matches!(
            verify_token(&token, &vk, too_late),
            Err(TokenError::Expired { .. })
        ));
        let too_early = now - chrono::Duration::seconds(LEEWAY_SECONDS + 1);
        assert!(matches!(
            verify_token(&token, &vk, too_early),
            Err(TokenError::NotYetValid { .. })
        ));
    }

    #[test]
    fn bad_claims_are_refused_at_signing() {
        let key = crate::config::keys::generate();
        let mut c = signed_claims(&key, Utc::now());
        c.actions.clear();
        assert!(matches!(
            sign_token(&key, &c),
            Err(TokenError::Malformed(_))
        ));
        let mut c = signed_claims(&key, Utc::now());
        c.expires_at = c.issued_at;
        assert!(matches!(
            sign_token(&key, &c),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_claims_are_rejected() {
        let key = crate::config::keys::generate();
        let payload = br#"{"jti":"t","iss":"i","aud":"d","sub":"a","sid":"s","actions":["x"],"scope":"*","iat":"2026-01-01T00:00:00Z","exp":"2026-01-01T01:00:00Z","admin":true}"#;
        let token = version4::PublicToken::sign(&secret_key(&key), payload, None, None).unwrap();
        assert!(matches!(
            verify_signature(&token, &key.verifying_key()),
            Err(TokenError::Malformed(_))
        ));
    }

    /// Ed25519 signatures are deterministic: a fixed key and fixed claims give a fixed token,
    /// which pins the wire format (header, claim names, time encoding).
    #[test]
    fn wire_format_is_stable() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let claims = CapabilityClaims {
            token_id: "0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42".into(),
            issuer: key_id(&key.verifying_key()),
            audience: "my-project".into(),
            agent_id: "codex".into(),
            session_id: "session-1".into(),
            actions: vec!["communication.external.send".into(), "code.read".into()],
            resource_scope: "api.anthropic.com".into(),
            issued_at: at("2026-11-26T23:40:00Z"),
            expires_at: at("2026-11-26T23:55:00Z"),
            sandbox_id: String::new(),
        };
        let token = sign_token(&key, &claims).unwrap();
        let body = token.strip_prefix(TOKEN_PREFIX).unwrap();
        let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body)
            .unwrap();
        let payload = std::str::from_utf8(&raw[..raw.len() - 64]).unwrap();
        insta::assert_snapshot!("token_payload", payload);
        insta::assert_snapshot!("token", token);
    }

    #[test]
    fn scope_examples() {
        let cases = [
            ("*", "anything/at/all", true),
            ("api.openai.com", "api.openai.com", true),
            ("api.openai.com", "API.openai.com/v1/x", true),
            ("api.openai.com", "api.openai.com.evil/v1", false),
            ("api.openai.com", "xapi.openai.com/v1", false),
            ("*.example.com", "a.b.example.com/x", true),
            ("*.example.com", "example.com/x", false),
            ("*.example.com", "badexample.com", false),
            ("github.com/org", "github.com/org/repo", true),
            ("github.com/org", "github.com/org", true),
            ("github.com/org", "github.com/organic", false),
            ("github.com/org/*", "github.com/org/repo", true),
            ("github.com/org/", "github.com/org/repo?x=1", true),
            ("", "x", false),
        ];
        for (scope, resource, expected) in cases {
            assert_eq!(
                scope_matches(scope, resource),
                expected,
                "{scope} vs {resource}"
            );
        }
        assert!(validate_scope("*").is_ok());
        assert!(validate_scope("api.x.com/v1/*").is_ok());
        assert!(validate_scope("a*b").is_err());
        assert!(validate_scope("").is_err());
        assert!(validate_scope("x.com/a*").is_err());
    }

    proptest! {
        #[test]
        fn scope_covers_itself_and_its_subpaths(
            host in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
            path in "(/[a-z0-9]{1,5}){0,3}",
            extra in "(/[a-z0-9]{1,5}){0,2}",
        ) {
            let scope = format!("{host}{path}");
            let resource = format!("{host}{path}{extra}");
            let wildcard = format!("{scope}/*");
            let longer = format!("{scope}x");
            prop_assert!(validate_scope(&scope).is_ok());
            prop_assert!(scope_matches(&scope, &resource));
            prop_assert!(scope_matches(&wildcard, &resource));
            prop_assert!(scope_matches("*", &resource));
            // Extending the last label or segment always leaves the scope.
            prop_assert!(!scope_matches(&scope, &longer));
        }

        #[test]
        fn any_claims_round_trip(
            agent in "[A-Za-z0-9._-]{1,20}",
            session in "[A-Za-z0-9_-]{1,30}",
            actions in proptest::collection::vec("[a-z.]{1,20}", 1..4),
            scope in "[a-z./*]{1,20}",
            ttl in 1i64..100_000,
        ) {
            let key = crate::config::keys::generate();
            let now = Utc::now();
            let c = CapabilityClaims {
                token_id: uuid::Uuid::now_v7().to_string(),
                issuer: key_id(&key.verifying_key()),
                audience: "proj".into(),
                agent_id: agent,
                session_id: session,
                actions,
                resource_scope: scope,
                issued_at: now,
                expires_at: now + chrono::Duration::seconds(ttl),
                sandbox_id: String::new(),
            };
            let token = sign_token(&key, &c).unwrap();
            prop_assert_eq!(verify_token(&token, &key.verifying_key(), now).unwrap(), c);
        }
    }
}
