//! Hostile input and faults (issue 16): each case an outside tester met, a test named after what broke.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{plateau, repository, shared_lock, text};

/// A job file's `[traffic]` and first configuration, the rest a small valid job.
fn job(traffic: &str, name: &str) -> String {
    format!(
        "version = 1\n[job]\nname = \"{name}\"\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{{}}\"\n{traffic}\n\
         [[configurations]]\nname = \"{name}\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 0.1\n\
         reference = {{ workers = 1, service_time_ms = 10 }}\n"
    )
}

/// `plateau validate` of `text`: its exit code and everything it printed.
fn validate(folder: &Path, text_of_job: &str) -> (Option<i32>, String) {
    let path = folder.join("job.toml");
    std::fs::write(&path, text_of_job).unwrap();
    let output = plateau().arg("validate").arg(&path).output().unwrap();
    (output.status.code(), text(&output))
}

#[test]
fn ramps_of_a_billion_steps_users_or_years_are_refused_at_validation_with_the_limit() {
    let _machine = shared_lock();
    // Case 1: these validated, and `run` aborted allocating 40 GB.
    let folder = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 1000000000",
            "traffic.stairs.steps",
            "must be at most 1000",
        ),
        (
            "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 4294967295",
            "traffic.stairs.steps",
            "must be at most 1000",
        ),
        (
            "[traffic.stairs]\nusers_per_step = 4294967295\nstep_duration = \"2s\"\nsteps = 2",
            "traffic.stairs.users_per_step",
            "more than the 100000 plateau drives at once",
        ),
        (
            "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"100years\"\nsteps = 2",
            "traffic.stairs.step_duration",
            "must be at most 24h",
        ),
        (
            "[traffic]\nwarmup = \"1000000000days\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 2",
            "traffic.warmup",
            "",
        ),
        (
            "[traffic]\nmax_step_duration = \"24h\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2h\"\nsteps = 1000",
            "traffic",
            "more than the 168 h plateau plans",
        ),
        (
            "[traffic.rate_steps]\nstart_rate_per_s = 10\nstep_rate_per_s = 1e12\nstep_duration = \"2s\"\nsteps = 3",
            "traffic.rate_steps.step_rate_per_s",
            "must be at most 1000000 requests per second",
        ),
        (
            "[traffic]\nmax_in_flight = 4294967295\n[traffic.constant_rate]\nrate_per_s = 10\nduration = \"5s\"",
            "traffic.max_in_flight",
            "must be at most 1000000",
        ),
    ];
    for (traffic, key, message) in cases {
        let started = std::time::Instant::now();
        let (code, printed) = validate(folder.path(), &job(traffic, "ramp"));
        assert_eq!(code, Some(1), "{traffic}\n{printed}");
        assert!(printed.contains(&format!("`{key}`")) && printed.contains(message), "{traffic}\n{printed}");
        assert!(printed.contains("job.toml:"), "the error names the file and line: {printed}");
        assert!(started.elapsed().as_secs() < 5, "{traffic}: validation took {:?}", started.elapsed());
    }
}

#[test]
fn control_characters_in_names_are_refused_and_never_reach_the_terminal() {
    let _machine = shared_lock();
    // Case 6: an escape sequence in a name cleared the terminal and made the SVG and JUnit XML invalid.
    let folder = tempfile::tempdir().unwrap();
    let hostile = "\\u001b[31mRED\\u001b[2J";
    let stairs = "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 2";
    let (code, printed) = validate(folder.path(), &job(stairs, hostile));
    assert_eq!(code, Some(1), "{printed}");
    for key in ["job.name", "configurations[0].name"] {
        assert!(printed.contains(&format!("`{key}`: must not contain control characters")), "{key}: {printed}");
    }
    assert!(!printed.contains('\u{1b}'), "an escape reached the terminal: {printed:?}");
    let environment =
        job(stairs, "ok").replace("reference = {", "environment = { \"A\\u0007\" = [\"1\"] }\nreference = {");
    let (_, printed) = validate(folder.path(), &environment);
    assert!(printed.contains("control characters") || printed.contains("environment"), "{printed}");
    assert!(!printed.contains('\u{7}'), "{printed:?}");
}

/// The quickstart fixture with one configuration renamed to `name`, written to `folder/name-results.json`.
fn fixture_with_a_name(folder: &Path, name: &str, file: &str) -> std::path::PathBuf {
    let mut results: Value = serde_json::from_str(
        &std::fs::read_to_string(repository().join("tests/fixtures/quickstart-results.json")).unwrap(),
    )
    .unwrap();
    results["configurations"][3]["name"] = Value::from(name);
    let path = folder.join(file);
    std::fs::write(&path, serde_json::to_string(&results).unwrap()).unwrap();
    path
}

#[test]
fn every_report_format_drops_control_characters_from_a_results_file_that_holds_them() {
    let _machine = shared_lock();
    // Case 6, the other half: results written elsewhere (or edited) may still hold them.
    let folder = tempfile::tempdir().unwrap();
    let name = "large\u{1b}[2J\u{7}\u{0}";
    let results = fixture_with_a_name(folder.path(), name, "results.json");
    let out = folder.path().join("reports");
    let output = plateau().arg("report").arg(&results).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(['\u{1b}', '\u{7}', '\u{0}']), "{}", text(&output));
    for file in ["report.html", "report.md", "charts/overview.svg"] {
        let written = std::fs::read_to_string(out.join(file)).unwrap();
        // Markdown escapes the bracket.
        let shown = written.contains("large[2J") || written.contains("large\\[2J");
        assert!(shown, "{file} shows the name without its control characters");
        assert!(!written.contains(['\u{1b}', '\u{7}', '\u{0}']), "{file} holds a control character");
    }
    let base = fixture_with_a_name(folder.path(), "large", "base.json");
    let output = plateau().args(["compare", "--format", "junit"]).arg(&base).arg(&results).output().unwrap();
    let junit = String::from_utf8_lossy(&output.stdout);
    assert!(junit.contains("<testsuite") && !junit.contains(['\u{1b}', '\u{7}', '\u{0}']), "{}", text(&output));
}

#[test]
fn a_results_file_from_a_newer_plateau_is_refused_by_report_and_compare() {
    let _machine = shared_lock();
    // Case 10: `results_version: 99` was read as if it were this version's.
    let folder = tempfile::tempdir().unwrap();
    let path = fixture_with_a_name(folder.path(), "large", "results.json");
    let mut results: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    results["results_version"] = Value::from(99);
    let newer = folder.path().join("newer.json");
    std::fs::write(&newer, serde_json::to_string(&results).unwrap()).unwrap();
    let output = plateau().arg("report").arg(&newer).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("results_version 99, and this plateau reads 1: it was written by a newer plateau"),
        "{}",
        text(&output)
    );
    let output = plateau().arg("compare").arg(&path).arg(&newer).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
}

#[test]
fn a_configuration_measured_in_neither_run_is_said_so() {
    let _machine = shared_lock();
    // Case 10: compare said "not measured in one of the runs" of a configuration neither run measured.
    let folder = tempfile::tempdir().unwrap();
    let failed = |file: &str| {
        let path = fixture_with_a_name(folder.path(), "large", file);
        let mut results: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        results["configurations"][3]["status"] = Value::from("failed");
        results["configurations"][3]["metrics"] = Value::Null;
        std::fs::write(&path, serde_json::to_string(&results).unwrap()).unwrap();
        path
    };
    let (base, head) = (failed("base.json"), failed("head.json"));
    let output = plateau().arg("compare").arg(&base).arg(&head).output().unwrap();
    let markdown = String::from_utf8_lossy(&output.stdout);
    assert!(markdown.contains("Not measured in either run."), "{}", text(&output));
    assert!(!markdown.contains("one of the runs"), "{markdown}");
}

#[test]
fn a_results_file_that_cannot_be_written_leaves_no_temporary_file() {
    let _machine = shared_lock();
    // Case 10: a full disk left `results.json.tmp` beside the results.
    let folder = tempfile::tempdir().unwrap();
    let source = fixture_with_a_name(folder.path(), "large", "source.json");
    let out = folder.path().join("out");
    std::fs::create_dir_all(out.join("results.json")).unwrap();
    // `report` writes the reports, not results.json; `run` does. A folder where results.json should be makes the
    // final rename fail the way a full disk makes the write fail.
    let results: plateau::results::Results = plateau::results::Results::load(&source).unwrap();
    let error = plateau::report::write_results(&results, &out).unwrap_err().to_string();
    assert!(error.contains("results.json"), "{error}");
    assert!(!out.join("results.json.tmp").exists(), "the temporary file was left behind");
}

/// A reference job whose payload is `plugin`, with `payload_extra` in `[payload]` (grants, limits); its steps last
/// exactly their duration (these tests are about plugins, not precision).
fn plugin_job(plugin: &Path, payload_extra: &str, steps: u32) -> String {
    format!(
        "version = 1\n[job]\nname = \"plugin\"\n[target]\nkind = \"reference\"\n[payload]\nplugin = \"{}\"\n{payload_extra}\n\
         [traffic]\nmax_step_duration = \"3s\"\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"3s\"\nsteps = {steps}\n\
         [[configurations]]\nname = \"only\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 0.1\n\
         reference = {{ workers = 2, service_time_ms = 5 }}\n",
        plugin.display()
    )
}

#[test]
fn a_plugin_granted_a_folder_reads_it_in_preview_and_in_a_run_without_a_panic() {
    // Case 2: `read_dir` panicked ("Cannot start a runtime from within a runtime"): exit 101 in `payload preview`,
    // and in `run` every worker thread panicked and the run reported 0 requests, not partial.
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("sample.txt"), "sample data").unwrap();
    let probe = common::built_plugins().join("sandbox-probe.wasm");
    let grant = format!("[payload.grant]\nread_dir = \"{}\"", data.display());
    let path = folder.path().join("job.toml");
    std::fs::write(&path, plugin_job(&probe, &grant, 2)).unwrap();

    let output = plateau().args(["payload", "preview"]).arg(&path).args(["--count", "2"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("sample data"), "{}", text(&output));

    let out = folder.path().join("out");
    let output = plateau().arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    let results = common::read_results(&out);
    assert_eq!(results["partial"], false, "{}", text(&output));
    let configuration = &results["configurations"][0];
    assert_eq!(configuration["status"], "complete", "{}", text(&output));
    let completed: u64 =
        configuration["seconds"].as_array().unwrap().iter().map(|s| s["completed"].as_u64().unwrap()).sum();
    assert!(completed > 500, "{completed} requests: {}", text(&output));
    assert!(!text(&output).contains("panicked"), "{}", text(&output));
    // What a failing measuring test prints: the step table with the load generator's own figures.
    let diagnosis = common::diagnosis(&out);
    assert!(diagnosis.contains("only: \"complete\"") && diagnosis.contains("lag p99 ms"), "{diagnosis}");
    assert_eq!(diagnosis.lines().filter(|line| line.trim_start().starts_with(['1', '2'])).count(), 2, "{diagnosis}");
}

#[test]
fn a_plugin_whose_init_never_returns_fails_the_run_at_inits_own_limit_before_any_load() {
    // Case 3: a 12 s plan took 60 s, every step 0 requests and 0 errors, the results said complete, no plugin error
    // was recorded, and the message named the call limit although init's is ten times it.
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let plugin = repository().join("payload-plugins/hostile/init-loop.wat");
    let path = folder.path().join("job.toml");
    std::fs::write(&path, plugin_job(&plugin, "[payload.limits]\ncall_timeout = \"200ms\"", 4)).unwrap();
    let out = folder.path().join("out");
    let started = std::time::Instant::now();
    let output = plateau().arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(elapsed.as_secs_f64() < 6.0, "the run took {elapsed:?}");
    let results = common::read_results(&out);
    let configuration = &results["configurations"][0];
    assert_eq!(configuration["status"], "failed");
    let failure = configuration["failure"].as_str().unwrap();
    assert!(
        failure.contains("init-loop.wat")
            && failure.contains("init ran past init's time limit of 2s (10 × payload.limits.call_timeout)"),
        "{failure}"
    );
    assert_eq!(configuration["seconds"].as_array().map_or(0, Vec::len), 0, "no load was sent");
}

/// Starts `command` quietly, sends it `signal` after `after`, and returns how long it took to exit from then, and
/// its exit code.
#[cfg(unix)]
fn seconds_to_exit_after_signal(
    command: &mut std::process::Command,
    after: std::time::Duration,
    signal: i32,
) -> (f64, Option<i32>) {
    let quiet = || std::process::Stdio::null();
    let mut child = command.stdout(quiet()).stderr(quiet()).spawn().unwrap();
    std::thread::sleep(after);
    let signalled = std::time::Instant::now();
    // SAFETY: signalling a child this test started and still owns.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    (signalled.elapsed().as_secs_f64(), status.code())
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_a_plugin_init_in_progress_within_two_seconds_with_partial_results() {
    // Case 3: Ctrl-C waited 21 s for the plugin's own limit.
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let plugin = repository().join("payload-plugins/hostile/init-loop.wat");
    let path = folder.path().join("job.toml");
    std::fs::write(&path, plugin_job(&plugin, "[payload.limits]\ncall_timeout = \"30s\"", 4)).unwrap();
    let out = folder.path().join("out");
    let mut command = plateau();
    command.arg("run").arg(&path).arg("--out").arg(&out);
    let (took, code) = seconds_to_exit_after_signal(&mut command, std::time::Duration::from_millis(1500), libc::SIGINT);
    assert!(took < 2.0, "Ctrl-C took {took:.1} s");
    assert_eq!(code, Some(2));
    let results = common::read_results(&out);
    assert_eq!(results["partial"], true);
    let failure = results["configurations"][0]["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("was stopped: the run was interrupted"), "{failure}");
}

#[test]
fn include_reads_only_regular_toml_files_inside_the_job_files_folder_and_never_prints_what_they_hold() {
    let _machine = shared_lock();
    // Case 4: `include = ["/proc/self/environ"]` printed the environment, tokens included, in the error snippet; a
    // credentials file printed its keys; `/dev/zero` grew to 2.9 GB.
    let folder = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = "sk-live-0123456789abcdef";
    std::fs::write(outside.path().join("credentials"), format!("[default]\naws_secret_access_key = {secret}\n"))
        .unwrap();
    std::fs::write(folder.path().join("notes.txt"), format!("token: {secret}\nnot toml at all\n")).unwrap();
    std::fs::write(folder.path().join("nested.toml"), "include = [\"other.toml\"]\n").unwrap();
    std::fs::write(folder.path().join("big.toml"), "# padding\n".repeat(200_000)).unwrap();
    std::fs::create_dir(folder.path().join("folder.toml")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("credentials"), folder.path().join("linked.toml")).unwrap();
    let stairs = "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 2";
    let credentials = outside.path().join("credentials");
    let cases = [
        ("/proc/self/environ", "is outside"),
        ("/dev/zero", "is outside"),
        (credentials.to_str().unwrap(), "is outside"),
        ("linked.toml", "is outside"),
        ("notes.txt", "is not TOML (from line 1)"),
        ("nested.toml", "has an `include` of its own"),
        ("big.toml", "is larger than 1024 KiB"),
        ("folder.toml", "is not a regular file"),
    ];
    for (name, expected) in cases {
        let text_of_job = format!("include = [\"{name}\"]\n{}", job(stairs, "inc"));
        let path = folder.path().join("job.toml");
        std::fs::write(&path, text_of_job).unwrap();
        let started = std::time::Instant::now();
        let output = plateau().arg("validate").arg(&path).env("PLATEAU_TEST_TOKEN", secret).output().unwrap();
        let printed = text(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {printed}");
        assert!(printed.contains(expected), "{name}: {printed}");
        assert!(printed.contains("job.toml:1:"), "{name}: the error points at the include: {printed}");
        assert!(!printed.contains(secret) && !printed.contains("PLATEAU_TEST_TOKEN"), "{name} leaked: {printed}");
        assert!(started.elapsed().as_secs() < 5, "{name}: {:?}", started.elapsed());
    }
}

/// A server on 127.0.0.1 that reads requests and answers each with `reply` (or never, for `None`); its port.
fn misbehaving_server(reply: Option<&'static [u8]>) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 {
                        return;
                    }
                    if let Some(reply) = reply
                        && stream.write_all(reply).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn silent_garbage_and_oversize_servers_are_failed_runs_named_by_what_they_did() {
    // Case 5: a silent server and garbage or oversize answers ended with "the load generator fell behind its
    // schedule" (exit 3), and HTTP targets kept no message.
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let cases: [(Option<&'static [u8]>, &str, &str); 3] = [
        (None, "`timeout`", "no response from 127.0.0.1"),
        (Some(b"garbage that is not http\r\n\r\n"), "`other`", "that is not HTTP/1.1"),
        (Some(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nabc"), "`other`", "passed max_response_bytes"),
    ];
    for (reply, class, example) in cases {
        let port = misbehaving_server(reply);
        let path = folder.path().join(format!("{port}.toml"));
        let job = format!(
            "version = 1\n[job]\nname = \"bad\"\n[target]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/invocations\"\n\
             timeout = \"1s\"\n[payload]\nbody = \"{{}}\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"3s\"\n\
             steps = 2\n[[configurations]]\nname = \"only\"\ninstance_type = \"local\"\nprice_per_hour_usd = 0.1\n"
        );
        std::fs::write(&path, job).unwrap();
        let out = folder.path().join(port.to_string());
        let output = plateau().arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
        let printed = text(&output);
        assert_eq!(output.status.code(), Some(2), "{printed}");
        assert!(!printed.contains("fell behind"), "{printed}");
        let configuration = &common::read_results(&out)["configurations"][0];
        assert_eq!(configuration["status"], "failed");
        let failure = configuration["failure"].as_str().unwrap();
        assert!(failure.contains(class) && failure.contains(example), "{failure}");
        assert!(configuration["error_details"][0]["example"].as_str().unwrap().contains(example), "{configuration}");
    }
}

#[test]
fn preview_run_and_validate_check_plugins_alike() {
    // Case 9: `payload preview` showed CRLF header values as valid while `run` refused them without the plugin's
    // name, hash and sequence; `validate` said ok for a file that is not WASM or imports what is not granted.
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let probe = common::built_plugins().join("sandbox-probe.wasm");
    let config = "[payload.config]\nheader = [\"x-a\", \"a\\r\\nInjected: 1\"]";
    let path = folder.path().join("job.toml");
    std::fs::write(&path, plugin_job(&probe, config, 2)).unwrap();
    let refused = "payload plugin `sandbox-probe.wasm` (sha256 ";
    let what = "returned an invalid header value: \"a\\r\\nInjected: 1\"";

    let output = plateau().args(["payload", "preview"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains(refused) && text(&output).contains(what), "{}", text(&output));
    assert!(text(&output).contains("generate for sequence 0 "), "{}", text(&output));

    let out = folder.path().join("out");
    let output = plateau().arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let failure = common::read_results(&out)["configurations"][0]["failure"].as_str().unwrap().to_string();
    // Two users generate at once, so either may be the first refused: the sequence is named, whichever it is.
    assert!(failure.contains(refused) && failure.contains(what), "{failure}");
    assert!(failure.contains("generate for sequence 0 ") || failure.contains("generate for sequence 1 "), "{failure}");

    std::fs::write(folder.path().join("not-wasm.wasm"), "this is not WebAssembly").unwrap();
    let forbidden = repository().join("payload-plugins/hostile/forbidden-import.wat");
    for (plugin, expected) in
        [(folder.path().join("not-wasm.wasm"), "not WebAssembly"), (forbidden, "imports `env::open_socket`")]
    {
        std::fs::write(&path, plugin_job(&plugin, "", 2)).unwrap();
        let (code, printed) = validate(folder.path(), &plugin_job(&plugin, "", 2));
        assert_eq!(code, Some(1), "{printed}");
        assert!(printed.contains("`payload.plugin`") && printed.contains(expected), "{printed}");
    }
}

#[test]
fn validate_reports_every_misspelt_key_and_wrong_type_of_a_file_in_file_order() {
    // Case 7: three misspelt keys gave one error; four errors gave one, not the earliest.
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let text_of_job = "version = 1\n[job]\nname = \"x\"\nsede = 1\n[target]\nkind = \"reference\"\ntimout = \"1s\"\n\
                       [payload]\nbody = \"{}\"\n[traffic.stairs]\nusers_per_step = \"two\"\nstep_duraton = \"2s\"\nsteps = 2\n\
                       [[configurations]]\nname = \"a\"\ninstance_type = \"i\"\nprice_per_hour_usd = 1\n\
                       reference = { workers = 1, service_time_ms = 1, worker = 2 }\n";
    let (code, printed) = validate(folder.path(), text_of_job);
    assert_eq!(code, Some(1), "{printed}");
    let expected = [
        "`job.sede`: unknown key",
        "`target.timout`: unknown key",
        "`traffic.stairs.users_per_step`: invalid type",
        "`traffic.stairs.step_duraton`: unknown key",
        "`configurations[0].reference.worker`: unknown key",
    ];
    let positions: Vec<usize> = expected
        .iter()
        .map(|error| printed.find(error).unwrap_or_else(|| panic!("{error} missing: {printed}")))
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "not in file order: {printed}");
    for hint in ["did you mean `seed`?", "did you mean `timeout`?", "did you mean `step_duration`?"] {
        assert!(printed.contains(hint), "{hint}: {printed}");
    }
}

#[test]
fn messages_name_the_missing_table_the_header_shape_a_finite_price_and_never_rust_types() {
    // Case 8: a missing table was reported at `version` 1:1; `{ envv = ... }` gave "data did not match any variant
    // of untagged enum HeaderValue"; NaN prices "must be 0 or more"; "expected u32" with no hint; a 10,000-digit
    // duration echoed twice.
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let (_, printed) =
        validate(folder.path(), "version = 1\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{}\"\n");
    for table in ["no [job] table", "no [traffic] table", "no [[configurations]] table"] {
        assert!(printed.contains(table), "{table}: {printed}");
    }
    assert!(!printed.contains("`version`"), "{printed}");

    let stairs = "[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 2";
    let header = job(stairs, "h").replace(
        "kind = \"reference\"",
        "kind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { a = { envv = \"X\" } }",
    );
    let header = header.replace("reference = { workers = 1, service_time_ms = 10 }\n", "");
    let (_, printed) = validate(folder.path(), &header);
    assert!(printed.contains("a header value is a string, or { env = \"NAME\" }"), "{printed}");
    assert!(!printed.contains("untagged"), "{printed}");

    let (_, printed) =
        validate(folder.path(), &job(stairs, "p").replace("price_per_hour_usd = 0.1", "price_per_hour_usd = nan"));
    assert!(printed.contains("not nan or inf"), "{printed}");

    let (_, printed) = validate(folder.path(), &job(&stairs.replace("steps = 2", "steps = \"two\""), "t"));
    assert!(printed.contains("expected a whole number") && printed.contains("help: write a whole number"), "{printed}");
    assert!(!printed.contains("u32"), "{printed}");

    let long = job(&stairs.replace("\"2s\"", &format!("\"{}s\"", "9".repeat(10_000))), "l");
    let (code, printed) = validate(folder.path(), &long);
    assert_eq!(code, Some(1));
    assert!(printed.len() < 1_000, "{} characters printed", printed.len());
}

/// A reference job publishing its client metrics to a CloudWatch at `port` on 127.0.0.1, with `timeout` per call.
fn publishing_job(port: u16, timeout: &str, steps: u32) -> String {
    format!(
        "version = 1\n[job]\nname = \"cw\"\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{{}}\"\n\
         [traffic]\nmax_step_duration = \"2s\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = {steps}\n\
         [cloudwatch]\npublish = true\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{port}\"\ntimeout = \"{timeout}\"\n\
         [[configurations]]\nname = \"only\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 0.1\n\
         reference = {{ workers = 1, service_time_ms = 5 }}\n"
    )
}

fn with_fake_credentials(command: &mut std::process::Command) -> &mut std::process::Command {
    command.env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing").env("AWS_REGION", "us-east-1")
}

#[cfg(unix)]
#[test]
fn a_cloudwatch_that_never_answers_costs_its_timeout_and_sigterm_ends_the_run_at_once() {
    // Case 12: a CloudWatch that never answered added 60 s per configuration (not configurable), SIGTERM waited
    // 55 s, and an error without an AWS code read "unhandled error (Unknown)".
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let silent = misbehaving_server(None);
    let path = folder.path().join("silent.toml");
    std::fs::write(&path, publishing_job(silent, "2s", 2)).unwrap();
    let out = folder.path().join("silent");
    let started = std::time::Instant::now();
    let output = with_fake_credentials(&mut plateau()).arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    let took = started.elapsed().as_secs_f64();
    let cloudwatch = &common::read_results(&out)["configurations"][0]["cloudwatch"];
    assert!(cloudwatch["failed_calls"].as_u64().unwrap() >= 1, "{cloudwatch} {}", text(&output));
    // A 4 s ramp, then at most the call in flight and the last one, 2 s each: not a minute.
    assert!(took < 10.0, "the run took {took:.1} s: {}", text(&output));

    // The SDK retries a 502 twice, after up to 1 s and then up to 2 s (jittered): a timeout of 2 s sometimes ended
    // the retries first and was reported instead; 10 s always lets the last 502 be the error.
    let gateway = misbehaving_server(Some(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"));
    std::fs::write(&path, publishing_job(gateway, "10s", 1)).unwrap();
    let out = folder.path().join("gateway");
    let output = with_fake_credentials(&mut plateau()).arg("run").arg(&path).arg("--out").arg(&out).output().unwrap();
    let last_error = common::read_results(&out)["configurations"][0]["cloudwatch"]["last_error"].to_string();
    assert!(last_error.contains("HTTP 502") || last_error.contains("502"), "{last_error} {}", text(&output));
    assert!(!last_error.contains("(Unknown)"), "{last_error}");

    std::fs::write(&path, publishing_job(silent, "30s", 30)).unwrap();
    let out = folder.path().join("sigterm");
    let mut command = plateau();
    with_fake_credentials(&mut command).arg("run").arg(&path).arg("--out").arg(&out);
    let (took, _) = seconds_to_exit_after_signal(&mut command, std::time::Duration::from_secs(4), libc::SIGTERM);
    assert!(took < 2.5, "SIGTERM took {took:.1} s");
    let results = common::read_results(&out);
    assert_eq!(results["partial"], true);
    let last_error = results["configurations"][0]["cloudwatch"]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("abandoned: the run was interrupted"), "{last_error}");
}

#[cfg(unix)]
#[test]
fn a_run_killed_mid_way_resumes_keeping_what_it_completed() {
    // "kill -9 mid-run, then --resume: finished configurations are not re-run, and the final results equal an
    // uninterrupted run's configuration list."
    let _load = common::load_lock();
    let folder = tempfile::tempdir().unwrap();
    let configurations: String = [("a", 1), ("b", 2), ("c", 4)]
        .map(|(name, workers)| {
            format!(
                "[[configurations]]\nname = \"{name}\"\ninstance_type = \"ref\"\nprice_per_hour_usd = 0.1\n\
                 reference = {{ workers = {workers}, service_time_ms = 10 }}\n"
            )
        })
        .concat();
    let text_of_job = format!(
        "version = 1\n[job]\nname = \"resume\"\n[target]\nkind = \"reference\"\n[payload]\nbody = \"{{}}\"\n\
         [traffic]\nmax_step_duration = \"2s\"\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"2s\"\nsteps = 3\n\
         {configurations}"
    );
    let path = folder.path().join("job.toml");
    std::fs::write(&path, &text_of_job).unwrap();
    let out = folder.path().join("out");
    let quiet = || std::process::Stdio::null();
    let mut child =
        plateau().arg("run").arg(&path).arg("--out").arg(&out).stdout(quiet()).stderr(quiet()).spawn().unwrap();
    // Killed (no chance to write anything) once the first configuration is saved.
    let saved = |count: usize| {
        std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .filter(|results| results["configurations"].as_array().is_some_and(|done| done.len() >= count))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let before = loop {
        if let Some(results) = saved(1) {
            break results;
        }
        assert!(std::time::Instant::now() < deadline, "no configuration was saved");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: signalling a child this test started and still owns.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let before = saved(1).unwrap_or(before);
    let completed_before = before["configurations"].as_array().unwrap().len();
    assert!(completed_before < 3, "the kill came too late to test anything");

    let output = plateau().arg("run").arg("--resume").arg(&out).current_dir(folder.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("kept, as the interrupted run completed it"), "{}", text(&output));
    let after = common::read_results(&out);
    assert_eq!(after["partial"], false);
    let names = |results: &Value| -> Vec<String> {
        results["configurations"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&after), ["a", "b", "c"], "the configuration list of an uninterrupted run");
    for index in 0..completed_before {
        assert_eq!(after["configurations"][index], before["configurations"][index], "a kept run was re-run");
    }
    assert_eq!(after["manifest"]["started_at"], before["manifest"]["started_at"]);
    assert_eq!(after["manifest"]["resumed"]["kept"].as_array().unwrap().len(), completed_before);

    // A changed job file is refused, not mixed with the old one's results.
    std::fs::write(&path, text_of_job.replace("steps = 3", "steps = 4")).unwrap();
    let output = plateau().arg("run").arg("--resume").arg(&out).current_dir(folder.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("changed since the run started"), "{}", text(&output));
}

#[cfg(unix)]
#[test]
fn ctrl_c_while_a_command_target_starts_ends_the_run_within_two_seconds() {
    // "Ctrl-C or SIGTERM ends any run, including ... server start-up, within 2 s, and writes partial results."
    let _machine = shared_lock();
    let folder = tempfile::tempdir().unwrap();
    let text_of_job = "version = 1\n[job]\nname = \"slow-start\"\n[target]\nkind = \"command\"\n\
                       command = [\"sh\", \"-c\", \"sleep 60 # {port}\"]\nreadiness = { timeout = \"60s\" }\nstop_grace = \"30s\"\n\
                       [payload]\nbody = \"{}\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 2\n\
                       [[configurations]]\nname = \"only\"\ninstance_type = \"local\"\nprice_per_hour_usd = 0.1\n";
    let path = folder.path().join("job.toml");
    std::fs::write(&path, text_of_job).unwrap();
    let out = folder.path().join("out");
    let mut command = plateau();
    command.arg("run").arg(&path).arg("--out").arg(&out);
    let (took, code) = seconds_to_exit_after_signal(&mut command, std::time::Duration::from_millis(1500), libc::SIGINT);
    assert!(took < 2.0, "Ctrl-C during start-up took {took:.1} s");
    assert_eq!(code, Some(2));
    let results = common::read_results(&out);
    assert_eq!(results["partial"], true);
    let failure = results["configurations"][0]["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("interrupted while the server started"), "{failure}");
}
