//! Helpers shared by the integration tests. Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::Value;

/// Held by every load-generating test, so only one runs at a time on a 2-core machine.
static LOAD: Mutex<()> = Mutex::new(());

pub fn load_lock() -> MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary under test, never reaching for the instance-metadata address.
pub fn plateau() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plateau"));
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

pub fn read_results(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
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
