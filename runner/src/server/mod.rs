//! Servers plateau starts itself: the reference endpoint (in process) and a command target's server process, one
//! per test run; and the `http` or SageMaker endpoint that is already running somewhere.

pub mod command;
pub mod reference;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::measure::ResourceSource;
use crate::measure::process_tree::ProcessTree;
use crate::plan::TestRun;
use crate::spec::{self, Job, TargetKind};
use command::ServerProcess;
use reference::ReferenceServer;

/// What serves a test run's requests.
pub enum Server {
    Reference(ReferenceServer),
    Command(ServerProcess),
    /// An `http` target that is already running somewhere.
    External,
}

impl Server {
    /// Starts what serves `run` (its log at `log`), and says where requests go; `on_wait` hears how long a server
    /// has been waited for.
    pub async fn start(
        job: &Job,
        run: &TestRun,
        log: &Path,
        on_wait: impl Fn(Duration),
    ) -> anyhow::Result<(Self, String)> {
        let configuration = &run.configuration;
        let target = job.target_of(configuration);
        match (target.kind, configuration.reference, &target.command) {
            (TargetKind::Reference, Some(model), _) => {
                let seed = job.seed ^ (run.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let server = ReferenceServer::start(model, seed, SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .context("cannot start the reference endpoint")?;
                let url = server.url();
                Ok((Server::Reference(server), url))
            }
            (TargetKind::Command, _, Some(spec)) => {
                let cpus = configuration.cpus.as_ref().map(|cpus| cpus.list.as_str());
                let process = ServerProcess::start(spec, &run.environment, cpus, log, on_wait).await?;
                let url = process.url(&spec.path);
                Ok((Server::Command(process), url))
            }
            (TargetKind::Sagemaker, _, _) => {
                let endpoint =
                    configuration.endpoint_name.clone().context("no endpoint name for this configuration")?;
                Ok((Server::External, format!("SageMaker endpoint {endpoint}")))
            }
            _ => {
                let url = configuration.url.clone().or_else(|| target.http.url.clone());
                Ok((Server::External, url.context("no URL for this configuration")?))
            }
        }
    }

    pub fn resources(&self, configuration: &spec::Configuration) -> Option<Box<dyn ResourceSource>> {
        match self {
            Server::Reference(server) => Some(Box::new(server.busy_workers())),
            Server::Command(process) => {
                let allowed_cores = configuration
                    .cpus
                    .as_ref()
                    .map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |cpus| cpus.count);
                let memory_limit_bytes = configuration.memory_limit_mb.map(|mb| (mb * 1024.0 * 1024.0) as u64);
                Some(Box::new(ProcessTree::new(process.pid, allowed_cores, memory_limit_bytes)))
            }
            Server::External => None,
        }
    }

    /// Resolves if a server plateau started exits; never for the others.
    pub async fn exited(&self) {
        match self {
            Server::Command(process) => {
                process.wait_for_exit().await;
            }
            _ => std::future::pending().await,
        }
    }
}

/// Stops a server plateau started; says so if any of its processes survived.
pub async fn stop(server: &Server, job: &Job, run: &TestRun) -> Option<String> {
    let (Server::Command(process), Some(spec)) = (server, &job.target_of(&run.configuration).command) else {
        return None;
    };
    process.stop(spec.stop_grace).await;
    let survivors = command::group_members(process.pid);
    (!survivors.is_empty()).then(|| format!("processes {survivors:?} of the server survived SIGKILL"))
}
