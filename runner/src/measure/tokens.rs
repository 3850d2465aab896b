//! What generated responses (language models) add to a request's latency: when the first token came, the gap
//! before each next one, and how many tokens went each way. Each is a histogram per second and per step, so token
//! figures merge across shards and rebuild from the series file exactly as latency does.
//!
//! The names follow the serving benchmarks: TTFT (time to first token), ITL (every gap between two chunks of
//! tokens, as vLLM's benchmark records it), TPOT (a response's time per output token after the first,
//! (end-to-end − TTFT) / (output tokens − 1), which AIPerf and GuideLLM call inter-token latency).

use serde::{Deserialize, Serialize};

use super::{LatencyHistogram, new_histogram};
use crate::spec::Requirements;

/// Where a response's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCount {
    /// The server's `usage` object: exact.
    Usage,
    /// The server sent no `usage`: one token per streamed chunk that carried text (servers that stream token by
    /// token send that many; those that group tokens, more), or about four characters a token when not streamed.
    Estimated,
    /// The server sent no `usage`, and the job's tokenizer counted the text (the prompt's without a chat
    /// template's own tokens).
    Tokenizer,
}

/// One generated response's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// From the request's start; none for a response that was not streamed.
    pub first_token_us: Option<u64>,
    pub output: u32,
    /// Known only from the server's `usage`.
    pub input: Option<u32>,
    pub counted: TokenCount,
}

/// What a good response is for goodput (DistServe's, AIPerf's): within every per-request goal `[requirements]`
/// sets, its end-to-end latency, its time to first token and its time per output token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoodputGoals {
    pub latency_us: Option<u64>,
    pub ttft_us: Option<u64>,
    pub tpot_us: Option<u64>,
}

impl GoodputGoals {
    /// The per-response goals `[requirements]` sets: the latency goal, `ttft_ms`, `tpot_ms`. Without any, every
    /// complete response is good, and goodput is throughput.
    pub fn of(requirements: &Requirements) -> Self {
        let micros = |ms: f64| (ms * 1000.0).round() as u64;
        Self {
            latency_us: requirements.slo.map(|slo| micros(slo.latency_ms)),
            ttft_us: requirements.ttft_ms.map(micros),
            tpot_us: requirements.tpot_ms.map(micros),
        }
    }

    fn met(&self, latency_us: u64, ttft_us: Option<u64>, tpot_us: Option<u64>) -> bool {
        let within = |goal: Option<u64>, value: Option<u64>| match (goal, value) {
            (None, _) => true,
            (Some(goal), Some(value)) => value <= goal,
            // A response that cannot show the figure (not streamed, one token) does not meet its goal.
            (Some(_), None) => false,
        };
        within(self.latency_us, Some(latency_us)) && within(self.ttft_us, ttft_us) && within(self.tpot_us, tpot_us)
    }
}

/// Token timings and counts of the generated responses in an interval.
#[derive(Debug, Clone)]
pub struct TokenTally {
    pub ttft_us: LatencyHistogram,
    pub itl_us: LatencyHistogram,
    pub tpot_us: LatencyHistogram,
    /// Tokens per response.
    pub output_tokens: LatencyHistogram,
    pub input_tokens: LatencyHistogram,
    /// Sums, exact (a histogram's mean is not): tokens per second come from them.
    pub output_total: u64,
    pub input_total: u64,
    /// Responses whose counts are estimates (`TokenCount::Estimated`).
    pub estimated: u64,
    /// Responses counted by the job's tokenizer (`TokenCount::Tokenizer`).
    pub tokenized: u64,
    /// Complete responses within every goal (`GoodputGoals`).
    pub good: u64,
}

impl Default for TokenTally {
    fn default() -> Self {
        Self {
            ttft_us: new_histogram(),
            itl_us: new_histogram(),
            tpot_us: new_histogram(),
            output_tokens: new_histogram(),
            input_tokens: new_histogram(),
            output_total: 0,
            input_total: 0,
            estimated: 0,
            tokenized: 0,
            good: 0,
        }
    }
}

impl TokenTally {
    /// One response that took `latency_us` in all, with the gaps between its chunks; a complete one within
    /// `goals` counts as good.
    pub fn record(&mut self, latency_us: u64, tokens: Tokens, gaps_us: &[u32], goals: Option<&GoodputGoals>) {
        let ttft_us = tokens.first_token_us;
        let tpot_us = ttft_us
            .filter(|_| tokens.output > 1)
            .map(|first_us| latency_us.saturating_sub(first_us) / u64::from(tokens.output - 1));
        if let Some(first_us) = ttft_us {
            self.ttft_us.saturating_record(first_us.max(1));
        }
        if let Some(tpot_us) = tpot_us {
            self.tpot_us.saturating_record(tpot_us.max(1));
        }
        if goals.is_some_and(|goals| goals.met(latency_us, ttft_us, tpot_us)) {
            self.good += 1;
        }
        // Chunks that arrive in one read share their gap (often 0): a run of equal gaps is one record.
        for run in gaps_us.chunk_by(|a, b| a == b) {
            self.itl_us.saturating_record_n(u64::from(run[0]).max(1), run.len() as u64);
        }
        self.output_tokens.saturating_record(u64::from(tokens.output).max(1));
        self.output_total += u64::from(tokens.output);
        if let Some(input) = tokens.input {
            self.input_tokens.saturating_record(u64::from(input).max(1));
            self.input_total += u64::from(input);
        }
        match tokens.counted {
            TokenCount::Usage => {}
            TokenCount::Estimated => self.estimated += 1,
            TokenCount::Tokenizer => self.tokenized += 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.output_tokens.is_empty()
    }

    pub fn merge(&mut self, other: &TokenTally) {
        for (into, from) in self.histograms_mut().into_iter().zip(other.histograms()) {
            into.add(from).expect("histograms share bounds");
        }
        self.output_total += other.output_total;
        self.input_total += other.input_total;
        self.estimated += other.estimated;
        self.tokenized += other.tokenized;
        self.good += other.good;
    }

    pub fn reset(&mut self) {
        for histogram in self.histograms_mut() {
            histogram.reset();
        }
        (self.output_total, self.input_total, self.estimated, self.good) = (0, 0, 0, 0);
    }

    fn histograms(&self) -> [&LatencyHistogram; 5] {
        [&self.ttft_us, &self.itl_us, &self.tpot_us, &self.output_tokens, &self.input_tokens]
    }

    fn histograms_mut(&mut self) -> [&mut LatencyHistogram; 5] {
        [&mut self.ttft_us, &mut self.itl_us, &mut self.tpot_us, &mut self.output_tokens, &mut self.input_tokens]
    }

    /// The series file's form: histograms as HDR V2 deflate, base64.
    pub fn encoded(&self) -> EncodedTokens {
        let [ttft, itl, tpot, output, input] = self.histograms().map(super::encode_histogram);
        EncodedTokens {
            ttft,
            itl,
            tpot,
            output,
            input,
            output_total: self.output_total,
            input_total: self.input_total,
            estimated: self.estimated,
            tokenized: self.tokenized,
            good: self.good,
        }
    }

    pub fn decoded(encoded: &EncodedTokens) -> Result<Self, super::HistogramError> {
        let decode = super::decode_histogram;
        Ok(Self {
            ttft_us: decode(&encoded.ttft)?,
            itl_us: decode(&encoded.itl)?,
            tpot_us: decode(&encoded.tpot)?,
            output_tokens: decode(&encoded.output)?,
            input_tokens: decode(&encoded.input)?,
            output_total: encoded.output_total,
            input_total: encoded.input_total,
            estimated: encoded.estimated,
            tokenized: encoded.tokenized,
            good: encoded.good,
        })
    }
}

/// A second's token tally in the series file.
#[derive(Debug, Serialize, Deserialize)]
pub struct EncodedTokens {
    ttft: String,
    itl: String,
    tpot: String,
    output: String,
    input: String,
    output_total: u64,
    input_total: u64,
    estimated: u64,
    #[serde(default)]
    tokenized: u64,
    #[serde(default)]
    good: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_response_gives_its_ttft_tpot_and_every_gap_and_survives_the_series_form() {
        let mut tally = TokenTally::default();
        let goals = GoodputGoals { latency_us: None, ttft_us: Some(100_000), tpot_us: Some(100_000) };
        let tokens = Tokens { first_token_us: Some(100_000), output: 5, input: Some(40), counted: TokenCount::Usage };
        tally.record(500_000, tokens, &[90_000, 110_000, 100_000, 100_000], Some(&goals));
        // Not streamed: no TTFT to meet its goal with.
        let whole = Tokens { first_token_us: None, output: 3, input: None, counted: TokenCount::Estimated };
        tally.record(2_000, whole, &[], Some(&goals));
        // 1 µs over the TPOT goal.
        let slow = Tokens { first_token_us: Some(1_000), output: 2, input: None, counted: TokenCount::Usage };
        tally.record(101_001, slow, &[100_001], Some(&goals));
        assert_eq!(tally.good, 1);
        tally.record(101_001, slow, &[100_001], None);
        assert_eq!(tally.good, 1);
        let tally = {
            let mut first_two = TokenTally::default();
            first_two.record(500_000, tokens, &[90_000, 110_000, 100_000, 100_000], Some(&goals));
            first_two.record(2_000, whole, &[], Some(&goals));
            first_two
        };
        assert_eq!(tally.ttft_us.len(), 1);
        assert_eq!(tally.tpot_us.value_at_quantile(0.5) / 1000, 100); // (500 - 100) / 4 ms
        assert_eq!(tally.itl_us.len(), 4);
        assert_eq!((tally.output_total, tally.input_total, tally.estimated), (8, 40, 1));
        let mut merged = TokenTally::decoded(&tally.encoded()).unwrap();
        merged.merge(&tally);
        assert_eq!((merged.output_total, merged.itl_us.len(), merged.output_tokens.len()), (16, 8, 4));
        merged.reset();
        assert!(merged.is_empty() && merged.output_total == 0);
    }
}
