//! Parses and validates job files. Raw serde types mirror the TOML; `Job` is the validated form every later stage
//! trusts. Validation lives only in the conversion from one to the other.

pub mod diagnostic;
mod values;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use diagnostic::DiagnosticSink;
pub use diagnostic::{Diagnostic, SpecError};
pub use values::{DurationValue, Percentile};

/// The job-file format version this build reads.
pub const SUPPORTED_VERSION: u32 = 1;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------------
// Raw types: exactly what the TOML says.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobFile {
    version: Spanned<u32>,
    job: RawJob,
    target: RawTarget,
    payload: Spanned<RawPayload>,
    traffic: Spanned<RawTraffic>,
    #[serde(default)]
    stopping: RawStopping,
    #[serde(default)]
    requirements: RawRequirements,
    configurations: Spanned<Vec<RawConfiguration>>,
    #[serde(default)]
    report: RawReport,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReport {
    /// A folder of templates replacing the built-in ones of the same name, relative to the job file.
    templates: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    description: Option<String>,
    seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: Spanned<TargetKind>,
    url: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValue>,
    timeout: Option<DurationValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Reference,
    Http,
}

/// A header value given inline, or read from an environment variable so secrets stay out of the job file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    Inline(String),
    Env { env: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    content_type: Option<String>,
    accept: Option<String>,
    body: Option<String>,
    file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    stairs: Option<Spanned<RawStairs>>,
    phases: Option<Spanned<Vec<Spanned<RawPhase>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStairs {
    users_per_step: Spanned<u32>,
    step_duration: Spanned<DurationValue>,
    steps: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    initial_users: u32,
    spawn_rate_per_s: Spanned<f64>,
    duration: Spanned<DurationValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStopping {
    max_invocations: Option<Spanned<u64>>,
    #[serde(default)]
    latency_thresholds: Vec<RawLatencyThreshold>,
    #[serde(default)]
    flat_invocations: FlatInvocations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatencyThreshold {
    percentile: Percentile,
    latency_ms: Spanned<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlatInvocations {
    /// End a configuration's ramp as soon as its plateau is confirmed.
    Stop,
    /// Run every step (SageMaker Inference Recommender's default).
    #[default]
    Continue,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    latency_ms: Option<Spanned<f64>>,
    percentile: Option<Percentile>,
    #[serde(default)]
    objective: Objective,
    expected_peak_rps: Option<Spanned<f64>>,
    headroom_percent: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The lowest CostPerInference.
    #[default]
    CostPerInference,
    /// The highest MaxInvocations.
    Throughput,
    /// The lowest latency at the required percentile.
    Latency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfiguration {
    name: Spanned<String>,
    instance_type: String,
    #[serde(default = "one")]
    instance_count: Spanned<u32>,
    price_per_hour_usd: Option<Spanned<f64>>,
    url: Option<Spanned<String>>,
    reference: Option<Spanned<RawReferenceModel>>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReferenceModel {
    workers: Spanned<u32>,
    service_time_ms: Spanned<f64>,
    #[serde(default)]
    distribution: ServiceTimeDistribution,
    cv: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTimeDistribution {
    #[default]
    Fixed,
    Lognormal,
}

// ---------------------------------------------------------------------------------------------------------------
// Validated types.

#[derive(Debug, Clone)]
pub struct Job {
    pub source: JobSource,
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub target: Target,
    pub payload: Payload,
    pub traffic: Traffic,
    pub stopping: Stopping,
    pub requirements: Requirements,
    pub configurations: Vec<Configuration>,
    /// `[report] templates`, resolved against the job file's folder.
    pub report_templates: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSource {
    pub path: PathBuf,
    /// The job file as run; it holds environment variable names, never secret values.
    pub text: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub kind: TargetKind,
    pub http: HttpRequestSpec,
}

/// How each request is sent over HTTP; for the reference target the URL is filled in per run.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    pub url: Option<String>,
    pub method: String,
    pub headers: Vec<(String, HeaderValue)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Payload {
    pub content_type: String,
    pub accept: Option<String>,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    /// `steps` steps of `step_duration_s` each; step i runs `users_per_step * (i + 1)` users.
    Stairs {
        users_per_step: u32,
        step_duration_s: u64,
        steps: u32,
    },
    Phases(Vec<Phase>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub initial_users: u32,
    pub spawn_rate_per_s: f64,
    pub duration_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopping {
    pub max_invocations: Option<u64>,
    pub latency_thresholds: Vec<LatencyThreshold>,
    pub flat_invocations: FlatInvocations,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyThreshold {
    pub percentile: Percentile,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// The latency goal: `percentile` of ModelLatency must stay at or under `latency_ms`.
    pub slo: Option<LatencyThreshold>,
    pub objective: Objective,
    pub expected_peak_rps: Option<f64>,
    pub headroom_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Configuration {
    pub name: String,
    pub instance_type: String,
    pub instance_count: u32,
    pub price_per_hour_usd: f64,
    /// For `http` targets: this configuration's own endpoint, overriding the target's URL.
    pub url: Option<String>,
    pub reference: Option<ReferenceModel>,
}

/// A simulated model server: `workers` requests served at once, FIFO queue, service times from a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferenceModel {
    pub workers: u32,
    pub service_time_ms: f64,
    pub distribution: ServiceTimeDistribution,
    /// Coefficient of variation of lognormal service times.
    pub cv: f64,
}

impl ReferenceModel {
    /// Requests per second the model can serve at most: workers / mean service time.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.workers) * 1000.0 / self.service_time_ms
    }
}

impl Traffic {
    /// The ramp's full length, in seconds, when every step runs.
    pub fn duration_s(&self) -> u64 {
        match self {
            Traffic::Stairs { step_duration_s, steps, .. } => step_duration_s * u64::from(*steps),
            Traffic::Phases(phases) => phases.iter().map(|phase| phase.duration_s).sum(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading.

/// Reads, parses and validates one job file, reporting every problem with its location.
pub fn load(path: &Path) -> Result<Job, SpecError> {
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
    parse(path, &text)
}

/// Parses and validates job-file text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Job, SpecError> {
    let mut sink = DiagnosticSink::new(path, text);
    let raw: RawJobFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            sink.from_toml(&error);
            return Err(SpecError { diagnostics: sink.diagnostics });
        }
    };
    let job = validate(raw, &mut sink, path, text);
    sink.into_result()?;
    Ok(job.expect("validation without diagnostics yields a job"))
}

/// A path from the job file, relative to the job file's folder.
fn relative_to(job_path: &Path, path: &Path) -> PathBuf {
    job_path.parent().unwrap_or(Path::new(".")).join(path)
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
    let target = validate_target(&raw.target, sink);
    let payload = validate_payload(&raw.payload, sink, path);
    let traffic = validate_traffic(&raw.traffic, sink);
    let stopping = validate_stopping(&raw.stopping, sink);
    let requirements = validate_requirements(&raw.requirements, sink);
    let configurations = validate_configurations(&raw.configurations, &target, sink);
    let report_templates = raw.report.templates.as_ref().map(|folder| {
        let resolved = relative_to(path, folder.get_ref());
        if !resolved.is_dir() {
            sink.error(
                span_of(folder),
                "report.templates",
                format!("`{}` is not a folder", resolved.display()),
                Some("paths are relative to the job file".into()),
            );
        }
        resolved
    });

    let job = Job {
        source: JobSource {
            path: path.to_path_buf(),
            text: text.to_string(),
            sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        },
        name: raw.job.name.into_inner(),
        description: raw.job.description,
        seed: raw.job.seed.unwrap_or(0),
        target,
        payload: payload?,
        traffic: traffic?,
        stopping,
        requirements,
        configurations,
        report_templates,
    };
    Some(job)
}

fn validate_target(raw: &RawTarget, sink: &mut DiagnosticSink<'_>) -> Target {
    let kind = *raw.kind.get_ref();
    let method = raw.method.as_ref().map_or_else(|| "POST".to_string(), |m| m.get_ref().to_ascii_uppercase());
    if let Some(raw_method) = &raw.method
        && hyper::Method::from_bytes(method.as_bytes()).is_err()
    {
        sink.error(
            span_of(raw_method),
            "target.method",
            format!("`{}` is not an HTTP method", raw_method.get_ref()),
            Some("use POST, PUT or GET".into()),
        );
    }
    match (&kind, &raw.url) {
        (TargetKind::Reference, Some(url)) => sink.error(
            span_of(url),
            "target.url",
            "the reference target serves itself; it takes no url",
            Some("remove `url`, or use kind = \"http\" to benchmark your own server".into()),
        ),
        (TargetKind::Http, Some(url)) => check_url(url, "target.url", sink),
        _ => {}
    }
    for (name, value) in &raw.headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            sink.error(
                span_of(&raw.kind),
                format!("target.headers.{name}"),
                format!("`{name}` is not a valid header name"),
                None,
            );
        }
        if let HeaderValue::Inline(text) = value
            && hyper::header::HeaderValue::from_str(text).is_err()
        {
            sink.error(
                None,
                format!("target.headers.{name}"),
                "the header value has characters HTTP does not allow",
                None,
            );
        }
    }
    Target {
        kind,
        http: HttpRequestSpec {
            url: raw.url.as_ref().map(|url| url.get_ref().clone()),
            method,
            headers: raw.headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
            timeout: raw.timeout.map_or(DEFAULT_TIMEOUT, |timeout| timeout.0),
        },
    }
}

fn check_url(url: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    match url.get_ref().parse::<hyper::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
        Ok(uri) if uri.scheme_str() == Some("https") => sink.error(
            span_of(url),
            key,
            "https targets are not supported yet",
            Some("use an http:// URL; TLS through rustls comes with the load-engine work".into()),
        ),
        _ => sink.error(
            span_of(url),
            key,
            format!("`{}` is not an absolute http URL", url.get_ref()),
            Some("e.g. \"http://127.0.0.1:8080/invocations\"".into()),
        ),
    }
}

fn validate_payload(raw: &Spanned<RawPayload>, sink: &mut DiagnosticSink<'_>, job_path: &Path) -> Option<Payload> {
    let payload = raw.get_ref();
    let body = match (&payload.body, &payload.file) {
        (Some(body), None) => bytes::Bytes::from(body.clone().into_bytes()),
        (None, Some(file)) => {
            let resolved = relative_to(job_path, file.get_ref());
            match std::fs::read(&resolved) {
                Ok(bytes) => bytes::Bytes::from(bytes),
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
        _ => {
            sink.error(
                span_of(raw),
                "payload",
                "give exactly one of `body` or `file`",
                Some("e.g. body = '{\"inputs\": [1, 2, 3]}'".into()),
            );
            return None;
        }
    };
    Some(Payload {
        content_type: payload.content_type.clone().unwrap_or_else(|| "application/json".to_string()),
        accept: payload.accept.clone(),
        body,
    })
}

fn whole_seconds(value: &Spanned<DurationValue>, key: &str, sink: &mut DiagnosticSink<'_>) -> u64 {
    let duration = value.get_ref().0;
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        sink.error(
            span_of(value),
            key,
            "must be a whole number of seconds, at least 1s",
            Some("plateau measures per second; e.g. \"30s\"".into()),
        );
    }
    duration.as_secs()
}

fn validate_traffic(raw: &Spanned<RawTraffic>, sink: &mut DiagnosticSink<'_>) -> Option<Traffic> {
    let traffic = raw.get_ref();
    match (&traffic.stairs, &traffic.phases) {
        (Some(stairs), None) => {
            let stairs_ref = stairs.get_ref();
            let step_duration_s = whole_seconds(&stairs_ref.step_duration, "traffic.stairs.step_duration", sink);
            if step_duration_s < 2 && step_duration_s != 0 {
                sink.error(
                    span_of(&stairs_ref.step_duration),
                    "traffic.stairs.step_duration",
                    "steps must last at least 2s",
                    Some("a step's first second is its ramp-in and is not measured".into()),
                );
            }
            for (value, key) in [
                (&stairs_ref.users_per_step, "traffic.stairs.users_per_step"),
                (&stairs_ref.steps, "traffic.stairs.steps"),
            ] {
                if *value.get_ref() == 0 {
                    sink.error(span_of(value), key, "must be at least 1", None);
                }
            }
            Some(Traffic::Stairs {
                users_per_step: *stairs_ref.users_per_step.get_ref(),
                step_duration_s,
                steps: *stairs_ref.steps.get_ref(),
            })
        }
        (None, Some(phases)) => {
            if phases.get_ref().is_empty() {
                sink.error(span_of(phases), "traffic.phases", "needs at least one phase", None);
            }
            let phases = phases
                .get_ref()
                .iter()
                .enumerate()
                .map(|(index, phase)| {
                    let phase = phase.get_ref();
                    if !(phase.spawn_rate_per_s.get_ref().is_finite() && *phase.spawn_rate_per_s.get_ref() >= 0.0) {
                        sink.error(
                            span_of(&phase.spawn_rate_per_s),
                            format!("traffic.phases[{index}].spawn_rate_per_s"),
                            "must be a number of users per second, 0 or more",
                            None,
                        );
                    }
                    Phase {
                        initial_users: phase.initial_users,
                        spawn_rate_per_s: *phase.spawn_rate_per_s.get_ref(),
                        duration_s: whole_seconds(&phase.duration, &format!("traffic.phases[{index}].duration"), sink),
                    }
                })
                .collect();
            Some(Traffic::Phases(phases))
        }
        _ => {
            sink.error(
                span_of(raw),
                "traffic",
                "give exactly one traffic pattern: `[traffic.stairs]` or `[[traffic.phases]]`",
                Some("e.g. [traffic.stairs] users_per_step = 2, step_duration = \"10s\", steps = 6".into()),
            );
            None
        }
    }
}

fn positive(value: &Spanned<f64>, key: &str, sink: &mut DiagnosticSink<'_>) -> f64 {
    let number = *value.get_ref();
    if !(number.is_finite() && number > 0.0) {
        sink.error(span_of(value), key, format!("must be a positive number, not {number}"), None);
    }
    number
}

fn validate_stopping(raw: &RawStopping, sink: &mut DiagnosticSink<'_>) -> Stopping {
    if let Some(max) = &raw.max_invocations
        && *max.get_ref() == 0
    {
        sink.error(
            span_of(max),
            "stopping.max_invocations",
            "must be at least 1",
            Some("leave it out for no limit".into()),
        );
    }
    let latency_thresholds = raw
        .latency_thresholds
        .iter()
        .enumerate()
        .map(|(index, threshold)| LatencyThreshold {
            percentile: threshold.percentile,
            latency_ms: positive(
                &threshold.latency_ms,
                &format!("stopping.latency_thresholds[{index}].latency_ms"),
                sink,
            ),
        })
        .collect();
    Stopping {
        max_invocations: raw.max_invocations.as_ref().map(|max| *max.get_ref()),
        latency_thresholds,
        flat_invocations: raw.flat_invocations,
    }
}

fn validate_requirements(raw: &RawRequirements, sink: &mut DiagnosticSink<'_>) -> Requirements {
    let slo = raw.latency_ms.as_ref().map(|latency| LatencyThreshold {
        percentile: raw.percentile.unwrap_or(Percentile::new(99.0).expect("p99 is valid")),
        latency_ms: positive(latency, "requirements.latency_ms", sink),
    });
    let headroom_percent = raw.headroom_percent.as_ref().map_or(0.0, |headroom| {
        let value = *headroom.get_ref();
        if !(0.0..=1000.0).contains(&value) {
            sink.error(
                span_of(headroom),
                "requirements.headroom_percent",
                "must be between 0 and 1000",
                Some("20 means provision 20% above the expected peak".into()),
            );
        }
        value
    });
    Requirements {
        slo,
        objective: raw.objective,
        expected_peak_rps: raw
            .expected_peak_rps
            .as_ref()
            .map(|peak| positive(peak, "requirements.expected_peak_rps", sink)),
        headroom_percent,
    }
}

fn validate_configurations(
    raw: &Spanned<Vec<RawConfiguration>>,
    target: &Target,
    sink: &mut DiagnosticSink<'_>,
) -> Vec<Configuration> {
    let kind = target.kind;
    if raw.get_ref().is_empty() {
        sink.error(
            span_of(raw),
            "configurations",
            "needs at least one configuration",
            Some("add a [[configurations]] table".into()),
        );
    }
    let mut names: Vec<&str> = Vec::new();
    raw.get_ref()
        .iter()
        .enumerate()
        .map(|(index, config)| {
            let key = |field: &str| format!("configurations[{index}].{field}");
            let name = config.name.get_ref();
            if names.contains(&name.as_str()) {
                sink.error(
                    span_of(&config.name),
                    key("name"),
                    format!("another configuration is already named `{name}`"),
                    Some("configuration names must be unique".into()),
                );
            }
            names.push(name);
            if *config.instance_count.get_ref() == 0 {
                sink.error(span_of(&config.instance_count), key("instance_count"), "must be at least 1", None);
            }
            let price_per_hour_usd = match &config.price_per_hour_usd {
                Some(price) if price.get_ref().is_finite() && *price.get_ref() >= 0.0 => *price.get_ref(),
                Some(price) => {
                    sink.error(span_of(price), key("price_per_hour_usd"), "must be 0 or more", None);
                    0.0
                }
                None => {
                    sink.error(
                        span_of(&config.name),
                        key("price_per_hour_usd"),
                        "missing key `price_per_hour_usd`",
                        Some(
                            "plateau needs each configuration's price to rank by cost, e.g. price_per_hour_usd = 0.23"
                                .into(),
                        ),
                    );
                    0.0
                }
            };
            let reference = validate_reference(config, kind, index, sink);
            if kind == TargetKind::Http && config.url.is_none() && target.http.url.is_none() {
                sink.error(
                    span_of(&config.name),
                    key("url"),
                    "no URL to send requests to",
                    Some("set `url` under [target], or on each configuration".into()),
                );
            }
            if let Some(url) = &config.url {
                if kind == TargetKind::Http {
                    check_url(url, &key("url"), sink);
                } else {
                    sink.error(span_of(url), key("url"), "only http targets take a per-configuration url", None);
                }
            }
            Configuration {
                name: name.clone(),
                instance_type: config.instance_type.clone(),
                instance_count: *config.instance_count.get_ref(),
                price_per_hour_usd,
                url: config.url.as_ref().map(|url| url.get_ref().clone()),
                reference,
            }
        })
        .collect()
}

fn validate_reference(
    config: &RawConfiguration,
    kind: TargetKind,
    index: usize,
    sink: &mut DiagnosticSink<'_>,
) -> Option<ReferenceModel> {
    let key = |field: &str| format!("configurations[{index}].reference{field}");
    match (kind, &config.reference) {
        (TargetKind::Reference, None) => {
            sink.error(
                span_of(&config.name),
                key(""),
                "a reference configuration needs its model",
                Some("add e.g. reference = { workers = 4, service_time_ms = 20 }".into()),
            );
            None
        }
        (TargetKind::Http, Some(reference)) => {
            sink.error(
                span_of(reference),
                key(""),
                "only the reference target takes a `reference` model",
                Some("remove it, or use kind = \"reference\"".into()),
            );
            None
        }
        (TargetKind::Http, None) => None,
        (TargetKind::Reference, Some(reference)) => {
            let model = reference.get_ref();
            if *model.workers.get_ref() == 0 {
                sink.error(span_of(&model.workers), key(".workers"), "must be at least 1", None);
            }
            let service_time_ms = positive(&model.service_time_ms, &key(".service_time_ms"), sink);
            let cv = match (model.distribution, &model.cv) {
                (ServiceTimeDistribution::Fixed, None) => 0.0,
                (ServiceTimeDistribution::Fixed, Some(cv)) => {
                    sink.error(
                        span_of(cv),
                        key(".cv"),
                        "fixed service times have no variation",
                        Some("set distribution = \"lognormal\" to use cv".into()),
                    );
                    0.0
                }
                (ServiceTimeDistribution::Lognormal, cv) => {
                    cv.as_ref().map_or(0.5, |cv| positive(cv, &key(".cv"), sink))
                }
            };
            Some(ReferenceModel {
                workers: *model.workers.get_ref(),
                service_time_ms,
                distribution: model.distribution,
                cv,
            })
        }
    }
}
