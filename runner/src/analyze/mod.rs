//! Analysis: the figures of every step, computed once from what was measured; where throughput stops growing (the
//! plateau, `plateau`); the IR metrics there; and the Universal Scalability Law fitted to the steps
//! (`scalability`). The recommendation across configurations is `recommend`'s.

pub mod plateau;
pub mod scalability;

use serde::{Deserialize, Serialize};

use crate::measure::step::StepRecord;
use crate::measure::{self, ErrorCounts, LatencyHistogram, LatencySummary};
use crate::plan::LoadUnit;
use crate::spec::{PlateauSettings, Requirements, Stopping};
use crate::units;
pub use plateau::{OnlineDetector, Plateau, PlateauRule, StepPoint, sliding_window};
use plateau::{complete_points, detect};
use scalability::ScalabilityFit;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Position in the ramp, from 0.
    pub index: usize,
    /// Virtual users during the step (the mean, for phases), or offered requests per second (open model): see
    /// `job.load_unit`.
    pub load: f64,
    /// Seconds since the configuration's start.
    pub start_s: u64,
    pub end_s: u64,
    /// Seconds measured: the step less its ramp-in.
    pub steady_seconds: u64,
    /// False when the run ended inside the step.
    pub complete: bool,
    /// Successful responses per second over the steady seconds.
    pub throughput_rps: f64,
    pub invocations_per_min: f64,
    /// Latency of successful responses, from the step's histogram.
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    /// Errors as a percentage of all finished requests.
    pub error_rate_percent: f64,
    /// Open model: arrivals dropped at the in-flight cap (a step with drops is overloaded).
    #[serde(default)]
    pub dropped: u64,
    /// p99 of the load generator's lateness against its own schedule, and whether it passed the limit: then the
    /// step measured plateau, not the server, and is never taken as the plateau.
    #[serde(default)]
    pub generator_lag_p99_ms: f64,
    #[serde(default)]
    pub generator_saturated: bool,
    /// Mean resource use over the steady seconds, where there is a source.
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    /// plateau's own CPU use over the steady seconds, as a share of the cores it may use; at 95% or more the
    /// step counts as load generator saturated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_percent: Option<f64>,
    /// The steady part's latency histogram in microseconds (written as HDR V2 deflate, base64).
    #[serde(with = "measure::histogram_base64")]
    pub histogram: LatencyHistogram,
    /// Streaming endpoints: time to the first chunk (first token), and each response's mean time between chunks
    /// (time per output token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_chunk: Option<LatencySummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between_chunks: Option<LatencySummary>,
}

/// The figures SageMaker Inference Recommender reports, at the plateau.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Requests per minute over the plateau window.
    pub max_invocations: f64,
    /// The highest load whose required percentile met `[requirements]`, per minute; absent without an SLO.
    pub max_invocations_at_slo: Option<f64>,
    /// ModelLatency over the plateau window.
    pub model_latency: LatencySummary,
    pub cost_per_hour_usd: f64,
    /// CostPerHour / (invocations per hour), on the SLO figure when there is an SLO; absent when nothing met it.
    pub cost_per_inference_usd: Option<f64>,
    /// CpuUtilization at the plateau, as a percentage of what the server may use; absent with no source.
    pub cpu_utilization_percent: Option<f64>,
    pub memory_utilization_percent: Option<f64>,
    /// Where the utilization figures come from (e.g. "simulated ..." for the reference endpoint).
    pub utilization_source: Option<String>,
    /// Errors in the plateau window, by class.
    pub errors: ErrorCounts,
    pub error_rate_percent: f64,
    /// Coefficient of variation of per-second throughput in the plateau window: the figure's own noise.
    pub throughput_spread_percent: f64,
    /// Virtual users, or offered requests per second, at the plateau step.
    pub load_at_plateau: f64,
}

fn error_rate_percent(completed: u64, errors: &ErrorCounts) -> f64 {
    let attempts = completed + errors.total();
    if attempts == 0 { 0.0 } else { errors.total() as f64 * 100.0 / attempts as f64 }
}

pub fn step_result(step: &StepRecord) -> StepResult {
    let throughput_rps = step.throughput_rps();
    StepResult {
        index: step.window.index,
        load: step.window.load,
        start_s: step.window.start_s,
        end_s: step.window.end_s,
        steady_seconds: step.steady_seconds(),
        complete: step.complete,
        throughput_rps,
        invocations_per_min: units::per_minute(throughput_rps),
        latency: LatencySummary::of(&step.steady.latency_us),
        errors: step.steady.errors,
        error_rate_percent: error_rate_percent(step.steady.completed, &step.steady.errors),
        dropped: step.steady.dropped,
        generator_lag_p99_ms: step.generator_lag_p99_ms(),
        generator_saturated: step.generator_saturated(),
        cpu_percent: step.resources.cpu_percent,
        memory_percent: step.resources.memory_percent,
        generator_cpu_percent: step.resources.generator_cpu_percent,
        histogram: step.steady.latency_us.clone(),
        first_chunk: (!step.steady.first_chunk_us.is_empty()).then(|| LatencySummary::of(&step.steady.first_chunk_us)),
        between_chunks: (!step.steady.between_chunks_us.is_empty())
            .then(|| LatencySummary::of(&step.steady.between_chunks_us)),
    }
}

/// What the analysis needs about one configuration besides its steps.
pub struct ConfigurationFacts {
    pub load_unit: LoadUnit,
    pub instance_count: u32,
    pub price_per_hour_usd: f64,
    pub utilization_source: Option<String>,
}

/// What the analysis finds in one configuration's steps.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Every step that ran, complete or not.
    pub steps: Vec<StepResult>,
    pub plateau: Option<Plateau>,
    pub metrics: Option<Metrics>,
    pub scalability: Option<ScalabilityFit>,
}

/// Every step's figures, the plateau, the metrics at it and the scalability model, from a configuration's
/// measured steps (and, for `phases`, the sliding window where throughput levelled off).
pub fn analyze_steps(
    records: &[StepRecord],
    facts: &ConfigurationFacts,
    stopping: &Stopping,
    requirements: &Requirements,
    settings: &PlateauSettings,
    sliding: Option<&StepRecord>,
) -> Analysis {
    let steps: Vec<StepResult> = records.iter().map(step_result).collect();
    let complete: Vec<(&StepRecord, &StepResult)> =
        records.iter().zip(&steps).filter(|(_, step)| step.complete).collect();
    let points = complete_points(&steps, &stopping.latency_thresholds);
    let Some(mut plateau) = detect(&points, &stopping.latency_thresholds, settings) else {
        return Analysis { steps, ..Analysis::default() };
    };
    // For phases, a sliding window where throughput levelled off replaces the step, unless a threshold, errors or
    // the load generator ended the search first.
    let sliding = sliding.filter(|_| matches!(plateau.rule, PlateauRule::ThroughputFlat | PlateauRule::NotReached));
    if let Some(window) = sliding {
        let containing = complete.iter().rposition(|(_, step)| step.start_s <= window.window.start_s).unwrap_or(0);
        plateau = Plateau {
            step: containing,
            rule: PlateauRule::ThroughputFlat,
            confirmed: true,
            window_s: Some([window.window.start_s, window.window.end_s]),
        };
    }
    // The USL models concurrency; an open model's offered rate is not one.
    let scalability = (facts.load_unit == LoadUnit::Users)
        .then(|| scalability::fit(&points.iter().map(|point| (point.load, point.throughput_rps)).collect::<Vec<_>>()))
        .flatten();
    let window = sliding.map(|record| (record, step_result(record)));
    let (record, step) = match &window {
        Some((record, step)) => (*record, step),
        None => complete[plateau.step],
    };
    let max_invocations = step.invocations_per_min;
    let max_invocations_at_slo = requirements.slo.map(|slo| {
        complete
            .iter()
            .filter(|(_, step)| {
                !step.histogram.is_empty()
                    && measure::percentile_ms(&step.histogram, slo.percentile.value()) <= slo.latency_ms
            })
            .map(|(_, step)| step.invocations_per_min)
            .fold(0.0, f64::max)
    });
    let operating_per_min = max_invocations_at_slo.unwrap_or(max_invocations);
    let cost_per_hour_usd = facts.price_per_hour_usd * f64::from(facts.instance_count);
    let cost_per_inference_usd =
        (operating_per_min > 0.0).then(|| cost_per_hour_usd / units::per_hour(operating_per_min));
    let metrics = Metrics {
        max_invocations,
        max_invocations_at_slo,
        model_latency: step.latency,
        cost_per_hour_usd,
        cost_per_inference_usd,
        cpu_utilization_percent: step.cpu_percent,
        memory_utilization_percent: step.memory_percent,
        utilization_source: facts.utilization_source.clone(),
        errors: step.errors,
        error_rate_percent: step.error_rate_percent,
        throughput_spread_percent: spread_percent(&record.completed_per_second),
        load_at_plateau: step.load,
    };
    Analysis { plateau: Some(plateau), metrics: Some(metrics), scalability, steps }
}

/// Coefficient of variation, in percent.
fn spread_percent(values: &[u64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<u64>() as f64 / count;
    let variance = values.iter().map(|value| (*value as f64 - mean).powi(2)).sum::<f64>() / (count - 1.0);
    if mean > 0.0 { variance.sqrt() / mean * 100.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_coefficient_of_variation() {
        assert_eq!(spread_percent(&[100, 100, 100]), 0.0);
        assert!((spread_percent(&[90, 110]) - 14.142).abs() < 0.01);
    }
}
