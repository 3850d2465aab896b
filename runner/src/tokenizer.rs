//! A language model's own tokenizer, named by the job file (`[target] tokenizer = "tokenizer.json"`), for counting
//! tokens when a server sends no `usage`: Hugging Face's tokenizer.json, which the models vLLM, SGLang, TGI and
//! llama.cpp serve ship with, read by the `tokenizers` crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded tokenizer, shared by every session of a run.
#[derive(Clone)]
pub struct Tokenizer {
    path: PathBuf,
    inner: Arc<tokenizers::Tokenizer>,
}

/// The tokenizer file cannot be used. The reason is the tokenizers crate's, which says where the file is wrong
/// without quoting it.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{}` as a tokenizer.json: {reason}", path.display())]
pub struct TokenizerError {
    pub path: PathBuf,
    pub reason: String,
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|error| TokenizerError { path: path.to_path_buf(), reason: error.to_string() })?;
        Ok(Self { path: path.to_path_buf(), inner: Arc::new(inner) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens `text` is, without the special tokens a template would add (a begin-of-sequence token, chat
    /// markers): what a server's `usage` counts for a completion, and for a prompt less its template's tokens.
    pub fn count(&self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        self.inner.encode_fast(text, false).map_or(0, |encoding| u32::try_from(encoding.len()).unwrap_or(u32::MAX))
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_tuple("Tokenizer").field(&self.path).finish()
    }
}

/// Two tokenizers are the same when they come from the same file.
impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// A word-level tokenizer for tests: a token per word and per run of punctuation, known or not.
#[cfg(test)]
pub fn word_tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("tokenizer.json");
    let json = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1}, "unk_token": "[UNK]"}}"#;
    std::fs::write(&path, json).expect("writing the tokenizer");
    let tokenizer = Tokenizer::load(&path).expect("a word-level tokenizer loads");
    (folder, tokenizer)
}
