//! One test run: its server started, its target driven through the schedule, its steps analysed, and its result
//! made, whatever happened (a server that would not start or crashed, a target that went away, Ctrl-C).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::analyze::{self, ConfigurationFacts, OnlineDetector};
use crate::aws::AwsClients;
use crate::aws::cloudwatch::Publisher;
use crate::drive::{self, DriveOptions};
use crate::measure::ResourceSource;
use crate::measure::series;
use crate::payload::PayloadSource;
use crate::plan::{Schedule, TestRun};
use crate::report;
use crate::results::{ConfigurationResult, RunStatus};
use crate::server::{self, Server};
use crate::spec::{Job, Traffic};
use crate::target::Target;
use crate::target::http::HttpTarget;
use crate::target::sagemaker::SageMakerTarget;

use super::progress::{Progress, RunObserver};
use super::{empty_result, failed, log_file, server_log};

pub(super) async fn run_configuration(
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
    let on_wait =
        |waited: Duration| line.set(format!("{label} · waiting for the server to be ready ({}s)", waited.as_secs()));
    let (server, url) = match Server::start(job, run, &out.join(log_file(run)), on_wait).await {
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
            let read = crate::aws::cloudwatch::endpoint_metrics(
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
    let leftover = server::stop(&server, job, run).await;
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
                .and_then(|window| series::window_from_series(&out.join(&series_file), window).ok())
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
