//! `[cloudwatch]`: publishing plateau's client metrics, and reading a SageMaker endpoint's own.

use serde::Deserialize;
use toml::Spanned;

use std::time::Duration;

use super::diagnostic::DiagnosticSink;
use super::places::{AWS_ENDPOINT_HINT, check_absolute_url, check_region};
use super::span_of;
use super::target::{TargetDraft, TargetSpec};
use super::values::DurationValue;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CloudWatch")]
pub(super) struct RawCloudWatch {
    /// Publish each second's client metrics (invocations, errors, latency) with PutMetricData (default false).
    publish: Option<bool>,
    /// The namespace client metrics go to (default Inference Recommender's,
    /// /aws/sagemaker/InferenceRecommendationsJobs).
    #[schemars(with = "Option<String>")]
    namespace: Option<Spanned<String>>,
    /// Read the endpoint's own metrics back (CPU, memory, GPU utilization, model latency); the default for SageMaker
    /// targets.
    endpoint_metrics: Option<bool>,
    /// CloudWatch's region (default the target's, then the SDK's).
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    /// Another CloudWatch endpoint (a VPC endpoint, or an emulator).
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
    /// How long one CloudWatch call may take (default 10s): a CloudWatch that never answers delays nothing more.
    #[schemars(with = "Option<DurationValue>")]
    timeout: Option<Spanned<DurationValue>>,
    /// How long after a test run's measured window CloudWatch is given to publish the endpoint's metrics before
    /// they are read (default 2m; SageMaker publishes each minute's a minute or two later).
    #[schemars(with = "Option<DurationValue>")]
    metrics_delay: Option<Spanned<DurationValue>>,
}

/// Each CloudWatch call's limit when the job file sets none.
pub const DEFAULT_CLOUDWATCH_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Each call's limit.
    pub timeout: Duration,
    /// Waited after a test run's plateau window before its endpoint metrics are read.
    pub metrics_delay: Duration,
}

/// SageMaker publishes an endpoint's per-minute metrics a minute or two after the minute.
pub const DEFAULT_METRICS_DELAY: Duration = Duration::from_secs(120);

/// Inference Recommender's namespace, so dashboards built for it show plateau's runs too.
pub const DEFAULT_CLOUDWATCH_NAMESPACE: &str = "/aws/sagemaker/InferenceRecommendationsJobs";

pub(super) fn validate_cloudwatch(
    raw: &RawCloudWatch,
    targets: &[TargetDraft],
    sink: &mut DiagnosticSink<'_>,
) -> CloudWatchSpec {
    let sagemaker = targets.iter().find_map(|target| match &target.spec {
        Some(TargetSpec::Sagemaker { endpoint, .. }) => Some(endpoint),
        _ => None,
    });
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
        timeout: raw.timeout.as_ref().map_or(DEFAULT_CLOUDWATCH_TIMEOUT, |timeout| {
            let duration = timeout.get_ref().0;
            if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&duration) {
                let hint = "PutMetricData and GetMetricData answer in well under a second";
                sink.error(span_of(timeout), "cloudwatch.timeout", "must be between 1s and 5m", Some(hint.into()));
            }
            duration
        }),
        metrics_delay: raw.metrics_delay.as_ref().map_or(DEFAULT_METRICS_DELAY, |delay| {
            let duration = delay.get_ref().0;
            if duration > Duration::from_secs(15 * 60) {
                let hint = "SageMaker's metrics are published within minutes; 0s reads at once (an emulator)";
                sink.error(span_of(delay), "cloudwatch.metrics_delay", "must be at most 15m", Some(hint.into()));
            }
            duration
        }),
    }
}
