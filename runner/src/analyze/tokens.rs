//! A step's token figures, for generated responses: TTFT, ITL and TPOT distributions, and tokens per second with
//! the interval of output tokens per second (batch means over the steady seconds, as throughput's).

use serde::{Deserialize, Serialize};

use crate::measure::precision::{BatchMeans, Interval};
use crate::measure::step::StepRecord;
use crate::measure::{LatencySummary, TokenTally};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFigures {
    /// Time to first token; absent when responses were not streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<LatencySummary>,
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
}

impl TokenFigures {
    /// A step's figures; none when it had no generated response.
    pub fn of(step: &StepRecord) -> Option<Self> {
        let tally: &TokenTally = &step.steady.tokens;
        if tally.is_empty() {
            return None;
        }
        let seconds = step.steady_seconds().max(1) as f64;
        let summary =
            |histogram| (!crate::measure::LatencyHistogram::is_empty(histogram)).then(|| LatencySummary::of(histogram));
        let responses = tally.output_tokens.len() as f64;
        Some(Self {
            ttft: summary(&tally.ttft_us),
            itl: summary(&tally.itl_us),
            tpot: summary(&tally.tpot_us),
            output_tokens_per_s: tally.output_total as f64 / seconds,
            output_tokens_per_s_interval: BatchMeans::of(&step.output_tokens_per_second).map(|means| means.interval()),
            input_tokens_per_s: tally.input_total as f64 / seconds,
            mean_output_tokens: tally.output_total as f64 / responses,
            mean_input_tokens: (!tally.input_tokens.is_empty())
                .then(|| tally.input_total as f64 / tally.input_tokens.len() as f64),
            estimated: tally.estimated > 0,
        })
    }
}
