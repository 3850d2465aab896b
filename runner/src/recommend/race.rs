//! Racing: while configurations run, a candidate that can no longer beat the leader stops early.
//!
//! The leader is the configuration the recommendation would pick among those measured so far, and its *worst* is
//! the unfavourable end of its objective's interval (for a plateau that was not confirmed, its figure is already a
//! bound on the unfavourable side). A running candidate's *best* is the favourable end of what its steps so far
//! allow, and exists only once they bound it:
//! - cost per inference and throughput need a bounded capacity: a confirmed plateau (the high end of the capacity
//!   interval, or of the figure at the goal), or, with goals (latency, TTFT: those with an interval), a step that
//!   missed one beyond doubt (the low end of its percentile's interval above the goal): the load that meets the
//!   goals is below it, where throughput is at most the highest interval reached so far;
//! - latency is at best the lowest low end any step's interval reached, since latency does not fall as load grows.
//!
//! A candidate whose best cannot beat the leader's worst is eliminated, as is one that misses a goal beyond doubt
//! at its lowest load, which no load mends. Both rest on what the plateau detector already assumes:
//! throughput that stopped growing does not grow again, and more load never lowers latency.

use serde::{Deserialize, Serialize};

use crate::analyze::goals::Goal;
use crate::analyze::{Metrics, StepResult};
use crate::measure::precision::{Interval, MIN_SECONDS_FOR_PRECISION};
use crate::results::ConfigurationResult;
use crate::spec::{Objective, Requirements};
use crate::units;

use super::recommend;

/// The configuration to beat, and the worst its objective may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leader {
    pub name: String,
    pub objective: Objective,
    /// The unfavourable end of its objective's interval: highest cost or latency, lowest throughput.
    pub worst: f64,
}

/// The leader among configurations measured in full (eliminated ones are not), if one meets the requirements and
/// its figure bounds anything (latency at an unconfirmed plateau does not).
pub fn leader(results: &[ConfigurationResult], requirements: &Requirements) -> Option<Leader> {
    let measured: Vec<ConfigurationResult> =
        results.iter().filter(|result| result.eliminated.is_none()).cloned().collect();
    let recommendation = recommend(&measured, requirements);
    let best = recommendation.ranking.first().filter(|verdict| verdict.rank == Some(1))?;
    let objective = requirements.objective;
    // Racing bounds the IR objectives only: a language model's figures are not bounded from a probe.
    if (best.inconclusive && objective == Objective::Latency) || objective.needs_tokens() {
        return None;
    }
    let worst = match (objective, best.objective_interval) {
        (Objective::Throughput, Some(interval)) => interval.low,
        (_, Some(interval)) => interval.high,
        (_, None) => best.objective_value?,
    };
    Some(Leader { name: best.configuration.clone(), objective, worst })
}

/// The objective in words, with its unit, for elimination messages.
fn say(objective: Objective, value: f64) -> String {
    match objective {
        Objective::CostPerInference => format!("${:.3} per million inferences", value * 1e6),
        Objective::Throughput => format!("{value:.0} invocations/min"),
        Objective::Latency | Objective::Ttft => format!("{value:.1} ms"),
        Objective::CostPerMillionTokens => format!("${value:.3} per million output tokens"),
        Objective::Goodput => format!("{value:.1} good responses/s"),
    }
}

/// Whether a step ran long enough for its intervals to be relied on: a probe step's two seconds show where the
/// knee is, but a bootstrap over two seconds cannot say a goal is missed beyond doubt.
fn long_enough(step: &StepResult) -> bool {
    step.steady_seconds >= MIN_SECONDS_FOR_PRECISION as u64
}

/// A step's percentile latency interval, when it has one to rely on.
fn latency_interval(step: &StepResult, percentile: f64) -> Option<Interval> {
    Some(step.latency_intervals.filter(|_| long_enough(step))?.at(percentile))
}

/// The interval of a step's figure for `goal`, when it has one to rely on (TPOT has none).
fn goal_interval(step: &StepResult, goal: Goal) -> Option<Interval> {
    goal.interval(step).filter(|_| long_enough(step))
}

/// Steps a figure may come from, in load order.
fn valid(steps: &[StepResult]) -> Vec<&StepResult> {
    let mut valid: Vec<&StepResult> =
        steps.iter().filter(|step| step.complete && step.invalid.is_none() && step.latency.count > 0).collect();
    valid.sort_by(|a, b| a.load.total_cmp(&b.load));
    valid
}

/// The most throughput, per minute, the candidate can reach where it counts (at the goal, when there is one),
/// once its steps bound it.
fn capacity_bound_per_min(steps: &[StepResult], metrics: &Metrics, goals: &[Goal]) -> Option<f64> {
    let reached_per_min = |steps: &[&StepResult]| {
        steps
            .iter()
            .map(|step| step.throughput_interval_rps.map_or(step.throughput_rps, |interval| interval.high))
            .fold(0.0, f64::max)
            * units::per_minute(1.0)
    };
    let valid = valid(steps);
    let beyond_goal = valid.iter().position(|step| {
        goals.iter().any(|goal| goal_interval(step, *goal).is_some_and(|interval| interval.low > goal.limit_ms()))
    });
    let at_goal = beyond_goal.map(|index| reached_per_min(&valid[..=index]));
    let has_goals = !goals.is_empty();
    let plateau = (!metrics.lower_bound).then(|| {
        let interval =
            if has_goals { metrics.max_invocations_at_slo_interval } else { metrics.max_invocations_interval };
        let value = metrics.max_invocations_at_slo.filter(|_| has_goals).unwrap_or(metrics.max_invocations);
        interval.map_or(value, |interval| interval.high.max(value))
    });
    match (at_goal, plateau) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (bound, None) | (None, bound) => bound,
    }
}

/// A set of steps analysed together: a ramp's measured steps, or search mode's probe, which racing may also rely on
/// (its plateau is confirmed by the same detector).
pub struct Evidence<'a> {
    pub steps: &'a [StepResult],
    pub metrics: &'a Metrics,
}

/// Every valid step of the evidence, in load order.
fn valid_in<'a>(evidence: &'a [Evidence<'a>]) -> Vec<&'a StepResult> {
    let mut valid: Vec<&StepResult> = evidence.iter().flat_map(|evidence| valid(evidence.steps)).collect();
    valid.sort_by(|a, b| a.load.total_cmp(&b.load));
    valid
}

/// The favourable end of the objective the candidate's steps so far allow, once they bound it (infinite cost when
/// nothing it serves meets the requirements).
pub fn best_possible(evidence: &[Evidence<'_>], requirements: &Requirements) -> Option<f64> {
    // The most either set of steps allows: each bound holds on its own, and the larger is the safer.
    let goals = Goal::all(requirements);
    let capacity = || {
        evidence
            .iter()
            .filter_map(|evidence| capacity_bound_per_min(evidence.steps, evidence.metrics, &goals))
            .reduce(f64::max)
    };
    match requirements.objective {
        Objective::Latency => {
            let percentile = requirements.percentile.value();
            valid_in(evidence)
                .iter()
                .filter_map(|step| latency_interval(step, percentile))
                .map(|interval| interval.low)
                .reduce(f64::min)
        }
        Objective::Throughput => capacity(),
        Objective::CostPerMillionTokens | Objective::Goodput | Objective::Ttft => None,
        Objective::CostPerInference => {
            let capacity = capacity()?;
            let cost_per_hour_usd = evidence.first()?.metrics.cost_per_hour_usd;
            Some(if capacity > 0.0 { cost_per_hour_usd / units::per_hour(capacity) } else { f64::INFINITY })
        }
    }
}

/// Why a running candidate cannot win, from its steps so far and their analysis; `None` while it still can.
pub fn cannot_win(evidence: &[Evidence<'_>], requirements: &Requirements, leader: Option<&Leader>) -> Option<String> {
    let valid = valid_in(evidence);
    // A goal missed beyond doubt by a step at the lowest load any step ran.
    let lowest_load = valid.first().map(|step| step.load);
    let missed = Goal::all(requirements).into_iter().find_map(|goal| {
        let interval =
            valid.iter().filter(|step| Some(step.load) == lowest_load).find_map(|step| goal_interval(step, goal))?;
        (interval.low > goal.limit_ms()).then_some((goal, interval))
    });
    if let (Some((goal, interval)), Some(load)) = (missed, lowest_load) {
        return Some(format!(
            "misses {goal} even at its lowest load ({load}): {:.1} to {:.1} ms (95% interval)",
            interval.low, interval.high
        ));
    }
    let leader = leader?;
    let objective = requirements.objective;
    let best = best_possible(evidence, requirements)?;
    if best.is_infinite() {
        return Some("serves nothing that meets the requirements".to_string());
    }
    let beats = if objective.higher_is_better() { best > leader.worst } else { best < leader.worst };
    (!beats).then(|| {
        format!(
            "cannot beat {}: {} at best, against {} at worst",
            leader.name,
            say(objective, best),
            say(objective, leader.worst)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{self, Analysis, ConfigurationFacts};
    use crate::measure::step::{StepRecord, new_step_for};
    use crate::measure::{Tally, TokenCount, TokenTally, Tokens};
    use crate::plan::{LoadUnit, StepRole, StepWindow};
    use crate::spec::{LatencyThreshold, Percentile, PlateauSettings, Stopping};

    /// Steps of five steady seconds at each (users, requests/s, latency ms), each response's first token at half
    /// its latency, analysed as a ramp priced `price`.
    fn analysed(steps: &[(f64, u64, f64)], price: f64, requirements: &Requirements) -> Analysis {
        let records: Vec<StepRecord> = steps
            .iter()
            .enumerate()
            .map(|(index, &(load, rps, latency_ms))| {
                let mut record = new_step_for(StepWindow::new(index, index as u64 * 6, 6, load, StepRole::Measured));
                let latency_us = (latency_ms * 1000.0) as u64;
                let mut tokens = TokenTally::default();
                let generated =
                    Tokens { first_token_us: Some(latency_us / 2), output: 8, input: None, counted: TokenCount::Usage };
                for _ in 0..rps {
                    tokens.record(latency_us, generated, &[], None);
                }
                for _ in 0..5 {
                    let mut second = Tally {
                        started: rps,
                        completed: rps,
                        tokens: Some(Box::new(tokens.clone())),
                        ..Tally::default()
                    };
                    second.latency_us.record_n(latency_us, rps).unwrap();
                    record.add_second(&second);
                }
                record.complete = true;
                record.finish();
                record
            })
            .collect();
        let facts = ConfigurationFacts {
            load_unit: LoadUnit::Users,
            instance_count: 1,
            price_per_hour_usd: price,
            utilization_source: None,
        };
        analyze::analyze_steps(
            &records,
            &[],
            &facts,
            &Stopping::default(),
            requirements,
            &PlateauSettings::default(),
            None,
        )
    }

    fn requirements(objective: Objective, goal_ms: Option<f64>) -> Requirements {
        Requirements {
            slo: goal_ms.map(|latency_ms| LatencyThreshold { percentile: Percentile::new(99.0).unwrap(), latency_ms }),
            objective,
            expected_peak_rps: None,
            expected_peak_output_tokens_per_s: None,
            headroom_percent: 0.0,
            max_error_rate_percent: 1.0,
            ttft_ms: None,
            tpot_ms: None,
            percentile: Percentile::p99(),
        }
    }

    fn judge(analysis: &Analysis, requirements: &Requirements, leader: Option<&Leader>) -> Option<String> {
        let evidence = Evidence { steps: &analysis.steps, metrics: analysis.metrics.as_ref().unwrap() };
        cannot_win(&[evidence], requirements, leader)
    }

    #[test]
    fn a_confirmed_plateau_that_costs_more_than_the_leader_at_worst_is_eliminated() {
        let requirements = requirements(Objective::CostPerInference, None);
        // $0.10 an hour at 100/s is $0.278 per million (the high end of its capacity, 100.3/s, gives $0.277); the
        // leader costs at most $0.21.
        let leader = Leader { name: "medium".into(), objective: Objective::CostPerInference, worst: 0.21e-6 };
        let flat =
            analysed(&[(1.0, 50, 20.0), (2.0, 100, 20.0), (3.0, 100, 30.0), (4.0, 100, 40.0)], 0.10, &requirements);
        let reason = judge(&flat, &requirements, Some(&leader)).expect("eliminated");
        assert_eq!(
            reason,
            "cannot beat medium: $0.277 per million inferences at best, against $0.210 per million inferences at worst"
        );
        // Cheaper than the leader's worst: it may still win.
        assert_eq!(
            judge(
                &analysed(
                    &[(1.0, 50, 20.0), (2.0, 100, 20.0), (3.0, 100, 30.0), (4.0, 100, 40.0)],
                    0.05,
                    &requirements
                ),
                &requirements,
                Some(&leader)
            ),
            None
        );
        // Still climbing: nothing bounds its capacity, so it is never eliminated.
        let rising = analysed(&[(1.0, 50, 20.0), (2.0, 100, 20.0)], 0.10, &requirements);
        assert_eq!(judge(&rising, &requirements, Some(&leader)), None);
    }

    #[test]
    fn a_goal_missed_beyond_doubt_bounds_the_capacity_at_the_goal_and_at_the_lowest_load_eliminates_alone() {
        // The latency goal, then the same bound on TTFT (half the latency in these steps).
        let latency = requirements(Objective::CostPerInference, Some(60.0));
        let ttft = Requirements { slo: None, ttft_ms: Some(30.0), ..latency.clone() };
        for (requirements, missed) in [
            (latency, "misses p99 ≤ 60 ms even at its lowest load (1): 80.1 to 80.1 ms (95% interval)"),
            (ttft, "misses p99 TTFT ≤ 30 ms even at its lowest load (1): 40.0 to 40.0 ms (95% interval)"),
        ] {
            let leader = Leader { name: "medium".into(), objective: Objective::CostPerInference, worst: 0.21e-6 };
            // Still climbing, but 120 ms at 4 users: the load that meets the goal is below 4 users, where
            // throughput is at most the 200/s reached there ($0.139 per million at $0.10), which can still win; at
            // $0.20 ($0.278) it cannot.
            let steps = [(1.0, 50, 20.0), (2.0, 100, 40.0), (3.0, 150, 55.0), (4.0, 200, 120.0)];
            assert_eq!(judge(&analysed(&steps, 0.10, &requirements), &requirements, Some(&leader)), None);
            let reason =
                judge(&analysed(&steps, 0.20, &requirements), &requirements, Some(&leader)).expect("eliminated");
            assert!(reason.starts_with("cannot beat medium: $0.278 per million"), "{reason}");
            // 80 ms at its lowest load: no load meets the goal, leader or not.
            let slow = analysed(&[(1.0, 12, 80.0)], 0.005, &requirements);
            assert_eq!(judge(&slow, &requirements, None).as_deref(), Some(missed));
        }
    }

    #[test]
    fn latency_is_bounded_by_the_lowest_interval_any_step_reached() {
        let requirements = requirements(Objective::Latency, None);
        let leader = Leader { name: "fast".into(), objective: Objective::Latency, worst: 15.0 };
        let slow = analysed(&[(1.0, 50, 20.0)], 1.0, &requirements);
        assert_eq!(
            judge(&slow, &requirements, Some(&leader)).as_deref(),
            Some("cannot beat fast: 20.0 ms at best, against 15.0 ms at worst")
        );
        let quick = analysed(&[(1.0, 100, 10.0)], 1.0, &requirements);
        assert_eq!(judge(&quick, &requirements, Some(&leader)), None);
    }
}
