//! `plateau report --format ir-json`: a run's results in the shape of Inference Recommender's
//! DescribeInferenceRecommendationsJob response, so scripts written for IR read plateau's runs unchanged.
//!
//! Only figures plateau stands behind become recommendations: configurations that meet the requirements with a
//! confirmed plateau, in the recommendation's order. A figure that is a lower bound, or a configuration that
//! misses a goal, is left out, as IR lists only what it recommends.

use serde_json::{Value, json};

use crate::aws::cloudwatch::run_job_name;
use crate::results::{ConfigurationResult, Results, RunStatus};

/// The document, as `serde_json` values in IR's field names and units: MaxInvocations per minute and ModelLatency
/// in milliseconds (integers, as IR's are), costs in US dollars, times in seconds since the epoch.
pub fn describe_job(results: &Results) -> Value {
    let manifest = &results.manifest;
    let job_name = run_job_name(&results.job.name, &manifest.run_id);
    let status = match (&manifest.stopped, results.partial) {
        (Some(_), _) => "STOPPED",
        _ if results.configurations.iter().all(|result| result.status == RunStatus::Failed) => "FAILED",
        _ => "COMPLETED",
    };
    let percentile = results.job.requirements.percentile.value();
    let recommended: Vec<&ConfigurationResult> = results
        .recommendation
        .iter()
        .flat_map(|recommendation| {
            let mut ranked: Vec<_> = recommendation
                .ranking
                .iter()
                .filter(|verdict| verdict.meets_requirements && !verdict.inconclusive)
                .filter_map(|verdict| verdict.rank.map(|rank| (rank, verdict.configuration.as_str())))
                .collect();
            ranked.sort_by_key(|(rank, _)| *rank);
            ranked.into_iter().filter_map(|(_, name)| results.configurations.iter().find(|c| c.name == name))
        })
        .collect();
    let recommendations: Vec<Value> = recommended
        .iter()
        .enumerate()
        .filter_map(|(index, result)| {
            let metrics = result.metrics.as_ref().filter(|metrics| !metrics.lower_bound)?;
            let count = match &results.recommendation {
                Some(recommendation) if recommendation.configuration.as_deref() == Some(result.name.as_str()) => {
                    recommendation.initial_instance_count.unwrap_or(result.instance_count)
                }
                _ => result.instance_count,
            };
            let mut endpoint = json!({
                "VariantName": result.endpoint.as_ref().and_then(|e| e.variant.clone()).unwrap_or_else(|| "AllTraffic".into()),
                "InstanceType": result.instance_type,
                "InitialInstanceCount": count,
            });
            if let Some(identity) = &result.endpoint {
                endpoint["EndpointName"] = json!(identity.name);
            }
            if let Some(serverless) = &result.serverless {
                endpoint["ServerlessConfig"] = json!({
                    "MemorySizeInMB": serverless.memory_mb,
                    "MaxConcurrency": serverless.max_concurrency,
                    "ProvisionedConcurrency": serverless.provisioned_concurrency,
                });
            }
            let mut figures = json!({
                "CostPerHour": metrics.cost_per_hour_usd,
                "MaxInvocations": metrics.max_invocations.round() as i64,
                "ModelLatency": metrics.model_latency.at(percentile).round() as i64,
            });
            for (key, value) in [
                ("CostPerInference", metrics.cost_per_inference_usd),
                ("CpuUtilization", metrics.cpu_utilization_percent),
                ("MemoryUtilization", metrics.memory_utilization_percent),
            ] {
                if let Some(value) = value {
                    figures[key] = json!(value);
                }
            }
            let parameters: Vec<Value> = result
                .environment
                .iter()
                .map(|(key, value)| json!({ "Key": key, "ValueType": "String", "Value": value }))
                .collect();
            let mut recommendation = json!({
                "RecommendationId": format!("{job_name}/{}", index + 1),
                "Metrics": figures,
                "EndpointConfiguration": endpoint,
                "ModelConfiguration": { "EnvironmentParameters": parameters },
            });
            if let Some(started_ms) = result.ramp_started_unix_ms {
                let started_s = started_ms as f64 / 1000.0;
                recommendation["InvocationStartTime"] = json!(started_s);
                recommendation["InvocationEndTime"] = json!(started_s + result.elapsed_s as f64);
            }
            Some(recommendation)
        })
        .collect();
    // IR's figures for the existing endpoints it was given: each SageMaker configuration with a figure to stand on.
    let performances: Vec<Value> = results
        .configurations
        .iter()
        .filter_map(|result| {
            let identity = result.endpoint.as_ref()?;
            let metrics = result.metrics.as_ref().filter(|metrics| !metrics.lower_bound)?;
            Some(json!({
                "Metrics": {
                    "MaxInvocations": metrics.max_invocations.round() as i64,
                    "ModelLatency": metrics.model_latency.at(percentile).round() as i64,
                },
                "EndpointInfo": { "EndpointName": identity.name },
            }))
        })
        .collect();
    let configurations: Vec<Value> = results
        .configurations
        .iter()
        .map(|result| {
            let ranges: Vec<Value> =
                result.environment.iter().map(|(name, value)| json!({ "Name": name, "Value": [value] })).collect();
            json!({
                "InstanceType": result.instance_type,
                "EnvironmentParameterRanges": { "CategoricalParameterRanges": ranges },
            })
        })
        .collect();
    let mut document = json!({
        "JobName": job_name,
        "JobType": "Advanced",
        // Not an AWS ARN: no IR job exists. It names the run, in ARN form for scripts that split on '/'.
        "JobArn": format!("arn:plateau:local::inference-recommendations-job/{job_name}"),
        "RoleArn": "",
        "Status": status,
        "CreationTime": epoch_s(&manifest.started_at),
        "LastModifiedTime": epoch_s(&manifest.ended_at),
        "InputConfig": { "EndpointConfigurations": configurations },
        "InferenceRecommendations": recommendations,
        "EndpointPerformances": performances,
    });
    if let Some(description) = &results.job.description {
        document["JobDescription"] = json!(description);
    }
    if status != "STOPPED" && !results.partial {
        document["CompletionTime"] = json!(epoch_s(&manifest.ended_at));
    }
    let failures: Vec<String> = results
        .configurations
        .iter()
        .filter_map(|result| result.failure.as_ref().map(|failure| format!("{}: {failure}", result.label())))
        .collect();
    if let Some(reason) = manifest.stopped.clone().or_else(|| (status == "FAILED").then(|| failures.join("; "))) {
        document["FailureReason"] = json!(reason);
    }
    document
}

/// An RFC 3339 time as seconds since the epoch (AWS JSON's timestamps); 0 if it does not parse.
fn epoch_s(text: &str) -> f64 {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |since| since.as_secs_f64())
}
