//! End-to-end tests: the real `plateau` binary against real HTTP servers on 127.0.0.1.
//! Load-generating tests hold `LOAD` so that only one runs at a time on a 2-core machine.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
mod shards;
use common::{load_lock, plateau, read_results, repository, shared_lock, spawn_run, text};

fn write_job(folder: &Path, text: &str) -> PathBuf {
    let path = folder.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn configuration<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["configurations"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()
}

/// `plateau serve-reference` on a free port, and the URL its banner names.
fn standalone_reference(workers: &str, service_ms: &str) -> (std::process::Child, String) {
    let mut server = plateau()
        .args(["serve-reference", "--workers", workers, "--service-ms", service_ms, "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    let url = banner.split_whitespace().find(|word| word.starts_with("http://")).unwrap().to_string();
    (server, url)
}

const TWO_CAPACITIES: &str = r#"
version = 1
[job]
name = "two capacities"
seed = 3
[target]
kind = "reference"
[payload]
body = '{"x": 1}'
[traffic]
# Steps of their duration, not run on to 2% precision: the figures here are checked within 10%.
max_step_duration = "4s"
[traffic.stairs]
users_per_step = 3
step_duration = "3s"
steps = 6
[stopping]
flat_invocations = "stop"
[requirements]
latency_ms = 200
objective = "cost-per-inference"
expected_peak_rps = 1000
[[configurations]]
name = "narrow"
instance_type = "ref.2x20"
price_per_hour_usd = 0.10
reference = { workers = 2, service_time_ms = 20 }
[[configurations]]
name = "wide"
instance_type = "ref.8x20"
price_per_hour_usd = 0.30
reference = { workers = 8, service_time_ms = 20, distribution = "lognormal", cv = 0.3 }
"#;

#[test]
fn max_invocations_match_capacity_and_the_recommendation_follows_theory() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    // The two side by side: 500 requests/s at most, light for two cores, and half the test's time.
    let job = write_job(folder.path(), &format!("{TWO_CAPACITIES}[limits]\nmax_parallel = 2\n"));
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().last().unwrap(), format!("results: {}", out.display()));

    let results = read_results(&out);
    assert_eq!(results["partial"], false);
    for (name, nominal_rps) in [("narrow", 100.0), ("wide", 400.0)] {
        let config = configuration(&results, name);
        let realized_rps = config["reference"]["realized_capacity_rps"].as_f64().unwrap();
        assert!(
            (realized_rps / nominal_rps - 1.0).abs() < 0.05,
            "{name}: realized {realized_rps} vs nominal {nominal_rps}"
        );
        let max_invocations = config["metrics"]["max_invocations"].as_f64().unwrap();
        let expected = realized_rps * 60.0;
        assert!(
            (max_invocations / expected - 1.0).abs() < 0.10,
            "{name}: MaxInvocations {max_invocations} vs capacity {expected}"
        );
        assert_eq!(config["plateau"]["rule"], "throughput_flat", "{name}");
    }
    // Cost per inference: narrow 0.10 / 100 rps, wide 0.30 / 400 rps: wide is cheaper per inference.
    let recommendation = &results["recommendation"];
    assert_eq!(recommendation["configuration"], "wide");
    // 1000 requests/s on instances of 400 requests/s each: 3 instances.
    assert_eq!(recommendation["initial_instance_count"], 3);
    assert!(stdout.contains("Recommendation: wide with InitialInstanceCount 3"), "{stdout}");

    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("**wide** with InitialInstanceCount **3**"), "{markdown}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 1 + 2 * 5, "one overview chart and five per configuration");
    let series =
        std::fs::read_to_string(out.join(configuration(&results, "wide")["series_file"].as_str().unwrap())).unwrap();
    assert_eq!(series.lines().count() as u64, configuration(&results, "wide")["elapsed_s"].as_u64().unwrap());
}

#[test]
fn an_interrupted_run_writes_partial_results_and_reports() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        &TWO_CAPACITIES.replace("steps = 6", "steps = 40").replace("flat_invocations = \"stop\"", ""),
    );
    let child = spawn_run(&job, &out);
    std::thread::sleep(Duration::from_secs(8));
    let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "shutting down took {:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    let results = read_results(&out);
    assert_eq!(results["partial"], true);
    let narrow = configuration(&results, "narrow");
    assert_eq!(narrow["status"], "partial");
    assert_eq!(narrow["end"]["kind"], "interrupted");
    assert!(narrow["steps"].as_array().unwrap().len() >= 2, "the steps measured before the interrupt are kept");
    assert_eq!(configuration(&results, "wide")["status"], "skipped");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("Partial results"));
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("id=\"partial\""));
}

#[test]
fn a_target_that_refuses_connections_ends_the_run_partial() {
    let _load = load_lock();
    // A port that was free a moment ago and now has no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "gone"
[target]
kind = "http"
url = "http://127.0.0.1:{port}/invocations"
[payload]
body = "{{}}"
[traffic.stairs]
users_per_step = 2
step_duration = "5s"
steps = 4
[[configurations]]
name = "nobody home"
instance_type = "none"
price_per_hour_usd = 1.0
"#
        ),
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let results = read_results(&out);
    let config = configuration(&results, "nobody home");
    assert_eq!(config["end"]["kind"], "target_unreachable");
    assert!(config["failure"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")));
    assert!(config["elapsed_s"].as_u64().unwrap() <= 4);
}

#[test]
fn the_http_target_measures_a_standalone_reference_server() {
    let _load = load_lock();
    let (mut server, url) = standalone_reference("4", "25");
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "standalone"
[target]
kind = "http"
url = "{url}"
headers = {{ x-api-key = {{ env = "PLATEAU_TEST_SECRET" }} }}
[payload]
body = '{{"inputs": [1]}}'
[traffic]
# Steps of exactly their duration: this test is not about precision, and CI time is short.
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 4
step_duration = "3s"
steps = 3
[[configurations]]
name = "standalone"
instance_type = "local"
price_per_hour_usd = 0.5
"#
        ),
    );
    let output = plateau()
        .arg("run")
        .arg(&job)
        .arg("--out")
        .arg(&out)
        .env("PLATEAU_TEST_SECRET", "hunter2-secret")
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    let config = configuration(&results, "standalone");
    // 4 workers x 25 ms = 160 requests/s = 9600 per minute; 4 users already saturate it.
    let max_invocations = config["metrics"]["max_invocations"].as_f64().unwrap();
    assert!((max_invocations / 9600.0 - 1.0).abs() < 0.10, "MaxInvocations {max_invocations}");
    assert_eq!(config["metrics"]["cpu_utilization_percent"], Value::Null, "an http target has no utilization source");
    for file in ["results.json", "report.md", "report.html"] {
        assert!(!std::fs::read_to_string(out.join(file)).unwrap().contains("hunter2"), "the secret leaked into {file}");
    }
    assert!(!text(&output).contains("hunter2"));
}

#[test]
fn one_job_runs_configurations_against_several_named_targets() {
    let _load = load_lock();
    let (mut server, url) = standalone_reference("4", "25");
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "two targets"
[targets.simulated]
kind = "reference"
[targets.standalone]
kind = "http"
url = "{url}"
[payload]
body = '{{"inputs": [1]}}'
[traffic]
# Steps of exactly their duration: this test is not about precision, and CI time is short.
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 4
step_duration = "3s"
steps = 3
[[configurations]]
name = "simulated"
target = "simulated"
instance_type = "ref"
price_per_hour_usd = 0.1
reference = {{ workers = 2, service_time_ms = 20 }}
[[configurations]]
name = "standalone"
target = "standalone"
instance_type = "local"
price_per_hour_usd = 0.5
"#
        ),
    );
    let plan = plateau().arg("plan").arg(&job).output().unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan_text.lines().any(|line| line.contains("standalone") && line.contains(" standalone ")), "{plan_text}");
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    assert_eq!(results["job"]["target_kind"], Value::Null, "the job mixes target kinds");
    // 2 workers x 20 ms = 6000 per minute on the simulated target; 4 x 25 ms = 9600 on the standalone server.
    for (name, kind, capacity_per_minute) in [("simulated", "reference", 6000.0), ("standalone", "http", 9600.0)] {
        let config = configuration(&results, name);
        assert_eq!(config["target"], name);
        assert_eq!(config["target_kind"], kind);
        let max_invocations = config["metrics"]["max_invocations"].as_f64().unwrap();
        assert!((max_invocations / capacity_per_minute - 1.0).abs() < 0.10, "{name}: MaxInvocations {max_invocations}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| standalone (target standalone) |"), "{report}");
}

#[test]
fn max_parallel_runs_configurations_at_the_same_time() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        r#"
version = 1
[job]
name = "parallel"
[target]
kind = "reference"
[payload]
body = "{}"
[traffic]
# Steps of exactly their duration: this test is not about precision, and CI time is short.
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 4
step_duration = "3s"
steps = 3
[limits]
max_parallel = 2
[[configurations]]
name = "a"
instance_type = "ref"
price_per_hour_usd = 0.1
reference = { workers = 2, service_time_ms = 20 }
[[configurations]]
name = "b"
instance_type = "ref"
price_per_hour_usd = 0.1
reference = { workers = 4, service_time_ms = 25 }
"#,
    );
    let plan = plateau().arg("plan").arg(&job).output().unwrap();
    assert!(String::from_utf8_lossy(&plan.stdout).contains("2 test runs, 2 at a time"), "{}", text(&plan));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("at most 9 s and"), "{}", text(&plan));
    let started = Instant::now();
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // Two 9 s ramps one after the other take at least 18 s; side by side about 9 s.
    assert!(elapsed < Duration::from_secs(16), "the runs did not overlap: {elapsed:?}");
    let results = read_results(&out);
    let names: Vec<&str> =
        results["configurations"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "results keep the plan's order");
    for (name, capacity_per_minute) in [("a", 6000.0), ("b", 9600.0)] {
        let max_invocations = configuration(&results, name)["metrics"]["max_invocations"].as_f64().unwrap();
        assert!((max_invocations / capacity_per_minute - 1.0).abs() < 0.10, "{name}: MaxInvocations {max_invocations}");
    }
}

#[test]
fn a_request_past_the_timeout_is_a_timeout_and_one_within_it_never_is() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    // One timer per connection is re-armed lazily: a 60 ms request starts while the timer still holds the
    // previous request's deadline, 40 ms away, and must not be cut short when it fires.
    let job = write_job(
        folder.path(),
        r#"
version = 1
[job]
name = "timeouts"
[target]
kind = "reference"
timeout = "100ms"
[payload]
body = "{}"
[traffic]
# Fixed-length steps: the counts below are per 4 s.
max_step_duration = "4s"
[traffic.stairs]
users_per_step = 2
step_duration = "4s"
steps = 1
[[configurations]]
name = "slow"
instance_type = "ref"
price_per_hour_usd = 0.1
reference = { workers = 4, service_time_ms = 150 }
[[configurations]]
name = "fast"
instance_type = "ref"
price_per_hour_usd = 0.1
reference = { workers = 4, service_time_ms = 60 }
"#,
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    // `slow` fails every request: a target failure, so the run failed (docs/decisions.md, exit codes).
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let results = read_results(&out);
    let total = |config: &Value, field: &str| -> u64 {
        config["seconds"].as_array().unwrap().iter().map(|second| second[field].as_u64().unwrap()).sum()
    };
    let slow = configuration(&results, "slow");
    let timeouts = slow["steps"][0]["errors"]["timeout"].as_u64().unwrap();
    assert_eq!(total(slow, "completed"), 0, "no 150 ms request completes within 100 ms");
    // 2 users x 3 steady seconds / 100 ms, less the reconnect after each.
    assert!((45..=61).contains(&timeouts), "{timeouts} timeouts in the steady 3 s");
    let fast = configuration(&results, "fast");
    assert_eq!(total(fast, "errors"), 0, "a 60 ms request never times out at 100 ms");
    // 2 users x 4 s / 60 ms = 133.
    assert!((110..=140).contains(&total(fast, "completed")), "{} completed", total(fast, "completed"));
}

#[test]
fn a_step_where_plateau_ran_out_of_cpu_is_marked_and_never_taken_as_the_plateau() {
    let _load = load_lock();
    let plugins = common::built_plugins();
    let (mut server, url) = standalone_reference("256", "0.05");
    // The server keeps to the other core, so plateau's is plateau's alone.
    let pinned = Command::new("taskset").args(["-a", "-c", "-p", "1", &server.id().to_string()]).output().unwrap();
    assert!(pinned.status.success(), "{}", text(&pinned));
    let folder = tempfile::tempdir().unwrap();
    let job_text = |users: u32, features: u32| {
        format!(
            r#"
version = 1
[job]
name = "generator cpu"
[target]
kind = "http"
url = "{url}"
[payload]
plugin = "{plugin}"
[payload.config]
features = {features}
rows = 8
default = {{ kind = "normal", mean = 0.0, stddev = 1.0 }}
[traffic.stairs]
users_per_step = {users}
step_duration = "3s"
steps = 1
[[configurations]]
name = "c"
instance_type = "local"
price_per_hour_usd = 1
"#,
            plugin = plugins.join("tabular.wasm").display()
        )
    };
    let step = |users: u32, features: u32, pin: bool| {
        let job = write_job(folder.path(), &job_text(users, features));
        let out = folder.path().join(format!("out-{users}"));
        let mut command = if pin { Command::new("taskset") } else { plateau() };
        if pin {
            command.args(["-c", "0", env!("CARGO_BIN_EXE_plateau")]);
        }
        let output = command.arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
        assert!(output.status.code().is_some_and(|code| code != 1), "{}", text(&output));
        read_results(&out)["configurations"][0].clone()
    };
    // Generating 4,096 numbers per request keeps one core busy well before the server is.
    let busy = step(16, 512, true);
    let light = step(1, 8, false);
    server.kill().unwrap();
    server.wait().unwrap();
    // Not 95% (the limit) here: the kernel's loopback work for plateau's connections also runs on its core and is
    // not charged to plateau, which showed 92.9% and 93.6% in CI with the server kept off that core. A step this
    // busy is marked by its generator lag as well.
    let cpu = busy["steps"][0]["generator_cpu_percent"].as_f64().unwrap();
    assert!(cpu >= 85.0, "plateau pinned to one core used {cpu}% of it");
    assert_eq!(busy["steps"][0]["generator_saturated"], true);
    assert_eq!(busy["plateau"]["rule"], "generator_saturated", "{}", busy["plateau"]);
    let cpu = light["steps"][0]["generator_cpu_percent"].as_f64().unwrap();
    assert!(cpu < 60.0, "one user used {cpu}% of plateau's cores");
    assert_eq!(light["steps"][0]["generator_saturated"], false);
}

#[test]
fn every_scenario_validates() {
    let _machine = shared_lock();
    let scenarios: Vec<PathBuf> = std::fs::read_dir(repository().join("scenarios"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    assert!(!scenarios.is_empty());
    common::built_plugins(); // scenarios name the example plugins, which are built, not committed
    let output = plateau().arg("validate").args(&scenarios).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).matches("ok: ").count(), scenarios.len());
}

#[test]
fn the_readme_job_file_example_validates() {
    let _machine = shared_lock();
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = &readme[readme.find("## Job files").expect("the README has a job-file section")..];
    let example = section.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let job = write_job(folder.path(), example);
    let output = plateau().arg("validate").arg(&job).env("MODEL_TOKEN", "not-a-secret").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn an_unknown_key_is_named_with_file_line_and_a_suggestion() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let job = write_job(folder.path(), &TWO_CAPACITIES.replace("users_per_step = 3", "user_per_step = 3"));
    let output = plateau().arg("validate").arg(&job).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`traffic.stairs.user_per_step`: unknown key `user_per_step`"), "{stderr}");
    assert!(stderr.contains(&format!("{}:14:1", job.display())), "{stderr}");
    assert!(stderr.contains("help: did you mean `users_per_step`?"), "{stderr}");
}

/// Processes whose environment carries `marker`: what a test's servers left behind.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.windows(marker.len()).any(|window| window == marker.as_bytes()))
        })
        .collect()
}

#[test]
fn the_command_target_starts_one_server_per_environment_combination() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let marker = format!("PLATEAU_TEST_MARKER={}", std::process::id());
    // MODE picks a behaviour: fail at start-up, crash mid-run (killed after 4 s), or serve. Every server also
    // leaves a child that ignores SIGTERM, which plateau must still clean up.
    let script = r#"(trap "" TERM; exec sleep 600) &
case "$MODE" in
  fail) echo "loading model.onnx: file not found" >&2; exit 4 ;;
  crash) exec timeout --foreground -s KILL 4 "$PLATEAU" serve-reference --port "$PORT" --service-ms 20 ;;
  *) exec "$PLATEAU" serve-reference --port "$PORT" --service-ms 20 ;;
esac"#;
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "sweep"
[target]
kind = "command"
command = ["sh", "-c", {script:?}]
env = {{ PORT = "{{port}}", PLATEAU = {plateau:?}, PLATEAU_TEST_MARKER = "{pid}" }}
readiness = {{ http_path = "/ping", timeout = "10s" }}
stop_grace = "2s"
[payload]
body = "{{}}"
[traffic]
# Steps of exactly their duration: this test is not about precision, and CI time is short.
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 4
step_duration = "3s"
steps = 4
[stopping]
flat_invocations = "stop"
[[configurations]]
name = "broken"
instance_type = "local"
price_per_hour_usd = 1.0
environment = {{ MODE = ["fail"] }}
[[configurations]]
name = "crashing"
instance_type = "local"
price_per_hour_usd = 1.0
environment = {{ MODE = ["crash"], PLATEAU_REFERENCE_WORKERS = ["2"] }}
[[configurations]]
name = "sweep"
instance_type = "local"
price_per_hour_usd = 1.0
environment = {{ MODE = ["serve"], PLATEAU_REFERENCE_WORKERS = ["2", "6"] }}
"#,
            plateau = env!("CARGO_BIN_EXE_plateau"),
            pid = std::process::id(),
        ),
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "failed configurations make the run partial: {}", text(&output));
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "no server process may outlive the run");

    let results = read_results(&out);
    let broken = configuration(&results, "broken (MODE=fail)");
    assert_eq!(broken["status"], "failed");
    let failure = broken["failure"].as_str().unwrap();
    assert!(
        failure.contains("exited before it was ready") && failure.contains("loading model.onnx: file not found"),
        "{failure}"
    );
    let crashing = configuration(&results, "crashing (MODE=crash, PLATEAU_REFERENCE_WORKERS=2)");
    assert_eq!(crashing["status"], "failed");
    assert!(crashing["failure"].as_str().unwrap().contains("the server exited during the run"), "{crashing}");
    assert!(!crashing["steps"].as_array().unwrap().is_empty(), "what was measured before the crash is kept");

    // 2 and 6 workers of 20 ms: 100 and 300 requests/s.
    for (workers, capacity_per_min) in [("2", 6000.0), ("6", 18000.0)] {
        let run = configuration(&results, &format!("sweep (MODE=serve, PLATEAU_REFERENCE_WORKERS={workers})"));
        assert_eq!(run["status"], "complete");
        assert_eq!(run["environment"]["PLATEAU_REFERENCE_WORKERS"], workers);
        let metrics = &run["metrics"];
        let max_invocations = metrics["max_invocations"].as_f64().unwrap();
        assert!((max_invocations / capacity_per_min - 1.0).abs() < 0.10, "{workers} workers: {max_invocations}");
        let cpu = metrics["cpu_utilization_percent"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 100.0, "CpuUtilization {cpu}");
        assert!(metrics["memory_utilization_percent"].as_f64().unwrap() > 0.0);
        assert!(
            run["seconds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|second| second["cpu_percent"].as_f64().is_some_and(|cpu| cpu > 0.0))
        );
        let log = std::fs::read_to_string(out.join(run["server_log"].as_str().unwrap())).unwrap();
        assert!(log.contains(&format!("{workers} workers")), "the server's output is in its log: {log}");
    }
    let recommendation = &results["recommendation"];
    assert_eq!(recommendation["configuration"], "sweep (MODE=serve, PLATEAU_REFERENCE_WORKERS=6)");
    assert_eq!(recommendation["environment"]["PLATEAU_REFERENCE_WORKERS"], "6");
}

#[test]
fn the_open_model_finds_capacity_counts_drops_and_times_from_the_intended_send() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let job = write_job(
        folder.path(),
        r#"
version = 1
[job]
name = "open"
seed = 5
[target]
kind = "reference"
[payload]
body = "{}"
[traffic]
arrivals = "poisson"
max_in_flight = 100
warmup = "2s"
# Fixed-length steps, so the seconds can be counted.
max_step_duration = "4s"
[traffic.rate_steps]
start_rate_per_s = 100
step_rate_per_s = 100
step_duration = "4s"
steps = 4
[[configurations]]
name = "ref-4x20"
instance_type = "ref"
price_per_hour_usd = 1
reference = { workers = 4, service_time_ms = 20 }
"#,
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    assert_eq!(results["job"]["load_unit"], "requests_per_second");
    let config = configuration(&results, "ref-4x20");
    let steps = config["steps"].as_array().unwrap();
    assert_eq!(steps[0]["start_s"], 2, "the warm-up is not part of any step");
    assert_eq!(config["seconds"].as_array().unwrap().len(), 2 + 4 * 4, "the warm-up's seconds are still recorded");
    // 4 workers x 20 ms = 200 requests/s, whatever is offered above it.
    let max_invocations = config["metrics"]["max_invocations"].as_f64().unwrap();
    assert!((max_invocations / 12_000.0 - 1.0).abs() < 0.05, "MaxInvocations {max_invocations}");
    let last = &steps[3];
    assert_eq!(last["load"], 400.0);
    // 400 offered, 200 served: about 200 arrivals a second find all 100 sessions busy and are dropped.
    let dropped_per_s = last["dropped"].as_f64().unwrap() / last["steady_seconds"].as_f64().unwrap();
    assert!((dropped_per_s / 200.0 - 1.0).abs() < 0.2, "dropped {dropped_per_s} per second");
    // Timed from the intended send: 100 in flight at 200 served per second is half a second in the queue, though
    // each request is served in 20 ms. A tool timing from the actual send would hide this.
    let p50_ms = last["latency"]["p50_ms"].as_f64().unwrap();
    assert!(p50_ms > 400.0, "p50 {p50_ms} ms must include the wait behind the queue");
    assert!(
        steps[0]["latency"]["p50_ms"].as_f64().unwrap() < 30.0,
        "well below capacity the latency is the service time"
    );
    assert_eq!(last["generator_saturated"], false);
}

#[test]
fn response_checks_and_the_size_cap_turn_bad_answers_into_errors() {
    let _load = load_lock();
    let (mut server, url) = standalone_reference("8", "10");
    let run_with = |target_extra: &str| {
        let folder = tempfile::tempdir().unwrap();
        let out = folder.path().join("out");
        let job = write_job(
            folder.path(),
            &format!(
                "version = 1\n[job]\nname = \"checks\"\n[target]\nkind = \"http\"\nurl = \"{url}\"\n{target_extra}\n[payload]\nbody = \"{{}}\"\n\
                 [traffic.stairs]\nusers_per_step = 2\nstep_duration = \"2s\"\nsteps = 1\n[[configurations]]\nname = \"c\"\n\
                 instance_type = \"local\"\nprice_per_hour_usd = 1\n"
            ),
        );
        plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
        read_results(&out)["configurations"][0]["steps"][0].clone()
    };
    let passing = run_with("check = { status = 200, body_contains = \"predictions\" }");
    let failing_check = run_with("check = { body_contains = \"no such text\" }");
    let too_large = run_with("max_response_bytes = 10");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(passing["throughput_rps"].as_f64().unwrap() > 100.0, "{passing}");
    assert_eq!(passing["errors"]["model_error"], 0);
    assert_eq!(failing_check["throughput_rps"], 0.0);
    assert!(failing_check["errors"]["model_error"].as_u64().unwrap() > 100, "{failing_check}");
    assert!(too_large["errors"]["other"].as_u64().unwrap() > 100, "{too_large}");
}

#[test]
fn phases_are_judged_by_sliding_windows_measured_from_the_series() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    // One user more every second; 4 workers of 20 ms saturate at 4 users, 200 requests/s, from the fourth second.
    let job = write_job(
        folder.path(),
        "version = 1\n[job]\nname = \"phases\"\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{}\"\n\
         [[traffic.phases]]\ninitial_users = 1\nspawn_rate_per_s = 1\nduration = \"24s\"\n\
         [[configurations]]\nname = \"ref\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 1\n\
         reference = { workers = 4, service_time_ms = 20 }\n",
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    let config = configuration(&results, "ref");
    let window = config["plateau"]["window_s"].as_array().expect("a sliding window for phases");
    let (start, end) = (window[0].as_u64().unwrap(), window[1].as_u64().unwrap());
    assert_eq!(end - start, 10);
    let max_invocations = config["metrics"]["max_invocations"].as_f64().unwrap();
    assert!((max_invocations / 12_000.0 - 1.0).abs() < 0.05, "MaxInvocations {max_invocations}");
    // The window's latency was merged from the per-second histograms: exactly its requests.
    let in_window: u64 = config["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|second| (start..end).contains(&second["second"].as_u64().unwrap()))
        .map(|second| second["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(config["metrics"]["model_latency"]["count"].as_u64().unwrap(), in_window);
}

#[test]
fn think_time_paces_each_virtual_user() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    // 4 users, each waiting 40 ms after a 10 ms answer: 4 x 1 / 50 ms = 80 requests/s, far below the 800/s
    // the endpoint could serve back to back.
    let job = write_job(
        folder.path(),
        "version = 1\n[job]\nname = \"think\"\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{}\"\n\
         [traffic]\nthink_time = \"40ms\"\n[traffic.stairs]\nusers_per_step = 4\nstep_duration = \"4s\"\nsteps = 1\n\
         [[configurations]]\nname = \"c\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 1\n\
         reference = { workers = 8, service_time_ms = 10 }\n",
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let step = &read_results(&out)["configurations"][0]["steps"][0];
    let throughput = step["throughput_rps"].as_f64().unwrap();
    assert!((72.0..=82.0).contains(&throughput), "{throughput} requests/s, expected about 80");
    assert!(step["latency"]["p50_ms"].as_f64().unwrap() < 12.0, "think time is not latency: {step}");
}

#[test]
fn aws_price_lists_become_a_price_table_that_prices_an_endpoint_from_its_region() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let fixtures = repository().join("tests/fixtures/price-list");
    let table = folder.path().join("prices.toml");
    let output = plateau()
        .arg("price-table")
        .arg(fixtures.join("sagemaker-offer-excerpt.json"))
        .arg("--out")
        .arg(&table)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let written = std::fs::read_to_string(&table).unwrap();
    // Only endpoints' on-demand hourly rates: not the notebook or training rows, the free tier's 0, the reserved
    // term, storage or an upfront fee.
    for (line, expected) in [
        ("\"ml.m5.xlarge\" = { price_per_hour_usd = 0.2,", true),
        ("\"ml.m5.xlarge\" = { price_per_hour_usd = 0.25,", true),
        ("\"ml.g5.12xlarge\" = { price_per_hour_usd = 8, vcpus = 48, memory_gib = 192, gpus = 4 }", true),
        ("0.9", false),
        ("0.7", false),
        ("0.1,", false),
        ("ml.p4d", false),
    ] {
        assert_eq!(written.contains(line), expected, "`{line}`:\n{written}");
    }
    assert!(written.contains("as_of = \"2026-11-01\"") && written.contains("[regions.eu-west-1.instances]"));
    // `aws pricing get-products` output of the same rows gives the same table.
    let listed = plateau().arg("price-table").arg(fixtures.join("sagemaker-get-products.json")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout), written);
    // An endpoint in eu-west-1 is priced from Ireland's rows, and the plan says where the price came from.
    let job = write_job(
        folder.path(),
        "version = 1\n[job]\nname = \"priced\"\nprice_table = \"prices.toml\"\n\
         [target]\nkind = \"sagemaker\"\nregion = \"eu-west-1\"\n[payload]\nbody = \"{}\"\n\
         [traffic.stairs]\nusers_per_step = 1\nstep_duration = \"10s\"\nsteps = 2\n\
         [[configurations]]\nname = \"m5\"\ninstance_type = \"ml.m5.xlarge\"\nendpoint_name = \"e\"\n",
    );
    let plan = plateau().args(["plan", "--format", "json"]).arg(&job).output().unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["runs"][0]["usd_per_hour"], 0.25);
    let source = plan["runs"][0]["price_source"].as_str().unwrap();
    assert!(source.starts_with("AWS Price List, AmazonSageMaker offer 20261101000000 via"), "{source}");
    assert!(source.ends_with("eu-west-1 on-demand, as of 2026-11-01"), "{source}");
    // Another service's list, and a region the list lacks, are refused by name.
    let other = plateau().arg("price-table").arg(fixtures.join("ec2-offer.json")).output().unwrap();
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other).contains("is the price list of AmazonEC2, not of AmazonSageMaker"), "{}", text(&other));
    let missing = plateau()
        .arg("price-table")
        .arg(fixtures.join("sagemaker-offer-excerpt.json"))
        .args(["--region", "ap-south-1"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing)
            .contains("no real-time inference (Hosting) prices in ap-south-1; it has them in: eu-west-1, us-east-1")
    );
}

#[test]
fn an_inference_recommender_request_imports_into_a_valid_job_file() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let job = folder.path().join("imported.toml");
    let output = plateau()
        .args(["import-sagemaker", repository().join("tests/fixtures/ir-request.json").to_str().unwrap(), "--out"])
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for unsupported in ["JobDurationInSeconds", "SamplePayloadUrl", "ContainerConfig.Framework"] {
        assert!(stderr.contains(unsupported), "`{unsupported}` not named in the warnings:\n{stderr}");
    }
    let imported = std::fs::read_to_string(&job).unwrap();
    // IR deploys the model on each configuration; so does the imported job, tagged as IR's request asked.
    for carried in [
        "model_package_arn = \"arn:aws:sagemaker:us-east-1:123456789012:model-package/xgboost/1\"",
        "execution_role_arn = \"arn:aws:iam::123456789012:role/SageMakerRole\"",
        "tags = { \"team\" = \"ml-platform\" }",
        "environment = { \"OMP_NUM_THREADS\" = [\"1\", \"2\", \"4\"] }",
    ] {
        assert!(imported.contains(carried), "`{carried}` missing:\n{imported}");
    }
    // IR's spawn rate is per minute; plateau's per second.
    assert!(imported.contains("spawn_rate_per_s = 0.05\n"), "{imported}");
    assert!(imported.contains("max_invocations = 30000\n") && imported.contains("flat_invocations = \"stop\""));
    assert!(imported.contains("content_type = \"text/csv\"") && imported.contains("accept = \"application/json\""));
    // The region of the model package's ARN (the role's ARN names none).
    assert!(imported.contains("region = \"us-east-1\"   # from InputConfig.ModelPackageVersionArn"), "{imported}");
    let validated = plateau().arg("validate").arg(&job).output().unwrap();
    assert_eq!(validated.status.code(), Some(0), "{}", text(&validated));
    let plan = plateau().arg("plan").arg(&job).output().unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    // Three OMP_NUM_THREADS values on ml.c5.xlarge, ml.m5.xlarge, and the serverless configuration.
    assert!(plan_text.contains("5 test runs"), "{plan_text}");
    assert!(plan_text.contains("5 test runs, 2 at a time"), "{plan_text}");
    // The serverless configuration (4,096 MB, 10 at once) is priced by the GB-second with every slot busy, as at
    // its plateau: 4 GB x 10 x 3,600 s x 0.00002 USD = 2.88 USD an hour.
    let serverless = plan_text.lines().find(|line| line.contains("serverless")).unwrap();
    assert!(serverless.contains(" 2.880 "), "{serverless}");
}

/// Each request under tests/import imports into exactly the job file and warnings kept beside it (`.toml`,
/// `.warnings`; UPDATE_SNAPSHOTS=1 rewrites them), and the job file validates.
#[test]
fn inference_recommender_requests_import_into_their_golden_job_files_and_warnings() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let cases = repository().join("tests/import");
    let mut requests: Vec<PathBuf> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .collect();
    requests.sort();
    assert!(requests.len() >= 3, "{requests:?}");
    for request in requests {
        let job = folder.path().join(request.with_extension("toml").file_name().unwrap());
        let output = plateau().arg("import-sagemaker").arg(&request).arg("--out").arg(&job).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}: {}", request.display(), text(&output));
        let warnings: String = String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| line.starts_with("warning: "))
            .map(|line| format!("{line}\n"))
            .collect();
        let imported = std::fs::read_to_string(&job).unwrap();
        for (extension, actual) in [("toml", &imported), ("warnings", &warnings)] {
            let golden = request.with_extension(extension);
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::write(&golden, actual).unwrap();
            }
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            assert_eq!(actual, &expected, "{} differs from {}", request.display(), golden.display());
        }
        let validated = plateau().arg("validate").arg(&job).output().unwrap();
        assert_eq!(validated.status.code(), Some(0), "{}", text(&validated));
    }
}

#[test]
fn sample_payloads_from_a_folder_or_a_tarball_are_sent_in_turn() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let samples = folder.path().join("samples");
    std::fs::create_dir_all(samples.join("nested")).unwrap();
    std::fs::write(samples.join("a.json"), "{\"sample\": \"a\"}").unwrap();
    std::fs::write(samples.join("b.json"), "{\"sample\": \"b\"}").unwrap();
    std::fs::write(samples.join("nested/c.json"), "{\"sample\": \"c\"}").unwrap();
    // The same three files in a .tar.gz, as SageMaker Inference Recommender's SamplePayloadUrl holds them.
    let tarball = std::fs::File::create(folder.path().join("samples.tar.gz")).unwrap();
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(tarball, flate2::Compression::default()));
    archive.append_dir_all("samples", &samples).unwrap();
    archive.into_inner().unwrap().finish().unwrap();

    for source in ["samples", "samples.tar.gz"] {
        let job = write_job(
            folder.path(),
            &format!(
                "version = 1\n[job]\nname = \"samples\"\n[target]\nkind = \"reference\"\n[payload]\nsamples = \"{source}\"\n\
                 [traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 1\n[[configurations]]\nname = \"c\"\n\
                 instance_type = \"ref\"\nprice_per_hour_usd = 1\nreference = {{ workers = 1, service_time_ms = 5 }}\n"
            ),
        );
        let output = plateau().args(["payload", "preview", "-n", "4"]).arg(&job).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let bodies: Vec<&str> = stdout.lines().filter(|line| line.starts_with("{\"sample\"")).collect();
        assert_eq!(
            bodies,
            ["{\"sample\": \"a\"}", "{\"sample\": \"b\"}", "{\"sample\": \"c\"}", "{\"sample\": \"a\"}"],
            "{source}"
        );
    }
    std::fs::write(folder.path().join("empty.tar.gz"), b"not gzip").unwrap();
    let job = write_job(
        folder.path(),
        "version = 1\n[job]\nname = \"x\"\n[target]\nkind = \"reference\"\n[payload]\nsamples = \"empty.tar.gz\"\n\
         [traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 1\n[[configurations]]\nname = \"c\"\n\
         instance_type = \"ref\"\nprice_per_hour_usd = 1\nreference = { workers = 1, service_time_ms = 5 }\n",
    );
    let output = plateau().arg("validate").arg(&job).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("payload.samples"), "{}", text(&output));
}

#[test]
fn job_files_share_tables_through_include_and_errors_name_the_included_file() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(folder.path().join("shared")).unwrap();
    let shared = folder.path().join("shared/ramp.toml");
    std::fs::write(&shared, "# shared\n[target]\nkind = \"reference\"\n\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = 3\n").unwrap();
    let job = |name: &str, workers: u32| {
        format!(
            "version = 1\ninclude = [\"shared/ramp.toml\"]\n[job]\nname = \"{name}\"\n[payload]\nbody = \"{{}}\"\n\
             [[configurations]]\nname = \"c\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 1\n\
             reference = {{ workers = {workers}, service_time_ms = 10 }}\n"
        )
    };
    let first = folder.path().join("first.toml");
    let second = folder.path().join("second.toml");
    std::fs::write(&first, job("first", 2)).unwrap();
    std::fs::write(&second, job("second", 4)).unwrap();
    let output = plateau().arg("validate").arg(&first).arg(&second).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).matches("(1 test run, at most 9 s)").count(),
        2,
        "{}",
        text(&output)
    );

    // A mistake in the shared file is reported at its own file and line, for every job that includes it.
    std::fs::write(
        &shared,
        "[target]\nkind = \"reference\"\n\n[traffic.stairs]\nuser_per_step = 2\nstep_duration = \"3s\"\nsteps = 3\n",
    )
    .unwrap();
    let output = plateau().arg("validate").arg(&first).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("shared/ramp.toml:5:1") && stderr.contains("did you mean `users_per_step`?"), "{stderr}");

    // The job overrides the shared tables key by key: here one key of the shared ramp, the rest kept.
    std::fs::write(
        &shared,
        "[target]\nkind = \"reference\"\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = 3\n",
    )
    .unwrap();
    std::fs::write(&first, job("first", 2) + "[traffic.stairs]\nsteps = 5\n").unwrap();
    let output = plateau().arg("validate").arg(&first).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("(1 test run, at most 15 s)"), "{}", text(&output));
    // ... and a mistake in an overriding key is reported in the job file, under the merged table's key path.
    std::fs::write(&first, job("first", 2) + "[traffic.stairs]\nsteps = 0\n").unwrap();
    let output = plateau().arg("validate").arg(&first).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("first.toml:13:9") && stderr.contains("`traffic.stairs.steps`: must be at least 1"),
        "{stderr}"
    );
}

/// A configuration of 1,600 requests/s (16 workers of 10 ms) against stairs that end at 8 users, and `traffic`.
fn beyond_the_stairs(traffic: &str) -> String {
    format!(
        r#"
version = 1
[job]
name = "beyond the stairs"
seed = 11
[target]
kind = "reference"
[payload]
body = "{{}}"
{traffic}
[[configurations]]
name = "big"
instance_type = "ref.16x10"
price_per_hour_usd = 1
reference = {{ workers = 16, service_time_ms = 10 }}
"#
    )
}

#[test]
fn search_mode_confirms_a_plateau_the_fixed_stairs_never_reach() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let start = |name: &str, traffic: &str| {
        let out = folder.path().join(name);
        let job = folder.path().join(format!("{name}.toml"));
        std::fs::write(&job, beyond_the_stairs(traffic)).unwrap();
        (spawn_run(&job, &out), out)
    };
    let finish = |(child, out): (std::process::Child, PathBuf)| (child.wait_with_output().unwrap(), read_results(&out));
    // Steps of exactly their duration: this test is about the ramp's reach, not precision. The two jobs run side by
    // side (at most 1,600 requests/s each, light for two cores).
    let exact = "[traffic]\nmax_step_duration = \"3s\"\n";
    let stairs_run =
        start("stairs", &format!("{exact}[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = 4"));
    let search_run = start("search", &format!("{exact}[traffic.search]\nstart_users = 1\nstep_duration = \"3s\""));
    let (output, stairs) = finish(stairs_run);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let big = configuration(&stairs, "big");
    assert_eq!(
        (big["plateau"]["rule"].as_str(), big["metrics"]["lower_bound"].as_bool()),
        (Some("not_reached"), Some(true))
    );

    let (output, search) = finish(search_run);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let big = configuration(&search, "big");
    assert_eq!(big["plateau"]["rule"], "throughput_flat");
    assert_eq!(big["plateau"]["confirmed"], true);
    assert_eq!(big["metrics"]["lower_bound"], false);
    let realized_rps = big["reference"]["realized_capacity_rps"].as_f64().unwrap();
    let max_invocations = big["metrics"]["max_invocations"].as_f64().unwrap();
    assert!(
        (max_invocations / (realized_rps * 60.0) - 1.0).abs() < 0.10,
        "MaxInvocations {max_invocations} vs capacity {} per minute",
        realized_rps * 60.0
    );
    // The probe doubled from 1 user until throughput levelled off past the knee (16 users) and was confirmed.
    let probe: Vec<f64> =
        big["probe_steps"].as_array().unwrap().iter().map(|step| step["load"].as_f64().unwrap()).collect();
    assert_eq!(probe[..5], [1.0, 2.0, 4.0, 8.0, 16.0], "{probe:?}");
    let bracket = &big["search"]["bracket"];
    let knee = bracket["knee_load"].as_f64().unwrap();
    assert!((12.0..=20.0).contains(&knee), "the knee is at 16 users: {bracket}");
    // Measured steps start at the knee and stop a few steps past it, never far below it as the stairs did.
    let measured: Vec<f64> =
        big["steps"].as_array().unwrap().iter().map(|step| step["load"].as_f64().unwrap()).collect();
    assert!((12.0..=20.0).contains(&measured[0]), "{measured:?}");
    assert!(measured.len() <= 5 && *measured.last().unwrap() <= 48.0, "{measured:?}");
    assert_eq!(big["steps"][0]["index"], 0, "measured steps are numbered among themselves");
    let report = std::fs::read_to_string(folder.path().join("search/report.md")).unwrap();
    assert!(report.contains("search mode. The probe ran"), "{report}");
    // steps.csv: a row per step of every role, in the order they ran, with the results' figures.
    let csv = std::fs::read_to_string(folder.path().join("search/steps.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|column| *column == name).unwrap();
    let rows: Vec<Vec<&str>> = lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|row| row[column("configuration")] == "big")
        .collect();
    let roles: Vec<&str> = rows.iter().map(|row| row[column("role")]).collect();
    assert_eq!(roles.iter().filter(|role| **role == "probe").count(), probe.len(), "{csv}");
    assert_eq!(roles.iter().filter(|role| **role == "measured").count(), measured.len(), "{csv}");
    let first_measured = rows.iter().find(|row| row[column("role")] == "measured").unwrap();
    let throughput = big["steps"][0]["throughput_rps"].as_f64().unwrap();
    assert_eq!(first_measured[column("throughput_rps")].parse::<f64>().unwrap(), throughput, "{csv}");
}

#[test]
fn racing_stops_configurations_that_cannot_win_and_skips_their_later_trials() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    // `good` costs $0.21 per million inferences; `pricey` serves as much for twice the price; `slow` misses the
    // 60 ms goal at any load. Under stairs that stop at a confirmed plateau, `pricey` ends its ramp anyway; in
    // trial 2 (run in the opposite order), both losers are known and not run.
    let job = write_job(
        folder.path(),
        r#"
version = 1
[job]
name = "race"
seed = 2
trials = 2
[target]
kind = "reference"
[payload]
body = "{}"
[traffic]
# Steps of exactly their duration: this test is not about precision, and CI time is short.
max_step_duration = "3s"
[traffic.search]
start_users = 1
step_duration = "3s"
[requirements]
latency_ms = 60
percentile = "p99"
objective = "cost-per-inference"
[[configurations]]
name = "good"
instance_type = "ref.4x20"
price_per_hour_usd = 0.15
reference = { workers = 4, service_time_ms = 20 }
[[configurations]]
name = "pricey"
instance_type = "ref.4x20b"
price_per_hour_usd = 0.30
reference = { workers = 4, service_time_ms = 20 }
[[configurations]]
name = "slow"
instance_type = "ref.1x80"
price_per_hour_usd = 0.001
reference = { workers = 1, service_time_ms = 80 }
"#,
    );
    let output = plateau().arg("run").arg(&job).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results = read_results(&out);
    assert_eq!(results["partial"], false);
    assert_eq!(results["recommendation"]["configuration"], "good");
    // Trial 1: every configuration was probed first, then `good`, the most promising, was measured; `pricey` was
    // never measured, as its probe bounded its capacity below what it needed; `slow` stopped after its first,
    // lowest-load step.
    let pricey = configuration(&results, "pricey");
    let reason = pricey["eliminated"].as_str().unwrap();
    // Its best case is its price over its capacity's upper bound from the probe: at most its true cost ($0.30 an
    // hour over 200/s is $0.417 per million), and lower by as much as the probe's interval is wide.
    let best_usd: f64 = reason
        .strip_prefix("cannot beat good: $")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!((0.36..=0.42).contains(&best_usd), "{reason}");
    assert!(stderr.contains("pricey (trial 1/2) eliminated after its probe"), "{stderr}");
    // The fewest measured steps a confirmed plateau takes: the knee's, a flat one and one to confirm, of 3 s each.
    assert!(stderr.contains("not measured; at least 9 s of measured steps saved)"), "{stderr}");
    let first_pricey = results["trial_runs"].as_array().unwrap().iter().find(|run| run["name"] == "pricey").unwrap();
    assert!(first_pricey["steps"].as_array().unwrap().is_empty(), "not measured");
    assert!(first_pricey["probe_steps"].as_array().unwrap().len() >= 4, "probed");
    let good_measured = stderr.find("good (trial 1/2) step 1 of at most").unwrap();
    assert!(good_measured < stderr.find("pricey (trial 1/2) eliminated").unwrap(), "{stderr}");
    assert!(stderr.find("slow (trial 1/2) probe 1").unwrap() < good_measured, "probes first: {stderr}");
    let slow = configuration(&results, "slow")["eliminated"].as_str().unwrap();
    assert!(slow.starts_with("misses p99 ≤ 60 ms even at its lowest load (1)"), "{slow}");
    let trial_runs = results["trial_runs"].as_array().unwrap();
    let first_slow = trial_runs.iter().find(|run| run["name"] == "slow" && run["trial"] == 1).unwrap();
    assert_eq!(first_slow["elapsed_s"], 5, "one probe step at the lowest load");
    assert!(first_slow["steps"].as_array().unwrap().is_empty(), "no measured step ran");
    // Trial 2 ran `good` again, and neither loser.
    for name in ["pricey", "slow"] {
        let second = trial_runs.iter().find(|run| run["name"] == name && run["trial"] == 2).unwrap();
        assert_eq!(second["elapsed_s"], 0, "{name}");
        assert!(second["eliminated"].is_string(), "{name}");
        assert!(stderr.contains(&format!("{name} (trial 2/2): not run, eliminated by an earlier trial")), "{stderr}");
    }
    let good = trial_runs.iter().filter(|run| run["name"] == "good").count();
    assert_eq!(good, 2);
    let verdicts = results["recommendation"]["ranking"].as_array().unwrap();
    let pricey_verdict = verdicts.iter().find(|verdict| verdict["configuration"] == "pricey").unwrap();
    assert_eq!(pricey_verdict["rank"], Value::Null, "an eliminated configuration is never ranked");
    assert!(pricey_verdict["verdict"].as_str().unwrap().starts_with("eliminated: cannot beat good"));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("eliminated: misses p99"), "{summary}");
}

#[test]
fn the_latency_goals_boundary_is_bisected_and_its_interval_covers_the_m_m_1_queues() {
    let _load = load_lock();
    // One worker with exponential service times of 10 ms under Poisson arrivals is an M/M/1 queue: its response
    // time is exponential with rate (100/s - rate), so p90 = ln(10) / (100 - rate) s, and a 92 ms goal is met up to
    // 100 - 25.03 = 74.97 requests/s (a utilization of 75%, where a goal usually sits: the percentile rises three
    // times as fast as the load there, so 5% of load is 15% of latency).
    let analytic_rps = 100.0 - 10f64.ln() / 0.092;
    let folder = tempfile::tempdir().unwrap();
    let seeds = [1, 2, 3, 4, 5];
    // The seeds run at once: each is a light load (at most 160 requests/s), and the test stays short.
    let children: Vec<(u64, PathBuf, std::process::Child)> = seeds
        .iter()
        .map(|seed| {
            let out = folder.path().join(format!("out-{seed}"));
            let job = folder.path().join(format!("job-{seed}.toml"));
            std::fs::write(
                &job,
                format!(
                    r#"
version = 1
[job]
name = "m/m/1"
seed = {seed}
[target]
kind = "reference"
[payload]
body = "{{}}"
[traffic]
arrivals = "poisson"
max_step_duration = "18s"
precision_percent = 25
[traffic.search]
start_rate_per_s = 10
step_duration = "12s"
steps = 3
[requirements]
latency_ms = 92
percentile = "p90"
objective = "throughput"
[[configurations]]
name = "mm1"
instance_type = "ref.mm1"
price_per_hour_usd = 1
reference = {{ workers = 1, service_time_ms = 10, distribution = "exponential" }}
"#
                ),
            )
            .unwrap();
            let child = spawn_run(&job, &out);
            (*seed, out, child)
        })
        .collect();
    let (mut within, mut within_15, mut covered) = (0, 0, 0);
    for (seed, out, child) in children {
        let output = child.wait_with_output().unwrap();
        assert!(matches!(output.status.code(), Some(0 | 5)), "{}", text(&output));
        let results = read_results(&out);
        let mm1 = configuration(&results, "mm1");
        // The boundary is a load (an offered rate); the figure at it, a throughput, also varies with how many
        // Poisson arrivals came.
        let boundary_rps = mm1["metrics"]["load_at_slo"].as_f64().unwrap();
        let at_goal_rps = mm1["metrics"]["max_invocations_at_slo"].as_f64().unwrap() / 60.0;
        let interval = &mm1["metrics"]["max_invocations_at_slo_interval"];
        let (low, high) = (interval["low"].as_f64().unwrap() / 60.0, interval["high"].as_f64().unwrap() / 60.0);
        let boundary = &mm1["search"]["goal_boundary"];
        // No boundary step means the search ended before it bisected: say how each step ended, so a failure on a
        // noisy host (a generator that fell behind) reads as such.
        let boundary_steps = mm1["boundary_steps"].as_array().unwrap_or_else(|| {
            let steps: Vec<String> = mm1["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|step| format!("{} ({})", step["load"], step["invalid"]))
                .collect();
            panic!("seed {seed}: no boundary steps; ended {}; steps at load (invalid): {steps:?}", mm1["end"])
        });
        let bisected: Vec<f64> = boundary_steps.iter().map(|step| step["load"].as_f64().unwrap()).collect();
        println!(
            "seed {seed}: boundary {boundary_rps:.2}/s (analytic {analytic_rps:.2}/s); served there {at_goal_rps:.2}/s, \
             95% interval {low:.2} to {high:.2}; bisected at {bisected:?}; {boundary}"
        );
        assert!(bisected.len() >= 3, "bisected from the lowest load to the plateau: {bisected:?}");
        assert!(boundary["loads"][1].as_f64().unwrap() / boundary["loads"][0].as_f64().unwrap() <= 1.05, "{boundary}");
        within += usize::from((boundary_rps / analytic_rps - 1.0).abs() <= 0.05);
        within_15 += usize::from((boundary_rps / analytic_rps - 1.0).abs() <= 0.15);
        covered += usize::from(low <= analytic_rps && analytic_rps <= high);
    }
    println!(
        "within 5%: {within} of {}; interval covers the analytic boundary: {covered} of {}",
        seeds.len(),
        seeds.len()
    );
    // A queue's percentile over a few seconds is noisy by nature: simulating this M/M/1 queue, a 24 s step's 90th
    // percentile varies by 18% (one standard deviation), 6% of load, and steps here are 12 to 18 s. So in CI's
    // budget the boundary lands within 5% in about three seeds of five (1 to 4 of 5 measured; the farthest 8.5%
    // off in two runs at 18 s), and what must hold is that its interval says so: it covers the analytic boundary.
    // `benches/boundary.py` shows the 5% bar with boundary steps of up to two minutes.
    assert!(covered >= 4, "the interval covers the analytic boundary in {covered} of {} seeds", seeds.len());
    assert!(within_15 == seeds.len(), "within 15%: {within_15} of {}", seeds.len());
}

#[test]
fn completions_for_bash_zsh_and_fish_are_generated_and_bash_completes_the_subcommands() {
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let output = plateau().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(script("zsh").starts_with("#compdef plateau"));
    assert!(script("fish").contains("complete -c plateau"));
    let bash = folder.path().join("plateau.bash");
    std::fs::write(&bash, script("bash")).unwrap();
    // What bash offers after `plateau ` and after `plateau plan --`, through the script's own function.
    let complete = |words: &str| {
        let line = format!("plateau {words}");
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({line}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_LINE='{line}'; \
                 COMP_POINT=${{#COMP_LINE}}; _plateau plateau; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                bash.display()
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let subcommands = complete("''");
    for subcommand in ["run", "validate", "plan", "compare", "report", "completions", "man"] {
        assert!(subcommands.lines().any(|word| word == subcommand), "`{subcommand}` not offered: {subcommands}");
    }
    let plan_flags = complete("plan --");
    for flag in ["--format", "--set", "--only"] {
        assert!(plan_flags.lines().any(|word| word == flag), "`{flag}` not offered: {plan_flags}");
    }
}

#[test]
fn the_man_pages_cover_every_subcommand() {
    let _machine = shared_lock();
    let output = plateau().arg("man").output().unwrap();
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH plateau"), "{page}");
    assert!(page.contains("completions") && page.contains("compare"), "{page}");
    let folder = tempfile::tempdir().unwrap();
    let output = plateau().arg("man").arg("--out").arg(folder.path()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let run_page = std::fs::read_to_string(folder.path().join("plateau-run.1")).unwrap();
    assert!(run_page.contains(".TH plateau-run") && run_page.contains("resume"), "{run_page}");
}

#[test]
fn plan_and_run_take_set_and_only_from_the_command_line() {
    let _load = load_lock();
    let quickstart = repository().join("scenarios/quickstart.toml");
    let plan = |extra: &[&str]| {
        let output = plateau().arg("plan").arg(&quickstart).args(["--format", "json"]).args(extra).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let whole = plan(&[]);
    let names: Vec<&str> =
        whole["runs"].as_array().unwrap().iter().map(|run| run["configuration"].as_str().unwrap()).collect();
    assert_eq!(names, ["tiny", "small", "medium", "large"]);
    let summed: f64 = whole["runs"].as_array().unwrap().iter().map(|run| run["at_most_usd"].as_f64().unwrap()).sum();
    assert!((whole["at_most_usd"].as_f64().unwrap() - summed).abs() < 1e-12, "{whole}");
    // Six 5 s steps as shipped; two with --set.
    let narrowed = plan(&["--only", "medium", "--set", "traffic.stairs.steps=2"]);
    assert_eq!(narrowed["runs"].as_array().unwrap().len(), 1, "{narrowed}");
    assert_eq!(narrowed["runs"][0]["configuration"], "medium");
    assert!(
        narrowed["each_at_most_s"].as_u64().unwrap() < whole["each_at_most_s"].as_u64().unwrap(),
        "{narrowed} vs {whole}"
    );

    // A bad value is named by its origin and key; an unknown configuration lists the job's.
    let output = plateau().arg("plan").arg(&quickstart).args(["--set", "traffic.stairs.steps=-2"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("--set") && text(&output).contains("traffic.stairs.steps"), "{}", text(&output));
    let output = plateau().arg("plan").arg(&quickstart).args(["--only", "huge"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("huge") && text(&output).contains("tiny, small, medium, large"),
        "{}",
        text(&output)
    );

    // A run records what the command line changed, and ran only what it selected; it lands in the history.
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let database = folder.path().join("history.sqlite3");
    let output = plateau()
        .env("PLATEAU_HISTORY", &database)
        .arg("run")
        .arg(&quickstart)
        .args(["--only", "small", "--set", "traffic.stairs.steps=1", "--set", "traffic.stairs.step_duration=\"2s\""])
        .args(["--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.code().is_some_and(|code| code != 1 && code != 2), "{}", text(&output));
    // --json: the digest on stdout, nothing else (progress is on stderr).
    let digest: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)));
    assert_eq!(digest["exit_code"].as_i64(), output.status.code().map(i64::from), "{digest}");
    assert_eq!(digest["job"], "quickstart");
    assert_eq!(digest["results"], out.join("results.json").to_str().unwrap());
    assert_eq!(digest["configurations"][0]["name"], "small", "{digest}");
    assert_eq!(digest["configurations"][0]["status"], "complete", "{digest}");
    assert!(digest["configurations"][0]["max_invocations"].as_f64().unwrap() > 1000.0, "{digest}");
    // The commit of the repository this job file is in is recorded (none where git cannot tell it).
    let head = Command::new("git").arg("-C").arg(repository()).args(["rev-parse", "HEAD"]).output();
    let head = head
        .ok()
        .filter(|head| head.status.success())
        .map(|head| String::from_utf8_lossy(&head.stdout).trim().to_string());
    assert_eq!(digest["revision"]["commit"].as_str(), head.as_deref(), "{digest}");
    let results = read_results(&out);
    let configurations: Vec<&str> =
        results["configurations"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(configurations, ["small"]);
    assert_eq!(results["configurations"][0]["steps"].as_array().unwrap().len(), 1);
    assert_eq!(results["manifest"]["overrides"]["only"], serde_json::json!(["small"]));
    assert_eq!(
        results["manifest"]["overrides"]["set"],
        serde_json::json!(["traffic.stairs.steps=1", "traffic.stairs.step_duration=\"2s\""])
    );
    assert!(
        results["manifest"]["job_file_text"].as_str().unwrap().ends_with("traffic.stairs.step_duration = \"2s\"\n")
    );
    assert!(text(&output).contains("recorded as run 1 of \"quickstart\" in the history"), "{}", text(&output));
    let history = plateau().args(["history", "quickstart", "--format", "json", "--history"]).arg(&database).output();
    let history: Value = serde_json::from_slice(&history.unwrap().stdout).unwrap();
    assert_eq!(history[0]["started_at"], results["manifest"]["started_at"], "{history}");
    assert_eq!(history[0]["configurations"][0]["max_invocations"], digest["configurations"][0]["max_invocations"]);
}

#[test]
fn init_writes_a_job_that_validates_and_runs_against_a_loopback_server() {
    let _load = load_lock();
    let (mut server, url) = standalone_reference("4", "5");
    let folder = tempfile::tempdir().unwrap();
    let job = folder.path().join("mine.toml");
    let init = |extra: &[&str]| {
        plateau()
            .arg("init")
            .arg("--out")
            .arg(&job)
            .args(["--kind", "http", "--url", &url, "--price", "0.25"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = init(&[]);
    assert!(output.status.success(), "{}", text(&output));
    // It never overwrites without --force.
    let output = init(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("--force"), "{}", text(&output));
    let output = plateau().arg("validate").arg(&job).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // Shortened from the command line, it runs and measures the server.
    let out = folder.path().join("out");
    let output = plateau()
        .arg("run")
        .arg(&job)
        .args(["--set", "traffic.stairs.steps=2", "--set", "traffic.stairs.step_duration=\"2s\"", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(output.status.code().is_some_and(|code| code != 1 && code != 2), "{}", text(&output));
    let results = read_results(&out);
    assert_eq!(results["job"]["name"], "mine");
    let steps = results["configurations"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|step| step["throughput_rps"].as_f64().unwrap() > 100.0), "{steps:?}");
    // A kind without what it needs is refused by name.
    let output = plateau()
        .arg("init")
        .arg("--out")
        .arg(folder.path().join("x.toml"))
        .args(["--kind", "sagemaker"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "a usage error is invalid input: {}", text(&output));
    assert!(text(&output).contains("--endpoint"), "{}", text(&output));
}

#[test]
fn prompts_from_a_sharegpt_dataset_reach_the_llm_with_their_own_prompt_and_output_lengths() {
    let _machine = shared_lock();
    let dataset = repository().join("scenarios/datasets/sharegpt-sample.json");
    // The ground truth, read here from the file itself: each conversation's first user turn and the reply after it
    // (ShareGPT's form), at four characters a token; the conversation without a user turn is skipped.
    let records: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&dataset).unwrap()).unwrap();
    let (mut prompt_chars, mut reply_tokens) = (Vec::new(), Vec::new());
    for record in &records {
        let turns = record["conversations"].as_array().unwrap();
        if let Some(first) = turns.iter().position(|turn| turn["from"] == "human") {
            prompt_chars.push(turns[first]["value"].as_str().unwrap().chars().count() as f64);
            reply_tokens.push(turns[first + 1]["value"].as_str().unwrap().chars().count().div_ceil(4) as f64);
        }
    }
    assert_eq!((records.len(), reply_tokens.len()), (25, 24));
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let folder = tempfile::tempdir().unwrap();
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "dataset"
seed = 3
[target]
kind = "reference"
[payload.prompts]
file = "{}"
model = "reference"
max_tokens = "dataset"
ignore_eos = true
[traffic.stairs]
users_per_step = 8
step_duration = "3s"
steps = 1
[requirements]
expected_peak_output_tokens_per_s = 20000
[[configurations]]
name = "llm"
instance_type = "ref.llm"
price_per_hour_usd = 1
reference_llm = {{ max_batch = 8, iteration_ms = 1, per_sequence_ms = 0.1, prefill_ms_per_token = 0.001 }}
"#,
            dataset.display()
        ),
    );
    let out = folder.path().join("out");
    let output = plateau().args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(matches!(output.status.code(), Some(0 | 5)), "{}", text(&output));
    let results = read_results(&out);
    let step = &configuration(&results, "llm")["steps"][0];
    let tokens = &step["tokens"];
    let responses = step["latency"]["count"].as_f64().unwrap_or_else(|| panic!("{step}"));
    // Requests take the 24 prompts in turn, so over hundreds of responses the means are the dataset's.
    let (output_tokens, input_tokens) =
        (tokens["mean_output_tokens"].as_f64().unwrap(), tokens["mean_input_tokens"].as_f64().unwrap());
    let (expected_output, expected_input) = (mean(&reply_tokens), mean(&prompt_chars) / 4.0);
    println!(
        "{responses} responses: {output_tokens:.2} output tokens each (dataset {expected_output:.2}), \
         {input_tokens:.2} input tokens (dataset {expected_input:.2}); usage counted, not estimated: {}",
        tokens["estimated"]
    );
    assert!(responses >= 240.0, "{responses} responses: too few to average the dataset");
    assert!((output_tokens / expected_output - 1.0).abs() < 0.05, "{output_tokens} vs {expected_output}");
    assert!((input_tokens / expected_input - 1.0).abs() < 0.08, "{input_tokens} vs {expected_input}");
    assert_eq!(tokens["estimated"], false);
    // Sized for a peak in output tokens: as responses at the measured tokens per response, on the capacity's
    // lower end.
    let metrics = &configuration(&results, "llm")["metrics"];
    let capacity_rps = metrics["max_invocations_interval"]["low"]
        .as_f64()
        .unwrap_or_else(|| metrics["max_invocations"].as_f64().unwrap())
        / 60.0;
    let per_response = metrics["tokens"]["at_plateau"]["mean_output_tokens"].as_f64().unwrap();
    let expected = (20000.0 / per_response / capacity_rps).ceil();
    assert_eq!(results["recommendation"]["initial_instance_count"].as_f64(), Some(expected), "{metrics}");
}

#[test]
fn ttft_and_tpot_goals_bound_the_load_at_goal_and_one_missed_at_the_lowest_load_is_named() {
    let _machine = shared_lock();
    // `b4` batches 4 responses of 32 tokens at 7 ms an iteration: up to 4 users each first token comes an iteration
    // or two after its request; at 6, two users wait about half a response (112 ms) for a free place, far over an
    // 80 ms p90 TTFT. `slow` takes 25 ms a token, over the 10 ms TPOT goal at any load. There is no latency goal:
    // the token goals alone set the load at goal. A batch's responses end together, so 2-second steps count them
    // in fours, about 2/s of 14: a gain under 20% is that noise, and a plateau confirmed by it is not left a bound.
    let folder = tempfile::tempdir().unwrap();
    let prompt = "x".repeat(200);
    let job = write_job(
        folder.path(),
        &format!(
            r#"
version = 1
[job]
name = "token-goals"
seed = 4
[target]
kind = "reference"
[payload]
body = '{{"max_tokens": 32, "stream": true, "messages": [{{"role": "user", "content": "{prompt}"}}]}}'
[traffic]
max_step_duration = "2s"
[traffic.stairs]
users_per_step = 2
step_duration = "2s"
steps = 4
[plateau]
min_gain_percent = 20
[requirements]
percentile = "p90"
ttft_ms = 80
tpot_ms = 10
objective = "cost-per-million-tokens"
[[configurations]]
name = "b4"
instance_type = "ref.llm.b4"
price_per_hour_usd = 1
reference_llm = {{ max_batch = 4, iteration_ms = 5, per_sequence_ms = 0.5, prefill_ms_per_token = 0.01 }}
[[configurations]]
name = "slow"
instance_type = "ref.llm.slow"
price_per_hour_usd = 0.01
reference_llm = {{ max_batch = 4, iteration_ms = 25, per_sequence_ms = 0.1, prefill_ms_per_token = 0.01 }}
"#
        ),
    );
    let out = folder.path().join("out");
    let output = plateau().args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(matches!(output.status.code(), Some(0 | 5)), "{}", text(&output));
    let results = read_results(&out);
    assert_eq!(results["job"]["requirements"]["percentile"], "p90", "{}", results["job"]["requirements"]);
    let b4 = configuration(&results, "b4");
    let p90 = |step: &Value, figure: &str| step["tokens"][figure]["p90_ms"].as_f64().unwrap();
    let ttft: Vec<(f64, f64)> = b4["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| (step["load"].as_f64().unwrap(), p90(step, "ttft")))
        .collect();
    println!("b4: p90 TTFT by users {ttft:?}; load at goal {}", b4["metrics"]["load_at_slo"]);
    assert!(ttft[..2].iter().all(|(_, ms)| *ms <= 80.0) && ttft[2..].iter().all(|(_, ms)| *ms > 80.0), "{ttft:?}");
    assert_eq!(b4["metrics"]["load_at_slo"], 4.0, "{}", b4["metrics"]);
    // At goal is read at 4 users, where the batch is already full: never above MaxInvocations.
    let at_goal = b4["metrics"]["max_invocations_at_slo"].as_f64().unwrap();
    assert!(at_goal > 0.0 && at_goal <= b4["metrics"]["max_invocations"].as_f64().unwrap(), "{}", b4["metrics"]);
    let slow = configuration(&results, "slow");
    let tpot = p90(&slow["steps"][0], "tpot");
    assert!(tpot > 10.0, "{tpot}");
    assert_eq!(slow["metrics"]["max_invocations_at_slo"], 0.0, "{}", slow["metrics"]);
    let verdicts = results["recommendation"]["ranking"].as_array().unwrap();
    let verdict =
        verdicts.iter().find(|verdict| verdict["configuration"] == "slow").unwrap()["verdict"].as_str().unwrap();
    assert!(
        verdict.contains(&format!("fails p90 TPOT ≤ 10 ms: {tpot:.1} ms even at the lowest load (step 1)")),
        "{verdict}"
    );
    assert_eq!(results["recommendation"]["configuration"], "b4", "the cheaper `slow` misses its goals");
    // The report draws the token figures against load, with the TTFT goal as a guide.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for expected in ["and goodput against load", "goal: p90 TTFT ≤ 80 ms", "TTFT goal: p90 ≤ 80"] {
        assert!(html.contains(expected), "{expected} not in the report");
    }
    assert!(out.join("charts/01-b4-token-latency.svg").exists());

    // The same server a third slower per token: compare's token rules see it, at the same load.
    let slower = std::fs::read_to_string(&job)
        .unwrap()
        .replace("max_batch = 4, iteration_ms = 5,", "max_batch = 4, iteration_ms = 7,");
    let slower_job = folder.path().join("slower.toml");
    std::fs::write(&slower_job, slower).unwrap();
    let head = folder.path().join("head");
    let output = plateau()
        .args(["run", slower_job.to_str().unwrap(), "--only", "b4", "--out", head.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(matches!(output.status.code(), Some(0 | 5)), "{}", text(&output));
    let rules = ["output_tokens_per_s < -5%", "ttft_p90 > +10%", "goodput < -50%"];
    let mut args = vec!["compare".to_string(), out.join("results.json").display().to_string()];
    args.push(head.join("results.json").display().to_string());
    for rule in rules {
        args.extend(["--fail-on".to_string(), rule.to_string()]);
    }
    args.extend(["--format".to_string(), "json".to_string()]);
    let output = plateau().args(&args).output().unwrap();
    let comparison: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)));
    let b4 = comparison["configurations"].as_array().unwrap().iter().find(|c| c["name"] == "b4").unwrap();
    let change = |metric: &str| {
        let delta = b4["deltas"].as_array().unwrap().iter().find(|delta| delta["metric"] == metric);
        delta.unwrap_or_else(|| panic!("no {metric}: {b4}"))["delta_percent"].as_f64().unwrap()
    };
    println!(
        "b4, 7 ms an iteration against 5: output tokens/s {:+.1}%, TTFT p90 {:+.1}% at {} users, goodput {:+.1}%",
        change("output_tokens_per_s"),
        change("ttft_p90"),
        b4["matched_load"],
        change("goodput")
    );
    // 32 tokens at 9 ms an iteration instead of 7 (a full batch): about 22% fewer tokens a second. A batch's
    // responses end together, so 2-second steps count them in fours: a step's rate is known to about 2/s of 18.
    assert!((-45.0..-12.0).contains(&change("output_tokens_per_s")), "{b4}");
    let fired: Vec<&str> =
        comparison["fired"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(output.status.code(), Some(4), "{comparison}");
    assert!(fired.contains(&"output_tokens_per_s < -5%") && fired.contains(&"ttft_p90 > +10%"), "{comparison}");
    assert!(!fired.contains(&"goodput < -50%"), "{comparison}");
}
