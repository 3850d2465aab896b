//! The load engine. Closed model: virtual users on tokio, one session (connection) each, following the traffic
//! pattern. Open model: a scheduler sends requests at their intended times on a pool of owned sessions, whatever
//! the server does, and times each from its intended send time, so a stalled server cannot hide its stall.
//! Everything records into a sharded `Recorder`; a control loop drains it at every second boundary, streams the
//! second to disk, folds steady seconds into per-step tallies and asks the observer whether to go on. The engine
//! watches its own lateness and marks steps where it could not keep its schedule.

mod closed;
mod open;

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::measure::precision::MIN_SECONDS_FOR_PRECISION;
use crate::measure::process_tree::OwnCpu;
use crate::measure::series::{SecondSummary, write_second};
use crate::measure::step::{ResourceTotals, StepRecord, new_step_for};
use crate::measure::{ErrorCounts, GoodputGoals, Recorder, ResourceSample, ResourceSource, Tally};
use crate::plan::{LoadUnit, Schedule, Segment, StepRole, StepWindow};
use crate::spec::{LatencyThreshold, StepPrecision, TrafficOptions};
use crate::target::Target;
use closed::{VirtualUsers, lag_probe};
use open::OpenArrivals;

/// How often the number of users is brought up to the schedule between second boundaries.
const CONTROL_TICK: Duration = Duration::from_millis(50);
/// The longest an open-model boundary step waits for the backlog of the steps before it to drain.
const MAX_DRAIN_S: u64 = 60;
/// Seconds in a row with nothing but connection errors after which the target counts as gone.
const UNREACHABLE_AFTER_S: u32 = 3;

/// What the observer tells the engine after each step.
pub enum StepVerdict {
    /// On to the schedule's next step; the run is complete when there is none.
    Continue,
    /// Run this step next (search mode chooses its steps as it goes).
    Then(NextStep),
    Stop(String),
}

/// A step chosen while the run goes: its load, how long it lasts, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextStep {
    pub load: f64,
    pub duration_s: u64,
    pub role: StepRole,
}

/// Watches a run: a progress display, and the online plateau detector that may end the ramp early.
pub trait Observer {
    /// `tally` is the second's full measurement (histograms included), for observers that publish it.
    fn on_second(&mut self, second: &SecondSummary, tally: &Tally, step: &StepWindow);
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
    /// Requests could not be made: a payload plugin trapped, ran out of time or memory, or returned an error.
    PayloadFailed {
        message: String,
    },
}

impl EndReason {
    /// Whether the run ended before what it set out to measure was measured.
    pub fn is_partial(&self) -> bool {
        matches!(self, EndReason::Interrupted | EndReason::TargetUnreachable { .. } | EndReason::PayloadFailed { .. })
    }
}

pub struct RunRecord {
    pub steps: Vec<StepRecord>,
    pub seconds: Vec<SecondSummary>,
    /// Every failure of the run by class, ramp-ins and the last, unfinished second included.
    pub errors: ErrorCounts,
    pub end: EndReason,
    pub elapsed_s: u64,
}

pub struct DriveOptions<'a> {
    pub schedule: &'a Schedule,
    pub traffic: &'a TrafficOptions,
    /// Seeds Poisson arrivals.
    pub seed: u64,
    pub max_invocations: Option<u64>,
    /// `[requirements]`' latency goal, which a search's boundary steps run on until they can tell apart from it.
    pub goal: Option<LatencyThreshold>,
    /// What a good response is, for goodput.
    pub goodput: GoodputGoals,
    /// Where each second's full histogram is streamed, one JSON line per second.
    pub series_path: Option<&'a Path>,
    /// The share of the load this process sends (`Segment::whole()` unless the run is a shard); the schedule's
    /// steps and loads stay the whole run's, and each second records this shard's share.
    pub segment: Segment,
    pub cancel: CancellationToken,
}

/// The step's throughput interval is within the target, over enough seconds to say so.
fn reached(precision: &StepPrecision, step: &StepRecord) -> bool {
    step.completed_per_second.len() >= MIN_SECONDS_FOR_PRECISION
        && step
            .throughput_interval_rps()
            .is_some_and(|interval| interval.half_width_percent(step.throughput_rps()) <= precision.target_percent)
}

/// A boundary step whose percentile's interval still holds the goal: it cannot yet say on which side of the
/// goal its load lies, and the bisection would follow the noise.
fn undecided(goal: &LatencyThreshold, step: &StepRecord) -> bool {
    step.window.role == StepRole::Boundary
        && step
            .latency_intervals_so_far()
            .is_none_or(|intervals| intervals.at(goal.percentile.value()).contains(goal.latency_ms))
}

/// The step is due to end but should run on: measured (a probe is short by design), below its maximum duration,
/// serving (a step of nothing but errors has no throughput to make precise), and either not precise yet or, on
/// the goal's boundary, undecided.
fn extends(precision: &StepPrecision, goal: Option<&LatencyThreshold>, step: &StepRecord) -> bool {
    step.window.role != StepRole::Probe
        && step.window.end_s - step.window.start_s < precision.max_step_duration_s
        && step.steady.completed > 0
        && (!reached(precision, step) || goal.is_some_and(|goal| undecided(goal, step)))
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
    let recorder = Arc::new(Recorder::new(4 * workers, options.goodput));
    let mut series = options.series_path.map(File::create).transpose()?.map(BufWriter::new);
    let started_at = Instant::now();
    let run = options.cancel.child_token();
    // The steps as they run: a step that is not yet precise runs on and moves the later ones, and search mode adds
    // each step when the one before it ends.
    let mut windows = schedule.steps.clone();
    let first_load = windows.first().map_or(0.0, |window| window.load);
    let segment = options.segment;
    let mut load = match schedule.load_unit {
        LoadUnit::Users => {
            let think_time = Duration::from_millis(options.traffic.think_time_ms);
            let mut users = VirtualUsers::new(target, Arc::clone(&recorder), run.clone(), think_time);
            users.set(segment.users(first_load as u32));
            tokio::spawn(lag_probe(Arc::clone(&recorder), run.clone()));
            Load::Closed { users, segment }
        }
        LoadUnit::RequestsPerSecond => {
            let rate_per_s = Arc::new(AtomicU64::new(first_load.to_bits()));
            let arrivals = OpenArrivals {
                rate_per_s: Arc::clone(&rate_per_s),
                options: *options.traffic,
                seed: options.seed,
                segment,
                started_at,
            };
            Load::Open { scheduler: tokio::spawn(arrivals.run(target, Arc::clone(&recorder), run.clone())), rate_per_s }
        }
    };
    let mut control = tokio::time::interval(CONTROL_TICK);
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut steps: Vec<StepRecord> = Vec::new();
    let mut seconds: Vec<SecondSummary> = Vec::new();
    let mut current = new_step(&windows, 0);
    let mut second_tally = Tally::default();
    let mut errors = ErrorCounts::default();
    let mut total_completed = 0;
    let mut unreachable_s = 0;
    let mut resource_totals = ResourceTotals::default();
    let mut own_cpu = OwnCpu::default();
    own_cpu.sample();
    let mut second: u64 = 0;
    // Requests sent and finished so far, for the requests in flight at each second's end.
    let (mut sent, mut finished) = (0u64, 0u64);
    let mut in_flight: u64;
    // An open-model boundary step comes after overloaded steps (the probe's last, or the plateau's) and would
    // inherit their backlog, which a step below the capacity drains only slowly and which would count against its
    // latency: arrivals pause until nothing is in flight, and the step starts after that.
    let mut draining = false;
    let mut drained_s = 0;

    let end = loop {
        let Some(window) = windows.get(current.window.index).cloned() else {
            break EndReason::Completed;
        };
        let boundary = started_at + Duration::from_secs(second + 1);
        tokio::select! {
            biased;
            _ = options.cancel.cancelled() => break EndReason::Interrupted,
            _ = tokio::time::sleep_until(boundary.into()) => {}
            _ = control.tick() => {
                if let Some(message) = recorder.fault() {
                    break EndReason::PayloadFailed { message: message.to_string() };
                }
                load.follow(if draining { 0.0 } else { load_now(schedule, &window, started_at.elapsed().as_secs_f64()) });
                continue;
            }
        }

        second_tally.reset();
        recorder.drain_into(&mut second_tally);
        let sample = ResourceSample {
            generator_cpu_percent: own_cpu.sample(),
            ..resources.as_mut().map(|source| source.sample()).unwrap_or_default()
        };
        let shard_load = segment.share(window.load, schedule.load_unit == LoadUnit::Users);
        let summary = SecondSummary::of(second, shard_load, &second_tally, sample);
        if let Some(series) = series.as_mut() {
            write_second(series, &summary, &second_tally)?;
        }
        observer.on_second(&summary, &second_tally, &window);
        seconds.push(summary);

        sent += second_tally.started;
        finished += second_tally.completed + second_tally.errors.total();
        in_flight = sent.saturating_sub(finished);
        if draining {
            // The step, its steady part and the steps after it start a second later.
            lengthen(&mut windows, window.index, true);
            current.window = windows[window.index].clone();
            drained_s += 1;
            draining = in_flight > 0 && drained_s < MAX_DRAIN_S;
        } else if second >= window.steady_start_s {
            current.add_second(&second_tally);
            resource_totals.add(sample);
        }
        total_completed += second_tally.completed;
        errors.merge(&second_tally.errors);
        let only_connect_errors = second_tally.completed == 0 && second_tally.errors.connect > 0;
        unreachable_s = if only_connect_errors { unreachable_s + 1 } else { 0 };
        second += 1;

        if unreachable_s >= UNREACHABLE_AFTER_S {
            break EndReason::TargetUnreachable { seconds: unreachable_s };
        }
        // The step may have waited for a backlog to drain this second: its end is the one in `windows`.
        let end_s = windows[window.index].end_s;
        if second == end_s
            && options.traffic.precision.is_some_and(|precision| extends(&precision, options.goal.as_ref(), &current))
        {
            // Not yet precise enough, or undecided, and below its maximum duration: the step runs a second longer.
            lengthen(&mut windows, window.index, false);
            current.window = windows[window.index].clone();
        } else if second == end_s {
            current.complete = true;
            current.converged = converged(options.traffic.precision, &current);
            current.resources = std::mem::take(&mut resource_totals).mean();
            current.finish();
            steps.push(std::mem::replace(&mut current, new_step(&windows, usize::MAX)));
            match observer.on_step(&steps) {
                StepVerdict::Stop(reason) => break EndReason::Stopped { reason },
                StepVerdict::Then(next) => {
                    windows.truncate(window.index + 1);
                    windows.push(StepWindow::new(window.index + 1, second, next.duration_s, next.load, next.role));
                }
                StepVerdict::Continue => {}
            }
            current = new_step(&windows, window.index + 1);
            draining = windows.get(window.index + 1).is_some_and(|next| {
                next.role == StepRole::Boundary && schedule.load_unit == LoadUnit::RequestsPerSecond && in_flight > 0
            });
            drained_s = 0;
        }
        if let Some(max) = options.max_invocations.filter(|max| total_completed >= *max) {
            break EndReason::MaxInvocations { invocations: max };
        }
        if windows.get(current.window.index).is_some() {
            load.follow(if draining { 0.0 } else { load_now(schedule, &current.window, second as f64) });
        }
    };
    run.cancel();
    load.stop().await;
    // A run cut short keeps its last, unfinished second in the series: those requests were measured too. It is not
    // merged into a step, whose figures are per whole second.
    second_tally.reset();
    recorder.drain_into(&mut second_tally);
    errors.merge(&second_tally.errors);
    if end.is_partial() && (second_tally.started > 0 || second_tally.errors.total() > 0) {
        let load = windows.get(current.window.index).map_or(0.0, |window| window.load);
        let shard_load = segment.share(load, schedule.load_unit == LoadUnit::Users);
        let summary = SecondSummary::of(second, shard_load, &second_tally, ResourceSample::default());
        if let Some(series) = series.as_mut() {
            write_second(series, &summary, &second_tally)?;
        }
        seconds.push(summary);
    }
    if let Some(mut series) = series {
        series.flush()?;
    }
    if !current.completed_per_second.is_empty() {
        current.resources = resource_totals.mean();
        current.converged = converged(options.traffic.precision, &current);
        current.finish();
        steps.push(current);
    }
    Ok(RunRecord { steps, seconds, errors, end, elapsed_s: second })
}

/// Step `index` ends a second later (and, while its backlog drains, its steady part starts a second later);
/// every later step moves with it.
fn lengthen(windows: &mut [StepWindow], index: usize, draining: bool) {
    windows[index].end_s += 1;
    if draining {
        windows[index].steady_start_s += 1;
    }
    for later in &mut windows[index + 1..] {
        later.start_s += 1;
        later.steady_start_s += 1;
        later.end_s += 1;
    }
}

/// Whether a step reached the precision asked for; a probe is not held to it.
pub fn converged(precision: Option<StepPrecision>, step: &StepRecord) -> bool {
    step.window.role == StepRole::Probe || precision.is_none_or(|precision| reached(&precision, step))
}

/// The load to follow now: a stepped pattern holds its current step's load (through the warm-up, and while a step
/// runs on); phases and rate ramps change theirs continuously.
fn load_now(schedule: &Schedule, step: &StepWindow, elapsed_s: f64) -> f64 {
    if schedule.is_stepped() { step.load } else { schedule.load_at(elapsed_s) }
}

fn new_step(windows: &[StepWindow], index: usize) -> StepRecord {
    let window = windows.get(index).cloned().unwrap_or(StepWindow::new(index, 0, 0, 0.0, StepRole::Measured));
    new_step_for(window)
}

/// What generates the load: virtual users (this shard's of them), or the open model's arrival scheduler and the
/// whole run's rate it draws arrivals at (keeping this shard's).
enum Load<T: Target> {
    Closed { users: VirtualUsers<T>, segment: Segment },
    Open { scheduler: JoinHandle<()>, rate_per_s: Arc<AtomicU64> },
}

impl<T: Target> Load<T> {
    /// Brings the number of virtual users, or the offered rate, to `load`.
    fn follow(&mut self, load: f64) {
        match self {
            Load::Closed { users, segment } => users.set(segment.users(load as u32)),
            Load::Open { rate_per_s, .. } => rate_per_s.store(load.to_bits(), Ordering::Relaxed),
        }
    }

    async fn stop(self) {
        match self {
            Load::Closed { users, .. } => users.stop().await,
            Load::Open { scheduler, .. } => {
                let _ = scheduler.await;
            }
        }
    }
}
