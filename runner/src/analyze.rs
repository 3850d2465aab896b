//! Analysis: where throughput stops growing (the plateau), the IR metrics there, and the recommendation.
//!
//! The detector walks the complete steps in order. A step is *flat* when its throughput gained less than
//! `max(min_gain_percent, min_load_efficiency x the load it added)` over the best step before it. The first flat
//! step is the plateau once `confirm_steps` further steps are flat too. A step whose latency crosses a
//! `[stopping]` threshold, or whose error rate passes `max_error_rate_percent`, ends the search: the plateau is
//! the step before it. With no flat step, the plateau is not reached and MaxInvocations is a lower bound.
//! `phases` change their load every second, so they are judged by sliding 10 s windows instead (`sliding_window`).

pub mod scalability;

use serde::{Deserialize, Serialize};

use crate::drive::{LoadUnit, Observer, SecondSummary, StepRecord, StepVerdict, StepWindow};
use crate::measure::{self, ErrorCounts, LatencySummary};
use crate::results::{ConfigurationResult, Metrics, RunStatus, StepResult};
use scalability::ScalabilityFit;

use crate::spec::{FlatInvocations, LatencyThreshold, Objective, Percentile, Requirements, Stopping};

pub use crate::spec::PlateauSettings;

/// One step as the detector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPoint {
    /// Virtual users, or offered requests per second for an open model.
    pub load: f64,
    pub throughput_rps: f64,
    pub error_rate_percent: f64,
    /// Observed latency at each `[stopping]` threshold's percentile, in the thresholds' order.
    pub threshold_latency_ms: Vec<f64>,
    /// The load generator fell behind its schedule in this step.
    pub generator_saturated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum PlateauRule {
    /// Added load stopped adding throughput.
    ThroughputFlat,
    /// The step after the plateau crossed a latency threshold.
    LatencyThreshold { percentile: Percentile, threshold_ms: f64, observed_ms: f64 },
    /// The step after the plateau had too many errors.
    ErrorRate { error_rate_percent: f64, limit_percent: f64 },
    /// Throughput still grew at the last step: MaxInvocations is a lower bound.
    NotReached,
    /// The load generator fell behind its schedule at `at_step` before the endpoint levelled off: the steps
    /// from there on measure plateau, not the endpoint, and MaxInvocations is a lower bound.
    GeneratorSaturated { at_step: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub step: usize,
    #[serde(flatten)]
    pub rule: PlateauRule,
    /// False when the ramp ended before the following steps could confirm it.
    pub confirmed: bool,
    /// For `phases`: the sliding window (first and one-past-last second) the figures are measured over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<[u64; 2]>,
}

/// Length of the sliding windows `phases` are judged by (DESIGN: "the first sliding 10 s window").
pub const SLIDING_WINDOW_S: u64 = 10;

/// For `phases`, whose load changes every second: the first sliding window of `SLIDING_WINDOW_S` seconds whose
/// throughput gained too little over the window just before it (the flat rule of `detect`), confirmed by the
/// window just after it. Reads only the per-second counts, from `from_s` (after any warm-up) on.
pub fn sliding_window(seconds: &[SecondSummary], from_s: u64, settings: &PlateauSettings) -> Option<StepWindow> {
    let width = SLIDING_WINDOW_S as usize;
    let usable: Vec<&SecondSummary> = seconds.iter().filter(|second| second.second >= from_s).collect();
    let stats = |start: usize| -> Option<(f64, f64)> {
        let window = usable.get(start..start + width)?;
        let load = window.iter().map(|second| second.load).sum::<f64>() / width as f64;
        let throughput = window.iter().map(|second| second.completed as f64).sum::<f64>() / width as f64;
        Some((load, throughput))
    };
    let flat = |before: (f64, f64), after: (f64, f64)| {
        let gain_percent = if before.1 > 0.0 { (after.1 / before.1 - 1.0) * 100.0 } else { f64::INFINITY };
        let load_gain_percent = (after.0 / before.0.max(f64::MIN_POSITIVE) - 1.0) * 100.0;
        gain_percent < settings.min_gain_percent.max(settings.min_load_efficiency * load_gain_percent)
    };
    (width..usable.len()).find_map(|start| {
        let (before, current) = (stats(start - width)?, stats(start)?);
        let confirmed = stats(start + width).is_none_or(|after| flat(current, after));
        (flat(before, current) && confirmed).then(|| StepWindow {
            index: 0,
            start_s: usable[start].second,
            end_s: usable[start].second + SLIDING_WINDOW_S,
            steady_start_s: usable[start].second,
            load: current.0,
        })
    })
}

/// Finds the plateau among complete steps; `None` only when there are none.
pub fn detect(points: &[StepPoint], thresholds: &[LatencyThreshold], settings: &PlateauSettings) -> Option<Plateau> {
    let mut best = 0;
    let mut candidate: Option<usize> = None;
    for (index, point) in points.iter().enumerate() {
        let before = index.saturating_sub(1);
        if point.generator_saturated {
            let step = candidate.unwrap_or(if index == 0 { 0 } else { best });
            return Some(Plateau {
                step,
                rule: PlateauRule::GeneratorSaturated { at_step: index },
                confirmed: false,
                window_s: None,
            });
        }
        if point.error_rate_percent > settings.max_error_rate_percent {
            let rule = PlateauRule::ErrorRate {
                error_rate_percent: point.error_rate_percent,
                limit_percent: settings.max_error_rate_percent,
            };
            return Some(Plateau { step: before, rule, confirmed: true, window_s: None });
        }
        let crossed = thresholds
            .iter()
            .zip(&point.threshold_latency_ms)
            .find(|(threshold, observed)| **observed > threshold.latency_ms);
        if let Some((threshold, observed)) = crossed {
            let rule = PlateauRule::LatencyThreshold {
                percentile: threshold.percentile,
                threshold_ms: threshold.latency_ms,
                observed_ms: *observed,
            };
            return Some(Plateau { step: before, rule, confirmed: true, window_s: None });
        }
        if index == 0 {
            continue;
        }
        let base = &points[best];
        let gain_percent = if base.throughput_rps > 0.0 {
            (point.throughput_rps / base.throughput_rps - 1.0) * 100.0
        } else {
            f64::INFINITY
        };
        let load_gain_percent = (point.load / base.load.max(f64::MIN_POSITIVE) - 1.0) * 100.0;
        let flat = gain_percent < settings.min_gain_percent.max(settings.min_load_efficiency * load_gain_percent);
        match (flat, candidate) {
            (true, None) => candidate = Some(index),
            (true, Some(first)) if index - first >= settings.confirm_steps => {
                return Some(Plateau {
                    step: first,
                    rule: PlateauRule::ThroughputFlat,
                    confirmed: true,
                    window_s: None,
                });
            }
            (true, Some(_)) => {}
            (false, _) => candidate = None,
        }
        if point.throughput_rps > base.throughput_rps {
            best = index;
        }
    }
    if points.is_empty() {
        return None;
    }
    Some(match candidate {
        Some(first) if settings.confirm_steps == 0 => {
            Plateau { step: first, rule: PlateauRule::ThroughputFlat, confirmed: true, window_s: None }
        }
        Some(first) => Plateau { step: first, rule: PlateauRule::ThroughputFlat, confirmed: false, window_s: None },
        None => Plateau { step: best, rule: PlateauRule::NotReached, confirmed: false, window_s: None },
    })
}

fn error_rate_percent(completed: u64, errors: &ErrorCounts) -> f64 {
    let attempts = completed + errors.total();
    if attempts == 0 { 0.0 } else { errors.total() as f64 * 100.0 / attempts as f64 }
}

fn step_point(step: &StepRecord, thresholds: &[LatencyThreshold]) -> StepPoint {
    StepPoint {
        load: step.window.load,
        throughput_rps: step.throughput_rps(),
        error_rate_percent: error_rate_percent(step.steady.completed, &step.steady.errors),
        generator_saturated: step.generator_saturated(),
        threshold_latency_ms: thresholds
            .iter()
            .map(|threshold| measure::percentile_ms(&step.steady.latency_us, threshold.percentile.value()))
            .collect(),
    }
}

fn complete_points(steps: &[StepRecord], thresholds: &[LatencyThreshold]) -> Vec<StepPoint> {
    steps.iter().filter(|step| step.complete).map(|step| step_point(step, thresholds)).collect()
}

/// Runs the detector after every step and ends the ramp when `[stopping]` says so.
pub struct OnlineDetector<'a> {
    pub stopping: &'a Stopping,
    pub settings: PlateauSettings,
}

impl OnlineDetector<'_> {
    pub fn verdict(&self, steps: &[StepRecord]) -> StepVerdict {
        let points = complete_points(steps, &self.stopping.latency_thresholds);
        match detect(&points, &self.stopping.latency_thresholds, &self.settings) {
            Some(Plateau { rule: PlateauRule::LatencyThreshold { percentile, threshold_ms, observed_ms }, .. }) => {
                StepVerdict::Stop(format!(
                    "{percentile} latency {observed_ms:.1} ms crossed the {threshold_ms} ms threshold"
                ))
            }
            Some(Plateau { rule: PlateauRule::ErrorRate { error_rate_percent, .. }, .. }) => {
                StepVerdict::Stop(format!("error rate {error_rate_percent:.1}% passed the limit"))
            }
            Some(Plateau { rule: PlateauRule::GeneratorSaturated { .. }, .. }) => StepVerdict::Stop(
                "the load generator fell behind its schedule; more load would measure plateau, not the endpoint"
                    .to_string(),
            ),
            Some(Plateau { step, rule: PlateauRule::ThroughputFlat, confirmed: true, .. })
                if self.stopping.flat_invocations == FlatInvocations::Stop =>
            {
                StepVerdict::Stop(format!("plateau confirmed at step {}", step + 1))
            }
            _ => StepVerdict::Continue,
        }
    }
}

impl Observer for OnlineDetector<'_> {
    fn on_second(&mut self, _second: &SecondSummary, _tally: &crate::measure::Tally, _step: &StepWindow) {}
    fn on_step(&mut self, steps: &[StepRecord]) -> StepVerdict {
        self.verdict(steps)
    }
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
        invocations_per_min: throughput_rps * 60.0,
        latency: LatencySummary::of(&step.steady.latency_us),
        errors: step.steady.errors,
        error_rate_percent: error_rate_percent(step.steady.completed, &step.steady.errors),
        dropped: step.steady.dropped,
        generator_lag_p99_ms: step.generator_lag_p99_ms(),
        generator_saturated: step.generator_saturated(),
        cpu_percent: step.resources.cpu_percent,
        memory_percent: step.resources.memory_percent,
        generator_cpu_percent: step.resources.generator_cpu_percent,
        histogram: measure::encode_histogram(&step.steady.latency_us),
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
    pub plateau: Option<Plateau>,
    pub metrics: Option<Metrics>,
    pub scalability: Option<ScalabilityFit>,
}

/// The plateau, the metrics at it and the scalability model, from a configuration's measured steps.
pub fn analyze_steps(
    steps: &[StepRecord],
    facts: &ConfigurationFacts,
    stopping: &Stopping,
    requirements: &Requirements,
    settings: &PlateauSettings,
    sliding: Option<&StepRecord>,
) -> Analysis {
    let complete: Vec<&StepRecord> = steps.iter().filter(|step| step.complete).collect();
    let points = complete_points(steps, &stopping.latency_thresholds);
    let Some(mut plateau) = detect(&points, &stopping.latency_thresholds, settings) else {
        return Analysis::default();
    };
    // For phases, a sliding window where throughput levelled off replaces the step, unless a threshold, errors or
    // the load generator ended the search first.
    let sliding = sliding.filter(|_| matches!(plateau.rule, PlateauRule::ThroughputFlat | PlateauRule::NotReached));
    if let Some(window) = sliding {
        let containing = complete.iter().rposition(|step| step.window.start_s <= window.window.start_s).unwrap_or(0);
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
    let step = sliding.unwrap_or(complete[plateau.step]);
    let max_invocations = step.throughput_rps() * 60.0;
    let max_invocations_at_slo = requirements.slo.map(|slo| {
        complete
            .iter()
            .filter(|step| {
                step.steady.completed > 0
                    && measure::percentile_ms(&step.steady.latency_us, slo.percentile.value()) <= slo.latency_ms
            })
            .map(|step| step.throughput_rps() * 60.0)
            .fold(0.0, f64::max)
    });
    let operating_per_min = max_invocations_at_slo.unwrap_or(max_invocations);
    let cost_per_hour_usd = facts.price_per_hour_usd * f64::from(facts.instance_count);
    let cost_per_inference_usd = (operating_per_min > 0.0).then(|| cost_per_hour_usd / (operating_per_min * 60.0));
    let metrics = Metrics {
        max_invocations,
        max_invocations_at_slo,
        model_latency: LatencySummary::of(&step.steady.latency_us),
        cost_per_hour_usd,
        cost_per_inference_usd,
        cpu_utilization_percent: step.resources.cpu_percent,
        memory_utilization_percent: step.resources.memory_percent,
        utilization_source: facts.utilization_source.clone(),
        errors: step.steady.errors,
        error_rate_percent: error_rate_percent(step.steady.completed, &step.steady.errors),
        throughput_spread_percent: spread_percent(&step.completed_per_second),
        load_at_plateau: step.window.load,
    };
    Analysis { plateau: Some(plateau), metrics: Some(metrics), scalability }
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

// ---------------------------------------------------------------------------------------------------------------
// Recommendation.

/// Differences smaller than this (or than the figures' own spread) are shown as ties.
const NEAR_TIE_PERCENT: f64 = 3.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    pub objective: Objective,
    /// The recommended configuration, absent when none meets the requirements.
    pub configuration: Option<String>,
    pub initial_instance_count: Option<u32>,
    /// The recommended run's environment variables (EnvironmentParameters), for command targets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub environment: std::collections::BTreeMap<String, String>,
    pub reason: String,
    pub ranking: Vec<Verdict>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub configuration: String,
    /// 1 for the best; absent for configurations that do not meet the requirements.
    pub rank: Option<usize>,
    pub meets_requirements: bool,
    /// The figure ranked on, in the objective's unit (USD per inference, requests per minute, or ms).
    pub objective_value: Option<f64>,
    /// Within measurement noise of the recommended configuration.
    pub near_tie: bool,
    pub verdict: String,
}

struct Candidate<'a> {
    result: &'a ConfigurationResult,
    metrics: &'a Metrics,
    value: f64,
}

fn objective_value(objective: Objective, metrics: &Metrics, requirements: &Requirements) -> Option<f64> {
    match objective {
        Objective::CostPerInference => metrics.cost_per_inference_usd,
        Objective::Throughput => Some(metrics.max_invocations_at_slo.unwrap_or(metrics.max_invocations)),
        Objective::Latency => {
            let percentile = requirements.slo.map_or(99.0, |slo| slo.percentile.value());
            Some(latency_at(&metrics.model_latency, percentile))
        }
    }
}

/// The summary's figure for a percentile, falling back to p99 for percentiles it does not keep.
fn latency_at(latency: &LatencySummary, percentile: f64) -> f64 {
    match percentile {
        p if p <= 50.0 => latency.p50_ms,
        p if p <= 90.0 => latency.p90_ms,
        p if p <= 95.0 => latency.p95_ms,
        _ => latency.p99_ms,
    }
}

/// Why a configuration does not meet the requirements, or `None` if it does.
fn unmet_requirement(result: &ConfigurationResult, requirements: &Requirements) -> Option<String> {
    if result.status == RunStatus::Failed || result.status == RunStatus::Skipped {
        // The first line: the whole failure, with any log tail, is in the results and the report's details.
        let failure = result.failure.as_deref().and_then(|failure| failure.lines().next());
        return Some(failure.unwrap_or("did not run").to_string());
    }
    let Some(metrics) = &result.metrics else {
        return Some("no complete step was measured".to_string());
    };
    if metrics.max_invocations <= 0.0 {
        return Some("served no successful request".to_string());
    }
    let slo = requirements.slo?;
    if metrics.max_invocations_at_slo.unwrap_or(0.0) > 0.0 {
        return None;
    }
    let lowest = result.steps.iter().filter(|step| step.complete).min_by(|a, b| a.load.total_cmp(&b.load))?;
    let observed = crate::measure::decode_histogram(&lowest.histogram)
        .map(|histogram| measure::percentile_ms(&histogram, slo.percentile.value()))
        .unwrap_or(f64::NAN);
    Some(format!(
        "fails {} ≤ {} ms: {:.1} ms even at the lowest load (step {}), {:.1} ms over",
        slo.percentile,
        slo.latency_ms,
        observed,
        lowest.index + 1,
        observed - slo.latency_ms
    ))
}

pub fn recommend(results: &[ConfigurationResult], requirements: &Requirements) -> Recommendation {
    let objective = requirements.objective;
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut rejected: Vec<Verdict> = Vec::new();
    for result in results {
        let value = result.metrics.as_ref().and_then(|metrics| objective_value(objective, metrics, requirements));
        match (unmet_requirement(result, requirements), &result.metrics, value) {
            (None, Some(metrics), Some(value)) => candidates.push(Candidate { result, metrics, value }),
            (reason, _, _) => rejected.push(Verdict {
                configuration: result.name.clone(),
                rank: None,
                meets_requirements: false,
                objective_value: value,
                near_tie: false,
                verdict: reason.unwrap_or_else(|| "has no figure to rank on".to_string()),
            }),
        }
    }
    let higher_is_better = objective == Objective::Throughput;
    candidates.sort_by(|a, b| if higher_is_better { b.value.total_cmp(&a.value) } else { a.value.total_cmp(&b.value) });

    let Some(best) = candidates.first() else {
        return Recommendation {
            objective,
            configuration: None,
            initial_instance_count: None,
            environment: Default::default(),
            reason: "no configuration meets the requirements".to_string(),
            ranking: rejected,
        };
    };
    let mut ranking: Vec<Verdict> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| {
            let difference_percent = (candidate.value / best.value - 1.0).abs() * 100.0;
            let noise_percent = NEAR_TIE_PERCENT
                .max(candidate.metrics.throughput_spread_percent)
                .max(best.metrics.throughput_spread_percent);
            let near_tie = index > 0 && difference_percent < noise_percent;
            let verdict = if index == 0 {
                "recommended".to_string()
            } else {
                let comparison = describe_difference(objective, candidate.value, best.value);
                if near_tie { format!("near tie: {comparison}, within measurement noise") } else { comparison }
            };
            Verdict {
                configuration: candidate.result.name.clone(),
                rank: Some(index + 1),
                meets_requirements: true,
                objective_value: Some(candidate.value),
                near_tie,
                verdict,
            }
        })
        .collect();
    let ties: Vec<&str> =
        ranking.iter().filter(|verdict| verdict.near_tie).map(|verdict| verdict.configuration.as_str()).collect();
    let mut reason = match objective {
        Objective::CostPerInference => format!(
            "lowest cost per inference (${:.3} per million) among configurations that meet the requirements",
            best.value * 1e6
        ),
        Objective::Throughput => format!(
            "highest throughput ({:.0} invocations per minute) among configurations that meet the requirements",
            best.value
        ),
        Objective::Latency => {
            format!("lowest latency ({:.1} ms) among configurations that meet the requirements", best.value)
        }
    };
    if !ties.is_empty() {
        reason.push_str(&format!("; within measurement noise of {}", ties.join(", ")));
    }
    ranking.extend(rejected);
    Recommendation {
        objective,
        configuration: Some(best.result.name.clone()),
        initial_instance_count: Some(initial_instance_count(best.result, best.metrics, requirements)),
        environment: best.result.environment.clone(),
        reason,
        ranking,
    }
}

fn describe_difference(objective: Objective, value: f64, best: f64) -> String {
    let percent = (value / best - 1.0) * 100.0;
    match objective {
        Objective::CostPerInference => format!("costs {percent:.0}% more per inference"),
        Objective::Throughput => format!("serves {:.0}% fewer invocations", -percent),
        Objective::Latency => format!("{percent:.0}% higher latency"),
    }
}

/// The smallest instance count whose combined throughput (at the SLO, when there is one) carries the expected
/// peak with the headroom asked for; without an expected peak, the count that was measured.
pub fn initial_instance_count(result: &ConfigurationResult, metrics: &Metrics, requirements: &Requirements) -> u32 {
    let Some(peak_rps) = requirements.expected_peak_rps else {
        return result.instance_count;
    };
    let per_instance_rps =
        metrics.max_invocations_at_slo.unwrap_or(metrics.max_invocations) / 60.0 / f64::from(result.instance_count);
    let needed_rps = peak_rps * (1.0 + requirements.headroom_percent / 100.0);
    // A tiny tolerance keeps an exact fit (e.g. 300 / 100) from rounding up to one more instance.
    ((needed_rps / per_instance_rps) - 1e-9).ceil().max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(series: &[(f64, f64)]) -> Vec<StepPoint> {
        series
            .iter()
            .map(|&(load, throughput_rps)| StepPoint {
                load,
                throughput_rps,
                error_rate_percent: 0.0,
                threshold_latency_ms: Vec::new(),
                generator_saturated: false,
            })
            .collect()
    }

    fn settings() -> PlateauSettings {
        PlateauSettings::default()
    }

    #[test]
    fn flat_series_plateaus_at_the_second_step() {
        let plateau = detect(&points(&[(2.0, 200.0), (4.0, 201.0), (6.0, 199.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.rule, plateau.confirmed), (1, PlateauRule::ThroughputFlat, true));
    }

    #[test]
    fn rising_series_never_plateaus() {
        let plateau =
            detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 300.0), (8.0, 400.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.rule, plateau.confirmed), (3, PlateauRule::NotReached, false));
    }

    #[test]
    fn linear_then_saturated_plateaus_at_the_first_flat_step() {
        let series =
            [(2.0, 100.0), (4.0, 200.0), (6.0, 300.0), (8.0, 400.0), (10.0, 402.0), (12.0, 398.0), (14.0, 401.0)];
        let plateau = detect(&points(&series), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (4, true));
    }

    #[test]
    fn noise_at_the_plateau_does_not_hide_it() {
        // +4% and -3% wobble on a saturated server; the load grows by 20% or more per step.
        let series = [(4.0, 200.0), (8.0, 390.0), (12.0, 400.0), (16.0, 416.0), (20.0, 404.0), (24.0, 395.0)];
        let plateau = detect(&points(&series), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (2, true));
    }

    #[test]
    fn a_single_flat_step_is_unconfirmed_until_the_next_one() {
        let plateau = detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 201.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (2, false));
        let recovered =
            detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 201.0), (8.0, 300.0)]), &[], &settings()).unwrap();
        assert_eq!(recovered.rule, PlateauRule::NotReached);
    }

    #[test]
    fn latency_bound_series_plateaus_before_the_threshold_is_crossed() {
        let threshold = LatencyThreshold { percentile: Percentile::new(99.0).unwrap(), latency_ms: 50.0 };
        let mut series = points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 300.0)]);
        for (point, latency) in series.iter_mut().zip([20.0, 40.0, 60.0]) {
            point.threshold_latency_ms = vec![latency];
        }
        let plateau = detect(&series, &[threshold], &settings()).unwrap();
        assert_eq!(plateau.step, 1);
        assert_eq!(
            plateau.rule,
            PlateauRule::LatencyThreshold { percentile: threshold.percentile, threshold_ms: 50.0, observed_ms: 60.0 }
        );
    }

    #[test]
    fn errors_end_the_search() {
        let mut series = points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 290.0)]);
        series[2].error_rate_percent = 5.0;
        let plateau = detect(&series, &[], &settings()).unwrap();
        assert_eq!(plateau.step, 1);
        assert!(matches!(plateau.rule, PlateauRule::ErrorRate { .. }));
    }

    #[test]
    fn phases_plateau_at_the_first_sliding_window_that_stops_growing() {
        // Users grow by one every 2 s; 4 workers of 20 ms saturate at 4 users (200 requests/s).
        let seconds: Vec<SecondSummary> = (0..40)
            .map(|second| {
                let users = 1.0 + (second / 2) as f64;
                SecondSummary {
                    second,
                    load: users,
                    started: 0,
                    completed: (50.0 * users).min(200.0) as u64,
                    dropped: 0,
                    errors: 0,
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                    generator_lag_p99_ms: 0.0,
                    resources: Default::default(),
                }
            })
            .collect();
        let window = sliding_window(&seconds, 0, &settings()).unwrap();
        // Seconds 10-19 serve 200/s against 140/s before: +43% for +167% users is still above a quarter of linear
        // scaling (42%). Seconds 11-20 against 1-10 (155/s): +29% for +143% users is below it: flat.
        assert_eq!((window.start_s, window.end_s), (11, 21));
        let flat_from_start = sliding_window(&seconds[6..], 6, &settings()).unwrap();
        assert_eq!(flat_from_start.start_s, 16, "the window before it must be a full window of the run");
        assert_eq!(sliding_window(&seconds[..15], 0, &settings()), None, "two full windows are needed");
    }

    #[test]
    fn spread_is_the_coefficient_of_variation() {
        assert_eq!(spread_percent(&[100, 100, 100]), 0.0);
        assert!((spread_percent(&[90, 110]) - 14.142).abs() < 0.01);
    }
}
