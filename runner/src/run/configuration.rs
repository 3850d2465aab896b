//! One test run: its server started, its target driven through the schedule, its steps analysed, and its result
//! made, whatever happened (a server that would not start or crashed, a target that went away, Ctrl-C).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::analyze::search::{self, SearchSummary, Searcher, Split};
use crate::analyze::{self, Analysis, ConfigurationFacts, OnlineDetector, StepResult};
use crate::aws::cloudwatch::{self, EndpointMetrics, Publisher};
use crate::aws::errors::ErrorDetail;
use crate::drive::{self, DriveOptions, EndReason, NextStep, RunRecord};
use crate::measure::series::{self, SecondSummary, SeriesSecond};
use crate::measure::step::StepRecord;
use crate::measure::{GoodputGoals, ResourceSource};
use crate::payload::PayloadSource;
use crate::plan::{LoadUnit, Schedule, StepRole, TestRun};
use crate::results::{ConfigurationResult, RunStatus};
use crate::server::{Provisioning, Server, Started};
use crate::spec::{Deployment, EndpointSource, Job, Traffic};
use crate::target::Target;
use crate::target::http::HttpTarget;
use crate::target::sagemaker::SageMakerTarget;

use super::RunContext;
use super::budget::Spending;
use super::progress::RunObserver;
use super::race::Racer;
use super::shard;

/// How much of its ramp a test run covers. With racing, search mode probes every configuration first and then
/// measures them in order of promise, so the likely winner is measured first and the others meet a leader: those
/// whose probe already shows they cannot beat it are never measured.
#[derive(Clone, Copy)]
pub(super) enum Pass<'a> {
    /// The whole ramp.
    Whole,
    /// Search mode's probe: the run stops where the measured steps would begin.
    Probe,
    /// Search mode's measured steps, after the probe pass.
    Measure(&'a Probed),
}

/// A configuration whose probe ran, waiting for its measured pass.
pub(super) struct Probed {
    /// The probe's result: its steps, bracket and time, no figures yet.
    pub(super) result: ConfigurationResult,
    pub(super) records: Vec<StepRecord>,
    /// The first measured step the search chose.
    pub(super) next: NextStep,
    /// The favourable end of the objective the probe allows, when it bounds it: its measured pass's place in line.
    pub(super) best: Option<f64>,
}

/// What a test run gave: its result, or a probe waiting for its measured pass.
pub(super) enum Ran {
    Done(ConfigurationResult),
    Probed(Probed),
}

impl Ran {
    pub(super) fn done(self) -> ConfigurationResult {
        match self {
            Ran::Done(result) => result,
            Ran::Probed(probed) => probed.result,
        }
    }
}

pub(super) async fn run_configuration(
    context: &RunContext<'_>,
    run: &TestRun,
    payload: PayloadSource,
    cancel: CancellationToken,
    pass: Pass<'_>,
) -> Ran {
    let (job, progress) = (context.job, context.progress);
    let configuration = &run.configuration;
    let label = format!("[{}/{}] {}", run.index + 1, progress.runs, run.label());
    let facts = |utilization_source| ConfigurationFacts {
        load_unit: context.schedule.load_unit,
        instance_count: configuration.instance_count,
        price_per_hour_usd: configuration.price_per_hour_usd,
        utilization_source,
    };
    let prior_elapsed_s = match pass {
        Pass::Measure(probed) => probed.result.elapsed_s,
        Pass::Whole | Pass::Probe => 0,
    };
    let (prior, schedule) = match pass {
        Pass::Measure(probed) => {
            // The leader measured since this probe ran may already be out of its reach.
            let facts = facts(None);
            let racer = context.race.map(|race| Racer { name: &run.name, race, job, facts: &facts });
            if let Some(reason) = racer.and_then(|racer| racer.cannot_win(&probed.records)) {
                let saved = match &job.traffic {
                    Traffic::Search(search) => format!("; {}", search.saved(job.plateau.confirm_steps, 0)),
                    _ => String::new(),
                };
                progress.line(format!(
                    "{label} eliminated after its probe ({} s, not measured{saved}): {reason}",
                    probed.result.elapsed_s
                ));
                return Ran::Done(ConfigurationResult { eliminated: Some(reason), ..probed.result.clone() });
            }
            let next = probed.next;
            (probed.records.as_slice(), context.schedule.measuring_from(next.load, next.duration_s, next.role))
        }
        Pass::Whole | Pass::Probe => (&[][..], context.schedule.clone()),
    };
    // The probe pass keeps its own series and server log beside the measured pass's.
    let probe_only = matches!(pass, Pass::Probe);
    let pass_file = |file: String| match file.rsplit_once('.') {
        Some((stem, extension)) if probe_only => format!("{stem}.probe.{extension}"),
        _ => file,
    };
    let line = progress.run_line();
    let on_wait = |what: &str, waited: Duration| {
        line.set(format!("{label} · waiting for {what} ({}s)", waited.as_secs()));
    };
    let log_file = run.log_file().map(pass_file);
    let log = log_file.as_ref().map(|log| context.out.join(log)).unwrap_or_default();
    let endpoint_name = context.endpoint_name(run);
    let provisioning = provisioning(context, run, endpoint_name.as_deref());
    // Billed from when its server is asked for until it is stopped (an endpoint deleted).
    let billed = Billed::start(context.spending, run);
    let mut started = match Server::start(run, &log, context.started, &cancel, on_wait, provisioning).await {
        Ok(started) => started,
        Err(error) => {
            progress.line(format!("{label} failed: {error:#}"));
            return Ran::Done(ConfigurationResult { server_log: log_file, ..context.failed(run, &error.into()) });
        }
    };
    let utilization_source = started.resources.as_ref().map(|source| source.label().to_string());
    let endpoint_name = endpoint_name.unwrap_or_else(|| run.name.clone());
    let publisher = context
        .aws
        .cloudwatch
        .as_ref()
        .filter(|_| job.cloudwatch.publish)
        .map(|client| Publisher::start(client.clone(), &job.cloudwatch, &job.name, context.run_id, &endpoint_name));
    let facts = facts(utilization_source);
    let mut observer = RunObserver {
        load_unit: context.schedule.load_unit,
        detector: OnlineDetector { stopping: &job.stopping, settings: job.plateau },
        // Shards run the whole ramp: each sees only its share, and they must all run the same steps.
        fixed_ramp: context.segment.count() > 1,
        searcher: searcher(job),
        roles: Vec::new(),
        prior,
        probe_only,
        probe_done: None,
        racer: context.race.map(|race| Racer { name: &run.name, race, job, facts: &facts }),
        eliminated: None,
        progress,
        line: &line,
        run_label: label.clone(),
        steps_total: schedule.steps.len(),
        ramp_s: schedule.duration_s(),
        publisher: publisher.as_ref(),
    };
    let series_file = pass_file(run.series_file());
    let options = DriveOptions {
        schedule: &schedule,
        traffic: &job.traffic_options,
        seed: run.seeds.arrivals,
        // A shard stops at its share of the invocations.
        max_invocations: job.stopping.max_invocations.map(|max| max.div_ceil(u64::from(context.segment.count()))),
        goal: job.requirements.slo,
        goodput: GoodputGoals::of(&job.requirements),
        series_path: Some(&context.out.join(&series_file)),
        segment: context.segment,
        // A server that exits mid-run ends the run; the user's Ctrl-C ends this and every later run.
        cancel: cancel.child_token(),
    };
    shard::wait_for_slot(context, run, &cancel, &line, &label).await;
    let run_started = SystemTime::now();
    let driven = drive_target(context, run, &mut started, payload, options, &mut observer).await;
    let (eliminated, probe_done) = (observer.eliminated.take(), observer.probe_done.take());
    let best = match (&driven, &observer.racer) {
        (Ok((record, _)), Some(racer)) if probe_done.is_some() => racer.best_possible(&record.steps),
        _ => None,
    };
    let Started { server, address, .. } = started;
    let run_ended = SystemTime::now();
    // On Ctrl-C or SIGTERM, CloudWatch gets a second to take what is left, not its full timeout.
    let interrupted = async {
        cancel.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let cloudwatch = match publisher {
        Some(publisher) => Some(publisher.finish(interrupted).await),
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
    let crashed = match &server {
        Server::Command { process, .. } if !cancel.is_cancelled() => process.exited(),
        _ => None,
    };
    // A provisioned endpoint is deleted before its metrics are read: CloudWatch keeps them, and the wait for them
    // would be paid for.
    let leftover = server.stop().await;
    drop(billed);
    let (record, error_details) = match driven {
        Ok(driven) => driven,
        Err(Failure::BeforeTheRamp(error)) => {
            let error = match leftover {
                Some(left) => anyhow::anyhow!("{error:#}\n{left}"),
                None => error,
            };
            progress.line(format!("{label} failed: {error:#}"));
            return Ran::Done(context.failed(run, &error));
        }
        Err(Failure::Series(error)) => {
            let error = anyhow::Error::new(error).context("cannot write the per-second series");
            return Ran::Done(context.failed(run, &error));
        }
    };
    // Phases are judged by sliding windows, measured again from the series file (docs/decisions.md, "What the
    // numbers mean").
    let sliding = sliding_window(job, context.schedule, &record.seconds, || {
        series::read_series(&context.out.join(&series_file)).ok()
    });
    let probe = match pass {
        Pass::Measure(probed) => Some(probed.records.clone()),
        Pass::Whole | Pass::Probe => None,
    };
    let Analysed { mut analysis, search, probe } = analysed(job, &facts, record.steps, probe, sliding.as_ref());
    // The endpoint's own figures at MaxInvocations, as IR reports them: the plateau's step, read once CloudWatch
    // has had time to publish it.
    let (endpoint_metrics, endpoint_metrics_error) = if cancel.is_cancelled() {
        (None, endpoint_metrics_wanted(context, run).then(|| "not read: the run was interrupted".to_string()))
    } else {
        let plateau = analysis.plateau.as_ref().and_then(|plateau| analysis.steps.get(plateau.step));
        let (window, window_of) = match plateau {
            Some(step) => (
                (run_started + Duration::from_secs(step.start_s), run_started + Duration::from_secs(step.end_s)),
                format!("the plateau (step {})", step.index + 1),
            ),
            None => ((run_started, run_ended), "the whole run (no plateau)".to_string()),
        };
        let wait = |remaining: Duration| {
            line.set(format!(
                "{label} · waiting {} s for CloudWatch to publish the endpoint's metrics",
                remaining.as_secs()
            ))
        };
        match endpoint_metrics(context, run, &endpoint_name, (window, window_of), &cancel, wait).await {
            Ok(metrics) => (metrics, None),
            Err(error) => {
                progress.line(format!("{label}: cannot read the endpoint's CloudWatch metrics: {error}"));
                (None, Some(error))
            }
        }
    };
    with_endpoint_utilization(&mut analysis, endpoint_metrics.as_ref());
    let (status, failure) = match (&crashed, &server, &record.end) {
        (Some(status), Server::Command { process, .. }, _) => (
            RunStatus::Failed,
            Some(format!(
                "the server exited during the run ({status})\n--- last lines of its log ---\n{}",
                process.log_tail()
            )),
        ),
        (_, _, EndReason::TargetUnreachable { seconds }) => {
            (RunStatus::Partial, Some(format!("the target at {address} refused every connection for {seconds} s")))
        }
        (_, _, EndReason::PayloadFailed { message }) => (RunStatus::Partial, Some(message.clone())),
        (_, _, end) if end.is_partial() => (RunStatus::Partial, None),
        _ => match target_failure(&analysis.steps, &error_details, &address, context.schedule.load_unit) {
            Some(failure) => (RunStatus::Failed, Some(failure)),
            None => (RunStatus::Complete, None),
        },
    };
    // What the server left behind (processes that survived, resources not deleted) is said however the run ended.
    let failure = [failure, leftover].into_iter().flatten().reduce(|failure, left| format!("{failure}\n{left}"));
    if let Some(failure) = &failure {
        progress.line(format!("{label}: {failure}"));
    }
    let result = ConfigurationResult {
        status,
        end: Some(record.end),
        failure,
        ramp_started_unix_ms: Some(unix_ms(run_started)),
        elapsed_s: record.elapsed_s + prior_elapsed_s,
        steps: analysis.steps,
        eliminated,
        probe_steps: search.as_ref().map(|(_, probe)| probe.clone()).unwrap_or_default(),
        boundary_steps: analysis.boundary_steps,
        search: search.map(|(summary, _)| summary),
        seconds: record.seconds,
        series_file: Some(series_file),
        server_log: log_file,
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
        endpoint_metrics_error,
        ..context.empty_result(run, status, None)
    };
    match probe_done {
        Some(next) if result.status == RunStatus::Complete && result.eliminated.is_none() => {
            Ran::Probed(Probed { result, records: probe, next, best })
        }
        _ => Ran::Done(result),
    }
}

/// The searcher that chooses search mode's steps, for a job in search mode.
fn searcher(job: &Job) -> Option<Searcher<'_>> {
    match &job.traffic {
        Traffic::Search(search) => Some(Searcher {
            search,
            detector: OnlineDetector { stopping: &job.stopping, settings: job.plateau },
            think_time_ms: job.traffic_options.think_time_ms,
            goals: crate::analyze::goals::Goal::all(&job.requirements),
        }),
        _ => None,
    }
}

/// `phases`' sliding window where throughput levelled off, measured exactly from the run's full per-second
/// record (`series`, read only when a window is found).
pub(super) fn sliding_window(
    job: &Job,
    schedule: &Schedule,
    seconds: &[SecondSummary],
    series: impl FnOnce() -> Option<Vec<SeriesSecond>>,
) -> Option<StepRecord> {
    let Traffic::Phases(_) = &job.traffic else { return None };
    let from_s = schedule.steps.first().map_or(0, |step| step.start_s);
    let window = analyze::sliding_window(seconds, from_s, &job.plateau)?;
    Some(series::window_from_seconds(&series()?, window))
}

/// A test run's figures, and search mode's summary with its probe steps.
pub(super) struct Analysed {
    pub(super) analysis: Analysis,
    pub(super) search: Option<(SearchSummary, Vec<StepResult>)>,
    /// The probe steps as recorded, for a probe pass's measured pass to continue from.
    pub(super) probe: Vec<StepRecord>,
}

/// Analyses a test run's steps: search mode's probe steps placed the measured ones (`probe`: those of the probe
/// pass, when this is the measured pass) and feed no figure; figures come from measured steps, and the figure at
/// the latency goal also from boundary steps.
pub(super) fn analysed(
    job: &Job,
    facts: &ConfigurationFacts,
    steps: Vec<StepRecord>,
    probe: Option<Vec<StepRecord>>,
    sliding: Option<&StepRecord>,
) -> Analysed {
    let (mut probe_steps, mut measured, mut boundary) = (Vec::new(), Vec::new(), Vec::new());
    for step in steps {
        match step.window.role {
            StepRole::Probe => probe_steps.push(step),
            StepRole::Measured => measured.push(step),
            StepRole::Boundary => boundary.push(step),
        }
    }
    let probe = probe.unwrap_or(probe_steps);
    for steps in [&mut measured, &mut boundary] {
        for (index, step) in steps.iter_mut().enumerate() {
            step.window.index = index;
        }
    }
    let analysis =
        analyze::analyze_steps(&measured, &boundary, facts, &job.stopping, &job.requirements, &job.plateau, sliding);
    let search = searcher(job).map(|searcher| {
        let steps = Split {
            probe: search::split(&probe).probe,
            measured: analysis.steps.clone(),
            boundary: analysis.boundary_steps.clone(),
        };
        (searcher.summary(&steps), steps.probe)
    });
    Analysed { analysis, search, probe }
}

/// A SageMaker endpoint's utilisation is the endpoint's own, from CloudWatch (IR reports the same figures).
pub(super) fn with_endpoint_utilization(analysis: &mut Analysis, endpoint: Option<&EndpointMetrics>) {
    if let (Some(metrics), Some(endpoint)) = (analysis.metrics.as_mut(), endpoint)
        && (endpoint.cpu_utilization.is_some() || endpoint.memory_utilization.is_some())
    {
        metrics.cpu_utilization_percent = endpoint.cpu_utilization;
        metrics.memory_utilization_percent = endpoint.memory_utilization;
        metrics.utilization_source = Some("CloudWatch (/aws/sagemaker/Endpoints)".to_string());
    }
}

pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Share of failed requests at the lowest load beyond which the target is broken, not overloaded.
const TARGET_FAILURE_PERCENT: f64 = 50.0;

/// A target that fails most requests already at the lowest load is broken, not slow: the run failed, and the
/// message says how, by the dominant error class (never "the load generator fell behind").
pub(super) fn target_failure(
    steps: &[StepResult],
    details: &[ErrorDetail],
    address: &str,
    load_unit: LoadUnit,
) -> Option<String> {
    let first = steps.iter().find(|step| step.complete)?;
    if first.error_rate_percent <= TARGET_FAILURE_PERCENT {
        return None;
    }
    let (class, count) = first.errors.dominant()?;
    let attempts = first.errors.total() + first.latency.count;
    let example = details
        .iter()
        .find(|detail| detail.class.name() == class)
        .map(|detail| format!(", e.g. {}", detail.example))
        .unwrap_or_default();
    Some(format!(
        "the target at {address} failed {} of {attempts} requests at the lowest load ({} {}), most of them \
         `{class}` ({count}){example}",
        first.errors.total(),
        first.load,
        load_unit.label(),
    ))
}

/// Why a test run measured nothing.
enum Failure {
    /// The target could not be made, or its preflight request failed: nothing was sent.
    BeforeTheRamp(anyhow::Error),
    Series(std::io::Error),
}

/// Makes the run's target (for HTTP, at the address its server gave), checks it with one request, and drives it
/// through the schedule.
async fn drive_target(
    context: &RunContext<'_>,
    run: &TestRun,
    started: &mut Started,
    payload: PayloadSource,
    options: DriveOptions<'_>,
    observer: &mut RunObserver<'_>,
) -> Result<(RunRecord, Vec<ErrorDetail>), Failure> {
    let job = context.job;
    payload.preflight().await.map_err(|error| Failure::BeforeTheRamp(error.into()))?;
    let (server, resources) = (&started.server, started.resources.take());
    match &run.configuration.deployment {
        Deployment::Sagemaker { endpoint, timeout, .. } => {
            let config = context.aws.sagemaker[run.configuration.target]
                .as_ref()
                .expect("AwsClients::connect makes a client for every SageMaker target");
            let endpoint_name = context.endpoint_name(run).expect("a SageMaker test run has an endpoint");
            let target =
                Arc::new(SageMakerTarget::new(config, &endpoint_name, endpoint, &job.payload, payload, *timeout));
            target.preflight().await.map_err(|error| Failure::BeforeTheRamp(error.into()))?;
            let record = drive_until_exit(Arc::clone(&target), options, resources, observer, server).await;
            Ok((record.map_err(Failure::Series)?, target.error_details()))
        }
        Deployment::Reference { http, .. }
        | Deployment::ReferenceLlm { http, .. }
        | Deployment::Http { http, .. }
        | Deployment::Command { http, .. } => {
            let target = HttpTarget::new(&started.address, http, &job.payload, payload)
                .map_err(|error| Failure::BeforeTheRamp(error.into()))?;
            target.preflight().await.map_err(|error| Failure::BeforeTheRamp(error.into()))?;
            let target = Arc::new(target);
            let record = drive_until_exit(Arc::clone(&target), options, resources, observer, server).await;
            let record = record.map_err(Failure::Series)?;
            let details = target.error_details(&record.errors);
            Ok((record, details))
        }
    }
}

/// Drives `target` through the schedule; a server plateau started that exits mid-run ends the run.
async fn drive_until_exit<T: Target>(
    target: Arc<T>,
    options: DriveOptions<'_>,
    resources: Option<Box<dyn ResourceSource>>,
    observer: &mut RunObserver<'_>,
    server: &Server,
) -> std::io::Result<RunRecord> {
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

/// A test run's instances being paid for, with `[limits] max_cost_usd`: from `start` until dropped.
struct Billed<'a> {
    spending: Option<&'a Spending>,
    index: usize,
}

impl<'a> Billed<'a> {
    fn start(spending: Option<&'a Spending>, run: &TestRun) -> Self {
        if let Some(spending) = spending {
            spending.start(run.index, run.usd_per_hour());
        }
        Self { spending, index: run.index }
    }
}

impl Drop for Billed<'_> {
    fn drop(&mut self) {
        if let Some(spending) = self.spending {
            spending.end(self.index);
        }
    }
}

/// What creating a test run's endpoint needs, when its target provisions them: its client, the run's ledger, the
/// endpoint's name and its tags (plateau's, by which a run's resources can be found, and the job's own).
fn provisioning<'a>(context: &'a RunContext<'_>, run: &TestRun, name: Option<&str>) -> Option<Provisioning<'a>> {
    let Deployment::Sagemaker { source: EndpointSource::Provisioned { provision, .. }, .. } =
        &run.configuration.deployment
    else {
        return None;
    };
    let provisioner = context.aws.provisioners.get(run.configuration.target)?.as_ref()?;
    let own = [
        ("plateau:job", context.job.name.as_str()),
        ("plateau:run-id", context.run_id),
        ("plateau:configuration", run.name.as_str()),
    ];
    let tags = own
        .into_iter()
        .map(|(key, value)| (key.to_string(), tag_value(value)))
        .chain(provision.tags.iter().map(|(key, value)| (key.clone(), value.clone())))
        .collect();
    Some(Provisioning { provisioner, ledger: &context.ledger, name: name?.to_string(), tags })
}

/// A tag value as SageMaker takes it: letters, digits, spaces and `_ . : / = + - @`, at most 256 characters.
fn tag_value(text: &str) -> String {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    text.chars().map(|c| if allowed(c) { c } else { '-' }).take(256).collect()
}

/// Whether the job reads this run's endpoint metrics from CloudWatch.
fn endpoint_metrics_wanted(context: &RunContext<'_>, run: &TestRun) -> bool {
    matches!(run.configuration.deployment, Deployment::Sagemaker { .. })
        && context.aws.cloudwatch.is_some()
        && context.job.cloudwatch.endpoint_metrics
}

/// A SageMaker endpoint's own metrics from CloudWatch for the run's window, when the job reads them; why not, when
/// they cannot be read.
async fn endpoint_metrics(
    context: &RunContext<'_>,
    run: &TestRun,
    endpoint_name: &str,
    ((started, ended), window_of): ((SystemTime, SystemTime), String),
    cancel: &CancellationToken,
    on_wait: impl Fn(Duration),
) -> Result<Option<EndpointMetrics>, String> {
    let Deployment::Sagemaker { endpoint, .. } = &run.configuration.deployment else { return Ok(None) };
    let Some(client) = context.aws.cloudwatch.as_ref().filter(|_| context.job.cloudwatch.endpoint_metrics) else {
        return Ok(None);
    };
    // CloudWatch publishes a minute's metrics a minute or two after it: wait for the window's last, counting down.
    let ready_at = ended + context.job.cloudwatch.metrics_delay;
    while let Ok(remaining) = ready_at.duration_since(SystemTime::now()) {
        on_wait(remaining);
        tokio::select! {
            _ = cancel.cancelled() => return Err("not read: the run was interrupted".to_string()),
            _ = tokio::time::sleep(remaining.min(Duration::from_secs(1))) => {}
        }
    }
    let query = cloudwatch::EndpointQuery {
        endpoint_name,
        variant_name: endpoint.target_variant.as_deref().unwrap_or("AllTraffic"),
        inference_component: endpoint.inference_component.as_deref(),
        window: (started, ended),
        window_of,
        vcpus: run.configuration.vcpus,
        gpus: run.configuration.gpus,
    };
    cloudwatch::endpoint_metrics(client, &query).await.map(Some).map_err(|error| format!("{error:#}"))
}
