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

use super::sse::{SseError, SseParser, line_end};
use crate::measure::{ErrorClass, TokenCount, Tokens};
use crate::tokenizer::Tokenizer;

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
    arrivals: Arrivals,
    usage: Option<Usage>,
    /// `[DONE]`, or a chunk with a finish reason.
    ended: bool,
    broken: Option<String>,
    /// What this response's text chunks repeat around their text (see `scan`).
    repeats: Repeats,
    /// The job's tokenizer, for responses without `usage`.
    counting: Option<Counting>,
}

/// When a response's text chunks came.
#[derive(Default)]
struct Arrivals {
    first: Option<Instant>,
    last: Option<Instant>,
    /// Chunks that carried text.
    chunks: u32,
    /// The gaps between them, for the recorder.
    gaps_us: Vec<u32>,
}

impl Arrivals {
    fn clear(&mut self) {
        (self.first, self.last, self.chunks) = (None, None, 0);
        self.gaps_us.clear();
    }

    /// `count` chunks that carried text came at `now`, in one read: no time between them.
    fn texts(&mut self, now: Instant, count: u32) {
        if count == 0 {
            return;
        }
        if let Some(previous) = self.last {
            let gap_us = now.saturating_duration_since(previous).as_micros();
            self.gaps_us.push(u32::try_from(gap_us).unwrap_or(u32::MAX));
        }
        self.gaps_us.resize(self.gaps_us.len() + count as usize - 1, 0);
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.chunks += count;
    }
}

/// Counting tokens with the job's tokenizer, off the clock: a stream's text chunks are kept as they come and read
/// when the response has ended, and the prompt is counted when its request is prepared.
struct Counting {
    tokenizer: Tokenizer,
    /// The current response's text chunks (their JSON), one after another ...
    chunks: Vec<u8>,
    /// ... each ending here.
    chunk_ends: Vec<usize>,
    /// The body whose prompt was counted last (a fixed body is counted once), and its count: none when the body
    /// is not a completion request.
    prompt: Option<(bytes::Bytes, Option<u32>)>,
}

impl Counting {
    /// A chunk that carried text, kept to be read when the response has ended.
    fn chunk(&mut self, data: &[u8]) {
        self.chunks.extend_from_slice(data);
        self.chunk_ends.push(self.chunks.len());
    }

    /// The tokens of the text in the stream's chunks.
    fn streamed_output(&self) -> u32 {
        let mut text = String::new();
        let mut start = 0;
        for &end in &self.chunk_ends {
            if let Ok(chunk) = serde_json::from_slice::<serde_json::Value>(&self.chunks[start..end]) {
                push_choice_text(&chunk, &mut text);
            }
            start = end;
        }
        self.tokenizer.count(&text)
    }

    fn prompt_tokens(&self) -> Option<u32> {
        self.prompt.as_ref().and_then(|(_, tokens)| *tokens)
    }
}

/// Appends the text of a chunk's or a whole response's first choice: a chat delta's or message's `content` and
/// `reasoning_content`, a completion's `text`.
fn push_choice_text(response: &serde_json::Value, text: &mut String) {
    let choice = &response["choices"][0];
    for part in ["delta", "message"] {
        for key in ["reasoning_content", "content"] {
            text.push_str(choice[part][key].as_str().unwrap_or_default());
        }
    }
    text.push_str(choice["text"].as_str().unwrap_or_default());
}

/// The prompt of a completion request's body, as the server reads it: the chat messages' text (a string, or the
/// text of its parts), or a completion's `prompt`; none when the body is neither.
fn prompt_texts(body: &[u8]) -> Option<Vec<String>> {
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn texts(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => into.push(text.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|item| texts(item, into)),
            serde_json::Value::Object(fields) => fields.get("text").into_iter().for_each(|text| texts(text, into)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    match (&request["messages"], &request["prompt"]) {
        (serde_json::Value::Array(messages), _) => {
            messages.iter().for_each(|message| texts(&message["content"], &mut found));
        }
        (_, prompt @ (serde_json::Value::String(_) | serde_json::Value::Array(_))) => texts(prompt, &mut found),
        _ => return None,
    }
    Some(found)
}

impl Default for TokenReader {
    fn default() -> Self {
        Self {
            sse: SseParser::new(MAX_EVENT_BYTES),
            started: Instant::now(),
            event_stream: false,
            arrivals: Arrivals::default(),
            usage: None,
            ended: false,
            broken: None,
            repeats: Repeats::default(),
            counting: None,
        }
    }
}

impl TokenReader {
    /// A reader that counts tokens with `tokenizer` when a response has no `usage`.
    pub fn new(tokenizer: Option<Tokenizer>) -> Self {
        let counting =
            tokenizer.map(|tokenizer| Counting { tokenizer, chunks: Vec::new(), chunk_ends: Vec::new(), prompt: None });
        Self { counting, ..Self::default() }
    }

    /// The request about to be sent, for its prompt's tokens when a tokenizer counts them (before the clock
    /// starts; the same body again is not counted again).
    pub fn prompt(&mut self, body: &bytes::Bytes) {
        let Some(counting) = &mut self.counting else { return };
        if counting
            .prompt
            .as_ref()
            .is_some_and(|(counted, _)| counted.as_ptr() == body.as_ptr() && counted.len() == body.len())
        {
            return;
        }
        let tokens = prompt_texts(body).map(|texts| texts.iter().map(|text| counting.tokenizer.count(text)).sum());
        counting.prompt = Some((body.clone(), tokens));
    }

    /// Ready for a response to a request sent at `started`.
    pub fn begin(&mut self, started: Instant) {
        self.sse.reset();
        self.arrivals.clear();
        self.repeats.clear();
        if let Some(counting) = &mut self.counting {
            counting.chunks.clear();
            counting.chunk_ends.clear();
        }
        (self.started, self.usage, self.ended, self.broken) = (started, None, false, None);
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
        &self.arrivals.gaps_us
    }

    /// Reads the next bytes of an event stream, arrived at `now`.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() && self.broken.is_none() {
            if self.sse.between_events() {
                bytes = self.read_repeated(bytes, now);
                if bytes.is_empty() {
                    return;
                }
            }
            // Anything else, up to the next event's start, through the parser.
            let Self { sse, arrivals, usage, ended, broken, repeats, counting, .. } = self;
            match sse.feed_some(bytes, |event| {
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
                match scan(event.data, repeats) {
                    Ok(chunk) if chunk.error => {
                        *broken = Some(format!("an error chunk mid-stream: {}", excerpt(event.data)));
                    }
                    Ok(chunk) => {
                        if chunk.text {
                            arrivals.texts(now, 1);
                            if let Some(counting) = counting {
                                counting.chunk(event.data);
                            }
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
            }) {
                Ok(read) => bytes = &bytes[read..],
                Err(SseError::TooLarge { limit_bytes }) => {
                    self.broken = Some(format!("an event of more than {limit_bytes} bytes"));
                }
            }
        }
    }

    /// Reads the events `bytes` starts with that are the known prefix and suffix around a short text, each on one
    /// line, without the SSE parser: nearly all of a stream, at a fraction of the instructions each. What follows
    /// them.
    fn read_repeated<'a>(&mut self, mut bytes: &'a [u8], now: Instant) -> &'a [u8] {
        let given = bytes.len();
        let mut texts = 0;
        while let Some((length, text)) = self.repeats.repeated_event(bytes) {
            if text {
                texts += 1;
                if let Some(counting) = &mut self.counting {
                    counting.chunk(&bytes[DATA_FIELD.len()..length - 2]);
                }
            }
            bytes = &bytes[length..];
        }
        self.arrivals.texts(now, texts);
        self.sse.read_outside(given - bytes.len());
        bytes
    }

    /// The response's transfer ended (with its whole body, when it was not an event stream).
    pub fn finish(&mut self, whole_body: &[u8]) -> Reading {
        if !self.event_stream {
            return match serde_json::from_slice::<Whole>(whole_body) {
                Ok(Whole { usage: None, .. }) if self.counting.is_some() => {
                    let mut text = String::new();
                    if let Ok(whole) = serde_json::from_slice::<serde_json::Value>(whole_body) {
                        push_choice_text(&whole, &mut text);
                    }
                    Reading::Complete(self.counted(|counting| counting.tokenizer.count(&text)))
                }
                Ok(whole) => Reading::Complete(self.tokens(whole.usage, whole.choice.characters.div_ceil(4))),
                Err(error) => Reading::Broken(
                    self.tokens(None, 0),
                    format!("a response that is not an OpenAI completion ({error}): {}", excerpt(whole_body)),
                ),
            };
        }
        let tokens = self.tokens(self.usage, self.arrivals.chunks);
        match self.broken.take() {
            Some(reason) => Reading::Broken(tokens, reason),
            None if !self.ended => Reading::Broken(tokens, "the stream ended without [DONE] or a finish reason".into()),
            None => Reading::Complete(tokens),
        }
    }

    /// The transfer failed mid-response: the tokens so far.
    pub fn interrupted(&self) -> Tokens {
        self.tokens(self.usage, self.arrivals.chunks)
    }

    /// A transfer that failed as `class` after sending tokens broke off (its tokens kept); anything else failed.
    pub fn broke_off(&self, class: ErrorClass) -> Option<Tokens> {
        let tokens = self.interrupted();
        (class == ErrorClass::Other && tokens.output > 0).then_some(tokens)
    }

    /// The response's tokens: the server's `usage`, else the job's tokenizer's count of a stream's text, else
    /// `estimate`.
    fn tokens(&self, usage: Option<Usage>, estimate: u32) -> Tokens {
        match usage {
            Some(usage) => Tokens {
                first_token_us: self.first_token_us(),
                output: usage.completion_tokens,
                input: Some(usage.prompt_tokens),
                counted: TokenCount::Usage,
            },
            None if self.counting.is_some() => self.counted(Counting::streamed_output),
            None => Tokens {
                first_token_us: self.first_token_us(),
                output: estimate,
                input: None,
                counted: TokenCount::Estimated,
            },
        }
    }

    /// Tokens counted by the job's tokenizer: the output as `output` counts it, the input from the prompt.
    fn counted(&self, output: impl FnOnce(&Counting) -> u32) -> Tokens {
        let counting = self.counting.as_ref().expect("counted only with a tokenizer");
        Tokens {
            first_token_us: self.first_token_us(),
            output: output(counting),
            input: counting.prompt_tokens(),
            counted: TokenCount::Tokenizer,
        }
    }

    fn first_token_us(&self) -> Option<u64> {
        self.arrivals.first.map(|first| first.saturating_duration_since(self.started).as_micros() as u64)
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
///
/// A stream's chunks repeat everything around their text (id, object, created, model, index, the delta's key before
/// it; the finish reason's null and the closing brackets after it), so `repeats` keeps both from the response's
/// first text chunks when they said nothing (no error, finish or usage). A later chunk that starts with the same
/// prefix is read from its text on; when it also ends with the same suffix, nothing after its text is read either.
/// A chunk that parts from the prefix (the finish chunk) is read from the key where it parts: the keys before say
/// what they said in the prefix, which is nothing (every value plateau reads is told by its first two bytes, and
/// the key's separator is found before them).
fn scan(chunk: &[u8], repeats: &mut Repeats) -> Result<Scanned, String> {
    let mut scanned = Scanned { text: false, finished: false, usage: None, error: false };
    let known = repeats.prefix().len();
    // The prefix starts with the object's brace, so a chunk that starts with it needs no trimming at its start.
    let has_prefix = known > 0 && chunk.starts_with(repeats.prefix());
    let json = if has_prefix { chunk.trim_ascii_end() } else { chunk.trim_ascii() };
    if !(json.starts_with(b"{") && json.ends_with(b"}")) {
        return Err("not a JSON object".into());
    }
    // Trimming the end cannot reach into the prefix: it ends in a quote.
    if has_prefix && json.len() > known {
        let after = string_end(json, known).ok_or("a string that does not end")?;
        scanned.text = after > known + 1;
        let rest = &json[after..];
        if repeats.suffix().is_empty() || rest != repeats.suffix() {
            scan_keys(json, after, &mut scanned, None)?;
            if !(scanned.finished || scanned.error || scanned.usage.is_some()) {
                repeats.learn_suffix(rest);
            }
        }
    } else {
        let same = common_prefix_len(json, repeats.prefix());
        // The key where they part starts after the nearest of these (a few bytes back: no search set up for it).
        let start = json[..same].iter().rposition(|byte| matches!(byte, b',' | b'{' | b'[')).unwrap_or(0);
        scan_keys(json, start, &mut scanned, Some(repeats))?;
        // A chunk that just taught the prefix and said nothing but its text teaches the suffix too.
        let said_more = scanned.finished || scanned.error || scanned.usage.is_some();
        if scanned.text
            && !said_more
            && repeats.suffix().is_empty()
            && json.starts_with(repeats.prefix())
            && let Some(after) = string_end(json, repeats.prefix().len())
        {
            repeats.learn_suffix(&json[after..]);
        }
    }
    Ok(scanned)
}

/// How many leading bytes `a` and `b` share, compared eight at a time.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    let mut same = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let differ =
            u64::from_le_bytes(x.try_into().expect("8 bytes")) ^ u64::from_le_bytes(y.try_into().expect("8 bytes"));
        if differ != 0 {
            return same + (differ.trailing_zeros() / 8) as usize;
        }
        same += 8;
    }
    same + a[same..].iter().zip(&b[same..]).take_while(|(x, y)| x == y).count()
}

/// What a response's text chunks repeat around their text, learnt from its first ones (see `scan`), kept as the
/// event of such a chunk starts and ends, so that `repeated_event` compares each once.
#[derive(Default)]
struct Repeats {
    /// `data: ` and the chunk up to its text's opening quote (the prefix); empty until one is learnt.
    head: Vec<u8>,
    /// The text's closing quote, the rest of the chunk (the suffix) and the blank line that ends the event; empty
    /// until one is learnt.
    tail: Vec<u8>,
    /// Neither holds a line end, and the suffix ends the object: an event of them around a text is one line.
    one_line: bool,
}

/// The field an event's data line starts with, as servers write it.
const DATA_FIELD: &[u8] = b"data: ";

/// The longest text `Repeats::repeated_event` reads; a longer one goes to the SSE parser.
const MAX_REPEATED_TEXT_BYTES: usize = 64;

impl Repeats {
    fn clear(&mut self) {
        self.head.clear();
        self.tail.clear();
        self.one_line = false;
    }

    fn prefix(&self) -> &[u8] {
        self.head.get(DATA_FIELD.len()..).unwrap_or_default()
    }

    fn suffix(&self) -> &[u8] {
        self.tail.get(1..self.tail.len().saturating_sub(2)).unwrap_or_default()
    }

    /// A new prefix: the suffix learnt with the old one is learnt again.
    fn learn_prefix(&mut self, prefix: &[u8]) {
        self.clear();
        self.head.extend_from_slice(DATA_FIELD);
        self.head.extend_from_slice(prefix);
    }

    fn learn_suffix(&mut self, suffix: &[u8]) {
        self.tail.clear();
        self.tail.push(b'"');
        self.tail.extend_from_slice(suffix);
        self.tail.extend_from_slice(b"\n\n");
        let has_line_end = |bytes: &[u8]| line_end(bytes).is_some();
        self.one_line = suffix.ends_with(b"}") && !has_line_end(self.prefix()) && !has_line_end(suffix);
    }

    /// The event `input` starts with when it is `data: `, the prefix, a short text without escapes or line ends,
    /// the suffix and a blank line: its length, and whether its text is not empty. The SSE parser and `scan`
    /// would read it alike (the property test below holds them to it); anything else is left to them.
    fn repeated_event(&self, input: &[u8]) -> Option<(usize, bool)> {
        if !self.one_line {
            return None;
        }
        let text = input.strip_prefix(self.head.as_slice())?;
        let text_len = plain_text_len(text)?;
        let rest = text[text_len..].strip_prefix(self.tail.as_slice())?;
        Some((input.len() - rest.len(), text_len > 0))
    }
}

/// How many bytes `input` starts with before its first quote, backslash or line end, when one comes within
/// `MAX_REPEATED_TEXT_BYTES`. A token's text is a few bytes: read eight at a time, each word tested for all four
/// at once (a byte of `word ^ repeated(stop)` is zero where the word holds `stop`, and the lowest zero byte is the
/// lowest one this test flags; it may flag bytes above it, never below).
fn plain_text_len(input: &[u8]) -> Option<usize> {
    const STOPS: [u8; 4] = [b'"', b'\\', b'\n', b'\r'];
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    let zero_bytes = |value: u64| value.wrapping_sub(ONES) & !value & (ONES * 0x80);
    let stops = |word: u64| STOPS.iter().fold(0, |flags, &stop| flags | zero_bytes(word ^ (ONES * u64::from(stop))));
    let searched = &input[..input.len().min(MAX_REPEATED_TEXT_BYTES)];
    let words = searched.chunks_exact(8);
    let rest = words.remainder();
    for (index, word) in words.enumerate() {
        let flags = stops(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        if flags != 0 {
            return Some(index * 8 + flags.trailing_zeros() as usize / 8);
        }
    }
    let position = rest.iter().position(|byte| STOPS.contains(byte))?;
    Some(searched.len() - rest.len() + position)
}

/// The index just past the closing quote of the JSON string whose contents start at `from`.
fn string_end(json: &[u8], mut from: usize) -> Option<usize> {
    // A streamed chunk's text is a token or a few: a look at its first bytes finds the end without a search.
    for (at, byte) in json.get(from..)?.iter().take(16).enumerate() {
        match byte {
            b'"' => return Some(from + at + 1),
            b'\\' => break,
            _ => {}
        }
    }
    loop {
        from += memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        if json[from] == b'"' {
            return Some(from + 1);
        }
        from += 2;
    }
}

/// Scans the keys of `json` from `start` into `scanned`; with `repeats`, learns the chunk up to the first non-empty
/// text's opening quote as their prefix, when nothing before it was found.
fn scan_keys(
    json: &[u8],
    start: usize,
    scanned: &mut Scanned,
    mut repeats: Option<&mut Repeats>,
) -> Result<(), String> {
    let non_empty_string = |value: &[u8]| value.starts_with(b"\"") && !value.starts_with(b"\"\"");
    // memchr's SSE2 searcher on x86-64, not its run-time choice: a chunk is about a hundred bytes, too short for
    // AVX2 to pay for itself (measured: the whole scan took half the time).
    #[cfg(target_arch = "x86_64")]
    let searcher = memchr::arch::x86_64::sse2::memchr::One::new(b':').expect("SSE2 is part of x86-64");
    #[cfg(target_arch = "x86_64")]
    let find_colon = |bytes: &[u8]| searcher.find(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let find_colon = |bytes: &[u8]| memchr::memchr(b':', bytes);
    let mut from = start;
    while let Some(found) = find_colon(&json[from..]) {
        let colon = from + found;
        from = colon + 1;
        let Some(name) = json[..colon].trim_ascii_end().strip_suffix(b"\"") else { continue };
        let Some(key) = Key::ending(name) else { continue };
        let value = json[colon + 1..].trim_ascii_start();
        match key {
            Key::Text if non_empty_string(value) => {
                let nothing_before = !(scanned.text || scanned.finished || scanned.error || scanned.usage.is_some());
                if let Some(repeats) = repeats.take().filter(|_| nothing_before) {
                    let quote = json.len() - value.len();
                    repeats.learn_prefix(&json[..=quote]);
                }
                scanned.text = true;
            }
            Key::Text => {}
            Key::FinishReason => scanned.finished |= non_empty_string(value),
            Key::Error => scanned.error |= !value.starts_with(b"null"),
            Key::Object => scanned.error |= value.starts_with(br#""error""#),
            Key::Usage if value.starts_with(b"{") => {
                if let Some((usage, length)) = flat_usage(value) {
                    scanned.usage = Some(usage);
                    // Its keys are read: the scan goes on after it.
                    from = json.len() - value.len() + length;
                    continue;
                }
                match serde_json::Deserializer::from_slice(value).into_iter::<Usage>().next() {
                    Some(Ok(usage)) => scanned.usage = Some(usage),
                    Some(Err(error)) => return Err(format!("its usage: {error}")),
                    None => {}
                }
            }
            Key::Usage => {}
        }
    }
    Ok(())
}

/// A `usage` object of numbers, nulls and strings only, as vLLM and SGLang send it, read without serde (a
/// deserializer's set-up was a sixth of a stream's parsing), and its length; none for anything else (nested
/// details, escapes in a key, a number out of range), which serde then reads.
fn flat_usage(object: &[u8]) -> Option<(Usage, usize)> {
    let mut usage = Usage { prompt_tokens: 0, completion_tokens: 0 };
    let read = |rest: &[u8]| object.len() - rest.len();
    let mut rest = object.get(1..)?.trim_ascii_start();
    if let Some(after) = rest.strip_prefix(b"}") {
        return Some((usage, read(after)));
    }
    loop {
        let quoted = rest.strip_prefix(b"\"")?;
        // The two keys read are compared whole, quote and all; another's end is found as a token's text's is (an
        // escape or a line end in it is for serde).
        let (count, after) = if let Some(after) = quoted.strip_prefix(b"prompt_tokens\"") {
            (Some(&mut usage.prompt_tokens), after)
        } else if let Some(after) = quoted.strip_prefix(b"completion_tokens\"") {
            (Some(&mut usage.completion_tokens), after)
        } else {
            (None, quoted[plain_text_len(quoted)?..].strip_prefix(b"\"")?)
        };
        rest = after.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
        match rest.first()? {
            // A count: digits only, at most u32's (a string or null is no count).
            b'0'..=b'9' => {
                let mut value = 0u32;
                while let Some((&digit @ b'0'..=b'9', after)) = rest.split_first() {
                    value = value.checked_mul(10)?.checked_add(u32::from(digit - b'0'))?;
                    rest = after;
                }
                if let Some(count) = count {
                    *count = value;
                }
            }
            _ if count.is_some() => return None,
            b'"' => rest = &rest[string_end(rest, 1)?..],
            b'n' => rest = rest.strip_prefix(b"null")?,
            _ => return None,
        }
        match rest.trim_ascii_start().split_first()? {
            (b',', after) => rest = after.trim_ascii_start(),
            (b'}', after) => return Some((usage, read(after))),
            _ => return None,
        }
    }
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
    fn without_usage_the_jobs_tokenizer_counts_the_streamed_text_and_the_prompt() {
        let (_folder, tokenizer) = crate::tokenizer::word_tokenizer();
        let mut stream = vllm_stream();
        stream.remove(4);
        let start = Instant::now();
        let mut reader = TokenReader::new(Some(tokenizer));
        let body = bytes::Bytes::from_static(
            br#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Say hello twice"}]}]}"#,
        );
        reader.prompt(&body);
        reader.begin(start);
        reader.event_stream(true);
        for (ms, bytes) in &stream {
            reader.feed(bytes, start + Duration::from_millis(*ms));
        }
        // "Hel" "lo \"you\"" "!": Hello, ", you, "! in three chunks; the prompt is Be, brief, ., Say, hello, twice.
        let Reading::Complete(tokens) = reader.finish(b"") else { panic!() };
        assert_eq!((tokens.output, tokens.input, tokens.counted), (4, Some(6), TokenCount::Tokenizer));
        assert_eq!(tokens.first_token_us, Some(20_000));

        // A whole response's text, and a completion's prompt.
        reader.prompt(&bytes::Bytes::from_static(br#"{"prompt": "one two three", "max_tokens": 5}"#));
        reader.begin(start);
        reader.event_stream(false);
        let Reading::Complete(tokens) = reader.finish(br#"{"choices":[{"text":"four words, of text"}]}"#) else {
            panic!()
        };
        assert_eq!((tokens.output, tokens.input, tokens.counted), (5, Some(3), TokenCount::Tokenizer));
        // The server's usage comes first.
        let Reading::Complete(tokens) =
            reader.finish(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#)
        else {
            panic!()
        };
        assert_eq!((tokens.output, tokens.input, tokens.counted), (2, Some(9), TokenCount::Usage));
        // A body that is not a completion request has no prompt to count.
        reader.prompt(&bytes::Bytes::from_static(b"not json"));
        let Reading::Complete(tokens) = reader.finish(br#"{"choices":[{"text":"a b"}]}"#) else { panic!() };
        assert_eq!((tokens.output, tokens.input), (2, None));
    }

    #[test]
    fn keys_are_found_at_every_offset_and_text_that_looks_like_a_key_is_not_one() {
        // A value holding quotes, backslashes and a fake key, shifted across the 8-byte words `find` reads.
        for pad in 0..9 {
            let chunk = format!(
                r#"{{"id":"{}","choices":[{{"delta":{{"content":"say \"finish_reason\": \"stop\" \\"}},"finish_reason":null}}]}}"#,
                "x".repeat(pad)
            );
            let scanned = scan(chunk.as_bytes(), &mut Repeats::default()).unwrap();
            assert!(scanned.text && !scanned.finished && !scanned.error, "pad {pad}: {chunk}");
            let empty =
                chunk.replace(r#""say \"finish_reason\": \"stop\" \\""#, r#""""#).replace("null", r#""length""#);
            let scanned = scan(empty.as_bytes(), &mut Repeats::default()).unwrap();
            assert!(!scanned.text && scanned.finished, "pad {pad}: {empty}");
        }
    }

    proptest::proptest! {
        /// Whatever a stream's chunks are (pieces of real ones, edited byte by byte), reading them with what the
        /// earlier ones repeat says what reading each alone says.
        #[test]
        fn what_chunks_repeat_never_changes_what_a_chunk_says(
            picks in proptest::collection::vec((0usize..6, 0usize..120, proptest::sample::select(&b"\",:{}[]x n0"[..])), 1..12)
        ) {
            let pieces = [
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ab"},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
                r#"{"id":"c","object":"error","message":"overloaded"}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x\"y"},"error":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"text":"","finish_reason":"length"}]}"#,
            ];
            let mut repeats = Repeats::default();
            for (piece, at, byte) in picks {
                let mut chunk = pieces[piece].as_bytes().to_vec();
                if at < chunk.len() {
                    chunk[at] = byte;
                }
                let read = |scanned: Result<Scanned, String>| {
                    scanned.map(|s| (s.text, s.finished, s.error, s.usage))
                };
                let alone = read(scan(&chunk, &mut Repeats::default()));
                let after = read(scan(&chunk, &mut repeats));
                // A text that does not end is refused by the fast path and not looked into by the whole scan.
                if after.is_err() && alone.is_ok() {
                    continue;
                }
                proptest::prop_assert_eq!(after, alone, "{}", String::from_utf8_lossy(&chunk));
            }
        }
    }

    proptest::proptest! {
        /// A stream read whole (its repeated events read without the SSE parser) reads as it does a byte at a
        /// time (every event through the parser, as none is whole in one read).
        #[test]
        fn repeated_events_read_whole_as_they_do_a_byte_at_a_time(
            picks in proptest::collection::vec((0usize..5, 0usize..130, proptest::sample::select(&b"\"\\\n\r:x}"[..])), 1..14)
        ) {
            let pieces = [
                "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"ab\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
                "data: [DONE]\n\n",
            ];
            let mut stream = Vec::new();
            for (piece, at, byte) in picks {
                let mut event = pieces[piece].as_bytes().to_vec();
                if at < event.len() {
                    event[at] = byte;
                }
                stream.extend_from_slice(&event);
            }
            let now = Instant::now();
            let read = |pieces: &mut dyn Iterator<Item = &[u8]>| {
                let mut reader = TokenReader::default();
                reader.begin(now);
                reader.event_stream(true);
                pieces.for_each(|piece| reader.feed(piece, now));
                (reader.finish(b""), reader.gaps_us().to_vec())
            };
            proptest::prop_assert_eq!(
                read(&mut std::iter::once(stream.as_slice())),
                read(&mut stream.chunks(1)),
                "{}",
                String::from_utf8_lossy(&stream)
            );
        }
    }

    #[test]
    fn chunks_that_repeat_the_first_text_chunks_prefix_are_read_from_their_text_alike() {
        let prefix = r#"{"id":"c-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""#;
        let chunks = [
            format!(r#"{prefix}Hel"}},"finish_reason":null}}]}}"#),
            format!(r#"{prefix}lo \"x\": \\"}},"finish_reason":null}}]}}"#),
            format!(r#"{prefix}"}},"finish_reason":null}}]}}"#),
            format!(r#"{prefix}!"}},"finish_reason":"stop"}}]}}"#),
            format!(r#"{prefix}?"}},"error":{{"message":"overloaded"}}}}]}}"#),
            format!(r#"{prefix}unterminated}}"#),
            // The same suffix again, read by comparing it; then chunks that part from the prefix mid-way.
            format!(r#"{prefix}again"}},"finish_reason":null}}]}}"#),
            r#"{"id":"c-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#
                .to_string(),
            r#"{"id":"c-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":null},"finish_reason":"stop"}]}"#
                .to_string(),
            r#"{"id":"c-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#
                .to_string(),
            r#"{"id":"c-1,2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"b"}}]}"#
                .to_string(),
            r#"{"id":"c-1","object":"error","choices":[{"index":0,"delta":{"content":"a"}}]}"#.to_string(),
        ];
        let mut known = Repeats::default();
        for chunk in &chunks {
            let fast = scan(chunk.as_bytes(), &mut known);
            let whole = scan(chunk.as_bytes(), &mut Repeats::default());
            let read = |scanned: &Result<Scanned, String>| {
                scanned.as_ref().map(|s| (s.text, s.finished, s.error, s.usage)).map_err(|_| ())
            };
            // The unterminated string: the fast path cannot find the text's end; the whole scan does not look.
            if chunk.contains("unterminated") {
                assert!(fast.is_err() && whole.is_ok(), "{chunk}");
                continue;
            }
            assert_eq!(read(&fast), read(&whole), "{chunk}");
        }
        // The last text chunk that parted from the prefix (its id) is the prefix now.
        assert_eq!(
            known.prefix(),
            br#"{"id":"c-1,2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""#
        );
        let mut first = Repeats::default();
        scan(chunks[0].as_bytes(), &mut first).unwrap();
        scan(chunks[1].as_bytes(), &mut first).unwrap();
        assert_eq!((first.prefix(), first.suffix()), (prefix.as_bytes(), br#"},"finish_reason":null}]}"#.as_slice()));
        // A chunk whose error comes before its text is not a prefix to keep.
        let mut fresh = Repeats::default();
        scan(chunks.last().unwrap().as_bytes(), &mut fresh).unwrap();
        assert!(fresh.prefix().is_empty());
    }

    #[test]
    fn a_flat_usage_is_read_without_serde_and_anything_else_by_it() {
        let read = |usage: &str| {
            let chunk = format!(r#"{{"choices":[],"usage":{usage}}}"#);
            scan(chunk.as_bytes(), &mut Repeats::default()).map(|scanned| scanned.usage)
        };
        let usage = |prompt_tokens, completion_tokens| Ok(Some(Usage { prompt_tokens, completion_tokens }));
        fn flat(object: &[u8]) -> Option<(Usage, &[u8])> {
            flat_usage(object).map(|(usage, length)| (usage, &object[..length]))
        }
        let object = br#"{"prompt_tokens":100,"completion_tokens":8,"total_tokens":108}"#;
        assert_eq!(
            flat(br#"{"prompt_tokens":100,"completion_tokens":8,"total_tokens":108},"x":1}"#),
            Some((Usage { prompt_tokens: 100, completion_tokens: 8 }, &object[..]))
        );
        assert_eq!(
            flat(br#"{ "completion_tokens" : 3 , "x":"a\"b", "prompt_tokens_details": null, "prompt_tokens":7 }"#)
                .map(|(usage, _)| usage),
            usage(7, 3).unwrap()
        );
        assert_eq!(flat(b"{ }x"), Some((Usage { prompt_tokens: 0, completion_tokens: 0 }, &b"{ }"[..])));
        // Nested details, a negative or huge count, an escaped key: serde reads them (or refuses them).
        for other in [
            r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":4}"#,
            r#"{"prompt_tokens":-1,"completion_tokens":4}"#,
            r#"{"prompt_tokens":99999999999,"completion_tokens":4}"#,
            r#"{"prompt\u005ftokens":5,"completion_tokens":4}"#,
        ] {
            assert_eq!(flat(other.as_bytes()), None, "{other}");
        }
        assert_eq!(
            read(r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":4}"#),
            usage(5, 4)
        );
        assert_eq!(read(r#"{"prompt\u005ftokens":5,"completion_tokens":4}"#), usage(5, 4));
        assert!(read(r#"{"prompt_tokens":-1,"completion_tokens":4}"#).is_err());
        assert_eq!(read(r#"{"prompt_tokens":100,"completion_tokens":8,"total_tokens":108}"#), usage(100, 8));
    }

    #[test]
    fn a_texts_end_is_found_at_every_offset_whatever_bytes_surround_it() {
        // Bytes a word-at-a-time test could take for a stop: zero, one, high bits, and the stops' neighbours.
        let fillers = [b'a', 0x00, 0x01, 0x0b, 0x0c, 0x0e, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff];
        for length in 0..80 {
            for stop in *b"\"\\\n\r" {
                for filler in fillers {
                    let mut input = vec![filler; length];
                    input.extend([stop, b'"', 0x01, 0x00]);
                    let found = (length < MAX_REPEATED_TEXT_BYTES).then_some(length);
                    assert_eq!(plain_text_len(&input), found, "{length} bytes of {filler:#x} before {stop:#x}");
                }
            }
        }
        assert_eq!(plain_text_len(&[b'a'; 100]), None);
        assert_eq!(plain_text_len(b"abc"), None);
    }

    #[test]
    fn only_whole_key_names_count() {
        let text = |chunk: &str| scan(chunk.as_bytes(), &mut Repeats::default()).unwrap().text;
        assert!(text(r#"{"delta":{"reasoning_content":"hm"}}"#));
        assert!(text(r#"{"choices":[{"text" : "a"}]}"#), "spaces around the colon");
        assert!(!text(r#"{"delta":{"xcontent":"a","my_text":"b","_reasoning_content":"c"}}"#));
        assert!(!scan(br#"{"usage_error":"x","object":"chunk"}"#, &mut Repeats::default()).unwrap().error);
    }
}
