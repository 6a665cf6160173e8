//! Prometheus metrics of the daemons (docs/metrics.md): counted all the time with atomics,
//! served in OpenMetrics text on a listener of their own when `[<daemon>.metrics] listen` is set.
//!
//! - [`endpoint`]: the listener (`GET /metrics`), loopback unless allowed, address published in
//!   the state dir;
//! - [`authority`], [`sidecar`]: each daemon's metric set and its fixed label tables;
//! - [`histogram`]: a lock-free latency histogram for the request path; [`seconds`]: a counter
//!   of time spent.

pub mod authority;
pub mod endpoint;
pub mod histogram;
pub mod seconds;
pub mod sidecar;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A registry holding what every firma endpoint serves: `firma_build_info{version}`.
pub fn base_registry() -> Registry {
    let mut registry = Registry::default();
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    registry.register(
        "firma_build_info",
        "The firma binary serving these metrics",
        info,
    );
    registry
}
