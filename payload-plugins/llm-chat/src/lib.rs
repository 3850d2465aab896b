//! OpenAI-compatible chat-completion requests whose prompts follow a token-length distribution. Prompts are
//! stitched from a small built-in corpus; tokens are counted as a BPE tokenizer roughly would for English
//! (about 4 characters a token), which is what serving benchmarks such as vLLM's use when no tokenizer is given.
//!
//! [payload.config]
//! model = "llama-3-8b-instruct"
//! prompt_tokens = { kind = "lognormal", median = 256.0, sigma = 0.5 }
//! min_prompt_tokens = 8
//! max_prompt_tokens = 2048
//! max_tokens = 128               # output tokens asked for
//! stream = false
//! include_usage = false          # with stream: ask for `usage` in the last chunk (stream_options; vLLM, SGLang)
//! system = "You are a helpful assistant."   # optional
//! turns = 1                      # requests per conversation: each after the first sends the whole conversation
//!                                # so far (the replies included) and a new user message
//! follow_up_tokens = { kind = "constant", value = 32.0 }   # a follow-up message's length; prompt_tokens if unset
//!
//! The plugin is of the `conversation` world: after each reply plateau asks it for the conversation's next turn,
//! which it makes from the request it sent and the reply alone (the reply's text is read from a streamed or a
//! whole response), so the conversation grows turn by turn, as a chat's does, and a server's prefix cache shows.

use std::sync::OnceLock;

use plugin_kit::{Distribution, Rng, parse_config};
use serde::{Deserialize, Serialize};

wit_bindgen::generate!({ path: "../wit", world: "conversation" });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    model: String,
    prompt_tokens: Distribution,
    #[serde(default = "eight")]
    min_prompt_tokens: u32,
    #[serde(default = "max_prompt")]
    max_prompt_tokens: u32,
    #[serde(default = "max_tokens")]
    max_tokens: u32,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    include_usage: bool,
    system: Option<String>,
    #[serde(default = "one")]
    turns: u32,
    follow_up_tokens: Option<Distribution>,
}

fn one() -> u32 {
    1
}

fn eight() -> u32 {
    8
}
fn max_prompt() -> u32 {
    4096
}
fn max_tokens() -> u32 {
    128
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

const CORPUS: &[&str] = &[
    "Summarise the following support ticket in two sentences.",
    "The customer reports that the export job fails every night at two o'clock with a timeout.",
    "Our inference service autoscaled to twelve instances but the queue kept growing.",
    "Explain the difference between throughput and latency to a new engineer.",
    "A plateau in a load test means adding users no longer adds completed requests.",
    "List three risks of deploying a model without a canary stage.",
    "The dashboard shows p99 latency rising sharply once utilisation passes eighty percent.",
    "Translate the release notes into plain language for the sales team.",
    "Write a short poem about a lighthouse keeper who counts ships instead of sheep.",
    "The warehouse robot picked four hundred orders per hour before the firmware update.",
    "Given the table of instance prices, which configuration is cheapest per thousand requests?",
    "Describe how a token bucket rate limiter smooths bursts of traffic.",
    "Draft an email declining the meeting but proposing a time next week.",
    "The batch size was doubled and GPU memory use rose from nine to fifteen gigabytes.",
    "What questions should we ask before choosing between a larger instance and more instances?",
    "Rewrite this paragraph so a twelve-year-old could follow it.",
];

/// A BPE tokenizer's rough rate for English prose.
const CHARS_PER_TOKEN: f64 = 4.0;

static CONFIG: OnceLock<Config> = OnceLock::new();

struct LlmChat;

impl Guest for LlmChat {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if config.min_prompt_tokens == 0 || config.min_prompt_tokens > config.max_prompt_tokens {
            return Err("need 0 < min_prompt_tokens <= max_prompt_tokens".into());
        }
        if config.turns == 0 {
            return Err("turns is at least 1 (the first request)".into());
        }
        let _ = CONFIG.set(config);
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let config = CONFIG.get().ok_or("generate before init")?;
        let (tokens, prompt) = prompt(config, &config.prompt_tokens, &mut Rng::new(ctx.seed));
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &config.system {
            messages.push(Message { role: "system", content: system });
        }
        messages.push(Message { role: "user", content: &prompt });
        let request = ChatRequest {
            model: &config.model,
            messages,
            max_tokens: config.max_tokens,
            stream: config.stream,
            stream_options: (config.stream && config.include_usage).then_some(StreamOptions { include_usage: true }),
        };
        let body = serde_json::to_vec(&request).map_err(|error| error.to_string())?;
        Ok(json_request(body, tokens))
    }

    /// The conversation so far, the reply as the assistant's message, and a new user message.
    fn next_turn(ctx: Context, previous: Turn) -> Result<Option<Request>, String> {
        let config = CONFIG.get().ok_or("next-turn before init")?;
        if previous.index + 1 >= config.turns {
            return Ok(None);
        }
        let mut sent: serde_json::Value =
            serde_json::from_slice(&previous.sent.body).map_err(|error| format!("the request sent: {error}"))?;
        let messages = sent["messages"].as_array_mut().ok_or("the request sent has no messages")?;
        let answer = reply_text(&previous.reply.body)?;
        messages.push(serde_json::json!({ "role": "assistant", "content": answer }));
        let follow_up = config.follow_up_tokens.as_ref().unwrap_or(&config.prompt_tokens);
        let (tokens, prompt) = prompt(config, follow_up, &mut Rng::new(ctx.seed));
        messages.push(serde_json::json!({ "role": "user", "content": prompt }));
        let body = serde_json::to_vec(&sent).map_err(|error| error.to_string())?;
        Ok(Some(json_request(body, tokens)))
    }
}

/// A JSON request, with the length of its newest user message in tokens.
fn json_request(body: Vec<u8>, tokens: i64) -> Request {
    let headers = vec![("x-prompt-tokens".to_string(), tokens.to_string())];
    Request { body, content_type: Some("application/json".into()), headers, path_suffix: None }
}

/// A user message of about `distribution`'s tokens (within the config's bounds), and its length in tokens.
fn prompt(config: &Config, distribution: &Distribution, rng: &mut Rng) -> (i64, String) {
    let tokens = (distribution.sample(rng).round() as i64)
        .clamp(i64::from(config.min_prompt_tokens), i64::from(config.max_prompt_tokens));
    let target_chars = (tokens as f64 * CHARS_PER_TOKEN) as usize;
    let mut prompt = String::with_capacity(target_chars + 128);
    while prompt.len() < target_chars {
        if !prompt.is_empty() {
            prompt.push(' ');
        }
        prompt.push_str(CORPUS[rng.below(CORPUS.len())]);
    }
    // Cut at a word boundary so the prompt is as long as asked, not a sentence longer.
    if let Some(cut) = prompt[..target_chars.min(prompt.len())].rfind(' ') {
        prompt.truncate(cut);
    }
    (tokens, prompt)
}

/// The assistant's text in a chat completion: a stream's `delta.content` pieces joined, or a whole response's
/// `message.content`.
fn reply_text(body: &[u8]) -> Result<String, String> {
    let body = std::str::from_utf8(body).map_err(|_| "the reply is not UTF-8")?;
    let content = |chunk: &serde_json::Value, key: &str| -> String {
        chunk["choices"][0][key]["content"].as_str().unwrap_or_default().to_string()
    };
    if !body.trim_start().starts_with("data:") {
        let whole: serde_json::Value =
            serde_json::from_str(body).map_err(|error| format!("the reply is not a chat completion: {error}"))?;
        return Ok(content(&whole, "message"));
    }
    let mut text = String::new();
    for data in body.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim) {
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value =
            serde_json::from_str(data).map_err(|error| format!("a reply chunk is not JSON: {error}"))?;
        text.push_str(&content(&chunk, "delta"));
    }
    Ok(text)
}

export!(LlmChat);
