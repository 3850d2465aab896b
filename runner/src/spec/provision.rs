//! `[target.provision]`: SageMaker endpoints plateau creates for each configuration and deletes after it, as
//! Inference Recommender does, instead of endpoints that already exist.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::places::{AWS_ENDPOINT_HINT, check_absolute_url};
use super::span_of;
use super::values::DurationValue;

/// Real endpoints take 5 to 15 minutes to come up; one still Creating after this is given up and deleted.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Provision")]
pub(super) struct RawProvision {
    /// The model: an existing SageMaker model, copied with each configuration's environment.
    #[schemars(with = "Option<String>")]
    model_name: Option<Spanned<String>>,
    /// The model: a model package (a versioned ARN from the model registry).
    #[schemars(with = "Option<String>")]
    model_package_arn: Option<Spanned<String>>,
    /// The model: a container image URI, with `model_data_url` when the image does not hold the model.
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    /// With `image`: the model artefacts (s3://bucket/model.tar.gz).
    #[schemars(with = "Option<String>")]
    model_data_url: Option<Spanned<String>>,
    /// With `model_package_arn`: which of the package's inference specifications to deploy (default its first).
    #[schemars(with = "Option<String>")]
    inference_specification_name: Option<Spanned<String>>,
    /// The IAM role SageMaker runs the model as; needed with `model_package_arn` and `image` (an existing model
    /// keeps its own unless this is given).
    #[schemars(with = "Option<String>")]
    execution_role_arn: Option<Spanned<String>>,
    /// SageMaker's API endpoint, when not the region's (a VPC endpoint, or an emulator); the target's
    /// `endpoint_url` is the runtime's, which is another service.
    #[schemars(with = "Option<String>")]
    endpoint_url: Option<Spanned<String>>,
    /// How long an endpoint may take to be InService (default 30 min); it also bounds the worst-case cost.
    create_timeout: Option<DurationValue>,
    /// Tags for every resource plateau creates, beside its own (plateau:job, plateau:run-id, plateau:configuration).
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// What plateau creates endpoints from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// An existing model: its containers and role, with the configuration's environment added.
    Existing { model_name: String, execution_role_arn: Option<String> },
    /// A model package from the registry, and which of its inference specifications (none: its first).
    Package { model_package_arn: String, inference_specification_name: Option<String>, execution_role_arn: String },
    /// A container image, and the model artefacts when the image does not hold them.
    Image { image: String, model_data_url: Option<String>, execution_role_arn: String },
}

/// A target's `[target.provision]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionSpec {
    pub model: ModelSource,
    /// SageMaker's API endpoint, when not the region's.
    pub endpoint_url: Option<String>,
    pub create_timeout: Duration,
    /// The user's tags, added to plateau's own.
    pub tags: BTreeMap<String, String>,
}

/// The ways `[target.provision]` can name a model, for the message when it names none or several.
const MODEL_KEYS: &str = "model_name, model_package_arn or image";

pub(super) fn validate_provision(
    raw: &Spanned<RawProvision>,
    prefix: &str,
    sink: &mut DiagnosticSink<'_>,
) -> Option<ProvisionSpec> {
    let key = |field: &str| format!("{prefix}.provision.{field}");
    let provision = raw.get_ref();
    let text = |value: &Option<Spanned<String>>| value.as_ref().map(|value| value.get_ref().clone());
    let named: Vec<&Spanned<String>> =
        [&provision.model_name, &provision.model_package_arn, &provision.image].into_iter().flatten().collect();
    if named.len() != 1 {
        sink.error(
            named.get(1).and_then(|second| span_of(*second)).or_else(|| span_of(raw)),
            format!("{prefix}.provision"),
            if named.is_empty() { "names no model to deploy" } else { "names more than one model to deploy" },
            Some(format!("give exactly one of {MODEL_KEYS}")),
        );
        return None;
    }
    if let Some(url) = &provision.model_data_url
        && provision.image.is_none()
    {
        sink.error(
            span_of(url),
            key("model_data_url"),
            "`model_data_url` goes with `image`",
            Some("a model package or an existing model already names its artefacts; remove it".into()),
        );
    }
    if let Some(name) = &provision.inference_specification_name
        && provision.model_package_arn.is_none()
    {
        sink.error(
            span_of(name),
            key("inference_specification_name"),
            "an inference specification belongs to a model package",
            Some("use it with model_package_arn, or remove it".into()),
        );
    }
    if let Some(url) = &provision.endpoint_url {
        check_absolute_url(url, &key("endpoint_url"), AWS_ENDPOINT_HINT, sink);
    }
    if let Some(arn) = &provision.model_package_arn
        && !arn.get_ref().starts_with("arn:")
    {
        sink.error(
            span_of(arn),
            key("model_package_arn"),
            format!("`{}` is not an ARN", arn.get_ref()),
            Some("e.g. \"arn:aws:sagemaker:us-east-1:123456789012:model-package/my-model/3\"".into()),
        );
    }
    for (tag, value) in &provision.tags {
        if tag.starts_with("plateau:") || tag.starts_with("aws:") || tag.is_empty() || tag.len() > 128 {
            sink.error(
                span_of(raw),
                key(&format!("tags.{tag}")),
                "is not a tag plateau can add",
                Some("1 to 128 characters, not starting with aws: (AWS's) or plateau: (plateau's own)".into()),
            );
        }
        if value.len() > 256 {
            sink.error(span_of(raw), key(&format!("tags.{tag}")), "a tag's value is at most 256 characters", None);
        }
    }
    let role = text(&provision.execution_role_arn);
    let mut needs_role = |what: &str| {
        sink.error(
            span_of(raw),
            key("execution_role_arn"),
            format!("a model created from {what} needs the IAM role SageMaker runs it as"),
            Some("e.g. execution_role_arn = \"arn:aws:iam::123456789012:role/SageMakerExecution\"".into()),
        );
    };
    let model = match (&provision.model_name, &provision.model_package_arn, &provision.image, role) {
        (Some(name), _, _, role) => {
            ModelSource::Existing { model_name: name.get_ref().clone(), execution_role_arn: role }
        }
        (_, Some(arn), _, Some(role)) => ModelSource::Package {
            model_package_arn: arn.get_ref().clone(),
            inference_specification_name: text(&provision.inference_specification_name),
            execution_role_arn: role,
        },
        (_, _, Some(image), Some(role)) => ModelSource::Image {
            image: image.get_ref().clone(),
            model_data_url: text(&provision.model_data_url),
            execution_role_arn: role,
        },
        (_, Some(_), _, None) => {
            needs_role("a model package");
            return None;
        }
        _ => {
            needs_role("an image");
            return None;
        }
    };
    Some(ProvisionSpec {
        model,
        endpoint_url: text(&provision.endpoint_url),
        create_timeout: provision.create_timeout.map_or(DEFAULT_CREATE_TIMEOUT, |timeout| timeout.0),
        tags: provision.tags.clone(),
    })
}
