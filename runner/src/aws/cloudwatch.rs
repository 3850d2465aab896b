//! CloudWatch: plateau's client metrics published during a run (as Inference Recommender publishes its own, so
//! existing dashboards work), and a SageMaker endpoint's own metrics read back for the run's window.
//!
//! Publishing never stops or slows a benchmark: seconds go through a channel to a task that sends them in batches
//! (four metrics a second, 20 seconds a call), and a failed call is counted and reported, not retried forever.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, StandardUnit};
use aws_smithy_types::DateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::measure::LatencyHistogram;
use crate::spec::CloudWatchSpec;

/// CloudWatch takes at most 150 distinct values in one datum's Values/Counts.
const MAX_VALUES_PER_DATUM: usize = 150;
/// Seconds sent in one PutMetricData call (4 data each; the limit is 1000 data and 1 MB).
const SECONDS_PER_CALL: usize = 20;

/// One second of client measurements.
#[derive(Debug, Clone)]
pub struct ClientSecond {
    pub at: SystemTime,
    /// Requests sent, failed or not: Inference Recommender's ClientInvocations.
    pub invocations: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Virtual users, or the offered rate for the open model.
    pub users: f64,
    /// Latency values in milliseconds with their counts, at most 150 of them.
    pub latency_ms: Vec<(f64, f64)>,
}

impl ClientSecond {
    pub fn new(at: SystemTime, invocations: u64, errors: u64, users: f64, latency_us: &LatencyHistogram) -> Self {
        Self { at, invocations, errors, users, latency_ms: values_and_counts_ms(latency_us) }
    }
}

/// The histogram as CloudWatch Values/Counts in milliseconds: every recorded value, or, when there are more than
/// 150 distinct ones, neighbours merged (count-weighted mean) into 150 groups. Counts are kept exactly, so
/// CloudWatch's SampleCount and Sum stay right and its percentiles stay close.
pub fn values_and_counts_ms(histogram: &LatencyHistogram) -> Vec<(f64, f64)> {
    let recorded: Vec<(f64, u64)> = histogram
        .iter_recorded()
        .map(|bucket| {
            (histogram.median_equivalent(bucket.value_iterated_to()) as f64 / 1000.0, bucket.count_at_value())
        })
        .collect();
    if recorded.len() <= MAX_VALUES_PER_DATUM {
        return recorded.into_iter().map(|(value, count)| (value, count as f64)).collect();
    }
    let group_size = recorded.len().div_ceil(MAX_VALUES_PER_DATUM);
    recorded
        .chunks(group_size)
        .map(|group| {
            let count: u64 = group.iter().map(|(_, count)| count).sum();
            let weighted: f64 = group.iter().map(|(value, count)| value * *count as f64).sum();
            (weighted / count as f64, count as f64)
        })
        .collect()
}

/// GetMetricData failed; the SDK error in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EndpointMetricsError(String);

/// What publishing came to, reported with the configuration's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishSummary {
    pub namespace: String,
    pub calls: u64,
    pub failed_calls: u64,
    pub data_sent: u64,
    pub last_error: Option<String>,
}

/// A run's JobName as Inference Recommender names jobs (letters, digits and `-`, at most 63): the job's name, its
/// other characters as `-`, shortened to leave room for `-` and the run's id.
pub fn run_job_name(job_name: &str, run_id: &str) -> String {
    let mut name: String = job_name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let room = 63usize.saturating_sub(run_id.len() + 1);
    name.truncate(room);
    let name = name.trim_matches('-');
    if name.is_empty() { run_id.to_string() } else { format!("{name}-{run_id}") }
}

/// Sends seconds to CloudWatch from a task of its own.
pub struct Publisher {
    sender: mpsc::UnboundedSender<ClientSecond>,
    task: tokio::task::JoinHandle<PublishSummary>,
    namespace: String,
}

impl Publisher {
    /// Publishes under JobName `job_name` and `run_id` (`run_job_name`), EndpointName, and the job's name alone as
    /// `Job`, by which every run of a job can be found.
    pub fn start(client: Client, spec: &CloudWatchSpec, job_name: &str, run_id: &str, endpoint_name: &str) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let dimensions = vec![
            Dimension::builder().name("JobName").value(run_job_name(job_name, run_id)).build(),
            Dimension::builder().name("EndpointName").value(endpoint_name).build(),
            Dimension::builder().name("Job").value(job_name).build(),
        ];
        let task = tokio::spawn(publish(client, spec.namespace.clone(), dimensions, receiver));
        Self { sender, task, namespace: spec.namespace.clone() }
    }

    /// Queues a second; never waits.
    pub fn send(&self, second: ClientSecond) {
        let _ = self.sender.send(second);
    }

    /// Sends what is left and says how publishing went; when `give_up` comes first (the run was interrupted),
    /// what is left is dropped and the summary says so.
    pub async fn finish(self, give_up: impl std::future::Future<Output = ()>) -> PublishSummary {
        let Publisher { sender, mut task, namespace } = self;
        drop(sender);
        tokio::select! {
            finished = &mut task => finished.unwrap_or_else(|error| PublishSummary {
                namespace,
                last_error: Some(format!("the publishing task failed: {error}")),
                ..PublishSummary::default()
            }),
            () = give_up => {
                task.abort();
                PublishSummary {
                    namespace,
                    last_error: Some("abandoned: the run was interrupted before CloudWatch took the last data".into()),
                    ..PublishSummary::default()
                }
            }
        }
    }
}

async fn publish(
    client: Client,
    namespace: String,
    dimensions: Vec<Dimension>,
    mut receiver: mpsc::UnboundedReceiver<ClientSecond>,
) -> PublishSummary {
    let mut summary = PublishSummary { namespace: namespace.clone(), ..PublishSummary::default() };
    let mut batch = Vec::with_capacity(SECONDS_PER_CALL);
    loop {
        let next = receiver.recv().await;
        let closed = next.is_none();
        batch.extend(next);
        if batch.len() >= SECONDS_PER_CALL || (closed && !batch.is_empty()) {
            let data: Vec<MetricDatum> = batch.drain(..).flat_map(|second| data_for(&second, &dimensions)).collect();
            let count = data.len() as u64;
            summary.calls += 1;
            match client.put_metric_data().namespace(&namespace).set_metric_data(Some(data)).send().await {
                Ok(_) => summary.data_sent += count,
                Err(error) => {
                    summary.failed_calls += 1;
                    summary.last_error = Some(super::errors::describe_sdk_error(&error));
                }
            }
        }
        if closed {
            return summary;
        }
    }
}

fn data_for(second: &ClientSecond, dimensions: &[Dimension]) -> Vec<MetricDatum> {
    let at = DateTime::from(second.at);
    let datum = |name: &str, unit: StandardUnit| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.to_vec()))
            .timestamp(at)
            .unit(unit)
            .storage_resolution(1)
    };
    let mut data = vec![
        datum("ClientInvocations", StandardUnit::Count).value(second.invocations as f64).build(),
        datum("ClientInvocationErrors", StandardUnit::Count).value(second.errors as f64).build(),
        datum("NumberOfUsers", StandardUnit::Count).value(second.users).build(),
    ];
    if !second.latency_ms.is_empty() {
        let (values, counts): (Vec<f64>, Vec<f64>) = second.latency_ms.iter().copied().unzip();
        data.push(
            datum("ClientLatency", StandardUnit::Milliseconds)
                .set_values(Some(values))
                .set_counts(Some(counts))
                .build(),
        );
    }
    data
}

/// A SageMaker endpoint's own view of the run, from CloudWatch: what the server measured, beside what plateau did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointMetrics {
    /// RFC 3339, UTC: the window asked for (whole minutes around the measured window).
    pub window_start: String,
    pub window_end: String,
    /// What the window is: the plateau's step, or the whole run when there was no plateau.
    #[serde(default)]
    pub window_of: String,
    /// The inference component whose own metrics these are, rather than the endpoint's variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_component: Option<String>,
    pub invocations: Option<f64>,
    /// Mean over the window, converted from CloudWatch's microseconds.
    pub model_latency_ms: Option<f64>,
    pub overhead_latency_ms: Option<f64>,
    pub invocation_4xx_errors: Option<f64>,
    pub invocation_5xx_errors: Option<f64>,
    /// Percent of the instance's CPU, normalised by its vCPUs where the price table knows them (SageMaker reports
    /// up to 100 per core); an inference component's is normalised by SageMaker.
    pub cpu_utilization: Option<f64>,
    pub memory_utilization: Option<f64>,
    /// Percent of the instance's GPUs, normalised by their number where the price table knows it (SageMaker
    /// reports up to 100 per GPU).
    pub gpu_utilization: Option<f64>,
    pub gpu_memory_utilization: Option<f64>,
}

/// Which metrics to read, and for what: an endpoint's variant, or an inference component on it.
pub struct EndpointQuery<'a> {
    pub endpoint_name: &'a str,
    pub variant_name: &'a str,
    pub inference_component: Option<&'a str>,
    /// The measured window, and what it is.
    pub window: (SystemTime, SystemTime),
    pub window_of: String,
    pub vcpus: Option<u32>,
    pub gpus: Option<u32>,
}

/// (namespace, metric, statistic, scale): each metric read back, and what turns it into the unit reported. The
/// last four are utilisations: per core or per GPU, as `normalise` says.
const ENDPOINT_METRICS: [(&str, &str, &str, f64); 9] = [
    ("AWS/SageMaker", "Invocations", "Sum", 1.0),
    ("AWS/SageMaker", "ModelLatency", "Average", 0.001),
    ("AWS/SageMaker", "OverheadLatency", "Average", 0.001),
    ("AWS/SageMaker", "Invocation4XXErrors", "Sum", 1.0),
    ("AWS/SageMaker", "Invocation5XXErrors", "Sum", 1.0),
    ("/aws/sagemaker/Endpoints", "CPUUtilization", "Average", 1.0),
    ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", 1.0),
    ("/aws/sagemaker/Endpoints", "GPUUtilization", "Average", 1.0),
    ("/aws/sagemaker/Endpoints", "GPUMemoryUtilization", "Average", 1.0),
];

/// An inference component's utilisations: SageMaker publishes them already normalised, in a namespace of their own.
const COMPONENT_UTILIZATION: [(&str, &str); 4] = [
    ("/aws/sagemaker/InferenceComponents", "CPUUtilizationNormalized"),
    ("/aws/sagemaker/InferenceComponents", "MemoryUtilizationNormalized"),
    ("/aws/sagemaker/InferenceComponents", "GPUUtilizationNormalized"),
    ("/aws/sagemaker/InferenceComponents", "GPUMemoryUtilizationNormalized"),
];

/// Reads the endpoint's (or inference component's) metrics for the query's window, widened to whole minutes (the
/// endpoint publishes per minute). Sums add up over the window; averages are weighted equally per minute.
pub async fn endpoint_metrics(
    client: &Client,
    query: &EndpointQuery<'_>,
) -> Result<EndpointMetrics, EndpointMetricsError> {
    let minute = |time: SystemTime, up: bool| {
        let seconds = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let floor = seconds - seconds % 60;
        SystemTime::UNIX_EPOCH + Duration::from_secs(if up && floor < seconds { floor + 60 } else { floor })
    };
    let (started, ended) = query.window;
    let (window_start, window_end) =
        (minute(started, false), minute(ended, true).max(minute(started, false) + Duration::from_secs(60)));
    let dimensions = match query.inference_component {
        Some(component) => vec![Dimension::builder().name("InferenceComponentName").value(component).build()],
        None => vec![
            Dimension::builder().name("EndpointName").value(query.endpoint_name).build(),
            Dimension::builder().name("VariantName").value(query.variant_name).build(),
        ],
    };
    let queries: Vec<MetricDataQuery> = ENDPOINT_METRICS
        .iter()
        .enumerate()
        .map(|(index, (namespace, name, statistic, _))| {
            // An inference component's utilisations are its own metrics, in their own namespace.
            let (namespace, name) = match (query.inference_component, index.checked_sub(5)) {
                (Some(_), Some(utilization)) => COMPONENT_UTILIZATION[utilization],
                _ => (*namespace, *name),
            };
            let metric = Metric::builder()
                .namespace(namespace)
                .metric_name(name)
                .set_dimensions(Some(dimensions.clone()))
                .build();
            MetricDataQuery::builder()
                .id(format!("m{index}"))
                .metric_stat(MetricStat::builder().metric(metric).period(60).stat(*statistic).build())
                .return_data(true)
                .build()
        })
        .collect();
    let output = client
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(DateTime::from(window_start))
        .end_time(DateTime::from(window_end))
        .send()
        .await
        .map_err(|error| EndpointMetricsError(super::errors::describe_sdk_error(&error)))?;
    let mut values: [Option<f64>; 9] = [None; 9];
    for result in output.metric_data_results() {
        let Some(index) = result.id().and_then(|id| id.strip_prefix('m')).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        let Some((_, _, statistic, scale)) = ENDPOINT_METRICS.get(index) else { continue };
        let points = result.values();
        if points.is_empty() {
            continue;
        }
        let combined = if *statistic == "Sum" {
            points.iter().sum::<f64>()
        } else {
            points.iter().sum::<f64>() / points.len() as f64
        };
        values[index] = Some(combined * scale);
    }
    // SageMaker's instance utilisations run to 100 per core and per GPU; a component's are normalised already.
    let per = |value: Option<f64>, count: Option<u32>| match query.inference_component {
        Some(_) => value,
        None => value.map(|percent| percent / f64::from(count.unwrap_or(1).max(1))),
    };
    Ok(EndpointMetrics {
        window_start: humantime::format_rfc3339_seconds(window_start).to_string(),
        window_end: humantime::format_rfc3339_seconds(window_end).to_string(),
        window_of: query.window_of.clone(),
        inference_component: query.inference_component.map(str::to_string),
        invocations: values[0],
        model_latency_ms: values[1],
        overhead_latency_ms: values[2],
        invocation_4xx_errors: values[3],
        invocation_5xx_errors: values[4],
        cpu_utilization: per(values[5], query.vcpus),
        memory_utilization: values[6],
        gpu_utilization: per(values[7], query.gpus),
        gpu_memory_utilization: per(values[8], query.gpus),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_job_name_is_the_jobs_and_its_id_as_inference_recommender_allows() {
        assert_eq!(run_job_name("llm chat/v2", "20261204T062245Z-3f9a"), "llm-chat-v2-20261204T062245Z-3f9a");
        let long = run_job_name(&"a".repeat(80), "20261204T062245Z-3f9a");
        assert_eq!((long.len(), long.ends_with("-20261204T062245Z-3f9a")), (63, true));
        assert_eq!(run_job_name("__", "r-1"), "r-1");
    }

    #[test]
    fn values_and_counts_keep_every_count_and_at_most_150_values() {
        let mut histogram = crate::measure::new_histogram();
        for latency_us in 1..=5000u64 {
            histogram.record(latency_us * 37).unwrap();
        }
        let pairs = values_and_counts_ms(&histogram);
        assert!(pairs.len() <= MAX_VALUES_PER_DATUM, "{}", pairs.len());
        assert_eq!(pairs.iter().map(|(_, count)| count).sum::<f64>(), 5000.0);
        let mean_ms = pairs.iter().map(|(value, count)| value * count).sum::<f64>() / 5000.0;
        let exact_mean_ms = 37.0 * 2500.5 / 1000.0;
        assert!((mean_ms - exact_mean_ms).abs() / exact_mean_ms < 0.002, "{mean_ms} vs {exact_mean_ms}");

        let mut few = crate::measure::new_histogram();
        few.record_n(1500, 3).unwrap();
        few.record(2000).unwrap();
        assert_eq!(values_and_counts_ms(&few), vec![(1.5, 3.0), (2.0, 1.0)]);
    }
}
