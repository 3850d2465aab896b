//! Servers plateau starts itself, one per test run: the reference endpoint (in process), a command target's server
//! process, and SageMaker endpoints it provisions; an `http` or other SageMaker endpoint is already running.

pub mod command;
mod cpu_work;
pub mod llm;
pub mod neighbour;
pub mod reference;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::aws::provision::{EndpointRequest, Ledger, ProvisionError, ProvisionedEndpoint, Provisioner};
use crate::measure::ResourceSource;
use crate::measure::process_tree::{self, ProcessTree};
use crate::plan::TestRun;
use crate::spec::{Deployment, EndpointSource};
use command::ServerProcess;
use llm::LlmServer;
use reference::{ReferenceServer, Work};

/// Why a test run's server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the reference endpoint: {0}")]
    Reference(std::io::Error),
    #[error(transparent)]
    Command(#[from] command::ServerError),
    /// `left` names what could not be deleted again.
    #[error("{error}{}", left.as_ref().map(|left| format!("; {left}: run `plateau cleanup` on the output folder")).unwrap_or_else(|| "; what was created is deleted".into()))]
    Provision { error: ProvisionError, left: Option<String> },
    #[error("no SageMaker client for the provisioned endpoint (a bug in plateau)")]
    NoProvisioner,
}

/// What a test run on a provisioned endpoint needs besides its configuration: its target's client, the run's
/// ledger, the endpoint's name and its tags.
pub struct Provisioning<'a> {
    pub provisioner: &'a Provisioner,
    pub ledger: &'a Arc<Ledger>,
    pub name: String,
    pub tags: Vec<(String, String)>,
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, each request answered by `respond`: the loop both reference
/// endpoints share.
async fn accept_loop<R, F, B>(listener: TcpListener, shutdown: CancellationToken, respond: R)
where
    R: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, hyper::Error>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Running out of file descriptors is transient: wait a little rather than spin.
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        let respond = respond.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(respond));
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// What serves a test run's requests.
pub enum Server {
    Reference(ReferenceServer),
    ReferenceLlm(LlmServer),
    Command {
        process: ServerProcess,
        stop_grace: Duration,
    },
    /// An `http` target or a SageMaker endpoint that is already running somewhere.
    External,
    /// A SageMaker endpoint plateau created for this test run; stopping deletes it.
    Provisioned {
        endpoint: ProvisionedEndpoint,
        ledger: Arc<Ledger>,
    },
}

/// A server ready for requests: where they go, and where its resource use is read (when plateau can read it).
pub struct Started {
    pub server: Server,
    /// The URL requests go to; for SageMaker, the endpoint's name in words.
    pub address: String,
    pub resources: Option<Box<dyn ResourceSource>>,
}

impl Server {
    /// Starts what serves `run` (a command's output goes to `log`); `on_wait` hears how long it has been waited
    /// for, and for what. A reference endpoint's stalls and drift count from `job_started`; a command's wait for
    /// readiness, and a provisioned endpoint's for InService, end when `cancel` does.
    pub async fn start(
        run: &TestRun,
        log: &Path,
        job_started: Instant,
        cancel: &CancellationToken,
        on_wait: impl Fn(&str, Duration),
        provisioning: Option<Provisioning<'_>>,
    ) -> Result<Started, StartError> {
        match &run.configuration.deployment {
            Deployment::Reference { model, .. } => {
                let address = SocketAddr::from(([127, 0, 0, 1], 0));
                let server = ReferenceServer::start(*model, Work::Clock, run.seeds.service_times, address, job_started)
                    .await
                    .map_err(StartError::Reference)?;
                let resources: Box<dyn ResourceSource> = Box::new(server.busy_workers());
                Ok(Started { address: server.url(), resources: Some(resources), server: Server::Reference(server) })
            }
            Deployment::ReferenceLlm { model, .. } => {
                let server = LlmServer::start(*model, SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .map_err(StartError::Reference)?;
                let resources: Box<dyn ResourceSource> = Box::new(server.occupancy());
                Ok(Started { address: server.url(), resources: Some(resources), server: Server::ReferenceLlm(server) })
            }
            Deployment::Command { server, cpus, memory_limit_mb, .. } => {
                let cpu_list = cpus.as_ref().map(|cpus| cpus.list.as_str());
                let process = ServerProcess::start(server, &run.environment, cpu_list, log, on_wait, cancel).await?;
                let allowed_cores = cpus.as_ref().map_or_else(process_tree::available_cores, |cpus| cpus.count);
                let memory_limit_bytes = memory_limit_mb.map(|mb| (mb * 1024.0 * 1024.0) as u64);
                let resources: Box<dyn ResourceSource> =
                    Box::new(ProcessTree::new(process.pid, allowed_cores, memory_limit_bytes));
                Ok(Started {
                    address: process.url(&server.path),
                    resources: Some(resources),
                    server: Server::Command { process, stop_grace: server.stop_grace },
                })
            }
            Deployment::Http { url, .. } => {
                Ok(Started { server: Server::External, address: url.clone(), resources: None })
            }
            Deployment::Sagemaker { source: EndpointSource::Existing { endpoint_name }, .. } => Ok(Started {
                server: Server::External,
                address: format!("SageMaker endpoint {endpoint_name}"),
                resources: None,
            }),
            Deployment::Sagemaker { source: EndpointSource::Provisioned { provision, .. }, endpoint, .. } => {
                let Provisioning { provisioner, ledger, name, tags } = provisioning.ok_or(StartError::NoProvisioner)?;
                let configuration = &run.configuration;
                let request = EndpointRequest {
                    name: &name,
                    model: &provision.model,
                    environment: &run.environment,
                    instance_type: &configuration.instance_type,
                    instance_count: configuration.instance_count,
                    serverless: configuration.serverless,
                    variant: endpoint.target_variant.as_deref().unwrap_or("AllTraffic"),
                    tags,
                    create_timeout: provision.create_timeout,
                };
                let on_status =
                    |status: &str, waited| on_wait(&format!("endpoint {name} to be InService ({status})"), waited);
                let created = provisioner
                    .create(&request, ledger, cancel, on_status)
                    .await
                    .map_err(|(error, left)| StartError::Provision { error, left })?;
                Ok(Started {
                    server: Server::Provisioned { endpoint: created, ledger: ledger.clone() },
                    address: format!("SageMaker endpoint {name} (provisioned)"),
                    resources: None,
                })
            }
        }
    }

    /// Resolves if a server plateau started exits; never for the others.
    pub async fn exited(&self) {
        match self {
            Server::Command { process, .. } => {
                process.wait_for_exit().await;
            }
            _ => std::future::pending().await,
        }
    }

    /// Stops a server plateau started, and deletes an endpoint it provisioned; says what survived.
    pub async fn stop(&self) -> Option<String> {
        match self {
            Server::Command { process, stop_grace } => {
                process.stop(*stop_grace).await;
                let survivors = process_tree::group_members(process.pid);
                (!survivors.is_empty()).then(|| format!("processes {survivors:?} of the server survived SIGKILL"))
            }
            Server::Provisioned { endpoint, ledger } => endpoint
                .delete(ledger)
                .await
                .err()
                .map(|left| format!("{left}: run `plateau cleanup` on the output folder")),
            Server::Reference(_) | Server::ReferenceLlm(_) | Server::External => None,
        }
    }

    /// The SageMaker endpoint plateau provisioned for this test run, if it did.
    pub fn provisioned(&self) -> Option<&ProvisionedEndpoint> {
        match self {
            Server::Provisioned { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }
}
