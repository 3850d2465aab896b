//! The results document (`results.json`): the source of every report and comparison. Versioned; every field is
//! plain data, and histograms are serialized (HDR V2 deflate, base64) so runs can be merged and re-analysed.

use serde::{Deserialize, Serialize};

use crate::analyze::{Plateau, Recommendation};
use crate::drive::{EndReason, SecondSummary};
use crate::measure::{ErrorCounts, LatencySummary};
use crate::spec::{Objective, Requirements, Stopping, TargetKind, Traffic};
use crate::target::reference::Realized;

pub const RESULTS_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub results_version: u32,
    /// True when the run was interrupted or a configuration could not finish: figures may be incomplete.
    pub partial: bool,
    pub manifest: Manifest,
    pub job: JobSummary,
    pub configurations: Vec<ConfigurationResult>,
    pub recommendation: Option<Recommendation>,
}

/// What is needed to reproduce the run and judge its numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub plateau_version: String,
    pub job_file: String,
    pub job_sha256: String,
    /// The job file as run. Secrets are never in it: headers name environment variables, not values.
    pub job_file_text: String,
    pub seed: u64,
    pub host: Host,
    pub started_at: String,
    pub ended_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub cpus: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    pub description: Option<String>,
    pub target_kind: TargetKind,
    pub traffic: Traffic,
    pub stopping: Stopping,
    pub requirements: Requirements,
    pub objective: Objective,
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
    pub instance_type: String,
    pub instance_count: u32,
    pub price_per_hour_usd: f64,
    pub status: RunStatus,
    pub end: Option<EndReason>,
    pub failure: Option<String>,
    /// Seconds the ramp ran, and what the full ramp would have taken.
    pub elapsed_s: u64,
    pub full_ramp_s: u64,
    pub steps: Vec<StepResult>,
    pub seconds: Vec<SecondSummary>,
    /// The per-second histograms, one JSON line a second, relative to the results file.
    pub series_file: Option<String>,
    pub plateau: Option<Plateau>,
    pub metrics: Option<Metrics>,
    /// For reference endpoints: what the simulated server actually did.
    pub reference: Option<Realized>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    pub users: f64,
    pub start_s: u64,
    pub end_s: u64,
    pub steady_seconds: u64,
    pub complete: bool,
    pub throughput_rps: f64,
    pub invocations_per_min: f64,
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    pub error_rate_percent: f64,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    /// The steady part's latency histogram in microseconds (HDR V2 deflate, base64).
    pub histogram: String,
}

/// The figures SageMaker Inference Recommender reports, at the plateau.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Requests per minute over the plateau window.
    pub max_invocations: f64,
    /// The highest load whose required percentile met `[requirements]`, per minute; absent without an SLO.
    pub max_invocations_at_slo: Option<f64>,
    /// ModelLatency over the plateau window.
    pub model_latency: LatencySummary,
    pub cost_per_hour_usd: f64,
    /// CostPerHour / (invocations per hour), on the SLO figure when there is an SLO; absent when nothing met it.
    pub cost_per_inference_usd: Option<f64>,
    pub cpu_utilization_percent: Option<f64>,
    pub memory_utilization_percent: Option<f64>,
    pub utilization_source: Option<String>,
    pub errors: ErrorCounts,
    pub error_rate_percent: f64,
    /// Coefficient of variation of per-second throughput in the plateau window: the figure's own noise.
    pub throughput_spread_percent: f64,
    pub users_at_plateau: f64,
}
