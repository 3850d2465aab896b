//! Every invalid job file under tests/golden is rejected by `plateau validate` with exit code 1 and exactly the
//! message kept beside it in a `.err` file: the text users see is pinned. UPDATE_SNAPSHOTS=1 rewrites the `.err`
//! files after an intended change; review the diff.

use std::path::Path;
use std::process::Command;

#[test]
fn invalid_job_files_get_their_exact_messages() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "{} golden cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_plateau"))
            .arg("validate")
            .arg(name)
            .current_dir(&folder)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{name} must be rejected");
        let message = String::from_utf8(output.stderr).unwrap();
        let expected_path = case.with_extension("err");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&expected_path, &message).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != message {
            mismatches.push(format!("--- {name}: expected\n{expected}--- got\n{message}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
