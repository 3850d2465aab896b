//! Helpers shared by the integration tests. Each test binary uses some of them.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Once, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

/// The machine. A load-generating test holds it alone (`load_lock`); every other test of a binary that has one
/// shares it (`shared_lock`), so nothing runs beside a measurement on this 2-core machine. Test binaries run one
/// after another, so no test of another binary does either. `tests/architecture.rs` checks every test takes one.
static MACHINE: RwLock<()> = RwLock::new(());

pub fn load_lock() -> LoadGuard {
    let machine = MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    LoadGuard { _machine: machine, held_since: std::time::Instant::now() }
}

/// The machine held by one load-generating test. When it is released, the time held goes to the real stderr (not
/// the captured output libtest shows only for failures): a line per test, `held the machine 47.2 s: name`, which
/// is where a test binary's time goes and what CI's 40-minute budget is spent on.
pub struct LoadGuard {
    _machine: RwLockWriteGuard<'static, ()>,
    held_since: std::time::Instant,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let held_s = self.held_since.elapsed().as_secs_f64();
        let _ = writeln!(std::io::stderr(), "held the machine {held_s:.1} s: {name}");
    }
}

pub fn shared_lock() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary under test, never reaching for the instance-metadata address nor recording in the user's history
/// (a test that checks the history names its own file).
pub fn plateau() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plateau"));
    command.env("AWS_EC2_METADATA_DISABLED", "true").env("PLATEAU_HISTORY", "off");
    command
}

/// `plateau run JOB --out OUT` started in the background, its output kept for when it is waited on.
pub fn spawn_run(job: &Path, out: &Path) -> std::process::Child {
    plateau()
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

thread_local! {
    /// The output folders this test read results from: diagnosed if it fails.
    static READ: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// A run's results. If the test then fails, the panic also prints the run's own diagnosis (`diagnosis`).
pub fn read_results(out: &Path) -> Value {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            READ.with_borrow(|read| read.iter().for_each(|out| eprintln!("{}", diagnosis(out))));
        }));
    });
    READ.with_borrow_mut(|read| read.push(out.to_path_buf()));
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// What a failed measuring test needs to be told from a starved machine: every step's load, throughput and
/// interval, whether it converged, why it is invalid, the load generator's lag and CPU, errors; and the machine's
/// load average now.
pub fn diagnosis(out: &Path) -> String {
    let Some(results) = std::fs::read_to_string(out.join("results.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    else {
        return format!("diagnosis: no results in {}", out.display());
    };
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut lines = vec![format!(
        "diagnosis of {} (partial: {}; machine load average now: {})",
        out.display(),
        results["partial"],
        load_average.trim()
    )];
    let runs =
        results["trial_runs"].as_array().filter(|runs| !runs.is_empty()).or(results["configurations"].as_array());
    for run in runs.into_iter().flatten() {
        lines.push(format!(
            "  {}{}: {}, ended {}, MaxInvocations {}",
            run["name"].as_str().unwrap_or("?"),
            run["trial"].as_u64().map(|trial| format!(" (trial {trial})")).unwrap_or_default(),
            run["status"],
            run["end"]["kind"],
            run["metrics"]["max_invocations"]
        ));
        lines.push(
            "    step     load  throughput/s  ±95%      converged  invalid              lag p99 ms  gen CPU %  errors"
                .into(),
        );
        for step in run["steps"].as_array().into_iter().flatten() {
            let interval = &step["throughput_interval_rps"];
            let half = (interval["high"].as_f64().unwrap_or(0.0) - interval["low"].as_f64().unwrap_or(0.0)) / 2.0;
            let errors: u64 =
                step["errors"].as_object().map_or(0, |errors| errors.values().filter_map(Value::as_u64).sum());
            lines.push(format!(
                "    {:>4} {:>8} {:>13.1} {:>6.1}   {:<9}  {:<20} {:>10.2} {:>10} {:>7}",
                step["index"].as_u64().unwrap_or(0) + 1,
                step["load"].as_f64().unwrap_or(0.0),
                step["throughput_rps"].as_f64().unwrap_or(0.0),
                half,
                step["converged"].as_bool().unwrap_or(false),
                step["invalid"]["kind"].as_str().unwrap_or("-"),
                step["generator_lag_p99_ms"].as_f64().unwrap_or(0.0),
                step["generator_cpu_percent"].as_f64().map_or("-".into(), |cpu| format!("{cpu:.0}")),
                errors
            ));
        }
    }
    lines.join("\n")
}

pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds the example plugins from source (payload-plugins/build.sh, incremental) once per test binary, and
/// returns the folder they are in. A missing toolchain fails the test: plugins are never skipped.
pub fn built_plugins() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let script = repository().join("payload-plugins/build.sh");
            let output = std::process::Command::new("bash").arg(&script).output().unwrap();
            assert!(
                output.status.success(),
                "{} failed:\n{}{}",
                script.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            repository().join("payload-plugins/build")
        })
        .clone()
}

/// A command's output for an assertion message.
pub fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// moto's server mode on a free loopback port, stopped when dropped.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Self {
        let server = repository().join(".venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: tests/run.sh creates it (python3 -m venv .venv && .venv/bin/pip install 'moto[server]')",
            server.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
