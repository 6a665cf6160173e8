//! The Authority's metrics (`firma_authority_*`, docs/metrics.md). Always counted — a few
//! relaxed atomic adds per RPC — and exported only when `[authority.metrics] listen` is set.
//! Every label value comes from a fixed table here: no agent ids, token ids or peers.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::{LatencyHistogram, Timer};
use crate::authority::issuance::reason;

/// `IssueCapability` denial reasons (the wire's `deny_reason`), and `other` for anything a
/// future reason would add before this table learns it.
const DENY_REASONS: [&str; 3] = [
    reason::NO_POLICIES,
    reason::POLICY_DENIED,
    reason::SCHEMA_MISMATCH,
];

/// The unary RPCs whose latency is measured (streams live for as long as a Sidecar runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    IssueCapability,
    Revoke,
    ReportCheckpoint,
    GetWitnessedCheckpoint,
}

impl Rpc {
    const ALL: [Rpc; 4] = [
        Self::IssueCapability,
        Self::Revoke,
        Self::ReportCheckpoint,
        Self::GetWitnessedCheckpoint,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::IssueCapability => "IssueCapability",
            Self::Revoke => "Revoke",
            Self::ReportCheckpoint => "ReportCheckpoint",
            Self::GetWitnessedCheckpoint => "GetWitnessedCheckpoint",
        }
    }
}

/// The two streams Sidecars keep open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStream {
    PolicyBundle,
    Revocations,
}

impl WatchStream {
    fn name(self) -> &'static str {
        match self {
            Self::PolicyBundle => "policy_bundle",
            Self::Revocations => "revocations",
        }
    }
}

/// Which policy store reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Runtime,
    Issuance,
}

impl BundleKind {
    /// From the store's own name for it (`runtime`, `issuance`).
    pub fn from_name(kind: &str) -> Self {
        if kind == "issuance" {
            Self::Issuance
        } else {
            Self::Runtime
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::Issuance => "issuance",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    bundle: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

pub struct AuthorityMetrics {
    issued: Counter,
    denied: Family<ReasonLabel, Counter>,
    watchers: Family<StreamLabel, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    revocations: Counter,
    revoked_tokens: Gauge,
    rpc: Family<MethodLabel, LatencyHistogram>,
}

static METRICS: LazyLock<AuthorityMetrics> = LazyLock::new(AuthorityMetrics::new);

/// This process's Authority metrics.
pub fn metrics() -> &'static AuthorityMetrics {
    &METRICS
}

impl AuthorityMetrics {
    fn new() -> Self {
        let metrics = Self {
            issued: Counter::default(),
            denied: Family::default(),
            watchers: Family::default(),
            reloads: Family::default(),
            revocations: Counter::default(),
            revoked_tokens: Gauge::default(),
            rpc: Family::default(),
        };
        // Every series exists from the start (at 0), so rates and alerts see it before its
        // first event.
        for reason in DENY_REASONS {
            metrics.denied.get_or_create_owned(&ReasonLabel { reason });
        }
        for stream in [WatchStream::PolicyBundle, WatchStream::Revocations] {
            metrics.watchers.get_or_create_owned(&StreamLabel {
                stream: stream.name(),
            });
        }
        for bundle in [BundleKind::Runtime, BundleKind::Issuance] {
            for result in ["ok", "error"] {
                metrics.reloads.get_or_create_owned(&ReloadLabels {
                    bundle: bundle.name(),
                    result,
                });
            }
        }
        for rpc in Rpc::ALL {
            metrics
                .rpc
                .get_or_create_owned(&MethodLabel { method: rpc.name() });
        }
        metrics
    }

    /// The registry the metrics endpoint serves.
    pub fn registry(&self) -> Registry {
        let mut registry = super::base_registry();
        let sub = registry.sub_registry_with_prefix("firma_authority");
        sub.register(
            "tokens_issued",
            "Capability tokens granted by IssueCapability",
            self.issued.clone(),
        );
        sub.register(
            "tokens_denied",
            "IssueCapability requests denied, by reason",
            self.denied.clone(),
        );
        sub.register(
            "watchers",
            "Streams open to Sidecars (policy bundle, revocations)",
            self.watchers.clone(),
        );
        sub.register(
            "bundle_reloads",
            "Policy directory reloads after an edit, by bundle and result (error: the previous bundle stays in force)",
            self.reloads.clone(),
        );
        sub.register(
            "revocations",
            "Tokens newly revoked through Revoke",
            self.revocations.clone(),
        );
        sub.register(
            "revoked_tokens",
            "Revocations held (not yet pruned after the token's expiry)",
            self.revoked_tokens.clone(),
        );
        sub.register(
            "rpc_duration_seconds",
            "Time to answer a unary RPC, by method",
            self.rpc.clone(),
        );
        registry
    }

    pub fn token_issued(&self) {
        self.issued.inc();
    }

    /// A denial; `reason` is the wire's `deny_reason` (mapped to the fixed table).
    pub fn token_denied(&self, reason: &str) {
        let reason = DENY_REASONS
            .into_iter()
            .find(|known| *known == reason)
            .unwrap_or("other");
        self.denied.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one open stream until the guard is dropped.
    pub fn watching(&self, stream: WatchStream) -> WatcherGuard {
        let gauge = self.watchers.get_or_create_owned(&StreamLabel {
            stream: stream.name(),
        });
        gauge.inc();
        WatcherGuard(gauge)
    }

    pub fn bundle_reload(&self, bundle: BundleKind, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                bundle: bundle.name(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn token_revoked(&self) {
        self.revocations.inc();
    }

    pub fn set_revoked_tokens(&self, held: usize) {
        self.revoked_tokens
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Measures one RPC until the timer is dropped.
    pub fn rpc(&self, rpc: Rpc) -> Timer {
        Timer::start(&self.rpc.get_or_create(&MethodLabel { method: rpc.name() }))
    }
}

/// One open watcher stream; the gauge goes down when it is dropped.
pub struct WatcherGuard(Gauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &AuthorityMetrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn unknown_deny_reasons_become_other_and_never_a_label_of_their_own() {
        let metrics = AuthorityMetrics::new();
        metrics.token_denied("POLICY_DENIED");
        metrics.token_denied("agent \"mallory\" wants everything");
        let text = render(&metrics);
        assert!(
            text.contains("firma_authority_tokens_denied_total{reason=\"POLICY_DENIED\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firma_authority_tokens_denied_total{reason=\"other\"} 1"),
            "{text}"
        );
        assert!(!text.contains("mallory"), "{text}");
    }

    #[test]
    fn watchers_count_open_streams() {
        let metrics = AuthorityMetrics::new();
        let first = metrics.watching(WatchStream::Revocations);
        let second = metrics.watching(WatchStream::Revocations);
        drop(first);
        let text = render(&metrics);
        assert!(
            text.contains("firma_authority_watchers{stream=\"revocations\"} 1"),
            "{text}"
        );
        drop(second);
        assert!(render(&metrics).contains("firma_authority_watchers{stream=\"revocations\"} 0"));
    }
}
