//! The load engine: closed-loop virtual users on tokio following the traffic pattern, one session (connection)
//! each. Users record outcomes into a sharded `Recorder`; a control loop drains it at every second boundary, streams
//! the second to disk, folds steady seconds into per-step tallies and asks the observer whether to go on.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::measure::{self, ErrorClass, Outcome, Recorder, ResourceSample, ResourceSource, Tally};
use crate::spec::Traffic;
use crate::target::{Session, Target};

/// How often the number of users is brought up to the schedule between second boundaries.
const CONTROL_TICK: Duration = Duration::from_millis(50);
/// Phases are analysed in windows of this length, since their user count changes continuously.
const PHASE_WINDOW_S: u64 = 10;
/// Seconds in a row with nothing but connection errors after which the target counts as gone.
const UNREACHABLE_AFTER_S: u32 = 3;

/// One step of the ramp as the analysis sees it: a time window with a load level and a steady part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepWindow {
    pub index: usize,
    pub start_s: u64,
    pub end_s: u64,
    /// Seconds before this are the step's ramp-in and are not measured.
    pub steady_start_s: u64,
    /// Users during the step (the mean, for phases).
    pub users: f64,
}

/// The traffic pattern turned into a user count at each moment and a list of analysis steps.
#[derive(Debug, Clone)]
pub struct Schedule {
    traffic: Traffic,
    pub steps: Vec<StepWindow>,
}

/// A step's first second (or its first tenth, up to 5 s, for long steps) lets the queue settle.
fn ramp_in_s(step_duration_s: u64) -> u64 {
    (step_duration_s / 10).clamp(1, 5)
}

impl Schedule {
    pub fn new(traffic: &Traffic) -> Self {
        let steps = match traffic {
            Traffic::Stairs { users_per_step, step_duration_s, steps } => (0..*steps as u64)
                .map(|index| StepWindow {
                    index: index as usize,
                    start_s: index * step_duration_s,
                    end_s: (index + 1) * step_duration_s,
                    steady_start_s: index * step_duration_s + ramp_in_s(*step_duration_s),
                    users: f64::from(*users_per_step) * (index + 1) as f64,
                })
                .collect(),
            Traffic::Phases(phases) => {
                let mut windows: Vec<StepWindow> = Vec::new();
                let mut phase_start_s = 0;
                for phase in phases {
                    let phase_end_s = phase_start_s + phase.duration_s;
                    let mut start_s = phase_start_s;
                    while start_s < phase_end_s {
                        let mut end_s = (start_s + PHASE_WINDOW_S).min(phase_end_s);
                        // A short remainder joins the window before it rather than standing alone.
                        if phase_end_s - end_s < 2 {
                            end_s = phase_end_s;
                        }
                        let steady_start_s =
                            if start_s == phase_start_s && end_s - start_s >= 2 { start_s + 1 } else { start_s };
                        windows.push(StepWindow { index: windows.len(), start_s, end_s, steady_start_s, users: 0.0 });
                        start_s = end_s;
                    }
                    phase_start_s = phase_end_s;
                }
                let mut schedule = Schedule { traffic: traffic.clone(), steps: Vec::new() };
                for window in &mut windows {
                    let seconds = window.start_s..window.end_s;
                    let total: f64 =
                        seconds.clone().map(|second| f64::from(schedule.users_at(second as f64 + 0.5))).sum();
                    window.users = total / seconds.count() as f64;
                }
                schedule.steps = windows;
                return schedule;
            }
        };
        Schedule { traffic: traffic.clone(), steps }
    }

    pub fn duration_s(&self) -> u64 {
        self.steps.last().map_or(0, |step| step.end_s)
    }

    /// Virtual users the pattern asks for `elapsed_s` seconds into the run.
    pub fn users_at(&self, elapsed_s: f64) -> u32 {
        match &self.traffic {
            Traffic::Stairs { users_per_step, step_duration_s, steps } => {
                let index = ((elapsed_s / *step_duration_s as f64).floor() as u32).min(steps.saturating_sub(1));
                users_per_step * (index + 1)
            }
            Traffic::Phases(phases) => {
                let mut phase_start_s = 0.0;
                for phase in phases {
                    let phase_end_s = phase_start_s + phase.duration_s as f64;
                    if elapsed_s < phase_end_s {
                        let spawned = (phase.spawn_rate_per_s * (elapsed_s - phase_start_s)).floor() as u32;
                        return phase.initial_users.saturating_add(spawned);
                    }
                    phase_start_s = phase_end_s;
                }
                phases.last().map_or(0, |phase| {
                    phase.initial_users.saturating_add((phase.spawn_rate_per_s * phase.duration_s as f64) as u32)
                })
            }
        }
    }
}

/// One second of the run, as kept in memory and in results (its histogram goes to the series file only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    pub second: u64,
    pub users: u32,
    pub started: u64,
    pub completed: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(flatten)]
    pub resources: ResourceSample,
}

/// A step's measurements over its steady part.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub window: StepWindow,
    /// False when the run ended during the step.
    pub complete: bool,
    pub steady: Tally,
    /// Successful responses in each steady second, for the spread of throughput.
    pub completed_per_second: Vec<u64>,
    pub resources: ResourceSample,
}

impl StepRecord {
    pub fn steady_seconds(&self) -> u64 {
        self.completed_per_second.len() as u64
    }

    pub fn throughput_rps(&self) -> f64 {
        let seconds = self.steady_seconds();
        if seconds == 0 { 0.0 } else { self.steady.completed as f64 / seconds as f64 }
    }
}

/// What the observer tells the engine after each step.
pub enum StepVerdict {
    Continue,
    Stop(String),
}

/// Watches a run: a progress display, and the online plateau detector that may end the ramp early.
pub trait Observer {
    fn on_second(&mut self, second: &SecondSummary, step: &StepWindow);
    fn on_step(&mut self, steps: &[StepRecord]) -> StepVerdict;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EndReason {
    /// Every step ran.
    Completed,
    /// The observer ended the ramp (plateau confirmed or a threshold crossed).
    Stopped {
        reason: String,
    },
    MaxInvocations {
        invocations: u64,
    },
    Interrupted,
    TargetUnreachable {
        seconds: u32,
    },
}

impl EndReason {
    /// Whether the run ended before what it set out to measure was measured.
    pub fn is_partial(&self) -> bool {
        matches!(self, EndReason::Interrupted | EndReason::TargetUnreachable { .. })
    }
}

pub struct RunRecord {
    pub steps: Vec<StepRecord>,
    pub seconds: Vec<SecondSummary>,
    pub end: EndReason,
    pub elapsed_s: u64,
}

pub struct DriveOptions<'a> {
    pub schedule: &'a Schedule,
    pub max_invocations: Option<u64>,
    /// Where each second's full histogram is streamed, one JSON line per second.
    pub series_path: Option<&'a Path>,
    pub cancel: CancellationToken,
}

/// Runs the schedule against `target` until it ends, the observer stops it, or `cancel` fires.
pub async fn drive<T: Target>(
    target: Arc<T>,
    options: DriveOptions<'_>,
    mut resources: Option<Box<dyn ResourceSource>>,
    observer: &mut dyn Observer,
) -> std::io::Result<RunRecord> {
    let schedule = options.schedule;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let recorder = Arc::new(Recorder::new(4 * workers));
    let mut series = options.series_path.map(File::create).transpose()?.map(BufWriter::new);
    let mut users =
        VirtualUsers { target, recorder: Arc::clone(&recorder), run: options.cancel.child_token(), active: Vec::new() };

    let started_at = Instant::now();
    users.set(schedule.users_at(0.0));
    let mut control = tokio::time::interval(CONTROL_TICK);
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut steps: Vec<StepRecord> = Vec::new();
    let mut seconds: Vec<SecondSummary> = Vec::new();
    let mut current = new_step(schedule, 0);
    let mut second_tally = Tally::default();
    let mut total_completed = 0;
    let mut unreachable_s = 0;
    let mut resource_totals = ResourceTotals::default();
    let mut second: u64 = 0;

    let end = loop {
        let Some(window) = schedule.steps.get(current.window.index).cloned() else {
            break EndReason::Completed;
        };
        let boundary = started_at + Duration::from_secs(second + 1);
        tokio::select! {
            biased;
            _ = options.cancel.cancelled() => break EndReason::Interrupted,
            _ = tokio::time::sleep_until(boundary.into()) => {}
            _ = control.tick() => {
                users.set(schedule.users_at(started_at.elapsed().as_secs_f64()));
                continue;
            }
        }

        second_tally.reset();
        recorder.drain_into(&mut second_tally);
        let sample = resources.as_mut().map(|source| source.sample()).unwrap_or_default();
        let summary = SecondSummary {
            second,
            users: schedule.users_at(second as f64 + 0.5),
            started: second_tally.started,
            completed: second_tally.completed,
            errors: second_tally.errors.total(),
            p50_ms: measure::percentile_ms(&second_tally.latency_us, 50.0),
            p99_ms: measure::percentile_ms(&second_tally.latency_us, 99.0),
            resources: sample,
        };
        if let Some(series) = series.as_mut() {
            write_second(series, &summary, &second_tally)?;
        }
        observer.on_second(&summary, &window);
        seconds.push(summary);

        if second >= window.steady_start_s {
            current.steady.merge(&second_tally);
            current.completed_per_second.push(second_tally.completed);
            resource_totals.add(sample);
        }
        total_completed += second_tally.completed;
        let only_connect_errors = second_tally.completed == 0 && second_tally.errors.connect > 0;
        unreachable_s = if only_connect_errors { unreachable_s + 1 } else { 0 };
        second += 1;

        if unreachable_s >= UNREACHABLE_AFTER_S {
            break EndReason::TargetUnreachable { seconds: unreachable_s };
        }
        if second == window.end_s {
            current.complete = true;
            current.resources = std::mem::take(&mut resource_totals).mean();
            let next = new_step(schedule, window.index + 1);
            steps.push(std::mem::replace(&mut current, next));
            if let StepVerdict::Stop(reason) = observer.on_step(&steps) {
                break EndReason::Stopped { reason };
            }
        }
        if let Some(max) = options.max_invocations.filter(|max| total_completed >= *max) {
            break EndReason::MaxInvocations { invocations: max };
        }
        users.set(schedule.users_at(second as f64));
    };
    users.stop().await;
    if let Some(mut series) = series {
        series.flush()?;
    }
    if !current.completed_per_second.is_empty() {
        current.resources = resource_totals.mean();
        steps.push(current);
    }
    Ok(RunRecord { steps, seconds, end, elapsed_s: second })
}

fn new_step(schedule: &Schedule, index: usize) -> StepRecord {
    let window = schedule.steps.get(index).cloned().unwrap_or(StepWindow {
        index,
        start_s: 0,
        end_s: 0,
        steady_start_s: 0,
        users: 0.0,
    });
    StepRecord {
        window,
        complete: false,
        steady: Tally::default(),
        completed_per_second: Vec::new(),
        resources: ResourceSample::default(),
    }
}

/// Sums resource samples over a step's steady seconds; a figure is only reported if every second had it.
#[derive(Default)]
struct ResourceTotals {
    seconds: u32,
    cpu_percent: Option<f64>,
    memory_percent: Option<f64>,
}

impl ResourceTotals {
    fn add(&mut self, sample: ResourceSample) {
        let first = self.seconds == 0;
        let sum = |total: Option<f64>, value: Option<f64>| {
            if first { value } else { total.zip(value).map(|(a, b)| a + b) }
        };
        self.cpu_percent = sum(self.cpu_percent, sample.cpu_percent);
        self.memory_percent = sum(self.memory_percent, sample.memory_percent);
        self.seconds += 1;
    }

    fn mean(self) -> ResourceSample {
        let seconds = f64::from(self.seconds.max(1));
        ResourceSample {
            cpu_percent: self.cpu_percent.map(|total| total / seconds),
            memory_percent: self.memory_percent.map(|total| total / seconds),
        }
    }
}

#[derive(Serialize)]
struct SeriesLine<'a> {
    #[serde(flatten)]
    summary: &'a SecondSummary,
    error_counts: measure::ErrorCounts,
    /// HDR V2 deflate, base64: the second's full latency distribution in microseconds.
    histogram: String,
}

fn write_second(series: &mut BufWriter<File>, summary: &SecondSummary, tally: &Tally) -> std::io::Result<()> {
    let line =
        SeriesLine { summary, error_counts: tally.errors, histogram: measure::encode_histogram(&tally.latency_us) };
    serde_json::to_writer(&mut *series, &line)?;
    series.write_all(b"\n")?;
    // Flushed every second so an abrupt end loses at most the second in progress.
    series.flush()
}

/// The running virtual users; user `i` exists while the schedule asks for more than `i` users.
struct VirtualUsers<T: Target> {
    target: Arc<T>,
    recorder: Arc<Recorder>,
    run: CancellationToken,
    active: Vec<(CancellationToken, JoinHandle<()>)>,
}

impl<T: Target> VirtualUsers<T> {
    fn set(&mut self, count: u32) {
        let count = count as usize;
        while self.active.len() < count {
            let token = self.run.child_token();
            let shard = self.recorder.shard_for(self.active.len());
            let task =
                tokio::spawn(virtual_user(self.target.session(), Arc::clone(&self.recorder), shard, token.clone()));
            self.active.push((token, task));
        }
        while self.active.len() > count {
            let (token, _) = self.active.pop().expect("more users than asked for");
            token.cancel();
        }
    }

    async fn stop(self) {
        self.run.cancel();
        for (_, task) in self.active {
            let _ = task.await;
        }
    }
}

async fn virtual_user<S: Session>(mut session: S, recorder: Arc<Recorder>, shard: usize, token: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    let mut backoff = FIRST_BACKOFF;
    loop {
        recorder.started(shard);
        let outcome = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            outcome = session.call() => outcome,
        };
        recorder.finished(shard, outcome);
        // A refused connection returns at once: back off so a dead target is not hammered in a tight loop.
        if outcome == (Outcome::Failure { class: ErrorClass::Connect }) {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            backoff = FIRST_BACKOFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Phase;

    #[test]
    fn stairs_have_one_step_per_stair() {
        let schedule = Schedule::new(&Traffic::Stairs { users_per_step: 3, step_duration_s: 5, steps: 4 });
        assert_eq!(schedule.duration_s(), 20);
        assert_eq!(schedule.steps[2], StepWindow { index: 2, start_s: 10, end_s: 15, steady_start_s: 11, users: 9.0 });
        assert_eq!(
            (schedule.users_at(0.0), schedule.users_at(9.99), schedule.users_at(19.5), schedule.users_at(25.0)),
            (3, 6, 12, 12)
        );
    }

    #[test]
    fn phases_spawn_at_their_rate_and_split_into_windows() {
        let schedule = Schedule::new(&Traffic::Phases(vec![
            Phase { initial_users: 2, spawn_rate_per_s: 0.5, duration_s: 21 },
            Phase { initial_users: 10, spawn_rate_per_s: 0.0, duration_s: 5 },
        ]));
        assert_eq!(schedule.users_at(0.0), 2);
        assert_eq!(schedule.users_at(4.1), 4);
        assert_eq!(schedule.users_at(22.0), 10);
        let bounds: Vec<(u64, u64)> = schedule.steps.iter().map(|step| (step.start_s, step.end_s)).collect();
        assert_eq!(bounds, vec![(0, 10), (10, 21), (21, 26)]);
        assert_eq!(schedule.steps[0].steady_start_s, 1);
        assert_eq!(schedule.steps[1].steady_start_s, 10);
        assert_eq!(schedule.steps[2].users, 10.0);
    }
}
