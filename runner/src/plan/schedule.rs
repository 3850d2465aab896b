//! The traffic pattern as a schedule: the load at every moment, and the steps (time windows with a load level and a
//! steady part) that the analysis measures, after any warm-up.

use serde::{Deserialize, Serialize};

use crate::spec::{FIRST_PROBE_STEP_S, Traffic, TrafficOptions};

/// Phases and rate ramps are analysed in windows of this length, since their load changes continuously.
const WINDOW_S: u64 = 10;

/// What a step's load counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadUnit {
    /// Closed model: concurrent virtual users.
    #[default]
    Users,
    /// Open model: offered requests per second.
    RequestsPerSecond,
}

impl LoadUnit {
    /// The unit in words, for progress lines and chart axes.
    pub fn label(self) -> &'static str {
        match self {
            LoadUnit::Users => "users",
            LoadUnit::RequestsPerSecond => "offered requests/s",
        }
    }
}

/// What a step is for. Search mode's probe steps are short and only bracket the capacity; every figure comes from
/// measured steps, and the figure at the latency goal also from boundary steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRole {
    #[default]
    Measured,
    Probe,
    /// Search mode's bisection of the latency goal's boundary, once the ramp is done. These steps lie close
    /// together below the plateau, where the plateau rule would take their small gains for a level curve, so
    /// neither the plateau nor the capacity reads them.
    Boundary,
}

impl StepRole {
    pub fn is_measured(&self) -> bool {
        *self == StepRole::Measured
    }
}

/// One step of the ramp as the analysis sees it: a time window with a load level and a steady part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepWindow {
    pub index: usize,
    pub start_s: u64,
    pub end_s: u64,
    /// Seconds before this are the step's ramp-in and are not measured.
    pub steady_start_s: u64,
    /// Virtual users, or offered requests per second (the mean over the window, for phases and ramps).
    pub load: f64,
    #[serde(default, skip_serializing_if = "StepRole::is_measured")]
    pub role: StepRole,
}

impl StepWindow {
    /// A step of `duration_s` from `start_s`, whose ramp-in is not measured.
    pub fn new(index: usize, start_s: u64, duration_s: u64, load: f64, role: StepRole) -> Self {
        let steady_start_s = start_s + ramp_in_s(duration_s).min(duration_s.saturating_sub(1));
        StepWindow { index, start_s, end_s: start_s + duration_s, steady_start_s, load, role }
    }
}

/// The traffic pattern turned into a load at each moment and a list of analysis steps, after any warm-up.
#[derive(Debug, Clone)]
pub struct Schedule {
    traffic: Traffic,
    warmup_s: u64,
    pub load_unit: LoadUnit,
    pub steps: Vec<StepWindow>,
}

/// A step's first second (or its first tenth, up to 5 s, for long steps) lets the queue settle.
fn ramp_in_s(step_duration_s: u64) -> u64 {
    (step_duration_s / 10).clamp(1, 5)
}

/// Fixed steps of equal length, the load of step i given by `load`.
fn equal_steps(warmup_s: u64, step_duration_s: u64, steps: u32, load: impl Fn(u64) -> f64) -> Vec<StepWindow> {
    (0..u64::from(steps))
        .map(|index| {
            let start_s = warmup_s + index * step_duration_s;
            StepWindow::new(index as usize, start_s, step_duration_s, load(index), StepRole::Measured)
        })
        .collect()
}

/// Windows of about `WINDOW_S` over segments of continuously changing load; the first of each segment has a
/// ramp-in second, and a remainder shorter than 2 s joins the window before it.
fn windows(warmup_s: u64, segment_durations_s: &[u64]) -> Vec<StepWindow> {
    let mut windows: Vec<StepWindow> = Vec::new();
    let mut segment_start_s = warmup_s;
    for duration_s in segment_durations_s {
        let segment_end_s = segment_start_s + duration_s;
        let mut start_s = segment_start_s;
        while start_s < segment_end_s {
            let mut end_s = (start_s + WINDOW_S).min(segment_end_s);
            if segment_end_s - end_s < 2 {
                end_s = segment_end_s;
            }
            let steady_start_s = if start_s == segment_start_s && end_s - start_s >= 2 { start_s + 1 } else { start_s };
            let role = StepRole::Measured;
            windows.push(StepWindow { index: windows.len(), start_s, end_s, steady_start_s, load: 0.0, role });
            start_s = end_s;
        }
        segment_start_s = segment_end_s;
    }
    windows
}

impl Schedule {
    pub fn new(traffic: &Traffic, options: &TrafficOptions) -> Self {
        let warmup_s = options.warmup_s;
        let load_unit = if traffic.is_open() { LoadUnit::RequestsPerSecond } else { LoadUnit::Users };
        let mut schedule = Schedule { traffic: traffic.clone(), warmup_s, load_unit, steps: Vec::new() };
        schedule.steps = match traffic {
            Traffic::Stairs { users_per_step, step_duration_s, steps } => {
                equal_steps(warmup_s, *step_duration_s, *steps, |index| f64::from(*users_per_step) * (index + 1) as f64)
            }
            Traffic::RateSteps { start_rate_per_s, step_rate_per_s, step_duration_s, steps } => {
                equal_steps(warmup_s, *step_duration_s, *steps, |index| {
                    start_rate_per_s + step_rate_per_s * index as f64
                })
            }
            Traffic::Phases(phases) => {
                let durations: Vec<u64> = phases.iter().map(|phase| phase.duration_s).collect();
                schedule.with_mean_loads(windows(warmup_s, &durations))
            }
            Traffic::RateRamp { duration_s, .. } => schedule.with_mean_loads(windows(warmup_s, &[*duration_s])),
            // The first probe step; the search adds each next step as the one before it ends.
            Traffic::Search(search) => {
                let first_s = search.probe_step_s.max(FIRST_PROBE_STEP_S);
                vec![StepWindow::new(0, warmup_s, first_s, search.load.start(), StepRole::Probe)]
            }
        };
        schedule
    }

    /// Search mode's measured pass, run after every configuration's probe: it starts at the step the probe chose.
    pub fn measuring_from(&self, load: f64, duration_s: u64, role: StepRole) -> Schedule {
        Schedule { steps: vec![StepWindow::new(0, self.warmup_s, duration_s, load, role)], ..self.clone() }
    }

    /// Whether the load holds still step by step (and a step may run on until precise), rather than changing
    /// every second.
    pub fn is_stepped(&self) -> bool {
        !matches!(self.traffic, Traffic::Phases(_) | Traffic::RateRamp { .. })
    }

    fn with_mean_loads(&self, mut windows: Vec<StepWindow>) -> Vec<StepWindow> {
        for window in &mut windows {
            let seconds = window.start_s..window.end_s;
            let total: f64 = seconds.clone().map(|second| self.load_at(second as f64 + 0.5)).sum();
            window.load = total / seconds.count() as f64;
        }
        windows
    }

    /// The ramp's length with every step at its planned length; for search mode, at most that (every probe step
    /// up to the maximum load, and every measured step).
    pub fn duration_s(&self) -> u64 {
        match &self.traffic {
            Traffic::Search(search) => {
                self.warmup_s + search.longest_probe_s() + u64::from(search.max_steps) * search.step_duration_s
            }
            _ => self.steps.last().map_or(self.warmup_s, |step| step.end_s),
        }
    }

    /// The load at `elapsed_s` seconds into the run, in `load_unit`; the warm-up runs at the first step's load.
    pub fn load_at(&self, elapsed_s: f64) -> f64 {
        let t = (elapsed_s - self.warmup_s as f64).max(0.0);
        match &self.traffic {
            Traffic::Stairs { .. } | Traffic::RateSteps { .. } | Traffic::Search(_) => {
                let step = self.steps.iter().rev().find(|step| step.start_s as f64 <= elapsed_s);
                step.or(self.steps.first()).map_or(0.0, |step| step.load)
            }
            Traffic::RateRamp { from_rate_per_s, to_rate_per_s, duration_s } => {
                let fraction = (t / (*duration_s).max(1) as f64).min(1.0);
                from_rate_per_s + (to_rate_per_s - from_rate_per_s) * fraction
            }
            Traffic::Phases(phases) => {
                let mut phase_start_s = 0.0;
                for phase in phases {
                    let phase_end_s = phase_start_s + phase.duration_s as f64;
                    if t < phase_end_s {
                        let spawned = (phase.spawn_rate_per_s * (t - phase_start_s)).floor();
                        return f64::from(phase.initial_users) + spawned;
                    }
                    phase_start_s = phase_end_s;
                }
                phases.last().map_or(0.0, |phase| {
                    f64::from(phase.initial_users) + (phase.spawn_rate_per_s * phase.duration_s as f64).floor()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Phase;

    fn no_warmup() -> TrafficOptions {
        TrafficOptions::default()
    }

    #[test]
    fn stairs_have_one_step_per_stair() {
        let schedule =
            Schedule::new(&Traffic::Stairs { users_per_step: 3, step_duration_s: 5, steps: 4 }, &no_warmup());
        assert_eq!(schedule.duration_s(), 20);
        assert_eq!(schedule.steps[2], StepWindow::new(2, 10, 5, 9.0, StepRole::Measured));
        assert_eq!((schedule.steps[2].end_s, schedule.steps[2].steady_start_s), (15, 11));
        assert_eq!(
            (schedule.load_at(0.0), schedule.load_at(9.99), schedule.load_at(19.5), schedule.load_at(25.0)),
            (3.0, 6.0, 12.0, 12.0)
        );
    }

    #[test]
    fn phases_spawn_at_their_rate_and_split_into_windows() {
        let schedule = Schedule::new(
            &Traffic::Phases(vec![
                Phase { initial_users: 2, spawn_rate_per_s: 0.5, duration_s: 21 },
                Phase { initial_users: 10, spawn_rate_per_s: 0.0, duration_s: 5 },
            ]),
            &no_warmup(),
        );
        assert_eq!(schedule.load_at(0.0), 2.0);
        assert_eq!(schedule.load_at(4.1), 4.0);
        assert_eq!(schedule.load_at(22.0), 10.0);
        let bounds: Vec<(u64, u64)> = schedule.steps.iter().map(|step| (step.start_s, step.end_s)).collect();
        assert_eq!(bounds, vec![(0, 10), (10, 21), (21, 26)]);
        assert_eq!(schedule.steps[0].steady_start_s, 1);
        assert_eq!(schedule.steps[1].steady_start_s, 10);
        assert_eq!(schedule.steps[2].load, 10.0);
    }

    #[test]
    fn rate_patterns_offer_their_rates_after_the_warmup() {
        let options = TrafficOptions { warmup_s: 4, ..TrafficOptions::default() };
        let steps = Schedule::new(
            &Traffic::RateSteps { start_rate_per_s: 50.0, step_rate_per_s: 25.0, step_duration_s: 5, steps: 3 },
            &options,
        );
        assert_eq!(steps.load_unit, LoadUnit::RequestsPerSecond);
        assert_eq!(steps.duration_s(), 19);
        assert_eq!(
            (steps.load_at(1.0), steps.load_at(4.0), steps.load_at(9.5), steps.load_at(18.0)),
            (50.0, 50.0, 75.0, 100.0)
        );
        assert_eq!(steps.steps[0].start_s, 4, "the warm-up belongs to no step");
        let ramp = Schedule::new(
            &Traffic::RateRamp { from_rate_per_s: 10.0, to_rate_per_s: 110.0, duration_s: 20 },
            &no_warmup(),
        );
        assert_eq!((ramp.load_at(0.0), ramp.load_at(10.0), ramp.load_at(20.0)), (10.0, 60.0, 110.0));
        assert_eq!(ramp.steps.len(), 2);
        assert!((ramp.steps[0].load - 35.0).abs() < 1e-9, "the mean offered rate over the first 10 s");
    }
}
