//! Parses and validates job files. Raw serde types mirror the TOML; `Job` is the validated form every later stage
//! trusts. Validation lives only in the conversion from one to the other. Each job-file table has its own file,
//! holding its raw type, its validated type and the checks between them.

mod cloudwatch;
mod configuration;
pub mod diagnostic;
mod goals;
mod include;
pub mod init;
mod limits;
mod overrides;
mod payload;
mod places;
pub mod prices;
mod prompts;
mod provision;
mod reference_llm;
mod schema;
mod target;
mod traffic;
mod values;

use std::collections::BTreeMap;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

pub use cloudwatch::{CloudWatchSpec, DEFAULT_CLOUDWATCH_NAMESPACE};
pub use configuration::{
    Configuration, CpuSet, Deployment, EndpointSource, ReferenceModel, Serverless, ServiceTime,
    ServiceTimeDistribution, Stalls, combinations,
};
use diagnostic::DiagnosticSink;
pub use diagnostic::{Diagnostic, SpecError};
pub use goals::{FlatInvocations, LatencyThreshold, Objective, PlateauSettings, Requirements, Stopping};
pub use include::Included;
pub use limits::{Budget, Limits, OverBudget};
pub use overrides::{Overrides, SetValue};
pub use payload::{Payload, PluginGrant, PluginLimits, PluginSpec};
pub use provision::{ModelSource, ProvisionSpec};
pub use reference_llm::LlmModel;
pub use schema::json_schema;
pub use target::{
    Api, CommandSpec, HeaderValue, HttpRequestSpec, HttpVersion, PORT_PLACEHOLDER, Readiness, ReadinessCheck,
    ResponseCheck, SageMakerSpec, Target, TargetKind, TargetSpec, TlsSpec,
};
pub use traffic::{Arrivals, FIRST_PROBE_STEP_S, Phase, Search, SearchLoad, StepPrecision, Traffic, TrafficOptions};
pub use values::{DurationValue, Percentile};

use cloudwatch::{RawCloudWatch, validate_cloudwatch};
use configuration::{RawConfiguration, validate_configurations};
use goals::{
    RawPlateauSettings, RawRequirements, RawStopping, validate_plateau_settings, validate_requirements,
    validate_stopping,
};
use include::{merged_document, segments, with_includes};
use limits::{RawLimits, validate_limits};
use payload::{RawPayload, validate_payload};
use target::{RawTarget, validate_targets};
use traffic::{RawTraffic, validate_traffic, validate_traffic_options};

/// The job-file format version this build reads.
pub const SUPPORTED_VERSION: u32 = 1;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JobFile")]
struct RawJobFile {
    /// The job-file format version: 1.
    #[schemars(with = "u32")]
    version: Spanned<u32>,
    /// Files of shared tables (a target, a traffic pattern, requirements), relative to this file. Each later
    /// file, and this one last, overrides the keys before it one by one; arrays are replaced whole.
    #[serde(default, rename = "include")]
    _include: Vec<String>,
    /// The job's name, description, seed, trials and racing.
    job: RawJob,
    /// The one target every configuration runs against ...
    target: Option<RawTarget>,
    /// ... or several named ones (`[targets.local]`, `[targets.sagemaker]`), each configuration naming its own.
    #[schemars(with = "Option<BTreeMap<String, RawTarget>>")]
    targets: Option<Spanned<BTreeMap<String, RawTarget>>>,
    /// What each request sends: a fixed body, a file, sample files or a WebAssembly plugin.
    #[schemars(with = "RawPayload")]
    payload: Spanned<RawPayload>,
    /// How load is applied: one pattern (stairs, phases, rate steps, a rate ramp, a constant rate or search) and its
    /// options.
    #[schemars(with = "RawTraffic")]
    traffic: Spanned<RawTraffic>,
    /// When a configuration's ramp ends early: a confirmed plateau, a latency threshold, an invocation count.
    #[serde(default)]
    stopping: RawStopping,
    /// What a recommendation must meet (the latency goal, the error budget) and what it optimises.
    #[serde(default)]
    requirements: RawRequirements,
    /// The candidate endpoint configurations: instance type, count, price, environment (at least one).
    #[schemars(with = "Vec<RawConfiguration>")]
    configurations: Spanned<Vec<RawConfiguration>>,
    /// Report templates of the job's own.
    #[serde(default)]
    report: RawReport,
    /// The plateau detector's settings.
    #[serde(default)]
    plateau: RawPlateauSettings,
    /// Publishing client metrics to CloudWatch and reading the endpoint's own metrics back.
    #[serde(default)]
    cloudwatch: RawCloudWatch,
    /// How many test runs at most, and how many at once (Inference Recommender's ResourceLimit).
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Report")]
struct RawReport {
    /// A folder of templates replacing the built-in ones of the same name, relative to the job file.
    #[schemars(with = "Option<PathBuf>")]
    templates: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Job")]
struct RawJob {
    /// The job's name: it names the output folder and the CloudWatch dimension JobName.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// Free text shown in the reports.
    #[schemars(with = "Option<String>")]
    description: Option<Spanned<String>>,
    /// Seeds every random choice (Poisson arrivals, reference service times, plugin randomness), so a job replays the
    /// same way.
    seed: Option<u64>,
    /// Runs of each configuration, interleaved across configurations (A B C A B C); the figures are then the mean
    /// over trials with a t interval. Default 1.
    #[schemars(with = "Option<u32>")]
    trials: Option<Spanned<u32>>,
    /// Stop a configuration early once its figures show it cannot beat the best one measured so far, or misses
    /// the latency goal at its lowest load (default true).
    racing: Option<bool>,
    /// A price table of the user's own, relative to the job file; else the built-in one.
    #[schemars(with = "Option<PathBuf>")]
    price_table: Option<Spanned<PathBuf>>,
}

/// The most trials a job may ask for: each is a full ramp of every configuration.
pub const MAX_TRIALS: u32 = 100;

#[derive(Debug, Clone)]
pub struct Job {
    pub source: JobSource,
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    /// `[job] trials` (1 to `MAX_TRIALS`): how many times each configuration runs.
    pub trials: u32,
    /// `[job] racing`: configurations that cannot win stop early.
    pub racing: bool,
    /// At least one; `Configuration::target` indexes it.
    pub targets: Vec<Target>,
    pub payload: Payload,
    pub traffic: Traffic,
    pub traffic_options: TrafficOptions,
    pub stopping: Stopping,
    pub requirements: Requirements,
    pub configurations: Vec<Configuration>,
    /// `[report] templates`, resolved against the job file's folder.
    pub report_templates: Option<PathBuf>,
    pub plateau: PlateauSettings,
    pub cloudwatch: CloudWatchSpec,
    pub limits: Limits,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSource {
    pub path: PathBuf,
    /// The job file as run; it holds environment variable names, never secret values.
    pub text: String,
    pub sha256: String,
}

/// Reads, parses and validates a job file, with the command line's overrides applied.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Job, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|error| SpecError {
        diagnostics: vec![Diagnostic {
            file: path.to_path_buf(),
            source: String::new(),
            span: None,
            key_path: String::new(),
            message: format!("cannot read the job file: {error}"),
            hint: Some("check the path; job files are TOML, like scenarios/quickstart.toml".to_string()),
        }],
    })?;
    overrides.select(parse_with(path, &text, overrides)?)
}

/// Parses and validates job-file text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Job, SpecError> {
    parse_with(path, text, &Overrides::default())
}

fn parse_with(path: &Path, text: &str, overrides: &Overrides) -> Result<Job, SpecError> {
    let (combined, included) = with_includes(path, text, &overrides.text())?;
    let text = combined.as_str();
    let mut sink = DiagnosticSink::new(path, text);
    let segments = segments(text, &included);
    let document = match merged_document(&segments) {
        Ok(document) => document,
        Err(error) => {
            sink.from_toml(&error, None);
            return Err(SpecError { diagnostics: sink.diagnostics }.located_in(&included));
        }
    };
    let raw = match RawJobFile::deserialize(toml::de::Deserializer::from(document.clone())) {
        Ok(raw) => raw,
        Err(error) => {
            every_shape_error(error, document, &mut sink);
            return Err(SpecError { diagnostics: sink.diagnostics }.located_in(&included));
        }
    };
    let job = validate(raw, &mut sink, path, text);
    sink.into_result().map_err(|error| error.located_in(&included))?;
    Ok(job.expect("validation without diagnostics yields a job"))
}

/// The most errors of shape (unknown keys, wrong types) one file reports.
const MAX_SHAPE_ERRORS: usize = 20;

/// serde stops at a file's first unknown key or wrong type; this reports each of them, in file order. Each error's
/// key is taken out of the document and the rest read again, until the document reads, an error has no place to
/// take out, or a key taken out is missed (what follows is only a consequence).
fn every_shape_error(
    first: toml::de::Error,
    mut document: toml::Spanned<toml::de::DeTable<'_>>,
    sink: &mut DiagnosticSink<'_>,
) {
    let mut errors = Vec::new();
    let mut error = first;
    loop {
        let mut reported = DiagnosticSink::new(sink.file(), sink.source());
        reported.from_toml(&error, Some(document.get_ref()));
        errors.extend(reported.diagnostics);
        let Some(offset) = error.span().map(|span| span.start).filter(|start| *start > 0) else { break };
        if errors.len() >= MAX_SHAPE_ERRORS || !include::remove_key_at(document.get_mut(), offset) {
            break;
        }
        match RawJobFile::deserialize(toml::de::Deserializer::from(document.clone())) {
            Ok(_) => break,
            Err(next) if next.message().starts_with("missing field") => break,
            Err(next) => error = next,
        }
    }
    errors.sort_by_key(|diagnostic| diagnostic.span.as_ref().map_or(0, |span| span.start));
    sink.diagnostics.extend(errors);
}

/// A path from the job file, relative to the job file's folder.
fn relative_to(job_path: &Path, path: &Path) -> PathBuf {
    let joined = job_path.parent().unwrap_or(Path::new(".")).join(path);
    // `plateau run job.toml` in the job's own folder: its folder is "", which no process can start in.
    if joined.as_os_str().is_empty() { PathBuf::from(".") } else { joined }
}

/// A folder named in the job file, resolved against its folder; an error at `key` when it is not one.
fn existing_folder(
    folder: &Spanned<PathBuf>,
    job_path: &Path,
    key: &str,
    hint: &str,
    sink: &mut DiagnosticSink<'_>,
) -> PathBuf {
    let resolved = relative_to(job_path, folder.get_ref());
    if !resolved.is_dir() {
        sink.error(span_of(folder), key, format!("`{}` is not a folder", resolved.display()), Some(hint.into()));
    }
    resolved
}

fn span_of<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    let span = value.span();
    (span.end > span.start).then_some(span)
}

fn validate(raw: RawJobFile, sink: &mut DiagnosticSink<'_>, path: &Path, text: &str) -> Option<Job> {
    if *raw.version.get_ref() != SUPPORTED_VERSION {
        sink.error(
            span_of(&raw.version),
            "version",
            format!("unsupported job-file version {}", raw.version.get_ref()),
            Some(format!("this plateau reads version = {SUPPORTED_VERSION}")),
        );
    }
    if raw.job.name.get_ref().trim().is_empty() {
        sink.error(
            span_of(&raw.job.name),
            "job.name",
            "the job name is empty",
            Some("name the job, e.g. name = \"resnet-cpu\"".into()),
        );
    }
    let targets = validate_targets(raw.target.as_ref(), raw.targets.as_ref(), path, sink);
    let payload =
        validate_payload(&raw.payload, sink, path, raw.job.seed.unwrap_or(0), target::dataset_tokenizer(&targets));
    let traffic = validate_traffic(&raw.traffic, sink);
    let traffic_options = validate_traffic_options(&raw.traffic, traffic.as_ref(), sink);
    let stopping = validate_stopping(&raw.stopping, sink);
    let requirements = validate_requirements(&raw.requirements, sink);
    let prices = match &raw.job.price_table {
        Some(file) => prices::PriceTable::load(&relative_to(path, file.get_ref())).unwrap_or_else(|error| {
            let hint = Some("paths are relative to the job file".into());
            sink.error(span_of(file), "job.price_table", error.to_string(), hint);
            prices::PriceTable::built_in()
        }),
        None => prices::PriceTable::built_in(),
    };
    let configurations = validate_configurations(&raw.configurations, &targets, &prices, sink);
    let report_templates =
        raw.report.templates.as_ref().map(|folder| {
            existing_folder(folder, path, "report.templates", "paths are relative to the job file", sink)
        });

    let cloudwatch = validate_cloudwatch(&raw.cloudwatch, &targets, sink);
    let limits = validate_limits(&raw.limits, configurations.len(), &targets, sink);
    let (payload, traffic) = (payload?, traffic?);
    let plateau = validate_plateau_settings(&raw.plateau, sink);
    printable(raw.job.name.get_ref(), span_of(&raw.job.name), "job.name", sink);
    if let Some(description) = &raw.job.description {
        printable(description.get_ref(), span_of(description), "job.description", sink);
    }
    let trials = raw.job.trials.as_ref().map_or(1, |trials| {
        if !(1..=MAX_TRIALS).contains(trials.get_ref()) {
            let message = format!("must be between 1 and {MAX_TRIALS}");
            let hint = "each trial is a full ramp of every configuration; 3 to 5 give a usable interval";
            sink.error(span_of(trials), "job.trials", message, Some(hint.into()));
        }
        *trials.get_ref()
    });
    // A draft or a configuration is incomplete only where an error was reported: then there is no job.
    let targets = targets
        .into_iter()
        .map(|draft| Some(Target { name: draft.name, spec: draft.spec? }))
        .collect::<Option<Vec<_>>>()?;
    let configurations = configurations.into_iter().collect::<Option<Vec<_>>>()?;
    goals::check_token_goals(&raw.requirements, &configurations, sink);
    let job = Job {
        source: JobSource {
            path: path.to_path_buf(),
            text: text.to_string(),
            sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        },
        name: raw.job.name.into_inner(),
        description: raw.job.description.map(Spanned::into_inner),
        seed: raw.job.seed.unwrap_or(0),
        trials,
        racing: raw.job.racing.unwrap_or(true),
        targets,
        payload,
        traffic,
        traffic_options,
        stopping,
        requirements,
        configurations,
        report_templates,
        plateau,
        cloudwatch,
        limits,
    };
    Some(job)
}

/// A ramp's duration (a step, a phase, a warm-up): whole seconds, from 1 s to `traffic::MAX_DURATION_S`.
fn whole_seconds(value: &Spanned<DurationValue>, key: &str, sink: &mut DiagnosticSink<'_>) -> u64 {
    let duration = value.get_ref().0;
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        sink.error(
            span_of(value),
            key,
            "must be a whole number of seconds, at least 1s",
            Some("plateau measures per second; e.g. \"30s\"".into()),
        );
    } else if duration.as_secs() > traffic::MAX_DURATION_S {
        sink.error(
            span_of(value),
            key,
            format!("must be at most {}h", traffic::MAX_DURATION_S / 3600),
            Some("a step, phase or warm-up longer than a day is almost always a typo in the unit".into()),
        );
        return traffic::MAX_DURATION_S;
    }
    duration.as_secs()
}

fn at_least_one(value: &Spanned<u32>, key: &str, sink: &mut DiagnosticSink<'_>) -> u32 {
    if *value.get_ref() == 0 {
        sink.error(span_of(value), key, "must be at least 1", None);
    }
    *value.get_ref()
}

/// Names are printed on terminals and embedded in reports, charts and XML: a control character (an escape sequence
/// that recolours or clears a terminal, a byte XML cannot hold) is refused, and never echoed.
fn printable(text: &str, span: Option<Range<usize>>, key: &str, sink: &mut DiagnosticSink<'_>) {
    if text.chars().any(char::is_control) {
        sink.error(
            span,
            key,
            "must not contain control characters (escapes such as \\u001b, tabs or line breaks)",
            Some("names are printed on terminals and in reports; use letters, digits, spaces and punctuation".into()),
        );
    }
}

/// A count from 1 to `max`, the limit said in the message.
fn count_within(value: &Spanned<u32>, max: u32, key: &str, hint: &str, sink: &mut DiagnosticSink<'_>) -> u32 {
    let count = at_least_one(value, key, sink);
    if count > max {
        sink.error(span_of(value), key, format!("must be at most {max}"), Some(hint.into()));
        return max;
    }
    count
}

fn positive(value: &Spanned<f64>, key: &str, sink: &mut DiagnosticSink<'_>) -> f64 {
    let number = *value.get_ref();
    if !(number.is_finite() && number > 0.0) {
        sink.error(span_of(value), key, format!("must be a positive number, not {number}"), None);
    }
    number
}

/// A number of the job file, `default` when absent; an error at `key` (with `hint`) when it is outside `range`.
pub(super) fn within(
    value: &Option<Spanned<f64>>,
    (range, default): (RangeInclusive<f64>, f64),
    key: &str,
    hint: Option<&str>,
    sink: &mut DiagnosticSink<'_>,
) -> f64 {
    value.as_ref().map_or(default, |value| {
        if !range.contains(value.get_ref()) {
            let message = format!("must be between {} and {}", range.start(), range.end());
            sink.error(span_of(value), key, message, hint.map(str::to_string));
        }
        *value.get_ref()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_job_named_without_a_folder_names_is_in_the_current_folder() {
        assert_eq!(relative_to(Path::new("job.toml"), Path::new("")), PathBuf::from("."));
        assert_eq!(relative_to(Path::new("job.toml"), Path::new("data")), PathBuf::from("data"));
        assert_eq!(relative_to(Path::new("jobs/job.toml"), Path::new("")), PathBuf::from("jobs"));
    }

    #[test]
    fn a_datasets_reply_lengths_are_counted_by_the_tokenizer_its_targets_share() {
        let (folder, _) = crate::tokenizer::word_tokenizer();
        std::fs::copy(folder.path().join("tokenizer.json"), folder.path().join("other.json")).unwrap();
        let reply = "Rayleigh scattering, mostly.";
        let dataset = format!(
            r#"{{"conversations": [{{"from": "human", "value": "Why?"}}, {{"from": "gpt", "value": "{reply}"}}]}}"#
        );
        std::fs::write(folder.path().join("chats.jsonl"), dataset).unwrap();
        let max_tokens = |tokenizers: [&str; 2]| {
            let target = |name: &str, tokenizer: &str| {
                let tokenizer =
                    if tokenizer.is_empty() { String::new() } else { format!("tokenizer = \"{tokenizer}\"\n") };
                format!("[targets.{name}]\nkind = \"http\"\napi = \"openai\"\n{tokenizer}")
            };
            let job = format!(
                "version = 1\n[job]\nname = \"j\"\n{}{}[payload.prompts]\nmodel = \"m\"\nfile = \"chats.jsonl\"\nmax_tokens = \"dataset\"\n\
                 [traffic.stairs]\nusers_per_step = 1\nstep_duration = \"2s\"\nsteps = 1\n\
                 [[configurations]]\nname = \"c\"\ninstance_type = \"x\"\nprice_per_hour_usd = 1\ntarget = \"a\"\n\
                 url = \"http://127.0.0.1:9/\"\n",
                target("a", tokenizers[0]),
                target("b", tokenizers[1]),
            );
            let job = parse(&folder.path().join("job.toml"), &job).unwrap();
            serde_json::from_slice::<serde_json::Value>(&job.payload.samples[0]).unwrap()["max_tokens"].as_u64()
        };
        // Five words and marks by the tokenizer; seven at four characters a token.
        assert_eq!(max_tokens(["tokenizer.json", ""]), Some(5), "one target names it");
        assert_eq!(max_tokens(["tokenizer.json", "tokenizer.json"]), Some(5), "both name the same");
        assert_eq!(max_tokens(["tokenizer.json", "other.json"]), Some(7), "they differ: estimated");
        assert_eq!(max_tokens(["", ""]), Some(7), "none does");
    }
}
