//! The per-second series: one summary a second kept in memory and in results, and each second's full histograms
//! streamed to a JSON-lines file beside the results, from which any window can be rebuilt exactly.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::StepWindow;

use super::step::{ResourceTotals, StepRecord, new_step_for};
use super::{ResourceSample, Tally};

/// One second of the run, as kept in memory and in results (its histograms go to the series file only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    pub second: u64,
    /// Virtual users, or offered requests per second.
    pub load: f64,
    pub started: u64,
    pub completed: u64,
    /// Open model: arrivals not sent because `max_in_flight` requests were in flight.
    #[serde(default)]
    pub dropped: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// p99 of how late the load generator acted against its own schedule.
    #[serde(default)]
    pub generator_lag_p99_ms: f64,
    #[serde(flatten)]
    pub resources: ResourceSample,
}

#[derive(Serialize)]
struct SeriesLine<'a> {
    #[serde(flatten)]
    summary: &'a SecondSummary,
    error_counts: super::ErrorCounts,
    /// HDR V2 deflate, base64: the second's full latency distribution in microseconds.
    histogram: String,
    /// The other distributions, when the second has any: so a window rebuilt from the file, or the shards of a run
    /// merged, judge the load generator and streamed responses as the run itself did.
    #[serde(flatten)]
    more: MoreHistograms,
}

/// A second's distributions besides latency, each HDR V2 deflate, base64; absent when empty.
#[derive(Serialize, Deserialize, Default)]
struct MoreHistograms {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generator_lag: Option<String>,
    /// Generated responses' token timings and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<super::tokens::EncodedTokens>,
}

/// A line of the series file, read back.
#[derive(Deserialize)]
struct SeriesRecord {
    #[serde(flatten)]
    summary: SecondSummary,
    error_counts: super::ErrorCounts,
    histogram: String,
    #[serde(flatten)]
    more: MoreHistograms,
}

/// Why a window cannot be rebuilt from the series file.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("cannot read the series file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line {line} of the series file is not a second's record: {source}")]
    Line { line: usize, source: serde_json::Error },
    #[error("line {line} of the series file: {source}")]
    Histogram { line: usize, source: super::HistogramError },
}

impl SecondSummary {
    /// A second's summary from its tally: percentiles read from its histograms.
    pub fn of(second: u64, load: f64, tally: &Tally, resources: ResourceSample) -> SecondSummary {
        SecondSummary {
            second,
            load,
            started: tally.started,
            completed: tally.completed,
            dropped: tally.dropped,
            errors: tally.errors.total(),
            p50_ms: super::percentile_ms(&tally.latency_us, 50.0),
            p99_ms: super::percentile_ms(&tally.latency_us, 99.0),
            generator_lag_p99_ms: super::percentile_ms(&tally.generator_lag_us, 99.0),
            resources,
        }
    }
}

/// One second of a series file: its summary and its tally (counts, error classes, latency histogram).
pub struct SeriesSecond {
    pub summary: SecondSummary,
    pub tally: Tally,
}

/// Every second of a series file, in order. A last line without its newline is a write the process did not live
/// to finish (killed mid-second): it is not a second, and is left out.
pub fn read_series(path: &Path) -> Result<Vec<SeriesSecond>, SeriesError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SeriesError::Read { path: path.display().to_string(), source })?;
    let whole_lines = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    whole_lines
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let parsed: SeriesRecord =
                serde_json::from_str(line).map_err(|source| SeriesError::Line { line: index + 1, source })?;
            let decode = |encoded: &str| {
                super::decode_histogram(encoded).map_err(|source| SeriesError::Histogram { line: index + 1, source })
            };
            let decode_more = |encoded: &Option<String>| match encoded {
                Some(encoded) => decode(encoded),
                None => Ok(super::new_histogram()),
            };
            let second = &parsed.summary;
            let tally = Tally {
                started: second.started,
                completed: second.completed,
                dropped: second.dropped,
                errors: parsed.error_counts,
                latency_us: decode(&parsed.histogram)?,
                generator_lag_us: decode_more(&parsed.more.generator_lag)?,
                tokens: match &parsed.more.tokens {
                    Some(encoded) => Some(Box::new(
                        super::TokenTally::decoded(encoded)
                            .map_err(|source| SeriesError::Histogram { line: index + 1, source })?,
                    )),
                    None => None,
                },
            };
            Ok(SeriesSecond { summary: parsed.summary, tally })
        })
        .collect()
}

/// Rebuilds a window's measurements from the series file, exactly: how a sliding window of `phases` (which no
/// step in memory covers) gets its latency distribution without keeping every second's histogram in memory.
pub fn window_from_series(path: &Path, window: StepWindow) -> Result<StepRecord, SeriesError> {
    Ok(window_from_seconds(&read_series(path)?, window))
}

/// A window's measurements from the seconds it spans.
pub fn window_from_seconds(seconds: &[SeriesSecond], window: StepWindow) -> StepRecord {
    let span = window.steady_start_s..window.end_s;
    let mut record = new_step_for(window);
    let mut resources = ResourceTotals::default();
    for second in seconds.iter().filter(|second| span.contains(&second.summary.second)) {
        record.add_second(&second.tally);
        resources.add(second.summary.resources);
    }
    record.complete = !record.completed_per_second.is_empty();
    record.finish();
    record.resources = resources.mean();
    record
}

/// Several load generators' series of one test run merged second by second, as one generator driving their
/// combined load would have recorded it: counts and error classes added, latency histograms added bucket by
/// bucket (exact: HDR histograms of one precision merge without loss; the generators' lag too), loads added (each
/// drove its share). The server's resources are the same server seen by each: their mean; a generator's own CPU,
/// the busiest of them (one shard out of CPU sent less than its share).
pub fn merge_series(shards: Vec<Vec<SeriesSecond>>) -> Vec<SeriesSecond> {
    let mut by_second: std::collections::BTreeMap<u64, Vec<SeriesSecond>> = std::collections::BTreeMap::new();
    for second in shards.into_iter().flatten() {
        by_second.entry(second.summary.second).or_default().push(second);
    }
    by_second
        .into_iter()
        .map(|(second, parts)| {
            let mut tally = Tally::default();
            let mut load = 0.0;
            let mut resources = ResourceTotals::default();
            let mut generator_cpu_percent: Option<f64> = None;
            for part in &parts {
                tally.merge(&part.tally);
                load += part.summary.load;
                resources.add(part.summary.resources);
                generator_cpu_percent = match (generator_cpu_percent, part.summary.resources.generator_cpu_percent) {
                    (Some(busiest), Some(percent)) => Some(busiest.max(percent)),
                    (busiest, percent) => busiest.or(percent),
                };
            }
            let resources = ResourceSample { generator_cpu_percent, ..resources.mean() };
            let summary = SecondSummary::of(second, load, &tally, resources);
            SeriesSecond { summary, tally }
        })
        .collect()
}

pub fn write_second(series: &mut BufWriter<File>, summary: &SecondSummary, tally: &Tally) -> std::io::Result<()> {
    let more =
        |histogram: &super::LatencyHistogram| (!histogram.is_empty()).then(|| super::encode_histogram(histogram));
    let line = SeriesLine {
        summary,
        error_counts: tally.errors,
        histogram: super::encode_histogram(&tally.latency_us),
        more: MoreHistograms {
            generator_lag: more(&tally.generator_lag_us),
            tokens: tally.tokens.as_deref().filter(|tokens| !tokens.is_empty()).map(super::TokenTally::encoded),
        },
    };
    serde_json::to_writer(&mut *series, &line)?;
    series.write_all(b"\n")?;
    // Flushed every second so an abrupt end loses at most the second in progress.
    series.flush()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution as _, LogNormal};

    use super::*;
    use crate::measure::{LatencyHistogram, new_histogram};
    use crate::plan::StepRole;

    /// `shards` generators, `seconds` seconds each, lognormal latencies around 20 ms: each shard's seconds, and
    /// every value of each second across all shards.
    fn generated(shards: u64, seconds: u64) -> (Vec<Vec<SeriesSecond>>, Vec<Vec<u64>>) {
        let latency = LogNormal::new(20_000f64.ln(), 0.6).unwrap();
        let mut all = vec![Vec::new(); seconds as usize];
        let series = (0..shards)
            .map(|shard| {
                let mut rng = StdRng::seed_from_u64(shard);
                (0..seconds)
                    .map(|second| {
                        let mut tally = Tally::default();
                        // Shards serve different amounts, as real ones do.
                        for _ in 0..(500 + 137 * shard + 11 * second) {
                            let value = (latency.sample(&mut rng) as u64).clamp(1, crate::measure::MAX_LATENCY_US);
                            tally.latency_us.record(value).unwrap();
                            tally.completed += 1;
                            tally.started += 1;
                            all[second as usize].push(value);
                        }
                        tally.errors.http_5xx = shard;
                        let resources = ResourceSample { cpu_percent: Some(40.0 + shard as f64), ..Default::default() };
                        SeriesSecond { summary: SecondSummary::of(second, 3.0, &tally, resources), tally }
                    })
                    .collect()
            })
            .collect();
        (series, all)
    }

    #[test]
    fn merged_shards_hold_exactly_the_histogram_of_all_their_values() {
        let (shards, all) = generated(4, 5);
        let merged = merge_series(shards);
        assert_eq!(merged.len(), 5);
        for (second, values) in merged.iter().zip(&all) {
            let mut whole = new_histogram();
            for value in values {
                whole.record(*value).unwrap();
            }
            // Count for count, bucket by bucket.
            let buckets = |histogram: &LatencyHistogram| {
                histogram
                    .iter_recorded()
                    .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(buckets(&second.tally.latency_us), buckets(&whole));
            assert_eq!(second.tally.completed, values.len() as u64);
            assert_eq!((second.tally.errors.http_5xx, second.summary.load), (6, 12.0), "classes and loads add up");
            assert_eq!(second.summary.resources.cpu_percent, Some(41.5), "the mean of the shards' samples");
            // Percentiles equal those of the concatenated samples within HDR's 3 significant digits.
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for quantile in [0.5, 0.9, 0.99] {
                let exact = sorted[((sorted.len() as f64 * quantile).ceil() as usize).saturating_sub(1)] as f64;
                let merged_value = second.tally.latency_us.value_at_quantile(quantile) as f64;
                assert_eq!(merged_value, whole.value_at_quantile(quantile) as f64);
                assert!((merged_value / exact - 1.0).abs() <= 1e-3, "q{quantile}: {merged_value} vs {exact}");
            }
        }
    }

    #[test]
    fn merging_goes_through_the_series_files_and_a_window_sums_the_shards() {
        let folder = tempfile::tempdir().unwrap();
        let (shards, all) = generated(3, 4);
        let read: Vec<Vec<SeriesSecond>> = shards
            .iter()
            .enumerate()
            .map(|(index, seconds)| {
                let path = folder.path().join(format!("shard-{index}.jsonl"));
                let mut file = BufWriter::new(File::create(&path).unwrap());
                for second in seconds {
                    write_second(&mut file, &second.summary, &second.tally).unwrap();
                }
                drop(file);
                read_series(&path).unwrap()
            })
            .collect();
        let merged = merge_series(read);
        // Seconds 1 to 3 steady: from the window's steady start, not its ramp-in.
        let window = StepWindow::new(0, 0, 4, 9.0, StepRole::Measured);
        assert_eq!(window.steady_start_s, 1);
        let window = window_from_seconds(&merged, window);
        let expected: usize = all[1..4].iter().map(Vec::len).sum();
        assert_eq!(window.steady.completed, expected as u64);
        assert_eq!(window.completed_per_second, all[1..4].iter().map(|values| values.len() as u64).collect::<Vec<_>>());
    }
}
