//! Trials: a configuration run `[job] trials` times, its figures combined. Each figure is the mean over the trials
//! with a Student t interval on n − 1 degrees of freedom, as AIPerf's multi-run mode reports: what varies between
//! runs (the machine drifting, a neighbour, the server's warm state) is in that interval, and a single run's
//! interval cannot see it. Latency is read at one load for every trial, the lowest of their plateau loads, as
//! `compare` does between two runs: never at two different loads.

use serde::{Deserialize, Serialize};

use super::{Metrics, StepResult, TokenFigures, TokenMetrics, latency_at};
use crate::measure::precision::{Interval, LatencyIntervals, t_975};
use crate::measure::{LatencySummary, kept_percentile, new_histogram};
use crate::units;

/// A figure measured once per trial: the mean, its 95% interval, and how much it varied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcrossTrials {
    pub mean: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Coefficient of variation across trials, in percent (0 for one trial).
    pub cv_percent: f64,
    /// Each trial's value, in trial order.
    pub values: Vec<f64>,
}

impl AcrossTrials {
    /// From each trial's value and its own 95% interval, where it has one. The interval's half width is the larger
    /// of the t interval between trials and the trials' own intervals carried to the mean (√Σh²/n): three trials
    /// that happen to agree do not make a figure more precise than its runs were.
    pub fn of(figures: &[(f64, Option<Interval>)]) -> Self {
        let values: Vec<f64> = figures.iter().map(|(value, _)| *value).collect();
        let count = values.len() as f64;
        let mean = values.iter().sum::<f64>() / count.max(1.0);
        let own: Option<Vec<f64>> =
            figures.iter().map(|(_, interval)| interval.map(|interval| (interval.high - interval.low) / 2.0)).collect();
        if values.len() < 2 {
            let interval = figures.first().and_then(|(_, interval)| *interval);
            return Self { mean, interval, cv_percent: 0.0, values };
        }
        let deviation = (values.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / (count - 1.0)).sqrt();
        let between = t_975(count - 1.0) * deviation / count.sqrt();
        let within = own.map_or(0.0, |halves| halves.iter().map(|half| half * half).sum::<f64>().sqrt() / count);
        let half = between.max(within);
        Self {
            mean,
            interval: Some(Interval { low: (mean - half).max(0.0), high: mean + half }),
            cv_percent: if mean > 0.0 { deviation / mean * 100.0 } else { 0.0 },
            values,
        }
    }
}

/// What the trials of one configuration found together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialsSummary {
    /// Trials the job asked for.
    pub asked: u32,
    /// The trials that gave figures, by number (the others failed, were skipped, or completed no step): the
    /// `values` of every figure are theirs, in this order.
    pub measured: Vec<u32>,
    pub max_invocations: AcrossTrials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations_at_slo: Option<AcrossTrials>,
    /// The lowest of the trials' plateau loads: where every trial's latency is read.
    pub matched_load: f64,
    pub p50_ms: AcrossTrials,
    pub p90_ms: AcrossTrials,
    pub p95_ms: AcrossTrials,
    pub p99_ms: AcrossTrials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_inference_usd: Option<AcrossTrials>,
}

impl TrialsSummary {
    /// The latency percentile a requirement names, falling back to p99 for those not kept.
    pub fn latency(&self, percentile: f64) -> &AcrossTrials {
        kept_percentile(percentile, [&self.p50_ms, &self.p90_ms, &self.p95_ms, &self.p99_ms])
    }
}

/// One trial's figures and the steps they came from.
pub struct Trial<'a> {
    /// Its number, from 1.
    pub number: u32,
    pub metrics: &'a Metrics,
    pub steps: &'a [StepResult],
}

/// `Some` of every value, or `None` when a trial has none.
fn all<T>(values: impl IntoIterator<Item = Option<T>>) -> Option<Vec<T>> {
    values.into_iter().collect()
}

fn mean_of_some(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.into_iter().flatten().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// One trial's p50, p90, p95 and p99, each with its interval where it has one.
type Percentiles = [(f64, Option<Interval>); 4];

/// Four percentiles' figures (p50, p90, p95, p99) across trials, and the summary and intervals they make.
fn latency_across(
    per_trial: &[(Percentiles, &LatencySummary)],
) -> ([AcrossTrials; 4], LatencySummary, Option<LatencyIntervals>) {
    let percentiles: [AcrossTrials; 4] = std::array::from_fn(|kept| {
        AcrossTrials::of(&per_trial.iter().map(|(figures, _)| figures[kept]).collect::<Vec<_>>())
    });
    let summaries: Vec<&LatencySummary> = per_trial.iter().map(|(_, summary)| *summary).collect();
    let summary = LatencySummary {
        p50_ms: percentiles[0].mean,
        p90_ms: percentiles[1].mean,
        p95_ms: percentiles[2].mean,
        p99_ms: percentiles[3].mean,
        ..mean_summary(&summaries)
    };
    let intervals = match percentiles.each_ref().map(|percentile| percentile.interval) {
        [Some(p50_ms), Some(p90_ms), Some(p95_ms), Some(p99_ms)] => {
            Some(LatencyIntervals { p50_ms, p90_ms, p95_ms, p99_ms })
        }
        _ => None,
    };
    (percentiles, summary, intervals)
}

/// Summaries of several trials: counts added, figures averaged, the largest maximum.
fn mean_summary(summaries: &[&LatencySummary]) -> LatencySummary {
    let mean = |figure: fn(&LatencySummary) -> f64| {
        summaries.iter().map(|summary| figure(summary)).sum::<f64>() / summaries.len().max(1) as f64
    };
    LatencySummary {
        count: summaries.iter().map(|summary| summary.count).sum(),
        mean_ms: mean(|summary| summary.mean_ms),
        p50_ms: mean(|summary| summary.p50_ms),
        p90_ms: mean(|summary| summary.p90_ms),
        p95_ms: mean(|summary| summary.p95_ms),
        p99_ms: mean(|summary| summary.p99_ms),
        max_ms: summaries.iter().map(|summary| summary.max_ms).fold(0.0, f64::max),
    }
}

/// Trials' token figures at one load: each figure's mean (intervals within one trial do not carry over, so none).
fn mean_tokens(trials: &[&TokenFigures]) -> TokenFigures {
    let mean = |figure: &dyn Fn(&TokenFigures) -> f64| {
        trials.iter().map(|tokens| figure(tokens)).sum::<f64>() / trials.len().max(1) as f64
    };
    let summary = |figure: fn(&TokenFigures) -> Option<&LatencySummary>| {
        all(trials.iter().map(|tokens| figure(tokens))).map(|summaries| mean_summary(&summaries))
    };
    TokenFigures {
        ttft: summary(|tokens| tokens.ttft.as_ref()),
        ttft_intervals: None,
        itl: summary(|tokens| tokens.itl.as_ref()),
        tpot: summary(|tokens| tokens.tpot.as_ref()),
        output_tokens_per_s: mean(&|tokens| tokens.output_tokens_per_s),
        output_tokens_per_s_interval: None,
        input_tokens_per_s: mean(&|tokens| tokens.input_tokens_per_s),
        mean_output_tokens: mean(&|tokens| tokens.mean_output_tokens),
        mean_input_tokens: all(trials.iter().map(|tokens| tokens.mean_input_tokens))
            .map(|means| means.iter().sum::<f64>() / means.len() as f64),
        estimated: trials.iter().any(|tokens| tokens.estimated),
        tokenized: trials.iter().any(|tokens| tokens.tokenized),
        goodput_per_s: mean(&|tokens| tokens.goodput_per_s),
        goodput_interval_per_s: None,
    }
}

/// The trials' token metrics: output tokens per second and cost per million tokens across trials, the plateau's
/// figures averaged.
fn tokens_across(trials: &[&TokenMetrics]) -> TokenMetrics {
    let output = AcrossTrials::of(
        &trials
            .iter()
            .map(|tokens| (tokens.output_tokens_per_s, tokens.output_tokens_per_s_interval))
            .collect::<Vec<_>>(),
    );
    let cost = all(trials.iter().map(|tokens| {
        tokens.cost_per_million_output_tokens_usd.map(|cost| (cost, tokens.cost_per_million_output_tokens_interval_usd))
    }))
    .map(|figures| AcrossTrials::of(&figures));
    let goodput = AcrossTrials::of(
        &trials.iter().map(|tokens| (tokens.max_goodput_per_s, tokens.max_goodput_interval_per_s)).collect::<Vec<_>>(),
    );
    TokenMetrics {
        output_tokens_per_s: output.mean,
        output_tokens_per_s_interval: output.interval,
        cost_per_million_output_tokens_usd: cost.as_ref().map(|cost| cost.mean),
        cost_per_million_output_tokens_interval_usd: cost.and_then(|cost| cost.interval),
        max_goodput_per_s: goodput.mean,
        max_goodput_interval_per_s: goodput.interval,
        load_at_max_goodput: trials.iter().map(|tokens| tokens.load_at_max_goodput).fold(f64::INFINITY, f64::min),
        at_plateau: mean_tokens(&trials.iter().map(|tokens| &tokens.at_plateau).collect::<Vec<_>>()),
    }
}

const KEPT: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

/// The trials' metrics combined, and the summary of how they varied; `None` when no trial has figures.
pub fn combine(trials: &[Trial<'_>], asked: u32) -> Option<(Metrics, TrialsSummary)> {
    let first = trials.first()?.metrics;
    let matched_load = trials.iter().map(|trial| trial.metrics.load_at_plateau).fold(f64::INFINITY, f64::min);
    // Each trial's latency at the matched load; its own plateau's where its steps cannot give it (phases).
    let latency: Vec<(Percentiles, &LatencySummary)> = trials
        .iter()
        .map(|trial| {
            let figures = KEPT.map(|percentile| {
                latency_at(trial.steps, matched_load, percentile).unwrap_or_else(|| {
                    let intervals = trial.metrics.model_latency_intervals.map(|intervals| intervals.at(percentile));
                    (trial.metrics.model_latency.at(percentile), intervals)
                })
            });
            (figures, &trial.metrics.model_latency)
        })
        .collect();
    let ([p50_ms, p90_ms, p95_ms, p99_ms], model_latency, model_latency_intervals) = latency_across(&latency);
    let max_invocations = AcrossTrials::of(
        &trials
            .iter()
            .map(|trial| (trial.metrics.max_invocations, trial.metrics.max_invocations_interval))
            .collect::<Vec<_>>(),
    );
    // A goal met in some trials only is not met: the figure is absent, as it is for one run that never met it.
    let max_invocations_at_slo = all(trials.iter().map(|trial| {
        trial.metrics.max_invocations_at_slo.map(|value| (value, trial.metrics.max_invocations_at_slo_interval))
    }))
    .map(|figures| AcrossTrials::of(&figures));
    let cost_per_inference_usd = all(trials.iter().map(|trial| {
        trial.metrics.cost_per_inference_usd.map(|value| (value, trial.metrics.cost_per_inference_interval_usd))
    }))
    .map(|figures| AcrossTrials::of(&figures));
    let lower_bound = trials.iter().position(|trial| trial.metrics.lower_bound);
    let mut errors = first.errors;
    for trial in &trials[1..] {
        errors.merge(&trial.metrics.errors);
    }
    let metrics = Metrics {
        max_invocations: max_invocations.mean,
        max_invocations_interval: max_invocations.interval,
        lower_bound: lower_bound.is_some(),
        inconclusive: lower_bound.map(|index| {
            let reason = trials[index].metrics.inconclusive.as_deref().unwrap_or("its plateau was not confirmed");
            format!("trial {}: {reason}", index + 1)
        }),
        max_invocations_at_slo: max_invocations_at_slo.as_ref().map(|at_slo| at_slo.mean),
        max_invocations_at_slo_interval: max_invocations_at_slo.as_ref().and_then(|at_slo| at_slo.interval),
        load_at_slo: all(trials.iter().map(|trial| trial.metrics.load_at_slo))
            .map(|loads| loads.into_iter().fold(f64::INFINITY, f64::min)),
        model_latency,
        model_latency_intervals,
        cost_per_hour_usd: first.cost_per_hour_usd,
        cost_per_inference_usd: cost_per_inference_usd.as_ref().map(|cost| cost.mean),
        cost_per_inference_interval_usd: cost_per_inference_usd.as_ref().and_then(|cost| cost.interval),
        cpu_utilization_percent: mean_of_some(trials.iter().map(|trial| trial.metrics.cpu_utilization_percent)),
        memory_utilization_percent: mean_of_some(trials.iter().map(|trial| trial.metrics.memory_utilization_percent)),
        utilization_source: first.utilization_source.clone(),
        errors,
        error_rate_percent: mean_of_some(trials.iter().map(|trial| Some(trial.metrics.error_rate_percent)))
            .unwrap_or(0.0),
        throughput_spread_percent: mean_of_some(
            trials.iter().map(|trial| Some(trial.metrics.throughput_spread_percent)),
        )
        .unwrap_or(0.0),
        load_at_plateau: matched_load,
        tokens: all(trials.iter().map(|trial| trial.metrics.tokens.as_ref())).map(|tokens| tokens_across(&tokens)),
    };
    let summary = TrialsSummary {
        asked,
        measured: trials.iter().map(|trial| trial.number).collect(),
        max_invocations,
        max_invocations_at_slo,
        matched_load,
        p50_ms,
        p90_ms,
        p95_ms,
        p99_ms,
        cost_per_inference_usd,
    };
    Some((metrics, summary))
}

/// The trials' steps pooled step by step (they follow one schedule): each step's figures are the mean over the
/// trials where it was valid, with intervals across them, and its histogram holds all their responses. A step
/// valid in no trial is shown as the first trial measured it.
pub fn pool_steps(trials: &[&[StepResult]]) -> Vec<StepResult> {
    let length = trials.iter().map(|steps| steps.len()).max().unwrap_or(0);
    (0..length)
        .filter_map(|index| {
            let ran: Vec<&StepResult> = trials.iter().filter_map(|steps| steps.get(index)).collect();
            let valid: Vec<&StepResult> =
                ran.iter().copied().filter(|step| step.complete && step.invalid.is_none()).collect();
            match valid.as_slice() {
                [] => ran.first().map(|step| (*step).clone()),
                [only] => Some((*only).clone()),
                _ => Some(pooled_step(&valid)),
            }
        })
        .collect()
}

fn pooled_step(valid: &[&StepResult]) -> StepResult {
    let throughput = AcrossTrials::of(
        &valid.iter().map(|step| (step.throughput_rps, step.throughput_interval_rps)).collect::<Vec<_>>(),
    );
    let degrees = (valid.len() - 1) as f64;
    let latency: Vec<(Percentiles, &LatencySummary)> = valid
        .iter()
        .map(|step| {
            let figures = KEPT.map(|percentile| {
                (step.latency.at(percentile), step.latency_intervals.map(|intervals| intervals.at(percentile)))
            });
            (figures, &step.latency)
        })
        .collect();
    let (_, latency, latency_intervals) = latency_across(&latency);
    let mut histogram = new_histogram();
    let mut errors = valid[0].errors;
    for step in valid {
        histogram.add(&step.histogram).expect("latency histograms share their bounds");
    }
    for step in &valid[1..] {
        errors.merge(&step.errors);
    }
    let mean = |figure: fn(&StepResult) -> Option<f64>| mean_of_some(valid.iter().map(|step| figure(step)));
    StepResult {
        steady_seconds: valid.iter().map(|step| step.steady_seconds).sum(),
        throughput_rps: throughput.mean,
        invocations_per_min: units::per_minute(throughput.mean),
        throughput_interval_rps: throughput.interval,
        throughput_standard_error_rps: throughput
            .interval
            .map(|interval| (interval.high - interval.low) / 2.0 / t_975(degrees)),
        throughput_degrees: degrees,
        converged: valid.iter().all(|step| step.converged),
        latency,
        latency_intervals,
        errors,
        error_rate_percent: mean(|step| Some(step.error_rate_percent)).unwrap_or(0.0),
        dropped: valid.iter().map(|step| step.dropped).sum(),
        generator_lag_p99_ms: valid.iter().map(|step| step.generator_lag_p99_ms).fold(0.0, f64::max),
        cpu_percent: mean(|step| step.cpu_percent),
        memory_percent: mean(|step| step.memory_percent),
        generator_cpu_percent: mean(|step| step.generator_cpu_percent),
        histogram,
        tokens: all(valid.iter().map(|step| step.tokens.as_ref())).map(|tokens| mean_tokens(&tokens)),
        ..valid[0].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_across_trials_is_students_t_on_n_minus_one_degrees() {
        let figures = [(100.0, None), (110.0, None), (90.0, None)];
        let across = AcrossTrials::of(&figures);
        assert_eq!(across.mean, 100.0);
        // s = 10, t(2) = 4.303: half width 4.303 × 10 / √3 = 24.84.
        let interval = across.interval.unwrap();
        assert!((interval.high - 124.84).abs() < 0.01 && (interval.low - 75.16).abs() < 0.01, "{interval:?}");
        assert!((across.cv_percent - 10.0).abs() < 1e-9);
        assert_eq!(across.values, [100.0, 110.0, 90.0]);
    }

    #[test]
    fn trials_that_agree_are_no_more_precise_than_their_own_intervals_allow() {
        let own = Some(Interval { low: 90.0, high: 110.0 });
        let across = AcrossTrials::of(&[(100.0, own), (100.0, own), (100.0, own), (100.0, own)]);
        // Four runs of ±10 each: the mean is known to ±√(4 × 10²) / 4 = ±5, not ±0.
        assert_eq!(across.interval, Some(Interval { low: 95.0, high: 105.0 }));
        assert_eq!(across.cv_percent, 0.0);
        let single = AcrossTrials::of(&[(100.0, own)]);
        assert_eq!(single.interval, own, "one trial keeps its own interval");
    }

    #[test]
    fn pooled_steps_average_the_trials_where_they_were_valid() {
        let step = |throughput_rps: f64, invalid: bool| {
            let mut histogram = new_histogram();
            histogram.record(10_000).unwrap();
            StepResult {
                index: 0,
                load: 4.0,
                start_s: 0,
                end_s: 10,
                steady_seconds: 8,
                complete: true,
                throughput_rps,
                invocations_per_min: units::per_minute(throughput_rps),
                throughput_interval_rps: None,
                throughput_standard_error_rps: None,
                throughput_degrees: 0.0,
                converged: true,
                invalid: invalid.then_some(super::super::Invalid::GeneratorSaturated),
                latency: LatencySummary::of(&histogram),
                latency_intervals: None,
                errors: Default::default(),
                error_rate_percent: 0.0,
                dropped: 0,
                sent: 0,
                generator_lag_p99_ms: 0.0,
                generator_saturated: invalid,
                cpu_percent: Some(50.0),
                memory_percent: None,
                generator_cpu_percent: None,
                histogram,
                tokens: None,
            }
        };
        let (first, second, saturated) = ([step(100.0, false)], [step(120.0, false)], [step(10.0, true)]);
        let pooled = pool_steps(&[&first, &second, &saturated]);
        assert_eq!(pooled.len(), 1);
        assert_eq!(pooled[0].throughput_rps, 110.0, "the saturated trial's step feeds nothing");
        assert_eq!(pooled[0].invocations_per_min, 6600.0);
        assert_eq!(pooled[0].histogram.len(), 2);
        assert_eq!(pooled[0].steady_seconds, 16);
        assert!(pooled[0].invalid.is_none());
        let only_saturated = pool_steps(&[&saturated, &saturated]);
        assert!(only_saturated[0].invalid.is_some(), "a step valid in no trial stays marked");
    }
}
