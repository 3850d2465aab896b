//! What generated responses (language models) add to a request's latency: when the first token came, the gap
//! before each next one, and how many tokens went each way. Each is a histogram per second and per step, so token
//! figures merge across shards and rebuild from the series file exactly as latency does.
//!
//! The names follow the serving benchmarks: TTFT (time to first token), ITL (every gap between two chunks of
//! tokens, as vLLM's benchmark records it), TPOT (a response's time per output token after the first,
//! (end-to-end − TTFT) / (output tokens − 1), which AIPerf and GuideLLM call inter-token latency).

use serde::{Deserialize, Serialize};

use super::{LatencyHistogram, new_histogram};

/// Where a response's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCount {
    /// The server's `usage` object: exact.
    Usage,
    /// The server sent no `usage`: one token per streamed chunk that carried text (servers that stream token by
    /// token send that many; those that group tokens, more), or about four characters a token when not streamed.
    Estimated,
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
        }
    }
}

impl TokenTally {
    /// One response that took `latency_us` in all, with the gaps between its chunks.
    pub fn record(&mut self, latency_us: u64, tokens: Tokens, gaps_us: &[u32]) {
        if let Some(first_us) = tokens.first_token_us {
            self.ttft_us.saturating_record(first_us.max(1));
            if tokens.output > 1 {
                let tpot_us = latency_us.saturating_sub(first_us) / u64::from(tokens.output - 1);
                self.tpot_us.saturating_record(tpot_us.max(1));
            }
        }
        for &gap_us in gaps_us {
            self.itl_us.saturating_record(u64::from(gap_us).max(1));
        }
        self.output_tokens.saturating_record(u64::from(tokens.output).max(1));
        self.output_total += u64::from(tokens.output);
        if let Some(input) = tokens.input {
            self.input_tokens.saturating_record(u64::from(input).max(1));
            self.input_total += u64::from(input);
        }
        if tokens.counted == TokenCount::Estimated {
            self.estimated += 1;
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
    }

    pub fn reset(&mut self) {
        for histogram in self.histograms_mut() {
            histogram.reset();
        }
        (self.output_total, self.input_total, self.estimated) = (0, 0, 0);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_response_gives_its_ttft_tpot_and_every_gap_and_survives_the_series_form() {
        let mut tally = TokenTally::default();
        let tokens = Tokens { first_token_us: Some(100_000), output: 5, input: Some(40), counted: TokenCount::Usage };
        tally.record(500_000, tokens, &[90_000, 110_000, 100_000, 100_000]);
        tally.record(
            2_000,
            Tokens { first_token_us: None, output: 3, input: None, counted: TokenCount::Estimated },
            &[],
        );
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
