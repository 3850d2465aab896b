//! `plateau import-sagemaker`: a CreateInferenceRecommendationsJob request (the JSON the AWS CLI takes with
//! `--cli-input-json`) turned into an equivalent job file, so Inference Recommender users can move over. What has
//! no equivalent is named in the warnings, never dropped silently. The mapping is documented in docs/ir-mapping.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::units;

/// The job file's text, and a warning for each field that did not carry over.
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Fields plateau reads; anything else in the request is reported.
const UNDERSTOOD: &[&str] = &[
    "JobName",
    "JobDescription",
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

/// A name SageMaker accepts for an endpoint: letters, digits and hyphens, at most 63.
fn endpoint_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let cleaned: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let trimmed: String = cleaned.split('-').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-");
    trimmed.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
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
    #[error("the request has no InputConfig.EndpointConfigurations and no InputConfig.Endpoints")]
    NoEndpoints,
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

    if let Some(limit) = request.pointer("/InputConfig/ResourceLimit") {
        let _ = writeln!(out, "\n[limits]");
        if let Some(max) = number(limit, "/MaxNumberOfTests") {
            let _ = writeln!(out, "max_tests = {max}");
        }
        if let Some(max) = number(limit, "/MaxParallelOfTests") {
            let _ = writeln!(out, "max_parallel = {max}");
        }
    }

    let mut configuration_count = 0;
    for (index, configuration) in configurations.into_iter().flatten().enumerate() {
        let instance_type = text(configuration, "/InstanceType");
        let serverless = configuration.pointer("/ServerlessConfig");
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
        // Each environment combination is an endpoint of its own on SageMaker: one configuration each.
        for environment in crate::spec::combinations(&parameters) {
            configuration_count += 1;
            let label = instance_type.map_or_else(|| format!("serverless-{index}"), str::to_string);
            let settings: Vec<String> = environment.iter().map(|(name, value)| format!("{name}={value}")).collect();
            let name = if settings.is_empty() { label.clone() } else { format!("{label} {}", settings.join(" ")) };
            let mut parts = vec![job_name, label.as_str()];
            parts.extend(environment.values().map(String::as_str));
            let _ = writeln!(out, "\n[[configurations]]\nname = {}", quoted(&name));
            match (instance_type, serverless) {
                (Some(instance_type), _) => {
                    let _ = writeln!(out, "instance_type = {}", quoted(instance_type));
                }
                (None, Some(serverless)) => {
                    let memory = number(serverless, "/MemorySizeInMB").unwrap_or(2048.0);
                    let concurrency = number(serverless, "/MaxConcurrency").unwrap_or(1.0);
                    let provisioned = number(serverless, "/ProvisionedConcurrency").unwrap_or(0.0);
                    let _ = writeln!(
                        out,
                        "instance_type = \"serverless\"\nprice_per_hour_usd = 1.0   # REVIEW: serverless bills per GB-second\n\
                         serverless = {{ memory_mb = {memory}, max_concurrency = {concurrency}, provisioned_concurrency = {provisioned} }}"
                    );
                }
                (None, None) => {
                    return Err(ImportError::NoInstanceType { index });
                }
            }
            let _ = writeln!(
                out,
                "endpoint_name = {}   # REVIEW: deploy it first; IR deployed it for you",
                quoted(&endpoint_name(&parts))
            );
            if !environment.is_empty() {
                let _ = writeln!(out, "# environment: {}", settings.join(", "));
            }
        }
    }
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
    if configurations.is_some_and(|configurations| !configurations.is_empty()) {
        warnings.push(
            "EndpointConfigurations: IR deploys the model on each; plateau benchmarks endpoints that exist, so deploy \
             one per configuration under the endpoint_name given (each environment combination is its own endpoint)"
                .into(),
        );
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

    #[test]
    fn endpoint_names_are_ones_sagemaker_accepts() {
        assert_eq!(endpoint_name(&["my job", "ml.c5.xlarge", "4"]), "my-job-ml-c5-xlarge-4");
        assert_eq!(endpoint_name(&["x".repeat(80).as_str()]).len(), 63);
    }
}
