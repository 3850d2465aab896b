//! Located errors for job files: file, line, column, key path, what was expected, and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One problem in one job file, located by byte span so it can be rendered with the offending line.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub source: String,
    pub span: Option<Range<usize>>,
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Every problem found in a job file; validation reports all it can find, not just the first.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SpecError {
    pub diagnostics: Vec<Diagnostic>,
}

impl SpecError {
    /// Points each diagnostic that falls in an included file at that file and its own lines.
    pub fn located_in(mut self, included: &[super::Included]) -> Self {
        for diagnostic in &mut self.diagnostics {
            let Some(span) = diagnostic.span.clone() else { continue };
            if let Some(file) = included.iter().rev().find(|file| span.start >= file.offset) {
                diagnostic.file = file.path.clone();
                diagnostic.source = file.text.clone();
                diagnostic.span = Some(span.start - file.offset..span.end.saturating_sub(file.offset));
            }
        }
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.diagnostics.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// 1-based line and column of the span start.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        let start = self.source.floor_char_boundary(self.span.as_ref()?.start);
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |s| s.chars().count()) + 1;
        Some((line, column))
    }

    pub fn location(&self) -> String {
        match self.line_column() {
            Some((line, column)) => format!("{}:{line}:{column}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use annotate_snippets::{Level, Renderer, Snippet};
        let title = if self.key_path.is_empty() {
            self.message.clone()
        } else {
            format!("`{}`: {}", self.key_path, self.message)
        };
        // annotate-snippets adds the line and column to the file name itself.
        let origin = self.file.display().to_string();
        let location = self.location();
        let hint = self.hint.as_deref().map(|hint| Level::Help.title(hint));
        let mut message = Level::Error.title(&title);
        // A line too long to read (a 10,000-digit value) is named by its location, not printed.
        let readable = |span: &Range<usize>| {
            let start = self.source.floor_char_boundary(span.start.min(self.source.len()));
            let line_start = self.source[..start].rfind('\n').map_or(0, |at| at + 1);
            let line_end = self.source[start..].find('\n').map_or(self.source.len(), |at| start + at);
            line_end - line_start <= MAX_SNIPPET_LINE
        };
        if let Some(span) = self.span.clone().filter(|span| !self.source.is_empty() && readable(span)) {
            let span = clamp_span(&self.source, span);
            message = message
                .snippet(Snippet::source(&self.source).origin(&origin).fold(true).annotation(Level::Error.span(span)));
        } else {
            message = message.footer(Level::Note.title(&location));
        }
        if let Some(hint) = hint {
            message = message.footer(hint);
        }
        // A name, a path or an included file may hold control characters: shown, never sent to the terminal.
        write!(f, "{}", visible_controls(&Renderer::plain().render(message).to_string()))
    }
}

/// Source lines longer than this are not quoted in a diagnostic.
const MAX_SNIPPET_LINE: usize = 300;

/// `text` with every control character but line breaks and tabs written out (`\u{1b}`), so printing it cannot move
/// the cursor, clear the screen or change colours.
pub fn visible_controls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_control() && !matches!(character, '\n' | '\t') {
            shown.push_str(&character.escape_unicode().to_string());
        } else {
            shown.push(character);
        }
    }
    shown
}

/// Spans from the parser may point one past the end, or into a multi-byte character; annotate-snippets wants
/// them inside the text and on character boundaries.
fn clamp_span(source: &str, span: Range<usize>) -> Range<usize> {
    let end = source.ceil_char_boundary(span.end);
    let start = source.floor_char_boundary(span.start.min(end));
    if start == end && end < source.len() { start..source.ceil_char_boundary(end + 1) } else { start..end }
}

/// Builds diagnostics for one file; keeps the file's text so spans can be rendered and keys found.
pub struct DiagnosticSink<'a> {
    pub file: &'a Path,
    pub source: &'a str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> DiagnosticSink<'a> {
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source, diagnostics: Vec::new() }
    }

    pub fn file(&self) -> &'a Path {
        self.file
    }

    pub fn source(&self) -> &'a str {
        self.source
    }

    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        key_path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_path_buf(),
            source: self.source.to_string(),
            span,
            key_path: key_path.into(),
            message: message.into(),
            hint,
        });
    }

    /// Converts a serde/TOML error into a located diagnostic with its key path and a did-you-mean hint.
    /// `document` is the parsed job when there is one (else the source is parsed as far as it goes).
    pub fn from_toml(&mut self, error: &toml::de::Error, document: Option<&DeTable<'_>>) {
        let span = error.span();
        let key_path = span
            .as_ref()
            .and_then(|span| match document {
                Some(document) => key_path_in(document, span.start),
                None => key_path_at(self.source, span.start),
            })
            .unwrap_or_default();
        let message = error.message().trim().to_string();
        // A table the whole file lacks: serde points at the document's start, which is `version`.
        if message.starts_with("missing field `") && span.as_ref().is_some_and(|span| span.start == 0) {
            // Every table the file lacks, not only the first serde met.
            let present = |key: &str| document.is_some_and(|document| document.get(key).is_some());
            for key in
                ["version", "job", "payload", "traffic", "configurations"].into_iter().filter(|key| !present(key))
            {
                let (table, hint) = missing_table_hint(key);
                self.error(None, key, format!("the job file has no {table}"), Some(hint.to_string()));
            }
            return;
        }
        let hint = did_you_mean(&message).or_else(|| type_hint(&message));
        let message = rephrase(&message);
        self.error(span, key_path, message, hint);
    }

    pub fn into_result(self) -> Result<(), SpecError> {
        if self.diagnostics.is_empty() { Ok(()) } else { Err(SpecError { diagnostics: self.diagnostics }) }
    }
}

/// serde's words in users' words: keys, not fields; what a value should look like, not a Rust type.
fn rephrase(message: &str) -> String {
    let message = message.replace("unknown field", "unknown key").replace("missing field", "missing key");
    if message.contains("untagged enum HeaderValue") {
        return "a header value is a string, or { env = \"NAME\" } to read it from the environment".to_string();
    }
    let message = [
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ]
    .iter()
    .fold(message, |message, (jargon, words)| message.replace(jargon, words));
    shortened(&message)
}

/// A message that echoes a value keeps its first 80 characters: a 10,000-digit number is not read twice.
fn shortened(message: &str) -> String {
    const KEPT: usize = 80;
    let mut shown = String::new();
    let mut run = 0;
    for character in message.chars() {
        run = if character.is_whitespace() { 0 } else { run + 1 };
        if run <= KEPT {
            shown.push(character);
        } else if run == KEPT + 1 {
            shown.push('…');
        }
    }
    shown
}

/// How a top-level key the file lacks is written, and what to add.
fn missing_table_hint(key: &str) -> (&'static str, &'static str) {
    match key {
        "job" => ("[job] table", "add [job] with name = \"...\""),
        "traffic" => (
            "[traffic] table",
            "add a traffic pattern, e.g. [traffic.stairs] users_per_step = 2, step_duration = \"10s\", steps = 6",
        ),
        "configurations" => {
            ("[[configurations]] table", "add a [[configurations]] table for each configuration to try")
        }
        "payload" => ("[payload] table", "add [payload] with body = '...', samples, or plugin"),
        _ => ("`version`", "add version = 1 at the top"),
    }
}

/// For a value of the wrong type, an example of the right one.
fn type_hint(message: &str) -> Option<String> {
    let example = if message.contains("expected u32") || message.contains("expected u64") {
        "a whole number without quotes, e.g. 4"
    } else if message.contains("expected f64") {
        "a number without quotes, e.g. 0.25"
    } else if message.contains("expected a boolean") {
        "true or false, without quotes"
    } else {
        return None;
    };
    Some(format!("write {example}"))
}

/// For "unknown field `x`, expected one of `a`, `b`" (and the same for variants) names the closest valid one.
pub fn did_you_mean(message: &str) -> Option<String> {
    let (unknown, expected) = if let Some(rest) = message.strip_prefix("unknown field `") {
        rest.split_once('`')?
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        rest.split_once('`')?
    } else {
        return None;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    closest(unknown, &candidates).map(|best| format!("did you mean `{best}`?"))
}

/// The candidate most similar to `word`, if it is similar enough to be a plausible typo.
pub fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The dotted key path (`traffic.phases[0].duration`) of the innermost key or value containing `offset`.
pub fn key_path_at(source: &str, offset: usize) -> Option<String> {
    key_path_in(DeTable::parse_recoverable(source).0.get_ref(), offset)
}

fn key_path_in(document: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = String::new();
    walk_table(document, offset, &mut path);
    (!path.is_empty()).then_some(path)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let in_key = key.span().contains(&offset);
        let in_value = value.span().contains(&offset) || value.span().end == offset;
        if in_key || in_value || contains_nested(value.get_ref(), offset) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !in_key {
                walk_value(value.get_ref(), offset, path);
            }
            return true;
        }
    }
    false
}

fn walk_value(value: &DeValue<'_>, offset: usize, path: &mut String) {
    match value {
        DeValue::Table(table) => {
            walk_table(table, offset, path);
        }
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                if item.span().contains(&offset) || contains_nested(item.get_ref(), offset) {
                    path.push_str(&format!("[{index}]"));
                    walk_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Tables declared with `[header]` syntax have spans that do not cover their keys, so look inside.
pub(super) fn contains_nested(value: &DeValue<'_>, offset: usize) -> bool {
    match value {
        DeValue::Table(table) => table.iter().any(|(key, value)| {
            key.span().contains(&offset) || value.span().contains(&offset) || contains_nested(value.get_ref(), offset)
        }),
        DeValue::Array(items) => {
            items.iter().any(|item| item.span().contains(&offset) || contains_nested(item.get_ref(), offset))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_names_nested_array_entries() {
        let source = "version = 1\n[[traffic.phases]]\ninitial_users = 1\n[[traffic.phases]]\nduration = \"x\"\n";
        let offset = source.find("\"x\"").unwrap();
        assert_eq!(key_path_at(source, offset).as_deref(), Some("traffic.phases[1].duration"));
    }

    #[test]
    fn did_you_mean_picks_the_nearest_key() {
        let message =
            "unknown field `spwan_rate_per_s`, expected one of `initial_users`, `spawn_rate_per_s`, `duration`";
        assert_eq!(did_you_mean(message).as_deref(), Some("did you mean `spawn_rate_per_s`?"));
        assert_eq!(did_you_mean("unknown field `zzzz`, expected `name`"), None);
    }
}
