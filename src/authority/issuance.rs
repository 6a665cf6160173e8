//! `IssueCapability`: check the request, ask Cedar (issuance policies) about every requested
//! action, clamp the lifetime, sign.
//!
//! Cedar request per action: principal `Firma::Agent::"<agent_id>"`, action
//! `Firma::Action::"<class>"`, resource `Firma::Resource::"<resource_scope>"`, context
//! `{phase: "issue", session_id, time}` (time in unix seconds).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression,
};
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::SigningKey;

use super::policy::{PolicyBundle, policy_label};
use super::store::PolicyStores;
use super::token::{CapabilityClaims, TokenError, key_id, sign_token, validate_scope};
use crate::config::action_classes::{self, CEDAR_NAMESPACE};
use crate::config::load::validate_agent_id;

/// Reason codes of a denial (a normal response, not a gRPC error).
pub mod reason {
    /// The issuance policy directory holds no policies.
    pub const NO_POLICIES: &str = "NO_POLICIES";
    /// No policy permits one of the actions, or a `forbid` matched.
    pub const POLICY_DENIED: &str = "POLICY_DENIED";
    /// The request does not fit the schema in force (e.g. a custom schema lacks the action).
    pub const SCHEMA_MISMATCH: &str = "SCHEMA_MISMATCH";
}

/// A request that passed the shape checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub agent_id: String,
    /// Registered action classes, de-duplicated, in request order.
    pub actions: Vec<String>,
    pub resource_scope: String,
    pub session_id: String,
    pub ttl: Duration,
    /// The `firma run` sandbox of the requester (empty: none); signed into the token.
    pub sandbox_id: String,
}

impl IssueRequest {
    /// Check a wire request; `Err` is the message of an `INVALID_ARGUMENT`.
    /// An empty session id gets a fresh UUID v7.
    pub fn from_wire(
        agent_id: &str,
        actions: &[String],
        resource_scope: &str,
        session_id: &str,
        ttl_seconds: i64,
    ) -> Result<Self, String> {
        validate_agent_id(agent_id).map_err(|why| format!("agent_id {agent_id:?} {why}"))?;
        if actions.is_empty() {
            return Err("actions is empty: name at least one action class".into());
        }
        let mut unique: Vec<String> = Vec::new();
        for action in actions {
            if !action_classes::is_registered(action) {
                return Err(format!(
                    "unknown action class {action:?} (registered classes are listed in docs/configuration.md)"
                ));
            }
            if !unique.contains(action) {
                unique.push(action.clone());
            }
        }
        validate_scope(resource_scope)
            .map_err(|why| format!("resource_scope {resource_scope:?} {why}"))?;
        let session_id = if session_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            validate_session_id(session_id)?;
            session_id.to_string()
        };
        if ttl_seconds <= 0 {
            return Err(format!("ttl_seconds must be positive, got {ttl_seconds}"));
        }
        Ok(Self {
            agent_id: agent_id.to_string(),
            actions: unique,
            resource_scope: resource_scope.to_string(),
            session_id,
            ttl: Duration::from_secs(ttl_seconds.unsigned_abs()),
            sandbox_id: String::new(),
        })
    }

    /// The requester's sandbox id (same alphabet as session ids; empty: none).
    pub fn with_sandbox(mut self, sandbox_id: &str) -> Result<Self, String> {
        if !sandbox_id.is_empty() {
            validate_session_id(sandbox_id).map_err(|_| {
                format!(
                    "sandbox_id {sandbox_id:?} must be 1-128 letters, digits, '.', '_', ':' or '-'"
                )
            })?;
        }
        self.sandbox_id = sandbox_id.to_string();
        Ok(self)
    }
}

/// Session ids: 1–128 of `[A-Za-z0-9._:-]`.
pub fn validate_session_id(session_id: &str) -> Result<(), String> {
    let ok = !session_id.is_empty()
        && session_id.len() <= 128
        && session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "session_id {session_id:?} must be 1-128 letters, digits, '.', '_', ':' or '-'"
        ))
    }
}

/// What issuance decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueOutcome {
    Granted {
        token: String,
        claims: CapabilityClaims,
    },
    Denied {
        reason: &'static str,
        message: String,
    },
}

pub struct Issuer {
    key: SigningKey,
    /// `iss` of every token: the key's PASERK id.
    key_id: String,
    /// `aud` of every token: the deployment id.
    audience: String,
    max_ttl: Duration,
    stores: Arc<PolicyStores>,
    authorizer: Authorizer,
}

impl Issuer {
    pub fn new(
        key: SigningKey,
        audience: String,
        max_ttl: Duration,
        stores: Arc<PolicyStores>,
    ) -> Self {
        Self {
            key_id: key_id(&key.verifying_key()),
            audience,
            key,
            max_ttl,
            stores,
            authorizer: Authorizer::new(),
        }
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Decide and, when every action is permitted, sign a token valid from `now`.
    pub fn issue(
        &self,
        request: &IssueRequest,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, TokenError> {
        let now = now.trunc_subsecs(0);
        let bundle = self.stores.issuance();
        if let Some(denied) = self.check_policies(&bundle, request, now) {
            return Ok(denied);
        }
        let ttl = request.ttl.min(self.max_ttl);
        let claims = CapabilityClaims {
            token_id: uuid::Uuid::now_v7().to_string(),
            issuer: self.key_id.clone(),
            audience: self.audience.clone(),
            agent_id: request.agent_id.clone(),
            session_id: request.session_id.clone(),
            actions: request.actions.clone(),
            resource_scope: request.resource_scope.clone(),
            issued_at: now,
            expires_at: now
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(1)),
            sandbox_id: request.sandbox_id.clone(),
        };
        let token = sign_token(&self.key, &claims)?;
        Ok(IssueOutcome::Granted { token, claims })
    }

    /// `None` when every action is permitted; otherwise the first denial.
    fn check_policies(
        &self,
        bundle: &PolicyBundle,
        request: &IssueRequest,
        now: DateTime<Utc>,
    ) -> Option<IssueOutcome> {
        if bundle.is_empty() {
            return Some(IssueOutcome::Denied {
                reason: reason::NO_POLICIES,
                message: format!(
                    "no issuance policies are loaded from {}",
                    self.stores.issuance_dir().display()
                ),
            });
        }
        let principal = entity("Agent", &request.agent_id);
        let resource = entity("Resource", &request.resource_scope);
        for action in &request.actions {
            let action_uid = entity("Action", action);
            let context = Context::from_pairs([
                (
                    "phase".to_string(),
                    RestrictedExpression::new_string("issue".into()),
                ),
                (
                    "session_id".to_string(),
                    RestrictedExpression::new_string(request.session_id.clone()),
                ),
                (
                    "time".to_string(),
                    RestrictedExpression::new_long(now.timestamp()),
                ),
            ])
            .expect("distinct context keys");
            let cedar_request = match Request::new(
                principal.clone(),
                action_uid,
                resource.clone(),
                context,
                Some(&bundle.schema),
            ) {
                Ok(r) => r,
                Err(err) => {
                    return Some(IssueOutcome::Denied {
                        reason: reason::SCHEMA_MISMATCH,
                        message: format!(
                            "action {action:?} does not fit the Cedar schema in force: {err}"
                        ),
                    });
                }
            };
            let response = self.authorizer.is_authorized(
                &cedar_request,
                &bundle.policy_set,
                &Entities::empty(),
            );
            if response.decision() == Decision::Deny {
                let diagnostics = response.diagnostics();
                let forbids: Vec<String> = diagnostics
                    .reason()
                    .map(|id| policy_label(&bundle.policy_set, id))
                    .collect();
                let errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
                let mut message = if forbids.is_empty() {
                    format!(
                        "no issuance policy permits agent {:?} to obtain {action:?} for resource {:?}",
                        request.agent_id, request.resource_scope
                    )
                } else {
                    format!(
                        "issuance of {action:?} to agent {:?} is forbidden by policy {}",
                        request.agent_id,
                        forbids.join(", ")
                    )
                };
                if !errors.is_empty() {
                    message.push_str(&format!(" (policy errors: {})", errors.join("; ")));
                }
                return Some(IssueOutcome::Denied {
                    reason: reason::POLICY_DENIED,
                    message,
                });
            }
        }
        None
    }
}

/// `Firma::<kind>::"<id>"`.
fn entity(kind: &str, id: &str) -> EntityUid {
    let type_name = EntityTypeName::from_str(&format!("{CEDAR_NAMESPACE}::{kind}"))
        .expect("constant entity type names parse");
    EntityUid::from_type_name_and_id(type_name, EntityId::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "@id(\"codex-reads\")\npermit (principal == Firma::Agent::\"codex\", action == Firma::Action::\"code.read\", resource);\n@id(\"no-secrets\")\nforbid (principal, action == Firma::Action::\"credential.read\", resource);\npermit (principal, action == Firma::Action::\"credential.read\", resource);\n";

    fn issuer(max_ttl: u64) -> (tempfile::TempDir, Issuer, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        let issuance = dir.path().join("issuance");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::create_dir_all(&issuance).unwrap();
        std::fs::write(issuance.join("i.cedar"), POLICY).unwrap();
        let stores = Arc::new(PolicyStores::load(&policies, &issuance).unwrap());
        let key = crate::config::keys::generate();
        let issuer = Issuer::new(
            key.clone(),
            "proj".into(),
            Duration::from_secs(max_ttl),
            stores,
        );
        (dir, issuer, key)
    }

    fn request(agent: &str, action: &str, ttl: i64) -> IssueRequest {
        IssueRequest::from_wire(agent, &[action.to_string()], "*", "", ttl).unwrap()
    }

    #[test]
    fn grants_with_clamped_ttl() {
        let (_dir, issuer, key) = issuer(60);
        let now = Utc::now();
        let IssueOutcome::Granted { token, claims } = issuer
            .issue(&request("codex", "code.read", 3600), now)
            .unwrap()
        else {
            panic!("expected a grant");
        };
        assert_eq!((claims.expires_at - claims.issued_at).num_seconds(), 60);
        let verified =
            super::super::token::verify_token(&token, &key.verifying_key(), now).unwrap();
        assert_eq!(verified, claims);
        assert!(!claims.session_id.is_empty());
    }

    #[test]
    fn denials_name_the_reason_and_policy() {
        let (_dir, issuer, _) = issuer(60);
        let now = Utc::now();
        let IssueOutcome::Denied { reason, message } = issuer
            .issue(&request("other", "code.read", 60), now)
            .unwrap()
        else {
            panic!("expected a denial");
        };
        assert_eq!(reason, reason::POLICY_DENIED);
        assert!(message.contains("\"other\""), "{message}");
        let IssueOutcome::Denied { message, .. } = issuer
            .issue(&request("codex", "credential.read", 60), now)
            .unwrap()
        else {
            panic!("expected a denial");
        };
        assert!(message.contains("no-secrets"), "{message}");
    }

    #[test]
    fn malformed_requests_are_rejected() {
        let acts = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(IssueRequest::from_wire("", &acts(&["code.read"]), "*", "", 5).is_err());
        assert!(IssueRequest::from_wire("a", &acts(&[]), "*", "", 5).is_err());
        assert!(IssueRequest::from_wire("a", &acts(&["nope"]), "*", "", 5).is_err());
        assert!(IssueRequest::from_wire("a", &acts(&["code.read"]), "*", "", 0).is_err());
        assert!(IssueRequest::from_wire("a", &acts(&["code.read"]), "", "", 5).is_err());
        assert!(IssueRequest::from_wire("a", &acts(&["code.read"]), "*", "bad id", 5).is_err());
        let ok =
            IssueRequest::from_wire("a", &acts(&["code.read", "code.read"]), "*", "s", 5).unwrap();
        assert_eq!(ok.actions, acts(&["code.read"]));
        assert_eq!(ok.clone().with_sandbox("").unwrap().sandbox_id, "");
        assert_eq!(ok.clone().with_sandbox("sb-1").unwrap().sandbox_id, "sb-1");
        assert!(ok.with_sandbox("no spaces").is_err());
    }
}
