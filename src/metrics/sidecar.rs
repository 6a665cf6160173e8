//! The Sidecar's metrics (`firma_sidecar_*`, docs/metrics.md). On the request path every update
//! is a relaxed atomic add: labelled counters are found by index in a dense table (a label set's
//! counter is created once, then reused without a lock), histograms are lock-free
//! ([`LatencyHistogram`]). What is read rather than counted — the bundle in force, revocations
//! held, the audit log's health — is read when Prometheus scrapes ([`exposition`]).
//!
//! Label values come only from fixed tables — decisions, the action-class registry, the
//! pipeline's reason codes, cache and tunnel kinds — never from hosts, paths, agents or tokens:
//! an agent cannot grow the series count.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::endpoint::Exposition;
use super::histogram::LatencyHistogram;
use super::seconds::SecondsCounter;
use crate::audit::event::Decision;
use crate::audit::writer::AuditHealth;
use crate::config::action_classes::ACTION_CLASSES;
use crate::sidecar::cache::CacheKind;
use crate::sidecar::pipeline::Reason;
use crate::sidecar::state::AuthorityState;

/// The `action_class` label of a call refused before it was classified.
const NO_CLASS: &str = "none";
/// The label of a class not in the registry (cannot happen with validated mapping rules).
const OTHER_CLASS: &str = "other";
/// Room for the pipeline's reason codes in the dense tables; a reason beyond it is still counted
/// (through the label family), only not on the lock-free path.
const REASON_SLOTS: usize = 32;
/// Hex digits of the bundle version shown in `firma_sidecar_policy_bundle{version}`.
const BUNDLE_VERSION_DIGITS: usize = 12;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    action_class: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    action_class: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedByLabel {
    ended_by: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabel {
    version: String,
}

/// Which tunnels are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    /// `CONNECT` relayed byte for byte.
    Plain = 0,
    /// `CONNECT` to an `intercept_hosts` host, decrypted with the generated CA.
    Intercepted = 1,
}

impl TunnelKind {
    const ALL: [TunnelKind; 2] = [Self::Plain, Self::Intercepted];

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Intercepted => "intercepted",
        }
    }
}

/// A counter family whose series are also reachable by a slot index: after its first use a
/// slot's counter is one atomic load away (no hashing, no lock).
struct DenseCounters<L> {
    family: Family<L, Counter>,
    slots: Box<[OnceLock<Counter>]>,
}

impl<L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static>
    DenseCounters<L>
{
    fn new(slots: usize) -> Self {
        Self {
            family: Family::default(),
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Count one in `slot` (or, with no slot, by looking the labels up).
    fn inc(&self, slot: Option<usize>, labels: impl FnOnce() -> L) {
        match slot.and_then(|slot| self.slots.get(slot)) {
            Some(cell) => {
                cell.get_or_init(|| self.family.get_or_create_owned(&labels()))
                    .inc();
            }
            None => {
                self.family.get_or_create(&labels()).inc();
            }
        }
    }
}

/// Registry position of each action class; then [`NO_CLASS`], then [`OTHER_CLASS`].
static CLASS_INDEX: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    ACTION_CLASSES
        .iter()
        .enumerate()
        .map(|(i, class)| (class.name, i))
        .collect()
});

const CLASS_SLOTS: usize = ACTION_CLASSES.len() + 2;

/// The slot and label of an action class: the registry's own name, `none` or `other`.
fn class_slot(action_class: &str) -> (usize, &'static str) {
    if action_class.is_empty() {
        return (ACTION_CLASSES.len(), NO_CLASS);
    }
    match CLASS_INDEX.get(action_class) {
        Some(&i) => (i, ACTION_CLASSES[i].name),
        None => (ACTION_CLASSES.len() + 1, OTHER_CLASS),
    }
}

/// What became of a recorded call: the audit records the proxy writes, sorted by meaning.
enum Recorded {
    /// The call was decided (allow, deny, passthrough) by the pipeline's gates.
    Decision,
    /// An allowed call failed upstream (its second record).
    UpstreamFailure,
    /// A plain tunnel ended (its last record).
    TunnelClosed,
}

impl Recorded {
    fn of(reason: Reason) -> Self {
        match reason {
            Reason::UpstreamError | Reason::UpstreamTimeout => Self::UpstreamFailure,
            Reason::TunnelClosed => Self::TunnelClosed,
            _ => Self::Decision,
        }
    }
}

struct CacheSeries {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
    bytes: Gauge,
}

pub struct SidecarMetrics {
    decisions: DenseCounters<DecisionLabels>,
    upstream_failures: DenseCounters<FailureLabels>,
    tunnels_closed: Family<EndedByLabel, Counter>,
    decision_latency: LatencyHistogram,
    upstream_latency: LatencyHistogram,
    audit_append: LatencyHistogram,
    audit_queue: Gauge,
    audit_busy: SecondsCounter,
    audit_failures: Counter,
    audit_bytes: Counter,
    audit_fsyncs: Counter,
    audit_fsynced_records: Counter,
    audit_fsync_latency: LatencyHistogram,
    audit_unavailable: Gauge,
    tunnels: Family<KindLabel, Gauge>,
    /// `tunnels`' series by `TunnelKind as usize`.
    tunnel_gauges: Vec<Gauge>,
    ready: Gauge,
    bundle_info: Family<BundleLabel, Gauge>,
    /// The version shown in `bundle_info` (one series at a time).
    bundle_shown: Mutex<String>,
    bundle_age: Gauge<f64, AtomicU64>,
    bundle_ttl: Gauge<f64, AtomicU64>,
    bundles_received: Counter,
    revoked_tokens: Gauge,
    cache_lookups: Family<LookupLabels, Counter>,
    cache_entries: Family<CacheLabel, Gauge>,
    cache_bytes: Family<CacheLabel, Gauge>,
    cache_budget: Family<CacheLabel, Gauge>,
    /// The cache series by `CacheKind as usize`, created once: a lookup is one atomic add.
    caches: Vec<CacheSeries>,
}

static METRICS: LazyLock<SidecarMetrics> = LazyLock::new(SidecarMetrics::new);

/// This process's Sidecar metrics.
pub fn metrics() -> &'static SidecarMetrics {
    &METRICS
}

/// What the Sidecar's metrics endpoint serves: the registry, and the gauges read from the
/// Authority's state and the audit writer's health at each scrape.
pub fn exposition(
    authority: Arc<AuthorityState>,
    audit: watch::Receiver<AuditHealth>,
) -> Exposition {
    Exposition {
        registry: metrics().registry(),
        refresh: Some(Arc::new(move || {
            metrics().refresh(&authority, &audit.borrow());
        })),
    }
}

impl SidecarMetrics {
    fn new() -> Self {
        let tunnels = Family::<KindLabel, Gauge>::default();
        let tunnel_gauges = TunnelKind::ALL
            .iter()
            .map(|kind| tunnels.get_or_create_owned(&KindLabel { kind: kind.name() }))
            .collect();
        let cache_lookups = Family::<LookupLabels, Counter>::default();
        let cache_entries = Family::<CacheLabel, Gauge>::default();
        let cache_bytes = Family::<CacheLabel, Gauge>::default();
        let cache_budget = Family::<CacheLabel, Gauge>::default();
        let caches = CacheKind::ALL
            .iter()
            .map(|cache| {
                let lookup = |result| {
                    cache_lookups.get_or_create_owned(&LookupLabels {
                        cache: cache.name(),
                        result,
                    })
                };
                let label = CacheLabel {
                    cache: cache.name(),
                };
                cache_budget
                    .get_or_create(&label)
                    .set(i64::try_from(cache.budget()).unwrap_or(i64::MAX));
                CacheSeries {
                    hits: lookup("hit"),
                    misses: lookup("miss"),
                    entries: cache_entries.get_or_create_owned(&label),
                    bytes: cache_bytes.get_or_create_owned(&label),
                }
            })
            .collect();
        let tunnels_closed = Family::<EndedByLabel, Counter>::default();
        // Series that exist from the start (at 0), so rates and alerts see them at once.
        for ended_by in ["connection", "authority"] {
            let _ = tunnels_closed.get_or_create(&EndedByLabel { ended_by });
        }
        Self {
            decisions: DenseCounters::new(Decision::ALL.len() * CLASS_SLOTS * REASON_SLOTS),
            upstream_failures: DenseCounters::new(CLASS_SLOTS * REASON_SLOTS),
            tunnels_closed,
            decision_latency: LatencyHistogram::default(),
            upstream_latency: LatencyHistogram::default(),
            audit_append: LatencyHistogram::default(),
            audit_queue: Gauge::default(),
            audit_busy: SecondsCounter::default(),
            audit_failures: Counter::default(),
            audit_bytes: Counter::default(),
            audit_fsyncs: Counter::default(),
            audit_fsynced_records: Counter::default(),
            audit_fsync_latency: LatencyHistogram::default(),
            audit_unavailable: Gauge::default(),
            tunnels,
            tunnel_gauges,
            ready: Gauge::default(),
            bundle_info: Family::default(),
            bundle_shown: Mutex::new(String::new()),
            bundle_age: Gauge::default(),
            bundle_ttl: Gauge::default(),
            bundles_received: Counter::default(),
            revoked_tokens: Gauge::default(),
            cache_lookups,
            cache_entries,
            cache_bytes,
            cache_budget,
            caches,
        }
    }

    /// The registry the metrics endpoint serves.
    pub fn registry(&self) -> Registry {
        let mut registry = super::base_registry();
        let sub = registry.sub_registry_with_prefix("firma_sidecar");
        sub.register(
            "decisions",
            "Calls decided and recorded, by decision, action class (none: refused before it was classified) and reason code",
            self.decisions.family.clone(),
        );
        sub.register(
            "decision_duration_seconds",
            "From a request's arrival to its decision being handed to the audit log (the record's latency_us; includes name resolution of an allowed call)",
            self.decision_latency.clone(),
        );
        sub.register(
            "upstream_failures",
            "Allowed calls that failed upstream, by action class and reason (upstream_error: 502, upstream_timeout: 504)",
            self.upstream_failures.family.clone(),
        );
        sub.register(
            "upstream_duration_seconds",
            "From sending an allowed request upstream to its response headers, or connecting a CONNECT tunnel's upstream (failures and timeouts included)",
            self.upstream_latency.clone(),
        );
        sub.register(
            "tunnels_open",
            "CONNECT tunnels open now, by kind (plain, intercepted)",
            self.tunnels.clone(),
        );
        sub.register(
            "tunnels_closed",
            "Plain tunnels ended, by what ended them (connection: a side closed it; authority: its token expired or was revoked, or the policy changed)",
            self.tunnels_closed.clone(),
        );
        sub.register(
            "audit_append_duration_seconds",
            "From a decision's record being started (chained, signed) to its being written (what a call waits for its record)",
            self.audit_append.clone(),
        );
        sub.register(
            "audit_queue_depth",
            "Signed records waiting in line for an earlier record still being signed on another request thread",
            self.audit_queue.clone(),
        );
        sub.register(
            "audit_busy_seconds",
            "Time the request threads spent chaining, signing and writing audit records, summed over the threads (at most one per core)",
            self.audit_busy.clone(),
        );
        sub.register(
            "audit_written_bytes",
            "Bytes of audit records written to the log",
            self.audit_bytes.clone(),
        );
        sub.register(
            "audit_fsyncs",
            "fsyncs of the audit log that made records durable (fsync = always: per group commit; batched: per interval with new records)",
            self.audit_fsyncs.clone(),
        );
        sub.register(
            "audit_fsynced_records",
            "Records made durable by those fsyncs (divided by audit_fsyncs: the batch size)",
            self.audit_fsynced_records.clone(),
        );
        sub.register(
            "audit_fsync_duration_seconds",
            "Time one fsync of the audit log took",
            self.audit_fsync_latency.clone(),
        );
        sub.register(
            "audit_failures",
            "Records that could not be written: each call was refused with 503 audit_unavailable",
            self.audit_failures.clone(),
        );
        sub.register(
            "audit_unavailable",
            "1 while the audit log is unavailable and every call is refused (until an operator restarts the Sidecar), else 0",
            self.audit_unavailable.clone(),
        );
        sub.register(
            "ready",
            "1 once the first policy bundle and the revocation snapshot have arrived (calls are judged), else 0",
            self.ready.clone(),
        );
        sub.register(
            "policy_bundle",
            "The policy bundle in force (value 1; version: its first 12 hex digits); absent before the first",
            self.bundle_info.clone(),
        );
        sub.register(
            "policy_bundle_age_seconds",
            "Seconds since the bundle in force (or its last refresh) arrived from the Authority",
            self.bundle_age.clone(),
        );
        sub.register(
            "policy_bundle_ttl_seconds",
            "How long the bundle in force may be enforced without a refresh; older, every call is denied (policy_bundle_stale)",
            self.bundle_ttl.clone(),
        );
        sub.register(
            "policy_bundles_received",
            "Policy bundles (and refreshes) received from the Authority and put in force",
            self.bundles_received.clone(),
        );
        sub.register(
            "revoked_tokens",
            "Revoked token ids the Sidecar holds (from the Authority's revocation stream)",
            self.revoked_tokens.clone(),
        );
        sub.register(
            "cache_lookups",
            "Cache lookups by cache and result (hit, miss)",
            self.cache_lookups.clone(),
        );
        sub.register(
            "cache_entries",
            "Entries held, by cache",
            self.cache_entries.clone(),
        );
        sub.register(
            "cache_bytes",
            "Bytes charged against the cache's budget, by cache (a full cache starts over)",
            self.cache_bytes.clone(),
        );
        sub.register(
            "cache_budget_bytes",
            "The cache's budget, by cache",
            self.cache_budget.clone(),
        );
        registry
    }

    /// Set the gauges that are read, not counted.
    fn refresh(&self, authority: &AuthorityState, audit: &AuditHealth) {
        self.audit_unavailable
            .set(i64::from(matches!(audit, AuditHealth::Unavailable { .. })));
        self.ready.set(i64::from(authority.readiness().is_ready()));
        self.revoked_tokens
            .set(i64::try_from(authority.revoked_count()).unwrap_or(i64::MAX));
        let Some(bundle) = authority.bundle() else {
            return;
        };
        self.bundle_age
            .set(bundle.received_at.elapsed().as_secs_f64());
        self.bundle_ttl.set(bundle.ttl.as_secs_f64());
        let shown: String = bundle
            .version
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(BUNDLE_VERSION_DIGITS)
            .collect();
        let mut current = self.bundle_shown.lock().unwrap_or_else(|p| p.into_inner());
        if *current != shown {
            // One series at a time: the bundle in force.
            self.bundle_info.clear();
            self.bundle_info
                .get_or_create(&BundleLabel {
                    version: shown.clone(),
                })
                .set(1);
            *current = shown;
        }
    }

    /// An audit record of a call was written (`written`), or could not be (the call was refused
    /// with 503). `latency_us` is the record's: request arrival to decision.
    pub fn recorded(
        &self,
        decision: Decision,
        action_class: &str,
        reason: Reason,
        latency_us: u64,
        written: bool,
    ) {
        if !written {
            self.audit_failures.inc();
            return;
        }
        let (class, class_label) = class_slot(action_class);
        let reason_slot = Some(reason as usize).filter(|r| *r < REASON_SLOTS);
        match Recorded::of(reason) {
            Recorded::Decision => {
                let decision_slot = match decision {
                    Decision::Allow => 0,
                    Decision::Deny => 1,
                    Decision::Passthrough => 2,
                };
                let slot =
                    reason_slot.map(|r| (decision_slot * CLASS_SLOTS + class) * REASON_SLOTS + r);
                self.decisions.inc(slot, || DecisionLabels {
                    decision: decision.as_str(),
                    action_class: class_label,
                    reason: reason.code(),
                });
                self.decision_latency
                    .observe(Duration::from_micros(latency_us));
            }
            Recorded::UpstreamFailure => {
                let slot = reason_slot.map(|r| class * REASON_SLOTS + r);
                self.upstream_failures.inc(slot, || FailureLabels {
                    action_class: class_label,
                    reason: reason.code(),
                });
            }
            Recorded::TunnelClosed => {
                // A tunnel whose authority ended is recorded with the decision that ended it.
                let ended_by = if decision == Decision::Allow {
                    "connection"
                } else {
                    "authority"
                };
                self.tunnels_closed
                    .get_or_create(&EndedByLabel { ended_by })
                    .inc();
            }
        }
    }

    /// Wait for an exchange with the upstream (or a connect to it), timing it.
    pub async fn upstream<F: std::future::Future>(&self, exchange: F) -> F::Output {
        self.upstream_latency.time(exchange).await
    }

    /// Wait for a record to be written, timing it.
    pub async fn audit_append<F: std::future::Future>(&self, written: F) -> F::Output {
        self.audit_append.time(written).await
    }

    /// A signed record waits in line for an earlier one still being signed.
    pub fn audit_queued(&self) {
        self.audit_queue.inc();
    }

    /// A record that waited in line was written; the guard times what follows (drop it at once
    /// if nothing does).
    pub fn audit_dequeued(&'static self) -> AuditBusy {
        self.audit_queue.dec();
        self.audit_busy()
    }

    /// A request thread chains, signs and writes a record until the guard is dropped.
    pub fn audit_busy(&'static self) -> AuditBusy {
        AuditBusy {
            counter: &self.audit_busy,
            started: std::time::Instant::now(),
        }
    }

    /// `bytes` of a record were written to the log.
    pub fn audit_written(&self, bytes: usize) {
        self.audit_bytes.inc_by(bytes as u64);
    }

    /// One fsync of the audit log made `records` more records durable in `took`.
    pub fn audit_fsynced(&self, records: u64, took: Duration) {
        self.audit_fsyncs.inc();
        self.audit_fsynced_records.inc_by(records);
        self.audit_fsync_latency.observe(took);
    }

    /// Counts one open tunnel until the guard is dropped.
    pub fn tunnel(&self, kind: TunnelKind) -> TunnelGuard {
        let gauge = self.tunnel_gauges[kind as usize].clone();
        gauge.inc();
        TunnelGuard(gauge)
    }

    /// A policy bundle (or a refresh of it) was put in force.
    pub fn bundle_received(&self) {
        self.bundles_received.inc();
    }

    pub fn cache_lookup(&self, cache: CacheKind, hit: bool) {
        let series = &self.caches[cache as usize];
        if hit {
            series.hits.inc();
        } else {
            series.misses.inc();
        }
    }

    pub fn cache_size(&self, cache: CacheKind, entries: usize, bytes: usize) {
        let series = &self.caches[cache as usize];
        series
            .entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        series.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// One open tunnel; the gauge goes down when it is dropped.
pub struct TunnelGuard(Gauge);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Work on one audit record; its time is added to the busy counter when dropped.
pub struct AuditBusy {
    counter: &'static SecondsCounter,
    started: std::time::Instant,
}

impl Drop for AuditBusy {
    fn drop(&mut self) {
        self.counter.add(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &SidecarMetrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn decisions_are_labelled_from_fixed_tables_only() {
        let metrics = SidecarMetrics::new();
        let class = "communication.external.send";
        metrics.recorded(Decision::Deny, class, Reason::TokenMissing, 80, true);
        metrics.recorded(Decision::Deny, class, Reason::TokenMissing, 90, true);
        metrics.recorded(Decision::Deny, "", Reason::MalformedRequest, 10, true);
        // A class outside the registry never becomes a label value of its own.
        metrics.recorded(
            Decision::Allow,
            "evil.example.com/steal",
            Reason::Allowed,
            10,
            true,
        );
        let text = render(&metrics);
        assert!(text.contains("firma_sidecar_decisions_total{decision=\"deny\",action_class=\"communication.external.send\",reason=\"token_missing\"} 2"), "{text}");
        assert!(text.contains("firma_sidecar_decisions_total{decision=\"deny\",action_class=\"none\",reason=\"malformed_request\"} 1"), "{text}");
        assert!(text.contains("firma_sidecar_decisions_total{decision=\"allow\",action_class=\"other\",reason=\"allowed\"} 1"), "{text}");
        assert!(!text.contains("evil"), "{text}");
        assert!(
            text.contains("firma_sidecar_decision_duration_seconds_count 4"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_decision_duration_seconds_bucket{le=\"0.0001\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn follow_up_records_are_not_decisions() {
        let metrics = SidecarMetrics::new();
        let class = "communication.external.send";
        metrics.recorded(Decision::Allow, class, Reason::Allowed, 50, true);
        metrics.recorded(
            Decision::Allow,
            class,
            Reason::UpstreamTimeout,
            5_000_000,
            true,
        );
        metrics.recorded(
            Decision::Allow,
            class,
            Reason::TunnelClosed,
            9_000_000,
            true,
        );
        metrics.recorded(Decision::Deny, class, Reason::TunnelClosed, 9_000_000, true);
        metrics.recorded(Decision::Deny, class, Reason::PolicyDenied, 50, false);
        let text = render(&metrics);
        assert!(text.contains("firma_sidecar_decisions_total{decision=\"allow\",action_class=\"communication.external.send\",reason=\"allowed\"} 1"), "{text}");
        assert!(
            !text.contains("reason=\"upstream_timeout\"} 1\nfirma_sidecar_decisions"),
            "{text}"
        );
        assert!(text.contains("firma_sidecar_upstream_failures_total{action_class=\"communication.external.send\",reason=\"upstream_timeout\"} 1"), "{text}");
        assert!(
            text.contains("firma_sidecar_tunnels_closed_total{ended_by=\"connection\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_tunnels_closed_total{ended_by=\"authority\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_audit_failures_total 1"),
            "{text}"
        );
        // Only the one decision's latency: tunnel lifetimes and upstream waits are not decisions.
        assert!(
            text.contains("firma_sidecar_decision_duration_seconds_count 1"),
            "{text}"
        );
        let decisions = text
            .lines()
            .filter(|l| l.starts_with("firma_sidecar_decisions_total{"))
            .count();
        assert_eq!(decisions, 1, "{text}");
    }

    #[test]
    fn every_decision_and_class_has_its_own_slot() {
        let metrics = SidecarMetrics::new();
        for decision in Decision::ALL {
            for class in ACTION_CLASSES {
                metrics.recorded(decision, class.name, Reason::PolicyDenied, 1, true);
            }
            metrics.recorded(decision, "", Reason::PolicyDenied, 1, true);
            metrics.recorded(decision, "not.a.class", Reason::PolicyDenied, 1, true);
        }
        assert!((Reason::TunnelClosed as usize) < REASON_SLOTS);
        let filled = metrics
            .decisions
            .slots
            .iter()
            .filter(|c| c.get().is_some_and(|c| c.get() == 1))
            .count();
        assert_eq!(filled, Decision::ALL.len() * CLASS_SLOTS);
    }

    #[test]
    fn the_bundle_in_force_is_one_series_and_state_is_read_at_scrape() {
        let metrics = SidecarMetrics::new();
        let authority = AuthorityState::default();
        metrics.refresh(&authority, &AuditHealth::Ok);
        let text = render(&metrics);
        assert!(text.contains("firma_sidecar_ready 0"), "{text}");
        assert!(!text.contains("firma_sidecar_policy_bundle{"), "{text}");
        for version in ["a".repeat(64), "b\"}x".repeat(16)] {
            let schema = crate::config::action_classes::cedar_schema();
            let bundle = crate::sidecar::cedar::PolicyBundle::parse(
                &version,
                "",
                &schema,
                Duration::from_secs(30),
            )
            .unwrap()
            .0;
            authority.set_bundle(bundle);
            metrics.refresh(&authority, &AuditHealth::Ok);
        }
        authority.revoke("t1");
        authority.revoke("t2");
        authority.revoke("t2");
        authority.revocation_snapshot_complete();
        metrics.refresh(
            &authority,
            &AuditHealth::Unavailable {
                reason: "deleted".into(),
                since: "now".into(),
            },
        );
        let text = render(&metrics);
        // Only the version's letters and digits, the first 12: nothing can break the text.
        assert!(
            text.contains("firma_sidecar_policy_bundle{version=\"bxbxbxbxbxbx\"} 1"),
            "{text}"
        );
        assert!(!text.contains("aaaaaaaaaaaa"), "{text}");
        assert!(
            text.contains("firma_sidecar_policy_bundle_ttl_seconds 30.0"),
            "{text}"
        );
        assert!(text.contains("firma_sidecar_revoked_tokens 2"), "{text}");
        assert!(text.contains("firma_sidecar_ready 1"), "{text}");
        assert!(text.contains("firma_sidecar_audit_unavailable 1"), "{text}");
    }

    #[test]
    fn tunnels_and_the_audit_queue_go_up_and_down() {
        let metrics: &'static SidecarMetrics = Box::leak(Box::new(SidecarMetrics::new()));
        let tunnel = metrics.tunnel(TunnelKind::Plain);
        metrics.audit_queued();
        metrics.audit_queued();
        drop(metrics.audit_dequeued());
        metrics.audit_written(300);
        metrics.audit_fsynced(2, Duration::from_millis(1));
        let text = render(metrics);
        assert!(
            text.contains("firma_sidecar_tunnels_open{kind=\"plain\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_tunnels_open{kind=\"intercepted\"} 0"),
            "{text}"
        );
        assert!(text.contains("firma_sidecar_audit_queue_depth 1"), "{text}");
        assert!(
            text.contains("firma_sidecar_audit_written_bytes_total 300"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_audit_fsyncs_total 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_audit_fsynced_records_total 2"),
            "{text}"
        );
        drop(tunnel);
        assert!(render(metrics).contains("firma_sidecar_tunnels_open{kind=\"plain\"} 0"));
    }

    #[test]
    fn caches_report_lookups_sizes_and_budgets() {
        let metrics = SidecarMetrics::new();
        metrics.cache_lookup(CacheKind::Tokens, true);
        metrics.cache_lookup(CacheKind::Tokens, false);
        metrics.cache_lookup(CacheKind::Tokens, true);
        metrics.cache_size(CacheKind::CedarDecisions, 3, 900);
        let text = render(&metrics);
        assert!(
            text.contains("firma_sidecar_cache_lookups_total{cache=\"tokens\",result=\"hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_cache_lookups_total{cache=\"tokens\",result=\"miss\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_cache_entries{cache=\"cedar_decisions\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("firma_sidecar_cache_bytes{cache=\"cedar_decisions\"} 900"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "firma_sidecar_cache_budget_bytes{{cache=\"leaf_certificates\"}} {}",
                CacheKind::LeafCertificates.budget()
            )),
            "{text}"
        );
    }
}
