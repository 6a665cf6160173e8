//! A latency histogram whose `observe` is three relaxed atomic adds — no lock on the request
//! path (prometheus-client's own `Histogram` takes a mutex per observation). Fixed buckets:
//! [`LATENCY_BUCKETS`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds, 50 µs … 10 s (plus `+Inf`): a policy decision takes tens of
/// microseconds, an upstream call hundreds of milliseconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

#[derive(Debug)]
struct Inner {
    /// One per bound in [`LATENCY_BUCKETS`], then `+Inf`; not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram of durations; clones share their counts.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Arc<Inner>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(Arc::new(Inner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Run `work`, observing how long it took — also when it is dropped unfinished (a timeout
    /// around it fires): the time until then is observed.
    pub async fn time<F: std::future::Future>(&self, work: F) -> F::Output {
        let _elapsed = Elapsed {
            histogram: self,
            started: std::time::Instant::now(),
        };
        work.await
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' sum, so a scrape racing an observation stays consistent.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Observes the time from its creation to its drop (so early returns are measured too).
#[must_use = "the timer measures until it is dropped"]
pub struct Timer {
    histogram: LatencyHistogram,
    started: std::time::Instant,
}

impl Timer {
    pub fn start(histogram: &LatencyHistogram) -> Self {
        Self {
            histogram: histogram.clone(),
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

/// Observes the time from its creation to its drop, borrowing its histogram (nothing cloned).
struct Elapsed<'a> {
    histogram: &'a LatencyHistogram,
    started: std::time::Instant,
}

impl Drop for Elapsed<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn observations_land_in_their_bucket_and_encode_cumulatively() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(40));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.count(), 3);
        let mut registry = Registry::default();
        registry.register("probe", "test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("probe_bucket{le=\"0.00005\"} 1"), "{text}");
        assert!(text.contains("probe_bucket{le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("probe_bucket{le=\"10.0\"} 2"), "{text}");
        assert!(text.contains("probe_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("probe_count 3"), "{text}");
    }

    #[tokio::test]
    async fn timed_work_is_observed_finished_or_cut_short() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.time(async { 7 }).await, 7);
        let slow = histogram.time(std::future::pending::<()>());
        assert!(
            tokio::time::timeout(Duration::from_millis(1), slow)
                .await
                .is_err()
        );
        assert_eq!(histogram.count(), 2);
    }
}
