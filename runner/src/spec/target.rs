//! `[target]` and `[targets.<name>]`: what the requests go to, and how they are sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::places::{AWS_ENDPOINT_HINT, check_absolute_url, check_region};
use super::provision::{ProvisionSpec, validate_provision};
use super::{DurationValue, printable, relative_to, span_of};
use crate::tokenizer::Tokenizer;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Target")]
pub(super) struct RawTarget {
    /// What is benchmarked: reference (built-in), http, command (a server plateau starts) or sagemaker.
    #[schemars(with = "TargetKind")]
    kind: Spanned<TargetKind>,
    /// HTTP targets: the endpoint URL (or per configuration).
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    /// HTTP: the request method (default POST).
    #[schemars(with = "Option<String>")]
    method: Option<Spanned<String>>,
    /// Headers sent with every request: a value inline, or { env = "NAME" } to read a secret from the environment.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValue>,
    timeout: Option<DurationValue>,
    /// A longer response is an error and is not read further (default 64 MiB).
    #[schemars(with = "Option<u64>")]
    max_response_bytes: Option<Spanned<u64>>,
    /// What counts as a good response: a status and text the body must hold.
    check: Option<RawResponseCheck>,
    #[schemars(with = "Option<HttpVersion>")]
    http_version: Option<Spanned<HttpVersion>>,
    /// The API the responses follow, for a language model's token figures: "openai" (chat or text completions,
    /// streamed as server-sent events or whole with `usage`). For http, command and sagemaker targets (for
    /// SageMaker, what the container sends in its PayloadParts or its whole body).
    #[schemars(with = "Option<Api>")]
    api: Option<Spanned<Api>>,
    /// The model's tokenizer.json (Hugging Face's format), relative to the job file: counts a language model's
    /// tokens when the server sends no `usage` (output from the text it streamed, input from the prompt). Needs
    /// `api`, or a reference LLM.
    #[schemars(with = "Option<PathBuf>")]
    tokenizer: Option<Spanned<PathBuf>>,
    /// https: a private CA, a client certificate for mutual TLS, the server name to verify.
    #[schemars(with = "Option<RawTls>")]
    tls: Option<Spanned<RawTls>>,
    // Command targets: a server plateau starts itself for each configuration.
    /// Command targets: the server's program and arguments; `{port}` is replaced by its port.
    #[schemars(with = "Option<Vec<String>>")]
    command: Option<Spanned<Vec<String>>>,
    /// Command targets: the folder the server starts in, relative to the job file.
    #[schemars(with = "Option<PathBuf>")]
    working_dir: Option<Spanned<PathBuf>>,
    /// Command targets: environment variables for every start; `{port}` is replaced here too.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Command targets: a fixed port for the server (default: a free one, given as {port}).
    port: Option<u16>,
    /// Command targets: the path requests go to on the started server (default /invocations).
    path: Option<String>,
    /// Command targets: how plateau knows the server is ready (an HTTP path, or a TCP port) and how long to wait.
    #[schemars(with = "Option<RawReadiness>")]
    readiness: Option<Spanned<RawReadiness>>,
    stop_grace: Option<DurationValue>,
    // SageMaker targets: endpoints that already exist, one per configuration (`endpoint_name`).
    /// SageMaker: the endpoints' region.
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    /// SageMaker: the AWS profile to take credentials from (default the SDK's chain).
    #[schemars(with = "Option<String>")]
    profile: Option<Spanned<String>>,
    /// SageMaker: another runtime endpoint (a VPC endpoint, or an emulator).
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
    /// SageMaker: the CustomAttributes sent with each request.
    #[schemars(with = "Option<String>")]
    custom_attributes: Option<Spanned<String>>,
    /// SageMaker: the production variant to invoke.
    #[schemars(with = "Option<String>")]
    target_variant: Option<Spanned<String>>,
    /// SageMaker: the TargetModel of a multi-model endpoint.
    #[schemars(with = "Option<String>")]
    target_model: Option<Spanned<String>>,
    /// SageMaker: the inference component to invoke.
    #[schemars(with = "Option<String>")]
    inference_component: Option<Spanned<String>>,
    /// SageMaker: call InvokeEndpointWithResponseStream and time the first chunk and the gaps between chunks.
    #[schemars(with = "Option<bool>")]
    streaming: Option<Spanned<bool>>,
    /// SageMaker: create an endpoint for each configuration (and environment), benchmark it and delete it,
    /// instead of calling endpoints that already exist.
    #[schemars(with = "Option<super::provision::RawProvision>")]
    provision: Option<Spanned<super::provision::RawProvision>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tls")]
pub(super) struct RawTls {
    /// A private CA's certificate (PEM), trusted besides the system's roots.
    #[schemars(with = "Option<PathBuf>")]
    ca_file: Option<Spanned<PathBuf>>,
    /// The client certificate (PEM), for mutual TLS, with client_key.
    #[schemars(with = "Option<PathBuf>")]
    client_cert: Option<Spanned<PathBuf>>,
    /// The client certificate's private key (PEM).
    #[schemars(with = "Option<PathBuf>")]
    client_key: Option<Spanned<PathBuf>>,
    /// The name the server's certificate is checked against, when not the URL's host.
    #[schemars(with = "Option<String>")]
    server_name: Option<Spanned<String>>,
}

/// The API a target's responses follow, when plateau reads more of them than their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
pub enum Api {
    /// OpenAI-compatible `/v1/chat/completions` and `/v1/completions` (vLLM, SGLang, TGI, llama.cpp's server):
    /// time to first token, the gaps between tokens and the token counts are measured.
    #[serde(rename = "openai")]
    OpenAi,
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
pub(super) struct RawResponseCheck {
    /// A response with another status is an error (default: any status below 400).
    #[schemars(with = "Option<u16>")]
    status: Option<Spanned<u16>>,
    /// A response whose body lacks this text is an error.
    body_contains: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Readiness")]
pub(super) struct RawReadiness {
    /// A path polled until it answers, e.g. /ping.
    http_path: Option<String>,
    /// The status the readiness path must answer (default 200).
    expected_status: Option<u16>,
    /// Ready once the port accepts a connection (instead of an HTTP path).
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

/// One `[target]` or `[targets.<name>]`, validated.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `<name>` of `[targets.<name>]`; none for a job's single `[target]`.
    pub name: Option<String>,
    pub spec: TargetSpec,
}

/// A target by kind, each variant holding exactly what its kind needs.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// The built-in reference endpoint, served in process on a loopback port for each test run.
    Reference { http: HttpRequestSpec },
    /// A server that is already running: at `url`, or at each configuration's own URL.
    Http { http: HttpRequestSpec, url: Option<String> },
    /// A server plateau starts for each test run, at `http://127.0.0.1:<port><path>`.
    Command { http: HttpRequestSpec, server: CommandSpec },
    /// SageMaker real-time endpoints, one per configuration: ones that already exist, or ones plateau creates
    /// (`provision`); `timeout` bounds each call.
    Sagemaker { endpoint: SageMakerSpec, timeout: Duration, provision: Option<ProvisionSpec> },
}

impl TargetSpec {
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSpec::Reference { .. } => TargetKind::Reference,
            TargetSpec::Http { .. } => TargetKind::Http,
            TargetSpec::Command { .. } => TargetKind::Command,
            TargetSpec::Sagemaker { .. } => TargetKind::Sagemaker,
        }
    }
}

impl Target {
    pub fn kind(&self) -> TargetKind {
        self.spec.kind()
    }
}

/// A target while the job is validated: its name and kind are known even when the rest has errors, so that the
/// configurations naming it are still checked against it. Its spec is absent only when an error was reported.
pub(super) struct TargetDraft {
    pub(super) name: Option<String>,
    pub(super) kind: TargetKind,
    pub(super) spec: Option<TargetSpec>,
    /// A sagemaker target with `[provision]`, even one with errors in it: its configurations name no endpoint.
    pub(super) provisions: bool,
}

impl TargetDraft {
    /// Its table in the job file: `target`, or `targets.<name>`.
    pub(super) fn key(&self) -> String {
        self.name.as_ref().map_or_else(|| "target".to_string(), |name| format!("targets.{name}"))
    }
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
    /// The container's responses follow this API (its PayloadParts, or its whole body): tokens are read from them
    /// instead of counting each chunk as one.
    pub api: Option<Api>,
    /// Counts the tokens of responses without `usage`.
    pub tokenizer: Option<Tokenizer>,
}

impl TargetSpec {
    /// The tokenizer the target names, if any.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            Self::Reference { http } | Self::Http { http, .. } | Self::Command { http, .. } => http.tokenizer.as_ref(),
            Self::Sagemaker { endpoint, .. } => endpoint.tokenizer.as_ref(),
        }
    }
}

/// The tokenizer that counts a dataset's reply lengths: the one the targets name, when those that name one name the
/// same file; none when none does, or when they differ (the lengths are then estimated from characters).
pub(super) fn dataset_tokenizer(targets: &[TargetDraft]) -> Option<&Tokenizer> {
    let mut named = targets.iter().filter_map(|target| target.spec.as_ref()?.tokenizer());
    let first = named.next()?;
    named.all(|other| other == first).then_some(first)
}

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

/// How each request is sent over HTTP, to whichever URL the test run has.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    pub method: String,
    pub headers: Vec<(String, HeaderValue)>,
    pub timeout: Duration,
    /// A larger response is an error (class `other`): a runaway response must not exhaust memory or skew timing.
    pub max_response_bytes: u64,
    pub check: ResponseCheck,
    pub http_version: HttpVersion,
    pub tls: TlsSpec,
    /// Responses read as a language model's (token timings and counts).
    pub api: Option<Api>,
    /// Counts the tokens of responses without `usage`.
    pub tokenizer: Option<Tokenizer>,
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

/// The job's `[target]`, or its `[targets.<name>]` tables; exactly one of the two.
pub(super) fn validate_targets(
    single: Option<&RawTarget>,
    named: Option<&Spanned<BTreeMap<String, RawTarget>>>,
    job_path: &Path,
    sink: &mut DiagnosticSink<'_>,
) -> Vec<TargetDraft> {
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
    for name in named.iter().flat_map(|named| named.get_ref().keys()) {
        printable(name, named.and_then(span_of), "targets", sink);
    }
    let named = named.into_iter().flat_map(|named| named.get_ref());
    single.into_iter().chain(named.map(|(name, raw)| validate_target(raw, Some(name), job_path, sink))).collect()
}

fn validate_target(raw: &RawTarget, name: Option<&str>, job_path: &Path, sink: &mut DiagnosticSink<'_>) -> TargetDraft {
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
    let tokenizer = validate_tokenizer(raw, &prefix, job_path, sink);
    let sagemaker = validate_sagemaker(raw, &prefix, sink)
        .map(|sagemaker| SageMakerSpec { tokenizer: tokenizer.clone(), ..sagemaker });
    let http = HttpRequestSpec {
        tokenizer,
        http_version: raw.http_version.as_ref().map_or(HttpVersion::Auto, |version| *version.get_ref()),
        api: raw.api.as_ref().map(|api| *api.get_ref()),
        tls: validate_tls(raw.tls.as_ref(), &prefix, job_path, sink),
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
    };
    let spec = match kind {
        TargetKind::Reference if raw.api.is_some() => {
            sink.error(
                raw.api.as_ref().and_then(span_of),
                key("api"),
                "only http, command and sagemaker targets take `api`",
                Some("a configuration with reference_llm = { ... } is read as a language model already".into()),
            );
            None
        }
        TargetKind::Reference => Some(TargetSpec::Reference { http }),
        TargetKind::Http => Some(TargetSpec::Http { http, url: raw.url.as_ref().map(|url| url.get_ref().clone()) }),
        TargetKind::Command => command.map(|server| TargetSpec::Command { http, server }),
        TargetKind::Sagemaker => sagemaker.map(|endpoint| TargetSpec::Sagemaker {
            provision: raw.provision.as_ref().and_then(|provision| validate_provision(provision, &prefix, sink)),
            endpoint,
            timeout: http.timeout,
        }),
    };
    let provisions = kind == TargetKind::Sagemaker && raw.provision.is_some();
    TargetDraft { name: name.map(str::to_string), kind, spec, provisions }
}

pub(super) fn validate_command(raw: &RawTarget, prefix: &str, sink: &mut DiagnosticSink<'_>) -> Option<CommandSpec> {
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

pub(super) fn validate_tls(
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

pub(super) fn validate_sagemaker(
    raw: &RawTarget,
    prefix: &str,
    sink: &mut DiagnosticSink<'_>,
) -> Option<SageMakerSpec> {
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
        ("provision", raw.provision.as_ref().and_then(span_of)),
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
    if raw.provision.is_some() {
        let endpoint_only = [
            ("inference_component", raw.inference_component.as_ref().and_then(span_of)),
            ("target_model", raw.target_model.as_ref().and_then(span_of)),
        ];
        for (field, span) in endpoint_only.into_iter().filter(|(_, span)| span.is_some()) {
            sink.error(
                span,
                format!("{prefix}.{field}"),
                format!("plateau provisions single-model endpoints, which have no `{field}`"),
                Some("remove it, or benchmark the endpoint that has it with endpoint_name (no [provision])".into()),
            );
        }
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
        api: raw.api.as_ref().map(|api| *api.get_ref()),
        tokenizer: None,
    })
}

/// The job's tokenizer, loaded: a tokenizer counts a language model's tokens, so the target reads them (`api`, or
/// the reference with its LLM configurations).
fn validate_tokenizer(
    raw: &RawTarget,
    prefix: &str,
    job_path: &Path,
    sink: &mut DiagnosticSink<'_>,
) -> Option<Tokenizer> {
    let path = raw.tokenizer.as_ref()?;
    let key = format!("{prefix}.tokenizer");
    if raw.api.is_none() && *raw.kind.get_ref() != TargetKind::Reference {
        sink.error(
            span_of(path),
            key,
            "a tokenizer counts a language model's tokens, and this target does not read them",
            Some("add api = \"openai\" to the target".into()),
        );
        return None;
    }
    let resolved = relative_to(job_path, path.get_ref());
    let hint = "paths are relative to the job file; the tokenizer.json the model ships with (Hugging Face's format)";
    if !resolved.is_file() {
        sink.error(span_of(path), key, format!("no file at `{}`", resolved.display()), Some(hint.into()));
        return None;
    }
    Tokenizer::load(&resolved)
        .map_err(|error| sink.error(span_of(path), key, error.to_string(), Some(hint.into())))
        .ok()
}

pub(super) fn check_url(url: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    check_absolute_url(
        url,
        key,
        "e.g. \"http://127.0.0.1:8080/invocations\" or \"https://model.internal/v1/predict\"",
        sink,
    );
}
