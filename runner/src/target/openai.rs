//! Responses of OpenAI-compatible servers (`/v1/chat/completions`, `/v1/completions`; vLLM, SGLang, TGI and
//! llama.cpp's server speak it, and SageMaker's response stream carries the same chunks): a streamed response is
//! server-sent events, one JSON chunk each, ending in `data: [DONE]`; a whole one is a JSON object with `usage`.
//!
//! A `TokenReader` reads one response at a time as its bytes arrive, timing each chunk that carries text. It keeps
//! its buffers between responses, and scans a chunk's JSON for the few keys it needs rather than parsing it (a
//! chunk's text is only checked for being non-empty), so a stream costs no allocation per event.

use std::fmt;
use std::time::Instant;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::sse::{SseError, SseParser};
use crate::measure::{ErrorClass, TokenCount, Tokens};

/// An event or line longer than this ends the stream as broken: no chunk of tokens comes near it.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// How a response read by a `TokenReader` came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Complete(Tokens),
    /// It broke off (an error event, a chunk that is not what the API sends, no end): the tokens so far, and why.
    Broken(Tokens, String),
}

pub struct TokenReader {
    sse: SseParser,
    started: Instant,
    event_stream: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Chunks that carried text.
    chunks: u32,
    usage: Option<Usage>,
    /// `[DONE]`, or a chunk with a finish reason.
    ended: bool,
    broken: Option<String>,
    /// The gaps between text chunks, for the recorder.
    gaps_us: Vec<u32>,
}

impl Default for TokenReader {
    fn default() -> Self {
        Self {
            sse: SseParser::new(MAX_EVENT_BYTES),
            started: Instant::now(),
            event_stream: false,
            first: None,
            last: None,
            chunks: 0,
            usage: None,
            ended: false,
            broken: None,
            gaps_us: Vec::new(),
        }
    }
}

impl TokenReader {
    /// Ready for a response to a request sent at `started`.
    pub fn begin(&mut self, started: Instant) {
        self.sse.reset();
        self.gaps_us.clear();
        (self.started, self.first, self.last, self.chunks, self.usage, self.ended, self.broken) =
            (started, None, None, 0, None, false, None);
    }

    /// The response's body is server-sent events (its content type is `text/event-stream`).
    pub fn event_stream(&mut self, yes: bool) {
        self.event_stream = yes;
    }

    pub fn is_event_stream(&self) -> bool {
        self.event_stream
    }

    /// The gaps between the last response's text chunks, in microseconds.
    pub fn gaps_us(&self) -> &[u32] {
        &self.gaps_us
    }

    /// Reads the next bytes of an event stream, arrived at `now`.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        if self.broken.is_some() {
            return;
        }
        let Self { sse, first, last, chunks, usage, ended, broken, gaps_us, .. } = self;
        let result = sse.feed(bytes, |event| {
            if broken.is_some() {
                return;
            }
            if event.is_error {
                *broken = Some(format!("an error event mid-stream: {}", excerpt(event.data)));
                return;
            }
            if event.data == b"[DONE]" {
                *ended = true;
                return;
            }
            match scan(event.data) {
                Ok(chunk) if chunk.error => {
                    *broken = Some(format!("an error chunk mid-stream: {}", excerpt(event.data)));
                }
                Ok(chunk) => {
                    if chunk.text {
                        if let Some(previous) = *last {
                            let gap_us = now.saturating_duration_since(previous).as_micros();
                            gaps_us.push(u32::try_from(gap_us).unwrap_or(u32::MAX));
                        }
                        first.get_or_insert(now);
                        *last = Some(now);
                        *chunks += 1;
                    }
                    *ended |= chunk.finished;
                    if chunk.usage.is_some() {
                        *usage = chunk.usage;
                    }
                }
                Err(what) => {
                    *broken = Some(format!(
                        "a chunk that is not an OpenAI completion chunk ({what}): {}",
                        excerpt(event.data)
                    ));
                }
            }
        });
        if let Err(SseError::TooLarge { limit_bytes }) = result {
            self.broken = Some(format!("an event of more than {limit_bytes} bytes"));
        }
    }

    /// The response's transfer ended (with its whole body, when it was not an event stream).
    pub fn finish(&mut self, whole_body: &[u8]) -> Reading {
        if !self.event_stream {
            return match serde_json::from_slice::<Whole>(whole_body) {
                Ok(whole) => Reading::Complete(self.tokens(whole.usage, whole.choice.characters.div_ceil(4))),
                Err(error) => Reading::Broken(
                    self.tokens(None, 0),
                    format!("a response that is not an OpenAI completion ({error}): {}", excerpt(whole_body)),
                ),
            };
        }
        let tokens = self.tokens(self.usage, self.chunks);
        match self.broken.take() {
            Some(reason) => Reading::Broken(tokens, reason),
            None if !self.ended => Reading::Broken(tokens, "the stream ended without [DONE] or a finish reason".into()),
            None => Reading::Complete(tokens),
        }
    }

    /// The transfer failed mid-response: the tokens so far.
    pub fn interrupted(&self) -> Tokens {
        self.tokens(self.usage, self.chunks)
    }

    /// A transfer that failed as `class` after sending tokens broke off (its tokens kept); anything else failed.
    pub fn broke_off(&self, class: ErrorClass) -> Option<Tokens> {
        let tokens = self.interrupted();
        (class == ErrorClass::Other && tokens.output > 0).then_some(tokens)
    }

    fn tokens(&self, usage: Option<Usage>, estimate: u32) -> Tokens {
        let first_token_us = self.first.map(|first| first.saturating_duration_since(self.started).as_micros() as u64);
        match usage {
            Some(usage) => Tokens {
                first_token_us,
                output: usage.completion_tokens,
                input: Some(usage.prompt_tokens),
                counted: TokenCount::Usage,
            },
            None => Tokens { first_token_us, output: estimate, input: None, counted: TokenCount::Estimated },
        }
    }
}

/// The start of a server's text, printable, for an error's example.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).chars().filter(|c| !c.is_control()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// What a streamed chunk says, as far as plateau reads it.
struct Scanned {
    /// It carried text (a chat delta's `content` or `reasoning_content`, a completion's `text`).
    text: bool,
    /// It named a finish reason.
    finished: bool,
    usage: Option<Usage>,
    /// vLLM and SGLang send `{"object": "error", ...}` mid-stream, others `{"error": {...}}`.
    error: bool,
}

/// Reads a streamed chunk by scanning its JSON once for the keys plateau needs instead of parsing all of it: a
/// stream has a chunk per token, and parsing each whole cost a third of the request rate against a fast server.
/// A key is a quoted string followed by a colon; inside a JSON string a quote is escaped, so text that looks like a
/// key leaves a backslash in the name and matches none. Only `usage`, which comes once per response, is parsed;
/// the rest is not validated as JSON beyond its braces.
fn scan(chunk: &[u8]) -> Result<Scanned, String> {
    let json = chunk.trim_ascii();
    if !(json.starts_with(b"{") && json.ends_with(b"}")) {
        return Err("not a JSON object".into());
    }
    let non_empty_string = |value: &[u8]| value.starts_with(b"\"") && !value.starts_with(b"\"\"");
    let mut scanned = Scanned { text: false, finished: false, usage: None, error: false };
    // memchr's SSE2 searcher on x86-64, not its run-time choice: a chunk is about a hundred bytes, too short for
    // AVX2 to pay for itself (measured: the whole scan took half the time).
    #[cfg(target_arch = "x86_64")]
    let searcher = memchr::arch::x86_64::sse2::memchr::One::new(b':').expect("SSE2 is part of x86-64");
    #[cfg(target_arch = "x86_64")]
    let colons = searcher.iter(json);
    #[cfg(not(target_arch = "x86_64"))]
    let colons = memchr::memchr_iter(b':', json);
    for colon in colons {
        let Some(name) = json[..colon].trim_ascii_end().strip_suffix(b"\"") else { continue };
        let Some(key) = Key::ending(name) else { continue };
        let value = json[colon + 1..].trim_ascii_start();
        match key {
            Key::Text => scanned.text |= non_empty_string(value),
            Key::FinishReason => scanned.finished |= non_empty_string(value),
            Key::Error => scanned.error |= !value.starts_with(b"null"),
            Key::Object => scanned.error |= value.starts_with(br#""error""#),
            Key::Usage if value.starts_with(b"{") => {
                match serde_json::Deserializer::from_slice(value).into_iter::<Usage>().next() {
                    Some(Ok(usage)) => scanned.usage = Some(usage),
                    Some(Err(error)) => return Err(format!("its usage: {error}")),
                    None => {}
                }
            }
            Key::Usage => {}
        }
    }
    Ok(scanned)
}

/// The keys of a chunk plateau reads.
#[derive(Clone, Copy)]
enum Key {
    /// `content`, `reasoning_content` or `text`.
    Text,
    FinishReason,
    Error,
    Object,
    Usage,
}

impl Key {
    /// The key `name` (a chunk's bytes up to a key's closing quote) ends with, if plateau reads it. The last byte
    /// rules out most keys before any comparison, and the opening quote is checked where each key says it is, so
    /// no search runs backwards for it (that search was a third of a chunk's scan).
    fn ending(name: &[u8]) -> Option<Key> {
        let is = |key: &[u8]| name.len() > key.len() && name.ends_with(key) && name[name.len() - key.len() - 1] == b'"';
        match name.last()? {
            b't' if is(b"content") || is(b"text") || is(b"reasoning_content") => Some(Key::Text),
            b't' if is(b"object") => Some(Key::Object),
            b'n' if is(b"finish_reason") => Some(Key::FinishReason),
            b'r' if is(b"error") => Some(Key::Error),
            b'e' if is(b"usage") => Some(Key::Usage),
            _ => None,
        }
    }
}

/// A whole (not streamed) response.
#[derive(Deserialize)]
struct Whole {
    #[serde(default, rename = "choices")]
    choice: FirstChoice,
    #[serde(default)]
    usage: Option<Usage>,
}

/// The first of a whole response's `choices`, as far as plateau reads it; the rest are skipped.
#[derive(Default)]
struct FirstChoice {
    /// How many characters of text its message holds, for an estimate without `usage`.
    characters: u32,
}

impl<'de> Deserialize<'de> for FirstChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choices;
        impl<'de> Visitor<'de> for Choices {
            type Value = FirstChoice;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstChoice, A::Error> {
                let first: Option<Choice> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(first.map_or_else(FirstChoice::default, |choice| {
                    let message = choice.message.unwrap_or_default();
                    let text = [message.content, message.reasoning_content, choice.text];
                    FirstChoice { characters: text.iter().map(|text| text.0).sum() }
                }))
            }
        }
        deserializer.deserialize_seq(Choices)
    }
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    text: Text,
}

#[derive(Deserialize, Default)]
struct Message {
    #[serde(default)]
    content: Text,
    #[serde(default)]
    reasoning_content: Text,
}

/// A string read for its length in characters only (null reads as empty), so it is never built.
#[derive(Default, Clone, Copy)]
struct Text(u32);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Length;
        impl Visitor<'_> for Length {
            type Value = Text;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string or null")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text(u32::try_from(text.chars().count()).unwrap_or(u32::MAX)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(0))
            }
        }
        deserializer.deserialize_any(Length)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A vLLM-style stream: a role-only first chunk, three text chunks 10 ms apart, a finish, usage, [DONE].
    fn vllm_stream() -> Vec<(u64, &'static [u8])> {
        vec![
            (5, b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"),
            (20, b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"),
            (30, b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"you\\\"\"}}]}\n\ndata: {\"cho"),
            (40, b"ices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}\n\n"),
            (41, b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n"),
            (41, b"data: [DONE]\n\n"),
        ]
    }

    fn read(pieces: &[(u64, &[u8])]) -> (Reading, Vec<u32>) {
        let start = Instant::now();
        let mut reader = TokenReader::default();
        reader.begin(start);
        reader.event_stream(true);
        for (ms, bytes) in pieces {
            reader.feed(bytes, start + Duration::from_millis(*ms));
        }
        (reader.finish(b""), reader.gaps_us().to_vec())
    }

    #[test]
    fn a_stream_gives_its_first_token_every_gap_and_the_servers_usage() {
        let (reading, gaps) = read(&vllm_stream());
        let tokens = Tokens { first_token_us: Some(20_000), output: 3, input: Some(12), counted: TokenCount::Usage };
        assert_eq!(reading, Reading::Complete(tokens));
        assert_eq!(gaps, vec![10_000, 10_000]);
    }

    #[test]
    fn without_usage_the_chunks_are_counted_and_the_count_is_an_estimate() {
        let mut stream = vllm_stream();
        stream.remove(4);
        let (reading, _) = read(&stream);
        let Reading::Complete(tokens) = reading else { panic!("{reading:?}") };
        assert_eq!((tokens.output, tokens.input, tokens.counted), (3, None, TokenCount::Estimated));
    }

    #[test]
    fn an_error_mid_stream_or_a_missing_end_is_broken_with_the_tokens_so_far() {
        let mut stream = vllm_stream();
        stream.truncate(2);
        stream.push((50, b"event: error\ndata: {\"message\":\"CUDA out of memory\"}\n\n"));
        let (reading, _) = read(&stream);
        let Reading::Broken(tokens, reason) = reading else { panic!("{reading:?}") };
        assert_eq!(tokens.output, 1);
        assert!(reason.contains("CUDA out of memory"), "{reason}");

        let (reading, _) = read(&vllm_stream()[..3]);
        assert!(matches!(reading, Reading::Broken(_, ref reason) if reason.contains("[DONE]")), "{reading:?}");

        let (reading, _) = read(&[(5, b"data: {\"object\":\"error\",\"message\":\"overloaded\"}\n\n")]);
        assert!(matches!(reading, Reading::Broken(tokens, _) if tokens.output == 0), "{reading:?}");
        let (reading, _) = read(&[(5, b"data: not json\n\n")]);
        assert!(matches!(reading, Reading::Broken(_, ref reason) if reason.contains("not json")), "{reading:?}");
    }

    #[test]
    fn a_whole_response_reads_its_usage_or_estimates_from_its_text() {
        let mut reader = TokenReader::default();
        reader.begin(Instant::now());
        reader.event_stream(false);
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"four words of text"}}],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
        let Reading::Complete(tokens) = reader.finish(body) else { panic!() };
        assert_eq!((tokens.first_token_us, tokens.output, tokens.input), (None, 4, Some(9)));
        let body = br#"{"choices":[{"text":"twelve chars"}]}"#;
        let Reading::Complete(tokens) = reader.finish(body) else { panic!() };
        assert_eq!((tokens.output, tokens.counted), (3, TokenCount::Estimated));
    }

    #[test]
    fn keys_are_found_at_every_offset_and_text_that_looks_like_a_key_is_not_one() {
        // A value holding quotes, backslashes and a fake key, shifted across the 8-byte words `find` reads.
        for pad in 0..9 {
            let chunk = format!(
                r#"{{"id":"{}","choices":[{{"delta":{{"content":"say \"finish_reason\": \"stop\" \\"}},"finish_reason":null}}]}}"#,
                "x".repeat(pad)
            );
            let scanned = scan(chunk.as_bytes()).unwrap();
            assert!(scanned.text && !scanned.finished && !scanned.error, "pad {pad}: {chunk}");
            let empty =
                chunk.replace(r#""say \"finish_reason\": \"stop\" \\""#, r#""""#).replace("null", r#""length""#);
            let scanned = scan(empty.as_bytes()).unwrap();
            assert!(!scanned.text && scanned.finished, "pad {pad}: {empty}");
        }
    }

    #[test]
    fn only_whole_key_names_count() {
        let text = |chunk: &str| scan(chunk.as_bytes()).unwrap().text;
        assert!(text(r#"{"delta":{"reasoning_content":"hm"}}"#));
        assert!(text(r#"{"choices":[{"text" : "a"}]}"#), "spaces around the colon");
        assert!(!text(r#"{"delta":{"xcontent":"a","my_text":"b","_reasoning_content":"c"}}"#));
        assert!(!scan(br#"{"usage_error":"x","object":"chunk"}"#).unwrap().error);
    }
}
