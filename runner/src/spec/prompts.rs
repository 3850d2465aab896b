//! `[payload.prompts]`: language-model requests built from a dataset of prompts, as serving benchmarks take them
//! (vLLM's and GuideLLM's ShareGPT and JSONL files, AIPerf's single-turn files). The file is read once, when the job
//! is; each usable record becomes one OpenAI-compatible request body, and requests take them in turn, in an order
//! shuffled by the job's seed.
//!
//! A record is a JSON object with one of:
//! - `conversations`: ShareGPT's turns (`from` = `human`/`user`, then `gpt`/`assistant`): the first user turn is the
//!   prompt, the reply after it gives the output length when `max_tokens = "dataset"` (its tokens as the job's
//!   tokenizer counts them when the target names one, else four characters a token);
//! - `messages`: OpenAI chat messages, sent as they are;
//! - `prompt` or `text`: one user message.
//!
//! and optionally `max_tokens` (or `output_tokens`), the output length `max_tokens = "dataset"` reads.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_distr::Distribution;
use serde::Deserialize;
use serde_json::{Value, json};
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::{relative_to, span_of};
use crate::tokenizer::Tokenizer;

/// The characters a token stands for when a length is estimated from text (English prose under a BPE tokenizer,
/// the rate vLLM's benchmark and the llm-chat plugin use without a tokenizer).
const CHARACTERS_PER_TOKEN: usize = 4;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Prompts")]
pub(super) struct RawPrompts {
    /// A JSONL file (one record a line) or a JSON array of records (ShareGPT's form), relative to the job file.
    #[schemars(with = "PathBuf")]
    file: Spanned<PathBuf>,
    /// The model name the requests carry.
    model: String,
    /// `chat` (default: /v1/chat/completions bodies) or `completions` (/v1/completions).
    #[serde(default)]
    api: PromptApi,
    /// Output tokens asked for: a number, a distribution (`{ kind = "lognormal", median = 200, sigma = 0.6 }`,
    /// `normal` with `mean` and `stddev`, `uniform` with `min` and `max`), or "dataset" (each record's own length).
    #[schemars(with = "RawLength")]
    max_tokens: Spanned<RawLength>,
    /// Ask the server to generate exactly `max_tokens` (vLLM, SGLang and llama.cpp's server read `ignore_eos`).
    #[serde(default)]
    ignore_eos: bool,
    /// Streamed responses with usage at the end (default true).
    stream: Option<bool>,
    /// Use at most this many records, chosen by the job's seed (default all).
    #[schemars(with = "Option<u32>")]
    count: Option<Spanned<u32>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptApi {
    #[default]
    Chat,
    Completions,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum RawLength {
    Tokens(u32),
    Distribution(LengthDistribution),
    /// "dataset"
    Named(String),
}

/// A distribution of output lengths, drawn once per record (seeded) and clamped to `min`..=`max`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LengthDistribution {
    Lognormal { median: f64, sigma: f64, min: Option<u32>, max: Option<u32> },
    Normal { mean: f64, stddev: f64, min: Option<u32>, max: Option<u32> },
    Uniform { min: u32, max: u32 },
}

/// How many output tokens each request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputLength {
    Tokens(u32),
    Drawn(LengthDistribution),
    /// The record's `max_tokens`/`output_tokens`, or its ShareGPT reply's length.
    FromDataset,
}

/// Why a dataset gives no requests; each names the file, and a record by its line (JSONL) or index (JSON array).
/// Messages never quote the file's content.
#[derive(Debug, thiserror::Error)]
pub(super) enum DatasetError {
    #[error("cannot read `{path}`: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("`{path}` {at} is not JSON: {reason}")]
    NotJson { path: String, at: String, reason: String },
    #[error("`{path}` {at} is not a record: {reason}")]
    NotARecord { path: String, at: String, reason: &'static str },
    #[error("`{path}` {at} has no output length for max_tokens = \"dataset\"")]
    NoLength { path: String, at: String },
    #[error("`{path}` holds no usable prompt ({skipped} records without a user turn)")]
    Empty { path: String, skipped: usize },
}

/// One record's prompt and the output length it states, if any.
struct Record {
    messages: Vec<Value>,
    length_tokens: Option<u32>,
}

/// The request bodies of `[payload.prompts]`, or an error reported at its keys.
pub(super) fn validate_prompts(
    raw: &Spanned<RawPrompts>,
    sink: &mut DiagnosticSink<'_>,
    job_path: &Path,
    seed: u64,
    tokenizer: Option<&Tokenizer>,
) -> Option<Vec<bytes::Bytes>> {
    let prompts = raw.get_ref();
    // The file is read even when a key above is wrong, so that every error is reported at once.
    let length = validate_length(&prompts.max_tokens, sink);
    let count = match &prompts.count {
        Some(count) if *count.get_ref() == 0 => {
            sink.error(span_of(count), "payload.prompts.count", "must be at least 1", None);
            None
        }
        Some(count) => Some(Some(*count.get_ref() as usize)),
        None => Some(None),
    };
    let path = relative_to(job_path, prompts.file.get_ref());
    let settings = Settings {
        model: &prompts.model,
        api: prompts.api,
        length: length.unwrap_or(OutputLength::Tokens(1)),
        ignore_eos: prompts.ignore_eos,
        stream: prompts.stream.unwrap_or(true),
        count: count.flatten(),
        tokenizer,
    };
    match bodies(&path, &settings, seed) {
        Ok(bodies) => length.and(count).map(|_| bodies),
        Err(error) => {
            let hint = match error {
                DatasetError::Unreadable { .. } => "paths are relative to the job file",
                DatasetError::NoLength { .. } => "give the record `max_tokens`, or set max_tokens to a number",
                _ => "one JSON object a line with `prompt`, `text`, `messages` or `conversations` (docs/llm.md)",
            };
            sink.error(span_of(&prompts.file), "payload.prompts.file", error.to_string(), Some(hint.into()));
            None
        }
    }
}

fn validate_length(raw: &Spanned<RawLength>, sink: &mut DiagnosticSink<'_>) -> Option<OutputLength> {
    let mut refuse = |message: &str| {
        let hint = "a number, \"dataset\", or { kind = \"lognormal\", median = 200, sigma = 0.6 }";
        sink.error(span_of(raw), "payload.prompts.max_tokens", message, Some(hint.into()));
        None
    };
    match raw.get_ref() {
        RawLength::Tokens(0) => refuse("must be at least 1"),
        RawLength::Tokens(tokens) => Some(OutputLength::Tokens(*tokens)),
        RawLength::Named(name) if name == "dataset" => Some(OutputLength::FromDataset),
        RawLength::Named(_) => refuse("the only named length is \"dataset\""),
        RawLength::Distribution(distribution) => {
            let (low, high) = distribution.bounds();
            let positive = |value: f64| value.is_finite() && value > 0.0;
            let shape_ok = match *distribution {
                LengthDistribution::Lognormal { median, sigma, .. } => {
                    positive(median) && sigma.is_finite() && sigma >= 0.0
                }
                LengthDistribution::Normal { mean, stddev, .. } => {
                    positive(mean) && stddev.is_finite() && stddev >= 0.0
                }
                LengthDistribution::Uniform { .. } => true,
            };
            if !shape_ok {
                refuse("a median or mean must be above 0, a sigma or stddev at least 0")
            } else if low == 0 || low > high {
                refuse("needs 1 <= min <= max")
            } else {
                Some(OutputLength::Drawn(*distribution))
            }
        }
    }
}

impl LengthDistribution {
    /// The clamp: `min` defaults to 1, `max` to 32,768 tokens.
    fn bounds(&self) -> (u32, u32) {
        match *self {
            Self::Lognormal { min, max, .. } | Self::Normal { min, max, .. } => {
                (min.unwrap_or(1), max.unwrap_or(32_768))
            }
            Self::Uniform { min, max } => (min, max),
        }
    }

    fn draw(&self, rng: &mut rand::rngs::StdRng) -> u32 {
        let value = match *self {
            Self::Lognormal { median, sigma, .. } => {
                rand_distr::LogNormal::new(median.ln(), sigma).map_or(median, |lognormal| lognormal.sample(rng))
            }
            Self::Normal { mean, stddev, .. } => {
                rand_distr::Normal::new(mean, stddev).map_or(mean, |normal| normal.sample(rng))
            }
            Self::Uniform { min, max } => return rand::Rng::random_range(rng, min..=max),
        };
        let (low, high) = self.bounds();
        (value.round().max(0.0) as u64).clamp(u64::from(low), u64::from(high)) as u32
    }
}

struct Settings<'a> {
    model: &'a str,
    api: PromptApi,
    length: OutputLength,
    ignore_eos: bool,
    stream: bool,
    count: Option<usize>,
    /// Counts a conversation's reply for its length, instead of four characters a token.
    tokenizer: Option<&'a Tokenizer>,
}

fn bodies(path: &Path, settings: &Settings<'_>, seed: u64) -> Result<Vec<bytes::Bytes>, DatasetError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| DatasetError::Unreadable { path: name.clone(), source })?;
    let (records, skipped) = records(&text, &name, settings.tokenizer)?;
    if records.is_empty() {
        return Err(DatasetError::Empty { path: name, skipped });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chosen: Vec<(String, Record)> = records;
    chosen.shuffle(&mut rng);
    chosen.truncate(settings.count.unwrap_or(usize::MAX));
    chosen
        .into_iter()
        .map(|(at, record)| {
            let max_tokens = match settings.length {
                OutputLength::Tokens(tokens) => tokens,
                OutputLength::Drawn(distribution) => distribution.draw(&mut rng),
                OutputLength::FromDataset => {
                    record.length_tokens.ok_or_else(|| DatasetError::NoLength { path: name.clone(), at })?
                }
            };
            Ok(bytes::Bytes::from(body(&record, max_tokens, settings).to_string()))
        })
        .collect()
}

/// An OpenAI-compatible request body for one record.
fn body(record: &Record, max_tokens: u32, settings: &Settings<'_>) -> Value {
    let mut body = match settings.api {
        PromptApi::Chat => json!({ "model": settings.model, "messages": record.messages }),
        PromptApi::Completions => {
            // A text completion takes one prompt: the messages' contents, a line each.
            let contents: Vec<&str> =
                record.messages.iter().filter_map(|message| message["content"].as_str()).collect();
            json!({ "model": settings.model, "prompt": contents.join("\n") })
        }
    };
    body["max_tokens"] = json!(max_tokens);
    if settings.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if settings.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// The usable records with where each is (`line 3`, `record 3`), and how many had no user turn.
fn records(
    text: &str,
    path: &str,
    tokenizer: Option<&Tokenizer>,
) -> Result<(Vec<(String, Record)>, usize), DatasetError> {
    let not_json = |at: String, error: serde_json::Error| DatasetError::NotJson {
        path: path.to_string(),
        at,
        // serde_json's messages name a position and what was expected, never the input.
        reason: error.to_string(),
    };
    let values: Vec<(String, Value)> = if text.trim_start().starts_with('[') {
        let array: Vec<Value> = serde_json::from_str(text).map_err(|error| not_json("as a whole".into(), error))?;
        array.into_iter().enumerate().map(|(index, value)| (format!("record {}", index + 1), value)).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                let at = format!("line {}", index + 1);
                serde_json::from_str(line).map(|value| (at.clone(), value)).map_err(|error| not_json(at, error))
            })
            .collect::<Result<_, _>>()?
    };
    let mut usable = Vec::with_capacity(values.len());
    let mut skipped = 0;
    for (at, value) in values {
        let not_a_record = |reason| DatasetError::NotARecord { path: path.to_string(), at: at.clone(), reason };
        match record(&value, tokenizer).map_err(not_a_record)? {
            Some(record) => usable.push((at, record)),
            None => skipped += 1,
        }
    }
    Ok((usable, skipped))
}

/// A record's prompt, or none when a conversation has no user turn (ShareGPT holds some: they are skipped).
fn record(value: &Value, tokenizer: Option<&Tokenizer>) -> Result<Option<Record>, &'static str> {
    let object = value.as_object().ok_or("each record is a JSON object")?;
    let stated = ["max_tokens", "output_tokens"].iter().find_map(|key| object.get(*key));
    let stated_tokens = match stated {
        Some(tokens) => Some(
            tokens
                .as_u64()
                .filter(|tokens| (1..=u64::from(u32::MAX)).contains(tokens))
                .ok_or("`max_tokens` (or `output_tokens`) must be a whole number of at least 1")? as u32,
        ),
        None => None,
    };
    let user = |content: &str| json!({ "role": "user", "content": content });
    if let Some(turns) = object.get("conversations") {
        let turns = turns.as_array().ok_or("`conversations` must be a list of turns")?;
        let speaker = |turn: &Value| turn["from"].as_str().or(turn["role"].as_str()).map(str::to_ascii_lowercase);
        let text_of = |turn: &Value| turn["value"].as_str().or(turn["content"].as_str()).map(str::to_owned);
        let Some(first) = turns.iter().position(|turn| matches!(speaker(turn).as_deref(), Some("human" | "user")))
        else {
            return Ok(None);
        };
        let Some(prompt) = text_of(&turns[first]).filter(|prompt| !prompt.is_empty()) else { return Ok(None) };
        // The reply's length: counted by the job's tokenizer, else estimated from its characters, as vLLM's
        // benchmark reads ShareGPT without one.
        let reply_tokens = turns.get(first + 1).and_then(text_of).map(|reply| {
            let tokens = match tokenizer {
                Some(tokenizer) => tokenizer.count(&reply) as usize,
                None => reply.chars().count().div_ceil(CHARACTERS_PER_TOKEN),
            };
            tokens.clamp(1, u32::MAX as usize) as u32
        });
        return Ok(Some(Record { messages: vec![user(&prompt)], length_tokens: stated_tokens.or(reply_tokens) }));
    }
    if let Some(messages) = object.get("messages") {
        let messages = messages.as_array().filter(|messages| !messages.is_empty());
        let messages = messages.ok_or("`messages` must be a non-empty list")?;
        if !messages.iter().all(|message| message["role"].is_string() && message.get("content").is_some()) {
            return Err("each message needs a `role` and a `content`");
        }
        return Ok(Some(Record { messages: messages.clone(), length_tokens: stated_tokens }));
    }
    match object.get("prompt").or(object.get("text")) {
        Some(Value::String(prompt)) => Ok(Some(Record { messages: vec![user(prompt)], length_tokens: stated_tokens })),
        Some(_) => Err("`prompt` (or `text`) must be a string"),
        None => Err("a record needs `prompt`, `text`, `messages` or `conversations`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(length: OutputLength) -> Settings<'static> {
        Settings {
            model: "m",
            api: PromptApi::Chat,
            length,
            ignore_eos: true,
            stream: true,
            count: None,
            tokenizer: None,
        }
    }

    fn bodies_of(text: &str, settings: &Settings<'_>) -> Result<Vec<Value>, DatasetError> {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("prompts.jsonl");
        std::fs::write(&path, text).unwrap();
        let bodies = bodies(&path, settings, 7)?;
        Ok(bodies.iter().map(|body| serde_json::from_slice(body).unwrap()).collect())
    }

    #[test]
    fn the_jobs_tokenizer_counts_a_sharegpt_replys_length() {
        let (_folder, tokenizer) = crate::tokenizer::word_tokenizer();
        let text = r#"{"conversations": [{"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Rayleigh scattering, mostly."}]}"#;
        let with = Settings { tokenizer: Some(&tokenizer), ..settings(OutputLength::FromDataset) };
        // Rayleigh, scattering, ",", mostly, ".": five words and marks, where four characters a token make seven.
        assert_eq!(bodies_of(text, &with).unwrap()[0]["max_tokens"], 5);
        assert_eq!(bodies_of(text, &settings(OutputLength::FromDataset)).unwrap()[0]["max_tokens"], 7);
    }

    #[test]
    fn every_record_form_becomes_a_chat_request_and_sharegpt_replies_give_lengths() {
        let text = r#"[
            {"conversations": [{"from": "human", "value": "Why is the sky blue?"}, {"from": "gpt", "value": "Rayleigh scattering, mostly."}]},
            {"conversations": [{"from": "gpt", "value": "no user turn: skipped"}]},
            {"messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}], "max_tokens": 9},
            {"prompt": "Count to three.", "output_tokens": 5}
        ]"#;
        let mut bodies = bodies_of(text, &settings(OutputLength::FromDataset)).unwrap();
        bodies.sort_by_key(|body| body["max_tokens"].as_u64());
        let lengths: Vec<u64> = bodies.iter().map(|body| body["max_tokens"].as_u64().unwrap()).collect();
        // "Rayleigh scattering, mostly." is 28 characters: 7 tokens at 4 a token.
        assert_eq!(lengths, [5, 7, 9]);
        assert_eq!(bodies[1]["messages"], json!([{"role": "user", "content": "Why is the sky blue?"}]));
        assert_eq!(bodies[2]["messages"][0]["role"], "system");
        assert!(
            bodies.iter().all(|body| body["ignore_eos"] == true && body["stream_options"]["include_usage"] == true)
        );

        let completions = Settings { api: PromptApi::Completions, ..settings(OutputLength::Tokens(3)) };
        let bodies = bodies_of(
            r#"{"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}"#,
            &completions,
        )
        .unwrap();
        assert_eq!(bodies[0]["prompt"], "a\nb");
        assert_eq!(bodies[0]["max_tokens"], 3);
    }

    #[test]
    fn drawn_lengths_are_seeded_clamped_and_spread() {
        let lognormal = LengthDistribution::Lognormal { median: 100.0, sigma: 0.5, min: Some(20), max: Some(300) };
        let text: String = (0..400).map(|n| format!("{{\"prompt\": \"p{n}\"}}\n")).collect();
        let drawn = |seed_settings: &Settings<'_>| -> Vec<u64> {
            bodies_of(&text, seed_settings).unwrap().iter().map(|body| body["max_tokens"].as_u64().unwrap()).collect()
        };
        let first = drawn(&settings(OutputLength::Drawn(lognormal)));
        assert_eq!(first, drawn(&settings(OutputLength::Drawn(lognormal))), "the same seed draws the same");
        assert!(first.iter().all(|tokens| (20..=300).contains(tokens)));
        let mut sorted = first.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        assert!((90..=110).contains(&median), "median {median} of a lognormal with median 100");
        let count = Settings { count: Some(10), ..settings(OutputLength::Tokens(1)) };
        assert_eq!(bodies_of(&text, &count).unwrap().len(), 10);
    }

    #[test]
    fn a_bad_record_is_named_by_its_line_without_its_content() {
        let secret = "do-not-print-me";
        let error = bodies_of(
            &format!("{{\"prompt\": \"ok\"}}\n\n{{\"prompt\": \"{secret}\"\n"),
            &settings(OutputLength::Tokens(4)),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("line 3 is not JSON") && !error.contains(secret), "{error}");
        let error = bodies_of(&format!("{{\"question\": \"{secret}\"}}\n"), &settings(OutputLength::Tokens(4)))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1 is not a record: a record needs `prompt`") && !error.contains(secret),
            "{error}"
        );
        let error = bodies_of("{\"prompt\": \"no length\"}\n", &settings(OutputLength::FromDataset)).unwrap_err();
        assert!(error.to_string().contains("line 1 has no output length"), "{error}");
        let error = bodies_of("[{\"conversations\": []}]", &settings(OutputLength::Tokens(4))).unwrap_err();
        assert!(error.to_string().contains("no usable prompt (1 records without a user turn)"), "{error}");
    }
}
