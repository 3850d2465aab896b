//! Analysis: the figures of every step, computed once from what was measured; where throughput stops growing (the
//! plateau, `plateau`); the IR metrics there; and the Universal Scalability Law fitted to the steps
//! (`scalability`). The recommendation across configurations is `recommend`'s.

pub mod curve;
pub mod goals;
pub mod plateau;
pub mod scalability;
pub mod search;
pub mod tokens;
pub mod trials;

use serde::{Deserialize, Serialize};

use crate::measure::precision::{Interval, LatencyIntervals};
use crate::measure::step::StepRecord;
use crate::measure::{self, ErrorCounts, LatencyHistogram, LatencySummary};
use crate::plan::LoadUnit;
use crate::spec::{PlateauSettings, Requirements, Stopping};
use crate::units;
use curve::pooled;
pub use goals::Goal;
pub use plateau::{OnlineDetector, Plateau, PlateauRule, StepPoint, sliding_window};
use plateau::{complete_points, detect, fitted_curve, flat_part};
use scalability::ScalabilityFit;
pub use tokens::{TokenFigures, TokenMetrics};

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
    /// The throughput's 95% interval (batch means over the steady seconds) and its standard error; absent under two
    /// steady seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_interval_rps: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_standard_error_rps: Option<f64>,
    /// Degrees of freedom of that standard error (batches less one).
    #[serde(default)]
    pub throughput_degrees: f64,
    /// Whether the throughput interval reached `[traffic] precision_percent` (else the step ran to its maximum).
    #[serde(default = "yes")]
    pub converged: bool,
    /// Why no figure is taken from this step; absent for a valid step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Invalid>,
    /// Latency of successful responses, from the step's histogram.
    pub latency: LatencySummary,
    /// The latency percentiles' 95% intervals (block bootstrap over the steady seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_intervals: Option<LatencyIntervals>,
    pub errors: ErrorCounts,
    /// Errors as a percentage of all finished requests.
    pub error_rate_percent: f64,
    /// Open model: arrivals dropped at the in-flight cap (a step with drops is overloaded).
    #[serde(default)]
    pub dropped: u64,
    /// Requests sent in the steady part: the open model's served share is completed over sent, which Poisson
    /// arrivals do not blur.
    #[serde(default)]
    pub sent: u64,
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
    /// Generated responses (language models): token timings and tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenFigures>,
}

fn yes() -> bool {
    true
}

/// Why a step's figures are not reported: it is shown, marked, and feeds no figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalid {
    /// The run ended inside the step.
    Incomplete,
    /// The load generator fell behind its schedule or ran out of CPU: the step measured plateau.
    GeneratorSaturated,
    /// More requests failed than `[requirements] max_error_rate_percent` allows.
    OverErrorBudget { error_rate_percent: f64, limit_percent: f64 },
}

impl Invalid {
    pub fn describe(&self) -> String {
        match self {
            Invalid::Incomplete => "incomplete: the run ended inside this step".to_string(),
            Invalid::GeneratorSaturated => {
                "load generator saturated: this step measured plateau, not the endpoint".to_string()
            }
            Invalid::OverErrorBudget { error_rate_percent, limit_percent } => {
                format!("{error_rate_percent:.1}% errors, over the {limit_percent}% budget")
            }
        }
    }
}

fn validity(step: &StepResult, max_error_rate_percent: f64) -> Option<Invalid> {
    if !step.complete {
        Some(Invalid::Incomplete)
    } else if step.generator_saturated {
        Some(Invalid::GeneratorSaturated)
    } else if step.error_rate_percent > max_error_rate_percent {
        Some(Invalid::OverErrorBudget {
            error_rate_percent: step.error_rate_percent,
            limit_percent: max_error_rate_percent,
        })
    } else {
        None
    }
}

/// The figures SageMaker Inference Recommender reports, at the plateau.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Requests per minute where throughput levelled off: the flat part of the monotone curve fitted to the valid
    /// steps, never below a valid step at a lower load.
    pub max_invocations: f64,
    /// Its 95% interval, per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations_interval: Option<Interval>,
    /// The figures are lower bounds: the ramp ended before a confirmed plateau (see `inconclusive`).
    #[serde(default)]
    pub lower_bound: bool,
    /// Why the figures are lower bounds, and what to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
    /// The highest valid load whose required percentile met `[requirements]`, per minute (on the fitted curve, never
    /// above MaxInvocations); absent without an SLO.
    pub max_invocations_at_slo: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations_at_slo_interval: Option<Interval>,
    /// The load of the step that figure was read at: where the error budget is judged with an SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_at_slo: Option<f64>,
    /// ModelLatency at the plateau step.
    pub model_latency: LatencySummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_latency_intervals: Option<LatencyIntervals>,
    pub cost_per_hour_usd: f64,
    /// CostPerHour / (invocations per hour), on the SLO figure when there is an SLO; absent when nothing met it.
    pub cost_per_inference_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_inference_interval_usd: Option<Interval>,
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
    /// Language models: output tokens per second, cost per million tokens, TTFT and inter-token latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenMetrics>,
}

fn error_rate_percent(completed: u64, errors: &ErrorCounts) -> f64 {
    let attempts = completed + errors.total();
    if attempts == 0 { 0.0 } else { errors.total() as f64 * 100.0 / attempts as f64 }
}

pub fn step_result(step: &StepRecord) -> StepResult {
    let throughput_rps = step.throughput_rps();
    let means = step.throughput_means();
    StepResult {
        index: step.window.index,
        load: step.window.load,
        start_s: step.window.start_s,
        end_s: step.window.end_s,
        steady_seconds: step.steady_seconds(),
        complete: step.complete,
        throughput_rps,
        invocations_per_min: units::per_minute(throughput_rps),
        throughput_interval_rps: means.map(|means| means.interval()),
        throughput_standard_error_rps: means.map(|means| means.standard_error),
        throughput_degrees: means.map_or(0.0, |means| means.degrees),
        converged: step.converged,
        invalid: None,
        latency: LatencySummary::of(&step.steady.latency_us),
        latency_intervals: step.latency_intervals,
        errors: step.steady.errors,
        error_rate_percent: error_rate_percent(step.steady.completed, &step.steady.errors),
        dropped: step.steady.dropped,
        sent: step.steady.started,
        generator_lag_p99_ms: step.generator_lag_p99_ms(),
        generator_saturated: step.generator_saturated(),
        cpu_percent: step.resources.cpu_percent,
        memory_percent: step.resources.memory_percent,
        generator_cpu_percent: step.resources.generator_cpu_percent,
        histogram: step.steady.latency_us.clone(),
        tokens: TokenFigures::of(step),
    }
}

/// A latency percentile at `load` and its interval, read on the valid steps: the step at that load, or interpolated
/// linearly between the steps on either side; absent outside the measured loads.
pub fn latency_at(steps: &[StepResult], load: f64, percentile: f64) -> Option<(f64, Option<Interval>)> {
    figure_at(steps, load, |step| {
        (step.latency.count > 0)
            .then(|| (step.latency.at(percentile), step.latency_intervals.map(|intervals| intervals.at(percentile))))
    })
}

/// A TTFT percentile at `load` and its interval, as `latency_at` reads latency; absent without streamed responses.
pub fn ttft_at(steps: &[StepResult], load: f64, percentile: f64) -> Option<(f64, Option<Interval>)> {
    figure_at(steps, load, |step| {
        let tokens = step.tokens.as_ref()?;
        Some((tokens.ttft?.at(percentile), tokens.ttft_intervals.map(|intervals| intervals.at(percentile))))
    })
}

/// A figure `read` from each valid step that has it, at `load`: the step at that load, or interpolated linearly
/// between the steps on either side.
fn figure_at(
    steps: &[StepResult],
    load: f64,
    read: impl Fn(&StepResult) -> Option<(f64, Option<Interval>)>,
) -> Option<(f64, Option<Interval>)> {
    let valid: Vec<(f64, (f64, Option<Interval>))> = steps
        .iter()
        .filter(|step| step.complete && step.invalid.is_none())
        .filter_map(|step| Some((step.load, read(step)?)))
        .collect();
    if let Some((_, figure)) = valid.iter().find(|(at, _)| (at - load).abs() < 1e-9) {
        return Some(*figure);
    }
    let below = valid.iter().filter(|(at, _)| *at < load).max_by(|a, b| a.0.total_cmp(&b.0))?;
    let above = valid.iter().filter(|(at, _)| *at > load).min_by(|a, b| a.0.total_cmp(&b.0))?;
    let share = (load - below.0) / (above.0 - below.0);
    let between = |low: f64, high: f64| low + (high - low) * share;
    let ((low_value, low_interval), (high_value, high_interval)) = (below.1, above.1);
    let interval = low_interval
        .zip(high_interval)
        .map(|(low, high)| Interval { low: between(low.low, high.low), high: between(low.high, high.high) });
    Some((between(low_value, high_value), interval))
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
    /// Search mode's bisection of the latency goal's boundary: only the figure at the goal reads them.
    pub boundary_steps: Vec<StepResult>,
    pub plateau: Option<Plateau>,
    pub metrics: Option<Metrics>,
    pub scalability: Option<ScalabilityFit>,
}

/// Every step's figures, the plateau, the metrics at it and the scalability model, from a configuration's
/// measured steps (and, for `phases`, the sliding window where throughput levelled off); search mode's boundary
/// steps add to the figure at the latency goal.
pub fn analyze_steps(
    records: &[StepRecord],
    boundary: &[StepRecord],
    facts: &ConfigurationFacts,
    stopping: &Stopping,
    requirements: &Requirements,
    settings: &PlateauSettings,
    sliding: Option<&StepRecord>,
) -> Analysis {
    let judged = |records: &[StepRecord]| -> Vec<StepResult> {
        records
            .iter()
            .map(|record| {
                let step = step_result(record);
                StepResult { invalid: validity(&step, requirements.max_error_rate_percent), ..step }
            })
            .collect()
    };
    let steps = judged(records);
    let boundary_steps = judged(boundary);
    let complete: Vec<(&StepRecord, &StepResult)> =
        records.iter().zip(&steps).filter(|(_, step)| step.complete).collect();
    let thresholds = &stopping.latency_thresholds;
    let points = complete_points(&steps, thresholds);
    let Some(mut plateau) = detect(&points, thresholds, settings) else {
        return Analysis { steps, boundary_steps, ..Analysis::default() };
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
    // The USL models concurrency; an open model's offered rate is not one. Its predicted peak is a reported figure,
    // so only valid steps feed it.
    let valid: Vec<(f64, f64)> = complete
        .iter()
        .filter(|(_, step)| step.invalid.is_none())
        .map(|(_, step)| (step.load, step.throughput_rps))
        .collect();
    let scalability = (facts.load_unit == LoadUnit::Users).then(|| scalability::fit(&valid)).flatten();
    let fitted = fitted_curve(&points, thresholds, settings);
    let window = sliding.map(|record| (record, step_result(record)));
    let (record, step) = match &window {
        Some((record, step)) => (*record, step),
        None => complete[plateau.step],
    };
    let (capacity_rps, capacity_interval) = match &window {
        Some((_, step)) => (step.throughput_rps, step.throughput_interval_rps),
        None => capacity(&points, &fitted, &plateau, settings),
    };
    let max_invocations = units::per_minute(capacity_rps);
    let max_invocations_interval = capacity_interval.map(|interval| interval.scaled(units::per_minute(1.0)));
    let goals = Goal::all(requirements);
    let at_slo = (!goals.is_empty()).then(|| {
        // Usable steps in load order, with their throughput on the fitted curve (measured steps) or their own
        // (boundary steps, which lie between measured ones), never above the capacity.
        let mut usable: Vec<(&StepResult, f64)> = complete
            .iter()
            .zip(&fitted)
            .filter_map(|((_, step), fitted)| Some((*step, (*fitted)?)))
            .chain(
                boundary_steps
                    .iter()
                    .filter(|step| step.complete && step.invalid.is_none())
                    .map(|step| (step, step.throughput_rps)),
            )
            .map(|(step, rps)| (step, rps.min(capacity_rps)))
            .collect();
        usable.sort_by(|(a, _), (b, _)| a.load.total_cmp(&b.load));
        // The figure: the highest load that met every goal.
        let meeting = usable.iter().rposition(|(step, _)| goals.iter().all(|goal| goal.met(step)));
        meeting.map_or((0.0, None, None), |index| {
            let (step, value_rps) = usable[index];
            // Its interval runs from the highest step that met every goal beyond doubt (each percentile's interval
            // within its limit) to the lowest above that missed one beyond doubt: the boundary lies between them.
            let met = usable[..=index]
                .iter()
                .rev()
                .find(|(step, _)| goals.iter().all(|goal| goal.met_beyond_doubt(step)))
                .map_or(step, |(step, _)| *step);
            let missed = usable[index + 1..]
                .iter()
                .find(|(step, _)| goals.iter().any(|goal| goal.missed_beyond_doubt(step)))
                .or(usable.get(index + 1))
                .and_then(|(step, _)| step.throughput_interval_rps);
            let interval = step.throughput_interval_rps.map(|own| Interval {
                low: met.throughput_interval_rps.unwrap_or(own).low.min(value_rps),
                high: missed
                    .unwrap_or(own)
                    .high
                    .max(own.high)
                    .min(capacity_interval.map_or(f64::INFINITY, |capacity| capacity.high))
                    .max(value_rps),
            });
            let interval = interval.map(|interval| interval.scaled(units::per_minute(1.0)));
            (units::per_minute(value_rps), interval, Some(step.load))
        })
    });
    let max_invocations_at_slo = at_slo.map(|(value, _, _)| value);
    let operating_per_min = max_invocations_at_slo.unwrap_or(max_invocations);
    let operating_interval = match at_slo {
        Some((_, interval, _)) => interval,
        None => max_invocations_interval,
    };
    let cost_per_hour_usd = facts.price_per_hour_usd * f64::from(facts.instance_count);
    let cost_per_inference_usd =
        (operating_per_min > 0.0).then(|| cost_per_hour_usd / units::per_hour(operating_per_min));
    let cost_per_inference_interval_usd =
        operating_interval.filter(|interval| interval.low > 0.0).map(|interval| Interval {
            low: cost_per_hour_usd / units::per_hour(interval.high),
            high: cost_per_hour_usd / units::per_hour(interval.low),
        });
    let lower_bound = !plateau.confirmed;
    let tokens = step.tokens.as_ref().map(|figures| {
        let per_second = |interval: Interval| interval.scaled(1.0 / units::per_minute(1.0));
        let valid_steps: Vec<(f64, &TokenFigures)> = complete
            .iter()
            .filter(|(_, step)| step.invalid.is_none())
            .filter_map(|(_, step)| Some((step.load, step.tokens.as_ref()?)))
            .collect();
        TokenMetrics::at(
            figures,
            &valid_steps,
            (capacity_rps, capacity_interval),
            (operating_per_min / units::per_minute(1.0), operating_interval.map(per_second)),
            cost_per_hour_usd,
        )
    });
    let metrics = Metrics {
        max_invocations,
        max_invocations_interval,
        lower_bound,
        inconclusive: lower_bound.then(|| inconclusive_reason(&plateau, &points, facts.load_unit)),
        max_invocations_at_slo,
        max_invocations_at_slo_interval: at_slo.and_then(|(_, interval, _)| interval),
        load_at_slo: at_slo.and_then(|(_, _, load)| load),
        model_latency: step.latency,
        model_latency_intervals: step.latency_intervals,
        cost_per_hour_usd,
        cost_per_inference_usd,
        cost_per_inference_interval_usd,
        cpu_utilization_percent: step.cpu_percent,
        memory_utilization_percent: step.memory_percent,
        utilization_source: facts.utilization_source.clone(),
        errors: step.errors,
        error_rate_percent: step.error_rate_percent,
        throughput_spread_percent: spread_percent(&record.completed_per_second),
        load_at_plateau: step.load,
        tokens,
    };
    Analysis { plateau: Some(plateau), metrics: Some(metrics), scalability, steps, boundary_steps }
}

/// The capacity and its interval, in requests per second: the flat part of the fitted curve pooled by precision,
/// and never below a valid step at a lower load (a server that served that much can serve it: noise on a saturated
/// server only ever takes throughput away). With no valid step at all, the best saturated step, as a lower bound.
fn capacity(
    points: &[StepPoint],
    fitted: &[Option<f64>],
    plateau: &Plateau,
    settings: &PlateauSettings,
) -> (f64, Option<Interval>) {
    let interval_of = |index: usize| -> Option<Interval> {
        let point = &points[index];
        (point.degrees > 0.0).then(|| {
            let half = crate::measure::precision::t_975(point.degrees) * point.standard_error_rps;
            Interval { low: (point.throughput_rps - half).max(0.0), high: point.throughput_rps + half }
        })
    };
    if fitted[plateau.step].is_none() {
        let best = (0..points.len()).max_by(|a, b| points[*a].throughput_rps.total_cmp(&points[*b].throughput_rps));
        return best.map_or((0.0, None), |index| (points[index].throughput_rps, interval_of(index)));
    }
    let part = match plateau.rule {
        PlateauRule::ThroughputFlat => flat_part(points, fitted, plateau.step, settings),
        _ => vec![plateau.step],
    };
    let pooled_points: Vec<_> =
        part.iter().filter(|index| points[**index].degrees > 0.0).map(|index| points[*index].curve_point()).collect();
    let (mean, interval) = match pooled(&pooled_points) {
        Some((mean, interval)) => (mean, Some(interval)),
        None => (points[plateau.step].throughput_rps, None),
    };
    let floor = (0..plateau.step)
        .filter(|index| fitted[*index].is_some())
        .max_by(|a, b| points[*a].throughput_rps.total_cmp(&points[*b].throughput_rps))
        .filter(|index| points[*index].throughput_rps > mean);
    match floor {
        Some(index) => (points[index].throughput_rps, interval_of(index)),
        None => (mean, interval),
    }
}

/// Why a configuration's figures are only lower bounds, and what would make them conclusive.
fn inconclusive_reason(plateau: &Plateau, points: &[StepPoint], load_unit: LoadUnit) -> String {
    let last_load = points.last().map_or(0.0, |point| point.load);
    let unit = load_unit.label();
    match plateau.rule {
        PlateauRule::GeneratorSaturated { at_step } => format!(
            "the load generator fell behind from step {} on, before the endpoint levelled off: run with fewer \
             processes on this machine, give a command target its own `cpus`, or spread the load over several \
             machines",
            at_step + 1
        ),
        PlateauRule::NotReached => format!(
            "throughput still grew at the last step ({last_load} {unit}): add steps (or larger ones) so the ramp \
             goes past the plateau"
        ),
        _ => format!(
            "throughput levelled off at the last step ({last_load} {unit}) and no further step confirmed it: add a \
             step, or lengthen the steps (`traffic.max_step_duration`) so each is precise enough to tell"
        ),
    }
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
    use crate::measure::Tally;
    use crate::measure::step::new_step_for;
    use crate::plan::{StepRole, StepWindow};
    use crate::spec::{FlatInvocations, LatencyThreshold, Objective, Percentile};
    use proptest::prelude::*;

    /// A step of `counts.len()` steady seconds with those successes, each second's responses at `latency_us`.
    fn record(index: usize, load: f64, counts: &[u64], latency_us: u64, saturated: bool) -> StepRecord {
        let length = counts.len() as u64 + 1;
        let start_s = index as u64 * length;
        let window = StepWindow::new(index, start_s, length, load, StepRole::Measured);
        let mut step = new_step_for(window);
        for count in counts {
            let mut second = Tally { started: *count, completed: *count, ..Tally::default() };
            second.latency_us.record_n(latency_us, *count).unwrap();
            if saturated {
                second.generator_lag_us.record(20_000).unwrap();
            }
            step.add_second(&second);
        }
        step.complete = true;
        step.finish();
        step
    }

    /// A server of `capacity` per second ramped by one user a step, with dips (a step that lost a share of its
    /// throughput), stalls (seconds of nothing) and steps the load generator could not keep up with.
    fn series() -> impl Strategy<Value = Vec<StepRecord>> {
        let step = (0.0f64..1.0, 0u64..3, any::<bool>(), proptest::collection::vec(0.9f64..1.1, 4..8));
        (50u64..500, 2usize..8, proptest::collection::vec(step, 2..9)).prop_map(|(capacity, knee, steps)| {
            steps
                .into_iter()
                .enumerate()
                .map(|(index, (dip, stalls, saturated, noise))| {
                    let users = (index + 1) as f64;
                    let level = capacity as f64 * (users / knee as f64).min(1.0);
                    let level = if dip < 0.2 { level * dip * 4.0 } else { level };
                    let counts: Vec<u64> = noise
                        .iter()
                        .enumerate()
                        .map(|(second, factor)| if (second as u64) < stalls { 0 } else { (level * factor) as u64 })
                        .collect();
                    let latency_us = 10_000 + 5_000 * (users as u64).saturating_sub(knee as u64);
                    record(index, users, &counts, latency_us, saturated && dip > 0.5)
                })
                .collect()
        })
    }

    /// The analysis of one configuration at $1/hour, ramped by users, with a latency goal or none, never stopped early.
    fn analyzed(records: &[StepRecord], slo: Option<LatencyThreshold>) -> Analysis {
        let facts = ConfigurationFacts {
            load_unit: LoadUnit::Users,
            instance_count: 1,
            price_per_hour_usd: 1.0,
            utilization_source: None,
        };
        let stopping = Stopping {
            max_invocations: None,
            latency_thresholds: Vec::new(),
            flat_invocations: FlatInvocations::Continue,
        };
        let requirements = Requirements {
            slo,
            objective: Objective::CostPerInference,
            expected_peak_rps: None,
            expected_peak_output_tokens_per_s: None,
            headroom_percent: 0.0,
            max_error_rate_percent: 1.0,
            ttft_ms: None,
            tpot_ms: None,
            percentile: Percentile::p99(),
        };
        analyze_steps(records, &[], &facts, &stopping, &requirements, &PlateauSettings::default(), None)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn max_invocations_is_never_below_a_valid_lower_load_step_and_at_goal_never_above_it(records in series()) {
            let goal = LatencyThreshold { percentile: Percentile::new(99.0).unwrap(), latency_ms: 22.0 };
            let analysis = analyzed(&records, Some(goal));
            let metrics = analysis.metrics.expect("complete steps give figures");
            let earlier_valid =
                analysis.steps.iter().filter(|step| step.invalid.is_none() && step.load < metrics.load_at_plateau);
            for step in earlier_valid {
                prop_assert!(
                    metrics.max_invocations >= step.invocations_per_min - 1e-6,
                    "MaxInvocations {} below step {} ({} at {} users)",
                    metrics.max_invocations, step.index + 1, step.invocations_per_min, step.load
                );
            }
            if let Some(at_goal) = metrics.max_invocations_at_slo {
                prop_assert!(
                    at_goal <= metrics.max_invocations + 1e-6,
                    "at goal {at_goal} above MaxInvocations {}", metrics.max_invocations
                );
            }
            let plateau = analysis.plateau.expect("a plateau or a bound");
            let plateau_step = analysis.steps.iter().filter(|step| step.complete).nth(plateau.step).unwrap();
            prop_assert!(
                plateau_step.invalid.is_none() || analysis.steps.iter().all(|step| step.invalid.is_some()),
                "the plateau step {} is invalid ({:?}) though valid steps exist",
                plateau_step.index + 1, plateau_step.invalid
            );
        }
    }

    #[test]
    fn the_scalability_fit_leaves_invalid_steps_out() {
        // A server of 200/s whose last two steps saturated the load generator and measured half of that.
        let records: Vec<StepRecord> = (0..6)
            .map(|index| {
                let users = (index + 1) as f64 * 2.0;
                let level = (100.0 * users).min(200.0) as u64;
                let saturated = index >= 4;
                let count = if saturated { level / 2 } else { level };
                record(index, users, &[count, count, count, count], 10_000, saturated)
            })
            .collect();
        let analysis = analyzed(&records, None);
        let fit = analysis.scalability.expect("four valid steps fit");
        // Fitted with the saturated steps, the model would predict a peak and a fall to 100/s by 12 users.
        assert!(fit.throughput_rps(12.0) > 180.0, "{fit:?}");
    }

    #[test]
    fn spread_is_the_coefficient_of_variation() {
        assert_eq!(spread_percent(&[100, 100, 100]), 0.0);
        assert!((spread_percent(&[90, 110]) - 14.142).abs() < 0.01);
    }
}
