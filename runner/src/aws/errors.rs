//! AWS errors in plateau's terms: an SDK error sorted into plateau's error classes (by the operation's typed
//! variant, then the service's code, then what failed on the way), in one line, and explained with a hint.

use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

use crate::measure::ErrorClass;

/// A response's HTTP status, where the SDK kept the response (its tests use none).
pub trait HttpStatus {
    fn http_status(&self) -> Option<u16>;
}

impl HttpStatus for aws_sdk_sagemakerruntime::config::http::HttpResponse {
    fn http_status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// An event stream's message: the stream's errors come inside a response that already answered 200.
impl HttpStatus for aws_smithy_types::event_stream::RawMessage {
    fn http_status(&self) -> Option<u16> {
        None
    }
}

impl HttpStatus for () {
    fn http_status(&self) -> Option<u16> {
        None
    }
}

/// A service error's code, or, when the answer had none (a proxy's or load balancer's page), its HTTP status.
fn code_or_status<E: ProvideErrorMetadata, R: HttpStatus>(error: &E, response: &R) -> String {
    match (error.code(), response.http_status()) {
        (Some(code), _) => code.to_string(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "Unknown".to_string(),
    }
}

/// An SDK error in one line: the service's code (or the HTTP status) and message when it answered, else what failed
/// on the way.
pub fn describe_sdk_error<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match error {
        SdkError::ServiceError(context) => format!(
            "{}: {}",
            code_or_status(context.err(), context.raw()),
            context.err().message().unwrap_or("(no message)")
        ),
        other => error_chain(other),
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    R: std::fmt::Debug + HttpStatus,
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
            let code = code_or_status(service_error, context.raw());
            let status = context.raw().http_status();
            let class = match code.as_str() {
                "ThrottlingException" | "TooManyRequestsException" => ErrorClass::Throttled,
                "ValidationError" | "ValidationException" => ErrorClass::Validation,
                _ if status == Some(429) => ErrorClass::Throttled,
                _ if status.is_some_and(|status| status >= 500) => ErrorClass::Http5xx,
                _ if status.is_some_and(|status| status >= 400) => ErrorClass::Http4xx,
                _ => ErrorClass::Other,
            };
            // "unhandled error (Unknown)" says nothing; the status does.
            let message = if message.starts_with("unhandled error") {
                format!("{code} without an AWS error code")
            } else {
                message
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

pub(crate) fn typed_invoke(
    error: &aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError,
) -> Option<Typed> {
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

pub(crate) fn typed_stream(
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
