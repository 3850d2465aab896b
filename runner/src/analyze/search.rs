//! Search mode (`[traffic.search]`): which step runs next, decided when the step before it ends.
//!
//! A probe doubles the load in short steps until throughput levels off (closed model: a plateau the detector
//! confirms on the probe's steps; open model: a rate the server did not serve), or a step is not usable (too many
//! errors, a `[stopping]` latency threshold crossed, the load generator behind). That brackets the capacity: the
//! knee lies between the last probe step before the plateau and its first. Little's law places it inside
//! the bracket (closed model: the best throughput times the latency at the lowest load, think time included; open
//! model: the best throughput). Measured steps start at the knee and climb by a quarter at a time, so the steps
//! are densest where throughput bends, until the plateau detector confirms a plateau or a threshold ends the
//! ramp. The probe's steps are short and imprecise, so the bracket is only a guess: when measured steps still
//! scale almost linearly, it was wrong, and they double again (a re-probe) until throughput bends. Only measured
//! steps feed the figures; the probe is kept in the results to show how the steps were placed.
//!
//! With the goals of `[requirements]` (latency, and for language models TTFT and TPOT, at the percentile) missed
//! below the plateau, the search then bisects the load between the highest step that met every goal and the
//! lowest above that missed one, to within 2.5% (one user), in boundary steps that feed only the figure at the
//! goal (AIPerf's highest concurrency under an SLA is the anchor).

use serde::{Deserialize, Serialize};

use crate::drive::{NextStep, StepVerdict};
use crate::measure::step::StepRecord;
use crate::plan::StepRole;
use crate::spec::{Search, SearchLoad};

use super::goals::Goal;
use super::plateau::{OnlineDetector, StepPoint};
use super::{StepResult, step_result};

/// Open model: a probe step whose server completed less than this share of the requests sent to it (not of the
/// offered rate, which Poisson arrivals only approach) is past its capacity.
const PROBE_SERVED_SHARE: f64 = 0.9;
/// Measured steps past the probe's knee that still gained at least this share of linear scaling show the bracket
/// was too low: the next step doubles the load.
const REPROBE_SCALING: f64 = 0.75;
/// Each measured step's load over the one before it, near the knee.
const STEP_FACTOR: f64 = 1.25;
/// Across the final bracket, a percentile that grew by this factor or more is a cliff.
const CLIFF_FACTOR: f64 = 2.0;
/// The goal's boundary is found once the rates either side of it are this close (users: one apart), or the load
/// that met it is this close to the plateau's throughput, so the figure at the goal cannot move more.
const BOUNDARY_RESOLUTION: f64 = 0.025;
/// Bisection steps at most: from the probe's first step to 2.5% of the load that missed takes six or seven.
const BOUNDARY_STEPS: usize = 8;

/// Decides search mode's steps.
pub struct Searcher<'a> {
    pub search: &'a Search,
    pub detector: OnlineDetector<'a>,
    pub think_time_ms: u64,
    /// `[requirements]`' goals (`Goal::all`), whose boundary the search bisects.
    pub goals: Vec<Goal>,
}

/// The steps either side of the goals: the highest load that met every goal, the lowest above it that missed one,
/// and the first goal it missed.
pub struct Boundary<'s> {
    pub met: &'s StepResult,
    pub missed: &'s StepResult,
    pub goal: Goal,
}

/// Where the goals' boundary lies, as the search left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalBoundary {
    /// The highest load that met every goal, and the lowest above it that missed one.
    pub loads: [f64; 2],
    /// The goal missed there, in words ("p90 TTFT ≤ 80 ms"); absent in results from before TTFT and TPOT goals,
    /// whose boundary was the latency goal's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// That goal's figure at each load (end-to-end latency, TTFT or TPOT at the percentile), in ms.
    pub latency_ms: [f64; 2],
    /// The percentile at least doubled between the two: a cliff (a queue that overflows, a cache that stops
    /// fitting) rather than a smooth rise, so a little more load costs a lot of latency.
    pub cliff: bool,
    /// Bisection steps run to find it.
    #[serde(default)]
    pub steps: u32,
}

/// What the probe found: the loads that bracket the knee, the knee's estimate inside it, and why the probe ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bracket {
    /// The last probe step that scaled and the first that did not; absent when the probe's first step did not
    /// scale or was unusable, or the probe reached the maximum load still scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loads: Option<[f64; 2]>,
    pub knee_load: f64,
    pub ended: String,
}

/// How a search went: its probe's bracket, how many times measured steps doubled past it, and where the latency
/// goal's boundary lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSummary {
    pub bracket: Bracket,
    pub reprobes: u32,
    pub probe_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_boundary: Option<GoalBoundary>,
}

/// The share of linear scaling going from `before` to `after`: 1 when throughput grew as much as the load, 0 when
/// it did not grow.
fn scaling(before: &StepResult, after: &StepResult) -> f64 {
    let load_gain = after.load / before.load.max(f64::MIN_POSITIVE) - 1.0;
    if before.throughput_rps <= 0.0 || load_gain <= 0.0 {
        return 0.0;
    }
    (after.throughput_rps / before.throughput_rps - 1.0) / load_gain
}

impl Searcher<'_> {
    /// The next step after `records` (every step so far, probe steps first), or why the search is done.
    pub fn next(&self, records: &[StepRecord]) -> StepVerdict {
        let Split { probe, measured, boundary } = split(records);
        if measured.is_empty() {
            if let Some(load) = self.next_probe(&probe) {
                return StepVerdict::Then(NextStep {
                    load,
                    duration_s: self.search.probe_step_s,
                    role: StepRole::Probe,
                });
            }
            // At the knee: the probe already saw throughput rise below it.
            let knee = self.bracket(&probe).knee_load;
            return self.measured(match self.search.load {
                SearchLoad::Users { .. } => knee.round().max(1.0),
                SearchLoad::RatePerSecond { .. } => knee,
            });
        }
        let knee = self.bracket(&probe).knee_load;
        let points: Vec<StepPoint> = measured.iter().map(|step| self.detector.point(step)).collect();
        let highest = measured.last().expect("measured steps");
        let done = if let Some(reason) = self.detector.reason(&points, true) {
            Some(reason)
        } else if highest.load >= self.search.load.max() {
            Some(format!("the search reached its maximum load ({})", highest.load))
        } else {
            None
        };
        let done = if measured.len() >= self.search.max_steps as usize {
            let why = done.unwrap_or_else(|| "before a confirmed plateau".to_string());
            Some(format!("the search ran its {} measured steps ({why})", self.search.max_steps))
        } else {
            done
        };
        if let Some(reason) = done {
            return self
                .boundary_step(&probe, &measured, &boundary)
                .map_or(StepVerdict::Stop(reason), |load| self.boundary_at(load));
        }
        // Still scaling almost linearly past the knee the probe placed: the bracket was wrong.
        let past_knee = highest.load > knee * STEP_FACTOR;
        let factor = match measured.len().checked_sub(2).map(|before| scaling(&measured[before], highest)) {
            Some(scaled) if past_knee && scaled >= REPROBE_SCALING => 2.0,
            _ => STEP_FACTOR,
        };
        self.measured(self.round(highest.load * factor).max(self.above(highest.load)).min(self.search.load.max()))
    }

    /// The next bisection step of the goals' boundary, if it is not yet found (see `BOUNDARY_RESOLUTION`):
    /// `None` when there is nothing (more) to find: every step met the goal, none did, the load that met it is
    /// already at the plateau (so the figure at the goal cannot move), or the steps ran out.
    fn boundary_step(&self, probe: &[StepResult], measured: &[StepResult], boundary: &[StepResult]) -> Option<f64> {
        if boundary.len() >= BOUNDARY_STEPS {
            return None;
        }
        let Boundary { met, missed, .. } = self.boundary(probe, measured, boundary)?;
        let resolved = match self.search.load {
            SearchLoad::Users { .. } => missed.load - met.load <= 1.0,
            SearchLoad::RatePerSecond { .. } => missed.load / met.load - 1.0 <= BOUNDARY_RESOLUTION,
        };
        // Below the plateau, where a higher load that meets the goal raises the figure at it.
        let best_rps = probe.iter().chain(measured).chain(boundary).map(|step| step.throughput_rps).fold(0.0, f64::max);
        if resolved || met.throughput_rps * (1.0 + BOUNDARY_RESOLUTION) >= best_rps {
            return None;
        }
        let middle = self.round((met.load + missed.load) / 2.0);
        Some(if middle > met.load && middle < missed.load { middle } else { self.above(met.load) })
    }

    /// The steps either side of the goals: the highest load whose percentiles met every goal, and the lowest above
    /// it that missed one. A short probe step's percentile rests on two seconds, and near the capacity its queue
    /// has not yet built up, so only measured and boundary steps, and the probe's first step (the lowest load, run
    /// longer), take part.
    pub fn boundary<'s>(
        &self,
        probe: &'s [StepResult],
        measured: &'s [StepResult],
        boundary: &'s [StepResult],
    ) -> Option<Boundary<'s>> {
        if self.goals.is_empty() {
            return None;
        }
        let mut steps: Vec<&StepResult> = probe
            .iter()
            .take(1)
            .chain(measured)
            .chain(boundary)
            .filter(|step| step.complete && step.latency.count > 0 && !step.generator_saturated)
            .collect();
        steps.sort_by(|a, b| a.load.total_cmp(&b.load));
        let missed_goal = |step: &StepResult| self.goals.iter().copied().find(|goal| !goal.met(step));
        let met = *steps.iter().rev().find(|step| missed_goal(step).is_none())?;
        let (missed, goal) =
            steps.iter().filter(|step| step.load > met.load).find_map(|step| Some((*step, missed_goal(step)?)))?;
        Some(Boundary { met, missed, goal })
    }

    fn measured(&self, load: f64) -> StepVerdict {
        StepVerdict::Then(NextStep { load, duration_s: self.search.step_duration_s, role: StepRole::Measured })
    }

    fn boundary_at(&self, load: f64) -> StepVerdict {
        StepVerdict::Then(NextStep { load, duration_s: self.search.step_duration_s, role: StepRole::Boundary })
    }

    /// The next probe load, or `None` when the probe is done.
    fn next_probe(&self, probe: &[StepResult]) -> Option<f64> {
        let last = probe.last()?;
        if self.unusable(last) || self.levelled(probe).is_some() || last.load >= self.search.load.max() {
            return None;
        }
        Some(self.round(last.load * 2.0).min(self.search.load.max()))
    }

    /// Where the probe found throughput levelled off, if it has: closed, the first step of a plateau the detector
    /// confirmed on the probe's own steps (so racing may rely on it); open, the first step whose server did not
    /// serve what was offered (it fell short or dropped arrivals), which no higher rate can change.
    fn levelled(&self, probe: &[StepResult]) -> Option<usize> {
        match self.search.load {
            SearchLoad::Users { .. } => {
                let points: Vec<StepPoint> = probe.iter().map(|step| self.detector.point(step)).collect();
                self.detector.confirmed_plateau(&points)
            }
            SearchLoad::RatePerSecond { .. } => probe.iter().position(|step| !served(step)),
        }
    }

    /// A step no figure can come from: errors past the limit, a latency threshold crossed, the generator behind,
    /// or nothing served.
    fn unusable(&self, step: &StepResult) -> bool {
        let point = self.detector.point(step);
        step.throughput_rps <= 0.0
            || step.generator_saturated
            || step.error_rate_percent > self.detector.settings.max_error_rate_percent
            || self.detector.crossed(&point)
    }

    /// The probe's bracket and knee estimate.
    pub fn bracket(&self, probe: &[StepResult]) -> Bracket {
        let start = self.search.load.start();
        let Some(last) = probe.last() else {
            return Bracket { loads: None, knee_load: start, ended: "no probe step ran".into() };
        };
        let usable: Vec<&StepResult> = probe.iter().filter(|step| !self.unusable(step)).collect();
        let best_rps = usable.iter().map(|step| step.throughput_rps).fold(0.0, f64::max);
        // Little's law: with every request served at the lowest load's latency, `best_rps` needs this much load.
        let knee = match self.search.load {
            SearchLoad::Users { .. } => {
                let cycle_ms = usable.first().map_or(0.0, |step| step.latency.mean_ms) + self.think_time_ms as f64;
                best_rps * cycle_ms / 1000.0
            }
            SearchLoad::RatePerSecond { .. } => best_rps,
        };
        let bracket = |at: usize| at.checked_sub(1).map(|before| [probe[before].load, probe[at].load]);
        let (loads, ended) = if let Some(at) = self.levelled(probe) {
            (bracket(at), format!("throughput levelled off at {}", probe[at].load))
        } else if self.unusable(last) {
            (bracket(probe.len() - 1), format!("the probe step at {} was not usable", last.load))
        } else {
            (None, format!("the probe reached the maximum load ({}) still scaling", last.load))
        };
        let high = loads.map_or(last.load, |[_, high]| high);
        Bracket { loads, knee_load: knee.clamp(start.min(high), high), ended }
    }

    /// A load as the model takes it: whole users (at least one), or a rate.
    fn round(&self, load: f64) -> f64 {
        match self.search.load {
            SearchLoad::Users { .. } => load.round().max(1.0),
            SearchLoad::RatePerSecond { .. } => load,
        }
    }

    /// The smallest load above `load`: one more user, or any higher rate.
    fn above(&self, load: f64) -> f64 {
        match self.search.load {
            SearchLoad::Users { .. } => load + 1.0,
            SearchLoad::RatePerSecond { .. } => load,
        }
    }

    /// What the search did, from the steps it ran.
    pub fn summary(&self, Split { probe, measured, boundary }: &Split) -> SearchSummary {
        let mut by_load: Vec<&StepResult> = measured.iter().collect();
        by_load.sort_by(|a, b| a.load.total_cmp(&b.load));
        let reprobes = by_load.windows(2).skip(1).filter(|pair| pair[1].load >= 2.0 * pair[0].load).count() as u32;
        let probe_s = probe.iter().map(|step| step.end_s - step.start_s).sum();
        let goal_boundary = self.boundary(probe, measured, boundary).map(|Boundary { met, missed, goal }| {
            let latency_ms = [met, missed].map(|step| goal.observed_ms(step).unwrap_or(f64::NAN));
            GoalBoundary {
                loads: [met.load, missed.load],
                goal: Some(goal.to_string()),
                latency_ms,
                cliff: latency_ms[1] >= CLIFF_FACTOR * latency_ms[0],
                steps: boundary.len() as u32,
            }
        });
        SearchSummary { bracket: self.bracket(probe), reprobes, probe_s, goal_boundary }
    }
}

/// Open model: whether the server served what was sent to the step (see `PROBE_SERVED_SHARE`).
fn served(step: &StepResult) -> bool {
    let finished = step.latency.count + step.errors.total();
    step.dropped == 0 && finished as f64 >= step.sent as f64 * PROBE_SERVED_SHARE
}

/// A search's steps by role, each numbered from 0 among its own.
pub struct Split {
    pub probe: Vec<StepResult>,
    pub measured: Vec<StepResult>,
    pub boundary: Vec<StepResult>,
}

pub fn split(records: &[StepRecord]) -> Split {
    let of = |role: StepRole| -> Vec<StepResult> {
        records
            .iter()
            .filter(|record| record.window.role == role)
            .enumerate()
            .map(|(index, record)| StepResult { index, ..step_result(record) })
            .collect()
    };
    Split { probe: of(StepRole::Probe), measured: of(StepRole::Measured), boundary: of(StepRole::Boundary) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::step::new_step_for;
    use crate::measure::{Tally, TokenCount, TokenTally, Tokens};
    use crate::plan::StepWindow;
    use crate::spec::{FIRST_PROBE_STEP_S, PlateauSettings, Stopping};

    /// A step of four steady seconds at `load`, serving `rps` a second at `latency_ms`, each response's first
    /// token at half of it.
    fn step(index: usize, window: StepWindow, rps: u64, latency_ms: f64) -> StepRecord {
        let mut record = new_step_for(StepWindow { index, ..window });
        let latency_us = (latency_ms * 1000.0) as u64;
        let mut tokens = TokenTally::default();
        let generated =
            Tokens { first_token_us: Some(latency_us / 2), output: 8, input: None, counted: TokenCount::Usage };
        for _ in 0..rps.max(1) {
            tokens.record(latency_us, generated, &[], None);
        }
        for _ in 0..4 {
            // Sent: an open model's offered rate, when the server served less (closed-model tests serve more a
            // second than they have users).
            let sent = rps.max(window.load as u64);
            let mut second =
                Tally { started: sent, completed: rps, tokens: Some(Box::new(tokens.clone())), ..Tally::default() };
            second.latency_us.record_n(latency_us, rps.max(1)).unwrap();
            record.add_second(&second);
        }
        record.complete = true;
        record.finish();
        record
    }

    fn searcher<'a>(search: &'a Search, stopping: &'a Stopping, goal: Option<Goal>) -> Searcher<'a> {
        Searcher {
            search,
            detector: OnlineDetector { stopping, settings: PlateauSettings::default() },
            think_time_ms: 0,
            goals: goal.into_iter().collect(),
        }
    }

    /// Runs a search against `serve` (throughput and latency at a load) until it stops; the steps it ran.
    fn run(search: &Search, serve: impl FnMut(f64) -> (u64, f64)) -> (Vec<StepRecord>, String) {
        run_to(search, None, serve)
    }

    /// `run`, with a goal.
    fn run_to(
        search: &Search,
        goal: Option<Goal>,
        mut serve: impl FnMut(f64) -> (u64, f64),
    ) -> (Vec<StepRecord>, String) {
        let stopping = Stopping::default();
        let searcher = searcher(search, &stopping, goal);
        let mut records = Vec::new();
        let first_s = search.probe_step_s.max(FIRST_PROBE_STEP_S);
        let mut window = StepWindow::new(0, 0, first_s, search.load.start(), StepRole::Probe);
        loop {
            let (rps, latency_ms) = serve(window.load);
            records.push(step(records.len(), window.clone(), rps, latency_ms));
            match searcher.next(&records) {
                StepVerdict::Then(next) => {
                    window = StepWindow::new(records.len(), window.end_s, next.duration_s, next.load, next.role);
                }
                StepVerdict::Stop(reason) => return (records, reason),
                StepVerdict::Continue => panic!("a search always says what comes next"),
            }
            assert!(records.len() < 40, "the search never ended");
        }
    }

    fn loads(records: &[StepRecord], role: StepRole) -> Vec<f64> {
        records.iter().filter(|record| record.window.role == role).map(|record| record.window.load).collect()
    }

    fn closed(max_steps: u32) -> Search {
        Search { load: SearchLoad::Users { start: 1, max: 1000 }, probe_step_s: 3, step_duration_s: 5, max_steps }
    }

    /// A closed-model server of `workers` each taking `service_ms`: throughput grows with users up to
    /// `workers / service_ms`, and beyond it users queue.
    fn server(workers: f64, service_ms: f64) -> impl Fn(f64) -> (u64, f64) {
        move |users| {
            let capacity = workers * 1000.0 / service_ms;
            let rps = (users * 1000.0 / service_ms).min(capacity);
            (rps.round() as u64, users * 1000.0 / rps)
        }
    }

    #[test]
    fn the_probe_brackets_the_knee_and_measured_steps_confirm_the_plateau_just_past_it() {
        // 4 workers of 20 ms: 200/s from 4 users on.
        let (records, reason) = run(&closed(8), server(4.0, 20.0));
        assert_eq!(loads(&records, StepRole::Probe), [1.0, 2.0, 4.0, 8.0, 16.0], "8 gained nothing, 16 confirmed it");
        // The knee by Little's law: 200/s x 20 ms = 4 users; measured steps from it, a quarter apart.
        assert_eq!(loads(&records, StepRole::Measured), [4.0, 5.0, 6.0]);
        assert_eq!(reason, "plateau confirmed at step 2");
        let steps = split(&records);
        let stopping = Stopping::default();
        let search = closed(8);
        let searcher = searcher(&search, &stopping, None);
        let summary = searcher.summary(&steps);
        assert_eq!(summary.bracket.loads, Some([4.0, 8.0]));
        assert!((summary.bracket.knee_load - 4.0).abs() < 0.05, "{:?}", summary.bracket);
        assert_eq!((summary.reprobes, summary.probe_s), (0, 17), "5 s at the lowest load, then 3 s a step");
        assert_eq!(steps.measured.iter().map(|step| step.index).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_wrong_bracket_is_corrected_by_doubling_the_measured_steps() {
        // 8 workers of 10 ms (800/s from 8 users), but the probe met a transient at 2 and 4 users and saw a plateau
        // at 2: it places the knee near 1 user.
        let honest = server(8.0, 10.0);
        let mut probing = true;
        let (records, reason) = run(&closed(10), |users| {
            let served = match users {
                2.0 if probing => (105, 19.0),
                4.0 if probing => (110, 36.0),
                _ => honest(users),
            };
            probing = probing && users != 4.0;
            served
        });
        assert_eq!(loads(&records, StepRole::Probe), [1.0, 2.0, 4.0]);
        // 2 users is past the knee the probe placed (1.1 x 1.25), and still scaled linearly: the steps double
        // until throughput stops growing, and one more confirms it.
        assert_eq!(loads(&records, StepRole::Measured), [1.0, 2.0, 4.0, 8.0, 16.0, 20.0]);
        assert_eq!(reason, "plateau confirmed at step 5");
    }

    #[test]
    fn an_open_search_doubles_the_rate_until_it_is_not_served() {
        let search = Search {
            load: SearchLoad::RatePerSecond { start: 10.0, max: 10_000.0 },
            probe_step_s: 3,
            step_duration_s: 5,
            max_steps: 8,
        };
        // 100/s at most; below it every arrival is served in 10 ms.
        let (records, reason) =
            run(&search, |rate| (rate.min(100.0).round() as u64, if rate < 100.0 { 10.0 } else { 500.0 }));
        assert_eq!(loads(&records, StepRole::Probe), [10.0, 20.0, 40.0, 80.0, 160.0]);
        assert_eq!(loads(&records, StepRole::Measured), [100.0, 125.0, 156.25]);
        assert_eq!(reason, "plateau confirmed at step 2");
    }

    #[test]
    fn with_a_latency_goal_missed_below_the_plateau_the_search_bisects_to_its_boundary() {
        let search = Search {
            load: SearchLoad::RatePerSecond { start: 10.0, max: 10_000.0 },
            probe_step_s: 3,
            step_duration_s: 5,
            max_steps: 12,
        };
        // An M/M/1 queue of 100/s: p90 = ln(10) / (100 - rate); a 50 ms goal is met up to 53.95/s.
        let p90_ms = |rate: f64| if rate < 100.0 { 10f64.ln() / (100.0 - rate) * 1000.0 } else { 5000.0 };
        let p90 = crate::spec::Percentile::new(90.0).unwrap();
        // The latency goal, then the same bound on TTFT (half the latency here): the same boundary.
        for (goal, words) in [
            (Goal::Latency { percentile: p90, limit_ms: 50.0 }, "p90 ≤ 50 ms"),
            (Goal::Ttft { percentile: p90, limit_ms: 25.0 }, "p90 TTFT ≤ 25 ms"),
        ] {
            let (records, reason) = run_to(&search, Some(goal), |rate| (rate.min(100.0).round() as u64, p90_ms(rate)));
            // The plateau first, with the same measured steps as without a goal; then halving the load between the
            // probe's first step (10/s, met) and the first measured one (100/s, missed) until the two steps
            // either side are within 2.5%.
            assert_eq!(loads(&records, StepRole::Measured), [100.0, 125.0, 156.25]);
            assert_eq!(
                loads(&records, StepRole::Boundary),
                [55.0, 32.5, 43.75, 49.375, 52.1875, 53.59375, 54.296875],
                "{words}"
            );
            assert_eq!(reason, "plateau confirmed at step 2", "boundary steps are not plateau steps");
            let stopping = Stopping::default();
            let searcher = searcher(&search, &stopping, Some(goal));
            let boundary = searcher.summary(&split(&records)).goal_boundary.unwrap();
            assert_eq!(boundary.loads, [53.59375, 54.296875], "either side of 53.95/s");
            assert_eq!((boundary.steps, boundary.goal.as_deref()), (7, Some(words)));
            assert!(!boundary.cliff, "just under, then just over: {boundary:?}");
        }
    }

    #[test]
    fn a_goal_missed_only_at_the_plateau_is_not_bisected() {
        // 4 workers of 20 ms; p99 grows with users past the knee: a 30 ms goal is met up to 6 users and missed at 8,
        // where throughput no longer grows, so no load between them could raise the figure at the goal.
        let goal = Goal::Latency { percentile: crate::spec::Percentile::new(99.0).unwrap(), limit_ms: 30.0 };
        let (records, _) = run_to(&closed(8), Some(goal), server(4.0, 20.0));
        assert!(loads(&records, StepRole::Boundary).is_empty(), "{:?}", loads(&records, StepRole::Boundary));
    }

    #[test]
    fn the_search_stops_at_its_maximum_load_or_steps() {
        let search = Search { load: SearchLoad::Users { start: 1, max: 6 }, ..closed(8) };
        // Never saturates within 6 users.
        let (records, reason) = run(&search, server(100.0, 10.0));
        assert_eq!(loads(&records, StepRole::Probe), [1.0, 2.0, 4.0, 6.0]);
        assert_eq!(loads(&records, StepRole::Measured), [6.0]);
        assert_eq!(reason, "the search reached its maximum load (6)");
        let (_, reason) =
            run(&Search { load: SearchLoad::Users { start: 1, max: 1000 }, ..closed(2) }, server(100.0, 10.0));
        assert_eq!(reason, "the search ran its 2 measured steps (before a confirmed plateau)");
    }
}
