//! The decision for one call, as its gates: **classify** (mapping rules) → **authenticate** (the
//! token: signature, validity, revocation) → **authorize** (the token grants the class and covers
//! the resource) → **evaluate** (Cedar, current bundle); then **record** (the audit record).
//!
//! Every refusal has a stable reason code (the `reason` of the 403 body and the start of the
//! audit record's `reason`). Anything that prevents a sound decision — no bundle, a stale bundle,
//! an evaluation error — denies: the Sidecar fails closed.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::audit_sink::AuditSink;
use super::cedar::CedarCall;
use super::identity::Presented;
use super::mapping::{MappingRule, MappingTable};
use super::state::AuthorityState;
use super::target::Target;
use crate::audit::event::{Decision, DraftRef};
use crate::authority::token::{CapabilityClaims, scope_matches};
use crate::config::schema::UnmappedPolicy;
use crate::error::Hinted;
use crate::metrics::sidecar::metrics;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    Invalid(String),
    Expired { token_id: String },
}

/// Checks tokens offline with the Authority's public key.
pub trait TokenVerifier: Send + Sync {
    fn verify(&self, raw: &str) -> Result<Arc<CapabilityClaims>, TokenRejection>;
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
    MalformedTarget,
    HostMismatch,
    SelfTarget,
    PrivateAddress,
    UpstreamError,
    UpstreamTimeout,
    TunnelClosed,
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
            Self::MalformedTarget => "malformed_target",
            Self::HostMismatch => "host_mismatch",
            Self::SelfTarget => "self_target",
            Self::PrivateAddress => "private_address",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TunnelClosed => "tunnel_closed",
        }
    }
}

/// One call as the proxy saw it: the method and the canonical target.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Upper-case method (`CONNECT` for tunnels).
    pub method: &'a str,
    /// Canonical host (see `target.rs`), empty when the request had none.
    pub host: &'a str,
    /// 0 when the request had no target.
    pub port: u16,
    /// Canonical path without query (empty for `CONNECT`).
    pub path: &'a str,
    pub token: &'a Presented,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, target: &'a Target, token: &'a Presented) -> Self {
        Self {
            method,
            host: &target.host,
            port: target.port,
            path: &target.path,
            token,
        }
    }

    /// A request without a usable target.
    pub fn untargeted(method: &'a str, token: &'a Presented) -> Self {
        Self {
            method,
            host: "",
            port: 0,
            path: "",
            token,
        }
    }
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
    /// When the token that allowed the call stops being valid (open tunnels end then).
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Whether a host *name* must not resolve to a loopback, link-local or private address
    /// (the rule's `deny_private`; always for passthrough).
    pub deny_private: bool,
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
            token_expires_at: None,
            deny_private: true,
        }
    }

    /// A refusal before classification.
    pub fn refused(reason: Reason, detail: impl Into<String>) -> Self {
        Self::new(Decision::Deny, reason, detail)
    }

    /// The same call, now denied for `reason` (identity, class and bundle kept).
    pub fn deny(&self, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            decision: Decision::Deny,
            reason,
            detail: detail.into(),
            determining: Vec::new(),
            ..self.clone()
        }
    }

    fn deny_boxed(&self, reason: Reason, detail: impl Into<String>) -> Box<Self> {
        Box::new(self.deny(reason, detail))
    }

    pub fn forwards(&self) -> bool {
        self.decision != Decision::Deny
    }

    /// The audit `reason`: the code, then the detail.
    pub fn audit_reason(&self) -> Cow<'static, str> {
        if self.detail.is_empty() {
            Cow::Borrowed(self.reason.code())
        } else {
            Cow::Owned(format!("{}: {}", self.reason.code(), self.detail))
        }
    }
}

/// A gate passes its value on, or ends the decision with a verdict (boxed: refusals are the
/// rarer, larger case).
type Gate<T> = Result<T, Box<Verdict>>;

pub struct Pipeline {
    pub mapping: MappingTable,
    pub unmapped: UnmappedPolicy,
    pub verifier: Arc<dyn TokenVerifier>,
    pub authority: Arc<AuthorityState>,
    pub audit: AuditSink,
}

impl Pipeline {
    /// Decide one call. Pure with respect to I/O: nothing is written here.
    pub fn decide(&self, call: &Call<'_>) -> Verdict {
        match self.gates(call) {
            Ok(verdict) => verdict,
            Err(refusal) => *refusal,
        }
    }

    fn gates(&self, call: &Call<'_>) -> Gate<Verdict> {
        // Classified before the token, so unmapped passthrough needs none.
        let Some(rule) = self.classify(call)? else {
            return Ok(Verdict::new(
                Decision::Passthrough,
                Reason::Passthrough,
                "no mapping rule matches; forwarded without enforcement",
            ));
        };
        let mut verdict = Verdict::new(Decision::Deny, Reason::PolicyDenied, "");
        verdict.action_class = rule.action_class.clone();
        verdict.deny_private = rule.deny_private;
        let claims = self.authenticate(call, &mut verdict)?;
        let resource = format!("{}{}", call.host, call.path);
        self.authorize(rule, &claims, &resource, &verdict)?;
        self.evaluate(call, rule, &claims, &resource, verdict)
    }

    /// Gate 1: the most specific mapping rule, `None` for unmapped passthrough.
    fn classify(&self, call: &Call<'_>) -> Gate<Option<&MappingRule>> {
        match self
            .mapping
            .classify(call.method, call.host, call.port, call.path)
        {
            Some(rule) => Ok(Some(rule)),
            None => match self.unmapped {
                UnmappedPolicy::Passthrough => Ok(None),
                UnmappedPolicy::Deny => Err(Box::new(Verdict::refused(
                    Reason::Unmapped,
                    format!(
                        "no mapping rule classifies {} {}:{}{}",
                        call.method, call.host, call.port, call.path
                    ),
                ))),
            },
        }
    }

    /// Gate 2: the presented token verifies, is within its validity and is not revoked. Fills
    /// the verdict's identity.
    fn authenticate(&self, call: &Call<'_>, verdict: &mut Verdict) -> Gate<Arc<CapabilityClaims>> {
        let raw = match call.token {
            Presented::None => {
                return Err(verdict.deny_boxed(
                    Reason::TokenMissing,
                    "no capability token in Proxy-Authorization",
                ));
            }
            Presented::Unreadable(why) => {
                return Err(verdict.deny_boxed(Reason::TokenInvalid, *why));
            }
            Presented::Token(raw) => raw,
        };
        let claims = match self.verifier.verify(raw) {
            Ok(claims) => claims,
            Err(TokenRejection::Invalid(why)) => {
                return Err(verdict.deny_boxed(Reason::TokenInvalid, why));
            }
            Err(TokenRejection::Expired { token_id }) => {
                let mut expired =
                    verdict.deny(Reason::TokenExpired, "the capability token has expired");
                expired.token_id = token_id;
                return Err(Box::new(expired));
            }
        };
        verdict.agent_id.clone_from(&claims.agent_id);
        verdict.session_id.clone_from(&claims.session_id);
        verdict.token_id.clone_from(&claims.token_id);
        verdict.sandbox_id.clone_from(&claims.sandbox_id);
        verdict.token_expires_at = Some(claims.expires_at);
        if self.authority.is_revoked(&claims.token_id) {
            return Err(verdict.deny_boxed(
                Reason::TokenRevoked,
                format!("token {} has been revoked", claims.token_id),
            ));
        }
        Ok(claims)
    }

    /// Gate 3: the token grants the rule's class and its scope covers `host + path`.
    fn authorize(
        &self,
        rule: &MappingRule,
        claims: &CapabilityClaims,
        resource: &str,
        verdict: &Verdict,
    ) -> Gate<()> {
        if !claims.allows_action(&rule.action_class) {
            return Err(verdict.deny_boxed(
                Reason::OutOfScope,
                format!(
                    "the token does not grant {} (it grants {})",
                    rule.action_class,
                    claims.actions.join(", ")
                ),
            ));
        }
        if !scope_matches(&claims.resource_scope, resource) {
            return Err(verdict.deny_boxed(
                Reason::OutOfScope,
                format!(
                    "{resource} is outside the token's resource scope {:?}",
                    claims.resource_scope
                ),
            ));
        }
        Ok(())
    }

    /// Gate 4: Cedar with the current, fresh bundle.
    fn evaluate(
        &self,
        call: &Call<'_>,
        rule: &MappingRule,
        claims: &CapabilityClaims,
        resource: &str,
        mut verdict: Verdict,
    ) -> Gate<Verdict> {
        let Some(bundle) = self.authority.bundle() else {
            return Err(verdict.deny_boxed(
                Reason::NoBundle,
                "no policy bundle received from the Authority",
            ));
        };
        verdict.bundle.clone_from(&bundle.version);
        if !bundle.is_fresh(Instant::now()) {
            return Err(verdict.deny_boxed(
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
        let eval = bundle
            .evaluate_memoized(&CedarCall {
                agent_id: &claims.agent_id,
                action_class: &rule.action_class,
                session_id: &claims.session_id,
                time,
                method: call.method,
                host: call.host,
                port: call.port,
                path: call.path,
            })
            .map_err(|err| verdict.deny_boxed(Reason::EvaluationError, err))?;
        if eval.allowed {
            verdict.decision = Decision::Allow;
            verdict.reason = Reason::Allowed;
        } else if eval.determining.is_empty() {
            verdict.detail = format!("no policy permits {} on {resource}", rule.action_class);
        } else {
            verdict.detail = format!("forbidden by {}", eval.determining.join(", "));
        }
        verdict.determining = eval.determining;
        Ok(verdict)
    }

    /// Gate 5: write the audit record of a decision (or of what happened after one). `addr` is
    /// the address the call is forwarded to, when it is.
    pub async fn record(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        addr: Option<SocketAddr>,
        latency_us: u64,
    ) -> Result<(), Hinted> {
        let reason = verdict.audit_reason();
        let addr = addr.map(|a| a.to_string());
        let draft = DraftRef {
            decision: verdict.decision,
            reason: &reason,
            agent_id: &verdict.agent_id,
            session_id: &verdict.session_id,
            token_id: &verdict.token_id,
            sandbox_id: &verdict.sandbox_id,
            action_class: &verdict.action_class,
            method: call.method,
            host: call.host,
            path: call.path,
            port: (call.port != 0).then_some(call.port),
            addr: addr.as_deref(),
            bundle: &verdict.bundle,
            determining: &verdict.determining,
            latency_us,
        };
        let written = metrics().audit_append(self.audit.record(&draft)).await;
        metrics().recorded(
            verdict.decision,
            &verdict.action_class,
            verdict.reason,
            latency_us,
            written.is_ok(),
        );
        written
    }
}
