//! The built-in reference LLM endpoint: an OpenAI-compatible server (`/v1/chat/completions`, `/v1/completions`)
//! whose engine batches continuously, as vLLM, SGLang and TGI do (the model is `spec::LlmModel`). One engine task
//! runs the iterations; each decodes a token for every running sequence, streamed at once to its response as a
//! server-sent event in OpenAI's chunk format. Its TTFT, inter-token gap and saturation throughput are known in
//! closed form (`LlmModel::unloaded_ms`, `saturation_output_tokens_per_s`): the truth plateau's token figures are
//! tested against.
//!
//! Iterations run on a virtual clock, as the reference endpoint's service does: an iteration starts when the
//! previous one was due to end, not when the timer woke the engine, so timer lateness delays tokens a little but
//! takes no throughput away.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::measure::{ResourceSample, ResourceSource};
use crate::spec::LlmModel;

/// Tokens a response has when the request does not say (OpenAI's completions default).
const DEFAULT_MAX_TOKENS: u32 = 16;
/// Each generated token's text: four characters, so a whole response's text estimates its tokens exactly.
const TOKEN_TEXT: &str = " tok";

/// A running reference LLM endpoint; dropping it closes its listener and stops its engine.
pub struct LlmServer {
    pub address: SocketAddr,
    engine: Arc<EngineState>,
    shutdown: CancellationToken,
}

impl LlmServer {
    /// Binds `address` (port 0 picks a free one) and serves until stopped.
    pub async fn start(model: LlmModel, address: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (admissions, incoming) = mpsc::unbounded_channel();
        let engine =
            Arc::new(EngineState { model, admissions, busy_slot_us: AtomicU64::new(0), kv_in_use: AtomicU64::new(0) });
        tokio::spawn(run_engine(Arc::clone(&engine), incoming, shutdown.clone()));
        let serving = Arc::clone(&engine);
        tokio::spawn(super::accept_loop(listener, shutdown.clone(), move |request| {
            respond(Arc::clone(&serving), request)
        }));
        Ok(Self { address, engine, shutdown })
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.address)
    }

    pub async fn run_until_stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// The batch's occupancy (as CPU) and the KV cache's (as memory), labelled simulated in reports.
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            engine: Arc::clone(&self.engine),
            last_at: Instant::now(),
            last_busy_slot_us: self.engine.busy_slot_us.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct EngineState {
    model: LlmModel,
    admissions: mpsc::UnboundedSender<Admission>,
    /// Σ sequences × iteration time: how much of the batch's room was used.
    busy_slot_us: AtomicU64,
    kv_in_use: AtomicU64,
}

/// A request handed to the engine.
struct Admission {
    prompt_tokens: u32,
    max_tokens: u32,
    arrived: Instant,
    pieces: mpsc::UnboundedSender<Piece>,
}

impl Admission {
    fn kv_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.max_tokens)
    }
}

/// What the engine sends a response.
enum Piece {
    Token,
    End,
}

struct Running {
    admission: Admission,
    remaining: u32,
}

async fn run_engine(
    state: Arc<EngineState>,
    mut incoming: mpsc::UnboundedReceiver<Admission>,
    shutdown: CancellationToken,
) {
    let model = state.model;
    let mut waiting: VecDeque<Admission> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut kv_in_use = 0u64;
    // When the previous iteration was due to end; none while the engine is idle.
    let mut clock: Option<Instant> = None;
    loop {
        if running.is_empty() && waiting.is_empty() {
            clock = None;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                admission = incoming.recv() => match admission {
                    Some(admission) => waiting.push_back(admission),
                    None => return,
                },
            }
        }
        while let Ok(admission) = incoming.try_recv() {
            waiting.push_back(admission);
        }
        let mut prefill_tokens = 0u64;
        while running.len() < model.max_batch as usize {
            let Some(next) = waiting.front() else { break };
            // A request larger than the whole cache still runs, alone, rather than wait for ever.
            let fits = model.kv_cache_tokens.is_none_or(|kv| kv_in_use + next.kv_tokens() <= u64::from(kv));
            if !fits && !running.is_empty() {
                break;
            }
            let admission = waiting.pop_front().expect("a front element");
            kv_in_use += admission.kv_tokens();
            prefill_tokens += u64::from(admission.prompt_tokens);
            running.push(Running { remaining: admission.max_tokens, admission });
        }
        let batch = running.len() as u32;
        let iteration = Duration::from_secs_f64(model.iteration_ms(batch, prefill_tokens) / 1000.0);
        let start =
            clock.unwrap_or_else(|| running.iter().map(|r| r.admission.arrived).min().unwrap_or_else(Instant::now));
        let due = start + iteration;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = crate::precise_timer::sleep_until(due) => {}
        }
        clock = Some(due);
        state.busy_slot_us.fetch_add(iteration.as_micros() as u64 * u64::from(batch), Ordering::Relaxed);
        state.kv_in_use.store(kv_in_use, Ordering::Relaxed);
        running.retain_mut(|sequence| {
            sequence.remaining -= 1;
            // A response whose client went away is dropped, as servers abort a disconnected request.
            let delivered = sequence.admission.pieces.send(Piece::Token).is_ok();
            if delivered && sequence.remaining > 0 {
                return true;
            }
            let _ = sequence.admission.pieces.send(Piece::End);
            kv_in_use -= sequence.admission.kv_tokens();
            false
        });
    }
}

/// What a request asks for; only what the engine reads.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The characters of every string in `value` (a prompt, or a message's content in parts).
fn characters(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(text) => text.chars().count(),
        serde_json::Value::Array(items) => items.iter().map(characters).sum(),
        serde_json::Value::Object(fields) => fields.get("text").map_or(0, characters),
        _ => 0,
    }
}

type Reply = Response<ResponseBody>;

async fn respond(engine: Arc<EngineState>, request: Request<Incoming>) -> Result<Reply, hyper::Error> {
    if matches!(request.uri().path(), "/ping" | "/health" | "/v1/models") {
        return Ok(json(StatusCode::OK, r#"{"status":"healthy"}"#.into()));
    }
    let body = request.into_body().collect().await?.to_bytes();
    let arrived = Instant::now();
    let completion: Completion = match serde_json::from_slice(&body) {
        Ok(completion) => completion,
        Err(error) => return Ok(bad_request(&format!("not a completion request: {error}"))),
    };
    let (chat, prompt_characters) = match (&completion.messages, &completion.prompt) {
        (Some(messages), _) => (true, messages.iter().map(|message| characters(&message.content)).sum::<usize>()),
        (None, Some(prompt)) => (false, characters(prompt)),
        (None, None) => return Ok(bad_request("a request needs `messages` (chat) or `prompt` (completions)")),
    };
    let max_tokens = completion.max_completion_tokens.or(completion.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Ok(bad_request("max_tokens must be at least 1"));
    }
    let prompt_tokens = u32::try_from(prompt_characters.div_ceil(4)).unwrap_or(u32::MAX);
    let (pieces, receiver) = mpsc::unbounded_channel();
    if engine.admissions.send(Admission { prompt_tokens, max_tokens, arrived, pieces }).is_err() {
        return Ok(json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"message":"the engine has stopped"}}"#.into()));
    }
    let format = Format {
        chat,
        stream: completion.stream,
        include_usage: completion.stream_options.is_some_and(|options| options.include_usage),
        prompt_tokens,
    };
    let content_type = if format.stream { "text/event-stream" } else { "application/json" };
    let body = ResponseBody::Generated { receiver, format, produced: 0, ended: false };
    Ok(Response::builder()
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("static response parts are valid"))
}

fn bad_request(message: &str) -> Reply {
    let body = serde_json::json!({ "error": { "message": message, "type": "invalid_request_error" } }).to_string();
    json(StatusCode::BAD_REQUEST, body)
}

fn json(status: StatusCode, body: String) -> Reply {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(ResponseBody::Whole(Some(Bytes::from(body))))
        .expect("static response parts are valid")
}

/// How a response is written: chat or text completion, streamed or whole.
#[derive(Clone, Copy)]
struct Format {
    chat: bool,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u32,
}

impl Format {
    /// A streamed chunk with `text`, or the last one with its finish reason.
    fn chunk(&self, text: &str, finished: bool) -> String {
        let finish = if finished { r#""length""# } else { "null" };
        if self.chat {
            format!(
                "data: {{\"object\":\"chat.completion.chunk\",\"model\":\"reference\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":{finish}}}]}}\n\n"
            )
        } else {
            format!(
                "data: {{\"object\":\"text_completion\",\"model\":\"reference\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":{finish}}}]}}\n\n"
            )
        }
    }

    fn usage(&self, produced: u32) -> String {
        format!(
            "{{\"prompt_tokens\":{},\"completion_tokens\":{produced},\"total_tokens\":{}}}",
            self.prompt_tokens,
            self.prompt_tokens + produced
        )
    }

    /// What follows the last token: a stream's finish chunk, usage (when asked) and `[DONE]`; a whole response.
    fn ending(&self, produced: u32) -> String {
        if self.stream {
            let mut ending = self.chunk("", true);
            if self.include_usage {
                ending.push_str(&format!("data: {{\"choices\":[],\"usage\":{}}}\n\n", self.usage(produced)));
            }
            ending.push_str("data: [DONE]\n\n");
            return ending;
        }
        let text = TOKEN_TEXT.repeat(produced as usize);
        let usage = self.usage(produced);
        if self.chat {
            format!(
                "{{\"object\":\"chat.completion\",\"model\":\"reference\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"finish_reason\":\"length\"}}],\"usage\":{usage}}}"
            )
        } else {
            format!(
                "{{\"object\":\"text_completion\",\"model\":\"reference\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":\"length\"}}],\"usage\":{usage}}}"
            )
        }
    }
}

/// A response: whole, or tokens as the engine generates them.
enum ResponseBody {
    Whole(Option<Bytes>),
    Generated { receiver: mpsc::UnboundedReceiver<Piece>, format: Format, produced: u32, ended: bool },
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Whole(body) => Poll::Ready(body.take().map(|body| Ok(Frame::data(body)))),
            ResponseBody::Generated { receiver, format, produced, ended } => loop {
                if *ended {
                    return Poll::Ready(None);
                }
                match receiver.poll_recv(cx) {
                    Poll::Ready(Some(Piece::Token)) => {
                        *produced += 1;
                        if format.stream {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(format.chunk(TOKEN_TEXT, false))))));
                        }
                    }
                    Poll::Ready(Some(Piece::End) | None) => {
                        *ended = true;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(format.ending(*produced))))));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }
}

/// Samples the reference LLM endpoint: the batch's occupancy as CPU, the KV cache's as memory.
pub struct Occupancy {
    engine: Arc<EngineState>,
    last_at: Instant,
    last_busy_slot_us: u64,
}

impl ResourceSource for Occupancy {
    fn label(&self) -> &'static str {
        "simulated (batch and KV-cache occupancy of the reference LLM endpoint)"
    }

    fn sample(&mut self) -> ResourceSample {
        let now = Instant::now();
        let busy_slot_us = self.engine.busy_slot_us.load(Ordering::Relaxed);
        let room_us = now.duration_since(self.last_at).as_micros() as f64 * f64::from(self.engine.model.max_batch);
        let batch_percent =
            if room_us > 0.0 { (busy_slot_us - self.last_busy_slot_us) as f64 / room_us * 100.0 } else { 0.0 };
        (self.last_at, self.last_busy_slot_us) = (now, busy_slot_us);
        let kv_percent = self
            .engine
            .model
            .kv_cache_tokens
            .map(|kv| self.engine.kv_in_use.load(Ordering::Relaxed) as f64 / f64::from(kv) * 100.0);
        ResourceSample {
            cpu_percent: Some(batch_percent.min(100.0)),
            memory_percent: kv_percent,
            ..ResourceSample::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One streamed request alone on the engine: its first token after one iteration with its prefill, then one
    /// plain iteration a token (never sooner), and the stream in OpenAI's format, usage included when asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_gets_its_tokens_at_the_models_pace() {
        let model = LlmModel {
            max_batch: 4,
            iteration_ms: 20.0,
            per_sequence_ms: 2.0,
            prefill_ms_per_token: 0.5,
            kv_cache_tokens: None,
        };
        let server = LlmServer::start(model, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let prompt = "x".repeat(80); // 20 tokens: 10 ms of prefill
        let body = serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5, "stream": true,
            "stream_options": {"include_usage": true}
        });
        let started = Instant::now();
        let mut response = reqwest::Client::new().post(server.url()).json(&body).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut arrivals = Vec::new();
        let mut text = String::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            arrivals.push(started.elapsed().as_secs_f64() * 1000.0);
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        // Never early (the engine's clock only runs late); how close it comes is the accuracy test's, under load_lock.
        let (ttft_ms, gap_ms) = model.unloaded_ms(20);
        assert_eq!((ttft_ms, gap_ms), (32.0, 22.0));
        assert!(arrivals[0] >= ttft_ms, "first token at {:.1} ms, before {ttft_ms}", arrivals[0]);
        let last_token_ms = ttft_ms + 4.0 * gap_ms;
        assert!(arrivals[4] >= last_token_ms, "fifth token at {:.1} ms, before {last_token_ms}", arrivals[4]);
        assert_eq!(text.matches("\"content\":\" tok\"").count(), 5, "{text}");
        assert!(text.contains("\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}
