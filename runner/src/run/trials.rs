//! A configuration's trials made into one result: what `configurations` in the results holds when the job runs
//! each configuration more than once (`[job] trials`). The figures are `analyze::trials`'; this puts them, the
//! pooled steps and how the trials ended into the shape every report, comparison and recommendation reads.

use crate::analyze::scalability;
use crate::analyze::trials::{self, Trial};
use crate::aws::errors::ErrorDetail;
use crate::plan::LoadUnit;
use crate::results::{ConfigurationResult, RunStatus};
use crate::server::reference::Realized;

/// The test runs (in the order they ran) grouped by configuration, in the order configurations first ran, each
/// group combined.
pub(super) fn by_configuration(
    runs: &[ConfigurationResult],
    asked: u32,
    load_unit: LoadUnit,
) -> Vec<ConfigurationResult> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        if !names.contains(&run.name.as_str()) {
            names.push(&run.name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let group: Vec<&ConfigurationResult> = runs.iter().filter(|run| run.name == name).collect();
            combine(&group, asked, load_unit)
        })
        .collect()
}

fn combine(group: &[&ConfigurationResult], asked: u32, load_unit: LoadUnit) -> ConfigurationResult {
    let first = group[0];
    let all = |status: RunStatus| group.len() == asked as usize && group.iter().all(|run| run.status == status);
    let status = if all(RunStatus::Complete) {
        RunStatus::Complete
    } else if all(RunStatus::Failed) {
        RunStatus::Failed
    } else if all(RunStatus::Skipped) {
        RunStatus::Skipped
    } else {
        RunStatus::Partial
    };
    let failures: Vec<String> =
        group.iter().filter_map(|run| Some(format!("trial {}: {}", run.trial?, run.failure.as_deref()?))).collect();
    let measured: Vec<&ConfigurationResult> = group.iter().copied().filter(|run| run.metrics.is_some()).collect();
    let trial_figures: Vec<Trial<'_>> = measured
        .iter()
        .filter_map(|run| Some(Trial { number: run.trial?, metrics: run.metrics.as_ref()?, steps: &run.steps }))
        .collect();
    let combined = trials::combine(&trial_figures, asked);
    let steps = trials::pool_steps(&measured.iter().map(|run| run.steps.as_slice()).collect::<Vec<_>>());
    // The plateau shown is the trial's whose load the latencies were read at.
    let plateau = combined.as_ref().and_then(|(metrics, _)| {
        measured
            .iter()
            .find(|run| run.metrics.as_ref().is_some_and(|own| own.load_at_plateau == metrics.load_at_plateau))
            .and_then(|run| run.plateau.clone())
    });
    let valid: Vec<(f64, f64)> = steps
        .iter()
        .filter(|step| step.complete && step.invalid.is_none())
        .map(|step| (step.load, step.throughput_rps))
        .collect();
    let (metrics, summary) = combined.unzip();
    ConfigurationResult {
        trial: None,
        trials: summary,
        status,
        end: group.iter().find(|run| run.status != RunStatus::Complete).unwrap_or(&first).end.clone(),
        failure: (!failures.is_empty()).then(|| failures.join("\n")),
        elapsed_s: group.iter().map(|run| run.elapsed_s).sum(),
        full_ramp_s: first.full_ramp_s * u64::from(asked),
        steps,
        seconds: Vec::new(),
        eliminated: group.iter().find_map(|run| run.eliminated.clone()),
        // Each trial searched on its own; their probes and boundary steps are in `trial_runs`.
        probe_steps: Vec::new(),
        boundary_steps: Vec::new(),
        search: None,
        series_file: None,
        server_log: None,
        plateau,
        metrics,
        scalability: (load_unit == LoadUnit::Users).then(|| scalability::fit(&valid)).flatten(),
        reference: mean_realized(group),
        error_details: merged_details(group),
        cloudwatch: None,
        endpoint_metrics: None,
        endpoint_metrics_error: None,
        ..first.clone()
    }
}

/// What the reference endpoints did across the trials: requests added, rates and times averaged.
fn mean_realized(group: &[&ConfigurationResult]) -> Option<Realized> {
    let realized: Vec<&Realized> = group.iter().filter_map(|run| run.reference.as_ref()).collect();
    let mean =
        |figure: fn(&Realized) -> f64| realized.iter().map(|one| figure(one)).sum::<f64>() / realized.len() as f64;
    (!realized.is_empty()).then(|| Realized {
        served: realized.iter().map(|one| one.served).sum(),
        nominal_capacity_rps: mean(|one| one.nominal_capacity_rps),
        mean_service_ms: mean(|one| one.mean_service_ms),
        realized_capacity_rps: mean(|one| one.realized_capacity_rps),
        mean_timer_lateness_ms: mean(|one| one.mean_timer_lateness_ms),
    })
}

/// The trials' failure kinds, counted together; each keeps the first example seen.
fn merged_details(group: &[&ConfigurationResult]) -> Vec<ErrorDetail> {
    let mut merged: Vec<ErrorDetail> = Vec::new();
    for detail in group.iter().flat_map(|run| &run.error_details) {
        let same = |kept: &&mut ErrorDetail| {
            (kept.class, &kept.code, kept.model_status) == (detail.class, &detail.code, detail.model_status)
        };
        match merged.iter_mut().find(same) {
            Some(kept) => kept.count += detail.count,
            None => merged.push(detail.clone()),
        }
    }
    merged
}
