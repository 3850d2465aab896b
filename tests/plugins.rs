//! Payload plugins: the example plugins built from source (payload-plugins/build.sh) and checked for what their
//! config asks; determinism; the sandbox's defaults and grants; hostile plugins stopped with the right error; a
//! plugin failing mid-run keeps the results measured so far.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plateau::payload::{self, LoadedPlugin, PayloadSource, Prepared, Reply};
use plateau::plan::Segment;
use plateau::spec::{PluginGrant, PluginLimits, PluginSpec};
use serde_json::Value;

mod common;
use common::{built_plugins, load_lock, repository, shared_lock};

fn spec(path: PathBuf, config: Value) -> PluginSpec {
    PluginSpec {
        path,
        config_json: config.to_string(),
        limits: PluginLimits {
            memory_mb: 64,
            call_timeout: Duration::from_millis(200),
            fuel_per_call: None,
            max_body_bytes: 16 * 1024 * 1024,
        },
        grant: PluginGrant::default(),
    }
}

fn example(name: &str) -> PathBuf {
    built_plugins().join(format!("{name}.wasm"))
}

fn hostile(name: &str) -> PathBuf {
    repository().join(format!("payload-plugins/hostile/{name}.wat"))
}

fn generate(spec: &PluginSpec, count: u64) -> Result<Vec<Prepared>, String> {
    let plugin = LoadedPlugin::load(spec).map_err(|error| format!("{error:#}"))?;
    payload::preview(&plugin, "config-a", 42, count).map_err(|error| error.to_string())
}

fn json(request: &Prepared) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[test]
fn tabular_rows_and_columns_follow_the_config() {
    let _machine = shared_lock();
    let config = serde_json::json!({
        "features": 5, "rows": 3, "decimals": 2,
        "default": { "kind": "normal", "mean": 100.0, "stddev": 1.0 },
        "columns": { "0": { "kind": "uniform", "min": 18.0, "max": 90.0 }, "4": { "kind": "constant", "value": 7.0 } },
    });
    let requests = generate(&spec(example("tabular"), config), 200).unwrap();
    let mut middle_sum = 0.0;
    let mut middle_count = 0.0;
    for request in &requests {
        let rows = json(request)["instances"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 3);
        for row in rows {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(row.len(), 5);
            assert!((18.0..=90.0).contains(&row[0]), "{row:?}");
            assert_eq!(row[4], 7.0);
            middle_sum += row[1] + row[2] + row[3];
            middle_count += 3.0;
        }
    }
    let mean = middle_sum / middle_count;
    assert!((mean - 100.0).abs() < 0.1, "mean of normal(100, 1) columns was {mean}");
}

#[test]
fn kserve_v2_requests_have_the_configured_tensors_and_path() {
    let _machine = shared_lock();
    let config = serde_json::json!({
        "model": "resnet", "version": "2", "outputs": ["probabilities"],
        "inputs": [
            { "name": "pixels", "shape": [2, 3, 4], "datatype": "UINT8", "distribution": { "kind": "uniform", "min": -50.0, "max": 400.0 } },
            { "name": "scale", "shape": [1], "datatype": "FP32", "distribution": { "kind": "constant", "value": 0.5 } },
        ],
    });
    let requests = generate(&spec(example("kserve-v2"), config), 3).unwrap();
    for (sequence, request) in requests.iter().enumerate() {
        let overrides = request.overrides.as_deref().unwrap();
        assert_eq!(overrides.path_suffix.as_deref(), Some("/v2/models/resnet/versions/2/infer"));
        let body = json(request);
        assert_eq!(body["id"], sequence.to_string());
        let pixels = &body["inputs"][0];
        assert_eq!(pixels["name"], "pixels");
        assert_eq!(pixels["datatype"], "UINT8");
        assert_eq!(pixels["shape"], serde_json::json!([2, 3, 4]));
        let data = pixels["data"].as_array().unwrap();
        assert_eq!(data.len(), 24);
        // UINT8 values are whole numbers clamped to 0..=255 whatever the distribution says.
        assert!(data.iter().all(|v| v.as_u64().is_some_and(|v| v <= 255)), "{data:?}");
        assert!(data.iter().any(|v| v == 0) && data.iter().any(|v| v == 255), "clamping not exercised: {data:?}");
        assert_eq!(body["inputs"][1]["data"], serde_json::json!([0.5]));
        assert_eq!(body["outputs"], serde_json::json!([{ "name": "probabilities" }]));
    }
}

#[test]
fn llm_prompts_follow_the_token_length_distribution() {
    let _machine = shared_lock();
    let config = serde_json::json!({
        "model": "tiny-llm", "max_tokens": 64, "stream": true, "system": "Be brief.",
        "prompt_tokens": { "kind": "lognormal", "median": 200.0, "sigma": 0.4 },
        "min_prompt_tokens": 50, "max_prompt_tokens": 300,
    });
    let requests = generate(&spec(example("llm-chat"), config), 400).unwrap();
    let mut tokens: Vec<f64> = Vec::new();
    for request in &requests {
        let body = json(request);
        assert_eq!(body["model"], "tiny-llm");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["messages"][0]["role"], "system");
        let prompt = body["messages"][1]["content"].as_str().unwrap();
        let asked: f64 = request.overrides.as_deref().unwrap().headers[0].1.parse().unwrap();
        assert!((50.0..=300.0).contains(&asked));
        // About 4 characters a token: the prompt is within one word of the asked length.
        let chars = prompt.chars().count() as f64;
        assert!((chars - asked * 4.0).abs() <= 16.0, "{asked} tokens gave {chars} characters");
        tokens.push(asked);
    }
    tokens.sort_by(f64::total_cmp);
    let median = tokens[tokens.len() / 2];
    assert!((185.0..=215.0).contains(&median), "median prompt {median} tokens, configured 200");
    assert!(tokens.contains(&300.0), "the lognormal tail should reach the 300-token cap");
}

/// A reply as the HTTP target hands it to a conversation's plugin.
fn reply(body: &[u8]) -> Reply {
    Reply {
        status: 200,
        body: body.to_vec(),
        latency_us: 9_000,
        first_token_us: Some(1_000),
        output_tokens: Some(2),
        gaps_us: vec![500],
    }
}

#[test]
fn llm_chat_conversations_carry_each_reply_into_the_next_turn() {
    let _machine = shared_lock();
    let config = serde_json::json!({
        "model": "m", "max_tokens": 8, "stream": true, "turns": 3, "min_prompt_tokens": 1,
        "prompt_tokens": { "kind": "constant", "value": 20.0 },
        "follow_up_tokens": { "kind": "constant", "value": 5.0 },
    });
    let plugin = LoadedPlugin::load(&spec(example("llm-chat"), config)).unwrap();
    let streamed = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
    let whole = br#"{"choices":[{"message":{"role":"assistant","content":"Sure."}}]}"#;
    let conversation = |replies: &[&[u8]]| -> Vec<Value> {
        let mut stream = PayloadSource::plugin(std::sync::Arc::clone(&plugin), "a", 42, Segment::whole()).stream();
        assert!(stream.wants_replies());
        let mut requests = vec![json(&stream.next_request().unwrap())];
        for body in replies {
            stream.replied(reply(body));
            requests.push(json(&stream.next_request().unwrap()));
        }
        requests
    };
    let requests = conversation(&[streamed, whole, whole]);
    let messages = |index: usize| requests[index]["messages"].as_array().unwrap().clone();
    // Turn 2 is turn 1's messages, the streamed reply's text as the assistant's, and a new user message of about
    // 5 tokens; turn 3 adds the whole reply's text the same way.
    assert_eq!(messages(0).len(), 1);
    assert_eq!(messages(1)[..1], messages(0)[..]);
    assert_eq!(messages(1)[1], serde_json::json!({ "role": "assistant", "content": "Hello" }));
    let follow_up = messages(1)[2]["content"].as_str().unwrap().to_string();
    assert!((8..=20).contains(&follow_up.len()) && messages(1)[2]["role"] == "user", "{follow_up:?}");
    assert_eq!(messages(2)[..3], messages(1)[..]);
    assert_eq!(messages(2)[3], serde_json::json!({ "role": "assistant", "content": "Sure." }));
    // Three turns make a conversation: the fourth request starts the next one, with a prompt of its own.
    assert_eq!(messages(3).len(), 1);
    assert_ne!(messages(3), messages(0));
    // The same replies give the same conversation.
    assert_eq!(conversation(&[streamed, whole, whole]), requests);

    // A request that failed has no reply: the next request starts a new conversation.
    let mut stream = PayloadSource::plugin(std::sync::Arc::clone(&plugin), "a", 42, Segment::whole()).stream();
    stream.next_request().unwrap();
    assert_eq!(json(&stream.next_request().unwrap())["messages"].as_array().unwrap().len(), 1);
    // A reply the plugin cannot read stops the run with the plugin's message, naming the conversation and turn.
    stream.replied(reply(b"<html>busy</html>"));
    let error = stream.next_request().unwrap_err().to_string();
    assert!(
        error.contains("next-turn for conversation 1, turn 1, failed: the reply is not a chat completion"),
        "{error}"
    );
}

#[test]
fn conversations_against_the_reference_llm_grow_by_each_reply_and_follow_up() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    // The reference counts a prompt's tokens at four characters each and replies with `max_tokens` tokens of four
    // characters: turn n of a conversation sends the first prompt plus n replies and n follow-ups. Over whole
    // conversations of three turns, n averages 1, so the mean prompt grows by one reply and one follow-up.
    let mean_input_tokens = |turns: u32| -> f64 {
        let job = folder.path().join(format!("turns-{turns}.toml"));
        std::fs::write(
            &job,
            format!(
                r#"version = 1
[job]
name = "conversations"
seed = 3
[target]
kind = "reference"
[payload]
plugin = "{}"
[payload.config]
model = "reference"
stream = true
include_usage = true
max_tokens = 16
turns = {turns}
prompt_tokens = {{ kind = "constant", value = 100.0 }}
follow_up_tokens = {{ kind = "constant", value = 20.0 }}
[traffic.stairs]
users_per_step = 4
step_duration = "2s"
steps = 1
[[configurations]]
name = "b8"
instance_type = "ref.llm.b8"
price_per_hour_usd = 1
reference_llm = {{ max_batch = 8, iteration_ms = 2, per_sequence_ms = 0.1, prefill_ms_per_token = 0.01 }}
"#,
                example("llm-chat").display()
            ),
        )
        .unwrap();
        let out = folder.path().join(format!("out-{turns}"));
        let output = Command::new(env!("CARGO_BIN_EXE_plateau"))
            .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(matches!(output.status.code(), Some(0 | 5)), "{}", String::from_utf8_lossy(&output.stderr));
        let results = common::read_results(&out);
        let tokens = &results["configurations"][0]["steps"][0]["tokens"];
        assert_eq!((tokens["estimated"].as_bool(), tokens["mean_output_tokens"].as_f64()), (Some(false), Some(16.0)));
        tokens["mean_input_tokens"].as_f64().unwrap()
    };
    let (single, three) = (mean_input_tokens(1), mean_input_tokens(3));
    // A follow-up of 20 tokens is cut at a word boundary: 18 to 20 tokens; the reply is 16.
    let growth = three - single;
    println!("mean prompt: {single:.1} tokens in single requests, {three:.1} in conversations of 3 (+{growth:.1})");
    assert!((95.0..=100.0).contains(&single), "{single}");
    assert!((31.0..=39.0).contains(&growth), "conversations of 3 turns grew the mean prompt by {growth:.1} tokens");
}

#[test]
fn images_are_real_pngs_or_raw_pixels_of_the_configured_size() {
    let _machine = shared_lock();
    let png =
        generate(&spec(example("image-classification"), serde_json::json!({ "width": 64, "height": 48 })), 2).unwrap();
    for request in &png {
        let body = &request.body;
        assert_eq!(&body[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&body[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().unwrap()), 64);
        assert_eq!(u32::from_be_bytes(body[20..24].try_into().unwrap()), 48);
        assert_eq!(body[25], 2, "colour type RGB");
        assert_eq!(request.overrides.as_deref().unwrap().content_type.as_deref(), Some("image/png"));
    }
    assert_ne!(png[0].body, png[1].body, "each request's image is its own");
    let raw = generate(
        &spec(
            example("image-classification"),
            serde_json::json!({ "width": 10, "height": 7, "channels": 1, "encoding": "raw" }),
        ),
        1,
    )
    .unwrap();
    assert_eq!(raw[0].body.len(), 70);
    let overrides = raw[0].overrides.as_deref().unwrap();
    assert_eq!(overrides.headers, vec![("x-image-shape".to_string(), "7,10,1".to_string())]);
}

#[test]
fn the_same_job_generates_the_same_requests_and_each_request_differs() {
    let _machine = shared_lock();
    let spec = spec(example("tabular"), serde_json::json!({ "features": 4 }));
    let first = generate(&spec, 20).unwrap();
    let second = generate(&spec, 20).unwrap();
    assert!(first.iter().zip(&second).all(|(a, b)| a.body == b.body));
    let distinct: std::collections::HashSet<_> = first.iter().map(|request| request.body.clone()).collect();
    assert_eq!(distinct.len(), 20);
}

#[test]
fn minimal_examples_in_rust_and_c_agree_and_c_is_wrapped_from_a_core_module() {
    let _machine = shared_lock();
    let rust = generate(&spec(example("minimal-rust"), serde_json::json!({})), 5).unwrap();
    let c = generate(&spec(example("minimal-c"), serde_json::json!({})), 5).unwrap();
    for (sequence, (rust, c)) in rust.iter().zip(&c).enumerate() {
        assert_eq!(rust.body, c.body);
        assert!(std::str::from_utf8(&rust.body).unwrap().starts_with(&format!("{{\"inputs\": [{sequence}, ")));
    }
    assert!(LoadedPlugin::load(&spec(example("minimal-c"), serde_json::json!({}))).unwrap().wrapped_core_module);
    assert!(!LoadedPlugin::load(&spec(example("minimal-rust"), serde_json::json!({}))).unwrap().wrapped_core_module);
}

#[test]
fn nothing_is_granted_by_default_and_each_grant_works() {
    let _machine = shared_lock();
    let probe = |grant: PluginGrant, seed: u64| -> Value {
        let plugin = LoadedPlugin::load(&PluginSpec { grant, ..spec(example("sandbox-probe"), Value::Null) }).unwrap();
        let requests = payload::preview(&plugin, "c", seed, 1).unwrap();
        json(&requests[0])
    };
    // SAFETY (of the test): the variable is only read by plugins in this test.
    unsafe { std::env::set_var("PLATEAU_PROBE", "visible") };
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("sample.txt"), "sample data").unwrap();

    let closed = probe(PluginGrant::default(), 1);
    assert_eq!(closed["env"], Value::Null);
    assert_eq!(closed["env_count"], 0);
    assert!(closed["file"]["Err"].is_string(), "{closed}");
    assert_eq!(closed["clock_s"], 946_684_800, "the clock is fixed at 2000-01-01");
    assert_eq!(closed["random"], probe(PluginGrant::default(), 1)["random"], "randomness is seeded by the job");
    assert_ne!(closed["random"], probe(PluginGrant::default(), 2)["random"]);

    let open = probe(
        PluginGrant {
            read_dir: Some(data.path().to_path_buf()),
            env: vec!["PLATEAU_PROBE".into()],
            random: true,
            clock: true,
            network: false,
        },
        1,
    );
    assert_eq!(open["env"], "visible");
    assert_eq!(open["file"]["Ok"], "sample data");
    assert!(open["clock_s"].as_u64().unwrap() > 1_700_000_000);
    assert_ne!(open["random"], closed["random"]);
}

fn hostile_error(name: &str, limits: impl FnOnce(&mut PluginLimits)) -> (String, Duration) {
    let mut spec = spec(hostile(name), Value::Null);
    spec.limits.call_timeout = Duration::from_millis(50);
    limits(&mut spec.limits);
    let started = Instant::now();
    let error = generate(&spec, 300).err().unwrap_or_else(|| panic!("{name} was not stopped"));
    (error, started.elapsed())
}

#[test]
fn hostile_plugins_are_stopped_with_the_right_error() {
    let _machine = shared_lock();
    let (error, elapsed) = hostile_error("infinite-loop", |_| {});
    assert!(error.contains("generate for sequence 0 ran past its time limit of 50ms"), "{error}");
    assert!(elapsed < Duration::from_secs(2), "stopped after {elapsed:?}");

    let (error, _) = hostile_error("memory-bomb", |limits| limits.memory_mb = 16);
    assert!(error.contains("tried to grow its memory past the limit of 16 MiB (payload.limits.memory_mb)"), "{error}");

    let (error, _) = hostile_error("trap", |_| {});
    assert!(error.contains("`trap.wat`") && error.contains("generate for sequence 200 trapped"), "{error}");
    assert!(error.contains("unreachable"), "{error}");

    let (error, _) = hostile_error("huge-body", |limits| limits.memory_mb = 1100);
    assert!(error.contains("payload.limits.max_body_bytes"), "{error}");

    let (error, _) = hostile_error("forbidden-import", |_| {});
    assert!(error.contains("imports `env::open_socket`"), "{error}");

    // Fuel bounds work as well as time: the loop burns its fuel long before 50 ms.
    let (error, elapsed) = hostile_error("infinite-loop", |limits| {
        limits.fuel_per_call = Some(1_000_000);
        limits.call_timeout = Duration::from_secs(30);
    });
    assert!(error.contains("used up its fuel of 1000000 per call"), "{error}");
    assert!(elapsed < Duration::from_secs(5));
}

#[test]
fn a_plugin_that_fails_mid_run_keeps_what_was_measured() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let job = folder.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "trap-mid-run"
[target]
kind = "reference"
[payload]
plugin = "{}"
[traffic.stairs]
users_per_step = 1
step_duration = "10s"
steps = 1
[[configurations]]
name = "only"
instance_type = "ref.only"
price_per_hour_usd = 0.1
reference = {{ workers = 1, service_time_ms = 10 }}
"#,
            hostile("trap").display()
        ),
    )
    .unwrap();
    let out = folder.path().join("out");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_plateau"))
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(9), "the run should end at the trap, not at the ramp's end");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["partial"], true);
    let configuration = &results["configurations"][0];
    assert_eq!(configuration["status"], "partial");
    assert_eq!(configuration["end"]["kind"], "payload_failed");
    assert!(configuration["failure"].as_str().unwrap().contains("generate for sequence 200 trapped"));
    let completed: u64 =
        configuration["seconds"].as_array().unwrap().iter().map(|s| s["completed"].as_u64().unwrap()).sum();
    assert_eq!(completed, 200, "every request generated before the trap was sent and kept");
    let sha256 = results["manifest"]["payload_plugin"]["sha256"].as_str().unwrap();
    assert_eq!(sha256, sha256_of(&hostile("trap")));
    assert_eq!(results["manifest"]["payload_plugin"]["kind"], "core-module");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("partial"));
}

#[test]
fn compiled_plugins_are_cached_by_hash() {
    let _machine = shared_lock();
    let cache = tempfile::tempdir().unwrap();
    built_plugins();
    let output = Command::new(env!("CARGO_BIN_EXE_plateau"))
        .args(["payload", "preview", "-n", "2"])
        .arg(repository().join("scenarios/plugin-tabular.toml"))
        .env("PLATEAU_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("--- request ").count(), 2, "{stdout}");
    assert!(stdout.contains("{\"instances\":[["));
    let hash = sha256_of(&example("tabular"));
    let cached: Vec<_> =
        std::fs::read_dir(cache.path().join("plugins")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cached.len(), 1);
    assert!(cached[0].to_string_lossy().starts_with(&hash[..32]), "{cached:?}");
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
