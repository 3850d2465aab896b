//! The results document (`results.json`): the source of every report and comparison. Versioned; every field is
//! plain data, and histograms are serialized (HDR V2 deflate, base64) so runs can be merged and re-analysed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analyze::scalability::ScalabilityFit;
use crate::analyze::search::SearchSummary;
use crate::analyze::trials::TrialsSummary;
use crate::analyze::{Metrics, Plateau, StepResult};
use crate::drive::EndReason;
use crate::measure::series::SecondSummary;
use crate::plan::LoadUnit;
use crate::server::reference::Realized;
use crate::spec::{Objective, PlateauSettings, Requirements, Stopping, TargetKind, Traffic, TrafficOptions};

pub const RESULTS_VERSION: u32 = 1;

/// Why a results file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a plateau results file: {source}", path.display())]
    NotResults { path: PathBuf, source: serde_json::Error },
    #[error(
        "{} has results_version {found}, and this plateau reads {RESULTS_VERSION}: {}",
        path.display(),
        if *found > RESULTS_VERSION { "it was written by a newer plateau; upgrade this one" } else { "it is not a results version plateau ever wrote" }
    )]
    Version { path: PathBuf, found: u32 },
}

/// Only the version, read before the rest: a newer file's fields may mean something else.
#[derive(Deserialize)]
struct Versioned {
    results_version: u32,
}

impl Results {
    /// Reads a results file, checking its version before its contents.
    pub fn load(path: &Path) -> Result<Results, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        Self::from_json(path, &text)
    }

    /// Reads a results document's text, checking its version before its contents; `path` names it in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Results, LoadError> {
        let not_results = |source| LoadError::NotResults { path: path.into(), source };
        let Versioned { results_version } = serde_json::from_str(text).map_err(not_results)?;
        if results_version != RESULTS_VERSION {
            return Err(LoadError::Version { path: path.into(), found: results_version });
        }
        serde_json::from_str(text).map_err(not_results)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The format version of this document; bumped when a field changes meaning or is removed.
    pub results_version: u32,
    /// True when the run was interrupted or a configuration could not finish: figures may be incomplete.
    pub partial: bool,
    pub manifest: Manifest,
    /// The job as validated: what was asked for.
    pub job: JobSummary,
    /// One entry per configuration, in run order, including those that failed or were skipped. With `[job] trials`
    /// above 1, each combines the configuration's trials (see `trials` in it, and `trial_runs`).
    pub configurations: Vec<ConfigurationResult>,
    /// With `[job] trials` above 1: every test run, in the order they ran (trial-major), each with its `trial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trial_runs: Vec<ConfigurationResult>,
    /// Absent only while the run is in progress (results are saved after every configuration).
    pub recommendation: Option<Recommendation>,
}

/// Which SageMaker endpoint a configuration's figures are of, as Inference Recommender's results name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointIdentity {
    pub name: String,
    /// The job file's, or the one the AWS SDK resolved (environment, profile); absent when neither named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `target_variant`; absent when SageMaker picks one by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_component: Option<String>,
}

impl std::fmt::Display for EndpointIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(region) = &self.region {
            write!(f, " in {region}")?;
        }
        if let Some(variant) = &self.variant {
            write!(f, ", variant {variant}")?;
        }
        if let Some(component) = &self.inference_component {
            write!(f, ", component {component}")?;
        }
        Ok(())
    }
}

/// What is needed to reproduce the run and judge its numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub plateau_version: String,
    /// The job file's path as given on the command line.
    pub job_file: String,
    /// SHA-256 of the job file's bytes, to tell whether two results ran the same job.
    pub job_sha256: String,
    /// The job file as run (with its includes and `--set` overrides). Secrets are never in it: headers name
    /// environment variables, not values.
    pub job_file_text: String,
    /// What the command line changed: `--set` overrides and `--only` selections, applied again on `--resume`.
    #[serde(default, skip_serializing_if = "crate::spec::Overrides::is_empty")]
    pub overrides: crate::spec::Overrides,
    /// `[job] seed`: seeds every random choice (reference service times), so a job replays the same way.
    pub seed: u64,
    /// The machine that generated the load.
    pub host: Host,
    /// This run's name for the world outside: when it started (UTC) and four random hex digits, e.g.
    /// `20261204T062245Z-3f9a`, or `PLATEAU_RUN_ID` (shards given the same one are one run). CloudWatch's JobName
    /// is the job's name and this, so every run is a series of its own, as every Inference Recommender job is.
    #[serde(default)]
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: String,
    /// The payload plugin that generated the requests, if one did: which bytes, so a result names its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_plugin: Option<PluginIdentity>,
    /// The commit the job file was run from (its repository's, or the CI system's), when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<crate::git::Revision>,
    /// When the run was interrupted and then resumed (`plateau run --resume`): when, and the test runs kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
    /// Why the run stopped before its end: interrupted, or its budget (`[limits] max_cost_usd`) reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// A shard's own results (`plateau run --segment i/N`): its share of the load only, for `plateau merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<crate::plan::Segment>,
    /// Results merged from shards (`plateau merge`): how many ran, and what went wrong with any of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Shards>,
}

/// The shards a merged result was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shards {
    /// The count the job was split into (`--segment i/N`'s N).
    pub count: u32,
    /// The shards whose results were merged, by index, with the folder each came from.
    pub merged: Vec<MergedShard>,
    /// A shard missing, failed, stopped early, lagging its schedule or starting late: what and where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedShard {
    pub index: u32,
    pub folder: String,
    /// The machine that ran it.
    pub host: Host,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resumed {
    /// RFC 3339, UTC.
    pub at: String,
    /// The test runs the interrupted run had completed, kept as they were: `medium`, `medium (trial 2)`.
    pub kept: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginIdentity {
    /// As the job file names it.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// `component`, or `core-module` when plateau wrapped a core module into a component.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// CPUs available to plateau.
    pub cpus: usize,
    /// Physical memory (from /proc/meminfo), absent where unknown.
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    pub description: Option<String>,
    /// The kind of every target; absent when the job's targets are of several kinds (see each configuration's).
    #[serde(default)]
    pub target_kind: Option<TargetKind>,
    /// The traffic pattern, durations in seconds.
    pub traffic: Traffic,
    /// Warm-up, arrivals and in-flight cap.
    #[serde(default)]
    pub traffic_options: TrafficOptions,
    /// What step loads count: virtual users or offered requests per second.
    #[serde(default)]
    pub load_unit: LoadUnit,
    /// `[stopping]`: what could end a ramp early.
    pub stopping: Stopping,
    /// `[requirements]`: what the recommendation judged against.
    pub requirements: Requirements,
    /// The objective configurations were ranked by.
    pub objective: Objective,
    /// The plateau detector's parameters.
    #[serde(default)]
    pub plateau: PlateauSettings,
    /// Runs of each configuration (`[job] trials`, or `--trials`).
    #[serde(default = "one")]
    pub trials: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Complete,
    Partial,
    Failed,
    /// Not run, because the run was interrupted first.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigurationResult {
    pub name: String,
    /// In `trial_runs`: which of the configuration's trials this run was, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    /// In `configurations`, with trials: each figure's mean, interval and spread across the trials. The steps
    /// are then the trials' steps pooled, and `metrics` hold the means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<TrialsSummary>,
    /// The `[targets.<name>]` this configuration ran against, when the job has named targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Absent in results written before jobs could mix target kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<TargetKind>,
    pub instance_type: String,
    pub instance_count: u32,
    /// Price of one instance.
    pub price_per_hour_usd: f64,
    /// "job file", or the price table it came from (tables are estimates, and say their date).
    #[serde(default)]
    pub price_source: String,
    /// The environment variables this run set (command targets and provisioned endpoints): IR's EnvironmentParameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// The SageMaker endpoint this configuration ran against: its name, region and variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointIdentity>,
    /// A serverless endpoint's memory and concurrency, as the job file gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serverless: Option<crate::spec::Serverless>,
    /// `complete`, `partial` (interrupted or target gone), `failed` (could not run) or `skipped`.
    pub status: RunStatus,
    /// Why the ramp ended: `completed`, `stopped` (with the reason), `max_invocations`, `interrupted`,
    /// `target_unreachable`.
    pub end: Option<EndReason>,
    /// What went wrong, for failed and partial configurations.
    pub failure: Option<String>,
    /// When the ramp started (Unix time, milliseconds): shards of one run are compared by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_started_unix_ms: Option<u64>,
    /// Seconds the ramp ran, and what the full ramp would have taken.
    pub elapsed_s: u64,
    pub full_ramp_s: u64,
    /// Every step that ran, the last one marked incomplete if the ramp ended inside it. In search mode, the measured
    /// steps only.
    pub steps: Vec<StepResult>,
    /// Racing stopped this configuration (or skipped its later trials) because it could not win: why. Its figures
    /// are then from the steps it ran, and it is not ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eliminated: Option<String>,
    /// Search mode: the probe's short steps, which placed the measured ones and feed no figure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_steps: Vec<StepResult>,
    /// Search mode: the steps that bisected the latency goal's boundary; they feed only the figure at the goal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundary_steps: Vec<StepResult>,
    /// Search mode: the probe's bracket and knee estimate, and how often the measured steps doubled past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSummary>,
    /// One entry per second of the run: users, requests started and completed, errors, p50/p99, resources.
    pub seconds: Vec<SecondSummary>,
    /// The per-second histograms, one JSON line a second, relative to the results file.
    pub series_file: Option<String>,
    /// The server's stdout and stderr (command targets), relative to the results file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_log: Option<String>,
    /// Where throughput stopped growing: the step (index among complete steps), the rule that fired, and
    /// whether a further step confirmed it.
    pub plateau: Option<Plateau>,
    /// The IR metrics at the plateau; absent when no step completed.
    pub metrics: Option<Metrics>,
    /// The Universal Scalability Law fitted to the complete steps' (users, throughput) points.
    pub scalability: Option<ScalabilityFit>,
    /// For reference endpoints: what the simulated server actually did.
    pub reference: Option<Realized>,
    /// Failures by the service's error code (and a model's own status), each with one example message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_details: Vec<crate::aws::errors::ErrorDetail>,
    /// How publishing client metrics to CloudWatch went, when `[cloudwatch] publish` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<crate::aws::cloudwatch::PublishSummary>,
    /// SageMaker targets: the endpoint's own metrics from CloudWatch for the run's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_metrics: Option<crate::aws::cloudwatch::EndpointMetrics>,
    /// Why the endpoint's metrics could not be read, when the job asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_metrics_error: Option<String>,
}

impl ConfigurationResult {
    /// Its name, with its trial in `trial_runs`: `medium (trial 2)`.
    pub fn label(&self) -> String {
        match self.trial {
            Some(trial) => format!("{} (trial {trial})", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    pub objective: Objective,
    /// The recommended configuration, absent when none meets the requirements.
    pub configuration: Option<String>,
    pub initial_instance_count: Option<u32>,
    /// The recommended run's environment variables (EnvironmentParameters), for command targets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub environment: std::collections::BTreeMap<String, String>,
    pub reason: String,
    /// Whether the recommendation is established by the figures' intervals.
    #[serde(default)]
    pub confidence: Confidence,
    pub ranking: Vec<Verdict>,
}

/// How far the figures establish the recommendation (exit code 5 when they do not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Confidence {
    /// The best candidate's figures are conclusive and its margin over the runner-up excludes zero.
    Established { margin_percent: f64, margin_half_width_percent: f64 },
    /// One configuration met the requirements (or none did): nothing to be uncertain between.
    #[default]
    OnlyCandidate,
    /// The best candidate, or its margin over the runner-up, is not established; the reason says what to change.
    Inconclusive { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub configuration: String,
    /// 1 for the best; absent for configurations that do not meet the requirements.
    pub rank: Option<usize>,
    pub meets_requirements: bool,
    /// The figure ranked on, in the objective's unit (USD per inference, requests per minute, or ms).
    pub objective_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_interval: Option<crate::measure::precision::Interval>,
    /// The figure is a bound: the configuration's plateau was not confirmed.
    #[serde(default)]
    pub inconclusive: bool,
    /// Within measurement noise of the recommended configuration.
    pub near_tie: bool,
    pub verdict: String,
}
