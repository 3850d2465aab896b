//! SageMaker endpoints plateau creates for a test run and deletes after it, as Inference Recommender does: a model
//! (with the run's environment), an endpoint configuration and an endpoint, all tagged with the job and run.
//!
//! Every resource is written to the run's ledger (`provisioned.jsonl` in the output folder) before it is asked
//! for, and again once deleted, so a run that dies (kill -9, a lost machine) leaves a list `plateau cleanup`
//! deletes from; a resource in the ledger that SageMaker never made is simply not found then.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sagemaker::Client;
use aws_sdk_sagemaker::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemaker::types::{
    ContainerDefinition, EndpointStatus, ProductionVariant, ProductionVariantInstanceType,
    ProductionVariantServerlessConfig, Tag,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::errors::describe_sdk_error;
use super::{AwsPlace, check_credentials, sdk_config};
use crate::spec::{ModelSource, Serverless};

/// The ledger's file name in a run's output folder.
pub const LEDGER_FILE: &str = "provisioned.jsonl";

/// How long a control-plane call may take (they are not measured; the SDK retries them).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest pause between two DescribeEndpoint calls while an endpoint is created.
const LONGEST_POLL: Duration = Duration::from_secs(15);

/// What plateau creates, in the order it creates them (and deletes them in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Model,
    EndpointConfig,
    Endpoint,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Model => "model",
            Resource::EndpointConfig => "endpoint configuration",
            Resource::Endpoint => "endpoint",
        })
    }
}

/// Where a resource lives: what `plateau cleanup` needs to reach it without the job file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Entry {
    /// Written before the create call: the resource may exist from here on.
    Creating { resource: Resource, name: String, place: Place, at: String },
    /// Written once SageMaker accepted its deletion, or said it does not exist.
    Deleted { resource: Resource, name: String, at: String },
}

/// Why provisioning or cleaning up failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot write the ledger of created resources {path}: {source}")]
    Ledger { path: PathBuf, source: std::io::Error },
    #[error("cannot read the ledger {path}: {message}")]
    UnreadableLedger { path: PathBuf, message: String },
    #[error("cannot read model {model}, to copy it with this run's environment: {message}")]
    DescribeModel { model: String, message: String },
    #[error("model {model} has no container to copy")]
    NoContainer { model: String },
    #[error("model {model} has no execution role to copy; set execution_role_arn in [target.provision]")]
    NoRole { model: String },
    #[error("cannot create {resource} {name}: {message}")]
    Create { resource: Resource, name: String, message: String },
    #[error("endpoint {name} failed to be created: {reason}")]
    Failed { name: String, reason: String },
    #[error("endpoint {name} is {status}, not InService, after {waited_s} s (create_timeout in [target.provision])")]
    Timeout { name: String, status: String, waited_s: u64 },
    #[error("cannot read endpoint {name}'s status: {message}")]
    Describe { name: String, message: String },
    #[error("interrupted while endpoint {name} was being created")]
    Interrupted { name: String },
    #[error(transparent)]
    Aws(#[from] super::AwsError),
}

/// The ledger of one run's output folder; appends are flushed to disk before the call they announce.
pub struct Ledger {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Ledger {
    pub fn in_folder(folder: &Path) -> Self {
        Self { path: folder.join(LEDGER_FILE), lock: Mutex::new(()) }
    }

    fn append(&self, entry: &Entry) -> Result<(), ProvisionError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let line = serde_json::to_string(entry).expect("ledger entries serialise");
        let written = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).and_then(|mut file| {
            writeln!(file, "{line}")?;
            file.sync_data()
        });
        written.map_err(|source| ProvisionError::Ledger { path: self.path.clone(), source })
    }

    /// Resources created and not known to be deleted, in the order they were created.
    fn outstanding(&self) -> Result<Vec<(Resource, String, Place)>, ProvisionError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(ProvisionError::UnreadableLedger { path: self.path.clone(), message: error.to_string() });
            }
        };
        let mut outstanding: Vec<(Resource, String, Place)> = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
            // A line cut short by a crash mid-write is the last one; its resource was never asked for.
            let entry: Entry = match serde_json::from_str(line) {
                Ok(entry) => entry,
                Err(_) if number + 1 == text.lines().count() => break,
                Err(error) => {
                    let message = format!("line {}: {error}", number + 1);
                    return Err(ProvisionError::UnreadableLedger { path: self.path.clone(), message });
                }
            };
            match entry {
                Entry::Creating { resource, name, place, .. } => {
                    if !outstanding.iter().any(|(r, n, _)| *r == resource && *n == name) {
                        outstanding.push((resource, name, place));
                    }
                }
                Entry::Deleted { resource, name, .. } => {
                    outstanding.retain(|(r, n, _)| !(*r == resource && *n == name))
                }
            }
        }
        Ok(outstanding)
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The name of a test run's model, endpoint configuration and endpoint (one name: they are three kinds of
/// resource): the job's name, the run id and the test run's number, in SageMaker's 63 characters.
pub fn resource_name(job_name: &str, run_id: &str, run_number: usize) -> String {
    super::cloudwatch::run_job_name(job_name, &format!("{run_id}-{run_number}"))
}

/// What one endpoint is made of.
pub struct EndpointRequest<'a> {
    pub name: &'a str,
    pub model: &'a ModelSource,
    pub environment: &'a BTreeMap<String, String>,
    pub instance_type: &'a str,
    pub instance_count: u32,
    /// A serverless endpoint instead of instances.
    pub serverless: Option<Serverless>,
    pub variant: &'a str,
    pub tags: Vec<(String, String)>,
    pub create_timeout: Duration,
}

/// Creates endpoints for one target, recording each resource in the run's ledger first.
pub struct Provisioner {
    client: Client,
    place: Place,
}

impl Provisioner {
    /// The SageMaker client for `place` (the SDK's retries on: nothing here is measured), credentials checked.
    pub async fn connect(place: AwsPlace<'_>) -> Result<Self, super::AwsError> {
        let config = sdk_config(place, false, CALL_TIMEOUT).await?;
        check_credentials(&config).await?;
        let region = config.region().map(|region| region.to_string()).unwrap_or_default();
        let place = Place {
            region,
            endpoint_url: place.endpoint_url.map(str::to_string),
            profile: place.profile.map(str::to_string),
        };
        Ok(Self { client: Client::new(&config), place })
    }

    /// Creates the model, endpoint configuration and endpoint, and waits until the endpoint is InService;
    /// `on_status` hears its status while it is created. On any failure, or `cancel`, what was created is deleted
    /// again before the error returns (the error says so when that failed too).
    pub async fn create(
        &self,
        request: &EndpointRequest<'_>,
        ledger: &Ledger,
        cancel: &CancellationToken,
        on_status: impl Fn(&str, Duration),
    ) -> Result<ProvisionedEndpoint, (ProvisionError, Option<String>)> {
        let mut endpoint = ProvisionedEndpoint {
            client: self.client.clone(),
            name: request.name.to_string(),
            created: Vec::new(),
            created_at: Instant::now(),
        };
        match self.create_all(request, ledger, cancel, &mut endpoint, on_status).await {
            Ok(()) => Ok(endpoint),
            Err(error) => Err((error, endpoint.delete(ledger).await.err())),
        }
    }

    async fn create_all(
        &self,
        request: &EndpointRequest<'_>,
        ledger: &Ledger,
        cancel: &CancellationToken,
        endpoint: &mut ProvisionedEndpoint,
        on_status: impl Fn(&str, Duration),
    ) -> Result<(), ProvisionError> {
        let name = request.name;
        let tags: Vec<Tag> =
            request.tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect();
        let (containers, role, vpc) = self.containers(request).await?;
        self.announce(ledger, Resource::Model, name)?;
        let mut model = self.client.create_model().model_name(name).set_vpc_config(vpc).set_tags(Some(tags.clone()));
        model = model.set_execution_role_arn(role);
        model = match <[ContainerDefinition; 1]>::try_from(containers) {
            Ok([primary]) => model.primary_container(primary),
            Err(containers) => model.set_containers(Some(containers)),
        };
        model.send().await.map_err(create_error(Resource::Model, name))?;
        endpoint.created.push(Resource::Model);

        self.announce(ledger, Resource::EndpointConfig, name)?;
        let variant = ProductionVariant::builder().variant_name(request.variant).model_name(name);
        // A serverless endpoint has memory and concurrency where others have instances.
        let variant = match request.serverless {
            Some(serverless) => variant.serverless_config(
                ProductionVariantServerlessConfig::builder()
                    .memory_size_in_mb(i32::try_from(serverless.memory_mb).unwrap_or(i32::MAX))
                    .max_concurrency(i32::try_from(serverless.max_concurrency).unwrap_or(i32::MAX))
                    .set_provisioned_concurrency(
                        (serverless.provisioned_concurrency > 0)
                            .then(|| i32::try_from(serverless.provisioned_concurrency).unwrap_or(i32::MAX)),
                    )
                    .build(),
            ),
            None => variant
                .instance_type(ProductionVariantInstanceType::from(request.instance_type))
                .initial_instance_count(i32::try_from(request.instance_count).unwrap_or(i32::MAX))
                .initial_variant_weight(1.0),
        }
        .build();
        self.client
            .create_endpoint_config()
            .endpoint_config_name(name)
            .production_variants(variant)
            .set_tags(Some(tags.clone()))
            .send()
            .await
            .map_err(create_error(Resource::EndpointConfig, name))?;
        endpoint.created.push(Resource::EndpointConfig);

        self.announce(ledger, Resource::Endpoint, name)?;
        self.client
            .create_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(create_error(Resource::Endpoint, name))?;
        endpoint.created.push(Resource::Endpoint);
        endpoint.created_at = Instant::now();
        self.wait_in_service(name, request.create_timeout, cancel, on_status).await
    }

    fn announce(&self, ledger: &Ledger, resource: Resource, name: &str) -> Result<(), ProvisionError> {
        ledger.append(&Entry::Creating { resource, name: name.to_string(), place: self.place.clone(), at: now() })
    }

    /// The model's containers with the run's environment, its role and its VPC.
    async fn containers(
        &self,
        request: &EndpointRequest<'_>,
    ) -> Result<(Vec<ContainerDefinition>, Option<String>, Option<aws_sdk_sagemaker::types::VpcConfig>), ProvisionError>
    {
        let environment: HashMap<String, String> =
            request.environment.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
        match request.model {
            ModelSource::Existing { model_name, execution_role_arn } => {
                let described = self.client.describe_model().model_name(model_name).send().await.map_err(|error| {
                    ProvisionError::DescribeModel { model: model_name.clone(), message: describe_sdk_error(&error) }
                })?;
                let mut containers: Vec<ContainerDefinition> =
                    described.primary_container.into_iter().chain(described.containers.unwrap_or_default()).collect();
                if containers.is_empty() {
                    return Err(ProvisionError::NoContainer { model: model_name.clone() });
                }
                // The run's variables over the model's own, in every container.
                for container in &mut containers {
                    container.environment.get_or_insert_with(HashMap::new).extend(environment.clone());
                }
                let role = execution_role_arn.clone().or(described.execution_role_arn);
                if role.is_none() {
                    return Err(ProvisionError::NoRole { model: model_name.clone() });
                }
                Ok((containers, role, described.vpc_config))
            }
            ModelSource::Package { model_package_arn, inference_specification_name, execution_role_arn } => {
                let container = ContainerDefinition::builder()
                    .model_package_name(model_package_arn)
                    .set_inference_specification_name(inference_specification_name.clone())
                    .set_environment(Some(environment))
                    .build();
                Ok((vec![container], Some(execution_role_arn.clone()), None))
            }
            ModelSource::Image { image, model_data_url, execution_role_arn } => {
                let container = ContainerDefinition::builder()
                    .image(image)
                    .set_model_data_url(model_data_url.clone())
                    .set_environment(Some(environment))
                    .build();
                Ok((vec![container], Some(execution_role_arn.clone()), None))
            }
        }
    }

    /// Polls DescribeEndpoint, more and more slowly, until InService, Failed, `timeout` or `cancel`.
    async fn wait_in_service(
        &self,
        name: &str,
        timeout: Duration,
        cancel: &CancellationToken,
        on_status: impl Fn(&str, Duration),
    ) -> Result<(), ProvisionError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            let described = self.client.describe_endpoint().endpoint_name(name).send().await.map_err(|error| {
                ProvisionError::Describe { name: name.to_string(), message: describe_sdk_error(&error) }
            })?;
            let status = described.endpoint_status.unwrap_or(EndpointStatus::Creating);
            match status {
                EndpointStatus::InService => return Ok(()),
                EndpointStatus::Creating | EndpointStatus::Updating | EndpointStatus::SystemUpdating => {}
                other => {
                    let reason =
                        described.failure_reason.unwrap_or_else(|| format!("its status is {}", other.as_str()));
                    return Err(ProvisionError::Failed { name: name.to_string(), reason });
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                let status = status.as_str().to_string();
                return Err(ProvisionError::Timeout { name: name.to_string(), status, waited_s: waited.as_secs() });
            }
            on_status(status.as_str(), waited);
            tokio::select! {
                _ = cancel.cancelled() => return Err(ProvisionError::Interrupted { name: name.to_string() }),
                _ = tokio::time::sleep(pause.min(timeout - waited)) => {}
            }
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }
}

/// A create call's error, naming what was to be created.
fn create_error<E, R>(resource: Resource, name: &str) -> impl FnOnce(SdkError<E, R>) -> ProvisionError + '_
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + super::errors::HttpStatus,
{
    move |error| ProvisionError::Create { resource, name: name.to_string(), message: describe_sdk_error(&error) }
}

/// An endpoint plateau created, with what it is made of, until `delete`.
pub struct ProvisionedEndpoint {
    client: Client,
    pub name: String,
    /// In creation order.
    created: Vec<Resource>,
    /// When the endpoint was asked for: what it costs is counted from here.
    pub created_at: Instant,
}

impl ProvisionedEndpoint {
    /// Deletes what was created, endpoint first; what SageMaker does not know is deleted already. The error names
    /// what is left (the ledger still lists it, for `plateau cleanup`).
    pub async fn delete(&self, ledger: &Ledger) -> Result<(), String> {
        let mut left = Vec::new();
        for resource in self.created.iter().rev() {
            if let Err(message) = delete_one(&self.client, *resource, &self.name, ledger).await {
                left.push(format!("{resource} {}: {message}", self.name));
            }
        }
        if left.is_empty() { Ok(()) } else { Err(format!("not deleted: {}", left.join("; "))) }
    }
}

/// Deletes one resource and records it in the ledger; "not found" counts as deleted.
async fn delete_one(client: &Client, resource: Resource, name: &str, ledger: &Ledger) -> Result<(), String> {
    let answer = match resource {
        Resource::Endpoint => client.delete_endpoint().endpoint_name(name).send().await.map(|_| ()).map_err(gone),
        Resource::EndpointConfig => {
            client.delete_endpoint_config().endpoint_config_name(name).send().await.map(|_| ()).map_err(gone)
        }
        Resource::Model => client.delete_model().model_name(name).send().await.map(|_| ()).map_err(gone),
    };
    match answer {
        Ok(()) | Err(None) => {
            ledger.append(&Entry::Deleted { resource, name: name.to_string(), at: now() }).map_err(|e| e.to_string())
        }
        Err(Some(message)) => Err(message),
    }
}

/// None when the error says the resource does not exist (SageMaker's ValidationException "Could not find ..."),
/// else the error in one line.
fn gone<E, R>(error: SdkError<E, R>) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + super::errors::HttpStatus,
{
    let missing = match &error {
        SdkError::ServiceError(context) => context.err().message().is_some_and(|text| text.contains("Could not find")),
        _ => false,
    };
    (!missing).then(|| describe_sdk_error(&error))
}

/// What `plateau cleanup` did with one resource.
pub struct Cleaned {
    pub resource: Resource,
    pub name: String,
    /// None: deleted (or already gone).
    pub error: Option<String>,
}

/// Deletes every resource `folder`'s ledger lists and does not mark deleted: endpoints first, then endpoint
/// configurations, then models, each from the place it was created in.
pub async fn cleanup(folder: &Path) -> Result<Vec<Cleaned>, ProvisionError> {
    let ledger = Ledger::in_folder(folder);
    let mut outstanding = ledger.outstanding()?;
    outstanding.sort_by_key(|(resource, _, _)| std::cmp::Reverse(*resource));
    let mut clients: Vec<(Place, Client)> = Vec::new();
    let mut cleaned = Vec::new();
    for (resource, name, place) in outstanding {
        let client = match clients.iter().find(|(known, _)| *known == place) {
            Some((_, client)) => client.clone(),
            None => {
                let aws_place = AwsPlace {
                    where_to_set: "",
                    region: Some(&place.region),
                    profile: place.profile.as_deref(),
                    endpoint_url: place.endpoint_url.as_deref(),
                };
                let config = sdk_config(aws_place, false, CALL_TIMEOUT).await?;
                check_credentials(&config).await?;
                let client = Client::new(&config);
                clients.push((place, client.clone()));
                client
            }
        };
        let error = delete_one(&client, resource, &name, &ledger).await.err();
        cleaned.push(Cleaned { resource, name, error });
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> Place {
        Place { region: "us-east-1".into(), endpoint_url: None, profile: None }
    }

    #[test]
    fn the_ledger_lists_what_was_created_and_not_deleted_and_survives_a_torn_last_line() {
        let folder = std::env::temp_dir().join(format!("plateau-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let ledger = Ledger::in_folder(&folder);
        let _ = std::fs::remove_file(&ledger.path);
        for resource in [Resource::Model, Resource::EndpointConfig, Resource::Endpoint] {
            let entry = Entry::Creating { resource, name: "a".into(), place: place(), at: now() };
            ledger.append(&entry).unwrap();
        }
        ledger
            .append(&Entry::Creating { resource: Resource::Model, name: "b".into(), place: place(), at: now() })
            .unwrap();
        ledger.append(&Entry::Deleted { resource: Resource::Endpoint, name: "a".into(), at: now() }).unwrap();
        std::fs::OpenOptions::new().append(true).open(&ledger.path).unwrap().write_all(b"{\"event\":\"crea").unwrap();
        let left: Vec<(Resource, String)> =
            ledger.outstanding().unwrap().into_iter().map(|(resource, name, _)| (resource, name)).collect();
        assert_eq!(
            left,
            vec![(Resource::Model, "a".into()), (Resource::EndpointConfig, "a".into()), (Resource::Model, "b".into())]
        );
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn resource_names_fit_sagemaker_and_keep_the_run_id_and_number() {
        let name = resource_name(&"a very long job name ".repeat(5), "20261204T081040Z-ab12", 12);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-20261204T081040Z-ab12-12"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{name}");
    }
}
