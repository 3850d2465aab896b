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
}

/// A line of the series file, read back.
#[derive(Deserialize)]
struct SeriesRecord {
    #[serde(flatten)]
    summary: SecondSummary,
    error_counts: super::ErrorCounts,
    histogram: String,
}

/// Rebuilds a window's measurements from the series file, exactly: how a sliding window of `phases` (which no
/// step in memory covers) gets its latency distribution without keeping every second's histogram in memory.
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

pub fn window_from_series(path: &Path, window: StepWindow) -> Result<StepRecord, SeriesError> {
    let mut record = new_step_for(window);
    let mut resources = ResourceTotals::default();
    let text = std::fs::read_to_string(path)
        .map_err(|source| SeriesError::Read { path: path.display().to_string(), source })?;
    for (index, line) in text.lines().enumerate() {
        let parsed: SeriesRecord =
            serde_json::from_str(line).map_err(|source| SeriesError::Line { line: index + 1, source })?;
        let second = &parsed.summary;
        if !(record.window.start_s..record.window.end_s).contains(&second.second) {
            continue;
        }
        let mut tally = Tally {
            started: second.started,
            completed: second.completed,
            dropped: second.dropped,
            errors: parsed.error_counts,
            ..Tally::default()
        };
        tally.latency_us = super::decode_histogram(&parsed.histogram)
            .map_err(|source| SeriesError::Histogram { line: index + 1, source })?;
        record.add_second(&tally);
        resources.add(second.resources);
    }
    record.complete = !record.completed_per_second.is_empty();
    record.finish();
    record.resources = resources.mean();
    Ok(record)
}

pub fn write_second(series: &mut BufWriter<File>, summary: &SecondSummary, tally: &Tally) -> std::io::Result<()> {
    let line =
        SeriesLine { summary, error_counts: tally.errors, histogram: super::encode_histogram(&tally.latency_us) };
    serde_json::to_writer(&mut *series, &line)?;
    series.write_all(b"\n")?;
    // Flushed every second so an abrupt end loses at most the second in progress.
    series.flush()
}
