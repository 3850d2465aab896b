//! Parses and validates job files. Raw serde types mirror the TOML; `Job` is the validated form every later stage
//! trusts. Validation lives only in the conversion from one to the other.

pub mod diagnostic;
pub mod import;
pub mod prices;
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
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// Raw types: exactly what the TOML says.

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JobFile")]
struct RawJobFile {
    #[schemars(with = "u32")]
    version: Spanned<u32>,
    /// Files of shared tables (a target, a traffic pattern, requirements), relative to this file. Each later
    /// file, and this one last, overrides the keys before it one by one; arrays are replaced whole.
    #[serde(default, rename = "include")]
    _include: Vec<String>,
    job: RawJob,
    /// The one target every configuration runs against ...
    target: Option<RawTarget>,
    /// ... or several named ones (`[targets.local]`, `[targets.sagemaker]`), each configuration naming its own.
    #[schemars(with = "Option<BTreeMap<String, RawTarget>>")]
    targets: Option<Spanned<BTreeMap<String, RawTarget>>>,
    #[schemars(with = "RawPayload")]
    payload: Spanned<RawPayload>,
    #[schemars(with = "RawTraffic")]
    traffic: Spanned<RawTraffic>,
    #[serde(default)]
    stopping: RawStopping,
    #[serde(default)]
    requirements: RawRequirements,
    #[schemars(with = "Vec<RawConfiguration>")]
    configurations: Spanned<Vec<RawConfiguration>>,
    #[serde(default)]
    report: RawReport,
    #[serde(default)]
    plateau: RawPlateauSettings,
    #[serde(default)]
    cloudwatch: RawCloudWatch,
    #[serde(default)]
    limits: RawLimits,
}

/// How many tests a job may run (IR's ResourceLimit).
#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
struct RawLimits {
    /// At most this many test runs: a larger environment grid is sampled (seeded by `[job] seed`).
    #[schemars(with = "Option<u32>")]
    max_tests: Option<Spanned<u32>>,
    /// Test runs at once (default 1). They share this machine's CPU: each run's own lag probe marks its steps
    /// "load generator saturated" when they starve each other.
    #[schemars(with = "Option<u32>")]
    max_parallel: Option<Spanned<u32>>,
}

/// A serverless endpoint's settings (IR's ServerlessConfig), recorded with the configuration's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Serverless {
    /// 1024 to 6144, in steps of 1024.
    pub memory_mb: u32,
    /// 1 to 200.
    pub max_concurrency: u32,
    #[serde(default)]
    pub provisioned_concurrency: u32,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PlateauSettings")]
struct RawPlateauSettings {
    #[schemars(with = "Option<f64>")]
    min_gain_percent: Option<Spanned<f64>>,
    #[schemars(with = "Option<f64>")]
    min_load_efficiency: Option<Spanned<f64>>,
    confirm_steps: Option<usize>,
    #[schemars(with = "Option<f64>")]
    max_error_rate_percent: Option<Spanned<f64>>,
}

/// The plateau detector's parameters (`[plateau]` in a job file; see `analyze` for the algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauSettings {
    /// A step is flat when its throughput gained less than this over the best step before it ...
    pub min_gain_percent: f64,
    /// ... or less than this fraction of the load it added (0.25: a quarter of linear scaling).
    pub min_load_efficiency: f64,
    /// Flat steps after the first that confirm the plateau.
    pub confirm_steps: usize,
    /// A step with more errors than this ends the search.
    pub max_error_rate_percent: f64,
}

impl Default for PlateauSettings {
    fn default() -> Self {
        Self { min_gain_percent: 3.0, min_load_efficiency: 0.25, confirm_steps: 1, max_error_rate_percent: 1.0 }
    }
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
    #[schemars(with = "String")]
    name: Spanned<String>,
    description: Option<String>,
    seed: Option<u64>,
    /// A price table of the user's own, relative to the job file; else the built-in one.
    #[schemars(with = "Option<PathBuf>")]
    price_table: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Target")]
struct RawTarget {
    #[schemars(with = "TargetKind")]
    kind: Spanned<TargetKind>,
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    method: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValue>,
    timeout: Option<DurationValue>,
    #[schemars(with = "Option<u64>")]
    max_response_bytes: Option<Spanned<u64>>,
    check: Option<RawResponseCheck>,
    #[schemars(with = "Option<HttpVersion>")]
    http_version: Option<Spanned<HttpVersion>>,
    #[schemars(with = "Option<RawTls>")]
    tls: Option<Spanned<RawTls>>,
    // Command targets: a server plateau starts itself for each configuration.
    #[schemars(with = "Option<Vec<String>>")]
    command: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<PathBuf>")]
    working_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    port: Option<u16>,
    path: Option<String>,
    #[schemars(with = "Option<RawReadiness>")]
    readiness: Option<Spanned<RawReadiness>>,
    stop_grace: Option<DurationValue>,
    // SageMaker targets: endpoints that already exist, one per configuration (`endpoint_name`).
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    profile: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    custom_attributes: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    target_variant: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    target_model: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    inference_component: Option<Spanned<String>>,
    #[schemars(with = "Option<bool>")]
    streaming: Option<Spanned<bool>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CloudWatch")]
struct RawCloudWatch {
    publish: Option<bool>,
    #[schemars(with = "Option<String>")]
    namespace: Option<Spanned<String>>,
    endpoint_metrics: Option<bool>,
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tls")]
struct RawTls {
    #[schemars(with = "Option<PathBuf>")]
    ca_file: Option<Spanned<PathBuf>>,
    #[schemars(with = "Option<PathBuf>")]
    client_cert: Option<Spanned<PathBuf>>,
    #[schemars(with = "Option<PathBuf>")]
    client_key: Option<Spanned<PathBuf>>,
    #[schemars(with = "Option<String>")]
    server_name: Option<Spanned<String>>,
}

/// Which HTTP the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
pub enum HttpVersion {
    /// HTTP/2 when an https server offers it (ALPN), else HTTP/1.1; plain http is HTTP/1.1.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 only: negotiated over https, prior knowledge (h2c) over plain http.
    #[serde(rename = "2")]
    Http2,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResponseCheck")]
struct RawResponseCheck {
    #[schemars(with = "Option<u16>")]
    status: Option<Spanned<u16>>,
    body_contains: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Readiness")]
struct RawReadiness {
    http_path: Option<String>,
    expected_status: Option<u16>,
    #[serde(default)]
    tcp: bool,
    timeout: Option<DurationValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Reference,
    Http,
    /// A server command plateau starts itself, once per configuration and environment combination.
    Command,
    /// SageMaker real-time endpoints that already exist, called with InvokeEndpoint through the AWS SDK.
    Sagemaker,
}

/// A header value given inline, or read from an environment variable so secrets stay out of the job file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum HeaderValue {
    Inline(String),
    Env { env: String },
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Payload")]
struct RawPayload {
    content_type: Option<String>,
    accept: Option<String>,
    body: Option<String>,
    #[schemars(with = "Option<PathBuf>")]
    file: Option<Spanned<PathBuf>>,
    #[schemars(with = "Option<PathBuf>")]
    plugin: Option<Spanned<PathBuf>>,
    /// Sample requests: a folder, or a `.tar.gz` of them (as IR's SamplePayloadUrl); request n sends sample
    /// n mod count, samples in file-name order.
    #[schemars(with = "Option<PathBuf>")]
    samples: Option<Spanned<PathBuf>>,
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    config: Option<Spanned<toml::Table>>,
    #[schemars(with = "Option<RawPluginLimits>")]
    limits: Option<Spanned<RawPluginLimits>>,
    #[schemars(with = "Option<RawPluginGrant>")]
    grant: Option<Spanned<RawPluginGrant>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginLimits")]
struct RawPluginLimits {
    #[schemars(with = "Option<u32>")]
    memory_mb: Option<Spanned<u32>>,
    #[schemars(with = "Option<DurationValue>")]
    call_timeout: Option<Spanned<DurationValue>>,
    #[schemars(with = "Option<u64>")]
    fuel_per_call: Option<Spanned<u64>>,
    #[schemars(with = "Option<u64>")]
    max_body_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginGrant")]
struct RawPluginGrant {
    #[schemars(with = "Option<PathBuf>")]
    read_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    random: bool,
    #[serde(default)]
    clock: bool,
    #[serde(default)]
    network: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Traffic")]
struct RawTraffic {
    #[schemars(with = "Option<RawStairs>")]
    stairs: Option<Spanned<RawStairs>>,
    #[schemars(with = "Option<Vec<RawPhase>>")]
    phases: Option<Spanned<Vec<Spanned<RawPhase>>>>,
    #[schemars(with = "Option<RawRateSteps>")]
    rate_steps: Option<Spanned<RawRateSteps>>,
    #[schemars(with = "Option<RawRateRamp>")]
    rate_ramp: Option<Spanned<RawRateRamp>>,
    #[schemars(with = "Option<RawConstantRate>")]
    constant_rate: Option<Spanned<RawConstantRate>>,
    #[schemars(with = "Option<DurationValue>")]
    warmup: Option<Spanned<DurationValue>>,
    #[schemars(with = "Option<Arrivals>")]
    arrivals: Option<Spanned<Arrivals>>,
    #[schemars(with = "Option<u32>")]
    max_in_flight: Option<Spanned<u32>>,
    #[schemars(with = "Option<DurationValue>")]
    think_time: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateSteps")]
struct RawRateSteps {
    #[schemars(with = "f64")]
    start_rate_per_s: Spanned<f64>,
    #[schemars(with = "f64")]
    step_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    step_duration: Spanned<DurationValue>,
    #[schemars(with = "u32")]
    steps: Spanned<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateRamp")]
struct RawRateRamp {
    #[schemars(with = "f64")]
    from_rate_per_s: Spanned<f64>,
    #[schemars(with = "f64")]
    to_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConstantRate")]
struct RawConstantRate {
    #[schemars(with = "f64")]
    rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

/// How an open model spaces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly spaced.
    #[default]
    Uniform,
    /// Exponential gaps (a Poisson process), seeded by `[job] seed`.
    Poisson,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stairs")]
struct RawStairs {
    #[schemars(with = "u32")]
    users_per_step: Spanned<u32>,
    #[schemars(with = "DurationValue")]
    step_duration: Spanned<DurationValue>,
    #[schemars(with = "u32")]
    steps: Spanned<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Phase")]
struct RawPhase {
    initial_users: u32,
    #[schemars(with = "f64")]
    spawn_rate_per_s: Spanned<f64>,
    #[schemars(with = "DurationValue")]
    duration: Spanned<DurationValue>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stopping")]
struct RawStopping {
    #[schemars(with = "Option<u64>")]
    max_invocations: Option<Spanned<u64>>,
    #[serde(default)]
    latency_thresholds: Vec<RawLatencyThreshold>,
    #[serde(default)]
    flat_invocations: FlatInvocations,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LatencyThreshold")]
struct RawLatencyThreshold {
    percentile: Percentile,
    #[schemars(with = "f64")]
    latency_ms: Spanned<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlatInvocations {
    /// End a configuration's ramp as soon as its plateau is confirmed.
    Stop,
    /// Run every step (SageMaker Inference Recommender's default).
    #[default]
    Continue,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Requirements")]
struct RawRequirements {
    #[schemars(with = "Option<f64>")]
    latency_ms: Option<Spanned<f64>>,
    percentile: Option<Percentile>,
    #[serde(default)]
    objective: Objective,
    #[schemars(with = "Option<f64>")]
    expected_peak_rps: Option<Spanned<f64>>,
    #[schemars(with = "Option<f64>")]
    headroom_percent: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Configuration")]
struct RawConfiguration {
    #[schemars(with = "String")]
    name: Spanned<String>,
    instance_type: String,
    /// With several `[targets.<name>]`: the one this configuration runs against.
    #[schemars(with = "Option<String>")]
    target: Option<Spanned<String>>,
    #[serde(default = "one")]
    #[schemars(with = "u32")]
    instance_count: Spanned<u32>,
    #[schemars(with = "Option<f64>")]
    price_per_hour_usd: Option<Spanned<f64>>,
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    #[schemars(with = "Option<RawReferenceModel>")]
    reference: Option<Spanned<RawReferenceModel>>,
    /// Command targets: environment variables to try, each with its values; every combination is a test run.
    #[schemars(with = "Option<BTreeMap<String, Vec<String>>>")]
    environment: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    /// Command targets: the CPUs the server may use, as taskset takes them ("0", "0-1", "0,2").
    #[schemars(with = "Option<String>")]
    cpus: Option<Spanned<String>>,
    /// Command targets: the memory MemoryUtilization is a share of (default: the machine's).
    #[schemars(with = "Option<f64>")]
    memory_limit_mb: Option<Spanned<f64>>,
    /// SageMaker targets: the existing endpoint this configuration is.
    #[schemars(with = "Option<String>")]
    endpoint_name: Option<Spanned<String>>,
    /// A serverless endpoint's memory and concurrency, as data.
    #[schemars(with = "Option<Serverless>")]
    serverless: Option<Spanned<Serverless>>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReferenceModel")]
struct RawReferenceModel {
    #[schemars(with = "u32")]
    workers: Spanned<u32>,
    #[schemars(with = "f64")]
    service_time_ms: Spanned<f64>,
    #[serde(default)]
    distribution: ServiceTimeDistribution,
    #[schemars(with = "Option<f64>")]
    cv: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub max_tests: Option<u32>,
    /// Test runs at once; one at a time when absent.
    pub max_parallel: Option<u32>,
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
    /// The `<name>` of `[targets.<name>]`; none for a job's single `[target]`.
    pub name: Option<String>,
    pub kind: TargetKind,
    pub http: HttpRequestSpec,
    /// For `command` targets: how to start, check and stop the server.
    pub command: Option<CommandSpec>,
    /// For `sagemaker` targets: where the endpoints are and how they are invoked.
    pub sagemaker: Option<SageMakerSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SageMakerSpec {
    /// None: the SDK's default chain (AWS_REGION, the profile).
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Overrides the service endpoint (VPC endpoints; the tests' emulator).
    pub endpoint_url: Option<String>,
    pub custom_attributes: Option<String>,
    pub target_variant: Option<String>,
    pub target_model: Option<String>,
    pub inference_component: Option<String>,
    /// InvokeEndpointWithResponseStream: time to first chunk and between chunks are measured too.
    pub streaming: bool,
}

/// `[cloudwatch]`: publishing plateau's client metrics, and reading the endpoint's own.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchSpec {
    /// PutMetricData of ClientInvocations, ClientInvocationErrors, ClientLatency, NumberOfUsers during the run.
    pub publish: bool,
    pub namespace: String,
    /// GetMetricData of the endpoint's metrics after each configuration (SageMaker targets; on by default).
    pub endpoint_metrics: bool,
    /// Defaults to the target's.
    pub region: Option<String>,
    /// Defaults to CloudWatch's public endpoint for the region.
    pub endpoint_url: Option<String>,
}

/// Inference Recommender's namespace, so dashboards built for it show plateau's runs too.
pub const DEFAULT_CLOUDWATCH_NAMESPACE: &str = "/aws/sagemaker/InferenceRecommendationsJobs";

/// The placeholder in a command's arguments and environment that plateau fills with the server's port.
pub const PORT_PLACEHOLDER: &str = "{port}";

#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// The program and its arguments; `{port}` is replaced by the port.
    pub argv: Vec<String>,
    pub working_dir: PathBuf,
    /// Fixed environment variables for every start; `{port}` is replaced here too.
    pub env: BTreeMap<String, String>,
    /// A fixed port, or none to have plateau pick a free loopback port.
    pub port: Option<u16>,
    /// The path of the inference request.
    pub path: String,
    pub readiness: Readiness,
    /// How long after SIGTERM the server may take before it is killed.
    pub stop_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub check: ReadinessCheck,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadinessCheck {
    /// `GET path` answers with this status.
    Http { path: String, expected_status: u16 },
    /// The port accepts a TCP connection.
    Tcp,
}

/// How each request is sent over HTTP; for the reference target the URL is filled in per run.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    pub url: Option<String>,
    pub method: String,
    pub headers: Vec<(String, HeaderValue)>,
    pub timeout: Duration,
    /// A larger response is an error (class `other`): a runaway response must not exhaust memory or skew timing.
    pub max_response_bytes: u64,
    pub check: ResponseCheck,
    pub http_version: HttpVersion,
    pub tls: TlsSpec,
}

/// TLS for https targets, beyond the system's roots: paths resolved against the job file's folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSpec {
    /// PEM certificates trusted besides the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name to verify the server's certificate against (and send as SNI), when it is not the URL's host.
    pub server_name: Option<String>,
}

/// What a response must be to count as a success; a response that fails it is a `model_error`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseCheck {
    /// An exact status; by default any 2xx or 3xx.
    pub status: Option<u16>,
    pub body_contains: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Payload {
    pub content_type: String,
    pub accept: Option<String>,
    /// The fixed body; empty when samples or a plugin make the bodies.
    pub body: bytes::Bytes,
    /// Sample bodies, sent in turn.
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

const DEFAULT_PLUGIN_MEMORY_MB: u32 = 128;
const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_PLUGIN_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

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
    /// Open model: `steps` steps of `step_duration_s`; step i offers `start_rate_per_s + i * step_rate_per_s`
    /// requests per second whatever the server does. A constant rate is one step.
    RateSteps {
        start_rate_per_s: f64,
        step_rate_per_s: f64,
        step_duration_s: u64,
        steps: u32,
    },
    /// Open model: the offered rate rises linearly over `duration_s`; analysed in 10 s windows.
    RateRamp {
        from_rate_per_s: f64,
        to_rate_per_s: f64,
        duration_s: u64,
    },
}

impl Traffic {
    /// Whether requests arrive on a schedule (open model) rather than from a number of users (closed).
    pub fn is_open(&self) -> bool {
        matches!(self, Traffic::RateSteps { .. } | Traffic::RateRamp { .. })
    }
}

/// Settings that apply to any traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrafficOptions {
    /// Seconds at the first step's load before the ramp; not measured.
    pub warmup_s: u64,
    pub arrivals: Arrivals,
    /// Open model: requests in flight at most; an arrival beyond it is dropped and counted.
    pub max_in_flight: u32,
    /// Closed model: how long a virtual user waits after a response before its next request (a person reading,
    /// a client batching). Zero sends back to back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub think_time_ms: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Default for TrafficOptions {
    fn default() -> Self {
        Self { warmup_s: 0, arrivals: Arrivals::Uniform, max_in_flight: 1024, think_time_ms: 0 }
    }
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
    /// Index into `Job::targets`.
    pub target: usize,
    pub instance_type: String,
    pub instance_count: u32,
    pub price_per_hour_usd: f64,
    /// "job file", or which table the price came from (tables are estimates).
    pub price_source: String,
    /// vCPUs of the instance type, where the price table knows it.
    pub vcpus: Option<u32>,
    /// For `http` targets: this configuration's own endpoint, overriding the target's URL.
    pub url: Option<String>,
    pub reference: Option<ReferenceModel>,
    /// Environment variables to try (command targets); the plan runs every combination.
    pub environment: BTreeMap<String, Vec<String>>,
    pub cpus: Option<CpuSet>,
    pub memory_limit_mb: Option<f64>,
    /// For `sagemaker` targets: the endpoint to invoke.
    pub endpoint_name: Option<String>,
    pub serverless: Option<Serverless>,
}

/// CPUs a server is pinned to, with their count (for CpuUtilization as a share of what it may use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSet {
    pub list: String,
    pub count: usize,
}

impl CpuSet {
    /// Parses a taskset CPU list such as "0", "0-3" or "0,2-3".
    pub fn parse(list: &str) -> Option<Self> {
        let mut count = 0;
        for part in list.split(',') {
            let (first, last) = match part.trim().split_once('-') {
                Some((first, last)) => (first.trim().parse::<usize>().ok()?, last.trim().parse::<usize>().ok()?),
                None => {
                    let cpu = part.trim().parse::<usize>().ok()?;
                    (cpu, cpu)
                }
            };
            count += last.checked_sub(first)? + 1;
        }
        Some(Self { list: list.trim().to_string(), count })
    }
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
            Traffic::RateSteps { step_duration_s, steps, .. } => step_duration_s * u64::from(*steps),
            Traffic::RateRamp { duration_s, .. } => *duration_s,
        }
    }
}

impl Job {
    pub fn target_of(&self, configuration: &Configuration) -> &Target {
        &self.targets[configuration.target]
    }

    /// A configuration's whole run: warm-up and every step.
    pub fn ramp_s(&self) -> u64 {
        self.traffic.duration_s() + self.traffic_options.warmup_s
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading.

/// Reads, parses and validates one job file, reporting every problem with its location.
/// The job file's JSON Schema (draft 2020-12), for editors (taplo, Even Better TOML) and other tools.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawJobFile)).expect("a schema serializes");
    without_null(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert("title".into(), "plateau job file".into());
        object.insert(
            "description".into(),
            "A plateau benchmark: the target, the endpoint configurations, the payload, the traffic pattern, when to \
             stop and what is required. See https://github.com/plateau-bench/plateau#job-files."
                .into(),
        );
    }
    schema
}

/// TOML has no null: an optional key is one that may be left out, never one that may be null, so the `null`
/// alternatives schemars gives `Option` fields come out.
fn without_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|kind| kind != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    object.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alternatives)) = object.get_mut("anyOf") {
                alternatives.retain(|alternative| alternative.get("type").is_none_or(|kind| kind != "null"));
                if alternatives.len() == 1 {
                    let only = alternatives.remove(0);
                    object.remove("anyOf");
                    if let Value::Object(fields) = only {
                        object.extend(fields);
                    }
                }
            }
            object.values_mut().for_each(without_null);
        }
        Value::Array(items) => items.iter_mut().for_each(without_null),
        _ => {}
    }
}

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
    let (combined, included) = with_includes(path, text)?;
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
            sink.from_toml(&error, Some(document.get_ref()));
            return Err(SpecError { diagnostics: sink.diagnostics }.located_in(&included));
        }
    };
    let job = validate(raw, &mut sink, path, text);
    sink.into_result().map_err(|error| error.located_in(&included))?;
    Ok(job.expect("validation without diagnostics yields a job"))
}

/// An included file's text and where it starts in the combined text.
pub struct Included {
    pub path: PathBuf,
    pub text: String,
    pub offset: usize,
}

/// The job file's text with its `include`d files appended, each after a comment naming it: the text a run
/// records, and the one coordinate system every span refers to (`SpecError::located_in` maps spans back to the
/// file and line they are in).
fn with_includes(path: &Path, text: &str) -> Result<(String, Vec<Included>), SpecError> {
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
    for name in names.iter().filter_map(toml::Value::as_str) {
        let include_path = relative_to(path, Path::new(name));
        let Ok(include_text) = std::fs::read_to_string(&include_path) else {
            let message = format!("cannot read the included file `{}`", include_path.display());
            diagnostics.push(problem(path, text, message, "paths are relative to the job file"));
            continue;
        };
        if toml::from_str::<toml::Table>(&include_text).is_ok_and(|table| table.contains_key("include")) {
            let message = "an included file includes nothing itself".to_string();
            let hint = "list every shared file in the job's own `include`";
            diagnostics.push(problem(&include_path, &include_text, message, hint));
            continue;
        }
        combined.push_str(&format!("\n# plateau: included from {name}\n"));
        included.push(Included { path: include_path, text: include_text.clone(), offset: combined.len() });
        combined.push_str(&include_text);
    }
    if diagnostics.is_empty() { Ok((combined, included)) } else { Err(SpecError { diagnostics }) }
}

/// One text per file, each the length of the combined text with every other file blanked (newlines kept), so
/// each parses on its own while its spans stay in combined coordinates. Included files come first, the job last.
fn segments(combined: &str, included: &[Included]) -> Vec<String> {
    let job_end = included.first().map_or(combined.len(), |first| first.offset);
    let ranges =
        included.iter().map(|file| file.offset..file.offset + file.text.len()).chain(std::iter::once(0..job_end));
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
fn merged_document(segments: &[String]) -> Result<Spanned<toml::de::DeTable<'_>>, toml::de::Error> {
    let mut files = segments.iter().map(|text| toml::de::DeTable::parse(text));
    let mut merged = files.next().expect("the job file is always a segment")?;
    for file in files {
        let (span, mut base) = (file.as_ref().map(Spanned::span).unwrap_or_default(), merged.into_inner());
        overlay(&mut base, file?.into_inner());
        merged = Spanned::new(span, base);
    }
    Ok(merged)
}

fn overlay<'i>(base: &mut toml::de::DeTable<'i>, over: toml::de::DeTable<'i>) {
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

/// A path from the job file, relative to the job file's folder.
fn relative_to(job_path: &Path, path: &Path) -> PathBuf {
    job_path.parent().unwrap_or(Path::new(".")).join(path)
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
    let payload = validate_payload(&raw.payload, sink, path);
    let traffic = validate_traffic(&raw.traffic, sink);
    let traffic_options = validate_traffic_options(&raw.traffic, traffic.as_ref(), sink);
    let stopping = validate_stopping(&raw.stopping, sink);
    let requirements = validate_requirements(&raw.requirements, sink);
    let prices = match &raw.job.price_table {
        Some(file) => prices::PriceTable::load(&relative_to(path, file.get_ref())).unwrap_or_else(|message| {
            sink.error(span_of(file), "job.price_table", message, Some("paths are relative to the job file".into()));
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
    let job = Job {
        source: JobSource {
            path: path.to_path_buf(),
            text: text.to_string(),
            sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        },
        name: raw.job.name.into_inner(),
        description: raw.job.description,
        seed: raw.job.seed.unwrap_or(0),
        targets,
        payload: payload?,
        traffic: traffic?,
        traffic_options,
        stopping,
        requirements,
        configurations,
        report_templates,
        plateau: validate_plateau_settings(&raw.plateau, sink),
        cloudwatch,
        limits,
    };
    Some(job)
}

/// The job's `[target]`, or its `[targets.<name>]` tables; exactly one of the two.
fn validate_targets(
    single: Option<&RawTarget>,
    named: Option<&Spanned<BTreeMap<String, RawTarget>>>,
    job_path: &Path,
    sink: &mut DiagnosticSink<'_>,
) -> Vec<Target> {
    match (single, named) {
        (Some(_), Some(named)) => {
            sink.error(
                span_of(named),
                "targets",
                "a job has one [target] or several [targets.<name>], not both",
                Some(
                    "name the [target] too, as [targets.<name>], and give each configuration target = \"<name>\""
                        .into(),
                ),
            );
            // Which target a configuration meant is anyone's guess: checking them against one would mislead.
            return Vec::new();
        }
        (None, None) => sink.error(
            None,
            "target",
            "the job names no target",
            Some("add [target] with kind = \"reference\", \"http\", \"command\" or \"sagemaker\"".into()),
        ),
        (None, Some(named)) if named.get_ref().is_empty() => {
            sink.error(span_of(named), "targets", "needs at least one target", Some("add [targets.<name>]".into()))
        }
        _ => {}
    }
    let single = single.map(|raw| validate_target(raw, None, job_path, sink));
    let named = named.into_iter().flat_map(|named| named.get_ref());
    single.into_iter().chain(named.map(|(name, raw)| validate_target(raw, Some(name), job_path, sink))).collect()
}

fn validate_target(raw: &RawTarget, name: Option<&str>, job_path: &Path, sink: &mut DiagnosticSink<'_>) -> Target {
    let prefix = name.map_or_else(|| "target".to_string(), |name| format!("targets.{name}"));
    let key = |field: &str| format!("{prefix}.{field}");
    let kind = *raw.kind.get_ref();
    let method = raw.method.as_ref().map_or_else(|| "POST".to_string(), |m| m.get_ref().to_ascii_uppercase());
    if let Some(raw_method) = &raw.method
        && hyper::Method::from_bytes(method.as_bytes()).is_err()
    {
        sink.error(
            span_of(raw_method),
            key("method"),
            format!("`{}` is not an HTTP method", raw_method.get_ref()),
            Some("use POST, PUT or GET".into()),
        );
    }
    match (&kind, &raw.url) {
        (TargetKind::Reference, Some(url)) => sink.error(
            span_of(url),
            key("url"),
            "the reference target serves itself; it takes no url",
            Some("remove `url`, or use kind = \"http\" to benchmark your own server".into()),
        ),
        (TargetKind::Http, Some(url)) => check_url(url, &key("url"), sink),
        _ => {}
    }
    for (header, value) in &raw.headers {
        if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            sink.error(
                span_of(&raw.kind),
                key(&format!("headers.{header}")),
                format!("`{header}` is not a valid header name"),
                None,
            );
        }
        if let HeaderValue::Inline(text) = value
            && hyper::header::HeaderValue::from_str(text).is_err()
        {
            sink.error(
                None,
                key(&format!("headers.{header}")),
                "the header value has characters HTTP does not allow",
                None,
            );
        }
    }
    let command = validate_command(raw, &prefix, sink)
        .map(|command| CommandSpec { working_dir: relative_to(job_path, &command.working_dir), ..command });
    let sagemaker = validate_sagemaker(raw, &prefix, sink);
    Target {
        name: name.map(str::to_string),
        kind,
        command,
        sagemaker,
        http: HttpRequestSpec {
            http_version: raw.http_version.as_ref().map_or(HttpVersion::Auto, |version| *version.get_ref()),
            tls: validate_tls(raw.tls.as_ref(), &prefix, job_path, sink),
            url: raw.url.as_ref().map(|url| url.get_ref().clone()),
            method,
            headers: raw.headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
            timeout: raw.timeout.map_or(DEFAULT_TIMEOUT, |timeout| timeout.0),
            max_response_bytes: raw.max_response_bytes.as_ref().map_or(DEFAULT_MAX_RESPONSE_BYTES, |max| {
                if *max.get_ref() == 0 {
                    sink.error(span_of(max), key("max_response_bytes"), "must be at least 1", None);
                }
                *max.get_ref()
            }),
            check: raw.check.as_ref().map_or_else(ResponseCheck::default, |check| {
                if let Some(status) = &check.status
                    && !(100..=599).contains(status.get_ref())
                {
                    sink.error(span_of(status), key("check.status"), "is not an HTTP status", Some("e.g. 200".into()));
                }
                ResponseCheck {
                    status: check.status.as_ref().map(|status| *status.get_ref()),
                    body_contains: check.body_contains.clone(),
                }
            }),
        },
    }
}

fn validate_plateau_settings(raw: &RawPlateauSettings, sink: &mut DiagnosticSink<'_>) -> PlateauSettings {
    let defaults = PlateauSettings::default();
    let percent = |value: &Option<Spanned<f64>>, key: &str, default: f64, sink: &mut DiagnosticSink<'_>| {
        value.as_ref().map_or(default, |value| {
            if !(0.0..=100.0).contains(value.get_ref()) {
                sink.error(span_of(value), key, "must be between 0 and 100", None);
            }
            *value.get_ref()
        })
    };
    let min_load_efficiency = raw.min_load_efficiency.as_ref().map_or(defaults.min_load_efficiency, |value| {
        if !(0.0..=1.0).contains(value.get_ref()) {
            sink.error(
                span_of(value),
                "plateau.min_load_efficiency",
                "must be between 0 and 1",
                Some("0.25 means a quarter of linear scaling".into()),
            );
        }
        *value.get_ref()
    });
    PlateauSettings {
        min_gain_percent: percent(&raw.min_gain_percent, "plateau.min_gain_percent", defaults.min_gain_percent, sink),
        min_load_efficiency,
        confirm_steps: raw.confirm_steps.unwrap_or(defaults.confirm_steps),
        max_error_rate_percent: percent(
            &raw.max_error_rate_percent,
            "plateau.max_error_rate_percent",
            defaults.max_error_rate_percent,
            sink,
        ),
    }
}

fn validate_command(raw: &RawTarget, prefix: &str, sink: &mut DiagnosticSink<'_>) -> Option<CommandSpec> {
    let key = |field: &str| format!("{prefix}.{field}");
    let command_keys = [
        ("command", raw.command.is_some()),
        ("working_dir", raw.working_dir.is_some()),
        ("env", !raw.env.is_empty()),
        ("port", raw.port.is_some()),
        ("path", raw.path.is_some()),
        ("readiness", raw.readiness.is_some()),
        ("stop_grace", raw.stop_grace.is_some()),
    ];
    if *raw.kind.get_ref() != TargetKind::Command {
        for (field, _) in command_keys.iter().filter(|(_, present)| *present) {
            sink.error(
                span_of(&raw.kind),
                key(field),
                format!("`{field}` applies only to kind = \"command\""),
                Some("remove it, or set kind = \"command\" to have plateau start the server".into()),
            );
        }
        return None;
    }
    let Some(command) = &raw.command else {
        sink.error(
            span_of(&raw.kind),
            key("command"),
            "a command target needs the command that starts the server",
            Some("e.g. command = [\"python3\", \"server.py\", \"--port\", \"{port}\"]".into()),
        );
        return None;
    };
    if command.get_ref().is_empty() || command.get_ref()[0].trim().is_empty() {
        sink.error(span_of(command), key("command"), "the command is empty", None);
    }
    let mentions_port = command.get_ref().iter().chain(raw.env.values()).any(|text| text.contains(PORT_PLACEHOLDER));
    if raw.port.is_none() && !mentions_port {
        sink.error(
            span_of(command),
            key("command"),
            "plateau cannot tell which port the server listens on",
            Some(format!("put {{port}} in the command or in {prefix}.env, or set {prefix}.port")),
        );
    }
    if raw.url.is_some() {
        sink.error(
            span_of(&raw.kind),
            key("url"),
            "a command target's URL is http://127.0.0.1:<port><path>",
            Some("use `path` instead of `url`".into()),
        );
    }
    let path = raw.path.clone().unwrap_or_else(|| "/invocations".to_string());
    if !path.starts_with('/') {
        sink.error(span_of(command), key("path"), format!("`{path}` must start with /"), None);
    }
    let readiness = raw.readiness.as_ref().map(|readiness| readiness.get_ref());
    let check = match readiness {
        Some(RawReadiness { tcp: true, http_path: None, expected_status: None, .. }) => ReadinessCheck::Tcp,
        Some(RawReadiness { tcp: true, .. }) => {
            sink.error(
                raw.readiness.as_ref().and_then(span_of),
                key("readiness"),
                "choose a TCP check or an HTTP check, not both",
                Some("remove `tcp`, or remove `http_path` and `expected_status`".into()),
            );
            ReadinessCheck::Tcp
        }
        _ => ReadinessCheck::Http {
            path: readiness.and_then(|readiness| readiness.http_path.clone()).unwrap_or_else(|| "/ping".to_string()),
            expected_status: readiness.and_then(|readiness| readiness.expected_status).unwrap_or(200),
        },
    };
    let timeout =
        readiness.and_then(|readiness| readiness.timeout).map_or(Duration::from_secs(60), |timeout| timeout.0);
    Some(CommandSpec {
        argv: command.get_ref().clone(),
        working_dir: raw.working_dir.as_ref().map_or_else(PathBuf::new, |folder| folder.get_ref().clone()),
        env: raw.env.clone(),
        port: raw.port,
        path,
        readiness: Readiness { check, timeout },
        stop_grace: raw.stop_grace.map_or(Duration::from_secs(5), |grace| grace.0),
    })
}

fn validate_limits(
    raw: &RawLimits,
    configurations: usize,
    targets: &[Target],
    sink: &mut DiagnosticSink<'_>,
) -> Limits {
    let max_tests = raw.max_tests.as_ref().map(|max| {
        if (*max.get_ref() as usize) < configurations.max(1) {
            sink.error(
                span_of(max),
                "limits.max_tests",
                format!("{} tests cannot cover the job's {configurations} configurations", max.get_ref()),
                Some("each configuration needs at least one test; raise max_tests or remove configurations".into()),
            );
        }
        *max.get_ref()
    });
    let max_parallel = raw.max_parallel.as_ref().map(|max| at_least_one(max, "limits.max_parallel", sink));
    if let Some(max) = raw.max_parallel.as_ref().filter(|max| *max.get_ref() > 1)
        && let Some(target) = targets.iter().find(|target| target.command.as_ref().is_some_and(|c| c.port.is_some()))
    {
        let name = target.name.as_ref().map_or_else(|| "target".to_string(), |name| format!("targets.{name}"));
        sink.error(
            span_of(max),
            "limits.max_parallel",
            format!("servers started at once cannot share {name}.port"),
            Some("let plateau choose a free port with {port} in the command, or keep max_parallel = 1".into()),
        );
    }
    Limits { max_tests, max_parallel }
}

fn validate_tls(
    raw: Option<&Spanned<RawTls>>,
    prefix: &str,
    job_path: &Path,
    sink: &mut DiagnosticSink<'_>,
) -> TlsSpec {
    let Some(raw) = raw else { return TlsSpec::default() };
    let tls = raw.get_ref();
    let mut file = |value: &Option<Spanned<PathBuf>>, field: &str| {
        let key = format!("{prefix}.tls.{field}");
        value.as_ref().map(|path| {
            let resolved = relative_to(job_path, path.get_ref());
            if !resolved.is_file() {
                sink.error(
                    span_of(path),
                    key,
                    format!("no file at `{}`", resolved.display()),
                    Some("paths are relative to the job file; PEM format".into()),
                );
            }
            resolved
        })
    };
    let spec = TlsSpec {
        ca_file: file(&tls.ca_file, "ca_file"),
        client_cert: file(&tls.client_cert, "client_cert"),
        client_key: file(&tls.client_key, "client_key"),
        server_name: tls.server_name.as_ref().map(|name| name.get_ref().clone()),
    };
    if spec.client_cert.is_some() != spec.client_key.is_some() {
        sink.error(
            span_of(raw),
            format!("{prefix}.tls"),
            "mutual TLS needs both `client_cert` and `client_key`",
            Some("give both PEM files, or neither".into()),
        );
    }
    spec
}

fn validate_sagemaker(raw: &RawTarget, prefix: &str, sink: &mut DiagnosticSink<'_>) -> Option<SageMakerSpec> {
    let text = |value: &Option<Spanned<String>>| value.as_ref().map(|value| value.get_ref().clone());
    let sagemaker_only = [
        ("region", raw.region.as_ref().and_then(span_of)),
        ("profile", raw.profile.as_ref().and_then(span_of)),
        ("endpoint_url", raw.endpoint_url.as_ref().and_then(span_of)),
        ("custom_attributes", raw.custom_attributes.as_ref().and_then(span_of)),
        ("target_variant", raw.target_variant.as_ref().and_then(span_of)),
        ("target_model", raw.target_model.as_ref().and_then(span_of)),
        ("inference_component", raw.inference_component.as_ref().and_then(span_of)),
        ("streaming", raw.streaming.as_ref().and_then(span_of)),
    ];
    if *raw.kind.get_ref() != TargetKind::Sagemaker {
        for (field, span) in sagemaker_only.into_iter().filter(|(_, span)| span.is_some()) {
            sink.error(
                span,
                format!("{prefix}.{field}"),
                format!("`{field}` applies only to sagemaker targets"),
                Some("remove it, or use kind = \"sagemaker\"".into()),
            );
        }
        return None;
    }
    if let Some(url) = &raw.endpoint_url {
        check_absolute_url(url, &format!("{prefix}.endpoint_url"), AWS_ENDPOINT_HINT, sink);
    }
    if let Some(region) = &raw.region {
        check_region(region, &format!("{prefix}.region"), sink);
    }
    let http_only = [
        ("url", raw.url.as_ref().map(span_of)),
        ("method", raw.method.as_ref().map(span_of)),
        ("check", raw.check.as_ref().map(|_| span_of(&raw.kind))),
    ];
    for (field, span) in http_only {
        if let Some(span) = span {
            sink.error(
                span,
                format!("{prefix}.{field}"),
                format!("a sagemaker target takes no `{field}`: requests go through InvokeEndpoint"),
                Some("name each configuration's endpoint with `endpoint_name`".into()),
            );
        }
    }
    Some(SageMakerSpec {
        region: text(&raw.region),
        profile: text(&raw.profile),
        endpoint_url: text(&raw.endpoint_url),
        custom_attributes: text(&raw.custom_attributes),
        target_variant: text(&raw.target_variant),
        target_model: text(&raw.target_model),
        inference_component: text(&raw.inference_component),
        streaming: raw.streaming.as_ref().is_some_and(|streaming| *streaming.get_ref()),
    })
}

const AWS_ENDPOINT_HINT: &str = "e.g. \"https://runtime.sagemaker.us-east-1.amazonaws.com\"";

/// AWS region names look like `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
fn check_region(region: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    let name = region.get_ref();
    let parts: Vec<&str> = name.split('-').collect();
    let plausible = parts.len() >= 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()));
    if !plausible {
        sink.error(
            span_of(region),
            key,
            format!("`{name}` is not an AWS region name"),
            Some("e.g. \"us-east-1\"".into()),
        );
    }
}

/// SageMaker's own rule: up to 63 letters, digits and hyphens, not starting or ending with a hyphen.
fn check_endpoint_name(name: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    let text = name.get_ref();
    let valid = (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if !valid {
        sink.error(
            span_of(name),
            key,
            format!("`{text}` is not a SageMaker endpoint name"),
            Some("1 to 63 letters, digits and hyphens, not starting or ending with a hyphen".into()),
        );
    }
}

fn validate_cloudwatch(raw: &RawCloudWatch, targets: &[Target], sink: &mut DiagnosticSink<'_>) -> CloudWatchSpec {
    let sagemaker = targets.iter().find_map(|target| target.sagemaker.as_ref());
    let is_sagemaker = sagemaker.is_some();
    if let Some(url) = &raw.endpoint_url {
        check_absolute_url(url, "cloudwatch.endpoint_url", AWS_ENDPOINT_HINT, sink);
    }
    if let Some(region) = &raw.region {
        check_region(region, "cloudwatch.region", sink);
    }
    let endpoint_metrics = raw.endpoint_metrics.unwrap_or(is_sagemaker);
    if endpoint_metrics && !is_sagemaker {
        sink.error(
            None,
            "cloudwatch.endpoint_metrics",
            "only SageMaker endpoints have endpoint metrics in CloudWatch",
            Some("set it to false, or use [target] kind = \"sagemaker\"".into()),
        );
    }
    CloudWatchSpec {
        publish: raw.publish.unwrap_or(false),
        namespace: raw
            .namespace
            .as_ref()
            .map_or_else(|| DEFAULT_CLOUDWATCH_NAMESPACE.to_string(), |namespace| namespace.get_ref().clone()),
        endpoint_metrics,
        region: raw
            .region
            .as_ref()
            .map(|region| region.get_ref().clone())
            .or_else(|| sagemaker.and_then(|s| s.region.clone())),
        // Not inherited from the target: a SageMaker Runtime VPC endpoint does not serve CloudWatch.
        endpoint_url: raw.endpoint_url.as_ref().map(|url| url.get_ref().clone()),
    }
}

/// An absolute http or https URL with a host.
fn check_absolute_url(url: &Spanned<String>, key: &str, hint: &str, sink: &mut DiagnosticSink<'_>) {
    let parsed = url.get_ref().parse::<hyper::Uri>().ok();
    let valid = parsed.as_ref().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|host| !host.is_empty())
    });
    if !valid {
        sink.error(
            span_of(url),
            key,
            format!("`{}` is not an absolute http or https URL", url.get_ref()),
            Some(hint.into()),
        );
    }
}

fn check_url(url: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    check_absolute_url(
        url,
        key,
        "e.g. \"http://127.0.0.1:8080/invocations\" or \"https://model.internal/v1/predict\"",
        sink,
    );
}

fn validate_payload(raw: &Spanned<RawPayload>, sink: &mut DiagnosticSink<'_>, job_path: &Path) -> Option<Payload> {
    let payload = raw.get_ref();
    let mut body = bytes::Bytes::new();
    let mut plugin = None;
    let mut samples = Vec::new();
    let sources = [payload.body.is_some(), payload.file.is_some(), payload.plugin.is_some(), payload.samples.is_some()];
    match (&payload.body, &payload.file, &payload.plugin) {
        _ if sources.iter().filter(|given| **given).count() != 1 => {
            sink.error(
                span_of(raw),
                "payload",
                "give exactly one of `body`, `file`, `samples` or `plugin`",
                Some("e.g. body = '{\"inputs\": [1, 2, 3]}'".into()),
            );
            return None;
        }
        (Some(text), _, _) => body = bytes::Bytes::from(text.clone().into_bytes()),
        (_, Some(file), _) => {
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
        (_, _, Some(path)) => plugin = Some(validate_plugin(payload, path, sink, job_path)?),
        _ => {
            let folder = payload.samples.as_ref().expect("one source is given");
            let resolved = relative_to(job_path, folder.get_ref());
            match read_samples(&resolved) {
                Ok(read) => samples = read,
                Err(message) => {
                    sink.error(
                        span_of(folder),
                        "payload.samples",
                        message,
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

/// Every regular file in a folder (recursively), or in a `.tar.gz` / `.tgz`, in path order.
fn read_samples(path: &Path) -> Result<Vec<bytes::Bytes>, String> {
    let mut named: Vec<(String, Vec<u8>)> = Vec::new();
    let name = path.to_string_lossy();
    if path.is_dir() {
        let mut folders = vec![path.to_path_buf()];
        while let Some(folder) = folders.pop() {
            let entries =
                std::fs::read_dir(&folder).map_err(|error| format!("cannot read `{}`: {error}", folder.display()))?;
            for entry in entries.flatten() {
                let entry_path = entry.path();
                if entry_path.is_dir() {
                    folders.push(entry_path);
                } else {
                    let bytes = std::fs::read(&entry_path)
                        .map_err(|error| format!("cannot read `{}`: {error}", entry_path.display()))?;
                    named.push((entry_path.to_string_lossy().into_owned(), bytes));
                }
            }
        }
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let file = std::fs::File::open(path).map_err(|error| format!("cannot open `{name}`: {error}"))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let entries = archive.entries().map_err(|error| format!("`{name}` is not a .tar.gz: {error}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|error| format!("`{name}` is not a readable .tar.gz: {error}"))?;
            if entry.header().entry_type().is_file() {
                let entry_name = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes)
                    .map_err(|error| format!("cannot read `{entry_name}` in `{name}`: {error}"))?;
                named.push((entry_name, bytes));
            }
        }
    } else {
        return Err(format!("`{name}` is neither a folder nor a .tar.gz"));
    }
    if named.is_empty() {
        return Err(format!("`{name}` holds no sample files"));
    }
    named.sort();
    Ok(named.into_iter().map(|(_, bytes)| bytes::Bytes::from(bytes)).collect())
}

fn validate_plugin(
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

/// A rate in requests per second: finite and not negative (positive where `positive_only`).
fn rate(value: &Spanned<f64>, key: &str, positive_only: bool, sink: &mut DiagnosticSink<'_>) -> f64 {
    let number = *value.get_ref();
    if !number.is_finite() || number < 0.0 || (positive_only && number == 0.0) {
        let expected = if positive_only { "more than 0" } else { "0 or more" };
        sink.error(span_of(value), key, format!("must be a rate in requests per second, {expected}"), None);
    }
    number
}

/// Steps of at least two whole seconds: the first second of each is its ramp-in.
fn step_seconds(value: &Spanned<DurationValue>, key: &str, sink: &mut DiagnosticSink<'_>) -> u64 {
    let seconds = whole_seconds(value, key, sink);
    if seconds == 1 {
        sink.error(
            span_of(value),
            key,
            "steps must last at least 2s",
            Some("a step's first second is its ramp-in and is not measured".into()),
        );
    }
    seconds
}

fn at_least_one(value: &Spanned<u32>, key: &str, sink: &mut DiagnosticSink<'_>) -> u32 {
    if *value.get_ref() == 0 {
        sink.error(span_of(value), key, "must be at least 1", None);
    }
    *value.get_ref()
}

fn validate_traffic(raw: &Spanned<RawTraffic>, sink: &mut DiagnosticSink<'_>) -> Option<Traffic> {
    let traffic = raw.get_ref();
    let given = [
        traffic.stairs.is_some(),
        traffic.phases.is_some(),
        traffic.rate_steps.is_some(),
        traffic.rate_ramp.is_some(),
        traffic.constant_rate.is_some(),
    ];
    if given.iter().filter(|given| **given).count() != 1 {
        sink.error(
            span_of(raw),
            "traffic",
            "give exactly one traffic pattern: [traffic.stairs], [[traffic.phases]] (virtual users), or [traffic.rate_steps], [traffic.rate_ramp], [traffic.constant_rate] (arrival rate)",
            Some("e.g. [traffic.stairs] users_per_step = 2, step_duration = \"10s\", steps = 6".into()),
        );
        return None;
    }
    if let Some(stairs) = &traffic.stairs {
        let stairs = stairs.get_ref();
        return Some(Traffic::Stairs {
            users_per_step: at_least_one(&stairs.users_per_step, "traffic.stairs.users_per_step", sink),
            step_duration_s: step_seconds(&stairs.step_duration, "traffic.stairs.step_duration", sink),
            steps: at_least_one(&stairs.steps, "traffic.stairs.steps", sink),
        });
    }
    if let Some(steps) = &traffic.rate_steps {
        let steps = steps.get_ref();
        let key = |field: &str| format!("traffic.rate_steps.{field}");
        return Some(Traffic::RateSteps {
            start_rate_per_s: rate(&steps.start_rate_per_s, &key("start_rate_per_s"), true, sink),
            step_rate_per_s: rate(&steps.step_rate_per_s, &key("step_rate_per_s"), false, sink),
            step_duration_s: step_seconds(&steps.step_duration, &key("step_duration"), sink),
            steps: at_least_one(&steps.steps, &key("steps"), sink),
        });
    }
    if let Some(constant) = &traffic.constant_rate {
        let constant = constant.get_ref();
        return Some(Traffic::RateSteps {
            start_rate_per_s: rate(&constant.rate_per_s, "traffic.constant_rate.rate_per_s", true, sink),
            step_rate_per_s: 0.0,
            step_duration_s: step_seconds(&constant.duration, "traffic.constant_rate.duration", sink),
            steps: 1,
        });
    }
    if let Some(ramp) = &traffic.rate_ramp {
        let ramp = ramp.get_ref();
        return Some(Traffic::RateRamp {
            from_rate_per_s: rate(&ramp.from_rate_per_s, "traffic.rate_ramp.from_rate_per_s", true, sink),
            to_rate_per_s: rate(&ramp.to_rate_per_s, "traffic.rate_ramp.to_rate_per_s", true, sink),
            duration_s: step_seconds(&ramp.duration, "traffic.rate_ramp.duration", sink),
        });
    }
    let phases = traffic.phases.as_ref()?;
    if phases.get_ref().is_empty() {
        sink.error(span_of(phases), "traffic.phases", "needs at least one phase", None);
    }
    let phases = phases
        .get_ref()
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            let phase = phase.get_ref();
            let key = |field: &str| format!("traffic.phases[{index}].{field}");
            if !(phase.spawn_rate_per_s.get_ref().is_finite() && *phase.spawn_rate_per_s.get_ref() >= 0.0) {
                sink.error(
                    span_of(&phase.spawn_rate_per_s),
                    key("spawn_rate_per_s"),
                    "must be a number of users per second, 0 or more",
                    None,
                );
            }
            Phase {
                initial_users: phase.initial_users,
                spawn_rate_per_s: *phase.spawn_rate_per_s.get_ref(),
                duration_s: whole_seconds(&phase.duration, &key("duration"), sink),
            }
        })
        .collect();
    Some(Traffic::Phases(phases))
}

fn validate_traffic_options(
    raw: &Spanned<RawTraffic>,
    traffic: Option<&Traffic>,
    sink: &mut DiagnosticSink<'_>,
) -> TrafficOptions {
    let raw = raw.get_ref();
    let open = traffic.is_some_and(Traffic::is_open);
    let mut options = TrafficOptions::default();
    if let Some(warmup) = &raw.warmup {
        options.warmup_s = whole_seconds(warmup, "traffic.warmup", sink);
    }
    if let Some(arrivals) = &raw.arrivals {
        options.arrivals = *arrivals.get_ref();
    }
    if let Some(max_in_flight) = &raw.max_in_flight {
        options.max_in_flight = at_least_one(max_in_flight, "traffic.max_in_flight", sink);
    }
    if let Some(think_time) = &raw.think_time {
        let duration = think_time.get_ref().0;
        options.think_time_ms = duration.as_millis() as u64;
        if open {
            sink.error(
                span_of(think_time),
                "traffic.think_time",
                "`think_time` applies to virtual users only",
                Some("an arrival rate already says when each request is sent".into()),
            );
        } else if duration.subsec_micros() % 1000 != 0 {
            sink.error(span_of(think_time), "traffic.think_time", "must be whole milliseconds", None);
        }
    }
    if !open && traffic.is_some() {
        let open_only = [
            ("arrivals", raw.arrivals.as_ref().map(Spanned::span)),
            ("max_in_flight", raw.max_in_flight.as_ref().map(Spanned::span)),
        ];
        for (key, span) in open_only {
            if let Some(span) = span {
                sink.error(
                    Some(span),
                    format!("traffic.{key}"),
                    format!("`{key}` applies to arrival-rate patterns only"),
                    Some("virtual users send their next request when the last one returns".into()),
                );
            }
        }
    }
    options
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
    targets: &[Target],
    prices: &prices::PriceTable,
    sink: &mut DiagnosticSink<'_>,
) -> Vec<Configuration> {
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
        .filter_map(|(index, config)| {
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
            let listed = prices.instances.get(&config.instance_type);
            let (price_per_hour_usd, price_source) = match (&config.price_per_hour_usd, listed) {
                (Some(price), _) if price.get_ref().is_finite() && *price.get_ref() >= 0.0 => {
                    (*price.get_ref(), "job file".to_string())
                }
                (Some(price), _) => {
                    sink.error(span_of(price), key("price_per_hour_usd"), "must be 0 or more", None);
                    (0.0, String::new())
                }
                (None, Some(listed)) => (listed.price_per_hour_usd, prices.describe()),
                (None, None) => {
                    let known: Vec<&str> = prices.instances.keys().map(String::as_str).collect();
                    let hint = match diagnostic::closest(&config.instance_type, &known) {
                        Some(close) => format!("did you mean instance_type = \"{close}\"? Or set price_per_hour_usd"),
                        None => "set price_per_hour_usd, e.g. price_per_hour_usd = 0.23".to_string(),
                    };
                    sink.error(
                        span_of(&config.name),
                        key("price_per_hour_usd"),
                        format!("no price for `{}`: it is not in {}", config.instance_type, prices.source),
                        Some(hint),
                    );
                    (0.0, String::new())
                }
            };
            // Without a target there is nothing to check the rest against; that error is reported already.
            let target_index = target_of(config, targets, &key("target"), sink)?;
            let target = &targets[target_index];
            let kind = target.kind;
            let reference = validate_reference(config, kind, index, sink);
            let command_only = [
                ("environment", config.environment.is_some(), config.environment.as_ref().and_then(span_of)),
                ("cpus", config.cpus.is_some(), config.cpus.as_ref().and_then(span_of)),
                (
                    "memory_limit_mb",
                    config.memory_limit_mb.is_some(),
                    config.memory_limit_mb.as_ref().and_then(span_of),
                ),
            ];
            for (field, present, span) in command_only {
                if present && kind != TargetKind::Command {
                    sink.error(
                        span.or_else(|| span_of(&config.name)),
                        key(field),
                        format!("`{field}` applies only to command targets, which plateau starts itself"),
                        Some("remove it, or use [target] kind = \"command\"".into()),
                    );
                }
            }
            for (variable, values) in config.environment.iter().flat_map(|environment| environment.get_ref()) {
                if values.is_empty() {
                    let span = config.environment.as_ref().and_then(span_of);
                    sink.error(span, key(&format!("environment.{variable}")), "needs at least one value", None);
                }
            }
            if let Some(cpus) = &config.cpus
                && CpuSet::parse(cpus.get_ref()).is_none()
            {
                sink.error(
                    span_of(cpus),
                    key("cpus"),
                    format!("`{}` is not a CPU list", cpus.get_ref()),
                    Some("e.g. \"0\", \"0-1\" or \"0,2\"".into()),
                );
            }
            match (&config.endpoint_name, kind) {
                (None, TargetKind::Sagemaker) => sink.error(
                    span_of(&config.name),
                    key("endpoint_name"),
                    "a SageMaker configuration names its endpoint",
                    Some("e.g. endpoint_name = \"my-model-g5-xlarge\" (the endpoint must already exist)".into()),
                ),
                (Some(name), TargetKind::Sagemaker) => check_endpoint_name(name, &key("endpoint_name"), sink),
                (Some(name), _) => sink.error(
                    span_of(name),
                    key("endpoint_name"),
                    "only sagemaker targets take an endpoint name",
                    Some("remove it, or use [target] kind = \"sagemaker\"".into()),
                ),
                (None, _) => {}
            }
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
            Some(Configuration {
                name: name.clone(),
                target: target_index,
                instance_type: config.instance_type.clone(),
                instance_count: *config.instance_count.get_ref(),
                price_per_hour_usd,
                price_source,
                vcpus: listed.map(|listed| listed.vcpus),
                url: config.url.as_ref().map(|url| url.get_ref().clone()),
                reference,
                environment: config
                    .environment
                    .as_ref()
                    .map(|environment| environment.get_ref().clone())
                    .unwrap_or_default(),
                cpus: config.cpus.as_ref().and_then(|cpus| CpuSet::parse(cpus.get_ref())),
                memory_limit_mb: config
                    .memory_limit_mb
                    .as_ref()
                    .map(|limit| positive(limit, &key("memory_limit_mb"), sink)),
                endpoint_name: config.endpoint_name.as_ref().map(|name| name.get_ref().clone()),
                serverless: config.serverless.as_ref().map(|serverless| {
                    let settings = *serverless.get_ref();
                    let memory_ok = (1024..=6144).contains(&settings.memory_mb) && settings.memory_mb % 1024 == 0;
                    if !memory_ok || !(1..=200).contains(&settings.max_concurrency) {
                        sink.error(
                            span_of(serverless),
                            key("serverless"),
                            "memory_mb must be 1024 to 6144 in steps of 1024, max_concurrency 1 to 200",
                            Some("as SageMaker serverless endpoints allow".into()),
                        );
                    }
                    settings
                }),
            })
        })
        .collect()
}

/// The index of the target a configuration runs against: the job's only one, or the one it names.
fn target_of(config: &RawConfiguration, targets: &[Target], key: &str, sink: &mut DiagnosticSink<'_>) -> Option<usize> {
    let names: Vec<&str> = targets.iter().filter_map(|target| target.name.as_deref()).collect();
    let listed = || names.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ");
    match &config.target {
        None if targets.len() == 1 => Some(0),
        None => {
            if !targets.is_empty() {
                let message = format!("the job has {} targets; this configuration names none", targets.len());
                sink.error(span_of(&config.name), key, message, Some(format!("add target = one of {}", listed())));
            }
            None
        }
        Some(wanted) if names.is_empty() => {
            sink.error(
                span_of(wanted),
                key,
                "the job's one [target] has no name to choose",
                Some("remove `target`, or name the job's targets as [targets.<name>]".into()),
            );
            None
        }
        Some(wanted) => {
            let found = names.iter().position(|name| name == wanted.get_ref());
            if found.is_none() {
                let hint = match diagnostic::closest(wanted.get_ref(), &names) {
                    Some(close) => format!("did you mean target = \"{close}\"?"),
                    None => format!("the job's targets are {}", listed()),
                };
                sink.error(span_of(wanted), key, format!("no target is named `{}`", wanted.get_ref()), Some(hint));
            }
            found
        }
    }
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
        (TargetKind::Http | TargetKind::Command | TargetKind::Sagemaker, Some(reference)) => {
            sink.error(
                span_of(reference),
                key(""),
                "only the reference target takes a `reference` model",
                Some("remove it, or use kind = \"reference\"".into()),
            );
            None
        }
        (TargetKind::Http | TargetKind::Command | TargetKind::Sagemaker, None) => None,
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
