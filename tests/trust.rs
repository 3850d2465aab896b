//! The cases outside testers met on real, noisy servers (issue 15), each a test named after what broke.

use std::path::Path;

use plateau::recommend::recommend;
use plateau::results::Results;
use serde_json::Value;

mod common;
use common::{load_lock, plateau, read_results, text};

/// Runs `job` (TOML text) with `plateau run` and returns its results and exit code.
fn run_job(folder: &Path, name: &str, job: &str) -> (Value, Option<i32>) {
    let path = folder.join(format!("{name}.toml"));
    std::fs::write(&path, job).unwrap();
    let out = folder.join(name);
    let output = plateau().arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    assert!(out.join("results.json").exists(), "{name} wrote no results: {}", text(&output));
    (read_results(&out), output.status.code())
}

/// A noisy server of known capacity: 4 workers, bimodal service times of mean `service_ms` (a tenth of the requests
/// take five times as long as the rest) and every worker stalled 150 ms every 1.5 s, which takes a tenth of its
/// capacity: 4 x 1000 / service_ms x 0.9 requests per second.
fn noisy_reference(service_ms: f64) -> String {
    format!(
        "reference = {{ workers = 4, service_time_ms = {service_ms}, distribution = \"bimodal\", slow_share = 0.1, \
         slow_factor = 5, stalls = {{ every = \"1500ms\", pause_ms = 150 }} }}"
    )
}

/// A job of `count` configurations named `noisy-00`, `noisy-01`, ..., each its own seeded server of that model, run
/// side by side (they are light: 180 requests/s each), stairs of 2 users to the confirmed plateau.
fn noisy_job(name: &str, count: usize, service_ms: f64, seed: u64) -> String {
    let configurations: String = (0..count)
        .map(|index| {
            format!(
                "[[configurations]]\nname = \"noisy-{index:02}\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 0.1\n{}\n",
                noisy_reference(service_ms)
            )
        })
        .collect();
    format!(
        "version = 1\n[job]\nname = \"{name}\"\nseed = {seed}\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{{}}\"\n\
         [traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = 8\n[stopping]\nflat_invocations = \"stop\"\n\
         [limits]\nmax_parallel = {count}\n{configurations}"
    )
}

#[test]
fn the_interval_of_max_invocations_covers_the_realized_capacity_of_a_noisy_server_in_17_of_20_seeded_runs() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let (results, _) = run_job(folder.path(), "coverage", &noisy_job("coverage", 20, 20.0, 7));
    let mut covered = 0;
    let mut widths = Vec::new();
    for configuration in results["configurations"].as_array().unwrap() {
        let metrics = &configuration["metrics"];
        let realized_per_min = configuration["reference"]["realized_capacity_rps"].as_f64().unwrap() * 60.0;
        let nominal_per_min = configuration["reference"]["nominal_capacity_rps"].as_f64().unwrap() * 60.0;
        assert!(
            (realized_per_min / nominal_per_min - 1.0).abs() < 0.05,
            "realized {realized_per_min} vs nominal {nominal_per_min}"
        );
        let estimate = metrics["max_invocations"].as_f64().unwrap();
        let (low, high) = (
            metrics["max_invocations_interval"]["low"].as_f64().unwrap(),
            metrics["max_invocations_interval"]["high"].as_f64().unwrap(),
        );
        let covers = (low..=high).contains(&realized_per_min);
        covered += usize::from(covers);
        widths.push((high - low) / 2.0 / estimate * 100.0);
        eprintln!(
            "{}: MaxInvocations {estimate:.0} [{low:.0}, {high:.0}], realized capacity {realized_per_min:.0}/min: {}",
            configuration["name"].as_str().unwrap(),
            if covers { "covered" } else { "MISSED" }
        );
    }
    widths.sort_by(f64::total_cmp);
    eprintln!("coverage: {covered} of 20 intervals cover the realized capacity; median half-width ±{:.1}%", widths[10]);
    assert!(covered >= 17, "only {covered} of 20 intervals covered the realized capacity");
    // An interval that covers by being useless would pass too: the median must stay informative.
    assert!(widths[10] < 10.0, "median half-width ±{:.1}%", widths[10]);
}

fn quickstart_results() -> Results {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quickstart-results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_configuration_failing_a_fifth_of_its_requests_is_not_recommended() {
    let mut results = quickstart_results();
    assert_eq!(recommend(&results.configurations, &results.job.requirements).configuration.as_deref(), Some("medium"));
    let medium = results.configurations.iter_mut().find(|result| result.name == "medium").unwrap();
    for step in &mut medium.steps {
        step.error_rate_percent = 19.7;
    }
    medium.metrics.as_mut().unwrap().error_rate_percent = 19.7;
    let recommendation = recommend(&results.configurations, &results.job.requirements);
    assert_ne!(recommendation.configuration.as_deref(), Some("medium"), "{}", recommendation.reason);
    let verdict = recommendation.ranking.iter().find(|verdict| verdict.configuration == "medium").unwrap();
    assert!(!verdict.meets_requirements);
    assert!(
        verdict.verdict.contains("19.7% of its requests") && verdict.verdict.contains("error budget of 1%"),
        "{}",
        verdict.verdict
    );

    // Within a budget the job file widens, it may be recommended again.
    results.job.requirements.max_error_rate_percent = 25.0;
    let recommendation = recommend(&results.configurations, &results.job.requirements);
    assert_eq!(recommendation.configuration.as_deref(), Some("medium"));
}

#[test]
fn a_target_that_fails_every_request_is_a_failed_run_named_by_its_error_not_the_load_generator() {
    // Issue 15, case 5: a server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until && connections.len() < 64 {
            match listener.accept() {
                Ok((connection, _)) => connections.push(connection),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        connections
    });
    let folder = tempfile::tempdir().unwrap();
    let job = folder.path().join("silent.toml");
    std::fs::write(
        &job,
        format!(
            "version = 1\n[job]\nname = \"silent\"\n[target]\nkind = \"http\"\nurl = \"http://{address}/invocations\"\n\
             timeout = \"1s\"\n[payload]\nbody = \"{{}}\"\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\n\
             steps = 2\n[[configurations]]\nname = \"c\"\ninstance_type = \"local\"\nprice_per_hour_usd = 1\n"
        ),
    )
    .unwrap();
    let out = folder.path().join("out");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plateau"))
        .arg("run")
        .arg(&job)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    drop(held);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a broken target is a failed run: {stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let configuration = &results["configurations"][0];
    assert_eq!(configuration["status"], "failed");
    let failure = configuration["failure"].as_str().unwrap();
    eprintln!("{failure}");
    assert!(failure.contains(&format!("http://{address}/invocations")), "{failure}");
    assert!(failure.contains("most of them `timeout`"), "{failure}");
    assert!(!failure.contains("load generator") && !stderr.contains("fell behind"), "{failure}\n{stderr}");
}
