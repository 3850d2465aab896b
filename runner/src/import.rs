//! Other tools' files turned into plateau's: AWS's Price List into a price table (`price_list`), and here
//! `plateau import-sagemaker`: a CreateInferenceRecommendationsJob request (the JSON the AWS CLI takes with
//! `--cli-input-json`) turned into an equivalent job file, so Inference Recommender users can move over. What has
//! no equivalent is named in the warnings, never dropped silently. The mapping is documented in docs/ir-mapping.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::SeedableRng as _;
use serde_json::Value;

use crate::units;

pub mod price_list;

/// The seed of the sample of configurations when MaxNumberOfTests is below their count.
const SAMPLE_SEED: u64 = 1;

/// The job file's text, and a warning for each field that did not carry over.
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Fields plateau reads; anything else in the request is reported.
const UNDERSTOOD: &[&str] = &[
    "JobName",
    "JobDescription",
    "JobType",
    "RoleArn",
    "Tags",
    "InputConfig.ModelPackageVersionArn",
    "InputConfig.ModelName",
    "InputConfig.ContainerConfig.SupportedInstanceTypes",
    "InputConfig.TrafficPattern",
    "InputConfig.ResourceLimit",
    "InputConfig.EndpointConfigurations",
    "InputConfig.Endpoints",
    "InputConfig.ContainerConfig.PayloadConfig.SupportedContentTypes",
    "InputConfig.ContainerConfig.PayloadConfig.SamplePayloadUrl",
    "InputConfig.ContainerConfig.SupportedResponseMIMETypes",
    "StoppingConditions",
];

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn number(value: &Value, pointer: &str) -> Option<f64> {
    value.pointer(pointer).and_then(Value::as_f64)
}

/// The region of the first ARN in the request that names one (`arn:partition:service:region:account:resource`;
/// IAM's, such as RoleArn, name none), with where it was.
fn arn_region(value: &Value) -> Option<(&str, String)> {
    fn find<'a>(value: &'a Value, path: &str) -> Option<(&'a str, String)> {
        match value {
            Value::String(text) => {
                let mut parts = text.splitn(6, ':');
                let region = (parts.next() == Some("arn")).then(|| parts.nth(2)).flatten()?;
                let plausible = !region.is_empty()
                    && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                plausible.then(|| (region, path.to_string()))
            }
            Value::Object(object) => object.iter().find_map(|(key, child)| {
                find(child, &if path.is_empty() { key.clone() } else { format!("{path}.{key}") })
            }),
            Value::Array(items) => {
                items.iter().enumerate().find_map(|(index, item)| find(item, &format!("{path}[{index}]")))
            }
            _ => None,
        }
    }
    find(value, "")
}

/// Every leaf path in the request that plateau does not read.
fn unsupported_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if UNDERSTOOD.iter().any(|understood| prefix == *understood || prefix.starts_with(&format!("{understood}."))) {
        return;
    }
    match value {
        Value::Object(object) if !object.is_empty() => {
            for (key, child) in object {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                unsupported_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// What makes an Inference Recommender request impossible to carry over.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("expected a JSON object: a CreateInferenceRecommendationsJob request")]
    NotAnObject,
    #[error("TrafficType `{traffic_type}` is neither PHASES nor STAIRS")]
    TrafficType { traffic_type: String },
    #[error("EndpointConfigurations[{index}] has neither InstanceType nor ServerlessConfig")]
    NoInstanceType { index: usize },
    #[error(
        "the request has no InputConfig.EndpointConfigurations, no InputConfig.Endpoints and (for a Default job) no \
         InputConfig.ContainerConfig.SupportedInstanceTypes: name the instance types to try in one of them"
    )]
    NoEndpoints,
    #[error(
        "the request deploys endpoints but names no model: give InputConfig.ModelPackageVersionArn or \
         InputConfig.ModelName"
    )]
    NoModel,
}

/// One endpoint configuration to provision: an instance type (or serverless settings) and the environment grid.
struct Candidate<'a> {
    /// `EndpointConfigurations[i]` or `SupportedInstanceTypes[i]`, for warnings.
    source: String,
    instance_type: Option<&'a str>,
    serverless: Option<&'a Value>,
    parameters: BTreeMap<String, Vec<String>>,
    /// The model package's inference specification it names.
    specification: Option<&'a str>,
}

impl Candidate<'_> {
    fn name(&self, index: usize) -> String {
        self.instance_type.map_or_else(|| format!("serverless-{index}"), str::to_string)
    }

    fn tests(&self) -> usize {
        self.parameters.values().map(Vec::len).product()
    }
}

pub fn import_sagemaker(request: &Value) -> Result<Imported, ImportError> {
    if !request.is_object() {
        return Err(ImportError::NotAnObject);
    }
    let mut warnings = Vec::new();
    let mut skipped = Vec::new();
    unsupported_paths(request, "", &mut skipped);
    let job_name = text(request, "/JobName").unwrap_or("imported-recommendation-job");
    let mut out = String::new();
    let _ =
        writeln!(out, "# Imported from a SageMaker Inference Recommender CreateInferenceRecommendationsJob request by");
    let _ = writeln!(out, "# `plateau import-sagemaker`. Review the lines marked REVIEW before running.");
    let _ = writeln!(out, "version = 1\n\n[job]\nname = {}", quoted(job_name));
    if let Some(description) = text(request, "/JobDescription") {
        let _ = writeln!(out, "description = {}", quoted(description));
    }

    // Endpoints: IR deploys each EndpointConfiguration itself, or benchmarks the existing Endpoints given.
    let existing: Vec<&str> = request
        .pointer("/InputConfig/Endpoints")
        .and_then(Value::as_array)
        .map(|endpoints| endpoints.iter().filter_map(|endpoint| text(endpoint, "/EndpointName")).collect())
        .unwrap_or_default();
    let configurations = request.pointer("/InputConfig/EndpointConfigurations").and_then(Value::as_array);
    let _ = writeln!(out, "\n[target]\nkind = \"sagemaker\"");
    match arn_region(request) {
        Some((region, field)) => {
            let _ = writeln!(out, "region = {}   # from {field}", quoted(region));
        }
        None => {
            let _ = writeln!(out, "# region = \"us-east-1\"   # REVIEW: else AWS_REGION or the profile's");
        }
    }

    // What IR would deploy: its EndpointConfigurations, or for a Default job the supported instance types.
    let mut candidates: Vec<Candidate> = Vec::new();
    for (index, configuration) in configurations.into_iter().flatten().enumerate() {
        let source = format!("InputConfig.EndpointConfigurations[{index}]");
        let instance_type = text(configuration, "/InstanceType");
        let serverless = configuration.pointer("/ServerlessConfig");
        if instance_type.is_none() && serverless.is_none() {
            return Err(ImportError::NoInstanceType { index });
        }
        let specification = text(configuration, "/InferenceSpecificationName");
        let parameters: BTreeMap<String, Vec<String>> = configuration
            .pointer("/EnvironmentParameterRanges/CategoricalParameterRanges")
            .and_then(Value::as_array)
            .map(|ranges| {
                ranges
                    .iter()
                    .filter_map(|range| {
                        let values = range.pointer("/Value")?.as_array()?.iter().filter_map(Value::as_str);
                        Some((text(range, "/Name")?.to_string(), values.map(str::to_string).collect()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        candidates.push(Candidate { source, instance_type, serverless, parameters, specification });
    }
    let default_job = text(request, "/JobType").is_none_or(|job_type| job_type == "Default");
    if candidates.is_empty() && default_job {
        let supported =
            request.pointer("/InputConfig/ContainerConfig/SupportedInstanceTypes").and_then(Value::as_array);
        for (index, instance_type) in supported.into_iter().flatten().filter_map(Value::as_str).enumerate() {
            let source = format!("InputConfig.ContainerConfig.SupportedInstanceTypes[{index}]");
            candidates.push(Candidate {
                source,
                instance_type: Some(instance_type),
                serverless: None,
                parameters: BTreeMap::new(),
                specification: None,
            });
        }
        if !candidates.is_empty() {
            warnings.push(format!(
                "a Default job: IR chooses among the supported instance types; plateau benchmarks each of the {} \
                 (remove the ones you do not want)",
                candidates.len()
            ));
        }
    }
    if !candidates.is_empty() {
        let model =
            match (text(request, "/InputConfig/ModelPackageVersionArn"), text(request, "/InputConfig/ModelName")) {
                (Some(arn), _) => {
                    format!("model_package_arn = {}   # from InputConfig.ModelPackageVersionArn", quoted(arn))
                }
                (None, Some(name)) => format!("model_name = {}   # from InputConfig.ModelName", quoted(name)),
                (None, None) => return Err(ImportError::NoModel),
            };
        let _ = writeln!(out, "\n[target.provision]\n{model}");
        // One inference specification for the target: the one the configurations name, when they agree.
        let mut specifications: Vec<&str> = candidates.iter().filter_map(|candidate| candidate.specification).collect();
        specifications.sort_unstable();
        specifications.dedup();
        match specifications.as_slice() {
            [] => {}
            [only] if text(request, "/InputConfig/ModelPackageVersionArn").is_some() => {
                let _ = writeln!(
                    out,
                    "inference_specification_name = {}   # from EndpointConfigurations[].InferenceSpecificationName",
                    quoted(only)
                );
            }
            several => warnings.push(format!(
                "EndpointConfigurations name the inference specifications {} (or one without a model package): not \
                 carried over; plateau deploys one specification per target (inference_specification_name), so \
                 split the job by specification",
                several.join(", ")
            )),
        }
        match text(request, "/RoleArn") {
            Some(role) => {
                let _ = writeln!(
                    out,
                    "execution_role_arn = {}   # from RoleArn: REVIEW, the role the model runs as",
                    quoted(role)
                );
            }
            None if text(request, "/InputConfig/ModelName").is_none() => {
                warnings
                    .push("no RoleArn: set [target.provision] execution_role_arn, the role the model runs as".into());
                let _ = writeln!(out, "execution_role_arn = \"arn:aws:iam::123456789012:role/REVIEW\"");
            }
            None => {}
        }
        let tags: Vec<(&str, &str)> = request
            .pointer("/Tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|tag| Some((text(tag, "/Key")?, text(tag, "/Value")?)))
            .collect();
        let (kept, reserved): (Vec<_>, Vec<_>) =
            tags.into_iter().partition(|(key, _)| !key.starts_with("aws:") && !key.starts_with("plateau:"));
        for (key, _) in reserved {
            warnings.push(format!("Tags: `{key}` is reserved (aws: or plateau:) and not carried over"));
        }
        if !kept.is_empty() {
            let listed: Vec<String> =
                kept.iter().map(|(key, value)| format!("{} = {}", quoted(key), quoted(value))).collect();
            let _ = writeln!(out, "tags = {{ {} }}   # from Tags", listed.join(", "));
        }
        if !existing.is_empty() {
            warnings.push(format!(
                "InputConfig.Endpoints ({}): not imported beside the endpoints plateau provisions; benchmark them \
                 with a job of their own (configurations with endpoint_name, no [target.provision])",
                existing.join(", ")
            ));
        }
    }

    let content_type = text(request, "/InputConfig/ContainerConfig/PayloadConfig/SupportedContentTypes/0");
    let accept = text(request, "/InputConfig/ContainerConfig/SupportedResponseMIMETypes/0");
    let _ = writeln!(out, "\n[payload]\ncontent_type = {}", quoted(content_type.unwrap_or("application/json")));
    if let Some(accept) = accept {
        let _ = writeln!(out, "accept = {}", quoted(accept));
    }
    let _ = writeln!(out, "body = '{{}}'   # REVIEW: a real request; `file = \"...\"`, or a payload plugin");
    if let Some(url) = text(request, "/InputConfig/ContainerConfig/PayloadConfig/SamplePayloadUrl") {
        warnings.push(format!(
            "SamplePayloadUrl {url}: download the sample payloads and point `payload.file` at one (plateau reads no S3)"
        ));
    }

    // Traffic: IR's spawn rate is per minute, plateau's per second.
    match text(request, "/InputConfig/TrafficPattern/TrafficType") {
        Some("STAIRS") => {
            let users = number(request, "/InputConfig/TrafficPattern/Stairs/UsersPerStep").unwrap_or(1.0);
            let steps = number(request, "/InputConfig/TrafficPattern/Stairs/NumberOfSteps").unwrap_or(1.0);
            let duration = number(request, "/InputConfig/TrafficPattern/Stairs/DurationInSeconds").unwrap_or(120.0);
            let _ = writeln!(
                out,
                "\n[traffic.stairs]\nusers_per_step = {users}\nstep_duration = \"{duration}s\"\nsteps = {steps}"
            );
        }
        Some("PHASES") | None => {
            let phases = request.pointer("/InputConfig/TrafficPattern/Phases").and_then(Value::as_array);
            match phases.filter(|phases| !phases.is_empty()) {
                Some(phases) => {
                    for phase in phases {
                        let initial = number(phase, "/InitialNumberOfUsers").unwrap_or(1.0);
                        let spawn_per_minute = number(phase, "/SpawnRate").unwrap_or(1.0);
                        let duration = number(phase, "/DurationInSeconds").unwrap_or(120.0);
                        let _ = writeln!(
                            out,
                            "\n[[traffic.phases]]   # IR SpawnRate {spawn_per_minute}/min\ninitial_users = {initial}\n\
                             spawn_rate_per_s = {}\nduration = \"{duration}s\"",
                            units::per_second(spawn_per_minute)
                        );
                    }
                }
                None => {
                    // IR's default job: plateau's quickstart-like stairs.
                    warnings.push(
                        "no TrafficPattern (IR picks one for Default jobs): using 10 stairs of 2 users, 2 minutes each"
                            .into(),
                    );
                    let _ =
                        writeln!(out, "\n[traffic.stairs]\nusers_per_step = 2\nstep_duration = \"120s\"\nsteps = 10");
                }
            }
        }
        Some(other) => return Err(ImportError::TrafficType { traffic_type: other.to_string() }),
    }

    // Stopping conditions, and the tightest latency threshold as the requirement IR leaves implicit.
    let _ = writeln!(out, "\n[stopping]");
    if let Some(max) = number(request, "/StoppingConditions/MaxInvocations") {
        let _ = writeln!(out, "max_invocations = {max}");
    }
    if let Some(flat) = text(request, "/StoppingConditions/FlatInvocations") {
        let _ = writeln!(out, "flat_invocations = {}", quoted(&flat.to_ascii_lowercase()));
    }
    let thresholds: Vec<(String, f64)> = request
        .pointer("/StoppingConditions/ModelLatencyThresholds")
        .and_then(Value::as_array)
        .map(|thresholds| {
            thresholds
                .iter()
                .filter_map(|threshold| {
                    Some((
                        text(threshold, "/Percentile")?.to_ascii_lowercase(),
                        number(threshold, "/ValueInMilliseconds")?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for (percentile, latency_ms) in &thresholds {
        let _ = writeln!(
            out,
            "\n[[stopping.latency_thresholds]]\npercentile = {}\nlatency_ms = {latency_ms}",
            quoted(percentile)
        );
    }
    if let Some((percentile, latency_ms)) = thresholds.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
        let _ = writeln!(
            out,
            "\n[requirements]   # from the tightest ModelLatencyThreshold\nlatency_ms = {latency_ms}\npercentile = {}\n\
             objective = \"cost-per-inference\"",
            quoted(percentile)
        );
    }

    // MaxNumberOfTests below the grid: IR samples the tests; plateau's plan samples the environment grid (seeded,
    // every configuration kept), and when there are fewer tests than configurations the sample of configurations is
    // taken here, seeded too, and named.
    let max_tests = request.pointer("/InputConfig/ResourceLimit/MaxNumberOfTests").and_then(Value::as_u64);
    let grid: usize = candidates.iter().map(Candidate::tests).sum();
    if let Some(max) = max_tests.map(|max| max as usize).filter(|max| *max < candidates.len()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(SAMPLE_SEED);
        let mut kept: Vec<usize> = rand::seq::index::sample(&mut rng, candidates.len(), max.max(1)).into_vec();
        kept.sort_unstable();
        let left_out: Vec<String> = (0..candidates.len())
            .filter(|index| !kept.contains(index))
            .map(|index| format!("{} ({})", candidates[index].name(index), candidates[index].source))
            .collect();
        warnings.push(format!(
            "MaxNumberOfTests = {max} is below the {} configurations: a seeded sample of {max} kept, as IR samples; \
             left out: {}",
            candidates.len(),
            left_out.join(", ")
        ));
        let mut index = 0;
        candidates.retain(|_| {
            index += 1;
            kept.contains(&(index - 1))
        });
    } else if let Some(max) = max_tests.filter(|max| (*max as usize) < grid) {
        warnings.push(format!(
            "MaxNumberOfTests = {max} is below the grid of {grid} tests: plateau runs a sample of {max}, seeded by \
             [job] seed, every configuration in it, as IR samples"
        ));
    }
    if let Some(limit) = request.pointer("/InputConfig/ResourceLimit") {
        let _ = writeln!(out, "\n[limits]");
        if let Some(max) = max_tests {
            let _ = writeln!(out, "max_tests = {}", max.max(1));
        }
        if let Some(max) = number(limit, "/MaxParallelOfTests") {
            let _ = writeln!(out, "max_parallel = {max}");
        }
    }

    let mut configuration_count = 0;
    for (index, candidate) in candidates.iter().enumerate() {
        configuration_count += 1;
        let name = candidate.name(index);
        let _ = writeln!(out, "\n[[configurations]]   # from {}\nname = {}", candidate.source, quoted(&name));
        match (candidate.instance_type, candidate.serverless) {
            (Some(instance_type), _) => {
                let _ = writeln!(out, "instance_type = {}", quoted(instance_type));
            }
            (None, Some(serverless)) => {
                let memory = number(serverless, "/MemorySizeInMB").unwrap_or(2048.0);
                let concurrency = number(serverless, "/MaxConcurrency").unwrap_or(1.0);
                let provisioned = number(serverless, "/ProvisionedConcurrency").unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "instance_type = \"serverless\"   # priced per GB-second of its memory, all concurrency busy at the plateau\n\
                     serverless = {{ memory_mb = {memory}, max_concurrency = {concurrency}, provisioned_concurrency = {provisioned} }}"
                );
            }
            (None, None) => unreachable!("refused above"),
        }
        if !candidate.parameters.is_empty() {
            let ranges: Vec<String> = candidate
                .parameters
                .iter()
                .map(|(name, values)| {
                    let values: Vec<String> = values.iter().map(|value| quoted(value)).collect();
                    format!("{} = [{}]", quoted(name), values.join(", "))
                })
                .collect();
            let _ = writeln!(out, "environment = {{ {} }}", ranges.join(", "));
        }
    }
    let existing = if candidates.is_empty() { existing } else { Vec::new() };
    for endpoint in &existing {
        configuration_count += 1;
        let _ = writeln!(
            out,
            "\n[[configurations]]\nname = {}\ninstance_type = \"existing-endpoint\"   # REVIEW: its instance type\n\
             price_per_hour_usd = 1.0   # REVIEW: its price\nendpoint_name = {}",
            quoted(endpoint),
            quoted(endpoint)
        );
    }
    if configuration_count == 0 {
        return Err(ImportError::NoEndpoints);
    }
    warnings.extend(skipped.into_iter().map(|path| format!("{path}: not imported (no plateau equivalent)")));
    Ok(Imported { toml: out, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_first_arn_that_names_one() {
        let request = serde_json::json!({
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "InputConfig": { "ModelPackageVersionArn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/x/1" },
        });
        assert_eq!(arn_region(&request), Some(("eu-west-1", "InputConfig.ModelPackageVersionArn".to_string())));
        assert_eq!(arn_region(&serde_json::json!({ "RoleArn": "arn:aws:iam::1:role/r", "JobName": "arn" })), None);
    }
}
