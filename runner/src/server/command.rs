//! The command target's server: started by plateau in its own process group for each test run, checked for
//! readiness, watched for a crash, and stopped with SIGTERM then SIGKILL so that no child outlives it. Its output
//! goes to a log file beside the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::spec::{CommandSpec, PORT_PLACEHOLDER, ReadinessCheck};

const LOG_TAIL_LINES: usize = 20;

/// Why a server could not be started or kept running; carries the end of its log.
#[derive(Debug, thiserror::Error)]
#[error("{message}\n--- last lines of {log} ---\n{log_tail}")]
pub struct ServerError {
    pub message: String,
    pub log: String,
    pub log_tail: String,
}

/// Why a started server never became ready.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("the server exited before it was ready ({0})")]
    Exited(ExitStatus),
    #[error("the server was not ready after {0:?}")]
    TimedOut(Duration),
    #[error("cannot make the readiness client: {0}")]
    Client(reqwest::Error),
    #[error("the run was interrupted while the server started")]
    Interrupted,
}

/// How long an interrupted start-up waits for the server to stop before it is killed: Ctrl-C ends a run in two
/// seconds, whatever `stop_grace` says.
const INTERRUPTED_GRACE: Duration = Duration::from_millis(500);

pub struct ServerProcess {
    pub pid: i32,
    pub port: u16,
    log_path: PathBuf,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    /// Starts the server with `environment` added, and waits until it is ready; `on_wait` hears about the wait.
    pub async fn start(
        spec: &CommandSpec,
        environment: &BTreeMap<String, String>,
        cpus: Option<&str>,
        log_path: &Path,
        on_wait: impl Fn(&str, Duration),
        cancel: &CancellationToken,
    ) -> Result<Self, ServerError> {
        let log = log_path.display().to_string();
        let fail = |message: String| ServerError { message, log: log.clone(), log_tail: log_tail(log_path) };
        let port = match spec.port {
            Some(port) => port,
            None => free_port().map_err(|error| fail(format!("cannot find a free port: {error}")))?,
        };
        let fill = |text: &String| text.replace(PORT_PLACEHOLDER, &port.to_string());
        let mut argv: Vec<String> = spec.argv.iter().map(fill).collect();
        if let Some(cpus) = cpus {
            argv.splice(0..0, ["taskset".to_string(), "-c".to_string(), cpus.to_string()]);
        }
        let log_file =
            std::fs::File::create(log_path).map_err(|error| fail(format!("cannot create the log: {error}")))?;
        let stderr = log_file.try_clone().map_err(|error| fail(format!("cannot share the log: {error}")))?;
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&spec.working_dir)
            .envs(spec.env.iter().map(|(name, value)| (name, fill(value))))
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(stderr))
            // Its own process group, so stopping it reaches every child it started.
            .process_group(0);
        let mut child = command.spawn().map_err(|error| fail(format!("cannot start `{}`: {error}", argv.join(" "))))?;
        let pid = child.id().ok_or_else(|| fail("the server exited at once".to_string()))? as i32;
        let (exit_sender, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = exit_sender.send(status);
        });
        let server = Self { pid, port, log_path: log_path.to_path_buf(), exit };
        if let Err(not_ready) = server.wait_until_ready(spec, &on_wait, cancel).await {
            let grace = if matches!(not_ready, NotReady::Interrupted) { INTERRUPTED_GRACE } else { spec.stop_grace };
            server.stop(grace).await;
            return Err(fail(not_ready.to_string()));
        }
        Ok(server)
    }

    async fn wait_until_ready(
        &self,
        spec: &CommandSpec,
        on_wait: &impl Fn(&str, Duration),
        cancel: &CancellationToken,
    ) -> Result<(), NotReady> {
        let started = Instant::now();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().map_err(NotReady::Client)?;
        loop {
            if let Some(status) = self.exited() {
                return Err(NotReady::Exited(status));
            }
            let ready = match &spec.readiness.check {
                ReadinessCheck::Tcp => tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok(),
                ReadinessCheck::Http { path, expected_status } => {
                    let url = format!("http://127.0.0.1:{}{path}", self.port);
                    client.get(&url).send().await.is_ok_and(|response| response.status().as_u16() == *expected_status)
                }
            };
            if ready {
                return Ok(());
            }
            if started.elapsed() > spec.readiness.timeout {
                return Err(NotReady::TimedOut(spec.readiness.timeout));
            }
            on_wait("the server to be ready", started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = cancel.cancelled() => return Err(NotReady::Interrupted),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The exit status, once the server has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the server exits.
    pub async fn wait_for_exit(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        exit.wait_for(Option::is_some).await.ok().and_then(|status| *status)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: kill only sends a signal; a negative pid addresses the server's own process group.
        unsafe {
            libc::kill(-self.pid, signal);
        }
    }

    /// SIGTERM to the whole process group, SIGKILL after `grace`, and SIGKILL again for any child that outlived
    /// the server itself.
    pub async fn stop(&self, grace: Duration) {
        self.signal_group(libc::SIGTERM);
        if tokio::time::timeout(grace, self.wait_for_exit()).await.is_err() {
            self.signal_group(libc::SIGKILL);
            self.wait_for_exit().await;
        }
        self.signal_group(libc::SIGKILL);
    }
}
