//! Accuracy against queueing theory: reference endpoints of four known capacities (lognormal service times),
//! ramped with virtual users (stairs) and with arrival rates (rate steps). The detected MaxInvocations must be
//! within 5% of the analytical capacity x 60, the latency well below capacity within 10% of the service-time
//! median, an early stop must reach that figure in under 60% of the full ramp's time, and the recommendation
//! and InitialInstanceCount must be what the capacities and prices give. One run at a time: this is load.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// workers, mean service ms, price per hour: capacities 200, 200, 1600 and 320 requests/s.
const MODELS: [(u32, f64, f64); 4] = [(2, 10.0, 0.10), (4, 20.0, 0.12), (8, 5.0, 0.64), (16, 50.0, 0.20)];
const CV: f64 = 0.5;
/// Steps stop at 5 s whether or not their interval reached the default 2% (at 200 requests/s it would take about 45
/// s): the plateau is read from several steps, and the figures must be within 5% all the same.
const STEP_LIMIT: &str = "max_step_duration = \"5s\"\n";

mod common;
fn capacity_rps(workers: u32, service_ms: f64) -> f64 {
    f64::from(workers) * 1000.0 / service_ms
}

fn configurations() -> String {
    MODELS
        .iter()
        .map(|(workers, service_ms, price)| {
            format!(
                "[[configurations]]\nname = \"{workers}x{service_ms}ms\"\ninstance_type = \"ref\"\nprice_per_hour_usd = {price}\n\
                 reference = {{ workers = {workers}, service_time_ms = {service_ms}, distribution = \"lognormal\", cv = {CV} }}\n"
            )
        })
        .collect()
}

fn run(folder: &Path, name: &str, body: &str) -> Value {
    run_at_once(folder, &[(name.to_string(), body.to_string())]).remove(0)
}

/// Runs the jobs (name, body) side by side, one process each, and returns their results in order. Each is a light
/// load (at most 2,000 requests/s, where plateau can send a hundred times that) on a server of its own; the figures
/// are checked against what each server realized, and a step where they starved each other would be marked.
fn run_at_once(folder: &Path, jobs: &[(String, String)]) -> Vec<Value> {
    let children: Vec<(PathBuf, std::process::Child)> = jobs
        .iter()
        .map(|(name, body)| {
            let job = folder.join(format!("{name}.toml"));
            std::fs::write(&job, format!("version = 1\n[job]\nname = \"{name}\"\nseed = 17\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{{}}\"\n{body}")).unwrap();
            let out = folder.join(name);
            let child = common::spawn_run(&job, &out);
            (out, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(out, child)| {
            let output = child.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
            common::read_results(&out)
        })
        .collect()
}

fn assert_capacity(result: &Value, workers: u32, service_ms: f64, how: &str) {
    let nominal_rps = capacity_rps(workers, service_ms);
    let realized_rps = result["reference"]["realized_capacity_rps"].as_f64().unwrap();
    assert!((realized_rps / nominal_rps - 1.0).abs() < 0.05, "{how}: realized {realized_rps} vs nominal {nominal_rps}");
    let max_invocations = result["metrics"]["max_invocations"].as_f64().unwrap();
    eprintln!(
        "{how:10} {workers:>2}x{service_ms:<4}ms capacity {:>7.0}/min (realized {:>7.0}), MaxInvocations {max_invocations:>7.0}/min: {:+.2}%",
        nominal_rps * 60.0,
        realized_rps * 60.0,
        (max_invocations / (nominal_rps * 60.0) - 1.0) * 100.0
    );
    for (capacity, what) in [(nominal_rps, "analytical"), (realized_rps, "realized")] {
        let error = max_invocations / (capacity * 60.0) - 1.0;
        assert!(
            error.abs() < 0.05,
            "{how} {workers}x{service_ms}ms: MaxInvocations {max_invocations:.0} is {:+.1}% off the {what} capacity",
            error * 100.0
        );
    }
}

#[test]
fn max_invocations_latency_and_the_recommendation_agree_with_queueing_theory() {
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();

    // Closed model, stopping at the confirmed plateau, with a goal and a peak to size for.
    let requirements = "[requirements]\nobjective = \"cost-per-inference\"\nexpected_peak_rps = 4000\n";
    let stairs =
        format!("[traffic]\n{STEP_LIMIT}[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = 12\n");
    // The four configurations side by side (`max_parallel`), as the open and light runs below.
    let stopped = run(
        folder.path(),
        "stairs",
        &format!(
            "{stairs}[stopping]\nflat_invocations = \"stop\"\n[limits]\nmax_parallel = 4\n{requirements}{}",
            configurations()
        ),
    );
    for (index, (workers, service_ms, _)) in MODELS.iter().enumerate() {
        let result = &stopped["configurations"][index];
        assert_capacity(result, *workers, *service_ms, "stairs");
        assert_eq!(result["plateau"]["rule"], "throughput_flat");
    }
    // Cost per inference = price / capacity: 8 x 5 ms at $0.64 for 1600/s is cheapest; 4000/s needs 3 of them.
    assert_eq!(stopped["recommendation"]["configuration"], "8x5ms");
    assert_eq!(stopped["recommendation"]["initial_instance_count"], 3);

    // The early stop took under 60% of the ramp's time in full, which the results state (`full_ramp_s`, its steps
    // at their duration; precision could only lengthen them). Its figure is within 5% of capacity above: running
    // the ramp in full to compare cost CI 30 s and showed nothing more.
    let early = &stopped["configurations"][0];
    let time_share = early["elapsed_s"].as_f64().unwrap() / early["full_ramp_s"].as_f64().unwrap();
    eprintln!("early stop: {:.0}% of the full ramp's time", time_share * 100.0);
    assert!(time_share < 0.6, "the early stop took {:.0}% of the full ramp's time", time_share * 100.0);

    // Open model: arrival-rate steps of a quarter of each capacity from half of it, Poisson arrivals; the four
    // models side by side.
    let open: Vec<(String, String)> = MODELS
        .iter()
        .map(|&(workers, service_ms, price)| {
        let capacity = capacity_rps(workers, service_ms);
        let body = format!(
            "[traffic]\narrivals = \"poisson\"\nmax_in_flight = 2048\n{STEP_LIMIT}[traffic.rate_steps]\nstart_rate_per_s = {}\nstep_rate_per_s = {}\n\
             step_duration = \"3s\"\nsteps = 8\n[stopping]\nflat_invocations = \"stop\"\n\
             [[configurations]]\nname = \"m\"\ninstance_type = \"ref\"\nprice_per_hour_usd = {price}\n\
             reference = {{ workers = {workers}, service_time_ms = {service_ms}, distribution = \"lognormal\", cv = {CV} }}\n",
            capacity / 2.0,
            capacity / 4.0
        );
        (format!("open-{workers}"), body)
        })
        .collect();
    for ((workers, service_ms, _), results) in MODELS.iter().zip(run_at_once(folder.path(), &open)) {
        assert_capacity(&results["configurations"][0], *workers, *service_ms, "rate steps");
    }

    // Well below capacity, at half the workers busy, nothing queues: p50 is the service time's median,
    // mean / sqrt(1 + cv^2). Half the workers keep enough requests going for a stable median (400 or more). The
    // four models side by side.
    let light: Vec<(String, String)> = MODELS
        .iter()
        .map(|&(workers, service_ms, price)| {
        let body = format!(
            "[traffic.stairs]\nusers_per_step = {}\nstep_duration = \"5s\"\nsteps = 1\n\
             [[configurations]]\nname = \"m\"\ninstance_type = \"ref\"\nprice_per_hour_usd = {price}\n\
             reference = {{ workers = {workers}, service_time_ms = {service_ms}, distribution = \"lognormal\", cv = {CV} }}\n",
            workers / 2
        );
        (format!("light-{workers}"), body)
        })
        .collect();
    for ((workers, service_ms, _), results) in MODELS.iter().zip(run_at_once(folder.path(), &light)) {
        let (workers, service_ms) = (*workers, *service_ms);
        // The realized median: the distribution's, plus how late the server's own timer woke each request (tokio
        // timers run up to a millisecond late), which the endpoint records; the ground truth of this run.
        let lateness_ms = results["configurations"][0]["reference"]["mean_timer_lateness_ms"].as_f64().unwrap();
        let median_ms = service_ms / (1.0 + CV * CV).sqrt() + lateness_ms;
        let p50_ms = results["configurations"][0]["steps"][0]["latency"]["p50_ms"].as_f64().unwrap();
        eprintln!(
            "light      {workers:>2}x{service_ms:<4}ms p50 {p50_ms:.2} ms, realized service median {median_ms:.2} ms \
             (timer {lateness_ms:.2} ms late): {:+.1}%",
            (p50_ms / median_ms - 1.0) * 100.0
        );
        assert!(
            (p50_ms / median_ms - 1.0).abs() < 0.10,
            "{workers}x{service_ms}ms: p50 {p50_ms:.2} ms vs realized median {median_ms:.2} ms"
        );
    }
}

/// Reference LLM engines: max_batch, iteration ms, per-sequence ms, prefill ms per prompt token, KV cache tokens.
/// The second's cache holds 8 sequences of 100 + 24 tokens, fewer than its max_batch. Prefill makes TTFT about 20
/// ms, so that the way a token travels from the engine to plateau (under half a millisecond on loopback, measured
/// in TTFT as a real server's would be) stays well inside the 5%.
const ENGINES: [(u32, f64, f64, f64, Option<u32>); 2] = [(4, 8.0, 1.0, 0.15, None), (16, 6.0, 1.0, 0.12, Some(1000))];
/// 400 characters: 100 prompt tokens at the reference's four characters a token.
const PROMPT_CHARACTERS: usize = 400;
const OUTPUT_TOKENS: u32 = 24;

/// The closed-form figures of an engine: TTFT and gap alone, output tokens per second at saturation, batch limit.
fn engine_truth(
    (max_batch, iteration_ms, per_sequence_ms, prefill_ms, kv): (u32, f64, f64, f64, Option<u32>),
) -> (f64, f64, f64, u32) {
    let prompt = (PROMPT_CHARACTERS / 4) as f64;
    let batch = max_batch.min(kv.map_or(u32::MAX, |kv| kv / (PROMPT_CHARACTERS as u32 / 4 + OUTPUT_TOKENS)));
    let iteration = |batch: u32| iteration_ms + per_sequence_ms * f64::from(batch);
    let per_request_ms = f64::from(OUTPUT_TOKENS) / f64::from(batch) * iteration(batch) + prefill_ms * prompt;
    (iteration(1) + prefill_ms * prompt, iteration(1), f64::from(OUTPUT_TOKENS) / per_request_ms * 1000.0, batch)
}

/// One step of `users` and `seconds` against each engine; the steps' token figures.
fn llm_steps(folder: &Path, name: &str, users: &dyn Fn(usize) -> u32, seconds: u32, goals: &str) -> Vec<Value> {
    let prompt = "x".repeat(PROMPT_CHARACTERS);
    ENGINES
        .iter()
        .enumerate()
        .map(|(index, (max_batch, iteration_ms, per_sequence_ms, prefill_ms, kv))| {
            let kv = kv.map_or(String::new(), |kv| format!(", kv_cache_tokens = {kv}"));
            let job = folder.join(format!("{name}-{index}.toml"));
            std::fs::write(
                &job,
                format!(
                    "version = 1\n[job]\nname = \"{name}\"\nseed = {index}\n[target]\nkind = \"reference\"\n[payload]\n\
                     body = '{{\"max_tokens\": {OUTPUT_TOKENS}, \"stream\": true, \"stream_options\": {{\"include_usage\": true}}, \
                     \"messages\": [{{\"role\": \"user\", \"content\": \"{prompt}\"}}]}}'\n\
                     [traffic]\nmax_step_duration = \"{seconds}s\"\n[traffic.stairs]\nusers_per_step = {}\nstep_duration = \"{seconds}s\"\nsteps = 1\n\
                     {goals}[[configurations]]\nname = \"llm\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 1\n\
                     reference_llm = {{ max_batch = {max_batch}, iteration_ms = {iteration_ms}, per_sequence_ms = {per_sequence_ms}, \
                     prefill_ms_per_token = {prefill_ms}{kv} }}\n",
                    users(index)
                ),
            )
            .unwrap();
            let out = folder.join(format!("{name}-{index}"));
            let output = common::plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
            // One step confirms no plateau: inconclusive (5) is the expected verdict, the step's figures are not; a
            // goal no response can meet (the saturated run's 1 µs TPOT) leaves none meeting the requirements (3).
            assert!(matches!(output.status.code(), Some(0 | 3 | 5)), "{}", common::text(&output));
            common::read_results(&out)["configurations"][0]["steps"][0].clone()
        })
        .collect()
}

#[test]
fn token_figures_agree_with_the_reference_llm_engines_closed_form() {
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let within = |measured: f64, truth: f64, what: &str| {
        let error = measured / truth - 1.0;
        eprintln!("{what:42} measured {measured:8.2}, closed form {truth:8.2}: {:+.2}%", error * 100.0);
        assert!(error.abs() < 0.05, "{what}: {measured:.2} is {:+.1}% off {truth:.2}", error * 100.0);
    };
    // Alone on the server, with goals every response meets (goodput = throughput) and one none can (goodput 0).
    let alone = llm_steps(folder.path(), "alone", &|_| 1, 5, "[requirements]\nttft_ms = 1000\n");
    for (engine, step) in ENGINES.iter().zip(&alone) {
        let (ttft_ms, gap_ms, _, _) = engine_truth(*engine);
        let tokens = &step["tokens"];
        within(tokens["ttft"]["p50_ms"].as_f64().unwrap(), ttft_ms, &format!("batch {} alone: TTFT p50 ms", engine.0));
        within(tokens["itl"]["p50_ms"].as_f64().unwrap(), gap_ms, &format!("batch {} alone: ITL p50 ms", engine.0));
        assert_eq!(tokens["mean_output_tokens"], f64::from(OUTPUT_TOKENS));
        assert_eq!(tokens["mean_input_tokens"], (PROMPT_CHARACTERS / 4) as f64);
        assert_eq!(tokens["estimated"], false, "the reference sends usage when asked");
        let throughput = step["throughput_rps"].as_f64().unwrap();
        assert_eq!(tokens["goodput_per_s"].as_f64().unwrap(), throughput, "every response meets a 1 s TTFT goal");
    }
    // Twice as many users as the batch holds: the batch is always full, the queue never empty. Responses of one
    // batch end together, so completions come in bursts of a batch: ten seconds hold enough of them.
    let saturated = llm_steps(
        folder.path(),
        "saturated",
        &|index| 2 * engine_truth(ENGINES[index]).3,
        10,
        "[requirements]\ntpot_ms = 0.001\n",
    );
    for (engine, step) in ENGINES.iter().zip(&saturated) {
        let (_, _, tokens_per_s, batch) = engine_truth(*engine);
        let tokens = &step["tokens"];
        within(
            tokens["output_tokens_per_s"].as_f64().unwrap(),
            tokens_per_s,
            &format!("batch {batch} of {}: saturation output tokens/s", engine.0),
        );
        assert_eq!(tokens["goodput_per_s"].as_f64().unwrap(), 0.0, "no response meets a 1 µs TPOT goal");
    }
}
