//! `steps.csv`: every step of every test run, a row each (probe, measured and boundary steps alike), for
//! spreadsheets and notebooks. Units are in the column names; a figure plateau does not have is an empty cell.

use serde::Serialize;

use crate::analyze::StepResult;
use crate::results::Results;

use super::ReportError;

#[derive(Serialize)]
struct StepRow {
    configuration: String,
    trial: Option<u32>,
    role: &'static str,
    step: usize,
    load: f64,
    steady_seconds: u64,
    throughput_rps: f64,
    throughput_low_rps: Option<f64>,
    throughput_high_rps: Option<f64>,
    converged: bool,
    latency_mean_ms: f64,
    latency_p50_ms: f64,
    latency_p90_ms: f64,
    latency_p95_ms: f64,
    latency_p99_ms: f64,
    latency_p99_low_ms: Option<f64>,
    latency_p99_high_ms: Option<f64>,
    errors: u64,
    error_rate_percent: f64,
    dropped: u64,
    invalid: Option<String>,
    cpu_percent: Option<f64>,
    memory_percent: Option<f64>,
    generator_cpu_percent: Option<f64>,
}

impl StepRow {
    fn of(configuration: &str, trial: Option<u32>, role: &'static str, step: &StepResult) -> Self {
        let p99 = step.latency_intervals.map(|intervals| intervals.p99_ms);
        StepRow {
            configuration: cell(configuration),
            trial,
            role,
            step: step.index + 1,
            load: step.load,
            steady_seconds: step.steady_seconds,
            throughput_rps: step.throughput_rps,
            throughput_low_rps: step.throughput_interval_rps.map(|interval| interval.low),
            throughput_high_rps: step.throughput_interval_rps.map(|interval| interval.high),
            converged: step.converged,
            latency_mean_ms: step.latency.mean_ms,
            latency_p50_ms: step.latency.p50_ms,
            latency_p90_ms: step.latency.p90_ms,
            latency_p95_ms: step.latency.p95_ms,
            latency_p99_ms: step.latency.p99_ms,
            latency_p99_low_ms: p99.map(|interval| interval.low),
            latency_p99_high_ms: p99.map(|interval| interval.high),
            errors: step.errors.total(),
            error_rate_percent: step.error_rate_percent,
            dropped: step.dropped,
            invalid: step.invalid.as_ref().map(|invalid| cell(&invalid.describe())),
            cpu_percent: step.cpu_percent,
            memory_percent: step.memory_percent,
            generator_cpu_percent: step.generator_cpu_percent,
        }
    }
}

/// A text cell a spreadsheet will not run: a leading `=`, `+`, `-`, `@`, tab or carriage return makes it a
/// formula, so such a cell gets a leading apostrophe (OWASP's advice against CSV injection).
fn cell(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

/// The CSV of every test run's steps (each trial's own when the job ran trials), in the order they ran.
pub fn steps_csv(results: &Results) -> Result<Vec<u8>, ReportError> {
    let runs = if results.trial_runs.is_empty() { &results.configurations } else { &results.trial_runs };
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    for run in runs {
        let roles = [("probe", &run.probe_steps), ("measured", &run.steps), ("boundary", &run.boundary_steps)];
        for (role, steps) in roles {
            for step in steps {
                writer.serialize(StepRow::of(&run.name, run.trial, role, step))?;
            }
        }
    }
    writer.into_inner().map_err(|error| ReportError::Write { path: "steps.csv".into(), source: error.into_error() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_a_spreadsheet_would_run_is_defused() {
        assert_eq!(cell("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(cell("-1+2"), "'-1+2");
        assert_eq!(cell("medium"), "medium");
    }
}
