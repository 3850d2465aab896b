//! `plateau merge`: the shards of one run (`plateau run --segment i/N`) made into the results one load generator
//! driving their combined load would have written. Each test run's per-second histograms and counts are merged
//! second by second (exactly: `series::merge_series`), its steps rebuilt over the job's fixed ramp, and the rest
//! is a single run's: the same analysis, recommendation, reports and history. A shard that is missing, stopped
//! early, fell behind its schedule or started late is named; the seconds it did not cover are left out, never
//! filled in.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::analyze::ConfigurationFacts;
use crate::aws::errors::ErrorDetail;
use crate::drive::{self, EndReason};
use crate::exit::Exit;
use crate::measure::series::{self, SeriesError, SeriesSecond};
use crate::measure::step::StepRecord;
use crate::plan::{self, Schedule, Segment, TestRun};
use crate::report;
use crate::results::{ConfigurationResult, LoadError, MergedShard, Results, RunStatus, Shards};
use crate::spec::{self, Deployment, EndpointSource, Job, SpecError};

use super::configuration::{self, Analysed};
use super::shard::{self, ShardError};
use super::{Summary, trials};

/// Shards whose ramps started further apart than this did not load the target together: named in the problems.
const LATE_AFTER_MS: u64 = 1_000;

/// Why shards cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{folder} holds a whole run's results, not a shard's: only runs made with `plateau run --segment` merge")]
    NotAShard { folder: String },
    #[error("{folder} is shard {segment}, and {first} is shard {first_segment}: the shards of one run have one count")]
    Count { folder: String, segment: Segment, first: String, first_segment: Segment },
    #[error("{folder} ran {what} than {first}: shards of one run share their job file, overrides and seed")]
    Mismatch { folder: String, what: &'static str, first: String },
    #[error("{folder} and {other} are both shard {segment}")]
    Duplicate { folder: String, other: String, segment: Segment },
    #[error("cannot read the job file the shards ran: {0}")]
    Job(Box<SpecError>),
    #[error(
        "{path} changed since the shards ran it (sha256 {then} then, {now} now): merge where the job file is the one \
         they ran"
    )]
    JobChanged { path: String, then: String, now: String },
    #[error("{0}")]
    Shard(#[from] ShardError),
}

/// A shard's folder and what it wrote.
struct Shard {
    folder: PathBuf,
    segment: Segment,
    results: Results,
}

impl Shard {
    /// This shard's result for a test run, if it finished it (a shard killed mid-run has none for that run).
    fn result(&self, run: &TestRun) -> Option<&ConfigurationResult> {
        let results = &self.results;
        let runs = if results.trial_runs.is_empty() { &results.configurations } else { &results.trial_runs };
        let trial = run.trial.map(|trial| trial.number);
        runs.iter().find(|result| result.name == run.name && (results.trial_runs.is_empty() || result.trial == trial))
    }
}

/// Merges the shards' results in `folders` into `out` (default: `merged` beside the first shard's folder), then
/// recommends, reports and records as `plateau run` does.
pub fn merge(
    folders: &[PathBuf],
    out: Option<PathBuf>,
    report_options: &report::ReportOptions,
    summary: Summary,
    history: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let (shards, job) = match load_shards(folders).and_then(|shards| Ok((job_of(&shards[0].results)?, shards))) {
        Ok((job, shards)) => (shards, job),
        Err(error) => {
            eprintln!("error: cannot merge: {error}");
            return Ok(Exit::InvalidInput);
        }
    };
    let plan = plan::plan(&job);
    let first = &shards[0];
    let count = first.segment.count();
    let out = out.unwrap_or_else(|| first.folder.parent().unwrap_or(Path::new(".")).join("merged"));
    std::fs::create_dir_all(out.join("series"))
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let mut problems: Vec<String> = (0..count)
        .filter(|index| !shards.iter().any(|shard| shard.segment.index() == *index))
        .map(|index| {
            format!(
                "shard {index}/{count} is missing (no folder given holds it): its share of the load is in no figure, \
                 so every test run is left out"
            )
        })
        .collect();
    let mut runs = Vec::new();
    for run in &plan.runs {
        runs.push(merge_run(&job, &plan.schedule, run, &shards, &out, &mut problems)?);
    }
    let mut results = Results {
        partial: true,
        configurations: Vec::new(),
        trial_runs: Vec::new(),
        recommendation: None,
        ..first.results.clone()
    };
    results.manifest.segment = None;
    results.manifest.started_at =
        shards.iter().map(|shard| &shard.results.manifest.started_at).min().cloned().unwrap_or_default();
    results.manifest.ended_at =
        shards.iter().map(|shard| &shard.results.manifest.ended_at).max().cloned().unwrap_or_default();
    results.manifest.shards = Some(Shards {
        count,
        merged: shards
            .iter()
            .map(|shard| MergedShard {
                index: shard.segment.index(),
                folder: shard.folder.display().to_string(),
                host: shard.results.manifest.host.clone(),
            })
            .collect(),
        problems,
    });
    if job.trials > 1 {
        results.configurations = trials::by_configuration(&runs, job.trials, plan.schedule.load_unit);
        results.trial_runs = runs;
    } else {
        results.configurations = runs;
    }
    results.partial = results.configurations.iter().any(|result| result.status != RunStatus::Complete);
    for problem in results.manifest.shards.iter().flat_map(|shards| &shards.problems) {
        eprintln!("plateau: {problem}");
    }
    eprintln!("plateau: merged {} of {count} shards into {}", shards.len(), out.display());
    super::conclude(results, &out, report_options, summary, history)
}

/// Every folder's shard, checked to belong to one run, in index order.
fn load_shards(folders: &[PathBuf]) -> Result<Vec<Shard>, MergeError> {
    let mut shards: Vec<Shard> = Vec::new();
    for folder in folders {
        let results = Results::load(&folder.join("results.json"))?;
        let name = folder.display().to_string();
        let Some(segment) = results.manifest.segment else { return Err(MergeError::NotAShard { folder: name }) };
        if let Some(first) = shards.first() {
            let (then, now) = (&first.results.manifest, &results.manifest);
            let first_name = first.folder.display().to_string();
            if segment.count() != first.segment.count() {
                return Err(MergeError::Count {
                    folder: name,
                    segment,
                    first: first_name,
                    first_segment: first.segment,
                });
            }
            let what = if now.job_sha256 != then.job_sha256 {
                Some("another job file")
            } else if now.overrides != then.overrides {
                Some("other --set or --only overrides")
            } else if now.seed != then.seed || results.job.trials != first.results.job.trials {
                Some("another seed or trial count")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(MergeError::Mismatch { folder: name, what, first: first_name });
            }
        }
        if let Some(other) = shards.iter().find(|shard| shard.segment == segment) {
            return Err(MergeError::Duplicate { folder: name, other: other.folder.display().to_string(), segment });
        }
        shards.push(Shard { folder: folder.clone(), segment, results });
    }
    shards.sort_by_key(|shard| shard.segment.index());
    Ok(shards)
}

/// The job the shards ran, as they ran it: read again from its file (its includes too), which must be unchanged.
fn job_of(results: &Results) -> Result<Job, MergeError> {
    let manifest = &results.manifest;
    let job = spec::load(Path::new(&manifest.job_file), &manifest.overrides)
        .map_err(|error| MergeError::Job(Box::new(error)))?;
    if job.source.sha256 != manifest.job_sha256 {
        return Err(MergeError::JobChanged {
            path: manifest.job_file.clone(),
            then: manifest.job_sha256[..12].to_string(),
            now: job.source.sha256[..12].to_string(),
        });
    }
    Ok(shard::for_shards(Job { trials: results.job.trials, ..job })?)
}

/// One test run's shards merged: its seconds up to the first that every shard covered, its steps over the fixed
/// ramp, analysed as a single run's.
fn merge_run(
    job: &Job,
    schedule: &Schedule,
    run: &TestRun,
    shards: &[Shard],
    out: &Path,
    problems: &mut Vec<String>,
) -> anyhow::Result<ConfigurationResult> {
    let label = run.label();
    let ramp_s = schedule.duration_s();
    let count = shards[0].segment.count();
    let all_there = shards.len() == count as usize;
    // The first second some shard did not cover: nothing from it on is the whole load's.
    let mut cut = if all_there { ramp_s } else { 0 };
    let mut parts: Vec<Vec<SeriesSecond>> = Vec::new();
    let mut results: Vec<(Segment, Option<&ConfigurationResult>)> = Vec::new();
    for shard in shards {
        let result = shard.result(run);
        let path = shard.folder.join(result.and_then(|result| result.series_file.clone()).unwrap_or(run.series_file()));
        let seconds = match series::read_series(&path) {
            Ok(seconds) => seconds,
            Err(SeriesError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(anyhow::Error::new(error).context(format!("shard {}", shard.segment))),
        };
        let covered = match result {
            // A run that ended early writes its last, unfinished second too.
            Some(result) if result.status != RunStatus::Complete => (seconds.len() as u64).saturating_sub(1),
            // Killed mid-run: every line is a whole second.
            Some(_) | None => seconds.len() as u64,
        };
        if result.is_none() {
            problems.push(match seconds.len() {
                0 => format!("shard {} never ran {label}", shard.segment),
                ran => {
                    format!("shard {} stopped during {label} after {ran} s, without writing its result", shard.segment)
                }
            });
        } else if let Some(result) = result.filter(|result| result.status != RunStatus::Complete) {
            let why = result.failure.as_deref().map(|failure| format!(": {failure}")).unwrap_or_default();
            problems.push(format!("shard {}: {label} is {:?}{why}", shard.segment, result.status).to_lowercase());
        }
        cut = cut.min(covered);
        parts.push(seconds);
        results.push((shard.segment, result));
    }
    if cut < ramp_s && all_there && results.iter().any(|(_, result)| !ended_by_max_invocations(*result)) {
        problems.push(format!(
            "{label}: the shards' seconds from {cut} s of {ramp_s} s are left out: not every shard ran them, so they \
             are not the whole load's"
        ));
    }
    let starts: Vec<(Segment, u64)> =
        results.iter().filter_map(|(segment, result)| Some((*segment, (*result)?.ramp_started_unix_ms?))).collect();
    if let (Some(first), Some(last)) =
        (starts.iter().min_by_key(|start| start.1), starts.iter().max_by_key(|start| start.1))
        && last.1 - first.1 > LATE_AFTER_MS
    {
        problems.push(format!(
            "{label}: shard {} started its ramp {:.1} s after shard {}, so their loads overlapped only in part; start \
             the shards together with `--start-at`",
            last.0,
            (last.1 - first.1) as f64 / 1000.0,
            first.0
        ));
    }

    let windows: Vec<_> = schedule.steps.iter().filter(|window| window.start_s < cut).cloned().collect();
    let precision = job.traffic_options.precision;
    // Each shard's generator judged on its own seconds: one shard behind is a step not sent as scheduled.
    let mut behind: Vec<bool> = vec![false; windows.len()];
    for (seconds, (segment, _)) in parts.iter().zip(&results) {
        let late: Vec<usize> = windows
            .iter()
            .enumerate()
            .filter(|(_, window)| window.end_s <= cut)
            .filter(|(_, window)| series::window_from_seconds(seconds, (*window).clone()).generator_saturated())
            .map(|(index, _)| index)
            .collect();
        for index in &late {
            behind[*index] = true;
        }
        if !late.is_empty() {
            let steps: Vec<String> = late.iter().map(|index| (index + 1).to_string()).collect();
            problems.push(format!(
                "{label}: shard {segment}'s load generator fell behind its schedule at step {}: those steps are not \
                 used; give the shards more CPU or run more of them",
                steps.join(", ")
            ));
        }
    }
    let parts =
        parts.into_iter().map(|seconds| seconds.into_iter().filter(|second| second.summary.second < cut).collect());
    let merged = series::merge_series(parts.collect());
    let series_file = run.series_file();
    write_series(&out.join(&series_file), &merged)?;
    let steps: Vec<StepRecord> = windows
        .into_iter()
        .zip(behind)
        .map(|(window, shard_fell_behind)| {
            let complete = window.end_s <= cut;
            let mut step = series::window_from_seconds(&merged, window);
            step.complete = complete;
            step.converged = drive::converged(precision, &step);
            step.shard_fell_behind = shard_fell_behind;
            step
        })
        .filter(|step| step.complete || step.steady_seconds() > 0)
        .collect();

    let shard_results: Vec<&ConfigurationResult> = results.iter().filter_map(|(_, result)| *result).collect();
    let facts = ConfigurationFacts {
        load_unit: schedule.load_unit,
        instance_count: run.configuration.instance_count,
        price_per_hour_usd: run.configuration.price_per_hour_usd,
        utilization_source: shard_results.iter().find_map(|result| result.metrics.as_ref()?.utilization_source.clone()),
    };
    let summaries: Vec<_> = merged.iter().map(|second| second.summary.clone()).collect();
    let sliding = configuration::sliding_window(job, schedule, &summaries, || Some(merged));
    let Analysed { mut analysis, .. } = configuration::analysed(job, &facts, steps, None, sliding.as_ref());
    let endpoint_metrics = shard_results.iter().find_map(|result| result.endpoint_metrics.clone());
    configuration::with_endpoint_utilization(&mut analysis, endpoint_metrics.as_ref());

    let error_details = error_details(&shard_results);
    let statuses: Vec<RunStatus> = shard_results.iter().map(|result| result.status).collect();
    let status = if !statuses.is_empty() && statuses.iter().all(|status| *status == RunStatus::Failed) {
        RunStatus::Failed
    } else if statuses.len() < count as usize || statuses.iter().any(|status| *status != RunStatus::Complete) {
        RunStatus::Partial
    } else {
        RunStatus::Complete
    };
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(segment, result)| Some(format!("shard {segment}: {}", (*result)?.failure.as_deref()?)))
        .collect();
    let (status, failure) = match status {
        RunStatus::Complete => {
            let address = address(&run.configuration.deployment);
            match configuration::target_failure(&analysis.steps, &error_details, &address, schedule.load_unit) {
                Some(failure) => (RunStatus::Failed, Some(failure)),
                None => (status, None),
            }
        }
        _ => (status, (!failures.is_empty()).then(|| failures.join("\n"))),
    };
    Ok(ConfigurationResult {
        status,
        end: shard_results
            .iter()
            .map(|result| result.end.clone())
            .find(|end| end.as_ref().is_some_and(|end| *end != EndReason::Completed))
            .unwrap_or(shard_results.first().and_then(|result| result.end.clone())),
        failure,
        ramp_started_unix_ms: starts.iter().map(|start| start.1).min(),
        elapsed_s: merged_elapsed(&summaries),
        steps: analysis.steps,
        boundary_steps: analysis.boundary_steps,
        seconds: summaries,
        series_file: Some(series_file),
        plateau: analysis.plateau,
        metrics: analysis.metrics,
        scalability: analysis.scalability,
        error_details,
        endpoint_metrics,
        endpoint: shard_results.iter().find_map(|result| result.endpoint.clone()),
        ..super::empty_result(run, schedule, status, None, None)
    })
}

fn merged_elapsed(seconds: &[crate::measure::series::SecondSummary]) -> u64 {
    seconds.last().map_or(0, |second| second.second + 1)
}

/// Whether a shard's result for a run ended at its share of `[stopping] max_invocations` (a natural end, not a
/// lost shard).
fn ended_by_max_invocations(result: Option<&ConfigurationResult>) -> bool {
    matches!(result.and_then(|result| result.end.as_ref()), Some(EndReason::MaxInvocations { .. }))
}

/// The shards' error details, one per error class and code (the first shard's example).
fn error_details(results: &[&ConfigurationResult]) -> Vec<ErrorDetail> {
    let mut by_kind: BTreeMap<String, ErrorDetail> = BTreeMap::new();
    for detail in results.iter().flat_map(|result| &result.error_details) {
        let key = format!("{}/{:?}", detail.class.name(), detail.code);
        by_kind.entry(key).and_modify(|kept| kept.count += detail.count).or_insert_with(|| detail.clone());
    }
    by_kind.into_values().collect()
}

/// Where a test run sent its requests, for the message of a target that failed them.
fn address(deployment: &Deployment) -> String {
    match deployment {
        Deployment::Http { url, .. } => url.clone(),
        Deployment::Sagemaker { source: EndpointSource::Existing { endpoint_name }, .. } => {
            format!("SageMaker endpoint {endpoint_name}")
        }
        Deployment::Sagemaker { source: EndpointSource::Provisioned { .. }, .. } => {
            "the SageMaker endpoint plateau provisioned".to_string()
        }
        Deployment::Reference { .. } | Deployment::ReferenceLlm { .. } | Deployment::Command { .. } => {
            "the target".to_string()
        }
    }
}

fn write_series(path: &Path, seconds: &[SeriesSecond]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut writer = BufWriter::new(file);
    for second in seconds {
        series::write_second(&mut writer, &second.summary, &second.tally)?;
    }
    Ok(())
}
