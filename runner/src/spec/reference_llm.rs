//! `reference_llm = { ... }` on a reference configuration: the built-in language-model endpoint's engine, a
//! continuous-batching model whose TTFT, inter-token latency and saturation throughput follow from its numbers.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::{positive, span_of};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReferenceLlm")]
pub(super) struct RawLlmModel {
    /// Sequences decoded together in one iteration; the rest wait.
    #[schemars(with = "u32")]
    max_batch: Spanned<u32>,
    /// The time of one decoding iteration, before what the batch adds.
    #[schemars(with = "f64")]
    iteration_ms: Spanned<f64>,
    /// Each sequence in the batch adds this to an iteration (default 0).
    #[schemars(with = "Option<f64>")]
    per_sequence_ms: Option<Spanned<f64>>,
    /// Each prompt token of a sequence joining the batch adds this to its first iteration (prefill; default 0).
    #[schemars(with = "Option<f64>")]
    prefill_ms_per_token: Option<Spanned<f64>>,
    /// The KV cache: a running sequence holds its prompt and its `max_tokens`; one that does not fit waits (default:
    /// no limit).
    #[schemars(with = "Option<u32>")]
    kv_cache_tokens: Option<Spanned<u32>>,
}

/// A simulated language-model server: continuous batching, as vLLM, SGLang and TGI serve.
///
/// Each iteration decodes one token for every running sequence and takes `iteration_ms + per_sequence_ms × batch +
/// prefill_ms_per_token × prompt tokens joining`. A waiting request joins at the next iteration when the batch has
/// room (fewer than `max_batch`, and its prompt plus `max_tokens` fit the KV cache). Every response is exactly its
/// `max_tokens` long (the end-of-sequence token is ignored), and a prompt is one token per four characters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LlmModel {
    pub max_batch: u32,
    pub iteration_ms: f64,
    pub per_sequence_ms: f64,
    pub prefill_ms_per_token: f64,
    pub kv_cache_tokens: Option<u32>,
}

impl LlmModel {
    /// One iteration's time with `batch` sequences, `prefill_tokens` of prompts joining.
    pub fn iteration_ms(&self, batch: u32, prefill_tokens: u64) -> f64 {
        self.iteration_ms + self.per_sequence_ms * f64::from(batch) + self.prefill_ms_per_token * prefill_tokens as f64
    }

    /// Alone on the server: the time to first token of a prompt of `prompt_tokens`, and each next token's gap.
    pub fn unloaded_ms(&self, prompt_tokens: u32) -> (f64, f64) {
        (self.iteration_ms(1, u64::from(prompt_tokens)), self.iteration_ms(1, 0))
    }

    /// The most sequences of `prompt_tokens` + `output_tokens` that run at once.
    pub fn batch_limit(&self, prompt_tokens: u32, output_tokens: u32) -> u32 {
        let fits = self.kv_cache_tokens.map_or(u32::MAX, |kv| kv / (prompt_tokens + output_tokens).max(1));
        self.max_batch.min(fits).max(1)
    }

    /// Output tokens per second with the batch always full of requests of `prompt_tokens` in and
    /// `output_tokens` out: each request needs `output_tokens` iterations in a full batch (its first with its
    /// prefill), so a second holds R · output / B iterations and R prefills, R = requests per second.
    pub fn saturation_output_tokens_per_s(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        let batch = self.batch_limit(prompt_tokens, output_tokens);
        let per_request_ms = f64::from(output_tokens) / f64::from(batch) * self.iteration_ms(batch, 0)
            + self.prefill_ms_per_token * f64::from(prompt_tokens);
        f64::from(output_tokens) / per_request_ms * 1000.0
    }
}

pub(super) fn validate(
    raw: &Spanned<RawLlmModel>,
    key: &dyn Fn(&str) -> String,
    sink: &mut DiagnosticSink<'_>,
) -> LlmModel {
    let raw = raw.get_ref();
    if *raw.max_batch.get_ref() == 0 {
        sink.error(span_of(&raw.max_batch), key(".max_batch"), "must be at least 1", None);
    }
    let not_negative = |value: &Option<Spanned<f64>>, name: &str, sink: &mut DiagnosticSink<'_>| {
        value.as_ref().map_or(0.0, |value| {
            let number = *value.get_ref();
            if !(number.is_finite() && number >= 0.0) {
                sink.error(span_of(value), key(name), format!("must be 0 or more, not {number}"), None);
            }
            number
        })
    };
    let kv_cache_tokens = raw.kv_cache_tokens.as_ref().map(|kv| {
        if *kv.get_ref() == 0 {
            sink.error(
                span_of(kv),
                key(".kv_cache_tokens"),
                "must be at least 1",
                Some("leave it out for no limit".into()),
            );
        }
        *kv.get_ref()
    });
    LlmModel {
        max_batch: *raw.max_batch.get_ref(),
        iteration_ms: positive(&raw.iteration_ms, &key(".iteration_ms"), sink),
        per_sequence_ms: not_negative(&raw.per_sequence_ms, ".per_sequence_ms", sink),
        prefill_ms_per_token: not_negative(&raw.prefill_ms_per_token, ".prefill_ms_per_token", sink),
        kv_cache_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analytic_figures_follow_from_the_engine() {
        let model = LlmModel {
            max_batch: 8,
            iteration_ms: 10.0,
            per_sequence_ms: 1.0,
            prefill_ms_per_token: 0.05,
            kv_cache_tokens: Some(1000),
        };
        assert_eq!(model.unloaded_ms(100), (16.0, 11.0));
        // 1000 / (100 + 150) = 4 sequences fit the cache, fewer than max_batch.
        assert_eq!(model.batch_limit(100, 150), 4);
        // 150 tokens: 150 / 4 iterations of 14 ms + 5 ms of prefill = 530 ms a request per slot.
        let expected = 150.0 / (150.0 / 4.0 * 14.0 + 5.0) * 1000.0;
        assert!((model.saturation_output_tokens_per_s(100, 150) - expected).abs() < 1e-9);
    }
}
