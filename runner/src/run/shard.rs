//! A run split across load generators (`plateau run --segment i/N`): what a job must be for its shards to add up
//! to one run, and when each shard starts each test run so that their loads coincide.
//!
//! Shards run a fixed ramp: every step runs its `step_duration`, no step runs on for precision and no ramp ends
//! early at a plateau. Those decisions need the whole load's evidence, which no shard has; a control service
//! shard 0 would serve to the others is a cluster protocol to build, run and secure, while a fixed ramp needs
//! nothing, and the merge judges every step on the merged data exactly as a single run would (docs/decisions.md,
//! "Sharded runs").

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::plan::TestRun;
use crate::spec::{Job, TargetKind, TargetSpec, Traffic};

use super::RunContext;
use super::progress::RunLine;

/// Between one test run's slot and the next when shards align on `--start-at`: time for a shard to write its
/// results and start the next run's target before the next slot begins.
pub(super) const SLOT_GAP_S: u64 = 2;

/// Why a job cannot be split into shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "a sharded run needs a target every shard sends to, and `{target}` is a `{kind:?}` target, which each shard \
         would start for itself (each measuring its own server at 1/N of the load); start the server once (for the \
         reference endpoint, `plateau serve-reference`) and point an `http` target at it"
    )]
    ServerPerShard { target: String, kind: TargetKind },
    #[error(
        "`{target}` provisions its endpoints, and each shard would create its own; provision once without shards, \
         or create the endpoints and name each with endpoint_name"
    )]
    EndpointPerShard { target: String },
    #[error(
        "search mode chooses each step from the steps before it, and a shard sees only its share of them; shards \
         run a fixed ramp: use `stairs` or `rate_steps` ([traffic] pattern)"
    )]
    Search,
    #[error(
        "[limits] max_parallel = {0}: shards run their test runs one after another, in step with each other; set \
         it to 1, or run more shards"
    )]
    Parallel(u32),
}

/// The job as a shard runs it: refused when its shards could not add up to one run; otherwise racing off (a
/// shard's partial figures would eliminate different configurations on different shards) and every step held to
/// its `step_duration` (shards must run the same steps).
pub fn for_shards(mut job: Job) -> Result<Job, ShardError> {
    for (index, target) in job.targets.iter().enumerate() {
        let name = || target.name.clone().unwrap_or_else(|| format!("target {}", index + 1));
        if let kind @ (TargetKind::Reference | TargetKind::Command) = target.kind() {
            return Err(ShardError::ServerPerShard { target: name(), kind });
        }
        if let TargetSpec::Sagemaker { provision: Some(_), .. } = target.spec {
            return Err(ShardError::EndpointPerShard { target: name() });
        }
    }
    if let Traffic::Search(_) = job.traffic {
        return Err(ShardError::Search);
    }
    if let Some(parallel) = job.limits.max_parallel.filter(|parallel| *parallel > 1) {
        return Err(ShardError::Parallel(parallel));
    }
    job.racing = false;
    if let (Some(precision), Some(step_s)) = (job.traffic_options.precision.as_mut(), job.traffic.step_duration_s()) {
        precision.max_step_duration_s = step_s;
    }
    Ok(job)
}

/// With `--start-at`, waits for this test run's slot: the shards' common start plus one full ramp and
/// `SLOT_GAP_S` per test run before it. A shard already past its slot starts at once (the merge names it as late).
pub(super) async fn wait_for_slot(
    context: &RunContext<'_>,
    run: &TestRun,
    cancel: &CancellationToken,
    line: &RunLine,
    label: &str,
) {
    let Some(start_at) = context.start_at else { return };
    let slot = start_at + Duration::from_secs(run.index as u64 * (context.schedule.duration_s() + SLOT_GAP_S));
    while let Ok(left) = slot.duration_since(SystemTime::now()) {
        line.set(format!("{label} · waiting for the shards' common start ({} s)", left.as_secs()));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
        }
    }
}
