//! Servers plateau starts itself: the reference endpoint (in process) and a command target's server process, one
//! per test run; an `http` or SageMaker endpoint is already running somewhere.

pub mod command;
pub mod llm;
pub mod reference;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::measure::ResourceSource;
use crate::measure::process_tree::{self, ProcessTree};
use crate::plan::TestRun;
use crate::spec::Deployment;
use command::ServerProcess;
use llm::LlmServer;
use reference::ReferenceServer;

/// Why a test run's server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the reference endpoint: {0}")]
    Reference(std::io::Error),
    #[error(transparent)]
    Command(#[from] command::ServerError),
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
    /// for. A reference endpoint's stalls and drift count from `job_started`; a command's wait for readiness ends
    /// when `cancel` does.
    pub async fn start(
        run: &TestRun,
        log: &Path,
        job_started: Instant,
        cancel: &CancellationToken,
        on_wait: impl Fn(Duration),
    ) -> Result<Started, StartError> {
        match &run.configuration.deployment {
            Deployment::Reference { model, .. } => {
                let address = SocketAddr::from(([127, 0, 0, 1], 0));
                let server = ReferenceServer::start(*model, run.seeds.service_times, address, job_started)
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
            Deployment::Sagemaker { endpoint_name, .. } => Ok(Started {
                server: Server::External,
                address: format!("SageMaker endpoint {endpoint_name}"),
                resources: None,
            }),
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

    /// Stops a server plateau started; says so if any of its processes survived.
    pub async fn stop(&self) -> Option<String> {
        let Server::Command { process, stop_grace } = self else { return None };
        process.stop(*stop_grace).await;
        let survivors = process_tree::group_members(process.pid);
        (!survivors.is_empty()).then(|| format!("processes {survivors:?} of the server survived SIGKILL"))
    }
}
