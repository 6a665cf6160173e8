//! The policy bundle the Sidecar enforces with, and Cedar evaluation of one classified call.
//!
//! A bundle arrives from the Authority as text (policies + schema). It is parsed once into a
//! [`PolicyBundle`]; every call is then evaluated against it with the request built *with* the
//! schema, so an unknown action or a context of the wrong shape is an error — and errors deny.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::cache::{BoundedCache, CacheKind};

/// A parsed policy bundle, ready to evaluate.
pub struct PolicyBundle {
    pub version: String,
    pub ttl: Duration,
    pub received_at: Instant,
    policies: PolicySet,
    schema: Schema,
    /// Cedar's policy id → the id operators see (`@id("…")` when present).
    display_ids: HashMap<PolicyId, String>,
    agent_type: EntityTypeName,
    action_type: EntityTypeName,
    resource_type: EntityTypeName,
    authorizer: Authorizer,
    entities: Entities,
    /// Whether the schema declares `context.port` (schemas written before ports were part of
    /// a decision do not; their bundles are evaluated without it).
    has_port: bool,
    /// Decisions already made with this bundle (see [`PolicyBundle::evaluate_memoized`]).
    memo: BoundedCache<String, Result<Evaluation, String>>,
}

/// One classified call, as Cedar sees it. The resource is `host` + `path`.
#[derive(Debug, Clone, Copy)]
pub struct CedarCall<'a> {
    pub agent_id: &'a str,
    pub action_class: &'a str,
    pub session_id: &'a str,
    /// Unix seconds.
    pub time: i64,
    pub method: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
}

/// What Cedar decided and which policies determined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub allowed: bool,
    /// Display ids of the determining policies (permits on allow, forbids on an explicit deny;
    /// empty when nothing permitted the call).
    pub determining: Vec<String>,
}

/// Why a bundle could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError(pub String);

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PolicyBundle {
    /// Parse a bundle as received. Returns the bundle and validation warnings (policies that do
    /// not validate strictly against the schema are still loaded: anything they get wrong at
    /// evaluation time is an error, and errors deny).
    pub fn parse(
        version: &str,
        policies: &str,
        schema: &str,
        ttl: Duration,
    ) -> Result<(Self, Vec<String>), BundleError> {
        if ttl.is_zero() {
            return Err(BundleError(format!("bundle {version} has a zero TTL")));
        }
        let (schema, _) = Schema::from_cedarschema_str(schema)
            .map_err(|err| BundleError(format!("bundle {version}: schema: {err}")))?;
        let policies = PolicySet::from_str(policies)
            .map_err(|err| BundleError(format!("bundle {version}: policies: {err}")))?;
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        let warnings: Vec<String> = validation
            .validation_errors()
            .map(|e| e.to_string())
            .collect();
        let display_ids = policies
            .policies()
            .map(|p| {
                let shown = p
                    .annotation("id")
                    .map_or_else(|| p.id().to_string(), str::to_string);
                (p.id().clone(), shown)
            })
            .collect();
        let name = |kind: &str| {
            EntityTypeName::from_str(&format!("Firma::{kind}")).expect("constant type name")
        };
        let has_port = declares_port(&schema);
        let mut warnings = warnings;
        if !has_port {
            warnings.push(format!(
                "bundle {version}: the schema's context has no `port`; policies cannot see ports \
                 (regenerate policies/schema.cedarschema with `firma init --force`)"
            ));
        }
        Ok((
            Self {
                version: version.to_string(),
                ttl,
                received_at: Instant::now(),
                policies,
                schema,
                display_ids,
                agent_type: name("Agent"),
                action_type: name("Action"),
                resource_type: name("Resource"),
                authorizer: Authorizer::new(),
                entities: Entities::empty(),
                has_port,
                memo: BoundedCache::of(CacheKind::CedarDecisions),
            },
            warnings,
        ))
    }

    /// Whether the bundle may still be enforced with at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received_at) < self.ttl
    }

    /// Number of policies in the bundle.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Self::evaluate`], remembering the answer. Evaluation without entities is a pure
    /// function of the request, and `time` (whole seconds) is part of the key, so a remembered
    /// answer is exactly what Cedar would say again; a new bundle starts with an empty memo. The
    /// memo is bounded by bytes ([`super::cache::CEDAR_MEMO_BYTES`]).
    pub fn evaluate_memoized(&self, call: &CedarCall<'_>) -> Result<Evaluation, String> {
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            call.agent_id,
            call.action_class,
            call.session_id,
            call.time,
            call.method,
            call.host,
            call.port,
            call.path,
        );
        if let Some(known) = self.memo.get(&key) {
            return known;
        }
        let result = self.evaluate(call);
        let bytes = key.len()
            + match &result {
                Ok(eval) => eval.determining.iter().map(|d| d.len() + 24).sum(),
                Err(err) => err.len(),
            };
        self.memo.insert(key, result.clone(), bytes);
        result
    }

    /// Evaluate one call. `Err` means the call could not be evaluated (unknown action, context
    /// not matching the schema, or a policy erroring) — the caller denies.
    pub fn evaluate(&self, call: &CedarCall<'_>) -> Result<Evaluation, String> {
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let principal = uid(&self.agent_type, call.agent_id);
        let action = uid(&self.action_type, call.action_class);
        let resource = uid(&self.resource_type, &format!("{}{}", call.host, call.path));
        let string = |s: &str| RestrictedExpression::new_string(s.to_string());
        let mut pairs = vec![
            ("phase".to_string(), string("enforce")),
            ("session_id".to_string(), string(call.session_id)),
            (
                "time".to_string(),
                RestrictedExpression::new_long(call.time),
            ),
            ("method".to_string(), string(call.method)),
            ("host".to_string(), string(call.host)),
            ("path".to_string(), string(call.path)),
        ];
        if self.has_port {
            pairs.push((
                "port".to_string(),
                RestrictedExpression::new_long(i64::from(call.port)),
            ));
        }
        let context = Context::from_pairs(pairs).map_err(|err| format!("context: {err}"))?;
        let request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|err| format!("request: {err}"))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &self.entities);
        let diagnostics = response.diagnostics();
        if let Some(error) = diagnostics.errors().next() {
            return Err(format!("policy error: {error}"));
        }
        let mut determining: Vec<String> = diagnostics
            .reason()
            .map(|id| {
                self.display_ids
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        determining.sort();
        Ok(Evaluation {
            allowed: response.decision() == Decision::Allow,
            determining,
        })
    }
}

/// Whether the schema's enforcement context declares `port` (probed with a request that
/// carries one: the schema rejects an undeclared context attribute).
fn declares_port(schema: &Schema) -> bool {
    let Some(action) = schema.actions().next() else {
        return false;
    };
    let uid = |kind: &str, id: &str| {
        EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(&format!("Firma::{kind}")).expect("constant type name"),
            EntityId::new(id),
        )
    };
    let string = |s: &str| RestrictedExpression::new_string(s.to_string());
    let Ok(context) = Context::from_pairs([
        ("phase".to_string(), string("enforce")),
        ("session_id".to_string(), string("")),
        ("time".to_string(), RestrictedExpression::new_long(0)),
        ("port".to_string(), RestrictedExpression::new_long(1)),
    ]) else {
        return false;
    };
    Request::new(
        uid("Agent", "probe"),
        action.clone(),
        uid("Resource", "probe"),
        context,
        Some(schema),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::action_classes::cedar_schema;

    const POLICIES: &str = r#"
@id("allow-loopback")
permit (principal == Firma::Agent::"codex", action == Firma::Action::"communication.internal.send", resource);

@id("no-admin")
forbid (principal, action, resource) when { context has path && context.path like "/admin*" };

permit (principal, action == Firma::Action::"code.read", resource == Firma::Resource::"example.com/x");
"#;

    fn bundle() -> PolicyBundle {
        let (bundle, warnings) =
            PolicyBundle::parse("v1", POLICIES, &cedar_schema(), Duration::from_secs(30)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        bundle
    }

    fn call<'a>(agent: &'a str, class: &'a str, path: &'a str) -> CedarCall<'a> {
        CedarCall {
            agent_id: agent,
            action_class: class,
            session_id: "s1",
            time: 1_800_000_000,
            method: "GET",
            host: "example.com",
            port: 443,
            path,
        }
    }

    #[test]
    fn permit_names_its_annotated_id() {
        let eval = bundle()
            .evaluate(&call("codex", "communication.internal.send", "/x"))
            .unwrap();
        assert!(eval.allowed);
        assert_eq!(eval.determining, vec!["allow-loopback"]);
    }

    #[test]
    fn unannotated_policy_uses_cedar_id() {
        let eval = bundle()
            .evaluate(&call("other", "code.read", "/x"))
            .unwrap();
        assert!(eval.allowed);
        assert_eq!(eval.determining, vec!["policy2"]);
    }

    #[test]
    fn forbid_wins_and_is_named() {
        let eval = bundle()
            .evaluate(&call("codex", "communication.internal.send", "/admin/x"))
            .unwrap();
        assert!(!eval.allowed);
        assert_eq!(eval.determining, vec!["no-admin"]);
    }

    #[test]
    fn default_deny_has_no_determining_policy() {
        let eval = bundle()
            .evaluate(&call("mallory", "communication.internal.send", "/x"))
            .unwrap();
        assert!(!eval.allowed);
        assert!(eval.determining.is_empty());
    }

    #[test]
    fn memoized_answers_equal_fresh_ones() {
        let b = bundle();
        for path in ["/x", "/admin/x", "/x"] {
            for agent in ["codex", "mallory"] {
                let c = call(agent, "communication.internal.send", path);
                assert_eq!(b.evaluate_memoized(&c), b.evaluate(&c));
                assert_eq!(b.evaluate_memoized(&c), b.evaluate(&c));
            }
        }
        let later = CedarCall {
            time: 1_800_000_001,
            ..call("codex", "no.such", "/x")
        };
        assert!(b.evaluate_memoized(&later).is_err());
    }

    #[test]
    fn policies_see_the_port_and_old_schemas_still_evaluate() {
        let policies = "permit (principal, action, resource) when { context has port && context.port == 8080 };";
        let (b, warnings) =
            PolicyBundle::parse("v", policies, &cedar_schema(), Duration::from_secs(30)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let at = |port| CedarCall {
            port,
            ..call("codex", "code.read", "/x")
        };
        assert!(b.evaluate(&at(8080)).unwrap().allowed);
        assert!(!b.evaluate(&at(8081)).unwrap().allowed);
        // A schema from before ports: no `port` in the context, a warning, still evaluates.
        let old = cedar_schema().replace(",\n    \"port\"?: Long", "");
        assert_ne!(old, cedar_schema());
        let (b, warnings) =
            PolicyBundle::parse("v", POLICIES, &old, Duration::from_secs(30)).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("no `port`")),
            "{warnings:?}"
        );
        assert!(
            b.evaluate(&call("codex", "communication.internal.send", "/x"))
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn the_memo_is_bounded_by_bytes() {
        let b = bundle();
        let long = format!("/{}", "x".repeat(60 * 1024));
        for i in 0..1000 {
            let path = format!("{long}{i}");
            let c = call("codex", "communication.internal.send", &path);
            b.evaluate_memoized(&c).unwrap();
            assert!(b.memo.used() <= CacheKind::CedarDecisions.budget());
        }
    }

    #[test]
    fn unknown_action_is_an_error() {
        assert!(bundle().evaluate(&call("codex", "no.such", "/x")).is_err());
    }

    #[test]
    fn bad_bundles_are_rejected() {
        assert!(
            PolicyBundle::parse("v", "permit(", &cedar_schema(), Duration::from_secs(1)).is_err()
        );
        assert!(PolicyBundle::parse("v", "", "namespace {", Duration::from_secs(1)).is_err());
        assert!(PolicyBundle::parse("v", "", &cedar_schema(), Duration::ZERO).is_err());
    }

    #[test]
    fn freshness_follows_ttl() {
        let b = bundle();
        assert!(b.is_fresh(b.received_at));
        assert!(!b.is_fresh(b.received_at + Duration::from_secs(31)));
    }
}
