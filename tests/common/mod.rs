//! Helpers shared by the integration tests. Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

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
