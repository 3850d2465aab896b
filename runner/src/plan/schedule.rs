//! The traffic pattern as a schedule: the load at every moment, and the steps (time windows with a load level and a
//! steady part) that the analysis measures, after any warm-up.

use serde::{Deserialize, Serialize};

use crate::spec::{Traffic, TrafficOptions};

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
            StepWindow {
                index: index as usize,
                start_s,
                end_s: start_s + step_duration_s,
                steady_start_s: start_s + ramp_in_s(step_duration_s),
                load: load(index),
            }
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
            windows.push(StepWindow { index: windows.len(), start_s, end_s, steady_start_s, load: 0.0 });
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
        };
        schedule
    }

    fn with_mean_loads(&self, mut windows: Vec<StepWindow>) -> Vec<StepWindow> {
        for window in &mut windows {
            let seconds = window.start_s..window.end_s;
            let total: f64 = seconds.clone().map(|second| self.load_at(second as f64 + 0.5)).sum();
            window.load = total / seconds.count() as f64;
        }
        windows
    }

    pub fn duration_s(&self) -> u64 {
        self.steps.last().map_or(self.warmup_s, |step| step.end_s)
    }

    /// The load at `elapsed_s` seconds into the run, in `load_unit`; the warm-up runs at the first step's load.
    pub fn load_at(&self, elapsed_s: f64) -> f64 {
        let t = (elapsed_s - self.warmup_s as f64).max(0.0);
        match &self.traffic {
            Traffic::Stairs { users_per_step, step_duration_s, steps } => {
                let index = ((t / *step_duration_s as f64).floor() as u32).min(steps.saturating_sub(1));
                f64::from(users_per_step * (index + 1))
            }
            Traffic::RateSteps { start_rate_per_s, step_rate_per_s, step_duration_s, steps } => {
                let index = ((t / *step_duration_s as f64).floor() as u32).min(steps.saturating_sub(1));
                start_rate_per_s + step_rate_per_s * f64::from(index)
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

    /// Virtual users the closed model runs `elapsed_s` seconds into the run.
    pub fn users_at(&self, elapsed_s: f64) -> u32 {
        self.load_at(elapsed_s) as u32
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
        assert_eq!(schedule.steps[2], StepWindow { index: 2, start_s: 10, end_s: 15, steady_start_s: 11, load: 9.0 });
        assert_eq!(
            (schedule.users_at(0.0), schedule.users_at(9.99), schedule.users_at(19.5), schedule.users_at(25.0)),
            (3, 6, 12, 12)
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
        assert_eq!(schedule.users_at(0.0), 2);
        assert_eq!(schedule.users_at(4.1), 4);
        assert_eq!(schedule.users_at(22.0), 10);
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
