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
//! system = "You are a helpful assistant."   # optional

use std::sync::OnceLock;

use plugin_kit::{Distribution, Rng, parse_config};
use serde::{Deserialize, Serialize};

wit_bindgen::generate!({ path: "../wit", world: "generator" });

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
    system: Option<String>,
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
        let _ = CONFIG.set(config);
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let config = CONFIG.get().ok_or("generate before init")?;
        let mut rng = Rng::new(ctx.seed);
        let tokens = (config.prompt_tokens.sample(&mut rng).round() as i64)
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
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &config.system {
            messages.push(Message { role: "system", content: system });
        }
        messages.push(Message { role: "user", content: &prompt });
        let request =
            ChatRequest { model: &config.model, messages, max_tokens: config.max_tokens, stream: config.stream };
        let body = serde_json::to_vec(&request).map_err(|error| error.to_string())?;
        let headers = vec![("x-prompt-tokens".to_string(), tokens.to_string())];
        Ok(Request { body, content_type: Some("application/json".into()), headers, path_suffix: None })
    }
}

export!(LlmChat);
