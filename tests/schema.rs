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
