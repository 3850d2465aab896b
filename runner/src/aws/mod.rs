//! AWS set-up, in one place for every caller: where a client connects, credentials checked once before a run,
//! the clients a job needs, the mapping of SDK errors into plateau's classes, and CloudWatch.

pub mod cloudwatch;
pub mod errors;
pub mod provision;
pub mod s3;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::spec::{Job, TargetSpec};
use errors::error_chain;

/// Where the AWS SDK for Rust looks for credentials, in its order: named in the message when none are found.
pub const CREDENTIAL_SOURCES: &str = "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the shared \
    profile files (~/.aws/credentials and ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE), web \
    identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), ECS container credentials \
    (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI), and EC2 instance metadata (unless \
    AWS_EC2_METADATA_DISABLED=true)";

/// Why AWS cannot be reached before a run starts.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS region: {where_to_set}AWS_REGION, or a region in the profile")]
    NoRegion { where_to_set: &'static str },
    #[error("no AWS credentials provider is configured; plateau looks in {CREDENTIAL_SOURCES}")]
    NoCredentialsProvider,
    #[error("no usable AWS credentials ({reason}); plateau looked in {CREDENTIAL_SOURCES}")]
    NoCredentials { reason: String },
}

/// Where and how an AWS client connects: from the job file, the rest from the SDK's default chain.
#[derive(Debug, Clone, Copy)]
pub struct AwsPlace<'a> {
    /// Where the job file sets the region, for the message when there is none: "set `region` under [target], or ".
    pub where_to_set: &'static str,
    pub region: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub endpoint_url: Option<&'a str>,
}

/// The SDK configuration for `place`. `measured` turns the SDK's retries off (a retry inside one measured
/// latency would hide a throttle); `timeout` bounds each call.
pub async fn sdk_config(
    place: AwsPlace<'_>,
    measured: bool,
    timeout: Duration,
) -> Result<aws_config::SdkConfig, AwsError> {
    let retries = if measured { RetryConfig::disabled() } else { RetryConfig::standard() };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retries)
        .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).connect_timeout(timeout).build());
    if let Some(region) = place.region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(profile) = place.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = place.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(AwsError::NoRegion { where_to_set: place.where_to_set });
    }
    Ok(config)
}

/// Resolves credentials once before any request, so a missing or broken chain is one clear message, not a run of
/// errors. The credentials themselves are never printed.
pub async fn check_credentials(config: &aws_config::SdkConfig) -> Result<(), AwsError> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let provider = config.credentials_provider().ok_or(AwsError::NoCredentialsProvider)?;
    provider
        .provide_credentials()
        .await
        .map(|_| ())
        .map_err(|error| AwsError::NoCredentials { reason: error_chain(&error) })
}

/// The AWS clients a job needs, made once: SageMaker Runtime for each sagemaker target (retries off), SageMaker
/// for each that provisions its endpoints, CloudWatch for publishing or reading endpoint metrics (retries on: they
/// are not measured).
pub struct AwsClients {
    /// Indexed like `Job::targets`; `None` for targets that are not SageMaker endpoints.
    pub sagemaker: Vec<Option<aws_config::SdkConfig>>,
    /// Indexed like `Job::targets`; `None` for targets that do not provision endpoints.
    pub provisioners: Vec<Option<provision::Provisioner>>,
    pub cloudwatch: Option<aws_sdk_cloudwatch::Client>,
}

impl AwsClients {
    pub async fn connect(job: &Job) -> Result<Self, AwsError> {
        let mut sagemaker = Vec::new();
        let mut provisioners = Vec::new();
        for target in &job.targets {
            provisioners.push(match &target.spec {
                TargetSpec::Sagemaker { endpoint, provision: Some(provision), .. } => {
                    let place = AwsPlace {
                        where_to_set: "set `region` under [target], or ",
                        region: endpoint.region.as_deref(),
                        profile: endpoint.profile.as_deref(),
                        endpoint_url: provision.endpoint_url.as_deref(),
                    };
                    Some(provision::Provisioner::connect(place).await?)
                }
                _ => None,
            });
            sagemaker.push(match &target.spec {
                TargetSpec::Sagemaker { endpoint, timeout, .. } => {
                    let place = AwsPlace {
                        where_to_set: "set `region` under [target], or ",
                        region: endpoint.region.as_deref(),
                        profile: endpoint.profile.as_deref(),
                        endpoint_url: endpoint.endpoint_url.as_deref(),
                    };
                    let config = sdk_config(place, true, *timeout).await?;
                    check_credentials(&config).await?;
                    Some(config)
                }
                _ => None,
            });
        }
        let profile = job.targets.iter().find_map(|target| match &target.spec {
            TargetSpec::Sagemaker { endpoint, .. } => endpoint.profile.as_deref(),
            _ => None,
        });
        let watch = &job.cloudwatch;
        let cloudwatch = if watch.publish || watch.endpoint_metrics {
            let place = AwsPlace {
                where_to_set: "set `region` under [cloudwatch], or ",
                region: watch.region.as_deref(),
                profile,
                endpoint_url: watch.endpoint_url.as_deref(),
            };
            let config = sdk_config(place, false, watch.timeout).await?;
            check_credentials(&config).await?;
            Some(aws_sdk_cloudwatch::Client::new(&config))
        } else {
            None
        };
        Ok(Self { sagemaker, provisioners, cloudwatch })
    }
}
