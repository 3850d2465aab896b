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

/// Every document of a YAML file, read by PyYAML (from the virtual environment tests/run.sh creates).
fn yaml_documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    let python = repository().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: tests/run.sh creates it", python.display());
    let output = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_kubernetes_manifests_carry_what_an_indexed_job_and_the_merge_need() {
    let folder = repository().join("deploy/kubernetes");
    let mut documents: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "yaml") {
            documents.extend(yaml_documents(&path));
        }
    }
    let find = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {}", folder.display()))
            .clone()
    };
    let (config_map, volume) = (find("ConfigMap", "plateau-job"), find("PersistentVolumeClaim", "plateau-results"));
    assert_eq!(volume["spec"]["accessModes"][0], "ReadWriteMany", "every shard's pod mounts the results at once");
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    let image_user = dockerfile.lines().rev().find_map(|line| line.strip_prefix("USER ")).unwrap();
    let image_uid: u64 = image_user.split(':').next().unwrap().trim().parse().unwrap();

    // What every pod of both Jobs shares: the job file at one path, the results volume, a non-root user.
    let pod_of = |job: &serde_json::Value| {
        assert_eq!(job["apiVersion"], "batch/v1");
        let pod = job["spec"]["template"]["spec"].clone();
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(image_uid), "the image's own user");
        let container = pod["containers"][0].clone();
        let mounts: Vec<(String, String)> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mount| {
                (mount["name"].as_str().unwrap().to_string(), mount["mountPath"].as_str().unwrap().to_string())
            })
            .collect();
        for volume in pod["volumes"].as_array().unwrap() {
            if let Some(name) = volume["configMap"]["name"].as_str() {
                assert_eq!(name, "plateau-job");
            }
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                assert_eq!(claim, "plateau-results");
            }
        }
        assert!(
            mounts.contains(&("job".into(), "/job".into())) && mounts.contains(&("results".into(), "/results".into()))
        );
        let args: Vec<String> =
            container["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().to_string()).collect();
        (container, args)
    };

    let shards = find("Job", "plateau-shards");
    let spec = &shards["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let (container, args) = pod_of(&shards);
    let env = |name: &str| {
        container["env"].as_array().unwrap().iter().find(|var| var["name"] == name).map(|var| var["value"].clone())
    };
    let count: u64 = env("PLATEAU_SEGMENTS").unwrap().as_str().unwrap().parse().unwrap();
    assert_eq!((spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some(count), Some(count)));
    assert_eq!(spec["backoffLimit"], 0, "a shard rerun late would not load the target with the others");
    assert!(env("PLATEAU_START_AT").is_some(), "the shards start together");
    assert_eq!(&args[..2], ["run", "/job/job.toml"]);
    let out = &args[args.iter().position(|arg| arg == "--out").unwrap() + 1];
    assert_eq!(out, "/results/shard-{shard}");

    // The merge lists every shard's folder, in the volume the shards wrote to.
    let (_, args) = pod_of(&find("Job", "plateau-merge"));
    assert_eq!(args[0], "merge");
    let folders: Vec<&String> = args[1..].iter().take_while(|arg| !arg.starts_with("--")).collect();
    let expected: Vec<String> = (0..count).map(|index| out.replace("{shard}", &index.to_string())).collect();
    assert_eq!(folders, expected.iter().collect::<Vec<_>>());

    // The job file the ConfigMap carries is valid, and a job shards can run: a target they all send to, a fixed ramp.
    let job_text = config_map["data"]["job.toml"].as_str().unwrap();
    let temporary = tempfile::tempdir().unwrap();
    let job = temporary.path().join("job.toml");
    std::fs::write(&job, job_text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_plateau")).arg("validate").arg(&job).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(job_text.contains("kind = \"http\"") && job_text.contains("[traffic.stairs]"), "{job_text}");
}
