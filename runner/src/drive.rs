//! The load engine. Closed model: virtual users on tokio, one session (connection) each, following the traffic
//! pattern. Open model: a scheduler sends requests at their intended times on a pool of owned sessions, whatever
//! the server does, and times each from its intended send time, so a stalled server cannot hide its stall.
//! Everything records into a sharded `Recorder`; a control loop drains it at every second boundary, streams the
//! second to disk, folds steady seconds into per-step tallies and asks the observer whether to go on. The engine
//! watches its own lateness and marks steps where it could not keep its schedule.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Exp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::measure::process_tree::OwnCpu;
use crate::measure::{self, ErrorClass, Outcome, Recorder, ResourceSample, ResourceSource, Tally};
use crate::spec::{Arrivals, Traffic, TrafficOptions};
use crate::target::{Session, Target, precise_timer};

/// How often the number of users is brought up to the schedule between second boundaries.
const CONTROL_TICK: Duration = Duration::from_millis(50);
/// Phases and rate ramps are analysed in windows of this length, since their load changes continuously.
const WINDOW_S: u64 = 10;
/// Seconds in a row with nothing but connection errors after which the target counts as gone.
const UNREACHABLE_AFTER_S: u32 = 3;
/// How often the closed model's probe checks that the runtime wakes tasks on time.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// The closed model's probe sleeps on tokio's timer, which has 1 ms resolution and rounds up, so an idle engine is
/// already up to ~2 ms late at p99 (measured on the 2-core CI machine). Beyond this the load generator is not
/// keeping its schedule (out of CPU, or blocked), and the step measures plateau, not the server.
pub const GENERATOR_LAG_LIMIT_MS: f64 = 5.0;
/// plateau's own CPU use, as a share of the cores it may use, beyond which it is out of CPU: the step measured the
/// load generator's limit (with the reference endpoint, which runs inside plateau, both share this budget).
pub const GENERATOR_CPU_LIMIT_PERCENT: f64 = 95.0;

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

/// One second of the run, as kept in memory and in results (its histograms go to the series file only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    pub second: u64,
    /// Virtual users, or offered requests per second.
    pub load: f64,
    pub started: u64,
    pub completed: u64,
    /// Open model: arrivals not sent because `max_in_flight` requests were in flight.
    #[serde(default)]
    pub dropped: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// p99 of how late the load generator acted against its own schedule.
    #[serde(default)]
    pub generator_lag_p99_ms: f64,
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

    pub fn generator_lag_p99_ms(&self) -> f64 {
        measure::percentile_ms(&self.steady.generator_lag_us, 99.0)
    }

    /// The load generator could not keep its schedule, or ran out of CPU: the step measured plateau's limit, not
    /// the server's.
    pub fn generator_saturated(&self) -> bool {
        self.generator_lag_p99_ms() > GENERATOR_LAG_LIMIT_MS
            || self.resources.generator_cpu_percent.is_some_and(|percent| percent >= GENERATOR_CPU_LIMIT_PERCENT)
    }
}

/// What the observer tells the engine after each step.
pub enum StepVerdict {
    Continue,
    Stop(String),
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
    pub end: EndReason,
    pub elapsed_s: u64,
}

pub struct DriveOptions<'a> {
    pub schedule: &'a Schedule,
    pub traffic: &'a TrafficOptions,
    /// Seeds Poisson arrivals.
    pub seed: u64,
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
    let started_at = Instant::now();
    let run = options.cancel.child_token();
    let mut load = match schedule.load_unit {
        LoadUnit::Users => {
            let mut users = VirtualUsers {
                target,
                recorder: Arc::clone(&recorder),
                run: run.clone(),
                active: Vec::new(),
                think_time: Duration::from_millis(options.traffic.think_time_ms),
            };
            users.set(schedule.users_at(0.0));
            tokio::spawn(lag_probe(Arc::clone(&recorder), run.clone()));
            Load::Closed(users)
        }
        LoadUnit::RequestsPerSecond => {
            let arrivals =
                OpenArrivals { schedule: schedule.clone(), options: *options.traffic, seed: options.seed, started_at };
            Load::Open(tokio::spawn(arrivals.run(target, Arc::clone(&recorder), run.clone())))
        }
    };
    let mut control = tokio::time::interval(CONTROL_TICK);
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut steps: Vec<StepRecord> = Vec::new();
    let mut seconds: Vec<SecondSummary> = Vec::new();
    let mut current = new_step(schedule, 0);
    let mut second_tally = Tally::default();
    let mut total_completed = 0;
    let mut unreachable_s = 0;
    let mut resource_totals = ResourceTotals::default();
    let mut own_cpu = OwnCpu::default();
    own_cpu.sample();
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
                if let Some(message) = recorder.fault() {
                    break EndReason::PayloadFailed { message: message.to_string() };
                }
                load.follow(schedule, started_at.elapsed().as_secs_f64());
                continue;
            }
        }

        second_tally.reset();
        recorder.drain_into(&mut second_tally);
        let sample = ResourceSample {
            generator_cpu_percent: own_cpu.sample(),
            ..resources.as_mut().map(|source| source.sample()).unwrap_or_default()
        };
        let summary = summarize_second(second, schedule, &second_tally, sample);
        if let Some(series) = series.as_mut() {
            write_second(series, &summary, &second_tally)?;
        }
        observer.on_second(&summary, &second_tally, &window);
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
        load.follow(schedule, second as f64);
    };
    run.cancel();
    load.stop().await;
    // A run cut short keeps its last, unfinished second in the series: those requests were measured too. It is not
    // merged into a step, whose figures are per whole second.
    second_tally.reset();
    recorder.drain_into(&mut second_tally);
    if end.is_partial() && (second_tally.started > 0 || second_tally.errors.total() > 0) {
        let summary = summarize_second(second, schedule, &second_tally, ResourceSample::default());
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
        steps.push(current);
    }
    Ok(RunRecord { steps, seconds, end, elapsed_s: second })
}

fn summarize_second(second: u64, schedule: &Schedule, tally: &Tally, resources: ResourceSample) -> SecondSummary {
    SecondSummary {
        second,
        load: schedule.load_at(second as f64 + 0.5),
        started: tally.started,
        completed: tally.completed,
        dropped: tally.dropped,
        errors: tally.errors.total(),
        p50_ms: measure::percentile_ms(&tally.latency_us, 50.0),
        p99_ms: measure::percentile_ms(&tally.latency_us, 99.0),
        generator_lag_p99_ms: measure::percentile_ms(&tally.generator_lag_us, 99.0),
        resources,
    }
}

fn new_step(schedule: &Schedule, index: usize) -> StepRecord {
    let window = schedule.steps.get(index).cloned().unwrap_or(StepWindow {
        index,
        start_s: 0,
        end_s: 0,
        steady_start_s: 0,
        load: 0.0,
    });
    new_step_for(window)
}

fn new_step_for(window: StepWindow) -> StepRecord {
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
    generator_cpu_percent: Option<f64>,
}

impl ResourceTotals {
    fn add(&mut self, sample: ResourceSample) {
        let first = self.seconds == 0;
        let sum = |total: Option<f64>, value: Option<f64>| {
            if first { value } else { total.zip(value).map(|(a, b)| a + b) }
        };
        self.cpu_percent = sum(self.cpu_percent, sample.cpu_percent);
        self.memory_percent = sum(self.memory_percent, sample.memory_percent);
        self.generator_cpu_percent = sum(self.generator_cpu_percent, sample.generator_cpu_percent);
        self.seconds += 1;
    }

    fn mean(self) -> ResourceSample {
        let seconds = f64::from(self.seconds.max(1));
        ResourceSample {
            cpu_percent: self.cpu_percent.map(|total| total / seconds),
            memory_percent: self.memory_percent.map(|total| total / seconds),
            generator_cpu_percent: self.generator_cpu_percent.map(|total| total / seconds),
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

/// A line of the series file, read back.
#[derive(Deserialize)]
struct SeriesRecord {
    #[serde(flatten)]
    summary: SecondSummary,
    error_counts: measure::ErrorCounts,
    histogram: String,
}

/// Rebuilds a window's measurements from the series file, exactly: how a sliding window of `phases` (which no
/// step in memory covers) gets its latency distribution without keeping every second's histogram in memory.
pub fn window_from_series(path: &Path, window: StepWindow) -> anyhow::Result<StepRecord> {
    let mut record = new_step_for(window);
    let mut resources = ResourceTotals::default();
    for line in std::fs::read_to_string(path)?.lines() {
        let parsed: SeriesRecord = serde_json::from_str(line)?;
        let second = &parsed.summary;
        if !(record.window.start_s..record.window.end_s).contains(&second.second) {
            continue;
        }
        let mut tally = Tally {
            started: second.started,
            completed: second.completed,
            dropped: second.dropped,
            errors: parsed.error_counts,
            ..Tally::default()
        };
        tally.latency_us = measure::decode_histogram(&parsed.histogram)?;
        record.steady.merge(&tally);
        record.completed_per_second.push(second.completed);
        resources.add(second.resources);
    }
    record.complete = !record.completed_per_second.is_empty();
    record.resources = resources.mean();
    Ok(record)
}

fn write_second(series: &mut BufWriter<File>, summary: &SecondSummary, tally: &Tally) -> std::io::Result<()> {
    let line =
        SeriesLine { summary, error_counts: tally.errors, histogram: measure::encode_histogram(&tally.latency_us) };
    serde_json::to_writer(&mut *series, &line)?;
    series.write_all(b"\n")?;
    // Flushed every second so an abrupt end loses at most the second in progress.
    series.flush()
}

/// What generates the load: virtual users that follow the schedule, or the open model's arrival scheduler.
enum Load<T: Target> {
    Closed(VirtualUsers<T>),
    Open(JoinHandle<()>),
}

impl<T: Target> Load<T> {
    /// Brings the number of virtual users to the schedule; the open model follows it by itself.
    fn follow(&mut self, schedule: &Schedule, elapsed_s: f64) {
        if let Load::Closed(users) = self {
            users.set(schedule.users_at(elapsed_s));
        }
    }

    async fn stop(self) {
        match self {
            Load::Closed(users) => users.stop().await,
            Load::Open(scheduler) => {
                let _ = scheduler.await;
            }
        }
    }
}

/// Measures how late the runtime wakes a sleeping task: when the closed model's users are delayed by a busy
/// load generator, this is delayed too.
async fn lag_probe(recorder: Arc<Recorder>, run: CancellationToken) {
    let mut due = tokio::time::Instant::now() + PROBE_INTERVAL;
    loop {
        tokio::select! {
            _ = run.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        recorder.generator_lag(0, lag.as_micros() as u64);
        due = tokio::time::Instant::now() + PROBE_INTERVAL;
    }
}

/// How far ahead of its due time the scheduler hands an arrival to a worker, which then waits for it on the
/// precise timer ...
const DISPATCH_AHEAD: Duration = Duration::from_millis(2);
/// ... so the scheduler wakes at most once per tick, however high the rate: a round's arrivals are made before
/// the dispatch lock is taken, and handed out under it in one go.
const SCHEDULER_TICK: Duration = Duration::from_millis(1);

/// The open model's scheduler. Each arrival is due at an intended time. While fewer than `max_in_flight` requests
/// are out, it goes to a worker (each worker owns one session, and takes the next arrival as soon as it is free);
/// otherwise it is dropped and counted.
struct OpenArrivals {
    schedule: Schedule,
    options: TrafficOptions,
    seed: u64,
    started_at: Instant,
}

/// What the scheduler and its workers share.
struct OpenShared {
    recorder: Arc<Recorder>,
    dispatch: std::sync::Mutex<Dispatch>,
}

/// Who takes the next arrival. Held only for a few pushes and pops, never across an await.
#[derive(Default)]
struct Dispatch {
    /// Free workers, each with its next request prepared.
    idle: Vec<usize>,
    /// Arrivals handed out ahead of their due time that found no free worker: the first worker to come free
    /// before one is due takes it. One still here when it falls due had all `max_in_flight` workers busy at its
    /// time, and is dropped.
    pending: std::collections::VecDeque<Instant>,
}

impl Dispatch {
    /// Drops the pending arrivals that fell due with no worker free; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let expired = self.pending.iter().take_while(|due| **due < now).count();
        self.pending.drain(..expired);
        expired as u64
    }
}

impl OpenArrivals {
    async fn run<T: Target>(self, target: Arc<T>, recorder: Arc<Recorder>, run: CancellationToken) {
        let shared = Arc::new(OpenShared { recorder, dispatch: std::sync::Mutex::new(Dispatch::default()) });
        let cap = self.options.max_in_flight as usize;
        // Each worker's own queue of due times; it never holds more than one.
        let mut workers: Vec<mpsc::UnboundedSender<Instant>> = Vec::new();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let end = self.started_at + Duration::from_secs(self.schedule.duration_s());
        let mut due = self.started_at;
        let mut round: Vec<Instant> = Vec::new();
        let mut next_round = self.started_at;
        let cancelled = run.cancelled();
        tokio::pin!(cancelled);
        while due < end {
            // At least a tick between rounds; a slow rate sleeps until its next arrival is near.
            let wake = due.checked_sub(DISPATCH_AHEAD).unwrap_or(due).max(next_round);
            tokio::select! {
                _ = &mut cancelled => return,
                _ = precise_timer::sleep_until(wake) => {}
            }
            let now = Instant::now();
            next_round = now + SCHEDULER_TICK;
            let horizon = now + DISPATCH_AHEAD;
            round.clear();
            while due <= horizon && due < end {
                round.push(due);
                let rate_per_s = self.schedule.load_at(due.duration_since(self.started_at).as_secs_f64());
                let gap_s = match self.options.arrivals {
                    Arrivals::Uniform => 1.0 / rate_per_s,
                    Arrivals::Poisson => Exp::new(rate_per_s).map_or(1.0 / rate_per_s, |exp| exp.sample(&mut rng)),
                };
                due += Duration::from_secs_f64(gap_s);
            }
            let dropped = {
                let mut dispatch = shared.dispatch.lock().expect("dispatch lock");
                let mut dropped = dispatch.expire(now);
                for &arrival in &round {
                    match dispatch.idle.pop() {
                        Some(worker) => {
                            let _ = workers[worker].send(arrival);
                        }
                        // Every worker is busy: a new one while fewer than `max_in_flight` exist.
                        None if workers.len() < cap => {
                            let (sender, arrivals) = mpsc::unbounded_channel();
                            let _ = sender.send(arrival);
                            let worker = open_worker(
                                target.session(),
                                workers.len(),
                                arrivals,
                                Arc::clone(&shared),
                                run.clone(),
                            );
                            tokio::spawn(worker);
                            workers.push(sender);
                        }
                        None if arrival < now => dropped += 1,
                        None => dispatch.pending.push_back(arrival),
                    }
                }
                dropped
            };
            if dropped > 0 {
                shared.recorder.add_dropped(0, dropped);
            }
        }
    }
}

/// An arrival due within this is sent at once: a wake on the precise timer is a round trip through another thread,
/// which costs more than the wait (at rates beyond capacity every arrival a worker takes is due within
/// microseconds), and is itself late by about this much.
const SEND_EARLY_WITHIN: Duration = Duration::from_micros(50);

/// One open-model worker: takes an arrival (handed to it, or the next pending one when it comes free), waits for
/// its due time, sends it, and times it from when it was due, not from when it went out: a server that stalls
/// delays every request scheduled behind the stall, and their latency shows it.
async fn open_worker<S: Session>(
    mut session: S,
    index: usize,
    mut arrivals: mpsc::UnboundedReceiver<Instant>,
    shared: Arc<OpenShared>,
    run: CancellationToken,
) {
    let shard = shared.recorder.shard_for(index);
    // A new worker is born with its first arrival already queued; after that it comes free between requests.
    let mut free = false;
    // Waited on by reference: registering a new waiter with the token on every request costs a lock.
    let cancelled = run.cancelled();
    tokio::pin!(cancelled);
    loop {
        // The next body is made before the worker is free for an arrival, never between its due time and sending.
        if let Err(message) = session.prepare() {
            shared.recorder.fail(message);
            return;
        }
        let claimed = free.then(|| {
            let mut dispatch = shared.dispatch.lock().expect("dispatch lock");
            let expired = dispatch.expire(Instant::now());
            let next = dispatch.pending.pop_front();
            if next.is_none() {
                dispatch.idle.push(index);
            }
            (next, expired)
        });
        free = true;
        let due = match claimed {
            Some((next, expired)) => {
                if expired > 0 {
                    shared.recorder.add_dropped(shard, expired);
                }
                next
            }
            None => None,
        };
        let due = match due {
            Some(due) => due,
            None => {
                let next = tokio::select! {
                    _ = &mut cancelled => return,
                    next = arrivals.recv() => next,
                };
                let Some(due) = next else { return };
                due
            }
        };
        if due.saturating_duration_since(Instant::now()) > SEND_EARLY_WITHIN {
            precise_timer::sleep_until(due).await;
        }
        let sent_at = Instant::now();
        shared.recorder.generator_lag(shard, sent_at.saturating_duration_since(due).as_micros() as u64);
        shared.recorder.started(shard);
        let outcome = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            outcome = session.call() => outcome,
        };
        // From the due time when it went out late; from when it went out when that was (slightly) early.
        let outcome = outcome.retimed(due.min(sent_at).elapsed().as_micros() as u64);
        shared.recorder.finished(shard, outcome);
    }
}

/// The running virtual users; user `i` exists while the schedule asks for more than `i` users.
struct VirtualUsers<T: Target> {
    target: Arc<T>,
    recorder: Arc<Recorder>,
    run: CancellationToken,
    active: Vec<(CancellationToken, JoinHandle<()>)>,
    think_time: Duration,
}

impl<T: Target> VirtualUsers<T> {
    fn set(&mut self, count: u32) {
        let count = count as usize;
        while self.active.len() < count {
            let token = self.run.child_token();
            let shard = self.recorder.shard_for(self.active.len());
            let user =
                virtual_user(self.target.session(), Arc::clone(&self.recorder), shard, self.think_time, token.clone());
            let task = tokio::spawn(user);
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

async fn virtual_user<S: Session>(
    mut session: S,
    recorder: Arc<Recorder>,
    shard: usize,
    think_time: Duration,
    token: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    let mut backoff = FIRST_BACKOFF;
    // Waited on by reference: registering a new waiter with the token on every request costs a lock.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        if let Err(message) = session.prepare() {
            recorder.fail(message);
            return;
        }
        recorder.started(shard);
        let outcome = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            outcome = session.call() => outcome,
        };
        recorder.finished(shard, outcome);
        // A refused connection returns at once: back off so a dead target is not hammered in a tight loop.
        if outcome == (Outcome::Failure { class: ErrorClass::Connect }) {
            tokio::select! {
                _ = &mut cancelled => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            backoff = FIRST_BACKOFF;
            if !think_time.is_zero() {
                tokio::select! {
                    _ = &mut cancelled => return,
                    _ = tokio::time::sleep(think_time) => {}
                }
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
    fn a_step_is_saturated_when_the_generator_is_late_or_out_of_cpu() {
        let step = |lag_us: u64, generator_cpu_percent: Option<f64>| {
            let mut step = new_step_for(StepWindow { index: 0, start_s: 0, end_s: 5, steady_start_s: 1, load: 1.0 });
            step.steady.generator_lag_us.record(lag_us).unwrap();
            step.resources.generator_cpu_percent = generator_cpu_percent;
            step
        };
        assert!(!step(2_000, Some(60.0)).generator_saturated());
        assert!(!step(2_000, None).generator_saturated(), "no reading is no verdict");
        assert!(step(8_000, Some(60.0)).generator_saturated(), "late");
        assert!(step(2_000, Some(97.0)).generator_saturated(), "out of CPU");
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
