//! Keeps the layout of `runner/src` what docs/architecture.md says it is: every `use crate::` (and every inline
//! `crate::` or `super::` path) points down the documented order of stages, and the files of one module import
//! each other without a cycle. The order is read from the document's `layers` block, so the two cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate, e.g. `["spec", "target"]` for `runner/src/spec/target.rs`.
type ModulePath = Vec<String>;

/// One import found in one file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    file: String,
    line: usize,
    from: ModulePath,
    to: ModulePath,
}

/// The `layers` block: one line per layer, lowest first.
fn layers(document: &str) -> Vec<Vec<String>> {
    let block = document.split("```layers\n").nth(1).expect("docs/architecture.md has a ```layers block");
    let block = block.split("```").next().expect("the layers block is closed");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(String::from).collect())
        .collect()
}

fn module_path(relative: &Path) -> ModulePath {
    let mut parts: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file name");
    match file.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The paths a line of code names: `crate::a::b`, `super::a`, `use crate::{a, b::c}`; each `super` is the module
/// above (a file's folder module, or for a `mod.rs` the module above its folder).
fn paths_in(code: &str, here: &ModulePath) -> Vec<ModulePath> {
    let mut found = Vec::new();
    for (start, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        // `crate::` inside a longer word (`mycrate::`), or the second `super::` of `super::super::`, is no start.
        let before = &code[..start];
        if before.chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') || before.ends_with("super::") {
            continue;
        }
        let (mut base, mut rest) = (Vec::new(), &code[start..]);
        if let Some(after) = rest.strip_prefix("crate::") {
            rest = after;
        } else {
            base = here.clone();
            while let Some(after) = rest.strip_prefix("super::") {
                base.pop();
                rest = after;
            }
        }
        found.extend(segments(rest).into_iter().map(|tail| [base.clone(), tail].concat()));
    }
    found
}

/// The module segments a path names after its `crate::` or `super::`: every identifier that is followed by `::`
/// (the last one is an item, not a module), or the members of a `{...}` group.
fn segments(tail: &str) -> Vec<Vec<String>> {
    if let Some(group) = tail.strip_prefix('{') {
        let mut depth = 0;
        let end = group
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => return true,
                    '}' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(group.len(), |(at, _)| at);
        return group[..end].split(',').flat_map(|member| segments(member.trim())).collect();
    }
    let mut path = Vec::new();
    let mut rest = tail;
    loop {
        let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if word.is_empty() {
            break;
        }
        let after = &rest[word.len()..];
        match after.strip_prefix("::") {
            Some(next) if next.starts_with('{') => {
                path.push(word);
                return segments(next).into_iter().map(|member| [path.clone(), member].concat()).collect();
            }
            Some(next) => {
                path.push(word);
                rest = next;
            }
            // The last word: an item, or a module imported whole (`use crate::measure;`); `modules_of` tells.
            None => {
                if word != "self" {
                    path.push(word);
                }
                break;
            }
        }
    }
    vec![path]
}

/// Every import of every file, from the files' text (relative path and contents); each imported path cut to the
/// module it names (`crate::spec::target::Target` is module `spec::target`, `crate::spec::load` is `spec`).
fn imports(files: &[(PathBuf, String)]) -> Vec<Import> {
    let modules: BTreeSet<ModulePath> = files.iter().map(|(relative, _)| module_path(relative)).collect();
    let mut all = Vec::new();
    for (relative, text) in files {
        let here = module_path(relative);
        for (index, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for mut to in paths_in(code, &here) {
                while to.len() > 1 && !modules.contains(&to) {
                    to.pop();
                }
                all.push(Import { file: relative.display().to_string(), line: index + 1, from: here.clone(), to });
            }
        }
    }
    all
}

/// What is wrong with the imports against the layers: imports up or across the order, modules the order does not
/// name, and cycles between the files of one module.
fn violations(files: &[(PathBuf, String)], layers: &[Vec<String>]) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(index, layer)| layer.iter().map(move |module| (module.as_str(), index)))
        .collect();
    let mut problems = BTreeSet::new();
    let mut top_modules = BTreeSet::new();
    for (relative, _) in files {
        let Some(module) = module_path(relative).first().cloned() else { continue };
        if !rank.contains_key(module.as_str()) {
            problems
                .insert(format!("{}: module `{module}` is not in docs/architecture.md's layers", relative.display()));
        }
        top_modules.insert(module);
    }
    let mut siblings: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for import in imports(files) {
        // A path that names no module of the crate is an item at its root (`super::X` from an inline module).
        let (Some(from), Some(to)) = (import.from.first(), import.to.first().filter(|to| top_modules.contains(*to)))
        else {
            continue;
        };
        let at = format!("{}:{}", import.file, import.line);
        if from != to {
            if let (Some(from_rank), Some(to_rank)) = (rank.get(from.as_str()), rank.get(to.as_str()))
                && to_rank >= from_rank
            {
                let direction = if to_rank == from_rank { "across its layer" } else { "up the order" };
                problems.insert(format!("{at}: `{from}` imports `{}` {direction}", import.to.join("::")));
            }
            continue;
        }
        // Inside one module: an edge between two of its files (the module's own mod.rs excluded: it declares them).
        if let (Some(a), Some(b)) = (import.from.get(1), import.to.get(1))
            && a != b
        {
            siblings.entry((from.clone(), a.clone())).or_default().insert(b.clone());
        }
    }
    for (module, start) in siblings.keys() {
        if let Some(cycle) = cycle_from(module, start, &siblings) {
            problems.insert(format!("import cycle in `{module}`: {}", cycle.join(" -> ")));
        }
    }
    problems.into_iter().collect()
}

/// A path of imports from `start` back to itself, if there is one.
fn cycle_from(module: &str, start: &str, edges: &BTreeMap<(String, String), BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&(module.to_string(), node.clone())).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

fn source_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("runner/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file is readable");
                files.push((path.strip_prefix(root).expect("under the root").to_path_buf(), text));
            }
        }
    }
    files.sort();
    files
}

fn documented_layers() -> Vec<Vec<String>> {
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    layers(&std::fs::read_to_string(document).expect("docs/architecture.md exists"))
}

#[test]
fn imports_follow_the_documented_order_of_stages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&root);
    let layers = documented_layers();
    let problems = violations(&files, &layers);
    let edges = imports(&files).len();
    println!("{} files, {edges} crate-internal imports checked against {} layers", files.len(), layers.len());
    assert!(edges > 100, "the checker found only {edges} imports: it is not reading the sources");
    assert!(problems.is_empty(), "imports against docs/architecture.md:\n{}", problems.join("\n"));
}

#[test]
fn every_module_of_the_crate_is_in_the_layers() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| line.trim().strip_suffix(';')?.rsplit_once("mod ").map(|(_, name)| name.to_string()))
        .collect();
    let layered: BTreeSet<String> = documented_layers().into_iter().flatten().collect();
    assert_eq!(declared, layered, "lib.rs's modules and docs/architecture.md's layers differ");
}

#[test]
fn a_planted_back_import_is_found() {
    let layers = layers("```layers\nspec\nplan\nreport\n```\n");
    let clean = vec![
        (PathBuf::from("spec/mod.rs"), "use std::path::Path;\n".to_string()),
        (PathBuf::from("plan/mod.rs"), "use crate::spec::{Job, combinations};\n".to_string()),
        (PathBuf::from("report/mod.rs"), "use crate::plan::{self, TestRun};\nfn f() { crate::spec::load(p) }\n".into()),
    ];
    assert_eq!(violations(&clean, &layers), Vec::<String>::new());
    let mut planted = clean.clone();
    planted[0].1.push_str("    let stem = crate::report::file_stem(name); // a stage reaching up\n");
    assert_eq!(violations(&planted, &layers), vec!["spec/mod.rs:2: `spec` imports `report` up the order".to_string()]);
    let mut grouped = clean.clone();
    grouped[1].1 = "use crate::{report::chart, spec::Job};\n".to_string();
    assert_eq!(violations(&grouped, &layers), vec!["plan/mod.rs:1: `plan` imports `report` up the order"]);
}

#[test]
fn a_planted_cycle_between_files_of_a_module_is_found() {
    let layers = layers("```layers\nspec\n```\n");
    let files = vec![
        (PathBuf::from("spec/mod.rs"), "mod target;\nmod traffic;\n".to_string()),
        (PathBuf::from("spec/target.rs"), "use super::traffic::Arrivals;\nuse super::span_of;\n".to_string()),
        (PathBuf::from("spec/traffic.rs"), "use super::{DurationValue, span_of};\n".to_string()),
    ];
    assert_eq!(violations(&files, &layers), Vec::<String>::new());
    let mut planted = files.clone();
    planted[2].1.push_str("use crate::spec::target::Target;\n");
    let problems = violations(&planted, &layers);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|problem| problem.starts_with("import cycle in `spec`")), "{problems:?}");
}

#[test]
fn a_module_the_layers_do_not_name_is_found() {
    let layers = layers("```layers\nspec\n```\n");
    let files = vec![(PathBuf::from("helpers.rs"), "use crate::spec::Job;\n".to_string())];
    assert_eq!(
        violations(&files, &layers),
        vec!["helpers.rs: module `helpers` is not in docs/architecture.md's layers"]
    );
}

/// The tests of `code` (a test binary's source) that take neither lock of the machine, when any test takes the
/// exclusive one: a test that does not would run beside a measurement.
fn tests_without_a_lock(code: &str) -> Vec<String> {
    if !code.contains("load_lock()") {
        return Vec::new();
    }
    let mut unlocked = Vec::new();
    for (at, _) in code.match_indices("#[test]") {
        let rest = &code[at..];
        let Some(signature) = rest.find("fn ") else { continue };
        let name: String = rest[signature + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let body = &rest[signature..rest.find("\n}\n").unwrap_or(rest.len())];
        if !body.contains("load_lock()") && !body.contains("shared_lock()") {
            unlocked.push(name);
        }
    }
    unlocked
}

#[test]
fn every_test_beside_a_load_test_takes_the_machine_lock() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
    let mut unlocked = Vec::new();
    for entry in std::fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        // This file names the locks in its own planted example.
        if path.extension().is_some_and(|extension| extension == "rs") && !path.ends_with("architecture.rs") {
            let code = std::fs::read_to_string(&path).unwrap();
            unlocked.extend(tests_without_a_lock(&code).into_iter().map(|name| format!("{}: {name}", path.display())));
        }
    }
    assert!(unlocked.is_empty(), "tests that take neither load_lock() nor shared_lock():\n{}", unlocked.join("\n"));
    let planted = "#[test]\nfn heavy() {\n    let _m = load_lock();\n}\n\n#[test]\nfn light() {\n    run();\n}\n";
    assert_eq!(tests_without_a_lock(planted), ["light"]);
}
