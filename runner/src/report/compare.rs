//! Comparing two results files for pull-request checks: per-configuration changes with their 95% intervals, latency
//! at matched load, `--fail-on` rules, and a verdict (docs/statistics.md, "Comparing two runs").
//!
//! MaxInvocations, MaxInvocations at goal, cost per inference and the knee are compared with both runs' intervals:
//! the change's 95% interval combines them on the log scale (independent runs). Latency percentiles are compared at
//! one load on both curves, the lower of the two plateau loads, interpolated between each run's valid steps: never
//! at two different loads. A figure that is only a bound decides nothing.
//!
//! Two questions, two levels. The verdict ("no significant change") is a claim about all of a configuration's
//! figures at once, so a change counts there when its interval at the family level (99%, Bonferroni over the
//! figures compared) excludes zero and it is larger than the smallest change that counts (3%; 5% for latency). A `--fail-on`
//! rule is one change declared in advance: it fires when the change's own 95% interval excludes zero and the change
//! is past the threshold; when the interval still reaches past the threshold, the rule is inconclusive and the
//! comparison says how many trials would decide it. Results without intervals (older files) fall back to the runs'
//! per-second spread.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::mermaid::{Plot, XyChart};
use crate::analyze::{StepResult, latency_at, ttft_at};
use crate::measure::precision::Interval;
use crate::results::{Confidence, ConfigurationResult, Results};
use statrs::distribution::{ContinuousCDF as _, Normal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    MaxInvocations,
    MaxInvocationsAtSlo,
    P50,
    P90,
    P99,
    CostPerInference,
    ErrorRate,
    /// The load where throughput levelled off.
    KneeLoad,
    /// Language models: output tokens per second at the plateau.
    OutputTokensPerS,
    CostPerMillionTokens,
    /// The peak of good responses per second.
    Goodput,
    /// Time to first token at the matched load.
    TtftP50,
    TtftP90,
    TtftP99,
}

const METRICS: [Metric; 14] = [
    Metric::MaxInvocations,
    Metric::MaxInvocationsAtSlo,
    Metric::P50,
    Metric::P90,
    Metric::P99,
    Metric::CostPerInference,
    Metric::ErrorRate,
    Metric::KneeLoad,
    Metric::OutputTokensPerS,
    Metric::CostPerMillionTokens,
    Metric::Goodput,
    Metric::TtftP50,
    Metric::TtftP90,
    Metric::TtftP99,
];

impl Metric {
    fn key(self) -> &'static str {
        match self {
            Metric::MaxInvocations => "max_invocations",
            Metric::MaxInvocationsAtSlo => "max_invocations_at_slo",
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::CostPerInference => "cost_per_inference",
            Metric::ErrorRate => "error_rate",
            Metric::KneeLoad => "knee_load",
            Metric::OutputTokensPerS => "output_tokens_per_s",
            Metric::CostPerMillionTokens => "cost_per_million_tokens",
            Metric::Goodput => "goodput",
            Metric::TtftP50 => "ttft_p50",
            Metric::TtftP90 => "ttft_p90",
            Metric::TtftP99 => "ttft_p99",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Metric::MaxInvocations => "MaxInvocations (/min)",
            Metric::MaxInvocationsAtSlo => "MaxInvocations at goal (/min)",
            Metric::P50 => "ModelLatency p50 (ms)",
            Metric::P90 => "ModelLatency p90 (ms)",
            Metric::P99 => "ModelLatency p99 (ms)",
            Metric::CostPerInference => "CostPerInference (USD)",
            Metric::ErrorRate => "Errors (%)",
            Metric::KneeLoad => "Knee load",
            Metric::OutputTokensPerS => "Output tokens/s",
            Metric::CostPerMillionTokens => "Cost per million output tokens (USD)",
            Metric::Goodput => "Goodput peak (/s)",
            Metric::TtftP50 => "TTFT p50 (ms)",
            Metric::TtftP90 => "TTFT p90 (ms)",
            Metric::TtftP99 => "TTFT p99 (ms)",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::MaxInvocations
                | Metric::MaxInvocationsAtSlo
                | Metric::KneeLoad
                | Metric::OutputTokensPerS
                | Metric::Goodput
        )
    }

    /// Another figure restated (cost per inference is MaxInvocations, or the goal's figure, over the price; output
    /// tokens per second are invocations times tokens per response): it adds no chance of a false alarm.
    fn restated(self) -> bool {
        matches!(self, Metric::CostPerInference | Metric::OutputTokensPerS | Metric::CostPerMillionTokens)
    }

    /// The smallest change that counts, whatever the intervals say: percent, or percentage points for the error
    /// rate.
    fn floor(self) -> f64 {
        match self {
            Metric::P50 | Metric::P90 | Metric::P99 | Metric::TtftP50 | Metric::TtftP90 | Metric::TtftP99 => 5.0,
            Metric::ErrorRate => 0.5,
            _ => 3.0,
        }
    }

    /// This metric's figure in one run; latency at `matched_load`, and only there.
    fn figure(self, result: &ConfigurationResult, matched_load: Option<f64>) -> Option<Figure> {
        // Racing stopped it partway: its figures are from the steps it ran, not comparable with a full ramp's.
        if result.eliminated.is_some() {
            return None;
        }
        let metrics = result.metrics.as_ref()?;
        let bound = metrics.lower_bound;
        let figure = |value: f64, interval: Option<Interval>| Some(Figure { value, interval, bound });
        let latency = |percentile: f64| {
            let (value, interval) = latency_at(&result.steps, matched_load?, percentile)?;
            Some(Figure { value, interval, bound: false })
        };
        let ttft = |percentile: f64| {
            let (value, interval) = ttft_at(&result.steps, matched_load?, percentile)?;
            Some(Figure { value, interval, bound: false })
        };
        let tokens = metrics.tokens.as_ref();
        match self {
            Metric::MaxInvocations => figure(metrics.max_invocations, metrics.max_invocations_interval),
            Metric::MaxInvocationsAtSlo => {
                figure(metrics.max_invocations_at_slo?, metrics.max_invocations_at_slo_interval)
            }
            Metric::P50 => latency(50.0),
            Metric::P90 => latency(90.0),
            Metric::P99 => latency(99.0),
            Metric::CostPerInference => {
                figure(metrics.cost_per_inference_usd?, metrics.cost_per_inference_interval_usd)
            }
            Metric::ErrorRate => Some(Figure { value: metrics.error_rate_percent, interval: None, bound: false }),
            // A knee is known to one step: the plateau step or the one before it.
            Metric::KneeLoad => {
                let gap = knee_resolution(&result.steps, metrics.load_at_plateau);
                let interval = Interval { low: metrics.load_at_plateau - gap, high: metrics.load_at_plateau };
                figure(metrics.load_at_plateau, Some(interval))
            }
            Metric::OutputTokensPerS => figure(tokens?.output_tokens_per_s, tokens?.output_tokens_per_s_interval),
            Metric::CostPerMillionTokens => {
                figure(tokens?.cost_per_million_output_tokens_usd?, tokens?.cost_per_million_output_tokens_interval_usd)
            }
            Metric::Goodput => figure(tokens?.max_goodput_per_s, tokens?.max_goodput_interval_per_s),
            Metric::TtftP50 => ttft(50.0),
            Metric::TtftP90 => ttft(90.0),
            Metric::TtftP99 => ttft(99.0),
        }
    }
}

/// A `--fail-on` rule that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("unknown metric `{metric}`; expected one of {}", METRICS.map(Metric::key).join(", "))]
    UnknownMetric { metric: String },
    #[error("cannot read rule `{rule}`: {RULE_HINT}")]
    Unreadable { rule: String },
    #[error("cannot read the threshold in `{rule}`: {RULE_HINT}")]
    Threshold { rule: String },
    #[error("`{rule}`: the error rate changes in percentage points, not percent; write `error_rate > +{number}pp`")]
    ErrorRateInPercent { rule: String, number: String },
    #[error("`{rule}`: `pp` (percentage points) is for error_rate only; write `{metric} {sign} {number}%`")]
    PointsForRatio { rule: String, metric: &'static str, sign: char, number: String },
}

const RULE_HINT: &str = "expected `METRIC < -N%`, `METRIC > +N%`, `error_rate > +Npp` or `recommendation changed`, \
                         e.g. `p99 > +10%`";

/// One run's figure for a metric: its value, its 95% interval where there is one, and whether it is only a bound.
#[derive(Debug, Clone, Copy)]
struct Figure {
    value: f64,
    interval: Option<Interval>,
    bound: bool,
}

/// The load between the plateau step and the valid step before it: how precisely the knee is placed.
fn knee_resolution(steps: &[StepResult], knee_load: f64) -> f64 {
    let below = steps
        .iter()
        .filter(|step| step.complete && step.invalid.is_none() && step.load < knee_load)
        .map(|step| step.load)
        .fold(0.0, f64::max);
    knee_load - below
}

impl FromStr for Metric {
    type Err = RuleError;
    fn from_str(text: &str) -> Result<Self, RuleError> {
        METRICS
            .into_iter()
            .find(|metric| metric.key() == text)
            .ok_or_else(|| RuleError::UnknownMetric { metric: text.to_string() })
    }
}

/// A `--fail-on` rule: `max_invocations < -5%`, `p99 > +10%`, or `recommendation changed`.
#[derive(Debug, Clone, PartialEq)]
pub enum FailRule {
    Change { metric: Metric, above: bool, threshold_percent: f64 },
    RecommendationChanged,
}

impl FromStr for FailRule {
    type Err = RuleError;
    fn from_str(text: &str) -> Result<Self, RuleError> {
        let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalized == "recommendation changed" {
            return Ok(FailRule::RecommendationChanged);
        }
        let (metric, rest, above) = if let Some((metric, rest)) = normalized.split_once('>') {
            (metric, rest, true)
        } else if let Some((metric, rest)) = normalized.split_once('<') {
            (metric, rest, false)
        } else {
            return Err(RuleError::Unreadable { rule: text.to_string() });
        };
        let metric: Metric = metric.trim().parse()?;
        let rest = rest.trim();
        // The error rate is compared in percentage points (0% to 0.1% is not "infinitely worse"), the rest in
        // percent: the unit in the rule must say which, so `error_rate > +1%` cannot be misread as relative.
        let (number, points) = match (rest.strip_suffix("pp"), rest.strip_suffix('%')) {
            (Some(number), _) => (number.trim(), true),
            (None, Some(number)) => (number.trim(), false),
            (None, None) => return Err(RuleError::Threshold { rule: text.to_string() }),
        };
        let threshold_percent = number.parse::<f64>().map_err(|_| RuleError::Threshold { rule: text.to_string() })?;
        match (metric == Metric::ErrorRate, points) {
            (true, false) => Err(RuleError::ErrorRateInPercent {
                rule: text.to_string(),
                number: number.trim_start_matches('+').into(),
            }),
            (false, true) => Err(RuleError::PointsForRatio {
                rule: text.to_string(),
                metric: metric.key(),
                sign: if above { '>' } else { '<' },
                number: number.to_string(),
            }),
            _ => Ok(FailRule::Change { metric, above, threshold_percent }),
        }
    }
}

impl fmt::Display for FailRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailRule::RecommendationChanged => write!(f, "recommendation changed"),
            FailRule::Change { metric, above, threshold_percent } => {
                let unit = if *metric == Metric::ErrorRate { "pp" } else { "%" };
                write!(f, "{} {} {:+}{unit}", metric.key(), if *above { ">" } else { "<" }, threshold_percent)
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub job: String,
    pub started_at: String,
    pub partial: bool,
    pub recommendation: Option<String>,
    pub initial_instance_count: Option<u32>,
    /// The recommendation is not established (its margin, or the best figure, is within the intervals).
    pub recommendation_inconclusive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricDelta {
    pub metric: Metric,
    pub label: &'static str,
    pub base: f64,
    pub head: f64,
    /// Percent, or percentage points for the error rate.
    pub delta_percent: f64,
    /// The change's 95% interval, in the same unit.
    pub interval: Interval,
    /// Changes smaller than this do not count, whatever the interval.
    pub floor: f64,
    pub significant: bool,
    /// A side's figure is only a bound, so the change is not established.
    pub bound: bool,
    /// "better", "worse", "unchanged" (within the interval), or "inconclusive" (a bound).
    pub direction: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Both,
    OnlyBase,
    OnlyHead,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationDelta {
    pub name: String,
    pub presence: Presence,
    /// Where each run's throughput levelled off.
    pub base_plateau_load: Option<f64>,
    pub head_plateau_load: Option<f64>,
    /// The one load both runs' latencies are compared at: the lower plateau load.
    pub matched_load: Option<f64>,
    /// Whether each side has figures (a failed or skipped configuration has none).
    pub base_measured: bool,
    pub head_measured: bool,
    /// Trials behind each side's figures (1 for a job without `trials`).
    pub base_trials: u32,
    pub head_trials: u32,
    pub deltas: Vec<MetricDelta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FiredRule {
    pub rule: String,
    pub configuration: Option<String>,
    pub detail: String,
}

/// A rule the runs cannot decide: the change's interval reaches past its threshold, or a figure is a bound.
#[derive(Debug, Clone, Serialize)]
pub struct UndecidedRule {
    pub rule: String,
    pub configuration: Option<String>,
    pub detail: String,
    /// Trials of each run that would likely decide it, where a number can be given.
    pub trials_needed: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regression,
    Improvement,
    /// Some figures got better and others worse, beyond noise.
    Mixed,
    NoSignificantChange,
}

/// The base of a comparison against the history: the median of these runs.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryBase {
    pub runs: usize,
    pub branch: Option<String>,
    /// The oldest and the newest run's start.
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Set when the base is the median of the history's runs rather than one run.
    pub history: Option<HistoryBase>,
    pub base: Side,
    pub head: Side,
    pub recommendation_changed: bool,
    /// The tables in which the two job files differ; empty when they are the same job.
    pub job_files_differ: Vec<String>,
    /// What loads are counted in ("users", "offered requests/s"); latency is not compared when the runs differ.
    pub load_unit: &'static str,
    pub configurations: Vec<ConfigurationDelta>,
    pub verdict: Verdict,
    pub rules: Vec<String>,
    pub fired: Vec<FiredRule>,
    pub inconclusive: Vec<UndecidedRule>,
}

/// What compare's Markdown sees: the comparison, and its charts as Mermaid blocks' contents.
#[derive(Serialize)]
pub struct CompareView<'a> {
    #[serde(flatten)]
    pub comparison: &'a Comparison,
    pub charts: Vec<String>,
}

/// MaxInvocations and p99 (at the matched load) of every configuration both runs measured, and for language models
/// output tokens/s and TTFT p90: this run as bars, the base as a line over them.
pub fn view(comparison: &Comparison) -> CompareView<'_> {
    let chart = |metric: Metric, title: &str, y_label: &str| {
        let both: Vec<(&str, &MetricDelta)> = comparison
            .configurations
            .iter()
            .filter_map(|configuration| {
                let delta = configuration.deltas.iter().find(|delta| delta.metric == metric)?;
                Some((configuration.name.as_str(), delta))
            })
            .collect();
        (!both.is_empty()).then(|| {
            XyChart {
                title: title.into(),
                x_label: "configuration".into(),
                categories: both.iter().map(|(name, _)| name.to_string()).collect(),
                y_label: y_label.into(),
                plots: vec![
                    Plot::Bar { name: "this run".into(), values: both.iter().map(|(_, delta)| delta.head).collect() },
                    Plot::Line { name: "base".into(), values: both.iter().map(|(_, delta)| delta.base).collect() },
                ],
            }
            .render()
        })
    };
    let charts = [
        chart(Metric::MaxInvocations, "MaxInvocations", "invocations per minute"),
        chart(Metric::P99, "p99 at the matched load", "latency (ms)"),
        chart(Metric::OutputTokensPerS, "Output tokens/s", "tokens per second"),
        chart(Metric::TtftP90, "TTFT p90 at the matched load", "time to first token (ms)"),
    ];
    CompareView { comparison, charts: charts.into_iter().flatten().collect() }
}

fn side(results: &Results) -> Side {
    let recommendation = results.recommendation.as_ref();
    Side {
        job: results.job.name.clone(),
        started_at: results.manifest.started_at.clone(),
        partial: results.partial,
        recommendation: recommendation.and_then(|recommendation| recommendation.configuration.clone()),
        initial_instance_count: recommendation.and_then(|recommendation| recommendation.initial_instance_count),
        recommendation_inconclusive: recommendation
            .is_some_and(|recommendation| matches!(recommendation.confidence, Confidence::Inconclusive { .. })),
    }
}

/// The interval of a ratio's change in percent at `z` standard errors, from the two figures' 95% intervals
/// (independent runs, on the log scale); absent when either side has none.
fn ratio_interval(base: &Figure, head: &Figure, z: f64) -> Option<Interval> {
    let log_standard_error = |figure: &Figure| {
        figure
            .interval
            .filter(|interval| interval.low > 0.0 && interval.high >= interval.low)
            .map(|interval| (interval.high / interval.low).ln() / (2.0 * 1.96))
    };
    let (base_error, head_error) = (log_standard_error(base)?, log_standard_error(head)?);
    let change = (head.value / base.value).ln();
    let half = z * (base_error.powi(2) + head_error.powi(2)).sqrt();
    Some(Interval { low: ((change - half).exp() - 1.0) * 100.0, high: ((change + half).exp() - 1.0) * 100.0 })
}

/// How often noise alone may call an unchanged configuration changed. A pull-request check that cried wolf once in
/// twenty configurations would be ignored; once in a hundred is the usual bar for a gate.
const VERDICT_FALSE_ALARM_RATE: f64 = 0.01;

/// The normal quantile that holds for `family` intervals at once at the verdict's rate (Bonferroni), two-sided.
fn family_z(family: usize) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("the standard normal");
    normal.inverse_cdf(1.0 - VERDICT_FALSE_ALARM_RATE / 2.0 / family.max(1) as f64)
}

/// The change of one metric. Its reported interval is 95%; whether it is significant is judged on the interval that
/// holds for all `family` figures of the configuration at once at the verdict's false-alarm rate, so that noise
/// alone calls "no significant change" for 99% of unchanged configurations, not 95% of each of their figures.
fn delta(metric: Metric, base: Figure, head: Figure, spread_percent: f64, family: usize) -> MetricDelta {
    let (delta_percent, interval, family_interval) = if metric == Metric::ErrorRate {
        // Error rates are compared in percentage points: 0% to 0.1% is not "infinitely worse".
        let points = head.value - base.value;
        let interval = Interval { low: points - metric.floor(), high: points + metric.floor() };
        (points, interval, interval)
    } else {
        let delta_percent = match (base.value, head.value) {
            (0.0, 0.0) => 0.0,
            (0.0, _) => f64::INFINITY,
            _ => (head.value / base.value - 1.0) * 100.0,
        };
        // Without intervals (results written before them), the runs' per-second spread stands in.
        let spread = || {
            let noise = metric.floor().max(2.0 * spread_percent);
            Interval { low: delta_percent - noise, high: delta_percent + noise }
        };
        let interval = ratio_interval(&base, &head, 1.96).unwrap_or_else(spread);
        let family_interval = ratio_interval(&base, &head, family_z(family)).unwrap_or_else(spread);
        (delta_percent, interval, family_interval)
    };
    let bound = base.bound || head.bound;
    let significant = !bound && !family_interval.contains(0.0) && delta_percent.abs() > metric.floor();
    let better = (delta_percent > 0.0) == metric.higher_is_better();
    let direction = match (bound, significant, better) {
        (true, _, _) => "inconclusive",
        (false, false, _) => "unchanged",
        (false, true, true) => "better",
        (false, true, false) => "worse",
    };
    MetricDelta {
        metric,
        label: metric.label(),
        base: base.value,
        head: head.value,
        delta_percent,
        interval,
        floor: metric.floor(),
        significant,
        bound,
        direction,
    }
}

/// One configuration's changes; `same_unit` when both runs count load alike, so one load means the same on both.
fn configuration_delta(
    name: &str,
    base: Option<&ConfigurationResult>,
    head: Option<&ConfigurationResult>,
    same_unit: bool,
) -> ConfigurationDelta {
    let presence = match (base, head) {
        (Some(_), Some(_)) => Presence::Both,
        (Some(_), None) => Presence::OnlyBase,
        _ => Presence::OnlyHead,
    };
    let plateau_load = |result: Option<&ConfigurationResult>| {
        result.and_then(|result| result.metrics.as_ref()).map(|metrics| metrics.load_at_plateau)
    };
    let (base_plateau_load, head_plateau_load) = (plateau_load(base), plateau_load(head));
    let matched_load =
        base_plateau_load.zip(head_plateau_load).filter(|_| same_unit).map(|(base, head)| base.min(head));
    let deltas = match (base, head) {
        (Some(base), Some(head)) => {
            let spread = |result: &ConfigurationResult| {
                result.metrics.as_ref().map_or(0.0, |metrics| metrics.throughput_spread_percent)
            };
            let spread_percent = (spread(base).powi(2) + spread(head).powi(2)).sqrt();
            let figures: Vec<(Metric, Figure, Figure)> = METRICS
                .into_iter()
                .filter_map(|metric| {
                    Some((metric, metric.figure(base, matched_load)?, metric.figure(head, matched_load)?))
                })
                .collect();
            let family = figures.iter().filter(|(metric, _, _)| !metric.restated()).count();
            figures.into_iter().map(|(metric, base, head)| delta(metric, base, head, spread_percent, family)).collect()
        }
        _ => Vec::new(),
    };
    let trials = |result: Option<&ConfigurationResult>| {
        result.and_then(|result| result.trials.as_ref()).map_or(1, |trials| trials.measured.len().max(1) as u32)
    };
    ConfigurationDelta {
        name: name.to_string(),
        presence,
        base_plateau_load,
        head_plateau_load,
        matched_load,
        base_measured: base.is_some_and(|result| result.metrics.is_some()),
        head_measured: head.is_some_and(|result| result.metrics.is_some()),
        base_trials: trials(base),
        head_trials: trials(head),
        deltas,
    }
}

/// Whole numbers for large figures, three significant digits for small ones (costs per inference).
fn readable(value: f64) -> String {
    if value.abs() >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        let decimals = (2 - value.abs().log10().floor() as i32).max(0) as usize;
        format!("{value:.decimals$}")
    }
}

/// Trials of each run that would likely shrink the change's interval enough to decide `threshold`, when each run
/// already has `ran`: intervals narrow with the square root of the trials, so the interval must shrink to the
/// distance between the change and the boundary it straddles (the threshold, or zero once the change is past it).
/// Absent when the change sits on it.
fn trials_needed(delta: &MetricDelta, threshold: f64, past: bool, ran: u32) -> Option<u32> {
    let half_width = (delta.interval.high - delta.interval.low) / 2.0;
    let distance = if past { delta.delta_percent.abs() } else { (threshold - delta.delta_percent).abs() };
    let trials = (f64::from(ran) * (half_width / distance).powi(2)).ceil();
    (distance > 0.0 && trials <= f64::from(crate::spec::MAX_TRIALS)).then_some(trials.max(f64::from(ran) + 1.0) as u32)
}

fn find<'a>(results: &'a Results, name: &str) -> Option<&'a ConfigurationResult> {
    results.configurations.iter().find(|result| result.name == name)
}

/// The two job files' top-level tables (and configurations, by name) whose contents differ.
/// Configurations of the same name that ran against different SageMaker endpoints (a name, a region the
/// environment chose, a variant), which the job files alone may not show.
fn endpoint_differences(base: &Results, head: &Results) -> Vec<String> {
    base.configurations
        .iter()
        .filter_map(|before| {
            let after = head.configurations.iter().find(|after| after.name == before.name)?;
            match (&before.endpoint, &after.endpoint) {
                (Some(was), Some(now)) if was != now => {
                    Some(format!("the endpoint of {}: {was} -> {now}", before.name))
                }
                _ => None,
            }
        })
        .collect()
}

fn job_differences(base: &Results, head: &Results) -> Vec<String> {
    if base.manifest.job_sha256 == head.manifest.job_sha256 {
        return Vec::new();
    }
    let parse = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
    let (base_job, head_job) = (parse(&base.manifest.job_file_text), parse(&head.manifest.job_file_text));
    let mut keys: Vec<&String> = base_job.keys().chain(head_job.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut differences = Vec::new();
    for key in keys {
        if base_job.get(key) == head_job.get(key) {
            continue;
        }
        if key == "configurations" {
            let named = |job: &toml::Table| -> Vec<(String, toml::Value)> {
                job.get(key)
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|configuration| {
                        let name = configuration.get("name").and_then(toml::Value::as_str).unwrap_or("?").to_string();
                        (name, configuration.clone())
                    })
                    .collect()
            };
            let (base_configurations, head_configurations) = (named(&base_job), named(&head_job));
            let mut names: Vec<&String> =
                base_configurations.iter().chain(&head_configurations).map(|(name, _)| name).collect();
            names.sort();
            names.dedup();
            let find = |configurations: &[(String, toml::Value)], name: &str| {
                configurations.iter().find(|(other, _)| other == name).map(|(_, value)| value.clone())
            };
            let changed: Vec<&str> = names
                .into_iter()
                .filter(|name| find(&base_configurations, name) != find(&head_configurations, name))
                .map(String::as_str)
                .collect();
            differences.push(format!("configurations ({})", changed.join(", ")));
        } else {
            differences.push(format!("[{key}]"));
        }
    }
    if differences.is_empty() {
        differences.push("comments or formatting only".to_string());
    }
    differences
}

pub fn compare(base: &Results, head: &Results, rules: &[FailRule]) -> Comparison {
    let mut names: Vec<&str> = base.configurations.iter().map(|result| result.name.as_str()).collect();
    for result in &head.configurations {
        if !names.contains(&result.name.as_str()) {
            names.push(&result.name);
        }
    }
    let same_unit = base.job.load_unit == head.job.load_unit;
    let configurations: Vec<ConfigurationDelta> = names
        .into_iter()
        .map(|name| configuration_delta(name, find(base, name), find(head, name), same_unit))
        .collect();

    let (base_side, head_side) = (side(base), side(head));
    let recommendation_changed = base_side.recommendation != head_side.recommendation
        || base_side.initial_instance_count != head_side.initial_instance_count;
    let mut fired = Vec::new();
    let mut inconclusive = Vec::new();
    for rule in rules {
        match rule {
            FailRule::RecommendationChanged if recommendation_changed => {
                let detail = format!(
                    "{} x{} became {} x{}",
                    base_side.recommendation.as_deref().unwrap_or("none"),
                    base_side.initial_instance_count.unwrap_or(0),
                    head_side.recommendation.as_deref().unwrap_or("none"),
                    head_side.initial_instance_count.unwrap_or(0)
                );
                if base_side.recommendation_inconclusive || head_side.recommendation_inconclusive {
                    // Between near ties, which one wins is noise: the change is not established.
                    inconclusive.push(UndecidedRule {
                        rule: rule.to_string(),
                        configuration: None,
                        detail: format!("{detail}, but a run's recommendation is itself inconclusive"),
                        trials_needed: None,
                    });
                } else {
                    fired.push(FiredRule { rule: rule.to_string(), configuration: None, detail });
                }
            }
            FailRule::RecommendationChanged => {}
            FailRule::Change { metric, above, threshold_percent } => {
                for configuration in &configurations {
                    let Some(delta) = configuration.deltas.iter().find(|delta| delta.metric == *metric) else {
                        continue;
                    };
                    let past =
                        |value: f64| if *above { value > *threshold_percent } else { value < *threshold_percent };
                    let unit = if *metric == Metric::ErrorRate { " pp" } else { "%" };
                    let change = format!(
                        "{} went from {} to {} ({:+.1}{unit}, 95% interval {:+.1}{unit} to {:+.1}{unit})",
                        delta.label,
                        readable(delta.base),
                        readable(delta.head),
                        delta.delta_percent,
                        delta.interval.low,
                        delta.interval.high
                    );
                    let reaches = past(if *above { delta.interval.high } else { delta.interval.low });
                    // A rule is one change declared in advance: its own 95% interval decides it.
                    let established = !delta.bound && !delta.interval.contains(0.0);
                    if past(delta.delta_percent) && established {
                        fired.push(FiredRule {
                            rule: rule.to_string(),
                            configuration: Some(configuration.name.clone()),
                            detail: change,
                        });
                    } else if delta.bound {
                        inconclusive.push(UndecidedRule {
                            rule: rule.to_string(),
                            configuration: Some(configuration.name.clone()),
                            detail: format!("{change}; a run's figure is only a bound (its plateau was not confirmed)"),
                            trials_needed: None,
                        });
                    } else if reaches {
                        let ran = configuration.base_trials.min(configuration.head_trials);
                        let trials = trials_needed(delta, *threshold_percent, past(delta.delta_percent), ran);
                        inconclusive.push(UndecidedRule {
                            rule: rule.to_string(),
                            configuration: Some(configuration.name.clone()),
                            detail: format!("{change}: the interval reaches past {threshold_percent:+}{unit}"),
                            trials_needed: trials,
                        });
                    }
                }
            }
        }
    }
    let all_deltas = configurations.iter().flat_map(|configuration| &configuration.deltas);
    let (mut better, mut worse) = (false, false);
    for delta in all_deltas {
        better |= delta.direction == "better";
        worse |= delta.direction == "worse";
    }
    let verdict = match (better, worse) {
        (true, true) => Verdict::Mixed,
        (false, true) => Verdict::Regression,
        (true, false) => Verdict::Improvement,
        (false, false) => Verdict::NoSignificantChange,
    };
    Comparison {
        history: None,
        base: base_side,
        head: head_side,
        recommendation_changed,
        job_files_differ: [job_differences(base, head), endpoint_differences(base, head)].concat(),
        load_unit: head.job.load_unit.label(),
        configurations,
        verdict,
        rules: rules.iter().map(ToString::to_string).collect(),
        fired,
        inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "max_invocations < -5%",
            "p99 > +10%",
            "recommendation changed",
            "cost_per_inference > +2.5%",
            "error_rate > +1pp",
        ] {
            let rule: FailRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        let percent = "error_rate > +1%".parse::<FailRule>().unwrap_err().to_string();
        assert!(percent.contains("write `error_rate > +1pp`"), "{percent}");
        let points = "p99 > +10pp".parse::<FailRule>().unwrap_err().to_string();
        assert!(points.contains("write `p99 > +10%`"), "{points}");
        assert!("p42 > 5%".parse::<FailRule>().unwrap_err().to_string().contains("unknown metric `p42`"));
        assert!("p99 >> 5".parse::<FailRule>().is_err());
    }

    fn figure(value: f64, low: f64, high: f64) -> Figure {
        Figure { value, interval: Some(Interval { low, high }), bound: false }
    }

    #[test]
    fn a_change_is_significant_only_when_its_interval_excludes_zero_and_passes_the_floor() {
        let base = figure(1000.0, 980.0, 1020.0);
        let regressed = delta(Metric::MaxInvocations, base, figure(900.0, 882.0, 918.0), 0.0, 1);
        assert!(regressed.significant && regressed.direction == "worse", "{regressed:?}");
        assert!(regressed.interval.low < -10.0 && regressed.interval.high > -10.0 && regressed.interval.high < -5.0);
        // The same change measured with intervals four times as wide is within them.
        let noisy = delta(Metric::MaxInvocations, figure(1000.0, 920.0, 1080.0), figure(900.0, 828.0, 972.0), 0.0, 1);
        assert!(!noisy.significant && noisy.direction == "unchanged", "{noisy:?}");
        // Precise, but below the 3% that counts.
        let small = delta(Metric::MaxInvocations, base, figure(980.0, 978.0, 982.0), 0.0, 1);
        // Significant alone, not among five figures judged at once.
        let alone = delta(Metric::MaxInvocations, base, figure(958.0, 939.0, 977.0), 0.0, 1);
        let among_five = delta(Metric::MaxInvocations, base, figure(958.0, 939.0, 977.0), 0.0, 5);
        assert!(alone.significant && !among_five.significant, "{alone:?} {among_five:?}");
        assert!(!small.significant, "{small:?}");
        // A bound decides nothing.
        let bound = delta(Metric::MaxInvocations, Figure { bound: true, ..base }, figure(700.0, 690.0, 710.0), 0.0, 1);
        assert_eq!(bound.direction, "inconclusive");
    }

    #[test]
    fn trials_needed_shrink_the_interval_to_the_distance_from_the_threshold() {
        let undecided = MetricDelta {
            metric: Metric::MaxInvocations,
            label: "",
            base: 100.0,
            head: 99.0,
            delta_percent: -1.0,
            interval: Interval { low: -9.0, high: 7.0 },
            floor: 3.0,
            significant: false,
            bound: false,
            direction: "unchanged",
        };
        // Half-width 8 points, 4 from the -5% threshold: (8 / 4)^2 = 4 trials.
        assert_eq!(trials_needed(&undecided, -5.0, false, 1), Some(4));
        // Runs of 3 trials each already: 3 × 4 = 12.
        assert_eq!(trials_needed(&undecided, -5.0, false, 3), Some(12));
        let at_threshold = MetricDelta { delta_percent: -5.0, ..undecided };
        assert_eq!(trials_needed(&at_threshold, -5.0, false, 1), None);
    }
}
