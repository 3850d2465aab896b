//! How precisely a step measured what it measured: 95% intervals for its throughput and latency percentiles,
//! computed from its steady seconds (docs/statistics.md says why these methods).
//!
//! The sampling unit is the second. Per-second counts are autocorrelated (a stall that spans a second boundary
//! lowers both seconds), so a per-request formula would be far too narrow. Throughput uses batch means: the steady
//! seconds are cut into at most `MAX_BATCHES` consecutive batches, the spread of the batch rates gives the standard
//! error, inflated by the batches' own lag-1 autocorrelation when it is positive, with Student's t for the few
//! batches there are. Latency percentiles use a block bootstrap over the same batches: the batches' histograms are
//! resampled with replacement and the percentile read from each resample's merged distribution.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF as _, StudentsT};

use super::LatencyHistogram;

/// Batches a step's steady seconds are cut into, at most: enough degrees of freedom for t, and batches long enough
/// to hold a second boundary's correlation.
pub const MAX_BATCHES: usize = 10;
/// Steady seconds a step needs before its interval can count as precise: two seconds that happened to agree are
/// not evidence, and four batches are the fewest whose autocorrelation can be estimated.
pub const MIN_SECONDS_FOR_PRECISION: usize = 4;
/// Bootstrap resamples for the latency intervals; seeded, so a result replays exactly.
const RESAMPLES: usize = 400;
/// The autocorrelation correction is capped here: beyond it, a handful of batches cannot say how much.
const MAX_AUTOCORRELATION: f64 = 0.8;

/// A two-sided 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Half the width as a percentage of `value`: the precision reached.
    pub fn half_width_percent(&self, value: f64) -> f64 {
        if value > 0.0 { (self.high - self.low) / 2.0 / value * 100.0 } else { f64::INFINITY }
    }

    pub fn scaled(&self, factor: f64) -> Interval {
        Interval { low: self.low * factor, high: self.high * factor }
    }

    pub fn contains(&self, value: f64) -> bool {
        (self.low..=self.high).contains(&value)
    }
}

/// The 97.5% quantile of Student's t with `degrees` degrees of freedom.
pub fn t_975(degrees: f64) -> f64 {
    StudentsT::new(0.0, 1.0, degrees.max(1.0)).map_or(12.71, |t| t.inverse_cdf(0.975))
}

/// The consecutive batches `seconds` seconds are cut into: at most `MAX_BATCHES`, lengths differing by one at most.
fn batch_bounds(seconds: usize) -> Vec<std::ops::Range<usize>> {
    let batches = seconds.min(MAX_BATCHES);
    (0..batches).map(|batch| batch * seconds / batches..(batch + 1) * seconds / batches).collect()
}

/// A mean rate and its standard error, from per-second values by batch means; `None` under two seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchMeans {
    pub mean: f64,
    pub standard_error: f64,
    /// Degrees of freedom of the standard error (batches less one).
    pub degrees: f64,
}

impl BatchMeans {
    pub fn of(per_second: &[u64]) -> Option<BatchMeans> {
        let seconds = per_second.len();
        if seconds < 2 {
            return None;
        }
        let batches = batch_bounds(seconds);
        let rates: Vec<(f64, f64)> = batches
            .iter()
            .map(|range| {
                let length = range.len() as f64;
                (per_second[range.clone()].iter().sum::<u64>() as f64 / length, length)
            })
            .collect();
        let mean = per_second.iter().sum::<u64>() as f64 / seconds as f64;
        let count = rates.len() as f64;
        // The weighted batch-means variance of the overall mean; equal to s^2 / k for equal batches.
        let variance = rates.iter().map(|(rate, length)| (length * (rate - mean)).powi(2)).sum::<f64>()
            / (seconds as f64).powi(2)
            * count
            / (count - 1.0);
        let rho = lag1_autocorrelation(&rates.iter().map(|(rate, _)| *rate).collect::<Vec<_>>())
            .clamp(0.0, MAX_AUTOCORRELATION);
        let inflation = (1.0 + rho) / (1.0 - rho);
        Some(BatchMeans { mean, standard_error: (variance * inflation).sqrt(), degrees: count - 1.0 })
    }

    pub fn interval(&self) -> Interval {
        let half = t_975(self.degrees) * self.standard_error;
        Interval { low: (self.mean - half).max(0.0), high: self.mean + half }
    }
}

/// Lag-1 autocorrelation of a short series; 0 with fewer than 4 values, where it cannot be estimated.
fn lag1_autocorrelation(values: &[f64]) -> f64 {
    if values.len() < 4 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance: f64 = values.iter().map(|value| (value - mean).powi(2)).sum();
    if variance <= 0.0 {
        return 0.0;
    }
    values.windows(2).map(|pair| (pair[0] - mean) * (pair[1] - mean)).sum::<f64>() / variance
}

/// One second's latency distribution, kept compactly while its step runs: (value in µs, count) per recorded
/// bucket of the HDR histogram, in value order.
#[derive(Debug, Clone, Default)]
pub struct SecondLatencies(Vec<(u32, u32)>);

impl SecondLatencies {
    pub fn of(histogram: &LatencyHistogram) -> Self {
        SecondLatencies(
            histogram
                .iter_recorded()
                .map(|bucket| {
                    let value = u32::try_from(bucket.value_iterated_to()).unwrap_or(u32::MAX);
                    (value, u32::try_from(bucket.count_at_value()).unwrap_or(u32::MAX))
                })
                .collect(),
        )
    }
}

/// Latency percentile intervals of a step, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyIntervals {
    pub p50_ms: Interval,
    pub p90_ms: Interval,
    pub p95_ms: Interval,
    pub p99_ms: Interval,
}

impl LatencyIntervals {
    /// The interval of the percentile a requirement names, falling back to p99's for percentiles not kept.
    pub fn at(&self, percentile: f64) -> Interval {
        super::kept_percentile(percentile, [self.p50_ms, self.p90_ms, self.p95_ms, self.p99_ms])
    }
}

const PERCENTILES: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

/// Block bootstrap of the seconds' distributions (batches as blocks); `None` under two seconds with responses.
pub fn latency_intervals(seconds: &[SecondLatencies], seed: u64) -> Option<LatencyIntervals> {
    let seconds: Vec<&SecondLatencies> = seconds.iter().filter(|second| !second.0.is_empty()).collect();
    if seconds.len() < 2 {
        return None;
    }
    // Every value any second recorded, and each batch's cumulative count at each of them.
    let mut values: Vec<u32> = seconds.iter().flat_map(|second| second.0.iter().map(|(value, _)| *value)).collect();
    values.sort_unstable();
    values.dedup();
    let cumulative: Vec<Vec<u64>> = batch_bounds(seconds.len())
        .into_iter()
        .map(|range| {
            let mut counts = vec![0u64; values.len()];
            for second in &seconds[range] {
                for (value, count) in &second.0 {
                    let slot = values.binary_search(value).expect("every value was collected");
                    counts[slot] += u64::from(*count);
                }
            }
            counts
                .iter()
                .scan(0u64, |running, count| Some(*running + count).inspect(|total| *running = *total))
                .collect()
        })
        .collect();
    let batches = cumulative.len();
    // The percentiles of a draw that gives each batch `weights[batch]` copies.
    let percentiles_of = |weights: &[u64]| -> [f64; 4] {
        let count_below = |slot: usize| -> u64 {
            weights.iter().zip(&cumulative).map(|(weight, counts)| weight * counts[slot]).sum()
        };
        let total = count_below(values.len() - 1);
        PERCENTILES.map(|percentile| {
            // The rank HDR's value_at_percentile reads: the smallest value with at least that many at or below.
            let rank = ((percentile / 100.0) * total as f64).ceil().max(1.0) as u64;
            let slot = partition_point(values.len(), |slot| count_below(slot) < rank);
            f64::from(values[slot.min(values.len() - 1)]) / 1000.0
        })
    };
    let estimates = percentiles_of(&vec![1; batches]);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut draws: [Vec<f64>; 4] = Default::default();
    let mut weights = vec![0u64; batches];
    for _ in 0..RESAMPLES {
        weights.fill(0);
        for _ in 0..batches {
            weights[rng.random_range(0..batches)] += 1;
        }
        for (draw, value) in draws.iter_mut().zip(percentiles_of(&weights)) {
            draw.push(value);
        }
    }
    // With a handful of blocks the bootstrap's spread is too small: it is widened by the blocks' own small-sample
    // factors, t with blocks - 1 degrees of freedom over the normal's 1.96, and sqrt(b / (b - 1)) for the
    // resampling variance's bias.
    let widening = t_975((batches - 1) as f64) / 1.96 * (batches as f64 / (batches - 1) as f64).sqrt();
    for draw in &mut draws {
        draw.sort_by(f64::total_cmp);
    }
    let [p50, p90, p95, p99]: [Interval; 4] = std::array::from_fn(|index| {
        let (draw, estimate) = (&draws[index], estimates[index]);
        let at = |fraction: f64| draw[((draw.len() - 1) as f64 * fraction).round() as usize];
        Interval {
            low: (estimate - (estimate - at(0.025)).max(0.0) * widening).max(0.0),
            high: estimate + (at(0.975) - estimate).max(0.0) * widening,
        }
    });
    Some(LatencyIntervals { p50_ms: p50, p90_ms: p90, p95_ms: p95, p99_ms: p99 })
}

/// The first index in `0..len` where `below` turns false (it is true, then false).
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = (low + high) / 2;
        if below(middle) { low = middle + 1 } else { high = middle }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::new_histogram;

    #[test]
    fn constant_counts_have_a_zero_width_interval() {
        let means = BatchMeans::of(&[200; 8]).unwrap();
        assert_eq!((means.mean, means.standard_error), (200.0, 0.0));
        assert_eq!(means.interval(), Interval { low: 200.0, high: 200.0 });
        assert!(BatchMeans::of(&[200]).is_none(), "one second has no spread");
    }

    #[test]
    fn batch_means_match_the_textbook_for_independent_seconds() {
        // Four seconds, one per batch, no autocorrelation estimate: s / sqrt(n) with t(3).
        let means = BatchMeans::of(&[98, 102, 101, 99]).unwrap();
        let s = (((2.0f64).powi(2) * 2.0 + 1.0 * 2.0) / 3.0).sqrt();
        assert!((means.standard_error - s / 2.0).abs() < 1e-9, "{means:?}");
        let interval = means.interval();
        assert!((interval.high - 100.0 - 3.182 * s / 2.0).abs() < 0.01, "{interval:?}");
    }

    #[test]
    fn positively_correlated_batches_widen_the_interval() {
        // A slow swing: neighbouring seconds alike. Shuffled, the same values give a narrower interval.
        let drifting = [90, 92, 95, 99, 103, 106, 108, 110, 108, 104, 100, 96];
        let shuffled = [90, 108, 95, 110, 103, 92, 108, 99, 104, 96, 106, 100];
        let (drifting, shuffled) = (BatchMeans::of(&drifting).unwrap(), BatchMeans::of(&shuffled).unwrap());
        assert!(drifting.standard_error > 1.5 * shuffled.standard_error, "{drifting:?} vs {shuffled:?}");
    }

    #[test]
    fn latency_intervals_bracket_each_seconds_percentile() {
        // Seconds alternate between fast (10 ms) and slow (30 ms) medians: the p50 interval spans both.
        let seconds: Vec<SecondLatencies> = (0..10)
            .map(|second| {
                let mut histogram = new_histogram();
                let base_us = if second % 2 == 0 { 10_000 } else { 30_000 };
                for offset in 0..100 {
                    histogram.record(base_us + offset * 10).unwrap();
                }
                SecondLatencies::of(&histogram)
            })
            .collect();
        let intervals = latency_intervals(&seconds, 1).unwrap();
        assert!(intervals.p50_ms.low <= 11.0 && intervals.p50_ms.high >= 30.0, "{intervals:?}");
        assert!(intervals.p99_ms.low >= 30.0 && intervals.p99_ms.high <= 31.1, "{intervals:?}");
        assert_eq!(latency_intervals(&seconds, 1), latency_intervals(&seconds, 1), "seeded");
        assert!(latency_intervals(&seconds[..1], 1).is_none());
    }
}
