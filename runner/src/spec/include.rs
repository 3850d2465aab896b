//! `include`: job files share tables (a target, a traffic pattern) kept in other files. Each file is parsed on its
//! own, in the coordinates of one combined text, so every span still names its file and line; then the files are
//! merged key by key, later files overriding earlier ones and the job file overriding all.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diagnostic::{Diagnostic, SpecError, contains_nested};
use super::relative_to;

/// An included file's text, or the command line's `--set` overrides, and where it starts in the combined text.
pub struct Included {
    pub path: PathBuf,
    pub text: String,
    pub offset: usize,
    pub layer: Layer,
}

/// Where a layer goes: included files under the job file, the command line's overrides over it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Under,
    Over,
}

/// The job file's text with its `include`d files appended, each after a comment naming it, then the command
/// line's overrides: the text a run records, and the one coordinate system every span refers to
/// (`SpecError::located_in` maps spans back to the file and line they are in).
pub(super) fn with_includes(path: &Path, text: &str, overrides: &str) -> Result<(String, Vec<Included>), SpecError> {
    let (mut combined, mut included) = with_included_files(path, text)?;
    if !overrides.is_empty() {
        combined.push_str("\n# plateau: set on the command line\n");
        let (path, text) = (PathBuf::from(super::overrides::SET_ORIGIN), overrides.to_string());
        included.push(Included { path, text, offset: combined.len(), layer: Layer::Over });
        combined.push_str(overrides);
    }
    Ok((combined, included))
}

fn with_included_files(path: &Path, text: &str) -> Result<(String, Vec<Included>), SpecError> {
    let names = match toml::from_str::<toml::Table>(text).ok().and_then(|table| table.get("include").cloned()) {
        Some(toml::Value::Array(names)) => names,
        // No includes, or a malformed file or key that parsing reports with its location.
        _ => return Ok((text.to_string(), Vec::new())),
    };
    let problem = |file: &Path, source: &str, message: String, hint: &str| Diagnostic {
        file: file.to_path_buf(),
        source: source.to_string(),
        span: None,
        key_path: "include".to_string(),
        message,
        hint: Some(hint.to_string()),
    };
    let mut combined = text.to_string();
    let mut included = Vec::new();
    let mut diagnostics = Vec::new();
    let root = allowed_root(path);
    for name in names.iter().filter_map(toml::Value::as_str) {
        // Each problem points at the name in the job's `include`, and never shows what the included file holds.
        let at_name = text.find(&format!("\"{name}\"")).map(|start| start..start + name.len() + 2);
        let (include_path, include_text) = match read_included(path, name, &root) {
            Ok(read) => read,
            Err((message, hint)) => {
                diagnostics.push(Diagnostic { span: at_name, ..problem(path, text, message, hint) });
                continue;
            }
        };
        if toml::from_str::<toml::Table>(&include_text).is_ok_and(|table| table.contains_key("include")) {
            let message = format!("`{name}` has an `include` of its own; an included file may not include others");
            let hint = "list every shared file in the job's own `include`";
            diagnostics.push(Diagnostic { span: at_name, ..problem(path, text, message, hint) });
            continue;
        }
        combined.push_str(&format!("\n# plateau: included from {name}\n"));
        included.push(Included {
            path: include_path,
            text: include_text.clone(),
            offset: combined.len(),
            layer: Layer::Under,
        });
        combined.push_str(&include_text);
    }
    if diagnostics.is_empty() { Ok((combined, included)) } else { Err(SpecError { diagnostics }) }
}

/// Included files are at most this large: shared tables are a few lines.
const MAX_INCLUDE_BYTES: u64 = 1024 * 1024;

/// The folder included files must be inside: the job file's repository (the nearest folder up with `.git`), or
/// its own folder outside one. A job file from a pull request must not read the machine's other files.
fn allowed_root(job_path: &Path) -> PathBuf {
    let folder = job_path.parent().filter(|folder| !folder.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder = folder.canonicalize().unwrap_or_else(|_| folder.to_path_buf());
    folder.ancestors().find(|dir| dir.join(".git").exists()).unwrap_or(&folder).to_path_buf()
}

/// An included file's path and text, or why it cannot be included (a message and a hint, neither quoting it).
fn read_included(job_path: &Path, name: &str, root: &Path) -> Result<(PathBuf, String), (String, &'static str)> {
    use std::io::Read as _;
    let path = relative_to(job_path, Path::new(name));
    let unreadable = |error: std::io::Error| {
        (format!("cannot read the included file `{}`: {error}", path.display()), "paths are relative to the job file")
    };
    let canonical = path.canonicalize().map_err(unreadable)?;
    if !canonical.starts_with(root) {
        let message = format!("`{name}` is outside {}, the job file's repository or folder", root.display());
        return Err((message, "keep shared files beside the job files that include them"));
    }
    let metadata = std::fs::metadata(&canonical).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err((format!("`{name}` is not a regular file"), "include TOML files holding shared tables"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&canonical)
        .and_then(|file| file.take(MAX_INCLUDE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_INCLUDE_BYTES {
        let message =
            format!("`{name}` is larger than {} KiB, the most an included file may be", MAX_INCLUDE_BYTES / 1024);
        return Err((message, "included files hold shared tables: a target, a traffic pattern"));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| (format!("`{name}` is not text (UTF-8)"), "include TOML files holding shared tables"))?;
    if let Err(error) = toml::from_str::<toml::Table>(&text) {
        let line = error.span().map_or(1, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        // The parser's own message may quote the file; only its line is said.
        let message = format!("`{name}` is not TOML (from line {line})");
        return Err((message, "include TOML files holding shared tables; check that line"));
    }
    Ok((path, text))
}

/// One text per file, each the length of the combined text with every other file blanked (newlines kept), so
/// each parses on its own while its spans stay in combined coordinates. Included files come first, then the job,
/// then the command line's overrides.
pub(super) fn segments(combined: &str, included: &[Included]) -> Vec<String> {
    let job_end = included.first().map_or(combined.len(), |first| first.offset);
    let range = |file: &Included| file.offset..file.offset + file.text.len();
    let layer = |layer: Layer| included.iter().filter(move |file| file.layer == layer).map(range);
    let ranges = layer(Layer::Under).chain(std::iter::once(0..job_end)).chain(layer(Layer::Over));
    ranges
        .map(|range| {
            let blanked: Vec<u8> = combined
                .bytes()
                .enumerate()
                .map(|(at, byte)| if range.contains(&at) || byte == b'\n' { byte } else { b' ' })
                .collect();
            String::from_utf8(blanked).expect("whole characters are kept or become spaces")
        })
        .collect()
}

/// The job as one TOML document: each file overrides the ones before it key by key, tables merging and every
/// other value (arrays included) replaced whole, so a job can take a shared `[target]` and change one key of it.
pub(super) fn merged_document(segments: &[String]) -> Result<Spanned<toml::de::DeTable<'_>>, toml::de::Error> {
    let mut files = segments.iter().map(|text| toml::de::DeTable::parse(text));
    let mut merged = files.next().expect("the job file is always a segment")?;
    for file in files {
        let (span, mut base) = (file.as_ref().map(Spanned::span).unwrap_or_default(), merged.into_inner());
        overlay(&mut base, file?.into_inner());
        merged = Spanned::new(span, base);
    }
    Ok(merged)
}

pub(super) fn overlay<'i>(base: &mut toml::de::DeTable<'i>, over: toml::de::DeTable<'i>) {
    use toml::de::DeValue;
    for (key, value) in over {
        let span = value.span();
        match (base.get_mut(&key).map(Spanned::get_mut), value.into_inner()) {
            (Some(DeValue::Table(existing)), DeValue::Table(table)) => overlay(existing, table),
            (_, value) => {
                base.remove(&key);
                base.insert(key, Spanned::new(span, value));
            }
        }
    }
}

/// Takes out of `table` the innermost key whose key or value holds `offset`; false when none does.
pub(super) fn remove_key_at(table: &mut toml::de::DeTable<'_>, offset: usize) -> bool {
    use toml::de::DeValue;
    let holds = |key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>| {
        key.span().contains(&offset) || value.span().contains(&offset) || contains_nested(value.get_ref(), offset)
    };
    let Some(key) = table.iter().find(|(key, value)| holds(key, value)).map(|(key, _)| key.clone()) else {
        return false;
    };
    let in_key = key.span().contains(&offset);
    let removed_inside = match table.get_mut(key.get_ref().as_ref()).map(Spanned::get_mut) {
        Some(DeValue::Table(inner)) if !in_key => remove_key_at(inner, offset),
        Some(DeValue::Array(items)) if !in_key => items.iter_mut().any(|item| match item.get_mut() {
            DeValue::Table(inner) => remove_key_at(inner, offset),
            _ => false,
        }),
        _ => false,
    };
    if !removed_inside {
        table.remove(key.get_ref().as_ref());
    }
    true
}
