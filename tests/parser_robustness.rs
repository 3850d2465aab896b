//! The job-file parser never panics: 100,000 job files made by mutating the real ones (every scenario and every
//! golden invalid file) are parsed, validated and, when invalid, rendered as the user would see them. Seeded, so a
//! failure names the case that reproduces it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

mod common;
use common::repository;

const CASES: usize = 100_000;

/// Fragments a mutation may insert: keys, table headers, values of every TOML type, and edge cases.
const FRAGMENTS: &[&str] = &[
    "\n[[configurations]]\n",
    "\n[traffic.stairs]\n",
    "\n[[traffic.phases]]\n",
    "\n[payload]\n",
    "\n[target]\n",
    "\n[stopping]\n",
    "\n[[stopping.latency_thresholds]]\n",
    "\n[requirements]\n",
    "\n[plateau]\n",
    "\n[cloudwatch]\n",
    "\n[payload.config]\n",
    "\n[payload.limits]\n",
    "\n[payload.grant]\n",
    "\n[target.tls]\n",
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ",",
    "#",
    "\n",
    " = ",
    "version = 2",
    "version = 1",
    "users_per_step = 0",
    "steps = -1",
    "step_duration = \"0s\"",
    "duration = \"1h\"",
    "latency_ms = 1e309",
    "percentile = \"p100\"",
    "percentile = \"p99.99\"",
    "= nan",
    "= inf",
    "= -inf",
    "= 18446744073709551616",
    "= -9223372036854775809",
    "= 0",
    "= 1.5",
    "= true",
    "= []",
    "= {}",
    "= [[], [1, \"a\"]]",
    "= 1979-05-27T07:32:00Z",
    "kind = \"sagemaker\"",
    "kind = \"command\"",
    "kind = \"http\"",
    "kind = \"reference\"",
    "url = \"https://\"",
    "url = \"http://[::1]:0/\"",
    "instance_type = \"ml.\"",
    "endpoint_name = \"-\"",
    "environment = { A = [] }",
    "cpus = \"9-0\"",
    "reference = { workers = 0, service_time_ms = -1 }",
    "think_time = \"1.5ms\"",
    "rate_per_s = 0",
    "warmup = \"-1s\"",
    "plugin = \"\"",
    "\u{feff}",
    "é",
    "\u{0}",
    "\t",
    "\r\n",
    "😀",
    "\\u0000",
    "include = [\"x\"]",
];

fn corpus() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for folder in ["scenarios", "tests/golden"] {
        for entry in std::fs::read_dir(repository().join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                files.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A char boundary at or before `index`.
fn boundary(text: &str, index: usize) -> usize {
    text.floor_char_boundary(index.min(text.len()))
}

fn mutate(rng: &mut StdRng, text: &str, other: &str) -> String {
    let mut text = text.to_string();
    for _ in 0..rng.random_range(1..=4) {
        let at = boundary(&text, rng.random_range(0..=text.len()));
        match rng.random_range(0..7) {
            0 => {
                let end = boundary(&text, at + rng.random_range(0..40));
                text.replace_range(at..end.max(at), "");
            }
            1 => text.insert_str(at, FRAGMENTS[rng.random_range(0..FRAGMENTS.len())]),
            2 => text.truncate(at),
            3 => {
                // Swap two lines.
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.random_range(0..lines.len()), rng.random_range(0..lines.len()));
                    lines.swap(a, b);
                }
                text = lines.join("\n");
            }
            4 => {
                // Splice in a piece of another file.
                let start = boundary(other, rng.random_range(0..=other.len()));
                let end = boundary(other, start + rng.random_range(0..200));
                text.insert_str(at, &other[start..end.max(start)]);
            }
            5 => {
                // Replace a digit, to reach numeric edges.
                if let Some(position) = text[at..].find(|c: char| c.is_ascii_digit()) {
                    let digit = at + position;
                    let replacement = ["0", "9999999999999999999999", "-1", "0.0000001", "1e3"][rng.random_range(0..5)];
                    text.replace_range(digit..digit + 1, replacement);
                }
            }
            _ => {
                // Duplicate a line (duplicate keys and tables).
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[rng.random_range(0..lines.len())].to_string();
                    text.insert_str(at, &format!("\n{line}\n"));
                }
            }
        }
    }
    text
}

#[test]
fn a_hundred_thousand_mutated_job_files_never_panic_the_parser() {
    let corpus = corpus();
    assert!(corpus.len() >= 30, "{} files to mutate", corpus.len());
    let mut rng = StdRng::seed_from_u64(0x0070_6c61_7465_6175);
    let (mut parsed, mut valid, mut panics) = (0usize, 0usize, Vec::new());
    // A path in the scenarios folder, so relative paths in the files resolve as they would there.
    let path = repository().join("scenarios").join("mutated.toml");
    for case in 0..CASES {
        let (_, text) = &corpus[rng.random_range(0..corpus.len())];
        let (_, other) = &corpus[rng.random_range(0..corpus.len())];
        let mutated = mutate(&mut rng, text, other);
        let outcome = catch_unwind(AssertUnwindSafe(|| match plateau::spec::parse(&path, &mutated) {
            Ok(job) => {
                let _ = plateau::plan::plan(&job);
                true
            }
            Err(error) => {
                // Rendering points into the text at the error's span: it must not panic either.
                assert!(!error.to_string().is_empty());
                false
            }
        }));
        parsed += 1;
        match outcome {
            Ok(true) => valid += 1,
            Ok(false) => {}
            Err(_) => panics.push(case),
        }
    }
    assert_eq!(parsed, CASES);
    assert!(
        panics.is_empty(),
        "the parser panicked on cases {:?} (seeded; rerun to reproduce)",
        &panics[..panics.len().min(10)]
    );
    // Mutations keep some files valid; if none were, the mutations would test only the first error path.
    assert!(valid > 1_000 && valid < CASES / 2, "{valid} of {CASES} mutated files were valid");
    eprintln!("{CASES} mutated job files parsed, {valid} valid, no panic");
}
