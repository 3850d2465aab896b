//! `[traffic]`: the load pattern, virtual users (closed model) or an arrival rate (open model), and the options
//! every pattern shares (warm-up, arrivals, in-flight cap, think time).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::{DurationValue, at_least_one, count_within, span_of, whole_seconds};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Traffic")]
pub(super) struct RawTraffic {
    /// Virtual-user steps (closed model): users per step, step duration and count.
    #[schemars(with = "Option<RawStairs>")]
    stairs: Option<Spanned<RawStairs>>,
    /// Virtual-user phases, as Inference Recommender's Phases: initial users, spawn rate, duration.
    #[schemars(with = "Option<Vec<RawPhase>>")]
    phases: Option<Spanned<Vec<Spanned<RawPhase>>>>,
    /// Offered-rate steps (open model): start, step and count.
    #[schemars(with = "Option<RawRateSteps>")]
    rate_steps: Option<Spanned<RawRateSteps>>,
    /// An offered rate rising linearly (open model).
    #[schemars(with = "Option<RawRateRamp>")]
    rate_ramp: Option<Spanned<RawRateRamp>>,
    /// One offered rate for a fixed time (open model).
    #[schemars(with = "Option<RawConstantRate>")]
    constant_rate: Option<Spanned<RawConstantRate>>,
    #[schemars(with = "Option<RawSearch>")]
    search: Option<Spanned<RawSearch>>,
    #[schemars(with = "Option<DurationValue>")]
    warmup: Option<Spanned<DurationValue>>,
    #[schemars(with = "Option<Arrivals>")]
    arrivals: Option<Spanned<Arrivals>>,
    /// Open model: requests outstanding at most; arrivals beyond it are dropped and counted (default 1024).
    #[schemars(with = "Option<u32>")]
    max_in_flight: Option<Spanned<u32>>,
    #[schemars(with = "Option<DurationValue>")]
    think_time: Option<Spanned<DurationValue>>,
    /// Steps run past `step_duration` until half their throughput interval is within this percentage of it.
    #[schemars(with = "Option<f64>")]
    precision_percent: Option<Spanned<f64>>,
    /// The longest a step may run to reach `precision_percent`, or (a search's boundary step) until its percentile's
    /// interval clears the latency goal (default: three times `step_duration`).
    #[schemars(with = "Option<DurationValue>")]
    max_step_duration: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateSteps")]
pub(super) struct RawRateSteps {
    /// The first step's offered rate, requests per second.
    #[schemars(with = "f64")]
    start_rate_per_s: Spanned<f64>,
    /// How much each step adds to the rate, requests per second.
    #[schemars(with = "f64")]
    step_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    step_duration: Spanned<DurationValue>,
    /// How many steps.
    #[schemars(with = "u32")]
    steps: Spanned<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateRamp")]
pub(super) struct RawRateRamp {
    /// The offered rate at the ramp's start, requests per second.
    #[schemars(with = "f64")]
    from_rate_per_s: Spanned<f64>,
    /// The offered rate at the ramp's end, requests per second.
    #[schemars(with = "f64")]
    to_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConstantRate")]
pub(super) struct RawConstantRate {
    /// The offered rate, requests per second.
    #[schemars(with = "f64")]
    rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

/// Search mode: a probe doubles the load from `start_users` (or `start_rate_per_s`) until throughput stops scaling,
/// then measured steps are placed around the capacity it found.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Search")]
pub(super) struct RawSearch {
    /// Virtual users of the first probe step (default 1); each probe step doubles them.
    #[schemars(with = "Option<u32>")]
    start_users: Option<Spanned<u32>>,
    /// The most virtual users the search may run (default 100000).
    #[schemars(with = "Option<u32>")]
    max_users: Option<Spanned<u32>>,
    /// Open model instead: the first probe step's offered rate; each probe step doubles it.
    #[schemars(with = "Option<f64>")]
    start_rate_per_s: Option<Spanned<f64>>,
    /// Open model: the highest rate the search may offer (default 1000000).
    #[schemars(with = "Option<f64>")]
    max_rate_per_s: Option<Spanned<f64>>,
    /// Each probe step's length (default 3s, of which the first second is not measured).
    #[schemars(with = "Option<DurationValue>")]
    probe_step_duration: Option<Spanned<DurationValue>>,
    /// Each measured step's length.
    #[schemars(with = "DurationValue")]
    step_duration: Spanned<DurationValue>,
    /// At most this many measured steps (default 12).
    #[schemars(with = "Option<u32>")]
    steps: Option<Spanned<u32>>,
}

/// How an open model spaces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly spaced.
    #[default]
    Uniform,
    /// Exponential gaps (a Poisson process), seeded by `[job] seed`.
    Poisson,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stairs")]
pub(super) struct RawStairs {
    /// Virtual users added at each step (the first step has this many).
    #[schemars(with = "u32")]
    users_per_step: Spanned<u32>,
    #[schemars(with = "DurationValue")]
    step_duration: Spanned<DurationValue>,
    /// How many steps.
    #[schemars(with = "u32")]
    steps: Spanned<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Phase")]
pub(super) struct RawPhase {
    /// Virtual users at the phase's start.
    #[schemars(with = "u32")]
    initial_users: Spanned<u32>,
    /// Users added per second through the phase, from `initial_users` (Inference Recommender's SpawnRate).
    #[schemars(with = "f64")]
    spawn_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    /// `steps` steps of `step_duration_s` each; step i runs `users_per_step * (i + 1)` users.
    Stairs {
        users_per_step: u32,
        step_duration_s: u64,
        steps: u32,
    },
    Phases(Vec<Phase>),
    /// Open model: `steps` steps of `step_duration_s`; step i offers `start_rate_per_s + i * step_rate_per_s`
    /// requests per second whatever the server does. A constant rate is one step.
    RateSteps {
        start_rate_per_s: f64,
        step_rate_per_s: f64,
        step_duration_s: u64,
        steps: u32,
    },
    /// Open model: the offered rate rises linearly over `duration_s`; analysed in 10 s windows.
    RateRamp {
        from_rate_per_s: f64,
        to_rate_per_s: f64,
        duration_s: u64,
    },
    /// Steps chosen as the run goes: a doubling probe, then measured steps around the capacity it found.
    Search(Search),
}

impl Traffic {
    /// Whether requests arrive on a schedule (open model) rather than from a number of users (closed).
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            Traffic::RateSteps { .. }
                | Traffic::RateRamp { .. }
                | Traffic::Search(Search { load: SearchLoad::RatePerSecond { .. }, .. })
        )
    }
}

/// Search mode (`[traffic.search]`), validated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub load: SearchLoad,
    pub probe_step_s: u64,
    pub step_duration_s: u64,
    /// Measured steps at most.
    pub max_steps: u32,
}

/// Where search mode starts and how far it may go: virtual users (closed model) or an offered rate (open).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchLoad {
    Users { start: u32, max: u32 },
    RatePerSecond { start: f64, max: f64 },
}

impl Search {
    /// The measured steps' time a confirmed plateau takes at the fewest after `measured` of them: the knee's step,
    /// a flat one and `confirm_steps` more. What eliminating a configuration there saves, at least.
    pub fn fewest_remaining_s(&self, confirm_steps: usize, measured: usize) -> u64 {
        let fewest = (2 + confirm_steps).min(self.max_steps as usize);
        fewest.saturating_sub(measured) as u64 * self.step_duration_s
    }

    /// What a progress line says an elimination after `measured` steps saved.
    pub fn saved(&self, confirm_steps: usize, measured: usize) -> String {
        match self.fewest_remaining_s(confirm_steps, measured) {
            0 => "its remaining steps not run".to_string(),
            saved_s => format!("at least {saved_s} s of measured steps saved"),
        }
    }

    /// The probe at its longest, every step from the start doubled up to the maximum load.
    pub fn longest_probe_s(&self) -> u64 {
        let first_s = self.probe_step_s.max(FIRST_PROBE_STEP_S);
        first_s + u64::from(self.load.probe_steps() - 1) * self.probe_step_s
    }
}

impl SearchLoad {
    pub fn start(&self) -> f64 {
        match self {
            SearchLoad::Users { start, .. } => f64::from(*start),
            SearchLoad::RatePerSecond { start, .. } => *start,
        }
    }

    pub fn max(&self) -> f64 {
        match self {
            SearchLoad::Users { max, .. } => f64::from(*max),
            SearchLoad::RatePerSecond { max, .. } => *max,
        }
    }

    /// Probe steps at most: the start, doubled until the maximum.
    fn probe_steps(&self) -> u32 {
        // A start refused as invalid (0) must not turn into an endless probe in the next error.
        let ratio = self.max() / self.start();
        if ratio.is_finite() && ratio > 1.0 { ratio.log2().ceil() as u32 + 1 } else { 1 }
    }
}

/// Search mode's probe steps last long enough for two measured seconds.
pub const DEFAULT_PROBE_STEP_S: u64 = 3;
/// The probe's first step, at the lowest load, runs at least this long: four measured seconds give its latency an
/// interval racing can rely on (a configuration that misses the goal there stops at once), and the base latency
/// Little's law places the knee with.
pub const FIRST_PROBE_STEP_S: u64 = 5;
/// Measured steps enough to climb from the knee to a confirmed plateau, with room to double several times when the
/// probe was wrong.
pub const DEFAULT_SEARCH_STEPS: u32 = 12;

/// Settings that apply to any traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrafficOptions {
    /// Seconds at the first step's load before the ramp; not measured.
    pub warmup_s: u64,
    pub arrivals: Arrivals,
    /// Open model: requests in flight at most; an arrival beyond it is dropped and counted.
    pub max_in_flight: u32,
    /// Closed model: how long a virtual user waits after a response before its next request (a person reading,
    /// a client batching). Zero sends back to back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub think_time_ms: u64,
    /// Stepped patterns: how precise each step's throughput must be before it ends. Absent for phases and rate
    /// ramps, whose load never holds still.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<StepPrecision>,
}

/// How precise a step's throughput must be before it ends, and how long it may run to get there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepPrecision {
    /// Half the 95% interval's width, as a percentage of the throughput.
    pub target_percent: f64,
    pub max_step_duration_s: u64,
}

/// Half-width of a step's throughput interval that ends it: GuideLLM's and perf_analyzer's stability margins are
/// of this order, and the reference endpoint reaches it within its minimum duration.
pub const DEFAULT_PRECISION_PERCENT: f64 = 5.0;
/// A step may run this many times its `step_duration` to reach its precision.
pub const DEFAULT_MAX_STEP_FACTOR: u64 = 3;

// Bounds on a ramp, each said in its error: a typo must not plan a run of years, or allocate in proportion to one.
/// Steps of a stepped pattern, or phases.
pub const MAX_STEPS: u32 = 1_000;
/// Virtual users at once: each is a task with its own connection.
pub const MAX_USERS: f64 = 100_000.0;
/// An open model's offered rate, requests per second.
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;
/// Any one duration of a ramp: a step, a phase, a warm-up.
pub const MAX_DURATION_S: u64 = 24 * 3600;
/// A whole ramp, warm-up and every step at its longest.
pub const MAX_RAMP_S: u64 = 7 * 24 * 3600;
/// A virtual user's pause between requests.
pub const MAX_THINK_TIME_MS: u64 = 3_600_000;
/// Requests in flight at once in the open model.
pub const MAX_IN_FLIGHT: u32 = 1_000_000;

const STEPS_HINT: &str = "a ramp of more steps than this is almost always a typo; split it into several jobs";

impl Traffic {
    /// The longest a ramp can last, in seconds: the warm-up, and every step run to its maximum.
    fn longest_s(&self, options: &TrafficOptions) -> u64 {
        let ramp_s = match self {
            Traffic::Stairs { steps, .. } | Traffic::RateSteps { steps, .. } => {
                let step_s = options.precision.map_or(self.step_duration_s().unwrap_or(0), |p| p.max_step_duration_s);
                u64::from(*steps) * step_s
            }
            Traffic::Phases(phases) => phases.iter().map(|phase| phase.duration_s).sum(),
            Traffic::RateRamp { duration_s, .. } => *duration_s,
            Traffic::Search(search) => {
                let step_s = options.precision.map_or(search.step_duration_s, |p| p.max_step_duration_s);
                search.longest_probe_s() + u64::from(search.max_steps) * step_s
            }
        };
        options.warmup_s + ramp_s
    }

    /// The duration of each step, for patterns whose load holds still step by step.
    pub fn step_duration_s(&self) -> Option<u64> {
        match self {
            Traffic::Stairs { step_duration_s, .. } | Traffic::RateSteps { step_duration_s, .. } => {
                Some(*step_duration_s)
            }
            Traffic::Search(search) => Some(search.step_duration_s),
            Traffic::Phases(_) | Traffic::RateRamp { .. } => None,
        }
    }
}

pub(super) fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Default for TrafficOptions {
    fn default() -> Self {
        Self { warmup_s: 0, arrivals: Arrivals::Uniform, max_in_flight: 1024, think_time_ms: 0, precision: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub initial_users: u32,
    pub spawn_rate_per_s: f64,
    pub duration_s: u64,
}

/// A rate in requests per second: finite, not negative (positive where `positive_only`), at most `MAX_RATE_PER_S`.
pub(super) fn rate(value: &Spanned<f64>, key: &str, positive_only: bool, sink: &mut DiagnosticSink<'_>) -> f64 {
    let number = *value.get_ref();
    if !number.is_finite() || number < 0.0 || (positive_only && number == 0.0) {
        let expected = if positive_only { "more than 0" } else { "0 or more" };
        sink.error(span_of(value), key, format!("must be a rate in requests per second, {expected}"), None);
        return 0.0;
    }
    if number > MAX_RATE_PER_S {
        sink.error(span_of(value), key, format!("must be at most {MAX_RATE_PER_S} requests per second"), None);
        return MAX_RATE_PER_S;
    }
    number
}

/// Reports a ramp whose highest load passes `max` (users or requests per second), at `value`.
fn load_within<T>(highest: f64, max: f64, unit: &str, value: &Spanned<T>, key: &str, sink: &mut DiagnosticSink<'_>) {
    if highest > max {
        sink.error(
            span_of(value),
            key,
            format!("the ramp reaches {highest} {unit}, more than the {max} plateau drives at once"),
            Some("fewer or smaller steps; past this, spread the load over several machines".into()),
        );
    }
}

/// Steps of at least two whole seconds: the first second of each is its ramp-in.
pub(super) fn step_seconds(value: &Spanned<DurationValue>, key: &str, sink: &mut DiagnosticSink<'_>) -> u64 {
    let seconds = whole_seconds(value, key, sink);
    if seconds == 1 {
        sink.error(
            span_of(value),
            key,
            "steps must last at least 2s",
            Some("a step's first second is its ramp-in and is not measured".into()),
        );
    }
    seconds
}

pub(super) fn validate_traffic(raw: &Spanned<RawTraffic>, sink: &mut DiagnosticSink<'_>) -> Option<Traffic> {
    let traffic = raw.get_ref();
    let given = [
        traffic.stairs.is_some(),
        traffic.phases.is_some(),
        traffic.rate_steps.is_some(),
        traffic.rate_ramp.is_some(),
        traffic.constant_rate.is_some(),
        traffic.search.is_some(),
    ];
    if given.iter().filter(|given| **given).count() != 1 {
        sink.error(
            span_of(raw),
            "traffic",
            "give exactly one traffic pattern: [traffic.stairs], [[traffic.phases]] (virtual users), [traffic.rate_steps], [traffic.rate_ramp], [traffic.constant_rate] (arrival rate), or [traffic.search] (either, steps found as it runs)",
            Some("e.g. [traffic.stairs] users_per_step = 2, step_duration = \"10s\", steps = 6".into()),
        );
        return None;
    }
    if let Some(stairs) = &traffic.stairs {
        let stairs = stairs.get_ref();
        let users_per_step = at_least_one(&stairs.users_per_step, "traffic.stairs.users_per_step", sink);
        let steps = count_within(&stairs.steps, MAX_STEPS, "traffic.stairs.steps", STEPS_HINT, sink);
        let highest = f64::from(users_per_step) * f64::from(steps);
        load_within(highest, MAX_USERS, "users", &stairs.users_per_step, "traffic.stairs.users_per_step", sink);
        return Some(Traffic::Stairs {
            users_per_step,
            step_duration_s: step_seconds(&stairs.step_duration, "traffic.stairs.step_duration", sink),
            steps,
        });
    }
    if let Some(steps) = &traffic.rate_steps {
        let raw_steps = steps.get_ref();
        let key = |field: &str| format!("traffic.rate_steps.{field}");
        let start_rate_per_s = rate(&raw_steps.start_rate_per_s, &key("start_rate_per_s"), true, sink);
        let step_rate_per_s = rate(&raw_steps.step_rate_per_s, &key("step_rate_per_s"), false, sink);
        let count = count_within(&raw_steps.steps, MAX_STEPS, &key("steps"), STEPS_HINT, sink);
        let highest = start_rate_per_s + step_rate_per_s * f64::from(count.saturating_sub(1));
        load_within(highest, MAX_RATE_PER_S, "requests/s", &raw_steps.step_rate_per_s, &key("step_rate_per_s"), sink);
        return Some(Traffic::RateSteps {
            start_rate_per_s,
            step_rate_per_s,
            step_duration_s: step_seconds(&raw_steps.step_duration, &key("step_duration"), sink),
            steps: count,
        });
    }
    if let Some(constant) = &traffic.constant_rate {
        let constant = constant.get_ref();
        return Some(Traffic::RateSteps {
            start_rate_per_s: rate(&constant.rate_per_s, "traffic.constant_rate.rate_per_s", true, sink),
            step_rate_per_s: 0.0,
            step_duration_s: step_seconds(&constant.duration, "traffic.constant_rate.duration", sink),
            steps: 1,
        });
    }
    if let Some(ramp) = &traffic.rate_ramp {
        let ramp = ramp.get_ref();
        return Some(Traffic::RateRamp {
            from_rate_per_s: rate(&ramp.from_rate_per_s, "traffic.rate_ramp.from_rate_per_s", true, sink),
            to_rate_per_s: rate(&ramp.to_rate_per_s, "traffic.rate_ramp.to_rate_per_s", true, sink),
            duration_s: step_seconds(&ramp.duration, "traffic.rate_ramp.duration", sink),
        });
    }
    if let Some(search) = &traffic.search {
        return Some(Traffic::Search(validate_search(search, sink)));
    }
    let phases = traffic.phases.as_ref()?;
    if phases.get_ref().is_empty() {
        sink.error(span_of(phases), "traffic.phases", "needs at least one phase", None);
    }
    if phases.get_ref().len() > MAX_STEPS as usize {
        let message = format!("has {} phases; at most {MAX_STEPS}", phases.get_ref().len());
        sink.error(span_of(phases), "traffic.phases", message, Some(STEPS_HINT.into()));
        return None;
    }
    let phases = phases
        .get_ref()
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            let phase = phase.get_ref();
            let key = |field: &str| format!("traffic.phases[{index}].{field}");
            if !(phase.spawn_rate_per_s.get_ref().is_finite() && *phase.spawn_rate_per_s.get_ref() >= 0.0) {
                sink.error(
                    span_of(&phase.spawn_rate_per_s),
                    key("spawn_rate_per_s"),
                    "must be a number of users per second, 0 or more",
                    None,
                );
            }
            let duration_s = whole_seconds(&phase.duration, &key("duration"), sink);
            let initial_users = *phase.initial_users.get_ref();
            let spawn_rate_per_s = *phase.spawn_rate_per_s.get_ref();
            let highest = f64::from(initial_users) + spawn_rate_per_s.max(0.0) * duration_s as f64;
            load_within(highest, MAX_USERS, "users", &phase.initial_users, &key("initial_users"), sink);
            Phase { initial_users, spawn_rate_per_s, duration_s }
        })
        .collect();
    Some(Traffic::Phases(phases))
}

fn validate_search(raw: &Spanned<RawSearch>, sink: &mut DiagnosticSink<'_>) -> Search {
    let search = raw.get_ref();
    let key = |field: &str| format!("traffic.search.{field}");
    let users = [&search.start_users, &search.max_users].map(|value| value.as_ref().map(Spanned::span));
    let rates = [&search.start_rate_per_s, &search.max_rate_per_s].map(|value| value.as_ref().map(Spanned::span));
    let load = if rates.iter().any(Option::is_some) {
        for (field, span) in ["start_users", "max_users"].into_iter().zip(users) {
            if let Some(span) = span {
                sink.error(
                    Some(span),
                    key(field),
                    "give users (closed model) or a rate (open model), not both",
                    Some("`start_rate_per_s` and `max_rate_per_s` search by arrival rate".into()),
                );
            }
        }
        let start = match &search.start_rate_per_s {
            Some(start) => rate(start, &key("start_rate_per_s"), true, sink),
            None => {
                let hint = "the probe doubles the rate from it, e.g. start_rate_per_s = 10";
                sink.error(span_of(raw), key("start_rate_per_s"), "is needed with `max_rate_per_s`", Some(hint.into()));
                1.0
            }
        };
        let max = search.max_rate_per_s.as_ref().map_or(MAX_RATE_PER_S, |max| {
            let value = rate(max, &key("max_rate_per_s"), true, sink);
            below_start(value, start, max, &key("max_rate_per_s"), sink);
            value
        });
        SearchLoad::RatePerSecond { start, max }
    } else {
        let start = search.start_users.as_ref().map_or(1, |start| at_least_one(start, &key("start_users"), sink));
        let max = search.max_users.as_ref().map_or(MAX_USERS as u32, |max| {
            let value = at_least_one(max, &key("max_users"), sink);
            load_within(f64::from(value), MAX_USERS, "users", max, &key("max_users"), sink);
            below_start(f64::from(value), f64::from(start), max, &key("max_users"), sink);
            value
        });
        SearchLoad::Users { start, max: max.min(MAX_USERS as u32) }
    };
    Search {
        load,
        probe_step_s: search
            .probe_step_duration
            .as_ref()
            .map_or(DEFAULT_PROBE_STEP_S, |duration| step_seconds(duration, &key("probe_step_duration"), sink)),
        step_duration_s: step_seconds(&search.step_duration, &key("step_duration"), sink),
        max_steps: search
            .steps
            .as_ref()
            .map_or(DEFAULT_SEARCH_STEPS, |steps| count_within(steps, MAX_STEPS, &key("steps"), STEPS_HINT, sink)),
    }
}

/// Reports a search maximum below its start, at the maximum.
fn below_start<T>(max: f64, start: f64, value: &Spanned<T>, key: &str, sink: &mut DiagnosticSink<'_>) {
    if max < start {
        sink.error(span_of(value), key, format!("must be at least the start ({start})"), None);
    }
}

pub(super) fn validate_traffic_options(
    raw: &Spanned<RawTraffic>,
    traffic: Option<&Traffic>,
    sink: &mut DiagnosticSink<'_>,
) -> TrafficOptions {
    let traffic_span = span_of(raw);
    let raw = raw.get_ref();
    let open = traffic.is_some_and(Traffic::is_open);
    let mut options = TrafficOptions::default();
    if let Some(warmup) = &raw.warmup {
        options.warmup_s = whole_seconds(warmup, "traffic.warmup", sink);
    }
    if let Some(arrivals) = &raw.arrivals {
        options.arrivals = *arrivals.get_ref();
    }
    if let Some(max_in_flight) = &raw.max_in_flight {
        let hint = "requests beyond it are dropped and counted; a million in flight is past what one machine holds";
        options.max_in_flight = count_within(max_in_flight, MAX_IN_FLIGHT, "traffic.max_in_flight", hint, sink);
    }
    if let Some(think_time) = &raw.think_time {
        let duration = think_time.get_ref().0;
        options.think_time_ms = duration.as_millis().min(u128::from(MAX_THINK_TIME_MS)) as u64;
        if duration.as_millis() > u128::from(MAX_THINK_TIME_MS) {
            let message = format!("must be at most {} s", MAX_THINK_TIME_MS / 1000);
            sink.error(span_of(think_time), "traffic.think_time", message, None);
        }
        if open {
            sink.error(
                span_of(think_time),
                "traffic.think_time",
                "`think_time` applies to virtual users only",
                Some("an arrival rate already says when each request is sent".into()),
            );
        } else if duration.subsec_micros() % 1000 != 0 {
            sink.error(span_of(think_time), "traffic.think_time", "must be whole milliseconds", None);
        }
    }
    options.precision = validate_precision(raw, traffic, sink);
    if let Some(longest_s) = traffic.map(|traffic| traffic.longest_s(&options)).filter(|s| *s > MAX_RAMP_S) {
        sink.error(
            traffic_span,
            "traffic",
            format!(
                "the ramp can last {} h (warm-up and every step at its longest), more than the {} h plateau plans",
                longest_s / 3600,
                MAX_RAMP_S / 3600
            ),
            Some("fewer or shorter steps, or a lower `traffic.max_step_duration`".into()),
        );
    }
    if !open && traffic.is_some() {
        let open_only = [
            ("arrivals", raw.arrivals.as_ref().map(Spanned::span)),
            ("max_in_flight", raw.max_in_flight.as_ref().map(Spanned::span)),
        ];
        refuse_keys(
            &open_only,
            "arrival-rate patterns only",
            "virtual users send their next request when the last one returns",
            sink,
        );
    }
    options
}

/// Refuses each given `[traffic]` key that does not apply to the pattern, at the key.
fn refuse_keys(
    keys: &[(&str, Option<std::ops::Range<usize>>)],
    applies_to: &str,
    hint: &str,
    sink: &mut DiagnosticSink<'_>,
) {
    for (key, span) in keys {
        if let Some(span) = span {
            sink.error(
                Some(span.clone()),
                format!("traffic.{key}"),
                format!("`{key}` applies to {applies_to}"),
                Some(hint.into()),
            );
        }
    }
}

fn validate_precision(
    raw: &RawTraffic,
    traffic: Option<&Traffic>,
    sink: &mut DiagnosticSink<'_>,
) -> Option<StepPrecision> {
    let Some(step_duration_s) = traffic?.step_duration_s() else {
        let keys = [
            ("precision_percent", raw.precision_percent.as_ref().map(Spanned::span)),
            ("max_step_duration", raw.max_step_duration.as_ref().map(Spanned::span)),
        ];
        refuse_keys(
            &keys,
            "stepped patterns only (stairs, rate_steps, constant_rate, search)",
            "phases and rate ramps change their load every second, so a step cannot run on",
            sink,
        );
        return None;
    };
    let target_percent = raw.precision_percent.as_ref().map_or(DEFAULT_PRECISION_PERCENT, |percent| {
        let value = *percent.get_ref();
        if !(value > 0.0 && value <= 100.0) {
            sink.error(
                span_of(percent),
                "traffic.precision_percent",
                "must be more than 0 and at most 100",
                Some("2 asks for each step's throughput within ±2% (95% interval)".into()),
            );
        }
        value
    });
    let max_step_duration_s = raw.max_step_duration.as_ref().map_or(DEFAULT_MAX_STEP_FACTOR * step_duration_s, |max| {
        let seconds = whole_seconds(max, "traffic.max_step_duration", sink);
        if seconds < step_duration_s {
            sink.error(
                span_of(max),
                "traffic.max_step_duration",
                format!("must be at least the step duration ({step_duration_s}s)"),
                Some("set it equal to the step duration for steps of fixed length".into()),
            );
        }
        seconds
    });
    Some(StepPrecision { target_percent, max_step_duration_s })
}
