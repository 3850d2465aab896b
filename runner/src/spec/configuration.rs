//! `[[configurations]]`: the candidate endpoint configurations, each with its instance type, count and price, and
//! what its target kind needs (a reference model, an endpoint name, environment parameters to sweep).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diagnostic::{self, DiagnosticSink};
use super::prices;
use std::time::Duration;

use super::provision::ProvisionSpec;
use super::reference_llm::LlmModel;
use super::target::{Api, CommandSpec, HttpRequestSpec, SageMakerSpec, TargetDraft, TargetKind, TargetSpec, check_url};
use super::values::DurationValue;
use super::{positive, printable, span_of, within};

/// A serverless endpoint's settings (IR's ServerlessConfig), recorded with the configuration's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Serverless {
    /// 1024 to 6144, in steps of 1024.
    pub memory_mb: u32,
    /// 1 to 200.
    pub max_concurrency: u32,
    /// Concurrency kept warm (IR's ProvisionedConcurrency; default 0).
    #[serde(default)]
    pub provisioned_concurrency: u32,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Configuration")]
pub(super) struct RawConfiguration {
    /// The configuration's name, unique in the job.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// The instance type, e.g. ml.c6i.xlarge; it prices the configuration from the price table when no price is given.
    #[schemars(with = "String")]
    instance_type: Spanned<String>,
    /// With several `[targets.<name>]`: the one this configuration runs against.
    #[schemars(with = "Option<String>")]
    target: Option<Spanned<String>>,
    /// Instances behind the endpoint (default 1); the price is per instance.
    #[serde(default = "one")]
    #[schemars(with = "u32")]
    instance_count: Spanned<u32>,
    /// The price of one instance per hour in USD (default: the price table's for the instance type).
    #[schemars(with = "Option<f64>")]
    price_per_hour_usd: Option<Spanned<f64>>,
    /// HTTP targets: this configuration's own endpoint URL, instead of the target's.
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    /// Reference targets: the simulated server (workers, service time and its distribution, stalls, drift).
    #[schemars(with = "Option<RawReferenceModel>")]
    reference: Option<Spanned<RawReferenceModel>>,
    /// Reference targets: a simulated language-model server instead (continuous batching, streamed tokens).
    #[schemars(with = "Option<super::reference_llm::RawLlmModel>")]
    reference_llm: Option<Spanned<super::reference_llm::RawLlmModel>>,
    /// Command targets and provisioned endpoints: environment variables to try, each with its values; every
    /// combination is a test run.
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

pub(super) fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReferenceModel")]
pub(super) struct RawReferenceModel {
    /// Requests served at once; the rest queue.
    #[schemars(with = "u32")]
    workers: Spanned<u32>,
    /// The mean service time; capacity is workers / this.
    #[schemars(with = "f64")]
    service_time_ms: Spanned<f64>,
    #[serde(default)]
    distribution: ServiceTimeDistribution,
    /// Lognormal: the coefficient of variation (default 0.5).
    #[schemars(with = "Option<f64>")]
    cv: Option<Spanned<f64>>,
    /// Bimodal: the share of requests that take the slow mode, between 0 and 1.
    #[schemars(with = "Option<f64>")]
    slow_share: Option<Spanned<f64>>,
    /// Bimodal: how many times longer a slow request takes than a fast one (more than 1).
    #[schemars(with = "Option<f64>")]
    slow_factor: Option<Spanned<f64>>,
    /// Every worker pauses at once, as a garbage collector stops a process: `{ every = "2s", pause_ms = 100 }`.
    #[schemars(with = "Option<RawStalls>")]
    stalls: Option<Spanned<RawStalls>>,
    /// Capacity changes by this share of its nominal value each minute (negative: it degrades), as a machine
    /// whose neighbours come and go.
    #[schemars(with = "Option<f64>")]
    drift_percent_per_min: Option<Spanned<f64>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReferenceStalls")]
pub(super) struct RawStalls {
    #[schemars(with = "DurationValue")]
    every: Spanned<DurationValue>,
    /// How long every worker stalls each time, ms.
    #[schemars(with = "f64")]
    pause_ms: Spanned<f64>,
}

/// The `distribution` key of a reference model; its parameters become a `ServiceTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTimeDistribution {
    #[default]
    Fixed,
    Lognormal,
    Bimodal,
    /// Memoryless: with Poisson arrivals on one worker, an M/M/1 queue, whose latency percentiles are known exactly.
    Exponential,
}

impl ServiceTimeDistribution {
    pub fn name(self) -> &'static str {
        match self {
            ServiceTimeDistribution::Fixed => "fixed",
            ServiceTimeDistribution::Lognormal => "lognormal",
            ServiceTimeDistribution::Bimodal => "bimodal",
            ServiceTimeDistribution::Exponential => "exponential",
        }
    }
}

#[derive(Debug, Clone)]
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
    /// GPUs of the instance type, where the price table knows it (0: none).
    pub gpus: Option<u32>,
    pub serverless: Option<Serverless>,
    /// What this configuration is on its target's kind, with that target's settings.
    pub deployment: Deployment,
}

/// A configuration by its target's kind: everything needed to serve its requests and send them.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// A simulated model server plateau runs in process.
    Reference { model: ReferenceModel, http: HttpRequestSpec },
    /// A simulated language-model server plateau runs in process; its responses are read as OpenAI's.
    ReferenceLlm { model: LlmModel, http: HttpRequestSpec },
    /// A server already running at `url` (the configuration's own, or its target's).
    Http { url: String, http: HttpRequestSpec },
    /// A server plateau starts itself for each combination of `parameters` (environment variables to try).
    Command {
        server: Box<CommandSpec>,
        http: HttpRequestSpec,
        parameters: BTreeMap<String, Vec<String>>,
        /// The CPUs the server is pinned to.
        cpus: Option<CpuSet>,
        /// The memory MemoryUtilization is a share of (default: the machine's).
        memory_limit_mb: Option<f64>,
    },
    /// A SageMaker endpoint, existing or created for the run; `timeout` bounds each call.
    Sagemaker { source: EndpointSource, endpoint: SageMakerSpec, timeout: Duration },
}

/// Where a SageMaker configuration's endpoint comes from.
#[derive(Debug, Clone)]
pub enum EndpointSource {
    /// An endpoint that already exists.
    Existing { endpoint_name: String },
    /// Endpoints plateau creates, one for each combination of `parameters` (the model's environment variables to
    /// try), and deletes after its test run.
    Provisioned { provision: Arc<ProvisionSpec>, parameters: BTreeMap<String, Vec<String>> },
}

impl Deployment {
    pub fn kind(&self) -> TargetKind {
        match self {
            Deployment::Reference { .. } | Deployment::ReferenceLlm { .. } => TargetKind::Reference,
            Deployment::Http { .. } => TargetKind::Http,
            Deployment::Command { .. } => TargetKind::Command,
            Deployment::Sagemaker { .. } => TargetKind::Sagemaker,
        }
    }

    /// Every combination of environment variables to run (command targets and provisioned endpoints), or one
    /// empty one.
    pub fn environments(&self) -> Vec<BTreeMap<String, String>> {
        match self {
            Deployment::Command { parameters, .. }
            | Deployment::Sagemaker { source: EndpointSource::Provisioned { parameters, .. }, .. } => {
                combinations(parameters)
            }
            _ => vec![BTreeMap::new()],
        }
    }
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

/// A simulated model server: `workers` requests served at once, FIFO queue, service times from a distribution,
/// and optionally the noise real servers have (stalls, drifting capacity) with known effect on capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferenceModel {
    pub workers: u32,
    /// The mean service time, whatever the distribution.
    pub service_time_ms: f64,
    pub service_time: ServiceTime,
    pub stalls: Option<Stalls>,
    /// Capacity moves by this share of nominal each minute; 0 for none.
    pub drift_percent_per_min: f64,
}

/// How service times vary around their mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case")]
pub enum ServiceTime {
    Fixed,
    Lognormal {
        cv: f64,
    },
    /// A share of requests takes `slow_factor` times as long as the rest (a cache miss, a long input).
    Bimodal {
        slow_share: f64,
        slow_factor: f64,
    },
    /// Exponentially distributed (coefficient of variation 1).
    Exponential,
}

/// Every worker pauses for `pause_ms` once every `every_ms`, starting one period after the server starts; a request
/// in service is held for the pause, one arriving in it waits for its end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stalls {
    pub every_ms: f64,
    pub pause_ms: f64,
}

impl ReferenceModel {
    /// A steady model of `workers` x `service_time_ms`, without noise.
    pub fn steady(workers: u32, service_time_ms: f64, service_time: ServiceTime) -> Self {
        Self { workers, service_time_ms, service_time, stalls: None, drift_percent_per_min: 0.0 }
    }

    /// Requests per second the model can serve at most at its start: workers / mean service time, less the share
    /// of time its stalls take.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.workers) * 1000.0 / self.service_time_ms * self.available_share()
    }

    /// The share of time the workers are not stalled.
    pub fn available_share(&self) -> f64 {
        self.stalls.map_or(1.0, |stalls| 1.0 - stalls.pause_ms / stalls.every_ms)
    }
}

/// SageMaker's own rule: up to 63 letters, digits and hyphens, not starting or ending with a hyphen.
pub(super) fn check_endpoint_name(name: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
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

pub(super) fn validate_configurations(
    raw: &Spanned<Vec<RawConfiguration>>,
    targets: &[TargetDraft],
    prices: &prices::PriceTable,
    sink: &mut DiagnosticSink<'_>,
) -> Vec<Option<Configuration>> {
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
            printable(name, span_of(&config.name), &key("name"), sink);
            printable(config.instance_type.get_ref(), span_of(&config.instance_type), &key("instance_type"), sink);
            if *config.instance_count.get_ref() == 0 {
                sink.error(span_of(&config.instance_count), key("instance_count"), "must be at least 1", None);
            }
            // Priced in its endpoint's region where the table has it.
            let regional = prices.in_region(sagemaker_region(config, targets));
            let listed = regional.instances.get(config.instance_type.get_ref());
            // A serverless endpoint bills its memory for each second a request is in it; at the plateau every
            // one of its max_concurrency slots is busy, so that rate by the hour is what it costs there.
            let serverless_rate =
                config.serverless.as_ref().zip(regional.serverless_gb_second_usd).map(|(serverless, rate)| {
                    let settings = serverless.get_ref();
                    let gb = f64::from(settings.memory_mb) / 1024.0;
                    let usd_per_hour = gb * f64::from(settings.max_concurrency) * 3600.0 * rate;
                    let source = format!(
                        "{} MB x {} concurrent at {rate} USD per GB-second ({})",
                        settings.memory_mb,
                        settings.max_concurrency,
                        regional.describe()
                    );
                    (usd_per_hour, source)
                });
            let (price_per_hour_usd, price_source) = match (&config.price_per_hour_usd, listed) {
                (Some(price), _) if price.get_ref().is_finite() && *price.get_ref() >= 0.0 => {
                    (*price.get_ref(), "job file".to_string())
                }
                (Some(price), _) => {
                    let message = "must be a price in US dollars, 0 or more (not nan or inf)";
                    sink.error(span_of(price), key("price_per_hour_usd"), message, None);
                    (0.0, String::new())
                }
                (None, _) if serverless_rate.is_some() => serverless_rate.clone().expect("checked"),
                (None, Some(listed)) => (listed.price_per_hour_usd, regional.describe().to_string()),
                (None, None) => {
                    let known: Vec<&str> = regional.instances.keys().map(String::as_str).collect();
                    let hint = match diagnostic::closest(config.instance_type.get_ref(), &known) {
                        Some(close) => format!("did you mean instance_type = \"{close}\"? Or set price_per_hour_usd"),
                        None => "set price_per_hour_usd, e.g. price_per_hour_usd = 0.23".to_string(),
                    };
                    sink.error(
                        span_of(&config.name),
                        key("price_per_hour_usd"),
                        format!("no price for `{}`: it is not in {}", config.instance_type.get_ref(), prices.source),
                        Some(hint),
                    );
                    (0.0, String::new())
                }
            };
            // Without a target there is nothing to check the rest against; that error is reported already.
            let target_index = target_of(config, targets, &key("target"), sink)?;
            let target = &targets[target_index];
            let kind = target.kind;
            let target_url = match &target.spec {
                Some(TargetSpec::Http { url, .. }) => url.as_ref(),
                _ => None,
            };
            let reference = validate_reference(config, kind, index, sink);
            if config.environment.is_some() && kind != TargetKind::Command && !target.provisions {
                sink.error(
                    config.environment.as_ref().and_then(span_of),
                    key("environment"),
                    "`environment` applies to servers plateau starts: command targets, and SageMaker endpoints it \
                     provisions",
                    Some("remove it, or use [target] kind = \"command\", or add [target.provision]".into()),
                );
            }
            let command_only = [
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
                let span = config.environment.as_ref().and_then(span_of);
                for text in std::iter::once(variable).chain(values) {
                    printable(text, span.clone(), &key("environment"), sink);
                }
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
                (Some(name), TargetKind::Sagemaker) if target.provisions => sink.error(
                    span_of(name),
                    key("endpoint_name"),
                    "plateau names the endpoints it provisions",
                    Some(
                        "remove endpoint_name, or remove [target.provision] to benchmark the existing endpoint".into(),
                    ),
                ),
                (None, TargetKind::Sagemaker) if target.provisions => {}
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
            if kind == TargetKind::Http && config.url.is_none() && target_url.is_none() {
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
            let memory_limit_mb =
                config.memory_limit_mb.as_ref().map(|limit| positive(limit, &key("memory_limit_mb"), sink));
            let serverless = config.serverless.as_ref().map(|serverless| {
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
            });
            let parameters =
                || config.environment.as_ref().map(|environment| environment.get_ref().clone()).unwrap_or_default();
            // Absent only where an error was reported above: such a job is never built.
            let deployment = match target.spec.as_ref() {
                Some(TargetSpec::Reference { http }) => match reference {
                    Some(Simulated::Queue(model)) => Some(Deployment::Reference { model, http: http.clone() }),
                    Some(Simulated::Llm(model)) => Some(Deployment::ReferenceLlm {
                        model,
                        http: HttpRequestSpec { api: Some(Api::OpenAi), ..http.clone() },
                    }),
                    None => None,
                },
                Some(TargetSpec::Http { http, url }) => {
                    let own = config.url.as_ref().map(|url| url.get_ref().clone());
                    own.or_else(|| url.clone()).map(|url| Deployment::Http { url, http: http.clone() })
                }
                Some(TargetSpec::Command { http, server }) => Some(Deployment::Command {
                    server: Box::new(server.clone()),
                    http: http.clone(),
                    parameters: parameters(),
                    cpus: config.cpus.as_ref().and_then(|cpus| CpuSet::parse(cpus.get_ref())),
                    memory_limit_mb,
                }),
                Some(TargetSpec::Sagemaker { endpoint, timeout, provision }) => {
                    let source = match provision {
                        Some(provision) => Some(EndpointSource::Provisioned {
                            provision: Arc::new(provision.clone()),
                            parameters: parameters(),
                        }),
                        None => config
                            .endpoint_name
                            .as_ref()
                            .map(|name| EndpointSource::Existing { endpoint_name: name.get_ref().clone() }),
                    };
                    source.map(|source| Deployment::Sagemaker { source, endpoint: endpoint.clone(), timeout: *timeout })
                }
                None => None,
            };
            Some(deployment.map(|deployment| Configuration {
                name: name.clone(),
                target: target_index,
                instance_type: config.instance_type.get_ref().clone(),
                instance_count: *config.instance_count.get_ref(),
                price_per_hour_usd,
                price_source,
                vcpus: listed.map(|listed| listed.vcpus),
                gpus: listed.map(|listed| listed.gpus),
                serverless,
                deployment,
            }))
        })
        .collect()
}

/// The region of the SageMaker endpoint a configuration runs against, when its target names one; errors in naming
/// the target are reported by `target_of`.
fn sagemaker_region<'a>(config: &RawConfiguration, targets: &'a [TargetDraft]) -> Option<&'a str> {
    let target = match &config.target {
        None => targets.first().filter(|_| targets.len() == 1),
        Some(name) => targets.iter().find(|target| target.name.as_deref() == Some(name.get_ref().as_str())),
    }?;
    match &target.spec {
        Some(TargetSpec::Sagemaker { endpoint, .. }) => endpoint.region.as_deref(),
        _ => None,
    }
}

/// The index of the target a configuration runs against: the job's only one, or the one it names.
pub(super) fn target_of(
    config: &RawConfiguration,
    targets: &[TargetDraft],
    key: &str,
    sink: &mut DiagnosticSink<'_>,
) -> Option<usize> {
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

/// What a reference configuration simulates.
pub(super) enum Simulated {
    Queue(ReferenceModel),
    Llm(LlmModel),
}

pub(super) fn validate_reference(
    config: &RawConfiguration,
    kind: TargetKind,
    index: usize,
    sink: &mut DiagnosticSink<'_>,
) -> Option<Simulated> {
    let llm_key = |field: &str| format!("configurations[{index}].reference_llm{field}");
    match (kind, &config.reference, &config.reference_llm) {
        (TargetKind::Reference, None, Some(llm)) => {
            return Some(Simulated::Llm(super::reference_llm::validate(llm, &llm_key, sink)));
        }
        (TargetKind::Reference, Some(_), Some(llm)) => {
            sink.error(
                span_of(llm),
                llm_key(""),
                "a reference configuration simulates one server: `reference` or `reference_llm`",
                Some("remove one of them".into()),
            );
            return None;
        }
        (_, _, Some(llm)) => {
            sink.error(
                span_of(llm),
                llm_key(""),
                "only the reference target takes a `reference_llm` model",
                Some("remove it, or use kind = \"reference\"".into()),
            );
            return None;
        }
        _ => {}
    }
    let key = |field: &str| format!("configurations[{index}].reference{field}");
    match (kind, &config.reference) {
        (TargetKind::Reference, None) => {
            sink.error(
                span_of(&config.name),
                key(""),
                "a reference configuration needs its model",
                Some("add e.g. reference = { workers = 4, service_time_ms = 20 }, or reference_llm = { max_batch = 8, iteration_ms = 20 }".into()),
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
            let service_time = validate_service_time(model, &key, sink);
            let stalls = model.stalls.as_ref().map(|stalls| {
                let raw = stalls.get_ref();
                let every_ms = raw.every.get_ref().0.as_secs_f64() * 1000.0;
                if every_ms < 10.0 {
                    sink.error(span_of(&raw.every), key(".stalls.every"), "must be at least 10ms", None);
                }
                let pause_ms = positive(&raw.pause_ms, &key(".stalls.pause_ms"), sink);
                if pause_ms >= every_ms / 2.0 && every_ms >= 10.0 {
                    sink.error(
                        span_of(&raw.pause_ms),
                        key(".stalls.pause_ms"),
                        format!("a pause of {pause_ms} ms every {every_ms} ms leaves the server stalled half the time or more"),
                        Some("make the pause shorter than half of `every`".into()),
                    );
                }
                Stalls { every_ms, pause_ms }
            });
            let drift_percent_per_min = within(
                &model.drift_percent_per_min,
                (-50.0..=50.0, 0.0),
                &key(".drift_percent_per_min"),
                Some("capacity drifts by this share of its nominal value each minute"),
                sink,
            );
            Some(Simulated::Queue(ReferenceModel {
                workers: *model.workers.get_ref(),
                service_time_ms,
                service_time,
                stalls,
                drift_percent_per_min,
            }))
        }
    }
}

/// The distribution and its parameters; a parameter of another distribution is an error at its key.
fn validate_service_time(
    model: &RawReferenceModel,
    key: &dyn Fn(&str) -> String,
    sink: &mut DiagnosticSink<'_>,
) -> ServiceTime {
    let distribution = model.distribution;
    let mut refuse = |value: &Option<Spanned<f64>>, name: &str, wanted: &str| {
        if let Some(value) = value {
            let message = match distribution {
                ServiceTimeDistribution::Fixed => "fixed service times have no variation".to_string(),
                other => format!("{} service times do not take `{name}`", other.name()),
            };
            sink.error(
                span_of(value),
                key(&format!(".{name}")),
                message,
                Some(format!("set distribution = \"{wanted}\" to use {name}")),
            );
        }
    };
    match distribution {
        ServiceTimeDistribution::Fixed | ServiceTimeDistribution::Bimodal | ServiceTimeDistribution::Exponential => {
            refuse(&model.cv, "cv", "lognormal")
        }
        ServiceTimeDistribution::Lognormal => {}
    }
    if distribution != ServiceTimeDistribution::Bimodal {
        refuse(&model.slow_share, "slow_share", "bimodal");
        refuse(&model.slow_factor, "slow_factor", "bimodal");
    }
    match distribution {
        ServiceTimeDistribution::Fixed => ServiceTime::Fixed,
        ServiceTimeDistribution::Exponential => ServiceTime::Exponential,
        ServiceTimeDistribution::Lognormal => {
            ServiceTime::Lognormal { cv: model.cv.as_ref().map_or(0.5, |cv| positive(cv, &key(".cv"), sink)) }
        }
        ServiceTimeDistribution::Bimodal => {
            let slow_share = within(&model.slow_share, (0.0..=1.0, 0.1), &key(".slow_share"), None, sink);
            let slow_factor = model.slow_factor.as_ref().map_or(5.0, |factor| {
                let value = *factor.get_ref();
                if !(value.is_finite() && value > 1.0) {
                    sink.error(span_of(factor), key(".slow_factor"), format!("must be more than 1, not {value}"), None);
                }
                value
            });
            ServiceTime::Bimodal { slow_share, slow_factor }
        }
    }
}

/// Every combination of the parameters' values, parameters in name order, values in the order given.
pub fn combinations(parameters: &BTreeMap<String, Vec<String>>) -> Vec<BTreeMap<String, String>> {
    parameters.iter().fold(vec![BTreeMap::new()], |partial, (name, values)| {
        partial
            .iter()
            .flat_map(|combination| {
                values.iter().map(move |value| {
                    let mut next = combination.clone();
                    next.insert(name.clone(), value.clone());
                    next
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_cover_the_grid_in_order() {
        let parameters = BTreeMap::from([
            ("THREADS".to_string(), vec!["1".to_string(), "2".to_string()]),
            ("BATCH".to_string(), vec!["8".to_string(), "16".to_string(), "32".to_string()]),
        ]);
        let grid = combinations(&parameters);
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[0], BTreeMap::from([("BATCH".into(), "8".into()), ("THREADS".into(), "1".into())]));
        assert_eq!(grid[5], BTreeMap::from([("BATCH".into(), "32".into()), ("THREADS".into(), "2".into())]));
        assert_eq!(combinations(&BTreeMap::new()), vec![BTreeMap::new()]);
    }
}
