//! A step's token figures, for generated responses: TTFT, ITL and TPOT distributions, and tokens per second with
//! the interval of output tokens per second (batch means over the steady seconds, as throughput's).

use serde::{Deserialize, Serialize};

use crate::measure::precision::{BatchMeans, Interval, LatencyIntervals};
use crate::measure::step::StepRecord;
use crate::measure::{LatencySummary, TokenTally};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFigures {
    /// Time to first token; absent when responses were not streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<LatencySummary>,
    /// The TTFT percentiles' 95% intervals (a bootstrap over the steady seconds, as latency's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_intervals: Option<LatencyIntervals>,
    /// Every gap between two chunks of a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl: Option<LatencySummary>,
    /// Each response's time per output token after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot: Option<LatencySummary>,
    pub output_tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_per_s_interval: Option<Interval>,
    /// Zero when the server sent no `usage`: input tokens are then unknown.
    pub input_tokens_per_s: f64,
    pub mean_output_tokens: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_input_tokens: Option<f64>,
    /// Some responses' counts are estimates (one token per streamed chunk; the server sent no `usage`).
    pub estimated: bool,
    /// Some responses' counts come from the job's tokenizer (the server sent no `usage`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tokenized: bool,
    /// Responses per second within every per-response goal of `[requirements]` (goodput; throughput without goals).
    pub goodput_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput_interval_per_s: Option<Interval>,
}

impl TokenFigures {
    /// A step's figures; none when it had no generated response.
    pub fn of(step: &StepRecord) -> Option<Self> {
        let tally: &TokenTally = step.steady.tokens.as_deref().filter(|tokens| !tokens.is_empty())?;
        let seconds = step.steady_seconds().max(1) as f64;
        let summary =
            |histogram| (!crate::measure::LatencyHistogram::is_empty(histogram)).then(|| LatencySummary::of(histogram));
        let responses = tally.output_tokens.len() as f64;
        Some(Self {
            ttft: summary(&tally.ttft_us),
            ttft_intervals: step.ttft_intervals,
            itl: summary(&tally.itl_us),
            tpot: summary(&tally.tpot_us),
            output_tokens_per_s: tally.output_total as f64 / seconds,
            output_tokens_per_s_interval: BatchMeans::of(&step.output_tokens_per_second).map(|means| means.interval()),
            input_tokens_per_s: tally.input_total as f64 / seconds,
            mean_output_tokens: tally.output_total as f64 / responses,
            mean_input_tokens: (!tally.input_tokens.is_empty())
                .then(|| tally.input_total as f64 / tally.input_tokens.len() as f64),
            estimated: tally.estimated > 0,
            tokenized: tally.tokenized > 0,
            goodput_per_s: tally.good as f64 / seconds,
            goodput_interval_per_s: BatchMeans::of(&step.good_per_second).map(|means| means.interval()),
        })
    }
}

/// A language model's figures at the plateau, beside the IR metrics they follow from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMetrics {
    /// Output tokens per second at MaxInvocations: its requests per second times the plateau step's mean output
    /// tokens per response, so it levels off where invocations do.
    pub output_tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_per_s_interval: Option<Interval>,
    /// CostPerHour over the output tokens of an hour at the operating point (the SLO's figure when there is one),
    /// per million tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens_interval_usd: Option<Interval>,
    /// The highest goodput of a valid step, and that step's load: goodput rises with load, then falls as
    /// responses leave the goals, so its peak need not be at the plateau.
    pub max_goodput_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_goodput_interval_per_s: Option<Interval>,
    pub load_at_max_goodput: f64,
    /// The plateau step's TTFT, ITL, TPOT and tokens per response.
    pub at_plateau: TokenFigures,
}

impl TokenMetrics {
    /// From the capacity and the operating point (requests per second, with their intervals), what an hour
    /// costs, and the valid steps' (load, token figures).
    pub fn at(
        figures: &TokenFigures,
        valid_steps: &[(f64, &TokenFigures)],
        (capacity_rps, capacity_interval): (f64, Option<Interval>),
        (operating_rps, operating_interval): (f64, Option<Interval>),
        cost_per_hour_usd: f64,
    ) -> Self {
        let per_response = figures.mean_output_tokens;
        let cost_per_million = |tokens_per_s: f64| cost_per_hour_usd / (tokens_per_s * 3600.0) * 1e6;
        let operating_tokens_per_s = operating_rps * per_response;
        let (load_at_max_goodput, max_goodput_per_s, max_goodput_interval_per_s) = valid_steps
            .iter()
            .map(|(load, step)| (*load, step.goodput_per_s, step.goodput_interval_per_s))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0.0, 0.0, None));
        Self {
            max_goodput_per_s,
            max_goodput_interval_per_s,
            load_at_max_goodput,
            output_tokens_per_s: capacity_rps * per_response,
            output_tokens_per_s_interval: capacity_interval.map(|interval| interval.scaled(per_response)),
            cost_per_million_output_tokens_usd: (operating_tokens_per_s > 0.0)
                .then(|| cost_per_million(operating_tokens_per_s)),
            cost_per_million_output_tokens_interval_usd: operating_interval
                .filter(|interval| interval.low > 0.0 && per_response > 0.0)
                .map(|interval| Interval {
                    low: cost_per_million(interval.high * per_response),
                    high: cost_per_million(interval.low * per_response),
                }),
            at_plateau: figures.clone(),
        }
    }
}
