//! The SageMaker target: existing real-time endpoints, called with InvokeEndpoint (or
//! InvokeEndpointWithResponseStream) through the AWS SDK, on the same engine as HTTP. The SDK's retries are off:
//! a throttled or failed request is a measured error, never a silent second try inside one latency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sagemakerruntime::Client;
use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::types::ResponseStream;
use aws_smithy_types::Blob;
use serde::{Deserialize, Serialize};

use super::{Session, Target};
use crate::measure::{ErrorClass, Outcome};
use crate::payload::{PayloadSource, PayloadStream};
use crate::spec::{Payload, SageMakerSpec};

/// Where the AWS SDK for Rust looks for credentials, in its order: named in the message when none are found.
pub const CREDENTIAL_SOURCES: &str = "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the shared \
    profile files (~/.aws/credentials and ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE), web \
    identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), ECS container credentials \
    (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI), and EC2 instance metadata (unless \
    AWS_EC2_METADATA_DISABLED=true)";

/// A kind of failure seen during a run, with one example message: what a model's own errors said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub class: ErrorClass,
    /// The service's error code, e.g. `ModelError`, `ThrottlingException`.
    pub code: String,
    /// For `ModelError`: the status the model's container returned.
    pub model_status: Option<u16>,
    pub count: u64,
    pub example: String,
}

/// Where and how an AWS client connects: from the job file, the rest from the SDK's default chain.
#[derive(Debug, Clone, Copy)]
pub struct AwsPlace<'a> {
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
) -> anyhow::Result<aws_config::SdkConfig> {
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
        anyhow::bail!("no AWS region: set `region` under [target], or AWS_REGION, or a region in the profile");
    }
    Ok(config)
}

/// Resolves credentials once before any request, so a missing or broken chain is one clear message, not a run of
/// errors. The credentials themselves are never printed.
pub async fn check_credentials(config: &aws_config::SdkConfig) -> anyhow::Result<()> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let provider = config.credentials_provider().ok_or_else(|| {
        anyhow::anyhow!("no AWS credentials provider is configured; plateau looks in {CREDENTIAL_SOURCES}")
    })?;
    provider.provide_credentials().await.map(|_| ()).map_err(|error| {
        anyhow::anyhow!("no usable AWS credentials ({}); plateau looked in {CREDENTIAL_SOURCES}", error_chain(&error))
    })
}

/// An SDK error in one line: the service's code and message when it answered, else what failed on the way.
pub fn describe_sdk_error<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(context) => format!(
            "{}: {}",
            context.err().code().unwrap_or("error"),
            context.err().message().unwrap_or("(no message)")
        ),
        other => error_chain(other),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub struct SageMakerTarget {
    shared: Arc<Invocation>,
    payload: PayloadSource,
}

/// What every request to one endpoint shares.
struct Invocation {
    client: Client,
    endpoint_name: String,
    region: String,
    spec: SageMakerSpec,
    content_type: String,
    accept: Option<String>,
    timeout: Duration,
    details: Mutex<BTreeMap<(String, Option<u16>), ErrorDetail>>,
}

impl SageMakerTarget {
    pub fn new(
        config: &aws_config::SdkConfig,
        endpoint_name: &str,
        spec: &SageMakerSpec,
        payload: &Payload,
        source: PayloadSource,
        timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Invocation {
                client: Client::new(config),
                endpoint_name: endpoint_name.to_string(),
                region: config.region().map_or_else(String::new, |region| region.to_string()),
                spec: spec.clone(),
                content_type: payload.content_type.clone(),
                accept: payload.accept.clone(),
                timeout,
                details: Mutex::new(BTreeMap::new()),
            }),
            payload: source,
        }
    }

    /// One request before the ramp: an unknown endpoint, a wrong region or a denied call ends the configuration
    /// with a message naming the endpoint, instead of a run of identical errors.
    pub async fn preflight(&self) -> anyhow::Result<()> {
        let mut session = self.session();
        session.prepare().map_err(|message| anyhow::anyhow!(message))?;
        let invocation = &self.shared;
        let body = session.next.take().unwrap_or_default();
        let result = invocation.invoke(body).await;
        match result {
            Ok(_) => Ok(()),
            // The endpoint exists and answers; its model's errors and throttling are measured, not fatal.
            Err(failure) if matches!(failure.class, ErrorClass::ModelError | ErrorClass::Throttled) => Ok(()),
            Err(failure) => Err(anyhow::anyhow!(explain(&invocation.endpoint_name, &invocation.region, &failure))),
        }
    }

    pub fn error_details(&self) -> Vec<ErrorDetail> {
        self.shared.details.lock().expect("details lock").values().cloned().collect()
    }
}

/// Why an endpoint cannot be benchmarked, naming it and its region, with a hint where the cause is a usual one.
pub fn explain(endpoint_name: &str, region: &str, failure: &Failure) -> String {
    format!(
        "SageMaker endpoint `{endpoint_name}` in {region}: {} ({}){}",
        failure.message,
        failure.code,
        hint_for(&failure.message)
    )
}

fn hint_for(message: &str) -> &'static str {
    if message.contains("not found") || message.contains("Could not find endpoint") {
        "; check the endpoint name and the region (target.region)"
    } else if message.contains("not authorized") || message.contains("AccessDenied") {
        "; the credentials need sagemaker:InvokeEndpoint on this endpoint"
    } else {
        ""
    }
}

/// A failed call, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: ErrorClass,
    pub code: String,
    pub model_status: Option<u16>,
    pub message: String,
}

/// What an operation's typed error variant says: its class, its code, and a model's own status.
type Typed = (ErrorClass, &'static str, Option<i32>);

/// Sorts an SDK error into plateau's error classes: by the operation's typed variant, then by the service's error
/// code (throttling has no variant of its own), then by what went wrong on the way (timeouts, connections).
pub fn classify<E, R>(error: &SdkError<E, R>, typed: impl Fn(&E) -> Option<Typed>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            // The typed error carries the message when the metadata does not (errors built by the SDK's types).
            let message = service_error.message().map_or_else(|| service_error.to_string(), str::to_string);
            if let Some((class, code, model_status)) = typed(service_error) {
                let model_status = model_status.and_then(|status| u16::try_from(status).ok());
                let message = message.strip_prefix(&format!("{code}: ")).map_or(message.clone(), str::to_string);
                return Failure { class, code: code.to_string(), model_status, message };
            }
            let code = service_error.code().unwrap_or("Unknown").to_string();
            let class = match code.as_str() {
                "ThrottlingException" | "TooManyRequestsException" => ErrorClass::Throttled,
                "ValidationError" | "ValidationException" => ErrorClass::Validation,
                _ => ErrorClass::Other,
            };
            Failure { class, code, model_status: None, message }
        }
        SdkError::TimeoutError(_) => Failure {
            class: ErrorClass::Timeout,
            code: "Timeout".into(),
            model_status: None,
            message: "timed out".into(),
        },
        SdkError::DispatchFailure(failure) => {
            let class = if failure.is_timeout() {
                ErrorClass::Timeout
            } else if failure.is_io() {
                ErrorClass::Connect
            } else {
                ErrorClass::Other
            };
            Failure { class, code: "DispatchFailure".into(), model_status: None, message: error_chain(error) }
        }
        _ => {
            Failure { class: ErrorClass::Other, code: "Other".into(), model_status: None, message: error_chain(error) }
        }
    }
}

impl Invocation {
    /// Sends one request; for streaming endpoints, reads every chunk and times the first.
    async fn invoke(&self, body: Vec<u8>) -> Result<Option<(Duration, u32)>, Failure> {
        let spec = &self.spec;
        let started = Instant::now();
        if spec.streaming {
            let request = self
                .client
                .invoke_endpoint_with_response_stream()
                .endpoint_name(&self.endpoint_name)
                .body(Blob::new(body))
                .content_type(&self.content_type)
                .set_accept(self.accept.clone())
                .set_custom_attributes(spec.custom_attributes.clone())
                .set_target_variant(spec.target_variant.clone())
                .set_inference_component_name(spec.inference_component.clone());
            let mut output = request.send().await.map_err(|error| classify(&error, typed_stream))?;
            let mut first_chunk = None;
            let mut chunks = 0u32;
            loop {
                match output.body.recv().await {
                    Ok(Some(ResponseStream::PayloadPart(_))) => {
                        first_chunk.get_or_insert_with(|| started.elapsed());
                        chunks += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(error) => return Err(classify(&error, |_| None)),
                }
            }
            Ok(Some((first_chunk.unwrap_or_else(|| started.elapsed()), chunks)))
        } else {
            self.client
                .invoke_endpoint()
                .endpoint_name(&self.endpoint_name)
                .body(Blob::new(body))
                .content_type(&self.content_type)
                .set_accept(self.accept.clone())
                .set_custom_attributes(spec.custom_attributes.clone())
                .set_target_variant(spec.target_variant.clone())
                .set_target_model(spec.target_model.clone())
                .set_inference_component_name(spec.inference_component.clone())
                .send()
                .await
                .map_err(|error| classify(&error, typed_invoke))?;
            Ok(None)
        }
    }

    fn note(&self, failure: &Failure) {
        let mut details = self.details.lock().expect("details lock");
        let detail = details.entry((failure.code.clone(), failure.model_status)).or_insert_with(|| ErrorDetail {
            class: failure.class,
            code: failure.code.clone(),
            model_status: failure.model_status,
            count: 0,
            example: failure.message.chars().take(500).collect(),
        });
        detail.count += 1;
    }
}

fn typed_invoke(error: &aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError) -> Option<Typed> {
    use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError as E;
    Some(match error {
        E::ModelError(model) => (ErrorClass::ModelError, "ModelError", model.original_status_code()),
        E::ValidationError(_) => (ErrorClass::Validation, "ValidationError", None),
        E::ModelNotReadyException(_) => (ErrorClass::Throttled, "ModelNotReadyException", None),
        E::ServiceUnavailable(_) => (ErrorClass::Http5xx, "ServiceUnavailable", None),
        E::InternalFailure(_) => (ErrorClass::Http5xx, "InternalFailure", None),
        E::InternalDependencyException(_) => (ErrorClass::Http5xx, "InternalDependencyException", None),
        _ => return None,
    })
}

fn typed_stream(
    error: &aws_sdk_sagemakerruntime::operation::invoke_endpoint_with_response_stream::InvokeEndpointWithResponseStreamError,
) -> Option<Typed> {
    use aws_sdk_sagemakerruntime::operation::invoke_endpoint_with_response_stream::InvokeEndpointWithResponseStreamError as E;
    Some(match error {
        E::ModelError(model) => (ErrorClass::ModelError, "ModelError", model.original_status_code()),
        E::ValidationError(_) => (ErrorClass::Validation, "ValidationError", None),
        E::ModelStreamError(_) => (ErrorClass::ModelError, "ModelStreamError", None),
        E::ServiceUnavailable(_) => (ErrorClass::Http5xx, "ServiceUnavailable", None),
        E::InternalFailure(_) => (ErrorClass::Http5xx, "InternalFailure", None),
        E::InternalStreamFailure(_) => (ErrorClass::Http5xx, "InternalStreamFailure", None),
        _ => return None,
    })
}

impl Target for SageMakerTarget {
    type Session = SageMakerSession;
    fn session(&self) -> SageMakerSession {
        SageMakerSession { invocation: Arc::clone(&self.shared), payload: self.payload.stream(), next: None }
    }
}

pub struct SageMakerSession {
    invocation: Arc<Invocation>,
    payload: PayloadStream,
    next: Option<Vec<u8>>,
}

impl Session for SageMakerSession {
    fn prepare(&mut self) -> Result<(), String> {
        if self.next.is_none() {
            // InvokeEndpoint has no headers or path of its own: a plugin's body is what is sent.
            self.next = Some(self.payload.next_request()?.body.to_vec());
        }
        Ok(())
    }

    async fn call(&mut self) -> Outcome {
        let Some(body) = self.next.take() else {
            debug_assert!(false, "call() without prepare()");
            return Outcome::Failure { class: ErrorClass::Other };
        };
        let invocation = &self.invocation;
        let started = Instant::now();
        match tokio::time::timeout(invocation.timeout, invocation.invoke(body)).await {
            Err(_) => Outcome::Failure { class: ErrorClass::Timeout },
            Ok(Err(failure)) => {
                invocation.note(&failure);
                Outcome::Failure { class: failure.class }
            }
            Ok(Ok(None)) => Outcome::Success { latency_us: started.elapsed().as_micros() as u64 },
            Ok(Ok(Some((first_chunk, chunks)))) => Outcome::Streamed {
                latency_us: started.elapsed().as_micros() as u64,
                first_chunk_us: first_chunk.as_micros() as u64,
                chunks,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    //! Error mapping, from the SDK's own error types: moto cannot make an endpoint throttle or a model fail.
    use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
    use aws_sdk_sagemakerruntime::types::error::{ModelError, ServiceUnavailable, ValidationError};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(error: InvokeEndpointError) -> Failure {
        classify(&SdkError::<InvokeEndpointError, ()>::service_error(error, ()), typed_invoke)
    }

    #[test]
    fn service_errors_fall_in_their_classes() {
        let model = service_error(InvokeEndpointError::ModelError(
            ModelError::builder().original_status_code(424).message("Received client error (424) from model").build(),
        ));
        assert_eq!(
            (model.class, model.model_status, model.code.as_str()),
            (ErrorClass::ModelError, Some(424), "ModelError")
        );

        let throttled = service_error(InvokeEndpointError::generic(
            ErrorMetadata::builder().code("ThrottlingException").message("Rate exceeded").build(),
        ));
        assert_eq!(throttled.class, ErrorClass::Throttled);

        let unavailable = service_error(InvokeEndpointError::ServiceUnavailable(ServiceUnavailable::builder().build()));
        assert_eq!(unavailable.class, ErrorClass::Http5xx);

        let unknown = service_error(InvokeEndpointError::generic(ErrorMetadata::builder().code("Surprise").build()));
        assert_eq!(unknown.class, ErrorClass::Other);
    }

    #[test]
    fn an_unknown_endpoint_is_named_with_its_region_and_a_hint() {
        let failure = service_error(InvokeEndpointError::ValidationError(
            ValidationError::builder().message("Endpoint my-model of account 123456789012 not found.").build(),
        ));
        assert_eq!(failure.class, ErrorClass::Validation);
        assert_eq!(
            explain("my-model", "eu-west-1", &failure),
            "SageMaker endpoint `my-model` in eu-west-1: Endpoint my-model of account 123456789012 not found. \
             (ValidationError); check the endpoint name and the region (target.region)"
        );
    }

    #[test]
    fn timeouts_are_timeouts() {
        let error = SdkError::<InvokeEndpointError, ()>::timeout_error("operation timed out");
        assert_eq!(classify(&error, typed_invoke).class, ErrorClass::Timeout);
    }
}
