//! The decision for one call: classify → token → scope → Cedar, then the audit record.
//!
//! Every refusal has a stable reason code (the `reason` of the 403 body and the start of the
//! audit record's `reason`). Anything that prevents a sound decision — no bundle, a stale bundle,
//! an evaluation error — denies: the Sidecar fails closed.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::cedar::CedarCall;
use super::identity::Presented;
use super::mapping::MappingTable;
use super::state::AuthorityState;
use crate::audit::event::{AuditDraft, Decision, Intent, PolicyRef};
use crate::config::schema::UnmappedPolicy;
use crate::error::Hinted;

/// What a valid capability token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub token_id: String,
    pub agent_id: String,
    pub session_id: String,
    pub actions: Vec<String>,
    pub resource_scope: String,
    /// The `firma run` sandbox of the holder (empty: none), recorded with every decision.
    pub sandbox_id: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    Invalid(String),
    Expired { token_id: String },
}

/// Checks tokens offline with the Authority's public key.
pub trait TokenVerifier: Send + Sync {
    fn verify(&self, raw: &str) -> Result<Capability, TokenRejection>;
    /// Whether a token's resource scope covers `resource` (`host` + `path`).
    fn scope_covers(&self, scope: &str, resource: &str) -> bool;
}

/// Where decisions are recorded. The receiver resolves once the record is written.
pub trait AuditSink: Send + Sync {
    fn submit(&self, draft: AuditDraft) -> oneshot::Receiver<Result<(), Hinted>>;
}

/// Why a call was decided the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Allowed,
    Passthrough,
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    OutOfScope,
    PolicyDenied,
    Unmapped,
    NoBundle,
    BundleStale,
    EvaluationError,
    MalformedRequest,
    UpstreamError,
    UpstreamTimeout,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Passthrough => "passthrough",
            Self::TokenMissing => "token_missing",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::OutOfScope => "out_of_scope",
            Self::PolicyDenied => "policy_denied",
            Self::Unmapped => "unmapped",
            Self::NoBundle => "no_policy_bundle",
            Self::BundleStale => "policy_bundle_stale",
            Self::EvaluationError => "evaluation_error",
            Self::MalformedRequest => "malformed_request",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// One call as the proxy saw it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Upper-case method (`CONNECT` for tunnels).
    pub method: &'a str,
    /// Lower-case host without port.
    pub host: &'a str,
    /// Path without query (empty for `CONNECT`).
    pub path: &'a str,
    pub token: &'a Presented,
}

/// The outcome of [`Pipeline::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    pub detail: String,
    pub action_class: String,
    pub agent_id: String,
    pub session_id: String,
    pub token_id: String,
    pub sandbox_id: String,
    pub bundle: String,
    pub determining: Vec<String>,
}

impl Verdict {
    fn new(decision: Decision, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            decision,
            reason,
            detail: detail.into(),
            action_class: String::new(),
            agent_id: String::new(),
            session_id: String::new(),
            token_id: String::new(),
            sandbox_id: String::new(),
            bundle: String::new(),
            determining: Vec::new(),
        }
    }

    /// A refusal before classification (a request that cannot be understood).
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(Decision::Deny, Reason::MalformedRequest, detail)
    }

    pub fn forwards(&self) -> bool {
        self.decision != Decision::Deny
    }

    /// The audit `reason`: the code, then the detail.
    pub fn audit_reason(&self) -> String {
        if self.detail.is_empty() {
            self.reason.code().to_string()
        } else {
            format!("{}: {}", self.reason.code(), self.detail)
        }
    }
}

pub struct Pipeline {
    pub mapping: MappingTable,
    pub unmapped: UnmappedPolicy,
    pub verifier: Arc<dyn TokenVerifier>,
    pub authority: Arc<AuthorityState>,
    pub audit: Arc<dyn AuditSink>,
}

impl Pipeline {
    /// Decide one call. Pure with respect to I/O: nothing is written here.
    pub fn decide(&self, call: &Call<'_>) -> Verdict {
        // (2) classify — before the token, so unmapped passthrough needs none.
        let Some(rule) = self.mapping.classify(call.method, call.host, call.path) else {
            return match self.unmapped {
                UnmappedPolicy::Passthrough => Verdict::new(
                    Decision::Passthrough,
                    Reason::Passthrough,
                    "no mapping rule matches; forwarded without enforcement",
                ),
                UnmappedPolicy::Deny => Verdict::new(
                    Decision::Deny,
                    Reason::Unmapped,
                    format!(
                        "no mapping rule classifies {} {}{}",
                        call.method, call.host, call.path
                    ),
                ),
            };
        };
        let deny = |reason: Reason, detail: String| {
            let mut v = Verdict::new(Decision::Deny, reason, detail);
            v.action_class = rule.action_class.clone();
            v
        };
        // (1)+(3) identify and validate the token.
        let raw = match call.token {
            Presented::None => {
                return deny(
                    Reason::TokenMissing,
                    "no capability token in Proxy-Authorization".into(),
                );
            }
            Presented::Unreadable(why) => return deny(Reason::TokenInvalid, (*why).into()),
            Presented::Token(raw) => raw,
        };
        let capability = match self.verifier.verify(raw) {
            Ok(capability) => capability,
            Err(TokenRejection::Invalid(why)) => return deny(Reason::TokenInvalid, why),
            Err(TokenRejection::Expired { token_id }) => {
                let mut v = deny(
                    Reason::TokenExpired,
                    "the capability token has expired".into(),
                );
                v.token_id = token_id;
                return v;
            }
        };
        let with_identity = |mut v: Verdict| {
            v.agent_id = capability.agent_id.clone();
            v.session_id = capability.session_id.clone();
            v.token_id = capability.token_id.clone();
            v.sandbox_id = capability.sandbox_id.clone();
            v
        };
        if self.authority.is_revoked(&capability.token_id) {
            return with_identity(deny(
                Reason::TokenRevoked,
                format!("token {} has been revoked", capability.token_id),
            ));
        }
        let resource = format!("{}{}", call.host, call.path);
        if !capability
            .actions
            .iter()
            .any(|a| a == "*" || *a == rule.action_class)
        {
            return with_identity(deny(
                Reason::OutOfScope,
                format!(
                    "the token does not grant {} (it grants {})",
                    rule.action_class,
                    capability.actions.join(", ")
                ),
            ));
        }
        if !self
            .verifier
            .scope_covers(&capability.resource_scope, &resource)
        {
            return with_identity(deny(
                Reason::OutOfScope,
                format!(
                    "{resource} is outside the token's resource scope {:?}",
                    capability.resource_scope
                ),
            ));
        }
        // (4) Cedar with the current bundle.
        let Some(bundle) = self.authority.bundle() else {
            return with_identity(deny(
                Reason::NoBundle,
                "no policy bundle received from the Authority".into(),
            ));
        };
        let decided = |mut v: Verdict| {
            v.bundle = bundle.version.clone();
            with_identity(v)
        };
        if !bundle.is_fresh(Instant::now()) {
            return decided(deny(
                Reason::BundleStale,
                format!(
                    "policy bundle {} was not refreshed within its {}s TTL",
                    bundle.version,
                    bundle.ttl.as_secs()
                ),
            ));
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let evaluation = bundle.evaluate_memoized(&CedarCall {
            agent_id: &capability.agent_id,
            action_class: &rule.action_class,
            resource: &resource,
            session_id: &capability.session_id,
            time,
            method: call.method,
            host: call.host,
            path: call.path,
        });
        match evaluation {
            Err(err) => decided(deny(Reason::EvaluationError, err)),
            Ok(eval) => {
                let mut v = if eval.allowed {
                    let mut v = Verdict::new(Decision::Allow, Reason::Allowed, "");
                    v.action_class = rule.action_class.clone();
                    v
                } else if eval.determining.is_empty() {
                    deny(
                        Reason::PolicyDenied,
                        format!("no policy permits {} on {resource}", rule.action_class),
                    )
                } else {
                    deny(
                        Reason::PolicyDenied,
                        format!("forbidden by {}", eval.determining.join(", ")),
                    )
                };
                v.determining = eval.determining;
                decided(v)
            }
        }
    }

    /// Write the audit record of a decision (or of an upstream failure after one).
    pub async fn record(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        latency_us: u64,
    ) -> Result<(), Hinted> {
        let written = self.audit.submit(AuditDraft {
            decision: verdict.decision,
            reason: verdict.audit_reason(),
            agent_id: verdict.agent_id.clone(),
            session_id: verdict.session_id.clone(),
            token_id: verdict.token_id.clone(),
            sandbox_id: verdict.sandbox_id.clone(),
            intent: Intent {
                action_class: verdict.action_class.clone(),
                method: call.method.to_string(),
                host: call.host.to_string(),
                path: call.path.to_string(),
            },
            policy: PolicyRef {
                bundle: verdict.bundle.clone(),
                determining: verdict.determining.clone(),
            },
            latency_us,
        });
        written.await.unwrap_or_else(|_| {
            Err(Hinted::new("the audit thread stopped").hint("restart the Sidecar"))
        })
    }
}
