//! Runs a job: each test run's target started (a reference endpoint, or the user's server command), driven
//! through the traffic pattern, analysed, and saved; then the recommendation and the reports. Ctrl-C, SIGTERM, a
//! target that goes away or a server that crashes never lose what was measured: results are written after every
//! configuration and marked partial.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::analyze::{self, ConfigurationFacts, OnlineDetector};
use crate::cloudwatch::{ClientSecond, Publisher};
use crate::drive::{
    self, DriveOptions, LoadUnit, Observer, Schedule, SecondSummary, StepRecord, StepVerdict, StepWindow,
};
use crate::exit::Exit;
use crate::measure::ResourceSource;
use crate::measure::Tally;
use crate::measure::process_tree::ProcessTree;
use crate::payload::{LoadedPlugin, PayloadSource};
use crate::plan::{self, TestRun};
use crate::report;
use crate::results::{
    ConfigurationResult, Host, JobSummary, Manifest, PluginIdentity, RESULTS_VERSION, Results, RunStatus,
};
use crate::spec::{self, Job, TargetKind, Traffic};
use crate::target::Target;
use crate::target::command::{self, ServerProcess};
use crate::target::http::HttpTarget;
use crate::target::reference::ReferenceServer;
use crate::target::sagemaker::{self, AwsPlace, SageMakerTarget};

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn host() -> Host {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|meminfo| {
        let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    Host {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// Runs the job file at `job_path`, writing everything into `out` (or the default folder).
pub async fn run(job_path: &Path, out: Option<PathBuf>, report_options: report::ReportOptions) -> anyhow::Result<Exit> {
    let job = match spec::load(job_path) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("{error}");
            return Ok(Exit::InvalidInput);
        }
    };
    let plugin = match job.payload.plugin.as_ref().map(LoadedPlugin::load).transpose() {
        Ok(plugin) => plugin,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Exit::InvalidInput);
        }
    };
    let aws = match AwsClients::connect(&job).await {
        Ok(aws) => aws,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Exit::RunFailed);
        }
    };
    let plan = plan::plan(&job);
    let report_options = report::ReportOptions {
        templates: report_options.templates.or_else(|| job.report_templates.clone()),
        ..report_options
    };
    let started_at = utc_now();
    let out = out.unwrap_or_else(|| {
        let stamp: String = started_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        PathBuf::from("plateau-out").join(format!("{}-{stamp}", report::file_stem(&job.name)))
    });
    for folder in ["series", "logs"] {
        std::fs::create_dir_all(out.join(folder))
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    }
    eprintln!(
        "plateau: {} configurations, at most {} s; output in {}",
        plan.runs.len(),
        plan.worst_case_s(),
        out.display()
    );

    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown_signal().await;
            eprintln!("plateau: interrupted; writing partial results");
            cancel.cancel();
        }
    });

    let mut results = Results {
        results_version: RESULTS_VERSION,
        partial: true,
        manifest: Manifest {
            plateau_version: env!("CARGO_PKG_VERSION").to_string(),
            job_file: job.source.path.display().to_string(),
            job_sha256: job.source.sha256.clone(),
            job_file_text: job.source.text.clone(),
            seed: job.seed,
            host: host(),
            started_at: started_at.clone(),
            ended_at: started_at,
            payload_plugin: plugin.as_ref().map(|plugin| PluginIdentity {
                file: plugin.name.clone(),
                sha256: plugin.sha256.clone(),
                kind: if plugin.wrapped_core_module { "core-module" } else { "component" }.to_string(),
            }),
        },
        job: JobSummary {
            name: job.name.clone(),
            description: job.description.clone(),
            target_kind: job
                .targets
                .iter()
                .all(|target| target.kind == job.targets[0].kind)
                .then_some(job.targets[0].kind),
            traffic: job.traffic.clone(),
            traffic_options: job.traffic_options,
            load_unit: Schedule::new(&job.traffic, &job.traffic_options).load_unit,
            stopping: job.stopping.clone(),
            requirements: job.requirements.clone(),
            objective: job.requirements.objective,
            plateau: job.plateau,
        },
        configurations: Vec::new(),
        recommendation: None,
    };
    let progress = Progress::new(plan.runs.len());
    // `plan.parallel` runs at once; results arrive in plan order.
    let mut finished = futures_util::stream::iter(&plan.runs)
        .map(|run| {
            let (job, plugin, aws, out, progress, cancel) = (&job, &plugin, &aws, &out, &progress, cancel.clone());
            async move {
                if cancel.is_cancelled() {
                    return skipped(job, run);
                }
                let payload = match plugin {
                    Some(plugin) => PayloadSource::plugin(Arc::clone(plugin), &run.name, job.seed),
                    None if !job.payload.samples.is_empty() => PayloadSource::samples(job.payload.samples.clone()),
                    None => PayloadSource::Fixed(job.payload.body.clone()),
                };
                run_configuration(job, run, payload, aws, out, cancel, progress).await
            }
        })
        .buffered(plan.parallel);
    while let Some(result) = finished.next().await {
        results.configurations.push(result);
        // Saved after every configuration, so an abrupt end loses at most the ones in progress.
        results.manifest.ended_at = utc_now();
        report::write_results(&results, &out)?;
    }
    drop(finished);

    results.partial =
        cancel.is_cancelled() || results.configurations.iter().any(|result| result.status != RunStatus::Complete);
    let recommendation = analyze::recommend(&results.configurations, &job.requirements);
    let recommended = recommendation.configuration.is_some();
    results.recommendation = Some(recommendation);
    results.manifest.ended_at = utc_now();
    let summary = report::write_all(&results, &out, &report_options)?;
    println!();
    print!("{summary}");
    println!("results: {}", out.display());
    Ok(if results.partial {
        Exit::RunFailed
    } else if recommended {
        Exit::Success
    } else {
        Exit::NoConfigurationMeetsRequirements
    })
}

/// The AWS clients a job needs, made once: SageMaker Runtime for each sagemaker target (retries off),
/// CloudWatch for publishing or reading endpoint metrics (retries on: it is not measured).
struct AwsClients {
    /// Indexed like `Job::targets`; `None` for targets that are not SageMaker endpoints.
    sagemaker: Vec<Option<aws_config::SdkConfig>>,
    cloudwatch: Option<aws_sdk_cloudwatch::Client>,
}

impl AwsClients {
    async fn connect(job: &Job) -> anyhow::Result<Self> {
        let mut sagemaker = Vec::new();
        for target in &job.targets {
            sagemaker.push(match &target.sagemaker {
                Some(spec) => {
                    let place = AwsPlace {
                        region: spec.region.as_deref(),
                        profile: spec.profile.as_deref(),
                        endpoint_url: spec.endpoint_url.as_deref(),
                    };
                    let config = sagemaker::sdk_config(place, true, target.http.timeout).await?;
                    sagemaker::check_credentials(&config).await?;
                    Some(config)
                }
                None => None,
            });
        }
        let profile = job.targets.iter().find_map(|target| target.sagemaker.as_ref()?.profile.as_deref());
        let watch = &job.cloudwatch;
        let cloudwatch = if watch.publish || watch.endpoint_metrics {
            let place =
                AwsPlace { region: watch.region.as_deref(), profile, endpoint_url: watch.endpoint_url.as_deref() };
            let config = sagemaker::sdk_config(place, false, Duration::from_secs(30)).await?;
            sagemaker::check_credentials(&config).await?;
            Some(aws_sdk_cloudwatch::Client::new(&config))
        } else {
            None
        };
        Ok(Self { sagemaker, cloudwatch })
    }
}

fn empty_result(job: &Job, run: &TestRun, status: RunStatus, failure: Option<String>) -> ConfigurationResult {
    let configuration = &run.configuration;
    let target = job.target_of(configuration);
    ConfigurationResult {
        name: run.name.clone(),
        target: target.name.clone(),
        target_kind: Some(target.kind),
        instance_type: configuration.instance_type.clone(),
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        price_source: configuration.price_source.clone(),
        environment: run.environment.clone(),
        serverless: configuration.serverless,
        status,
        end: None,
        failure,
        elapsed_s: 0,
        full_ramp_s: job.ramp_s(),
        steps: Vec::new(),
        seconds: Vec::new(),
        series_file: None,
        server_log: None,
        plateau: None,
        metrics: None,
        scalability: None,
        reference: None,
        error_details: Vec::new(),
        cloudwatch: None,
        endpoint_metrics: None,
    }
}

fn skipped(job: &Job, run: &TestRun) -> ConfigurationResult {
    empty_result(job, run, RunStatus::Skipped, Some("not run: the run was interrupted first".to_string()))
}

fn failed(job: &Job, run: &TestRun, error: &anyhow::Error) -> ConfigurationResult {
    empty_result(job, run, RunStatus::Failed, Some(format!("{error:#}")))
}

/// What serves a test run's requests.
enum Server {
    Reference(ReferenceServer),
    Command(ServerProcess),
    /// An `http` target that is already running somewhere.
    External,
}

impl Server {
    async fn start(
        job: &Job,
        run: &TestRun,
        out: &Path,
        line: &RunLine,
        label: &str,
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
                let log = out.join(log_file(run));
                let cpus = configuration.cpus.as_ref().map(|cpus| cpus.list.as_str());
                let on_wait = |waited: Duration| {
                    line.set(format!("{label} · waiting for the server to be ready ({}s)", waited.as_secs()))
                };
                let process = ServerProcess::start(spec, &run.environment, cpus, &log, on_wait).await?;
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

    fn resources(&self, configuration: &spec::Configuration) -> Option<Box<dyn ResourceSource>> {
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
    async fn exited(&self) {
        match self {
            Server::Command(process) => {
                process.wait_for_exit().await;
            }
            _ => std::future::pending().await,
        }
    }
}

fn log_file(run: &TestRun) -> String {
    format!("logs/{:02}-{}.log", run.index + 1, report::file_stem(&run.name))
}

async fn run_configuration(
    job: &Job,
    run: &TestRun,
    payload: PayloadSource,
    aws: &AwsClients,
    out: &Path,
    cancel: CancellationToken,
    progress: &Progress,
) -> ConfigurationResult {
    let configuration = &run.configuration;
    let ramp_s = job.ramp_s();
    let label = format!("[{}/{}] {}", run.index + 1, progress.runs, run.name);
    let line = progress.run_line();
    let (server, url) = match Server::start(job, run, out, &line, &label).await {
        Ok(started) => started,
        Err(error) => {
            progress.line(format!("{label} failed: {error:#}"));
            return ConfigurationResult { server_log: server_log(job, run), ..failed(job, run, &error) };
        }
    };
    let schedule = Schedule::new(&job.traffic, &job.traffic_options);
    let series_file = format!("series/{:02}-{}.jsonl", run.index + 1, report::file_stem(&run.name));
    let resources = server.resources(configuration);
    let utilization_source = resources.as_ref().map(|source| source.label().to_string());
    let settings = job.plateau;
    let endpoint_name = configuration.endpoint_name.clone().unwrap_or_else(|| run.name.clone());
    let publisher = aws
        .cloudwatch
        .as_ref()
        .filter(|_| job.cloudwatch.publish)
        .map(|client| Publisher::start(client.clone(), &job.cloudwatch, &job.name, &endpoint_name));
    let mut observer = RunObserver {
        load_unit: schedule.load_unit,
        detector: OnlineDetector { stopping: &job.stopping, settings },
        progress,
        line: &line,
        run_label: label.clone(),
        steps_total: schedule.steps.len(),
        ramp_s,
        publisher: publisher.as_ref(),
    };
    // A server that exits mid-run ends the run; the user's Ctrl-C ends this and every later run.
    let run_cancel = cancel.child_token();
    let options = DriveOptions {
        schedule: &schedule,
        traffic: &job.traffic_options,
        seed: job.seed ^ run.index as u64,
        max_invocations: job.stopping.max_invocations,
        series_path: Some(&out.join(&series_file)),
        cancel: run_cancel.clone(),
    };
    let run_started = SystemTime::now();
    let target_spec = job.target_of(configuration);
    let (record, error_details) = match (&target_spec.sagemaker, &aws.sagemaker[configuration.target]) {
        (Some(spec), Some(config)) => {
            let target = Arc::new(SageMakerTarget::new(
                config,
                &endpoint_name,
                spec,
                &job.payload,
                payload,
                target_spec.http.timeout,
            ));
            if let Err(error) = target.preflight().await {
                progress.line(format!("{label} failed: {error:#}"));
                return failed(job, run, &error);
            }
            let record = drive_until_exit(Arc::clone(&target), options, resources, &mut observer, &server).await;
            (record, target.error_details())
        }
        _ => {
            let target = match HttpTarget::new(&url, &target_spec.http, &job.payload, payload) {
                Ok(target) => target,
                Err(error) => return failed(job, run, &error),
            };
            if let Err(error) = target.preflight().await {
                progress.line(format!("{label} failed: {error:#}"));
                return failed(job, run, &error);
            }
            (drive_until_exit(Arc::new(target), options, resources, &mut observer, &server).await, Vec::new())
        }
    };
    let run_ended = SystemTime::now();
    let cloudwatch = match publisher {
        Some(publisher) => Some(publisher.finish().await),
        None => None,
    };
    if let Some(summary) = cloudwatch.as_ref().filter(|summary| summary.failed_calls > 0) {
        progress.line(format!(
            "{label}: {} of {} CloudWatch PutMetricData calls failed: {}",
            summary.failed_calls,
            summary.calls,
            summary.last_error.as_deref().unwrap_or("")
        ));
    }
    let endpoint_metrics = match (&aws.cloudwatch, &target_spec.sagemaker) {
        (Some(client), Some(spec)) if job.cloudwatch.endpoint_metrics => {
            let variant = spec.target_variant.as_deref().unwrap_or("AllTraffic");
            let read = crate::cloudwatch::endpoint_metrics(
                client,
                &endpoint_name,
                variant,
                run_started,
                run_ended,
                configuration.vcpus,
            );
            match read.await {
                Ok(metrics) => Some(metrics),
                Err(error) => {
                    progress.line(format!("{label}: cannot read the endpoint's CloudWatch metrics: {error:#}"));
                    None
                }
            }
        }
        _ => None,
    };
    let crashed = match &server {
        Server::Command(process) if !cancel.is_cancelled() => process.exited(),
        _ => None,
    };
    let leftover = stop(&server, job, run).await;
    let record = match record {
        Ok(record) => record,
        Err(error) => {
            return failed(job, run, &anyhow::Error::new(error).context("cannot write the per-second series"));
        }
    };
    let facts = ConfigurationFacts {
        load_unit: schedule.load_unit,
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        utilization_source,
    };
    // Phases are judged by sliding windows, measured again from the series file (DESIGN: MaxInvocations).
    let sliding = match &job.traffic {
        Traffic::Phases(_) => {
            let from_s = schedule.steps.first().map_or(0, |step| step.start_s);
            analyze::sliding_window(&record.seconds, from_s, &settings)
                .and_then(|window| drive::window_from_series(&out.join(&series_file), window).ok())
        }
        _ => None,
    };
    let mut analysis =
        analyze::analyze_steps(&record.steps, &facts, &job.stopping, &job.requirements, &settings, sliding.as_ref());
    // A SageMaker endpoint's utilisation is the endpoint's own, from CloudWatch (IR reports the same figures).
    if let (Some(metrics), Some(endpoint)) = (analysis.metrics.as_mut(), endpoint_metrics.as_ref())
        && (endpoint.cpu_utilization.is_some() || endpoint.memory_utilization.is_some())
    {
        metrics.cpu_utilization_percent = endpoint.cpu_utilization;
        metrics.memory_utilization_percent = endpoint.memory_utilization;
        metrics.utilization_source = Some("CloudWatch (/aws/sagemaker/Endpoints)".to_string());
    }
    let (status, failure) = match (&crashed, &server, &record.end) {
        (Some(status), Server::Command(process), _) => (
            RunStatus::Failed,
            Some(format!(
                "the server exited during the run ({status})\n--- last lines of its log ---\n{}",
                process.log_tail()
            )),
        ),
        (_, _, drive::EndReason::TargetUnreachable { seconds }) => {
            (RunStatus::Partial, Some(format!("the target at {url} refused every connection for {seconds} s")))
        }
        (_, _, drive::EndReason::PayloadFailed { message }) => (RunStatus::Partial, Some(message.clone())),
        (_, _, end) if end.is_partial() => (RunStatus::Partial, None),
        _ => (RunStatus::Complete, leftover),
    };
    if let Some(failure) = &failure {
        progress.line(format!("{label}: {failure}"));
    }
    ConfigurationResult {
        status,
        end: Some(record.end),
        failure,
        elapsed_s: record.elapsed_s,
        steps: record.steps.iter().map(analyze::step_result).collect(),
        seconds: record.seconds,
        series_file: Some(series_file),
        server_log: server_log(job, run),
        plateau: analysis.plateau,
        metrics: analysis.metrics,
        scalability: analysis.scalability,
        reference: match &server {
            Server::Reference(server) => Some(server.realized()),
            _ => None,
        },
        error_details,
        cloudwatch,
        endpoint_metrics,
        ..empty_result(job, run, status, None)
    }
}

/// Drives `target` through the schedule; a server plateau started that exits mid-run ends the run.
async fn drive_until_exit<T: Target>(
    target: Arc<T>,
    options: DriveOptions<'_>,
    resources: Option<Box<dyn ResourceSource>>,
    observer: &mut RunObserver<'_>,
    server: &Server,
) -> std::io::Result<drive::RunRecord> {
    let run_cancel = options.cancel.clone();
    let driving = drive::drive(target, options, resources, observer);
    tokio::pin!(driving);
    tokio::select! {
        record = &mut driving => record,
        _ = server.exited() => {
            run_cancel.cancel();
            driving.await
        }
    }
}

fn server_log(job: &Job, run: &TestRun) -> Option<String> {
    (job.target_of(&run.configuration).kind == TargetKind::Command).then(|| log_file(run))
}

/// Stops a server plateau started; says so if any of its processes survived.
async fn stop(server: &Server, job: &Job, run: &TestRun) -> Option<String> {
    let (Server::Command(process), Some(spec)) = (server, &job.target_of(&run.configuration).command) else {
        return None;
    };
    process.stop(spec.stop_grace).await;
    let survivors = command::group_members(process.pid);
    (!survivors.is_empty()).then(|| format!("processes {survivors:?} of the server survived SIGKILL"))
}

/// Live progress lines on a terminal, one per test run in progress; plain log lines, one per step, elsewhere (CI).
struct Progress {
    bars: Option<MultiProgress>,
    runs: usize,
}

impl Progress {
    fn new(runs: usize) -> Self {
        Self { bars: std::io::stderr().is_terminal().then(MultiProgress::new), runs }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// The live line of one test run (terminal only), removed when the run ends.
    fn run_line(&self) -> RunLine {
        RunLine(self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }))
    }
}

struct RunLine(Option<ProgressBar>);

impl RunLine {
    fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    fn set(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }
}

impl Drop for RunLine {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

struct RunObserver<'a> {
    load_unit: LoadUnit,
    detector: OnlineDetector<'a>,
    progress: &'a Progress,
    line: &'a RunLine,
    run_label: String,
    steps_total: usize,
    ramp_s: u64,
    /// Sends each second to CloudWatch when `[cloudwatch] publish` is on.
    publisher: Option<&'a Publisher>,
}

fn clock(seconds: u64) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

impl Observer for RunObserver<'_> {
    fn on_second(&mut self, second: &SecondSummary, tally: &Tally, step: &StepWindow) {
        if let Some(publisher) = self.publisher {
            publisher.send(ClientSecond::new(
                SystemTime::now(),
                second.completed,
                second.errors,
                second.load,
                &tally.latency_us,
            ));
        }
        if self.line.is_shown() {
            self.line.set(format!(
                "{} · step {}/{} · {:.0} {} · {} req/s · p99 {:.1} ms · {} errors · {} / {}",
                self.run_label,
                step.index + 1,
                self.steps_total,
                second.load,
                self.load_unit.label(),
                second.completed,
                second.p99_ms,
                second.errors,
                clock(second.second + 1),
                clock(self.ramp_s),
            ));
        }
    }

    fn on_step(&mut self, steps: &[StepRecord]) -> StepVerdict {
        if let Some(step) = steps.last() {
            let latency = crate::measure::LatencySummary::of(&step.steady.latency_us);
            self.progress.line(format!(
                "{} step {}/{}: {:.0} {}, {:.0} invocations/min, p50 {:.1} ms, p99 {:.1} ms, {} errors{}",
                self.run_label,
                step.window.index + 1,
                self.steps_total,
                step.window.load,
                self.load_unit.label(),
                step.throughput_rps() * 60.0,
                latency.p50_ms,
                latency.p99_ms,
                step.steady.errors.total(),
                match (step.steady.dropped, step.generator_saturated()) {
                    (0, false) => String::new(),
                    (dropped, saturated) => format!(
                        "{}{}",
                        if dropped > 0 { format!(", {dropped} dropped at the in-flight cap") } else { String::new() },
                        if saturated { ", load generator saturated" } else { "" }
                    ),
                }
            ));
        }
        let verdict = self.detector.on_step(steps);
        if let StepVerdict::Stop(reason) = &verdict {
            self.progress.line(format!("{} stopped early: {reason}", self.run_label));
        }
        verdict
    }
}
