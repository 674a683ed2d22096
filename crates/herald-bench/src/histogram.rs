//! HDR histograms of microseconds: how they are recorded from many connection tasks, carried
//! between processes, and summarised.

use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour in microseconds: anything slower is clamped, and is a failed run anyway.
const HIGHEST_US: u64 = 3_600_000_000;

/// Three significant figures: 0.1 % resolution at every magnitude.
const SIGNIFICANT_FIGURES: u8 = 3;

/// Latencies are recorded by thousands of connection tasks on a few threads. Sharding the
/// histogram by connection keeps two threads from contending on one lock.
const SHARDS: usize = 16;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_FIGURES)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

/// A histogram shared by many tasks, each recording into the shard its key selects.
pub struct ShardedHistogram {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl ShardedHistogram {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect() }
    }

    pub fn record(&self, key: u64, micros: u64) {
        let shard = &self.shards[(key % SHARDS as u64) as usize];
        shard.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(micros.max(1));
    }

    /// All shards added together.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            add(&mut total, &shard);
        }
        total
    }
}

impl Default for ShardedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds `source` into `target`. Both come from [`new_histogram`], so their bounds match.
pub fn add(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    for bucket in source.iter_recorded() {
        target.saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
    }
}

/// A histogram as the non-empty buckets `(value, count)`, which is how worker processes send
/// theirs to the parent in their JSON result line. It is exact up to the bucket resolution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistogramData(Vec<(u64, u64)>);

impl HistogramData {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        Self(histogram.iter_recorded().map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value())).collect())
    }

    pub fn add_to(&self, target: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            target.saturating_record_n(value, count);
        }
    }
}

/// The quantiles a report shows, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    /// `None` when nothing was recorded.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_through_json() {
        let mut h = new_histogram();
        for v in [1, 10, 100, 1000, 10_000, 100_000] {
            h.saturating_record_n(v, 3);
        }
        let json = serde_json::to_string(&HistogramData::from_histogram(&h)).expect("json");
        let data: HistogramData = serde_json::from_str(&json).expect("parse");
        let mut back = new_histogram();
        data.add_to(&mut back);
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn shards_merge() {
        let sharded = ShardedHistogram::new();
        for key in 0..100 {
            sharded.record(key, 2_000);
        }
        let merged = sharded.merged();
        assert_eq!(merged.len(), 100);
        let q = Quantiles::of(&merged).expect("recorded");
        assert!((q.p50 - 2.0).abs() < 0.01);
    }
}
