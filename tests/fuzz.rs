//! CI's fuzzing budget. The fuzz targets' bodies (fuzz/src/lib.rs) run on every input of their corpus (what
//! libFuzzer kept in `benches/fuzz.sh` runs, plus the seeds, scenarios and golden files it starts from), then on
//! seeded mutations of it, built with the same dictionaries libFuzzer uses. No nightly toolchain and no
//! instrumented build here: coverage guidance is the longer script's; this replays what it found and goes on
//! around it, within about a minute. A failing input is saved under `target/fuzz-failures/` to reproduce with
//! `cargo +nightly fuzz run <target> <file>`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

mod common;
use common::repository;

#[path = "../fuzz/src/lib.rs"]
mod targets;

/// Mutated inputs per target: sized so that the five, side by side, take about twenty seconds on this 2-core machine
/// (CI replays and samples; `benches/fuzz.sh` is where the targets fuzz for long).
fn mutations(target: &str) -> usize {
    match target {
        "job_file" => 60_000,
        "results_file" => 40_000,
        "http_response" => 400_000,
        "token_stream" => 300_000,
        _ => 600,
    }
}

/// A target's inputs: its handwritten seeds (`fuzz/seeds/<target>`), for job files every scenario and golden file,
/// and what libFuzzer found (`fuzz/corpus/<target>.tar.gz`); `benches/fuzz.sh` starts from the same.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut folders = vec![repository().join("fuzz/seeds").join(target)];
    if target == "job_file" {
        folders.extend([repository().join("scenarios"), repository().join("tests/golden")]);
    }
    let mut files = Vec::new();
    for folder in folders {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file()
                && (folder.ends_with(target) || path.extension().is_some_and(|extension| extension == "toml"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut inputs: Vec<Vec<u8>> = files.iter().map(|path| std::fs::read(path).unwrap()).collect();
    let found = std::fs::File::open(repository().join("fuzz/corpus").join(format!("{target}.tar.gz"))).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(found));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut input).unwrap();
            inputs.push(input);
        }
    }
    inputs
}

/// libFuzzer's dictionary format: one `"token"` per line, with `\\`, `\"` and `\xNN` escapes; `#` starts a comment.
fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let path = repository().join("fuzz/dict").join(format!("{target}.dict"));
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| line.starts_with('"')) {
        let quoted = line.strip_prefix('"').and_then(|line| line.strip_suffix('"')).unwrap();
        let (mut token, mut bytes) = (Vec::new(), quoted.bytes());
        while let Some(byte) = bytes.next() {
            match (byte, byte == b'\\') {
                (_, false) => token.push(byte),
                (_, true) => match bytes.next().unwrap() {
                    b'x' => {
                        let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
                        token.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                    }
                    escaped => token.push(escaped),
                },
            }
        }
        tokens.push(token);
    }
    tokens
}

/// One to four of libFuzzer's kinds of mutation: change, insert, delete, duplicate, splice another input, insert a
/// dictionary token.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8], tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=bytes.len());
        let span = rng.random_range(1..=64).min(bytes.len() - at);
        match rng.random_range(0..6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => {
                let random: Vec<u8> = (0..rng.random_range(1..=8)).map(|_| rng.random()).collect();
                bytes.splice(at..at, random);
            }
            2 => {
                bytes.drain(at..at + span);
            }
            3 => {
                let copied = bytes[at..at + span].to_vec();
                let to = rng.random_range(0..=bytes.len());
                bytes.splice(to..to, copied);
            }
            4 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let until = (from + rng.random_range(1..=256)).min(other.len());
                bytes.splice(at..at, other[from..until].iter().copied());
            }
            _ if !tokens.is_empty() => {
                let token = &tokens[rng.random_range(0..tokens.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

/// Runs `target` on `input`: whether it got past the first check, or the saved file that reproduces its panic.
fn attempt(name: &str, target: fn(&[u8]) -> bool, input: &[u8], case: usize) -> Result<bool, PathBuf> {
    catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|_| {
        let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-failures");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("{name}-{case}"));
        std::fs::write(&path, input).unwrap();
        path
    })
}

/// Fuzzes one target: its corpus, then its seeded mutations. The inputs that panicked, saved to reproduce.
fn fuzz(name: &str, target: fn(&[u8]) -> bool) -> Vec<PathBuf> {
    let started = Instant::now();
    let corpus = corpus(name);
    let tokens = dictionary(name);
    assert!(!corpus.is_empty(), "no corpus for {name}");
    let mut rng = StdRng::seed_from_u64(0x00f0_2201);
    let mut failures = Vec::new();
    let mut corpus_deep = 0;
    for (case, input) in corpus.iter().enumerate() {
        match attempt(name, target, input, case) {
            Ok(deep) => corpus_deep += usize::from(deep),
            Err(saved) => failures.push(saved),
        }
    }
    let mut mutated_deep = 0;
    for case in 0..mutations(name) {
        let input = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())];
        let mutated = mutate(&mut rng, input, other, &tokens);
        match attempt(name, target, &mutated, corpus.len() + case) {
            Ok(deep) => mutated_deep += usize::from(deep),
            Err(saved) => failures.push(saved),
        }
    }
    eprintln!(
        "{name}: {} corpus inputs ({corpus_deep} past the first check) and {} mutations ({mutated_deep}) in {:.1} s",
        corpus.len(),
        mutations(name),
        started.elapsed().as_secs_f64()
    );
    // A corpus that no longer gets past the first check (a results version bump, a renamed key) fuzzes nothing.
    assert!(corpus_deep > 0 && mutated_deep > 0, "{name}: no input got past the first check");
    failures
}

#[test]
fn the_fuzz_targets_find_no_panic_on_their_corpus_and_seeded_mutations_of_it() {
    // SAFETY: this binary's only test, and it starts no thread before this.
    unsafe { targets::without_plugin_cache() };
    // The targets share nothing and no other test binary runs beside this one: one thread each, so both cores work.
    let failures: Vec<PathBuf> = std::thread::scope(|scope| {
        let threads: Vec<_> =
            targets::TARGETS.iter().map(|(name, target)| scope.spawn(move || fuzz(name, *target))).collect();
        threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "inputs that panicked, saved to reproduce: {failures:#?}");
}
