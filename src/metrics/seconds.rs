//! A counter of seconds spent, kept as whole nanoseconds: adding is one relaxed atomic add (no
//! float compare-and-swap loop), and its `rate()` is the share of time spent busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Seconds spent (encoded as a float counter); clones share their count.
#[derive(Debug, Clone, Default)]
pub struct SecondsCounter(Arc<AtomicU64>);

impl SecondsCounter {
    pub fn add(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn seconds(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl TypedMetric for SecondsCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for SecondsCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.seconds(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn durations_add_up_and_encode_as_a_seconds_counter() {
        let counter = SecondsCounter::default();
        counter.add(Duration::from_millis(1500));
        counter.add(Duration::from_micros(250));
        let mut registry = Registry::default();
        registry.register("busy_seconds", "test", counter);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE busy_seconds counter"), "{text}");
        assert!(text.contains("busy_seconds_total 1.50025"), "{text}");
    }
}
