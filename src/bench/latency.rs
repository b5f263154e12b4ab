//! Latency histograms that survive a trip between processes.
//!
//! Every worker process records its own deliveries; the parent merges them. Percentiles
//! cannot be averaged, so workers ship the recorded buckets (value, count) rather than
//! their own p99, and the parent computes percentiles over the union.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (one minute); slower samples are clamped.
const MAX_MICROS: u64 = 60_000_000;

#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // Three significant figures: 0.1% error, a few tens of KiB per histogram.
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

/// Recorded buckets as `[value_us, count]` pairs, the form workers send to the parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Buckets(pub Vec<[u64; 2]>);

/// The figures a report prints, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn record(&mut self, micros: u64) {
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn merge(&mut self, other: &Latency) {
        // Both sides share the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn buckets(&self) -> Buckets {
        Buckets(
            self.histogram
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        )
    }

    pub fn add_buckets(&mut self, buckets: &Buckets) {
        for [value, count] in &buckets.0 {
            let _ = self
                .histogram
                .record_n((*value).clamp(1, MAX_MICROS), *count);
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latency = Latency::default();
        for us in 1..=10_000 {
            latency.record(us);
        }
        let s = latency.summary();
        assert_eq!(s.count, 10_000);
        // Three significant figures: within 0.1% of the exact rank.
        assert!((4_995..=5_005).contains(&s.p50_us), "{s:?}");
        assert!((9_890..=9_910).contains(&s.p99_us), "{s:?}");
        assert!((9_995..=10_010).contains(&s.max_us), "{s:?}");
    }

    #[test]
    fn buckets_round_trip_and_merge_like_one_histogram() {
        let mut fast = Latency::default();
        let mut slow = Latency::default();
        let mut all = Latency::default();
        for us in 0..1000 {
            fast.record(100 + us % 50);
            all.record(100 + us % 50);
        }
        for us in 0..10 {
            slow.record(50_000 + us);
            all.record(50_000 + us);
        }
        let wire = serde_json::to_string(&slow.buckets()).unwrap();
        let mut merged = Latency::default();
        merged.add_buckets(&fast.buckets());
        merged.add_buckets(&serde_json::from_str(&wire).unwrap());
        assert_eq!(merged.summary(), all.summary());
        // The 1% of slow samples shows up at p99, as it would in one process.
        assert!(merged.summary().p99_us >= 100, "{:?}", merged.summary());
        assert!(merged.summary().max_us >= 50_000);
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut latency = Latency::default();
        latency.record(0);
        latency.record(u64::MAX);
        assert_eq!(latency.count(), 2);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero() {
        assert_eq!(Latency::default().summary(), Summary::default());
    }
}
