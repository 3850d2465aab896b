//! The recommendation: configurations that meet the requirements, ranked by the objective, near ties named, and the
//! InitialInstanceCount that carries the expected peak.

use crate::analyze::Metrics;
use crate::measure::{self, LatencySummary};
use crate::results::{ConfigurationResult, Recommendation, RunStatus, Verdict};
use crate::spec::{Objective, Requirements};
use crate::units;

/// Differences smaller than this (or than the figures' own spread) are shown as ties.
const NEAR_TIE_PERCENT: f64 = 3.0;

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
    let Some(slo) = requirements.slo else {
        return over_error_budget(metrics.error_rate_percent, metrics.load_at_plateau, requirements);
    };
    if let Some(at_slo) = metrics.max_invocations_at_slo.filter(|per_min| *per_min > 0.0) {
        // Judged at the highest load that met the goal: that step's errors count.
        let judged = result.steps.iter().find(|step| step.complete && step.invocations_per_min == at_slo);
        return judged.and_then(|step| over_error_budget(step.error_rate_percent, step.load, requirements));
    }
    let lowest = result.steps.iter().filter(|step| step.complete).min_by(|a, b| a.load.total_cmp(&b.load))?;
    let observed = measure::percentile_ms(&lowest.histogram, slo.percentile.value());
    Some(format!(
        "fails {} ≤ {} ms: {:.1} ms even at the lowest load (step {}), {:.1} ms over",
        slo.percentile,
        slo.latency_ms,
        observed,
        lowest.index + 1,
        observed - slo.latency_ms
    ))
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
    let per_instance_rps = units::per_second(metrics.max_invocations_at_slo.unwrap_or(metrics.max_invocations))
        / f64::from(result.instance_count);
    let needed_rps = peak_rps * (1.0 + requirements.headroom_percent / 100.0);
    // A tiny tolerance keeps an exact fit (e.g. 300 / 100) from rounding up to one more instance.
    ((needed_rps / per_instance_rps) - 1e-9).ceil().max(1.0) as u32
}
