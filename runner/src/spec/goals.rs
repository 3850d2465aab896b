//! What a run looks for and judges by: `[stopping]` (what may end a ramp early), `[requirements]` (what the
//! recommendation judges against) and `[plateau]` (the detector's parameters).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::{Configuration, Deployment, Percentile, positive, span_of, within};

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PlateauSettings")]
pub(super) struct RawPlateauSettings {
    /// A step whose throughput rose less than this, in percent, over the step before is flat (default 3).
    #[schemars(with = "Option<f64>")]
    min_gain_percent: Option<Spanned<f64>>,
    /// A step is flat when throughput grew by less than this share of the load's growth (default 0.25).
    #[schemars(with = "Option<f64>")]
    min_load_efficiency: Option<Spanned<f64>>,
    /// Flat steps after the plateau that confirm it (default 1).
    confirm_steps: Option<usize>,
    /// A step with more errors than this, in percent, is invalid and cannot be the plateau (default 1).
    #[schemars(with = "Option<f64>")]
    max_error_rate_percent: Option<Spanned<f64>>,
}

/// The plateau detector's parameters (`[plateau]` in a job file; see `analyze` for the algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauSettings {
    /// A step is flat when its throughput gained less than this over the best step before it ...
    pub min_gain_percent: f64,
    /// ... or less than this fraction of the load it added (0.25: a quarter of linear scaling).
    pub min_load_efficiency: f64,
    /// Flat steps after the first that confirm the plateau.
    pub confirm_steps: usize,
    /// A step with more errors than this ends the search.
    pub max_error_rate_percent: f64,
}

impl Default for PlateauSettings {
    fn default() -> Self {
        Self { min_gain_percent: 3.0, min_load_efficiency: 0.25, confirm_steps: 1, max_error_rate_percent: 1.0 }
    }
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stopping")]
pub(super) struct RawStopping {
    /// A ramp ends after this many successful invocations.
    #[schemars(with = "Option<u64>")]
    max_invocations: Option<Spanned<u64>>,
    /// A ramp ends at the first step whose percentile is above one of these.
    #[serde(default)]
    latency_thresholds: Vec<RawLatencyThreshold>,
    /// "stop" ends a ramp once its plateau is confirmed; "continue" (the default, as Inference Recommender) runs every
    /// step.
    #[serde(default)]
    flat_invocations: FlatInvocations,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LatencyThreshold")]
pub(super) struct RawLatencyThreshold {
    percentile: Percentile,
    /// The latency in milliseconds the percentile must stay at or under.
    #[schemars(with = "f64")]
    latency_ms: Spanned<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlatInvocations {
    /// End a configuration's ramp as soon as its plateau is confirmed.
    Stop,
    /// Run every step (SageMaker Inference Recommender's default).
    #[default]
    Continue,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Requirements")]
pub(super) struct RawRequirements {
    /// The latency goal: the percentile of ModelLatency must stay at or under this, ms.
    #[schemars(with = "Option<f64>")]
    latency_ms: Option<Spanned<f64>>,
    /// The percentile the goals are held to: `latency_ms`, `ttft_ms` and `tpot_ms` (default p99).
    percentile: Option<Percentile>,
    /// What the recommendation optimises among the configurations that meet the goal (default cost-per-inference).
    #[schemars(with = "Option<Objective>")]
    objective: Option<Spanned<Objective>>,
    /// The peak load to size for: InitialInstanceCount is the instances this needs, with the headroom.
    #[schemars(with = "Option<f64>")]
    expected_peak_rps: Option<Spanned<f64>>,
    /// Language models: the peak to size for in output tokens per second, instead of `expected_peak_rps`; it is
    /// carried as responses at the configuration's measured tokens per response.
    #[schemars(with = "Option<f64>")]
    expected_peak_output_tokens_per_s: Option<Spanned<f64>>,
    /// Capacity to keep spare above the expected peak, in percent (default 0).
    #[schemars(with = "Option<f64>")]
    headroom_percent: Option<Spanned<f64>>,
    /// The error budget: a configuration failing more of its requests than this, at the load it is judged at,
    /// cannot be recommended (default 1).
    #[schemars(with = "Option<f64>")]
    max_error_rate_percent: Option<Spanned<f64>>,
    /// Language models: the time to first token a response may take, ms. With `tpot_ms` and `latency_ms`, it
    /// defines goodput: the responses per second within every goal.
    #[schemars(with = "Option<f64>")]
    ttft_ms: Option<Spanned<f64>>,
    /// Language models: the time per output token after the first a response may take, ms.
    #[schemars(with = "Option<f64>")]
    tpot_ms: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The lowest CostPerInference.
    #[default]
    CostPerInference,
    /// The highest MaxInvocations.
    Throughput,
    /// The lowest latency at the required percentile.
    Latency,
    /// Language models: the lowest cost per million output tokens.
    CostPerMillionTokens,
    /// Language models: the highest goodput (responses per second within every goal of `[requirements]`).
    Goodput,
    /// Language models: the lowest time to first token at the required percentile.
    Ttft,
}

impl Objective {
    /// The figure is better the larger it is (throughput, goodput); else the smaller (costs, latencies).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Objective::Throughput | Objective::Goodput)
    }

    /// A language model's figure, which only a target read as one (`api = "openai"`, `reference_llm`) has.
    pub fn needs_tokens(self) -> bool {
        matches!(self, Objective::CostPerMillionTokens | Objective::Goodput | Objective::Ttft)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stopping {
    pub max_invocations: Option<u64>,
    pub latency_thresholds: Vec<LatencyThreshold>,
    pub flat_invocations: FlatInvocations,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyThreshold {
    pub percentile: Percentile,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// The latency goal: `percentile` of ModelLatency must stay at or under `latency_ms`.
    pub slo: Option<LatencyThreshold>,
    pub objective: Objective,
    pub expected_peak_rps: Option<f64>,
    /// Set instead of `expected_peak_rps`, never with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_peak_output_tokens_per_s: Option<f64>,
    pub headroom_percent: f64,
    /// The error budget at the load a configuration is judged at.
    #[serde(default = "default_error_budget_percent")]
    pub max_error_rate_percent: f64,
    /// Language models: the per-response goals of goodput besides `slo`'s latency; held at `percentile` too, they
    /// bound the load that meets the requirements, as the latency goal does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    /// The percentile every goal is held to (`latency_ms`'s, `ttft_ms`'s, `tpot_ms`'s).
    #[serde(default = "Percentile::p99")]
    pub percentile: Percentile,
}

/// Requests that may fail at the judged load, in percent, when `[requirements]` does not say.
pub const DEFAULT_ERROR_BUDGET_PERCENT: f64 = 1.0;

fn default_error_budget_percent() -> f64 {
    DEFAULT_ERROR_BUDGET_PERCENT
}

pub(super) fn validate_plateau_settings(raw: &RawPlateauSettings, sink: &mut DiagnosticSink<'_>) -> PlateauSettings {
    let defaults = PlateauSettings::default();
    let percent = |default: f64| (0.0..=100.0, default);
    let min_load_efficiency = within(
        &raw.min_load_efficiency,
        (0.0..=1.0, defaults.min_load_efficiency),
        "plateau.min_load_efficiency",
        Some("0.25 means a quarter of linear scaling"),
        sink,
    );
    let min_gain_percent =
        within(&raw.min_gain_percent, percent(defaults.min_gain_percent), "plateau.min_gain_percent", None, sink);
    PlateauSettings {
        min_gain_percent,
        min_load_efficiency,
        confirm_steps: raw.confirm_steps.unwrap_or(defaults.confirm_steps),
        max_error_rate_percent: within(
            &raw.max_error_rate_percent,
            percent(defaults.max_error_rate_percent),
            "plateau.max_error_rate_percent",
            None,
            sink,
        ),
    }
}

pub(super) fn validate_stopping(raw: &RawStopping, sink: &mut DiagnosticSink<'_>) -> Stopping {
    if let Some(max) = &raw.max_invocations
        && *max.get_ref() == 0
    {
        sink.error(
            span_of(max),
            "stopping.max_invocations",
            "must be at least 1",
            Some("leave it out for no limit".into()),
        );
    }
    let latency_thresholds = raw
        .latency_thresholds
        .iter()
        .enumerate()
        .map(|(index, threshold)| LatencyThreshold {
            percentile: threshold.percentile,
            latency_ms: positive(
                &threshold.latency_ms,
                &format!("stopping.latency_thresholds[{index}].latency_ms"),
                sink,
            ),
        })
        .collect();
    Stopping {
        max_invocations: raw.max_invocations.as_ref().map(|max| *max.get_ref()),
        latency_thresholds,
        flat_invocations: raw.flat_invocations,
    }
}

pub(super) fn validate_requirements(raw: &RawRequirements, sink: &mut DiagnosticSink<'_>) -> Requirements {
    let percentile = raw.percentile.unwrap_or_else(Percentile::p99);
    let slo = raw
        .latency_ms
        .as_ref()
        .map(|latency| LatencyThreshold { percentile, latency_ms: positive(latency, "requirements.latency_ms", sink) });
    let headroom_percent = within(
        &raw.headroom_percent,
        (0.0..=1000.0, 0.0),
        "requirements.headroom_percent",
        Some("20 means provision 20% above the expected peak"),
        sink,
    );
    let max_error_rate_percent = within(
        &raw.max_error_rate_percent,
        (0.0..=100.0, DEFAULT_ERROR_BUDGET_PERCENT),
        "requirements.max_error_rate_percent",
        Some("1 means at most 1% of requests may fail at the load a configuration is judged at"),
        sink,
    );
    Requirements {
        slo,
        objective: raw.objective.as_ref().map(|objective| *objective.get_ref()).unwrap_or_default(),
        expected_peak_rps: raw
            .expected_peak_rps
            .as_ref()
            .map(|peak| positive(peak, "requirements.expected_peak_rps", sink)),
        expected_peak_output_tokens_per_s: match (&raw.expected_peak_rps, &raw.expected_peak_output_tokens_per_s) {
            (Some(_), Some(tokens)) => {
                let hint = "size for requests or for output tokens, not both";
                sink.error(
                    span_of(tokens),
                    "requirements.expected_peak_output_tokens_per_s",
                    "is set with expected_peak_rps",
                    Some(hint.into()),
                );
                None
            }
            (None, Some(tokens)) => Some(positive(tokens, "requirements.expected_peak_output_tokens_per_s", sink)),
            (_, None) => None,
        },
        headroom_percent,
        max_error_rate_percent,
        ttft_ms: raw.ttft_ms.as_ref().map(|ttft| positive(ttft, "requirements.ttft_ms", sink)),
        tpot_ms: raw.tpot_ms.as_ref().map(|tpot| positive(tpot, "requirements.tpot_ms", sink)),
        percentile,
    }
}

/// A language model's objective or goals need every configuration's responses read as one.
pub(super) fn check_token_goals(
    raw: &RawRequirements,
    configurations: &[Configuration],
    sink: &mut DiagnosticSink<'_>,
) {
    let asked = match (&raw.objective, &raw.ttft_ms, &raw.tpot_ms, &raw.expected_peak_output_tokens_per_s) {
        (Some(objective), ..) if objective.get_ref().needs_tokens() => ("requirements.objective", span_of(objective)),
        (_, Some(ttft), ..) => ("requirements.ttft_ms", span_of(ttft)),
        (_, _, Some(tpot), _) => ("requirements.tpot_ms", span_of(tpot)),
        (.., Some(peak)) => ("requirements.expected_peak_output_tokens_per_s", span_of(peak)),
        _ => return,
    };
    let reads_tokens = |deployment: &Deployment| match deployment {
        Deployment::ReferenceLlm { .. } => true,
        Deployment::Reference { http, .. } | Deployment::Http { http, .. } | Deployment::Command { http, .. } => {
            http.api.is_some()
        }
        Deployment::Sagemaker { endpoint, .. } => endpoint.streaming || endpoint.api.is_some(),
    };
    if let Some(configuration) = configurations.iter().find(|configuration| !reads_tokens(&configuration.deployment)) {
        let (key, span) = asked;
        sink.error(
            span,
            key,
            format!("is a language model's figure, and configuration `{}` does not measure tokens", configuration.name),
            Some("set [target] api = \"openai\" (or reference_llm, or streaming = true for SageMaker)".into()),
        );
    }
}
