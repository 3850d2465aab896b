//! plateau against a real generative server: llama-cpp-python's OpenAI-compatible server (PyPI, llama.cpp compiled
//! at install by tests/run.sh into .venv-llm) serving a tiny llama-architecture model that tests/llm/tiny_model.py
//! writes from seeded random weights. What is checked is what a reference cannot show: a real server's own SSE
//! framing (an empty first chunk, Python's spaced JSON), its `usage` in whole responses, and token timings that
//! hang together.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{load_lock, plateau, read_results, repository, text};

/// The server on a free loopback port, stopped when dropped.
struct LlamaServer {
    child: Child,
    port: u16,
}

impl LlamaServer {
    fn start(model: &Path) -> Self {
        let python = repository().join(".venv-llm/bin/python");
        assert!(
            python.exists(),
            "{} is missing: tests/run.sh creates it (pip install 'llama-cpp-python[server]' gguf)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048", "--n_threads", "1"])
            // By default a new request cuts the one streaming short (it then ends at once, one token long): here
            // requests queue, as a serving engine's do.
            .args(["--interrupt_requests", "false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/v1/models").is_none() {
            assert!(Instant::now() < deadline, "llama-cpp-python's server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain GET's body on loopback, or none while the server is not up.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}

/// One run of 1 then 2 users, 4 s each, asking for `max_tokens` words streamed or whole, counting tokens with
/// `tokenizer` when the server sends no usage.
fn run(folder: &Path, port: u16, stream: bool, max_tokens: u32, tokenizer: Option<&Path>) -> Value {
    // Random weights pick byte tokens (empty text until they complete a character), control tokens (no text) and
    // end of sequence at random: biased away, every token is a word or a word's start, each with its text, and every
    // response is max_tokens long.
    let bias: serde_json::Map<String, Value> = (0..259).map(|token| (token.to_string(), (-100).into())).collect();
    let body = serde_json::json!({
        "prompt": "the time of one man", "max_tokens": max_tokens, "stream": stream, "logit_bias": bias,
    });
    let tokenizer = tokenizer.map(|path| format!("tokenizer = '{}'", path.display())).unwrap_or_default();
    let name = format!("{stream}-{}", !tokenizer.is_empty());
    let job = folder.join(format!("job-{name}.toml"));
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "llama-cpp"
[target]
kind = "http"
url = "http://127.0.0.1:{port}/v1/completions"
api = "openai"
timeout = "30s"
{tokenizer}
[payload]
body = '{body}'
[traffic]
max_step_duration = "4s"
[traffic.stairs]
users_per_step = 1
step_duration = "4s"
steps = 2
[[configurations]]
name = "tiny"
instance_type = "cpu.1"
price_per_hour_usd = 0.1
"#
        ),
    )
    .unwrap();
    let out = folder.join(format!("out-{name}"));
    let output = plateau().args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(matches!(output.status.code(), Some(0 | 5)), "{}", text(&output));
    read_results(&out)
}

#[test]
fn a_real_llama_cpp_server_streams_tokens_plateau_times_and_counts() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let model = folder.path().join("tiny.gguf");
    let python = repository().join(".venv-llm/bin/python");
    let written = Command::new(&python).arg(repository().join("tests/llm/tiny_model.py")).arg(&model).output();
    let written = written.unwrap_or_else(|error| panic!("{}: {error}; tests/run.sh creates it", python.display()));
    assert!(written.status.success(), "{}", text(&written));
    let server = LlamaServer::start(&model);

    let streamed = run(folder.path(), server.port, true, 16, None);
    let steps = streamed["configurations"][0]["steps"].as_array().unwrap();
    for step in steps {
        let (tokens, latency) = (&step["tokens"], &step["latency"]);
        println!(
            "streamed, {} users: {:.1} responses/s, TTFT p50 {} ms, ITL p50 {} ms, TPOT p50 {} ms, latency p50 {} ms, \
             {} tokens a response (estimated: {})",
            step["load"],
            step["throughput_rps"],
            tokens["ttft"]["p50_ms"],
            tokens["itl"]["p50_ms"],
            tokens["tpot"]["p50_ms"],
            latency["p50_ms"],
            tokens["mean_output_tokens"],
            tokens["estimated"]
        );
        assert_eq!(step["error_rate_percent"].as_f64(), Some(0.0), "{step}");
        assert!(latency["count"].as_u64().unwrap() >= 10, "{step}");
        // No usage in llama-cpp-python's stream: one token per chunk with text (its empty first chunk is not one).
        // A server may group tokens in a chunk, or send a token without text: an estimate, as labelled.
        let estimate = tokens["mean_output_tokens"].as_f64().unwrap();
        assert!((15.8..=16.0).contains(&estimate), "{estimate} tokens a response, 16 generated: {step}");
        assert_eq!(tokens["estimated"], true);
        let (ttft, itl, tpot) = (
            tokens["ttft"]["p50_ms"].as_f64().unwrap(),
            tokens["itl"]["p50_ms"].as_f64().unwrap(),
            tokens["tpot"]["p50_ms"].as_f64().unwrap(),
        );
        let latency_ms = latency["p50_ms"].as_f64().unwrap();
        assert!(ttft > 0.0 && ttft < latency_ms, "TTFT {ttft} ms within the response's {latency_ms} ms");
        // A response is its first token and 15 gaps: the medians agree with that to within the spread of gaps.
        assert!(itl > 0.0 && (tpot / itl - 1.0).abs() < 0.35, "TPOT p50 {tpot} ms vs ITL p50 {itl} ms");
        let rebuilt = ttft + 15.0 * tpot;
        assert!((rebuilt / latency_ms - 1.0).abs() < 0.25, "TTFT + 15 TPOT = {rebuilt} ms vs latency {latency_ms} ms");
    }

    // The server generates one response at a time: a second user doubles the wait, not the throughput.
    let figure = |step: &Value, key: &str| step[key].as_f64().unwrap_or_else(|| step["latency"][key].as_f64().unwrap());
    let throughput = figure(&steps[1], "throughput_rps") / figure(&steps[0], "throughput_rps");
    let latency = figure(&steps[1], "p50_ms") / figure(&steps[0], "p50_ms");
    println!("1 to 2 users: throughput x{throughput:.2}, latency p50 x{latency:.2}");
    assert!((0.7..1.4).contains(&throughput) && (1.5..2.6).contains(&latency), "x{throughput:.2}, x{latency:.2}");

    let whole = run(folder.path(), server.port, false, 16, None);
    let step = &whole["configurations"][0]["steps"][0];
    let tokens = &step["tokens"];
    println!(
        "whole: {} tokens a response from {} input tokens (usage)",
        tokens["mean_output_tokens"], tokens["mean_input_tokens"]
    );
    assert_eq!(tokens["mean_output_tokens"].as_f64(), Some(16.0), "{step}");
    assert_eq!(tokens["estimated"], false, "usage counted: {step}");
    assert!(tokens["mean_input_tokens"].as_f64().unwrap() >= 5.0, "{step}");
    assert!(tokens.get("ttft").is_none(), "no TTFT without a stream: {step}");

    // The model's tokenizer (tiny_model.py writes its vocabulary as tokenizer.json) counts what the stream's chunks
    // cannot: 16 pieces of words are 16 tokens however the server groups them, and the prompt's 5 words are 5
    // tokens, the server's usage less its begin-of-sequence token.
    let usage_input = tokens["mean_input_tokens"].as_f64().unwrap();
    let counted = run(folder.path(), server.port, true, 16, Some(&folder.path().join("tokenizer.json")));
    for step in counted["configurations"][0]["steps"].as_array().unwrap() {
        let tokens = &step["tokens"];
        println!(
            "streamed, tokenizer: {} tokens a response from {} input tokens (usage of whole responses: {usage_input})",
            tokens["mean_output_tokens"], tokens["mean_input_tokens"]
        );
        assert_eq!((tokens["tokenized"].as_bool(), tokens["estimated"].as_bool()), (Some(true), Some(false)), "{step}");
        assert_eq!(tokens["mean_output_tokens"].as_f64(), Some(16.0), "{step}");
        assert_eq!(tokens["mean_input_tokens"].as_f64(), Some(usage_input - 1.0), "{step}");
    }
    let summary = std::fs::read_to_string(folder.path().join("out-true-true/report.md")).unwrap();
    assert!(summary.contains("token counts from the job's tokenizer"), "the report says how tokens were counted");
}
