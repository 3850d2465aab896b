//! The command line: parses arguments, wires the stages together, and turns outcomes into exit codes.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::analyze::{self, ConfigurationFacts, OnlineDetector, PlateauSettings};
use crate::drive::{self, DriveOptions, Observer, Schedule, SecondSummary, StepRecord, StepVerdict, StepWindow};
use crate::exit::Exit;
use crate::measure::ResourceSource;
use crate::plan::{self, TestRun};
use crate::report;
use crate::report::compare::FailRule;
use crate::results::{ConfigurationResult, Host, JobSummary, Manifest, RESULTS_VERSION, Results, RunStatus};
use crate::spec::{self, Job, ReferenceModel, ServiceTimeDistribution, TargetKind};
use crate::target::http::HttpTarget;
use crate::target::reference::ReferenceServer;

#[derive(Parser)]
#[command(
    name = "plateau",
    version,
    about = "Load-test inference endpoint configurations, find where throughput levels off, and recommend the cheapest one that meets the latency goal."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file: ramp load on every configuration, find its plateau, recommend one.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Output folder [default: plateau-out/<job name>-<UTC time>].
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Check job files without sending a request; every error is printed with its location.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-render the reports of a saved results.json without running anything.
    Report {
        results: PathBuf,
        /// Output folder [default: the folder of the results file].
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Compare two results files for a pull-request check: Markdown (or JSON, JUnit XML) on stdout, exit code 4
    /// when a --fail-on rule fires.
    Compare {
        base: PathBuf,
        head: PathBuf,
        /// A rule that fails the check, e.g. "max_invocations < -5%", "p99 > +10%", "recommendation changed"
        /// (repeatable). Rules fire only on changes larger than the runs' own noise.
        #[arg(long = "fail-on", value_name = "RULE")]
        fail_on: Vec<String>,
        #[arg(long, value_enum, default_value_t = CompareFormat::Markdown)]
        format: CompareFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve the reference endpoint on its own, so any load tool can be pointed at it.
    ServeReference {
        #[arg(long, default_value_t = 4)]
        workers: u32,
        /// Mean service time in milliseconds.
        #[arg(long, default_value_t = 20.0)]
        service_ms: f64,
        #[arg(long, value_enum, default_value_t = DistributionArg::Fixed)]
        distribution: DistributionArg,
        /// Coefficient of variation for lognormal service times.
        #[arg(long, default_value_t = 0.5)]
        cv: f64,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A folder of templates that replace the built-in ones of the same name [job file: report.templates].
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Also render this template into the output folder, named as the file less `.j2` (repeatable).
    #[arg(long = "template", value_name = "FILE")]
    extra: Vec<PathBuf>,
}

impl ReportArgs {
    fn options(self, job_templates: Option<PathBuf>) -> report::ReportOptions {
        report::ReportOptions { templates: self.templates.or(job_templates), extra: self.extra }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompareFormat {
    Markdown,
    Json,
    Junit,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DistributionArg {
    Fixed,
    Lognormal,
}

pub fn main() -> Exit {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::RunFailed;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run { job, out, report } => run(&job, out, report).await,
            Command::Validate { files } => Ok(validate(&files)),
            Command::Compare { base, head, fail_on, format, out } => {
                compare(&base, &head, &fail_on, format, out.as_deref())
            }
            Command::Report { results, out, report } => rerender(&results, out, report.options(None)),
            Command::ServeReference { workers, service_ms, distribution, cv, host, port, seed } => {
                let distribution = match distribution {
                    DistributionArg::Fixed => ServiceTimeDistribution::Fixed,
                    DistributionArg::Lognormal => ServiceTimeDistribution::Lognormal,
                };
                let cv = if distribution == ServiceTimeDistribution::Fixed { 0.0 } else { cv };
                serve_reference(
                    ReferenceModel { workers, service_time_ms: service_ms, distribution, cv },
                    SocketAddr::new(host, port),
                    seed,
                )
                .await
            }
        }
    });
    match outcome {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::RunFailed
        }
    }
}

fn validate(files: &[PathBuf]) -> Exit {
    let mut exit = Exit::Success;
    for file in files {
        match spec::load(file) {
            Ok(job) => {
                let plan = plan::plan(&job);
                println!(
                    "ok: {} ({} configurations, at most {} s)",
                    file.display(),
                    plan.runs.len(),
                    plan.worst_case_s()
                );
            }
            Err(error) => {
                eprintln!("{error}");
                exit = Exit::InvalidInput;
            }
        }
    }
    exit
}

/// Reads a results file, or says on stderr why it cannot.
fn load_results(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{} is not a plateau results file: {error}", path.display()))
}

fn rerender(results_path: &Path, out: Option<PathBuf>, options: report::ReportOptions) -> anyhow::Result<Exit> {
    let results = match load_results(results_path) {
        Ok(results) => results,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Exit::InvalidInput);
        }
    };
    let out = out.unwrap_or_else(|| results_path.parent().unwrap_or(Path::new(".")).to_path_buf());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let summary = report::write_all(&results, &out, &options)?;
    print!("{summary}");
    println!("reports: {}", out.display());
    Ok(Exit::Success)
}

fn compare(
    base: &Path,
    head: &Path,
    fail_on: &[String],
    format: CompareFormat,
    out: Option<&Path>,
) -> anyhow::Result<Exit> {
    let inputs = (
        load_results(base),
        load_results(head),
        fail_on.iter().map(|rule| rule.parse()).collect::<Result<Vec<FailRule>, String>>(),
    );
    let (base, head, rules) = match inputs {
        (Ok(base), Ok(head), Ok(rules)) => (base, head, rules),
        (base, head, rules) => {
            for message in [base.err(), head.err(), rules.err()].into_iter().flatten() {
                eprintln!("error: {message}");
            }
            return Ok(Exit::InvalidInput);
        }
    };
    let comparison = report::compare::compare(&base, &head, &rules);
    let env = report::environment(None);
    let text = match format {
        CompareFormat::Markdown => report::render(&env, "compare.md.j2", &comparison)?,
        CompareFormat::Junit => report::render(&env, "compare.junit.xml.j2", &comparison)?,
        CompareFormat::Json => serde_json::to_string_pretty(&comparison)? + "\n",
    };
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(if comparison.fired.is_empty() { Exit::Success } else { Exit::Regression })
}

async fn serve_reference(model: ReferenceModel, address: SocketAddr, seed: u64) -> anyhow::Result<Exit> {
    if model.workers == 0 || model.service_time_ms.is_nan() || model.service_time_ms <= 0.0 {
        eprintln!("error: --workers must be at least 1 and --service-ms positive");
        return Ok(Exit::InvalidInput);
    }
    let server =
        ReferenceServer::start(model, seed, address).await.with_context(|| format!("cannot listen on {address}"))?;
    println!(
        "reference endpoint: {} ({} workers x {} ms, capacity {:.1} requests/s); Ctrl-C stops it",
        server.url(),
        model.workers,
        model.service_time_ms,
        model.capacity_rps()
    );
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = server.run_until_stopped() => {}
    }
    Ok(Exit::Success)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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

async fn run(job_path: &Path, out: Option<PathBuf>, report_args: ReportArgs) -> anyhow::Result<Exit> {
    let job = match spec::load(job_path) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("{error}");
            return Ok(Exit::InvalidInput);
        }
    };
    let plan = plan::plan(&job);
    let report_options = report_args.options(job.report_templates.clone());
    let started_at = utc_now();
    let out = out.unwrap_or_else(|| {
        let stamp: String = started_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        PathBuf::from("plateau-out").join(format!("{}-{stamp}", report::file_stem(&job.name)))
    });
    std::fs::create_dir_all(out.join("series"))
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
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
        },
        job: JobSummary {
            name: job.name.clone(),
            description: job.description.clone(),
            target_kind: job.target.kind,
            traffic: job.traffic.clone(),
            stopping: job.stopping.clone(),
            requirements: job.requirements.clone(),
            objective: job.requirements.objective,
        },
        configurations: Vec::new(),
        recommendation: None,
    };
    let progress = Progress::new(plan.runs.len());
    for run in &plan.runs {
        let result = if cancel.is_cancelled() {
            skipped(run, plan.ramp_s)
        } else {
            run_configuration(&job, run, &out, cancel.clone(), &progress).await
        };
        results.configurations.push(result);
        // Saved after every configuration, so an abrupt end loses at most the one in progress.
        results.manifest.ended_at = utc_now();
        report::write_results(&results, &out)?;
    }
    progress.finish();

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

fn empty_result(run: &TestRun, ramp_s: u64, status: RunStatus, failure: Option<String>) -> ConfigurationResult {
    let configuration = &run.configuration;
    ConfigurationResult {
        name: configuration.name.clone(),
        instance_type: configuration.instance_type.clone(),
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        status,
        end: None,
        failure,
        elapsed_s: 0,
        full_ramp_s: ramp_s,
        steps: Vec::new(),
        seconds: Vec::new(),
        series_file: None,
        plateau: None,
        metrics: None,
        scalability: None,
        reference: None,
    }
}

fn skipped(run: &TestRun, ramp_s: u64) -> ConfigurationResult {
    empty_result(run, ramp_s, RunStatus::Skipped, Some("not run: the run was interrupted first".to_string()))
}

fn failed(run: &TestRun, ramp_s: u64, error: &anyhow::Error) -> ConfigurationResult {
    empty_result(run, ramp_s, RunStatus::Failed, Some(format!("{error:#}")))
}

async fn run_configuration(
    job: &Job,
    run: &TestRun,
    out: &Path,
    cancel: CancellationToken,
    progress: &Progress,
) -> ConfigurationResult {
    let configuration = &run.configuration;
    let ramp_s = job.traffic.duration_s();
    let server = match (job.target.kind, configuration.reference) {
        (TargetKind::Reference, Some(model)) => {
            let seed = job.seed ^ (run.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            match ReferenceServer::start(model, seed, SocketAddr::from(([127, 0, 0, 1], 0))).await {
                Ok(server) => Some(server),
                Err(error) => {
                    return failed(
                        run,
                        ramp_s,
                        &anyhow::Error::new(error).context("cannot start the reference endpoint"),
                    );
                }
            }
        }
        _ => None,
    };
    let url = match &server {
        Some(server) => server.url(),
        None => configuration.url.clone().or_else(|| job.target.http.url.clone()).unwrap_or_default(),
    };
    let target = match HttpTarget::new(&url, &job.target.http, &job.payload) {
        Ok(target) => Arc::new(target),
        Err(error) => return failed(run, ramp_s, &error),
    };
    let schedule = Schedule::new(&job.traffic);
    let series_file = format!("series/{:02}-{}.jsonl", run.index + 1, report::file_stem(&configuration.name));
    let resources: Option<Box<dyn ResourceSource>> =
        server.as_ref().map(|server| Box::new(server.busy_workers()) as Box<dyn ResourceSource>);
    let utilization_source = resources.as_ref().map(|source| source.label().to_string());
    let settings = PlateauSettings::default();
    let mut observer = RunObserver {
        detector: OnlineDetector { stopping: &job.stopping, settings },
        progress,
        run_label: format!("[{}/{}] {}", run.index + 1, progress.runs, configuration.name),
        steps_total: schedule.steps.len(),
        ramp_s,
    };
    let options = DriveOptions {
        schedule: &schedule,
        max_invocations: job.stopping.max_invocations,
        series_path: Some(&out.join(&series_file)),
        cancel,
    };
    let record = match drive::drive(target, options, resources, &mut observer).await {
        Ok(record) => record,
        Err(error) => {
            return failed(run, ramp_s, &anyhow::Error::new(error).context("cannot write the per-second series"));
        }
    };
    let facts = ConfigurationFacts {
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        utilization_source,
    };
    let analysis = analyze::analyze_steps(&record.steps, &facts, &job.stopping, &job.requirements, &settings);
    let status = if record.end.is_partial() { RunStatus::Partial } else { RunStatus::Complete };
    let failure = match &record.end {
        drive::EndReason::TargetUnreachable { seconds } => {
            Some(format!("the target at {url} refused every connection for {seconds} s"))
        }
        _ => None,
    };
    ConfigurationResult {
        status,
        end: Some(record.end),
        failure,
        elapsed_s: record.elapsed_s,
        steps: record.steps.iter().map(analyze::step_result).collect(),
        seconds: record.seconds,
        series_file: Some(series_file),
        plateau: analysis.plateau,
        metrics: analysis.metrics,
        scalability: analysis.scalability,
        reference: server.as_ref().map(ReferenceServer::realized),
        ..empty_result(run, ramp_s, status, None)
    }
}

/// The live progress line on a terminal; plain log lines, one per step, elsewhere (CI).
struct Progress {
    bar: Option<ProgressBar>,
    runs: usize,
}

impl Progress {
    fn new(runs: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, runs }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

struct RunObserver<'a> {
    detector: OnlineDetector<'a>,
    progress: &'a Progress,
    run_label: String,
    steps_total: usize,
    ramp_s: u64,
}

fn clock(seconds: u64) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

impl Observer for RunObserver<'_> {
    fn on_second(&mut self, second: &SecondSummary, step: &StepWindow) {
        if let Some(bar) = &self.progress.bar {
            bar.set_message(format!(
                "{} · step {}/{} · {} users · {} req/s · p99 {:.1} ms · {} errors · {} / {}",
                self.run_label,
                step.index + 1,
                self.steps_total,
                second.users,
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
                "{} step {}/{}: {:.0} users, {:.0} invocations/min, p50 {:.1} ms, p99 {:.1} ms, {} errors",
                self.run_label,
                step.window.index + 1,
                self.steps_total,
                step.window.users,
                step.throughput_rps() * 60.0,
                latency.p50_ms,
                latency.p99_ms,
                step.steady.errors.total()
            ));
        }
        let verdict = self.detector.on_step(steps);
        if let StepVerdict::Stop(reason) = &verdict {
            self.progress.line(format!("{} stopped early: {reason}", self.run_label));
        }
        verdict
    }
}
