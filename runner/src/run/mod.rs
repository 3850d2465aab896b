//! Runs a job: each test run's target started (a reference endpoint, or the user's server command), driven
//! through the traffic pattern, analysed, and saved; then the recommendation and the reports. Ctrl-C, SIGTERM, a
//! target that goes away or a server that crashes never lose what was measured: results are written after every
//! configuration and marked partial.

mod budget;
mod configuration;
mod merge;
mod progress;
mod race;
mod shard;
mod signals;
mod trials;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::aws::AwsClients;
use crate::aws::provision::{self, Ledger};
use crate::exit::Exit;
use crate::git::Revision;
use crate::measure::process_tree;
use crate::payload::{LoadedPlugin, PayloadSource};
use crate::plan::{self, Schedule, Segment, TestRun};
use crate::recommend;
use crate::report;
use crate::report::digest::RunDigest;
use crate::results::{
    Confidence, ConfigurationResult, EndpointIdentity, Host, JobSummary, Manifest, PluginIdentity, RESULTS_VERSION,
    Results, Resumed, RunStatus,
};
use crate::spec::{self, Deployment, EndpointSource, Job, OverBudget, TargetSpec, Traffic};
use configuration::{Pass, Probed, Ran, run_configuration};
use progress::Progress;

pub use merge::merge;
pub use shard::ShardError;
pub use signals::shutdown_signal;

fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The variable that names a run from outside (shards of one run share it).
const RUN_ID_VARIABLE: &str = "PLATEAU_RUN_ID";

/// `Manifest::run_id` for a run started at `started_at` (RFC 3339): `PLATEAU_RUN_ID` when set, which must suit a
/// CloudWatch dimension and a file name (letters, digits, `-`, at most 32), else the start and four random hex
/// digits.
fn new_run_id(started_at: &str) -> anyhow::Result<String> {
    if let Ok(id) = std::env::var(RUN_ID_VARIABLE) {
        let valid = !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        anyhow::ensure!(
            valid,
            "{RUN_ID_VARIABLE} must be 1 to 32 letters, digits or `-` (it names the run in CloudWatch)"
        );
        return Ok(id);
    }
    let stamp: String = started_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    Ok(format!("{stamp}-{:04x}", rand::random::<u16>()))
}

fn host() -> Host {
    Host {
        cpus: process_tree::available_cores(),
        memory_bytes: process_tree::machine_memory_bytes(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// What `plateau run` was asked to do.
pub enum Launch {
    /// Run the job file into `out` (or a new folder); `trials`, when given, replaces its `[job] trials`, and the
    /// command line's overrides apply over the file. A `segment` runs one shard's share of the load, its test runs
    /// aligned on `start_at` when given.
    New {
        job: PathBuf,
        out: Option<PathBuf>,
        trials: Option<u32>,
        overrides: spec::Overrides,
        segment: Option<Segment>,
        start_at: Option<SystemTime>,
    },
    /// Finish the interrupted run in `folder`: its completed test runs are kept, the rest run.
    Resume { folder: PathBuf },
}

/// Runs a job, writing everything into its output folder; `history` is the database the finished run is recorded
/// in (none: not recorded).
pub async fn run(
    launch: Launch,
    report_options: report::ReportOptions,
    summary: Summary,
    history: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let (job_path, out, trials, overrides, (segment, start_at), previous) = match launch {
        Launch::New { job, out, trials, overrides, segment, start_at } => {
            (job, out, trials, overrides, (segment, start_at), None)
        }
        // A resumed shard runs its share again, unaligned: the other shards have long finished the runs it lacks.
        Launch::Resume { folder } => match Results::load(&folder.join("results.json")) {
            Ok(previous) => (
                PathBuf::from(&previous.manifest.job_file),
                Some(folder),
                Some(previous.job.trials),
                previous.manifest.overrides.clone(),
                (previous.manifest.segment, None),
                Some(previous),
            ),
            Err(error) => {
                eprintln!("error: cannot resume: {error}");
                return Ok(Exit::InvalidInput);
            }
        },
    };
    let job = match spec::load(&job_path, &overrides) {
        Ok(job) => Job { trials: trials.unwrap_or(job.trials), ..job },
        Err(error) => {
            eprintln!("{error}");
            return Ok(Exit::InvalidInput);
        }
    };
    let job = match segment.map(|_| shard::for_shards(job.clone())).transpose() {
        Ok(sharded) => sharded.unwrap_or(job),
        Err(error) => {
            eprintln!("error: cannot run {} as shards: {error}", job_path.display());
            return Ok(Exit::InvalidInput);
        }
    };
    if let Some(previous) = previous.as_ref().filter(|previous| previous.manifest.job_sha256 != job.source.sha256) {
        eprintln!(
            "error: cannot resume: {} changed since the run started (sha256 {} then, {} now); a resumed run must \
             finish the job it began, so run the changed job anew",
            job_path.display(),
            &previous.manifest.job_sha256[..12],
            &job.source.sha256[..12]
        );
        return Ok(Exit::InvalidInput);
    }
    // The test runs the interrupted run completed, kept as they were.
    let kept: Vec<ConfigurationResult> = previous
        .as_ref()
        .map(|previous| if previous.trial_runs.is_empty() { &previous.configurations } else { &previous.trial_runs })
        .into_iter()
        .flatten()
        .filter(|result| result.status == RunStatus::Complete)
        .cloned()
        .collect();
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
    let started_at = previous.as_ref().map_or_else(utc_now, |previous| previous.manifest.started_at.clone());
    // A resumed run is the same run.
    let run_id = match previous.as_ref().map(|previous| previous.manifest.run_id.clone()).filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => new_run_id(&started_at)?,
    };
    let out = out.unwrap_or_else(|| {
        let stamp: String = started_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        PathBuf::from("plateau-out").join(format!("{}-{stamp}", plan::file_stem(&job.name)))
    });
    // A shard's folder may name its index (`--out /results/shard-{shard}`): one command line serves every shard of
    // an Indexed Job or array job, which set the index only in the environment.
    let out = match segment {
        Some(segment) => PathBuf::from(out.to_string_lossy().replace("{shard}", &segment.index().to_string())),
        None => out,
    };
    for folder in ["series", "logs"] {
        std::fs::create_dir_all(out.join(folder))
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    }
    // A resumed run names its endpoints as it did before: what the interrupted run left is deleted first.
    if previous.is_some() && out.join(provision::LEDGER_FILE).is_file() {
        for cleaned in provision::cleanup(&out).await? {
            match cleaned.error {
                None => {
                    eprintln!("plateau: deleted {} {}, left by the interrupted run", cleaned.resource, cleaned.name)
                }
                Some(error) => anyhow::bail!(
                    "cannot delete {} {}, left by the interrupted run: {error}; run `plateau cleanup {}`",
                    cleaned.resource,
                    cleaned.name,
                    out.display()
                ),
            }
        }
    }
    eprintln!(
        "plateau: {}{}{}, at most {} s; output in {}",
        segment.map(|segment| format!("shard {segment} of ")).unwrap_or_default(),
        plan.runs_counted(),
        plan.trials_note(),
        plan.worst_case_s(),
        out.display()
    );

    let spending = match job.limits.budget {
        Some(budget) => {
            let worst_case_usd = plan.worst_case_usd();
            if worst_case_usd > budget.max_cost_usd && budget.over_budget == OverBudget::Refuse {
                eprintln!(
                    "error: the job's worst case is {worst_case_usd:.4} USD of instance time, over its budget of {:.4} \
                     USD ([limits] max_cost_usd or --max-cost-usd); `plateau plan {}` shows each test run's share. \
                     Reduce the configurations, environments or steps, raise the budget, or set [limits] \
                     over_budget = \"stop\" to run until the budget is spent",
                    budget.max_cost_usd,
                    job_path.display()
                );
                return Ok(Exit::InvalidInput);
            }
            Some(Arc::new(budget::Spending::new(budget.max_cost_usd)))
        }
        None => None,
    };
    // Why the run stopped early, by the first that stopped it.
    let stopped: Arc<OnceLock<String>> = Arc::default();
    let cancel = CancellationToken::new();
    let stop = {
        let (cancel, plugin, stopped) = (cancel.clone(), plugin.clone(), stopped.clone());
        move |reason: String| {
            if stopped.set(reason.clone()).is_ok() {
                eprintln!("plateau: {reason}; writing partial results");
            }
            cancel.cancel();
            // A plugin call in progress (an `init` that loops) would hold its thread until its own limit.
            if let Some(plugin) = &plugin {
                plugin.interrupt();
            }
        }
    };
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop("interrupted".to_string());
        }
    });
    if let Some(spending) = &spending {
        let spending = spending.clone();
        tokio::spawn(async move {
            spending.reached().await;
            stop(format!(
                "the budget of {:.4} USD was reached (limits.max_cost_usd; {:.4} USD spent)",
                spending.max_cost_usd(),
                spending.spent_usd()
            ));
        });
    }

    let mut results = Results {
        results_version: RESULTS_VERSION,
        partial: true,
        manifest: Manifest {
            plateau_version: env!("CARGO_PKG_VERSION").to_string(),
            job_file: job.source.path.display().to_string(),
            job_sha256: job.source.sha256.clone(),
            job_file_text: job.source.text.clone(),
            overrides,
            seed: job.seed,
            host: host(),
            run_id: run_id.clone(),
            started_at: started_at.clone(),
            ended_at: started_at,
            // A resumed run keeps the commit it started from.
            revision: match &previous {
                Some(previous) => previous.manifest.revision.clone(),
                None => Revision::of(job.source.path.parent().unwrap_or(Path::new("."))),
            },
            resumed: previous
                .as_ref()
                .map(|_| Resumed { at: utc_now(), kept: kept.iter().map(ConfigurationResult::label).collect() }),
            stopped: None,
            payload_plugin: plugin.as_ref().map(|plugin| PluginIdentity {
                file: plugin.name.clone(),
                sha256: plugin.sha256.clone(),
                kind: if plugin.wrapped_core_module { "core-module" } else { "component" }.to_string(),
            }),
            segment,
            shards: None,
        },
        job: JobSummary {
            name: job.name.clone(),
            description: job.description.clone(),
            target_kind: job
                .targets
                .iter()
                .all(|target| target.kind() == job.targets[0].kind())
                .then_some(job.targets[0].kind()),
            traffic: job.traffic.clone(),
            traffic_options: job.traffic_options,
            load_unit: plan.schedule.load_unit,
            stopping: job.stopping.clone(),
            requirements: job.requirements.clone(),
            objective: job.requirements.objective,
            plateau: job.plateau,
            trials: job.trials,
        },
        configurations: Vec::new(),
        trial_runs: Vec::new(),
        recommendation: None,
    };
    let progress = Progress::new(plan.runs.len());
    let race = race::Race::default();
    let context = RunContext {
        job: &job,
        schedule: &plan.schedule,
        aws: &aws,
        out: &out,
        progress: &progress,
        started: Instant::now(),
        race: job.racing.then_some(&race),
        segment: segment.unwrap_or_else(Segment::whole),
        start_at,
        run_id: &run_id,
        ledger: Arc::new(Ledger::in_folder(&out)),
        spending: spending.as_deref(),
        stopped: &stopped,
    };
    // A run killed in its first test run still leaves a results file, marked partial (a resumed run keeps the one
    // it resumes until its first test run is saved again).
    if previous.is_none() {
        report::write_results(&results, &out)?;
    }
    // Results by test run, saved in plan order after every one, so an abrupt end loses at most the ones in progress.
    let mut done: Vec<Option<ConfigurationResult>> = vec![None; plan.runs.len()];
    let mut record = |results: &mut Results, run: &TestRun, result: ConfigurationResult| -> anyhow::Result<()> {
        done[run.index] = Some(result);
        let finished: Vec<ConfigurationResult> = done.iter().flatten().cloned().collect();
        if job.trials > 1 {
            results.configurations = trials::by_configuration(&finished, job.trials, plan.schedule.load_unit);
            results.trial_runs = finished;
        } else {
            results.configurations = finished;
        }
        race.update(&results.configurations, &job);
        results.manifest.ended_at = utc_now();
        Ok(report::write_results(results, &out)?)
    };
    // Raced search mode probes every configuration of a trial first, then measures them most promising first (see
    // `Pass`); a trial's losers are known before the next trial begins.
    // Not for provisioned endpoints: each would be created twice, or kept (and paid for) between its passes.
    let provisions =
        job.targets.iter().any(|target| matches!(target.spec, TargetSpec::Sagemaker { provision: Some(_), .. }));
    let two_passes = job.racing && matches!(job.traffic, Traffic::Search(_)) && plan.runs.len() > 1 && !provisions;
    let first_pass = if two_passes { Pass::Probe } else { Pass::Whole };
    for trial in plan.runs.chunk_by(|a, b| a.trial.map(|trial| trial.number) == b.trial.map(|trial| trial.number)) {
        let mut probed: Vec<(&TestRun, Probed)> = Vec::new();
        {
            // `plan.parallel` runs at once; results arrive in plan order.
            let mut finished = futures_util::stream::iter(trial)
                .map(|run| run_one(&context, run, &plugin, &cancel, &kept, first_pass).map(move |ran| (run, ran)))
                .buffered(plan.parallel);
            while let Some((run, ran)) = finished.next().await {
                match ran {
                    Ran::Probed(waiting) => probed.push((run, waiting)),
                    Ran::Done(result) => record(&mut results, run, result)?,
                }
            }
        }
        // The most promising first: a probe that bounds nothing may be the best of all.
        let direction = if job.requirements.objective.higher_is_better() { -1.0 } else { 1.0 };
        probed.sort_by(|(_, a), (_, b)| {
            let key = |probed: &Probed| probed.best.map_or(f64::NEG_INFINITY, |best| direction * best);
            key(a).total_cmp(&key(b))
        });
        let mut finished = futures_util::stream::iter(&probed)
            .map(|(run, waiting)| {
                run_one(&context, run, &plugin, &cancel, &kept, Pass::Measure(waiting)).map(move |ran| (*run, ran))
            })
            .buffered(plan.parallel);
        while let Some((run, ran)) = finished.next().await {
            record(&mut results, run, ran.done())?;
        }
    }

    results.partial =
        cancel.is_cancelled() || results.configurations.iter().any(|result| result.status != RunStatus::Complete);
    results.manifest.stopped = stopped.get().cloned();
    if let Some(segment) = segment {
        // A shard's figures are its share's: no recommendation or report until the shards are merged.
        results.manifest.ended_at = utc_now();
        report::write_results(&results, &out)?;
        eprintln!(
            "plateau: shard {segment} {}; its results are in {}: merge every shard's folder with `plateau merge`",
            if results.partial { "ended early" } else { "done" },
            out.display()
        );
        return Ok(if results.partial { Exit::RunFailed } else { Exit::Success });
    }
    results.manifest.ended_at = utc_now();
    conclude(results, &out, &report_options, summary, history)
}

/// A finished run (or merged shards): the recommendation, the reports, the history and the summary printed; the
/// exit code.
fn conclude(
    mut results: Results,
    out: &Path,
    report_options: &report::ReportOptions,
    summary: Summary,
    history: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let recommendation = recommend::recommend(&results.configurations, &results.job.requirements);
    let recommended = recommendation.configuration.is_some();
    let established = !matches!(recommendation.confidence, Confidence::Inconclusive { .. });
    results.recommendation = Some(recommendation);
    let table = report::write_all(&results, out, report_options)?;
    if let Some(path) = history {
        record_in_history(&results, &path);
    }
    let exit = if results.partial {
        Exit::RunFailed
    } else if recommended && established {
        Exit::Success
    } else if recommended {
        Exit::Inconclusive
    } else {
        Exit::NoConfigurationMeetsRequirements
    };
    match summary {
        Summary::Table => {
            println!();
            print!("{table}");
            println!("results: {}", out.display());
        }
        Summary::Json => {
            let digest = JsonSummary {
                digest: RunDigest::of(&results),
                results: out.join("results.json"),
                exit_code: exit as u8,
            };
            println!("{}", serde_json::to_string_pretty(&digest)?);
        }
    }
    Ok(exit)
}

/// Records the run in the history; a history that cannot be written costs the run nothing but a warning.
fn record_in_history(results: &Results, path: &Path) {
    let recorded = crate::history::History::open(path).and_then(|mut history| history.record(results));
    match recorded {
        Ok(crate::history::Recorded::Added { id }) => {
            eprintln!("plateau: recorded as run {id} of {:?} in the history {}", results.job.name, path.display());
        }
        Ok(crate::history::Recorded::AlreadyThere { .. }) => {}
        Err(error) => eprintln!("plateau: warning: the run is not in the history: {error}"),
    }
}

/// What `plateau run` prints on stdout when it ends (progress goes to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// The 100-column table, for people.
    Table,
    /// The run's digest as JSON, for scripts: the recommendation, each configuration's figures and verdict, where
    /// the results are and the exit code.
    Json,
}

#[derive(serde::Serialize)]
struct JsonSummary {
    #[serde(flatten)]
    digest: RunDigest,
    results: PathBuf,
    exit_code: u8,
}

/// What every test run of a job shares.
pub(super) struct RunContext<'a> {
    pub(super) job: &'a Job,
    pub(super) schedule: &'a Schedule,
    pub(super) aws: &'a AwsClients,
    /// The output folder.
    pub(super) out: &'a Path,
    pub(super) progress: &'a Progress,
    /// When the job started: the reference endpoint's drift and stalls count from here.
    pub(super) started: Instant,
    /// The race the runs are in, unless `[job] racing = false`.
    pub(super) race: Option<&'a race::Race>,
    /// The share of the load this process sends: the whole of it, unless it is a shard.
    pub(super) segment: Segment,
    /// When the shards start their first test run's ramp (`--start-at`).
    pub(super) start_at: Option<SystemTime>,
    /// `Manifest::run_id`.
    pub(super) run_id: &'a str,
    /// The resources the run provisions, listed before they are asked for (`plateau cleanup` reads it).
    pub(super) ledger: Arc<Ledger>,
    /// What the run has cost, with `[limits] max_cost_usd`.
    pub(super) spending: Option<&'a budget::Spending>,
    /// Why the run stopped early, once it has.
    pub(super) stopped: &'a OnceLock<String>,
}

impl RunContext<'_> {
    /// A test run's result before anything is measured: what it is, and how it ended.
    pub(super) fn empty_result(
        &self,
        run: &TestRun,
        status: RunStatus,
        failure: Option<String>,
    ) -> ConfigurationResult {
        let mut result = empty_result(run, self.schedule, status, failure, self.endpoint_name(run));
        // The region the SDK resolved, when the job file left it to the environment or a profile.
        if let Some(endpoint) = &mut result.endpoint
            && endpoint.region.is_none()
        {
            let config = self.aws.sagemaker.get(run.configuration.target).and_then(Option::as_ref);
            endpoint.region = config.and_then(|config| config.region()).map(ToString::to_string);
        }
        result
    }

    /// The SageMaker endpoint a test run calls: its configuration's, or the one plateau provisions for it.
    pub(super) fn endpoint_name(&self, run: &TestRun) -> Option<String> {
        match &run.configuration.deployment {
            Deployment::Sagemaker { source: EndpointSource::Existing { endpoint_name }, .. } => {
                Some(endpoint_name.clone())
            }
            Deployment::Sagemaker { source: EndpointSource::Provisioned { .. }, .. } => {
                Some(provision::resource_name(&self.job.name, self.run_id, run.index + 1))
            }
            _ => None,
        }
    }

    /// A test run that could not run, with the error that stopped it (and the server's log, if it has one).
    pub(super) fn failed(&self, run: &TestRun, error: &anyhow::Error) -> ConfigurationResult {
        ConfigurationResult {
            server_log: run.log_file(),
            ..self.empty_result(run, RunStatus::Failed, Some(format!("{error:#}")))
        }
    }
}

/// A test run's result before anything is measured: what it is, and how it ended; `endpoint_name` is the SageMaker
/// endpoint it calls.
fn empty_result(
    run: &TestRun,
    schedule: &Schedule,
    status: RunStatus,
    failure: Option<String>,
    endpoint_name: Option<String>,
) -> ConfigurationResult {
    let configuration = &run.configuration;
    ConfigurationResult {
        name: run.name.clone(),
        trial: run.trial.map(|trial| trial.number),
        trials: None,
        target: run.target_name.clone(),
        target_kind: Some(configuration.deployment.kind()),
        instance_type: configuration.instance_type.clone(),
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        price_source: configuration.price_source.clone(),
        environment: run.environment.clone(),
        endpoint: match (&configuration.deployment, endpoint_name) {
            (Deployment::Sagemaker { endpoint, .. }, Some(name)) => Some(EndpointIdentity {
                name,
                region: endpoint.region.clone(),
                variant: endpoint.target_variant.clone(),
                inference_component: endpoint.inference_component.clone(),
            }),
            _ => None,
        },
        serverless: configuration.serverless,
        status,
        end: None,
        failure,
        ramp_started_unix_ms: None,
        elapsed_s: 0,
        full_ramp_s: schedule.duration_s(),
        steps: Vec::new(),
        eliminated: None,
        probe_steps: Vec::new(),
        boundary_steps: Vec::new(),
        search: None,
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
        endpoint_metrics_error: None,
    }
}

/// One test run in a pass, unless the interrupted run being resumed completed it, the run was interrupted first, or
/// an earlier trial showed the configuration cannot win.
async fn run_one(
    context: &RunContext<'_>,
    run: &TestRun,
    plugin: &Option<Arc<LoadedPlugin>>,
    cancel: &CancellationToken,
    kept: &[ConfigurationResult],
    pass: Pass<'_>,
) -> Ran {
    let label = || format!("[{}/{}] {}", run.index + 1, context.progress.runs, run.label());
    let trial = run.trial.map(|trial| trial.number);
    if let Some(done) = kept.iter().find(|done| done.name == run.name && done.trial == trial) {
        context.progress.line(format!("{}: kept, as the interrupted run completed it", label()));
        return Ran::Done(done.clone());
    }
    if cancel.is_cancelled() {
        return Ran::Done(skipped(context, run));
    }
    if let Some(reason) = context.race.and_then(|race| race.eliminated(&run.name)) {
        context.progress.line(format!("{}: not run, eliminated by an earlier trial: {reason}", label()));
        // A probe that ran before the earlier trial was eliminated keeps its steps.
        let ran = match pass {
            Pass::Measure(probed) => probed.result.clone(),
            Pass::Whole | Pass::Probe => context.empty_result(run, RunStatus::Complete, None),
        };
        return Ran::Done(ConfigurationResult { eliminated: Some(reason), ..ran });
    }
    let payload =
        PayloadSource::for_run(&context.job.payload, plugin.as_ref(), &run.name, run.seeds.payload, context.segment);
    run_configuration(context, run, payload, cancel.clone(), pass).await
}

fn skipped(context: &RunContext<'_>, run: &TestRun) -> ConfigurationResult {
    let why = match context.stopped.get().map(String::as_str) {
        Some("interrupted") | None => "the run was interrupted",
        Some(reason) => reason,
    };
    context.empty_result(run, RunStatus::Skipped, Some(format!("not run: {why} first")))
}
