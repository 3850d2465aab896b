//! The recommendation: configurations that meet the requirements, ranked by the objective, near ties named, and the
//! InitialInstanceCount that carries the expected peak.

pub mod race;

use crate::analyze::trials::{AcrossTrials, TrialsSummary};
use crate::analyze::{Goal, Metrics};
use crate::measure::precision::{Interval, t_975};
use crate::results::{Confidence, ConfigurationResult, Recommendation, RunStatus, Verdict};
use crate::spec::{Objective, Requirements};
use crate::units;

/// Differences smaller than this (or than the figures' own spread) are shown as ties.
const NEAR_TIE_PERCENT: f64 = 3.0;

struct Candidate<'a> {
    result: &'a ConfigurationResult,
    metrics: &'a Metrics,
    value: f64,
    /// The objective's 95% interval, where the figures have one.
    interval: Option<Interval>,
    /// With trials: the trials measured, by number, and the objective in each.
    trials: Option<(&'a [u32], &'a [f64])>,
}

impl Candidate<'_> {
    /// The figures are lower bounds on capacity: cost per inference is then an upper bound.
    fn inconclusive(&self) -> bool {
        self.metrics.lower_bound
    }

    /// Standard error of the value's logarithm, from its interval (relative precision).
    fn log_error(&self) -> f64 {
        self.interval
            .filter(|interval| interval.low > 0.0 && self.value > 0.0)
            .map_or(0.0, |interval| (interval.high / interval.low).ln() / (2.0 * 1.96))
    }
}

fn objective_value(
    objective: Objective,
    metrics: &Metrics,
    requirements: &Requirements,
) -> Option<(f64, Option<Interval>)> {
    match objective {
        Objective::CostPerInference => {
            metrics.cost_per_inference_usd.map(|value| (value, metrics.cost_per_inference_interval_usd))
        }
        Objective::Throughput => Some(match metrics.max_invocations_at_slo {
            Some(at_slo) => (at_slo, metrics.max_invocations_at_slo_interval),
            None => (metrics.max_invocations, metrics.max_invocations_interval),
        }),
        Objective::Latency => {
            let percentile = requirements.percentile.value();
            let interval = metrics.model_latency_intervals.map(|intervals| intervals.at(percentile));
            Some((metrics.model_latency.at(percentile), interval))
        }
        Objective::CostPerMillionTokens => metrics.tokens.as_ref().and_then(|tokens| {
            let cost = tokens.cost_per_million_output_tokens_usd?;
            Some((cost, tokens.cost_per_million_output_tokens_interval_usd))
        }),
        Objective::Goodput => {
            metrics.tokens.as_ref().map(|tokens| (tokens.max_goodput_per_s, tokens.max_goodput_interval_per_s))
        }
        Objective::Ttft => metrics.tokens.as_ref().and_then(|tokens| {
            let percentile = requirements.percentile.value();
            let interval = tokens.at_plateau.ttft_intervals.map(|intervals| intervals.at(percentile));
            Some((tokens.at_plateau.ttft?.at(percentile), interval))
        }),
    }
}

/// The objective's figure across a configuration's trials, where each trial has one.
fn objective_per_trial<'a>(
    objective: Objective,
    trials: &'a TrialsSummary,
    requirements: &Requirements,
) -> Option<&'a AcrossTrials> {
    match objective {
        Objective::CostPerInference => trials.cost_per_inference_usd.as_ref(),
        Objective::Throughput => Some(trials.max_invocations_at_slo.as_ref().unwrap_or(&trials.max_invocations)),
        Objective::Latency => Some(trials.latency(requirements.percentile.value())),
        // Token figures are combined across trials in the metrics only.
        Objective::CostPerMillionTokens | Objective::Goodput | Objective::Ttft => None,
    }
}

/// Why a configuration does not meet the requirements, or `None` if it does.
fn unmet_requirement(result: &ConfigurationResult, requirements: &Requirements) -> Option<String> {
    if let Some(reason) = &result.eliminated {
        return Some(format!("eliminated: {reason}"));
    }
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
    let goals = Goal::all(requirements);
    if goals.is_empty() {
        return over_error_budget(metrics.error_rate_percent, metrics.load_at_plateau, requirements);
    }
    if metrics.max_invocations_at_slo.is_some_and(|per_min| per_min > 0.0) {
        // Judged at the highest load that met the goals: that step's errors count.
        let judged = result.steps.iter().find(|step| step.complete && Some(step.load) == metrics.load_at_slo);
        return judged.and_then(|step| over_error_budget(step.error_rate_percent, step.load, requirements));
    }
    let lowest = result.steps.iter().filter(|step| step.complete).min_by(|a, b| a.load.total_cmp(&b.load))?;
    let missed: Vec<(Goal, Option<f64>)> =
        goals.iter().filter(|goal| !goal.met(lowest)).map(|goal| (*goal, goal.observed_ms(lowest))).collect();
    let step = lowest.index + 1;
    Some(match missed.as_slice() {
        // Every goal was met there, but not by a step whose figures stand (see the steps' marks).
        [] => format!("meets {} only at steps that are not valid", goals_text(&goals)),
        [(goal, Some(observed))] => format!(
            "fails {goal}: {observed:.1} ms even at the lowest load (step {step}), {:.1} ms over",
            observed - goal.limit_ms()
        ),
        _ => {
            let each: Vec<String> = missed
                .iter()
                .map(|(goal, observed)| match observed {
                    Some(observed) => format!("{goal} ({observed:.1} ms)"),
                    None => format!("{goal} (not measured: no streamed response)"),
                })
                .collect();
            format!("fails {} even at the lowest load (step {step})", each.join(" and "))
        }
    })
}

fn goals_text(goals: &[Goal]) -> String {
    goals.iter().map(Goal::to_string).collect::<Vec<_>>().join(" and ")
}

/// Why a configuration that failed `error_rate_percent` of its requests at `load` cannot be recommended, if so.
fn over_error_budget(error_rate_percent: f64, load: f64, requirements: &Requirements) -> Option<String> {
    (error_rate_percent > requirements.max_error_rate_percent).then(|| {
        format!(
            "fails {error_rate_percent:.1}% of its requests at the load it is judged at ({load}), over the error \
             budget of {}% (requirements.max_error_rate_percent)",
            requirements.max_error_rate_percent
        )
    })
}

pub fn recommend(results: &[ConfigurationResult], requirements: &Requirements) -> Recommendation {
    let objective = requirements.objective;
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut rejected: Vec<Verdict> = Vec::new();
    for result in results {
        let value = result.metrics.as_ref().and_then(|metrics| objective_value(objective, metrics, requirements));
        match (unmet_requirement(result, requirements), &result.metrics, value) {
            (None, Some(metrics), Some((value, interval))) => {
                let trials = result.trials.as_ref().and_then(|trials| {
                    let values = objective_per_trial(objective, trials, requirements)?;
                    Some((trials.measured.as_slice(), values.values.as_slice()))
                });
                candidates.push(Candidate { result, metrics, value, interval, trials })
            }
            (reason, metrics, value) => rejected.push(Verdict {
                configuration: result.name.clone(),
                rank: None,
                meets_requirements: false,
                objective_value: value.map(|(value, _)| value),
                objective_interval: value.and_then(|(_, interval)| interval),
                inconclusive: metrics.as_ref().is_some_and(|metrics| metrics.lower_bound),
                near_tie: false,
                verdict: reason.unwrap_or_else(|| "has no figure to rank on".to_string()),
            }),
        }
    }
    let higher_is_better = objective.higher_is_better();
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    candidates.sort_by(|a, b| if higher_is_better { b.value.total_cmp(&a.value) } else { a.value.total_cmp(&b.value) });
    // An inconclusive configuration's figure is a bound in its favour's opposite direction (at least this much
    // throughput, at most this cost): it ranks above a conclusive one only when that bound already wins. Latency at
    // an unconfirmed plateau bounds nothing, so there it ranks after every conclusive one.
    let best_conclusive =
        candidates.iter().find(|candidate| !candidate.inconclusive()).map(|candidate| candidate.value);
    let bound_wins = |candidate: &Candidate<'_>| {
        !matches!(objective, Objective::Latency | Objective::Ttft)
            && best_conclusive.is_none_or(|best| better(candidate.value, best))
    };
    candidates.sort_by_key(|candidate| candidate.inconclusive() && !bound_wins(candidate));

    let Some(best) = candidates.first() else {
        return Recommendation {
            objective,
            configuration: None,
            initial_instance_count: None,
            environment: Default::default(),
            reason: "no configuration meets the requirements".to_string(),
            confidence: Confidence::OnlyCandidate,
            ranking: rejected,
        };
    };
    let mut ranking: Vec<Verdict> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| {
            let margin = margin(best, candidate, objective).interval;
            // A tie when the difference is within its own interval, or too small to matter.
            let near_tie = index > 0
                && (margin.low <= 0.0 || (candidate.value / best.value - 1.0).abs() * 100.0 < NEAR_TIE_PERCENT);
            let bound = if candidate.inconclusive() { " (a bound: its plateau was not confirmed)" } else { "" };
            let verdict = if index == 0 {
                format!("recommended{bound}")
            } else {
                let comparison =
                    describe_difference(objective, candidate.value, best.value, margin, candidate.inconclusive());
                if near_tie {
                    format!("near tie: {comparison}, within measurement noise{bound}")
                } else {
                    format!("{comparison}{bound}")
                }
            };
            Verdict {
                configuration: candidate.result.name.clone(),
                rank: Some(index + 1),
                meets_requirements: true,
                objective_value: Some(candidate.value),
                objective_interval: candidate.interval,
                inconclusive: candidate.inconclusive(),
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
        Objective::CostPerMillionTokens => format!(
            "lowest cost per million output tokens (${:.3}) among configurations that meet the requirements",
            best.value
        ),
        Objective::Goodput => format!(
            "highest goodput ({:.1} responses/s within every goal) among configurations that meet the requirements",
            best.value
        ),
        Objective::Ttft => {
            format!("lowest time to first token ({:.1} ms) among configurations that meet the requirements", best.value)
        }
    };
    if !ties.is_empty() {
        reason.push_str(&format!("; within measurement noise of {}", ties.join(", ")));
    }
    let runner_up = candidates.get(1);
    let confidence = confidence(best, runner_up, bound_wins(best), objective);
    if let (Some(runner_up), Confidence::Established { margin_percent, margin_half_width_percent }) =
        (runner_up, &confidence)
    {
        reason.push_str(&format!(
            "; beats {} by {margin_percent:.0}% ± {margin_half_width_percent:.0}% in {}",
            runner_up.result.name,
            objective_words(objective)
        ));
    }
    ranking.extend(rejected);
    Recommendation {
        objective,
        configuration: Some(best.result.name.clone()),
        initial_instance_count: Some(initial_instance_count(best.result, best.metrics, requirements)),
        environment: best.result.environment.clone(),
        reason,
        confidence,
        ranking,
    }
}

fn objective_words(objective: Objective) -> &'static str {
    match objective {
        Objective::CostPerInference => "cost per inference",
        Objective::Throughput => "throughput",
        Objective::Latency => "latency",
        Objective::CostPerMillionTokens => "cost per million output tokens",
        Objective::Goodput => "goodput",
        Objective::Ttft => "time to first token",
    }
}

/// How much better `best` is than `other`, in percent of `other`'s figure, with a 95% interval on the log scale.
/// With trials of both, each trial's pair is compared (they ran side by side, so what drifted between trials
/// cancels) and the interval is Student's t over the pairs; otherwise the two figures' intervals are combined as
/// independent.
fn margin(best: &Candidate<'_>, other: &Candidate<'_>, objective: Objective) -> Margin {
    if best.value <= 0.0 || other.value <= 0.0 {
        return Margin { percent: 0.0, interval: Interval { low: 0.0, high: 0.0 } };
    }
    // Positive when best is better: cheaper, faster, or serving more.
    let better_by = |best: f64, other: f64| {
        if objective.higher_is_better() { (best / other).ln() } else { (other / best).ln() }
    };
    let to_percent = |log: f64| (1.0 - (-log).exp()) * 100.0;
    if let Some(pairs) = paired_trials(best, other) {
        let logs: Vec<f64> = pairs.iter().map(|(best, other)| better_by(*best, *other)).collect();
        let count = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / count;
        let deviation = (logs.iter().map(|log| (log - mean).powi(2)).sum::<f64>() / (count - 1.0)).sqrt();
        let half = t_975(count - 1.0) * deviation / count.sqrt();
        let interval = Interval { low: to_percent(mean - half), high: to_percent(mean + half) };
        return Margin { percent: to_percent(mean), interval };
    }
    let signed = better_by(best.value, other.value);
    let half = 1.96 * best.log_error().hypot(other.log_error());
    Margin {
        percent: to_percent(signed),
        interval: Interval { low: to_percent(signed - half), high: to_percent(signed + half) },
    }
}

/// How much better one candidate is than another, in percent of the other's figure: the estimate and its 95%
/// interval (asymmetric: it is symmetric on the log scale).
#[derive(Debug, Clone, Copy)]
struct Margin {
    percent: f64,
    interval: Interval,
}

/// The two candidates' objective in each trial both measured, paired by trial; `None` under two such trials.
fn paired_trials(best: &Candidate<'_>, other: &Candidate<'_>) -> Option<Vec<(f64, f64)>> {
    let (best_trials, other_trials) = (best.trials?, other.trials?);
    let pairs: Vec<(f64, f64)> = best_trials
        .0
        .iter()
        .zip(best_trials.1)
        .filter_map(|(trial, value)| {
            let at = other_trials.0.iter().position(|other| other == trial)?;
            Some((*value, other_trials.1[at]))
        })
        .filter(|(best, other)| *best > 0.0 && *other > 0.0)
        .collect();
    (pairs.len() >= 2).then_some(pairs)
}

/// Whether the recommendation is established: the best candidate's figures are conclusive (or its bound already
/// wins), and its margin over the runner-up excludes zero.
fn confidence(
    best: &Candidate<'_>,
    runner_up: Option<&Candidate<'_>>,
    bound_wins: bool,
    objective: Objective,
) -> Confidence {
    if best.inconclusive() && !bound_wins {
        return Confidence::Inconclusive {
            reason: format!(
                "{}'s plateau was not confirmed, so its {} is only a bound: {}",
                best.result.name,
                objective_words(objective),
                best.metrics.inconclusive.as_deref().unwrap_or("see its steps")
            ),
        };
    }
    let Some(runner_up) = runner_up else {
        return Confidence::OnlyCandidate;
    };
    let Margin { percent, interval: margin } = margin(best, runner_up, objective);
    if margin.low <= 0.0 {
        return Confidence::Inconclusive {
            reason: format!(
                "{} and {} are within each other's intervals ({:.1}% between them, 95% interval {:.1}% to {:.1}%): run \
                 more trials (`trials`), or longer steps (`traffic.precision_percent`), to tell them apart",
                best.result.name, runner_up.result.name, percent, margin.low, margin.high
            ),
        };
    }
    Confidence::Established { margin_percent: percent, margin_half_width_percent: (margin.high - margin.low) / 2.0 }
}

/// How a candidate compares with the best. A `bound`'s figure is one side of the truth (at most this cost, at least
/// this throughput, at least this latency), so its difference is stated as a bound, without an interval.
fn describe_difference(objective: Objective, value: f64, best: f64, margin: Interval, bound: bool) -> String {
    let percent = (value / best - 1.0) * 100.0;
    let plus_minus = (margin.high - margin.low) / 2.0;
    match (objective, bound) {
        (Objective::CostPerInference, false) => format!("costs {percent:.0}% more per inference (± {plus_minus:.0}%)"),
        (Objective::CostPerInference, true) => format!("costs at most {percent:.0}% more per inference"),
        (Objective::Throughput, false) => format!("serves {:.0}% fewer invocations (± {plus_minus:.0}%)", -percent),
        (Objective::Throughput, true) => format!("serves at most {:.0}% fewer invocations", -percent),
        (Objective::Latency, false) => format!("{percent:.0}% higher latency (± {plus_minus:.0}%)"),
        (Objective::Latency, true) => format!("at least {percent:.0}% higher latency"),
        (Objective::CostPerMillionTokens, false) => {
            format!("costs {percent:.0}% more per million output tokens (± {plus_minus:.0}%)")
        }
        (Objective::CostPerMillionTokens, true) => {
            format!("costs at most {percent:.0}% more per million output tokens")
        }
        (Objective::Goodput, false) => format!("{:.0}% less goodput (± {plus_minus:.0}%)", -percent),
        (Objective::Goodput, true) => format!("at most {:.0}% less goodput", -percent),
        (Objective::Ttft, false) => format!("{percent:.0}% longer time to first token (± {plus_minus:.0}%)"),
        (Objective::Ttft, true) => format!("at least {percent:.0}% longer time to first token"),
    }
}

/// The smallest instance count whose combined throughput (at the SLO, when there is one) carries the expected
/// peak with the headroom asked for; without an expected peak, the count that was measured.
pub fn initial_instance_count(result: &ConfigurationResult, metrics: &Metrics, requirements: &Requirements) -> u32 {
    let peak_rps = match (requirements.expected_peak_rps, requirements.expected_peak_output_tokens_per_s) {
        (Some(peak_rps), _) => peak_rps,
        // Tokens are served as responses: the peak in responses at this configuration's tokens per response.
        (None, Some(peak_tokens_per_s)) => {
            let per_response = metrics.tokens.as_ref().map(|tokens| tokens.at_plateau.mean_output_tokens);
            match per_response.filter(|tokens| *tokens > 0.0) {
                Some(tokens) => peak_tokens_per_s / tokens,
                None => return result.instance_count,
            }
        }
        (None, None) => return result.instance_count,
    };
    // The lower end of the capacity's interval: the count must carry the peak even if the capacity is at its low end.
    let capacity_per_min = match metrics.max_invocations_at_slo {
        Some(at_slo) => metrics.max_invocations_at_slo_interval.map_or(at_slo, |interval| interval.low.min(at_slo)),
        None => metrics.max_invocations_interval.map_or(metrics.max_invocations, |interval| interval.low),
    };
    let per_instance_rps = units::per_second(capacity_per_min) / f64::from(result.instance_count);
    let needed_rps = peak_rps * (1.0 + requirements.headroom_percent / 100.0);
    // A tiny tolerance keeps an exact fit (e.g. 300 / 100) from rounding up to one more instance.
    ((needed_rps / per_instance_rps) - 1e-9).ceil().max(1.0) as u32
}
