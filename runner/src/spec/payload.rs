//! `[payload]`: what each request carries, a fixed body, a file, sample requests, or a WASM plugin with its sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::prompts::{RawPrompts, validate_prompts};
use super::{DurationValue, existing_folder, relative_to, span_of};
use crate::tokenizer::Tokenizer;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Payload")]
pub(super) struct RawPayload {
    /// The Content-Type of each request (default application/json).
    content_type: Option<String>,
    /// The Accept header (SageMaker: the Accept parameter).
    accept: Option<String>,
    /// A fixed request body, sent with every request.
    body: Option<String>,
    /// A file whose bytes are the request body, relative to the job file.
    #[schemars(with = "Option<PathBuf>")]
    file: Option<Spanned<PathBuf>>,
    /// A WebAssembly payload plugin (payload-plugins/wit) that generates each request, relative to the job file.
    #[schemars(with = "Option<PathBuf>")]
    plugin: Option<Spanned<PathBuf>>,
    /// Sample requests: a folder, or a `.tar.gz` of them (as IR's SamplePayloadUrl); request n sends sample
    /// n mod count, samples in file-name order.
    #[schemars(with = "Option<PathBuf>")]
    samples: Option<Spanned<PathBuf>>,
    /// Language-model requests built from a dataset of prompts (JSONL or ShareGPT), with their output lengths.
    #[schemars(with = "Option<RawPrompts>")]
    prompts: Option<Spanned<RawPrompts>>,
    /// The payload plugin's configuration, passed to it as JSON.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    config: Option<Spanned<toml::Table>>,
    /// The payload plugin's memory, time, fuel and body size per call.
    #[schemars(with = "Option<RawPluginLimits>")]
    limits: Option<Spanned<RawPluginLimits>>,
    /// What the payload plugin may use; nothing unless granted here.
    #[schemars(with = "Option<RawPluginGrant>")]
    grant: Option<Spanned<RawPluginGrant>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginLimits")]
pub(super) struct RawPluginLimits {
    /// The plugin's memory at most, MiB (default 128).
    #[schemars(with = "Option<u32>")]
    memory_mb: Option<Spanned<u32>>,
    #[schemars(with = "Option<DurationValue>")]
    call_timeout: Option<Spanned<DurationValue>>,
    /// WebAssembly instructions (fuel) one call may use; unlimited when absent, the call timeout still applies.
    #[schemars(with = "Option<u64>")]
    fuel_per_call: Option<Spanned<u64>>,
    /// The largest body one call may return (default 16 MiB).
    #[schemars(with = "Option<u64>")]
    max_body_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginGrant")]
pub(super) struct RawPluginGrant {
    /// A folder the plugin may read, relative to the job file (default none).
    #[schemars(with = "Option<PathBuf>")]
    read_dir: Option<Spanned<PathBuf>>,
    /// Environment variables the plugin may read, by name.
    #[serde(default)]
    env: Vec<String>,
    /// Let the plugin draw real randomness (default false: randomness is seeded from the job).
    #[serde(default)]
    random: bool,
    /// Let the plugin read the wall clock (default false: it sees a fixed time).
    #[serde(default)]
    clock: bool,
    /// Network access for the plugin (default false).
    #[serde(default)]
    network: bool,
}

#[derive(Debug, Clone)]
pub struct Payload {
    pub content_type: String,
    pub accept: Option<String>,
    /// The fixed body; empty when samples or a plugin make the bodies.
    pub body: bytes::Bytes,
    /// Sample bodies (or bodies built from `prompts`), sent in turn.
    pub samples: Vec<bytes::Bytes>,
    pub plugin: Option<PluginSpec>,
}

/// A WASM payload plugin and its sandbox (`[payload] plugin`, `[payload.config]`, `[payload.limits]`,
/// `[payload.grant]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Resolved against the job file's folder.
    pub path: PathBuf,
    /// `[payload.config]` as JSON, handed to the plugin's `init`.
    pub config_json: String,
    pub limits: PluginLimits,
    pub grant: PluginGrant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginLimits {
    pub memory_mb: u32,
    pub call_timeout: Duration,
    pub fuel_per_call: Option<u64>,
    pub max_body_bytes: u64,
}

/// What a plugin may reach beyond its own memory; nothing by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginGrant {
    /// Mounted read-only at `/data`.
    pub read_dir: Option<PathBuf>,
    /// Environment variables passed through (when set).
    pub env: Vec<String>,
    /// Real entropy instead of randomness seeded from `[job] seed`.
    pub random: bool,
    /// The real clocks instead of a clock fixed at 2000-01-01.
    pub clock: bool,
    pub network: bool,
}

pub(super) const DEFAULT_PLUGIN_MEMORY_MB: u32 = 128;
const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_PLUGIN_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

pub(super) fn validate_payload(
    raw: &Spanned<RawPayload>,
    sink: &mut DiagnosticSink<'_>,
    job_path: &Path,
    seed: u64,
    tokenizer: Option<&Tokenizer>,
) -> Option<Payload> {
    let payload = raw.get_ref();
    let mut body = bytes::Bytes::new();
    let mut plugin = None;
    let mut samples = Vec::new();
    let sources = [
        payload.body.is_some(),
        payload.file.is_some(),
        payload.plugin.is_some(),
        payload.samples.is_some(),
        payload.prompts.is_some(),
    ];
    match (&payload.body, &payload.file, &payload.plugin, &payload.prompts) {
        _ if sources.iter().filter(|given| **given).count() != 1 => {
            sink.error(
                span_of(raw),
                "payload",
                "give exactly one of `body`, `file`, `samples`, `prompts` or `plugin`",
                Some("e.g. body = '{\"inputs\": [1, 2, 3]}'".into()),
            );
            return None;
        }
        (Some(text), _, _, _) => body = bytes::Bytes::from(text.clone().into_bytes()),
        (_, Some(file), _, _) => {
            let resolved = relative_to(job_path, file.get_ref());
            match std::fs::read(&resolved) {
                Ok(bytes) => body = bytes::Bytes::from(bytes),
                Err(error) => {
                    sink.error(
                        span_of(file),
                        "payload.file",
                        format!("cannot read `{}`: {error}", resolved.display()),
                        Some("paths are relative to the job file".into()),
                    );
                    return None;
                }
            }
        }
        (_, _, Some(path), _) => plugin = Some(validate_plugin(payload, path, sink, job_path)?),
        (_, _, _, Some(prompts)) => samples = validate_prompts(prompts, sink, job_path, seed, tokenizer)?,
        _ => {
            let folder = payload.samples.as_ref().expect("one source is given");
            let resolved = relative_to(job_path, folder.get_ref());
            match read_samples(&resolved) {
                Ok(read) => samples = read,
                Err(error) => {
                    sink.error(
                        span_of(folder),
                        "payload.samples",
                        error.to_string(),
                        Some("a folder of request files, or a .tar.gz of them; relative to the job file".into()),
                    );
                    return None;
                }
            }
        }
    }
    if plugin.is_none() {
        let plugin_only = [
            ("payload.config", payload.config.as_ref().and_then(span_of)),
            ("payload.limits", payload.limits.as_ref().and_then(span_of)),
            ("payload.grant", payload.grant.as_ref().and_then(span_of)),
        ];
        for (key, span) in plugin_only.into_iter().filter(|(_, span)| span.is_some()) {
            sink.error(span, key, "only a plugin takes this", Some("set `payload.plugin`, or remove it".into()));
        }
    }
    Some(Payload {
        content_type: payload.content_type.clone().unwrap_or_else(|| "application/json".to_string()),
        accept: payload.accept.clone(),
        body,
        samples,
        plugin,
    })
}

/// Why sample requests cannot be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum SampleError {
    #[error("cannot read `{path}`: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("cannot open `{path}`: {source}")]
    Unopenable { path: String, source: std::io::Error },
    #[error("`{path}` is not a .tar.gz: {source}")]
    NotAnArchive { path: String, source: std::io::Error },
    #[error("`{path}` is not a readable .tar.gz: {source}")]
    DamagedArchive { path: String, source: std::io::Error },
    #[error("cannot read `{entry}` in `{path}`: {source}")]
    UnreadableEntry { entry: String, path: String, source: std::io::Error },
    #[error("`{path}` is neither a folder nor a .tar.gz")]
    NeitherFolderNorArchive { path: String },
    #[error("`{path}` holds no sample files")]
    Empty { path: String },
}

/// Every regular file in a folder (recursively), or in a `.tar.gz` / `.tgz`, in path order.
pub(super) fn read_samples(path: &Path) -> Result<Vec<bytes::Bytes>, SampleError> {
    let mut named: Vec<(String, Vec<u8>)> = Vec::new();
    let name = path.to_string_lossy().into_owned();
    let unreadable = |at: &Path| {
        let path = at.display().to_string();
        move |source| SampleError::Unreadable { path, source }
    };
    if path.is_dir() {
        let mut folders = vec![path.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).map_err(unreadable(&folder))?.flatten() {
                let entry_path = entry.path();
                if entry_path.is_dir() {
                    folders.push(entry_path);
                } else {
                    let bytes = std::fs::read(&entry_path).map_err(unreadable(&entry_path))?;
                    named.push((entry_path.to_string_lossy().into_owned(), bytes));
                }
            }
        }
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let file =
            std::fs::File::open(path).map_err(|source| SampleError::Unopenable { path: name.clone(), source })?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let entries = archive.entries().map_err(|source| SampleError::NotAnArchive { path: name.clone(), source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| SampleError::DamagedArchive { path: name.clone(), source })?;
            if entry.header().entry_type().is_file() {
                let entry_name = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|source| SampleError::UnreadableEntry {
                    entry: entry_name.clone(),
                    path: name.clone(),
                    source,
                })?;
                named.push((entry_name, bytes));
            }
        }
    } else {
        return Err(SampleError::NeitherFolderNorArchive { path: name });
    }
    if named.is_empty() {
        return Err(SampleError::Empty { path: name });
    }
    named.sort();
    Ok(named.into_iter().map(|(_, bytes)| bytes::Bytes::from(bytes)).collect())
}

pub(super) fn validate_plugin(
    payload: &RawPayload,
    path: &Spanned<PathBuf>,
    sink: &mut DiagnosticSink<'_>,
    job_path: &Path,
) -> Option<PluginSpec> {
    let resolved = relative_to(job_path, path.get_ref());
    if !resolved.is_file() {
        sink.error(
            span_of(path),
            "payload.plugin",
            format!("no plugin at `{}`", resolved.display()),
            Some("paths are relative to the job file; build the plugin first (see payload-plugins/README.md)".into()),
        );
    }
    let config_json = match &payload.config {
        Some(table) => match serde_json::to_string(table.get_ref()) {
            Ok(json) => json,
            Err(error) => {
                sink.error(span_of(table), "payload.config", format!("cannot be passed as JSON: {error}"), None);
                String::new()
            }
        },
        None => "{}".to_string(),
    };
    let default_limits = RawPluginLimits::default();
    let limits = payload.limits.as_ref().map_or(&default_limits, |limits| limits.get_ref());
    let memory_mb = limits.memory_mb.as_ref().map_or(DEFAULT_PLUGIN_MEMORY_MB, |memory| *memory.get_ref());
    if let Some(memory) = limits.memory_mb.as_ref().filter(|memory| !(1..=4096).contains(memory.get_ref())) {
        sink.error(span_of(memory), "payload.limits.memory_mb", "must be 1 to 4096", None);
    }
    let call_timeout = limits.call_timeout.as_ref().map_or(DEFAULT_PLUGIN_CALL_TIMEOUT, |value| value.get_ref().0);
    if let Some(value) = limits.call_timeout.as_ref().filter(|value| value.get_ref().0 < Duration::from_millis(1)) {
        sink.error(
            span_of(value),
            "payload.limits.call_timeout",
            "must be at least 1ms",
            Some("e.g. \"100ms\"".into()),
        );
    }
    let default_grant = RawPluginGrant::default();
    let grant = payload.grant.as_ref().map_or(&default_grant, |grant| grant.get_ref());
    let read_dir = grant.read_dir.as_ref().map(|dir| {
        let hint = "paths are relative to the job file; the plugin sees the folder read-only at /data";
        existing_folder(dir, job_path, "payload.grant.read_dir", hint, sink)
    });
    Some(PluginSpec {
        path: resolved,
        config_json,
        limits: PluginLimits {
            memory_mb,
            call_timeout,
            fuel_per_call: limits.fuel_per_call.as_ref().map(|fuel| *fuel.get_ref()),
            max_body_bytes: limits
                .max_body_bytes
                .as_ref()
                .map_or(DEFAULT_PLUGIN_MAX_BODY_BYTES, |bytes| *bytes.get_ref()),
        },
        grant: PluginGrant {
            read_dir,
            env: grant.env.clone(),
            random: grant.random,
            clock: grant.clock,
            network: grant.network,
        },
    })
}
