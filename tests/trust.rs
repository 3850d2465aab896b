//! The cases outside testers met on real, noisy servers (issue 15), each a test named after what broke.

use std::path::Path;

use plateau::recommend::recommend;
use plateau::results::Results;

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
