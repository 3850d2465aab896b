//! `[cloudwatch]`: publishing plateau's client metrics, and reading a SageMaker endpoint's own.

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::target::{AWS_ENDPOINT_HINT, TargetDraft, TargetSpec, check_absolute_url, check_region};

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CloudWatch")]
pub(super) struct RawCloudWatch {
    publish: Option<bool>,
    #[schemars(with = "Option<String>")]
    namespace: Option<Spanned<String>>,
    endpoint_metrics: Option<bool>,
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
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
    }
}
