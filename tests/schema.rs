//! The job file's JSON Schema: `plateau schema` matches the copy kept in docs/ (UPDATE_SNAPSHOTS=1 rewrites it), and
//! an independent validator (Python's jsonschema, from the virtual environment tests/run.sh creates) accepts every
//! scenario and rejects a file with a misspelt table, as editors using the schema will.

use std::process::Command;

mod common;
use common::repository;

#[test]
fn the_schema_in_docs_is_up_to_date() {
    let output = Command::new(env!("CARGO_BIN_EXE_plateau")).arg("schema").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let kept_path = repository().join("docs/job-file.schema.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&kept_path, &generated).unwrap();
    }
    let kept = std::fs::read_to_string(&kept_path).unwrap_or_default();
    assert!(
        kept == generated,
        "docs/job-file.schema.json is out of date: run `plateau schema > docs/job-file.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let properties = schema["properties"].as_object().unwrap();
    for table in
        ["version", "job", "target", "payload", "traffic", "stopping", "requirements", "configurations", "cloudwatch"]
    {
        assert!(properties.contains_key(table), "no `{table}` in the schema");
    }
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["$id"].as_str().is_some_and(|id| id.ends_with("/docs/job-file.schema.json")), "{}", schema["$id"]);
    // Every key an editor offers has a description to show, its own or its type's.
    let definitions = schema["$defs"].as_object().unwrap();
    let mut undescribed = Vec::new();
    let mut tables = vec![("".to_string(), &schema)];
    tables.extend(definitions.iter().map(|(name, definition)| (format!("{name}."), definition)));
    for (prefix, table) in tables {
        for (key, property) in table["properties"].as_object().into_iter().flatten() {
            let referenced = property["$ref"]
                .as_str()
                .or_else(|| property["items"]["$ref"].as_str())
                .and_then(|reference| definitions.get(reference.rsplit('/').next().unwrap()));
            if property.get("description").is_none() && referenced.is_none_or(|def| def.get("description").is_none()) {
                undescribed.push(format!("{prefix}{key}"));
            }
        }
    }
    assert!(undescribed.is_empty(), "keys without a description: {undescribed:?}");
}

#[test]
fn an_independent_validator_accepts_every_scenario_and_rejects_a_typo() {
    let python = repository().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: tests/run.sh creates it", python.display());
    let script = r#"
import glob, json, sys, tomllib
import jsonschema
schema = json.load(open("docs/job-file.schema.json"))
validator = jsonschema.Draft202012Validator(schema)
for path in sorted(glob.glob("scenarios/*.toml")):
    errors = [error.message for error in validator.iter_errors(tomllib.load(open(path, "rb")))]
    print(path, "valid" if not errors else "invalid: " + "; ".join(errors))
typo = tomllib.load(open("tests/golden/unknown_top_level_table.toml", "rb"))
print("typo", "valid" if validator.is_valid(typo) else "invalid")
"#;
    let output = Command::new(python).arg("-c").arg(script).current_dir(repository()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let scenarios = std::fs::read_dir(repository().join("scenarios"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|extension| extension == "toml"))
        .count();
    assert_eq!(stdout.matches(" valid\n").count(), scenarios, "{stdout}");
    assert!(stdout.contains("typo invalid"), "{stdout}");
}

/// `plateau SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_plateau")).args([subcommand, "--help"]).output().unwrap();
    assert!(output.status.success(), "plateau {subcommand} --help");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_github_action_and_the_container_build_file_are_well_formed() {
    // action.yml, read by a YAML parser (PyYAML, in the virtual environment tests/run.sh creates).
    let python = repository().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: tests/run.sh creates it", python.display());
    let output = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open('action.yml'))))"])
        .current_dir(repository())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let action: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(action["runs"]["using"], "composite");
    for (name, input) in action["inputs"].as_object().unwrap() {
        assert!(input["description"].is_string(), "input `{name}` has no description");
    }
    assert_eq!(action["inputs"]["job"]["required"], true);
    let steps = action["runs"]["steps"].as_array().unwrap();
    for step in steps {
        // A composite action's `run` step must name its shell, or the action fails to load.
        if step.get("run").is_some() {
            assert!(step["shell"].is_string(), "a run step without a shell: {step}");
        }
    }
    // Every plateau flag the steps use exists.
    let scripts: Vec<&str> = steps.iter().filter_map(|step| step["run"].as_str()).collect();
    let mut checked = 0;
    for script in &scripts {
        for invocation in script.split("plateau/bin/plateau\"").skip(1) {
            // The command, its continued lines joined, up to a redirection.
            let joined = invocation.replace("\\\n", " ");
            let words: Vec<&str> = joined.lines().next().unwrap().split_whitespace().collect();
            let subcommand = words[0];
            let usage = help(subcommand);
            for flag in words.iter().take_while(|word| **word != ">").filter(|word| word.starts_with("--")) {
                assert!(
                    usage.contains(flag),
                    "action.yml passes {flag} to `plateau {subcommand}`, which has no such flag"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} flags checked in {scripts:?}");

    // The container build file: multi-stage, pinned images, the binary run by an unprivileged user.
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    let images: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .map(|from| from.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(images.len(), 2, "a build stage and a runtime stage: {images:?}");
    for image in &images {
        assert!(image.contains(':') && !image.ends_with(":latest"), "{image} is not pinned to a tag");
    }
    let user = dockerfile.lines().rev().find_map(|line| line.strip_prefix("USER ")).expect("a USER line");
    assert!(!["root", "0", "0:0"].contains(&user.trim()), "the image runs as {user}");
    assert!(dockerfile.contains("COPY --from=build /src/target/release/plateau /usr/local/bin/plateau"));
    let ignored = std::fs::read_to_string(repository().join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|line| line == "target"), "the build context would carry target/");
}
