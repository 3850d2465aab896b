//! SageMaker and CloudWatch through the AWS SDK, against moto's server mode (a real implementation of the AWS APIs,
//! started here on 127.0.0.1 from the virtual environment tests/run.sh creates), with dummy credentials and the
//! instance-metadata lookup off. Where moto lacks an API, another real means covers it, and the test says so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use serde_json::Value;

mod common;
use common::{Moto, text};

/// Load-generating tests run one at a time.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `plateau` with dummy credentials and nothing from this machine's AWS set-up.
fn plateau(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plateau"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AWS_")) {
        command.env_remove(name);
    }
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-never-printed");
    command
}

/// The SDK's configuration for moto at `url`, as the tests' own clients use it.
async fn moto_config(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new("testing", "testing", None, None, "static"))
        .load()
        .await
}

async fn cloudwatch(url: &str) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&moto_config(url).await)
}

fn sagemaker_job(folder: &Path, endpoint_url: &str, extra: &str) -> PathBuf {
    let job = folder.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "sagemaker-moto"
[target]
kind = "sagemaker"
region = "us-east-1"
endpoint_url = "{endpoint_url}"
timeout = "5s"
[payload]
content_type = "application/json"
body = '{{"inputs": [[1.0, 2.0, 3.0]]}}'
[traffic]
# Steps of exactly their duration: these tests are about AWS calls, not precision.
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 2
step_duration = "3s"
steps = 2
{extra}
[[configurations]]
name = "m5-large"
instance_type = "ml.m5.large"
endpoint_name = "plateau-m5-large"
"#
        ),
    )
    .unwrap();
    job
}

/// Waits, if less than 25 s of the current minute are left, for the next: a short run started now ends in the
/// minute its endpoint metrics are put in.
async fn start_of_a_minute() {
    let into_minute_s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() % 60;
    if into_minute_s > 35 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute_s)).await;
    }
}

/// Puts `metrics` (namespace, name, value) at this moment with `dimensions`, as SageMaker would publish them.
async fn put_now(client: &aws_sdk_cloudwatch::Client, dimensions: &[Dimension], metrics: &[(&str, &str, f64)]) {
    for (namespace, name, value) in metrics {
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(*name)
            .set_dimensions(Some(dimensions.to_vec()))
            .timestamp(aws_smithy_types::DateTime::from(SystemTime::now()))
            .value(*value)
            .build();
        client.put_metric_data().namespace(*namespace).metric_data(datum).send().await.unwrap();
    }
}

/// A run's series in the tests' namespace: the job, the run's JobName, the endpoint, and when to read from.
struct Published {
    job: &'static str,
    job_name: String,
    endpoint: &'static str,
    since: SystemTime,
}

/// `statistic` of metric `name` in `series`, hour by hour, as CloudWatch returns it.
async fn published(
    client: aws_sdk_cloudwatch::Client,
    series: Published,
    name: &'static str,
    statistic: Statistic,
) -> Vec<aws_sdk_cloudwatch::types::Datapoint> {
    let dimensions = vec![
        Dimension::builder().name("JobName").value(series.job_name).build(),
        Dimension::builder().name("EndpointName").value(series.endpoint).build(),
        Dimension::builder().name("Job").value(series.job).build(),
    ];
    let output = client
        .get_metric_statistics()
        .namespace("plateau/tests")
        .metric_name(name)
        .set_dimensions(Some(dimensions))
        .start_time(aws_smithy_types::DateTime::from(series.since))
        .end_time(aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(120)))
        .period(3600)
        .statistics(statistic)
        .send()
        .await
        .unwrap();
    output.datapoints().to_vec()
}

fn read_results(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// moto, with InvokeEndpoint answering from its configurable queue of results.
async fn moto_with_an_endpoint() -> Moto {
    let moto = Moto::start();
    let configured = reqwest::Client::new()
        .post(format!("{}/moto-api/static/sagemaker/endpoint-results", moto.url))
        .body(r#"{"results": [{"Body": "{\"predictions\": [0.5]}", "ContentType": "application/json"}]}"#)
        .send()
        .await
        .unwrap();
    assert!(configured.status().is_success());
    moto
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_against_a_sagemaker_endpoint_publishes_to_and_reads_from_cloudwatch() {
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;

    // The endpoint's own metrics, as SageMaker would publish them: ModelLatency in microseconds, CPUUtilization
    // as a sum over cores and GPUUtilization over GPUs (the job's instance type is an ml.g5.12xlarge, 48 vCPUs and 4
    // GPUs). plateau reads the minutes of its plateau's step: the data and the whole run (under 20 s) fall in one
    // minute.
    start_of_a_minute().await;
    let client = cloudwatch(&moto.url).await;
    let endpoint = [
        Dimension::builder().name("EndpointName").value("plateau-m5-large").build(),
        Dimension::builder().name("VariantName").value("AllTraffic").build(),
    ];
    let metrics = [
        ("AWS/SageMaker", "ModelLatency", 1500.0),
        ("AWS/SageMaker", "OverheadLatency", 400.0),
        ("AWS/SageMaker", "Invocations", 250.0),
        ("/aws/sagemaker/Endpoints", "CPUUtilization", 150.0),
        ("/aws/sagemaker/Endpoints", "MemoryUtilization", 40.0),
        ("/aws/sagemaker/Endpoints", "GPUUtilization", 300.0),
    ];
    put_now(&client, &endpoint, &metrics).await;

    let folder = tempfile::tempdir().unwrap();
    let job = sagemaker_job(
        folder.path(),
        &moto.url,
        &format!(
            "[cloudwatch]\npublish = true\nnamespace = \"plateau/tests\"\nendpoint_url = \"{}\"\nmetrics_delay = \"0s\"\n",
            moto.url
        ),
    );
    let gpu_job = std::fs::read_to_string(&job).unwrap().replace("\"ml.m5.large\"", "\"ml.g5.12xlarge\"");
    std::fs::write(&job, gpu_job).unwrap();
    let out = folder.path().join("out");
    let started = SystemTime::now() - Duration::from_secs(120);
    let output =
        plateau(folder.path()).args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!text(&output).contains("testing-secret-never-printed"));

    let results = read_results(&out);
    let configuration = &results["configurations"][0];
    assert_eq!(configuration["status"], "complete", "{configuration}");
    let seconds = configuration["seconds"].as_array().unwrap();
    let completed: u64 = seconds.iter().map(|second| second["completed"].as_u64().unwrap()).sum();
    let sent: u64 = seconds.iter().map(|second| second["started"].as_u64().unwrap()).sum();
    let errors: u64 = seconds.iter().map(|second| second["errors"].as_u64().unwrap()).sum();
    assert!(completed > 100, "only {completed} invocations against moto");
    assert_eq!(errors, 0);
    assert!(configuration["metrics"]["max_invocations"].as_f64().unwrap() > 0.0);

    // Read back from the endpoint's metrics for the plateau's step: microseconds to milliseconds, CPU normalised by
    // the 48 vCPUs, GPU by the 4 GPUs.
    let endpoint_metrics = &configuration["endpoint_metrics"];
    let window_of = match configuration["plateau"]["step"].as_u64() {
        Some(step) => format!("the plateau (step {})", step + 1),
        None => "the whole run (no plateau)".to_string(),
    };
    assert_eq!(endpoint_metrics["window_of"], window_of.as_str());
    assert_eq!(endpoint_metrics["model_latency_ms"], 1.5);
    assert_eq!(endpoint_metrics["overhead_latency_ms"], 0.4);
    assert_eq!(endpoint_metrics["invocations"], 250.0);
    assert_eq!(endpoint_metrics["cpu_utilization"], 3.125);
    assert_eq!(endpoint_metrics["gpu_utilization"], 75.0);
    assert_eq!(configuration["metrics"]["cpu_utilization_percent"], 3.125);
    assert_eq!(configuration["metrics"]["memory_utilization_percent"], 40.0);

    // What plateau published, read back: one ClientInvocations datum per second, summing to the requests sent (as
    // Inference Recommender counts them), and one latency sample per invocation; in a handful of calls, not one
    // per second. The JobName is the job's and the run's id, so each run is a series of its own.
    let summary = &configuration["cloudwatch"];
    assert_eq!(summary["failed_calls"], 0, "{summary}");
    assert_eq!(summary["data_sent"].as_u64().unwrap(), 4 * seconds.len() as u64);
    assert!(summary["calls"].as_u64().unwrap() <= seconds.len().div_ceil(20) as u64);
    let run_id = results["manifest"]["run_id"].as_str().unwrap().to_string();
    assert!(run_id.len() > 16 && run_id.starts_with("20"), "{run_id}");
    let job_name = |run_id: &str| format!("sagemaker-moto-{run_id}");
    let statistic = |job_name: String, name: &'static str, statistic: Statistic| {
        let series = Published { job: "sagemaker-moto", job_name, endpoint: "plateau-m5-large", since: started };
        published(client.clone(), series, name, statistic)
    };
    let sum = |points: Vec<aws_sdk_cloudwatch::types::Datapoint>| points.iter().filter_map(|point| point.sum()).sum();
    let published: f64 = sum(statistic(job_name(&run_id), "ClientInvocations", Statistic::Sum).await);
    assert_eq!(published, sent as f64);
    let latency = statistic(job_name(&run_id), "ClientLatency", Statistic::SampleCount).await;
    let samples: f64 = latency.iter().filter_map(|point| point.sample_count()).sum();
    assert_eq!(samples, completed as f64);
    let users = statistic(job_name(&run_id), "NumberOfUsers", Statistic::Maximum).await;
    assert_eq!(users.iter().filter_map(|point| point.maximum()).fold(0.0, f64::max), 4.0);
    // The same job run again publishes under a JobName of its own, and the first run's series is left as it was.
    let again = folder.path().join("again");
    let output =
        plateau(folder.path()).args(["run", job.to_str().unwrap(), "--out", again.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let second = read_results(&again);
    let second_id = second["manifest"]["run_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, run_id);
    let second_sent: u64 =
        second["configurations"][0]["seconds"].as_array().unwrap().iter().map(|s| s["started"].as_u64().unwrap()).sum();
    assert_eq!(sum(statistic(job_name(&second_id), "ClientInvocations", Statistic::Sum).await), second_sent as f64);
    assert_eq!(sum(statistic(job_name(&run_id), "ClientInvocations", Statistic::Sum).await), sent as f64);

    // The reports show the endpoint's latency beside plateau's, and which endpoint it was.
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("server-side"), "{markdown}");
    assert!(markdown.contains("(endpoint plateau-m5-large in us-east-1)"), "{markdown}");
    assert_eq!(configuration["endpoint"], serde_json::json!({ "name": "plateau-m5-large", "region": "us-east-1" }));
    // compare says when a configuration's endpoint changed, though the job files are the same.
    let moved = again.join("results.json");
    let text_of =
        std::fs::read_to_string(&moved).unwrap().replace(r#""region": "us-east-1""#, r#""region": "eu-west-1""#);
    std::fs::write(&moved, text_of).unwrap();
    let output = plateau(folder.path())
        .args(["compare", out.join("results.json").to_str().unwrap(), moved.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let comparison: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)));
    assert_eq!(
        comparison["job_files_differ"],
        serde_json::json!(["the endpoint of m5-large: plateau-m5-large in us-east-1 -> plateau-m5-large in eu-west-1"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inference_components_own_metrics_are_read_as_sagemaker_normalises_them() {
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;
    start_of_a_minute().await;
    let client = cloudwatch(&moto.url).await;
    // The component's metrics, by InferenceComponentName; its utilisations are normalised by SageMaker already, so
    // they are not divided by the instance's 48 vCPUs or 4 GPUs again.
    let component = [Dimension::builder().name("InferenceComponentName").value("ic-small").build()];
    let metrics = [
        ("AWS/SageMaker", "ModelLatency", 2000.0),
        ("AWS/SageMaker", "Invocations", 90.0),
        ("/aws/sagemaker/InferenceComponents", "CPUUtilizationNormalized", 42.0),
        ("/aws/sagemaker/InferenceComponents", "GPUUtilizationNormalized", 60.0),
    ];
    put_now(&client, &component, &metrics).await;
    let folder = tempfile::tempdir().unwrap();
    let watch = format!("[cloudwatch]\nendpoint_url = \"{}\"\nmetrics_delay = \"0s\"\n", moto.url);
    let job = sagemaker_job(folder.path(), &moto.url, &watch);
    let gpu_job = std::fs::read_to_string(&job).unwrap().replace("\"ml.m5.large\"", "\"ml.g5.12xlarge\"");
    std::fs::write(&job, gpu_job).unwrap();
    let out = folder.path().join("out");
    let output = plateau(folder.path())
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--set", "target.inference_component=ic-small"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    let endpoint_metrics = &results["configurations"][0]["endpoint_metrics"];
    assert_eq!(endpoint_metrics["inference_component"], "ic-small", "{endpoint_metrics}");
    assert_eq!(endpoint_metrics["model_latency_ms"], 2.0);
    assert_eq!(endpoint_metrics["invocations"], 90.0);
    assert_eq!(endpoint_metrics["cpu_utilization"], 42.0);
    assert_eq!(endpoint_metrics["gpu_utilization"], 60.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_invocations_count_every_request_sent_and_errors_the_failed_share() {
    let _load = LOAD.lock().await;
    let moto = Moto::start();
    // A server on loopback that answers every fifth request it receives with 500.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(serve_failing_every(listener, 5, std::sync::Arc::clone(&received)));
    let folder = tempfile::tempdir().unwrap();
    let job = folder.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "ir-invocations"
[target]
kind = "http"
url = "http://{address}/invocations"
[payload]
body = "{{}}"
[traffic]
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 2
step_duration = "3s"
steps = 1
[cloudwatch]
publish = true
endpoint_metrics = false
region = "us-east-1"
namespace = "plateau/tests"
endpoint_url = "{}"
[[configurations]]
name = "local"
instance_type = "ml.m5.large"
price_per_hour_usd = 0.1
"#,
            moto.url
        ),
    )
    .unwrap();
    let out = folder.path().join("out");
    let started = SystemTime::now() - Duration::from_secs(120);
    let output =
        plateau(folder.path()).args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(out.join("results.json").exists(), "{}", text(&output));
    let results = read_results(&out);
    let run_id = results["manifest"]["run_id"].as_str().unwrap();
    let client = cloudwatch(&moto.url).await;
    let sum = |name: &'static str| {
        let job_name = format!("ir-invocations-{run_id}");
        let series = Published { job: "ir-invocations", job_name, endpoint: "local", since: started };
        let points = published(client.clone(), series, name, Statistic::Sum);
        async move { points.await.iter().filter_map(|point| point.sum()).sum::<f64>() }
    };
    let (invocations, errors) = (sum("ClientInvocations").await, sum("ClientInvocationErrors").await);
    let received = received.load(std::sync::atomic::Ordering::Relaxed) as f64;
    println!("server received {received}; published ClientInvocations {invocations}, ClientInvocationErrors {errors}");
    // Every request the ramp sent, as the server counted them, to within the ends: the one check before the ramp
    // (received, not an invocation), and at most one a user (2) started as the ramp ended, either still on its way
    // or in the second after the last one published.
    assert!((invocations - received).abs() <= 3.0, "{invocations} sent, {received} received");
    // IR's error rate, errors over invocations: the server's one in five.
    let rate = errors / invocations;
    assert!((0.195..=0.205).contains(&rate), "error rate {rate:.4} ({errors} of {invocations})");
}

/// Answers requests to `listener` with 200, and every `nth` one it receives with 500; counts them in `received`.
async fn serve_failing_every(
    listener: tokio::net::TcpListener,
    nth: u64,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let received = std::sync::Arc::clone(&received);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let received = std::sync::Arc::clone(&received);
                async move {
                    use http_body_util::BodyExt as _;
                    let _ = request.into_body().collect().await;
                    let number = received.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let status = if number.is_multiple_of(nth) { 500 } else { 200 };
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"{}"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::builder().status(status).body(body).unwrap())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_metrics_read_that_fails_is_kept_in_the_results_and_the_report() {
    // Issue 16, case 12: a failed read of the endpoint's metrics was only printed to stderr.
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;
    // A CloudWatch that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let folder = tempfile::tempdir().unwrap();
    let watch = format!(
        "[cloudwatch]\nendpoint_url = \"http://{}\"\ntimeout = \"1s\"\nmetrics_delay = \"0s\"\n",
        silent.local_addr().unwrap()
    );
    let job = sagemaker_job(folder.path(), &moto.url, &watch);
    let out = folder.path().join("out");
    let output =
        plateau(folder.path()).args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let configuration = &read_results(&out)["configurations"][0];
    assert_eq!(configuration["status"], "complete");
    assert!(configuration["endpoint_metrics"].is_null());
    let error = configuration["endpoint_metrics_error"].as_str().unwrap_or_else(|| panic!("{configuration}"));
    assert!(!error.is_empty() && !error.contains("(Unknown)"), "{error}");
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("The endpoint's own metrics (CloudWatch) could not be read"), "{markdown}");
    drop(silent);
}

#[test]
fn missing_credentials_name_the_sources_tried() {
    let folder = tempfile::tempdir().unwrap();
    let job = sagemaker_job(folder.path(), "http://127.0.0.1:9", "");
    let output = plateau(folder.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["run", job.to_str().unwrap(), "--out", folder.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(stderr.contains("no usable AWS credentials"), "{stderr}");
    for source in
        ["AWS_ACCESS_KEY_ID", "~/.aws/credentials", "AWS_WEB_IDENTITY_TOKEN_FILE", "ECS", "EC2 instance metadata"]
    {
        assert!(stderr.contains(source), "`{source}` not named in: {stderr}");
    }
}

/// moto does not implement InvokeEndpointWithResponseStream (it answers 404), so this test serves the stream from a
/// loopback server that encodes real event-stream frames with the SDK's own codec (aws-smithy-eventstream): five
/// PayloadParts, the first after 30 ms, then one every 20 ms. Asked with the custom attribute `openai`, the parts
/// carry an OpenAI-compatible container's server-sent events instead, one event split across two parts, the last
/// part with the finish reason, `usage` and `[DONE]`.
#[tokio::test(flavor = "multi_thread")]
async fn streaming_endpoints_report_time_to_first_token_and_between_tokens() {
    let _load = LOAD.lock().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_event_streams(listener));

    for api in [false, true] {
        let folder = tempfile::tempdir().unwrap();
        let job = sagemaker_job(folder.path(), &url, "[cloudwatch]\nendpoint_metrics = false\n");
        let job = job.to_str().unwrap();
        let openai = if api { "\napi = \"openai\"\ncustom_attributes = \"openai\"" } else { "" };
        let text_of_job = std::fs::read_to_string(job)
            .unwrap()
            .replace("timeout = \"5s\"", &format!("timeout = \"5s\"\nstreaming = true{openai}"));
        std::fs::write(job, text_of_job).unwrap();
        let out = folder.path().join("out");
        let output = plateau(folder.path()).args(["run", job, "--out", out.to_str().unwrap()]).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let results = read_results(&out);
        let step = &results["configurations"][0]["steps"][0];
        let first_chunk_p50 = step["tokens"]["ttft"]["p50_ms"].as_f64().unwrap();
        let between_p50 = step["tokens"]["itl"]["p50_ms"].as_f64().unwrap();
        if api {
            // Four text chunks, the third completed in the third part; counts from the container's usage.
            assert_eq!(step["tokens"]["mean_output_tokens"].as_f64(), Some(4.0), "{step}");
            assert_eq!(step["tokens"]["mean_input_tokens"].as_f64(), Some(7.0), "{step}");
            assert_eq!(step["tokens"]["estimated"].as_bool(), Some(false), "{step}");
            assert_eq!(step["errors"]["stream_broken"].as_u64().unwrap_or(0), 0, "{step}");
        } else {
            // No usage read from an unknown container: one (estimated) token per PayloadPart.
            assert_eq!(step["tokens"]["mean_output_tokens"].as_f64(), Some(5.0), "{step}");
            assert_eq!(step["tokens"]["estimated"].as_bool(), Some(true), "{step}");
        }
        let latency_p50 = step["latency"]["p50_ms"].as_f64().unwrap();
        assert!((29.0..36.0).contains(&first_chunk_p50), "time to first chunk {first_chunk_p50} ms, served at 30 ms");
        assert!((19.0..23.0).contains(&between_p50), "time between chunks {between_p50} ms, served every 20 ms");
        assert!((109.0..120.0).contains(&latency_p50), "whole response {latency_p50} ms, served in 110 ms");
        let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(markdown.contains("TTFT p50"), "{markdown}");
        assert_eq!(markdown.contains("token counts estimated"), !api, "{markdown}");
    }
}

/// The PayloadParts of an OpenAI-compatible container's stream: an event split across the second and third parts.
const OPENAI_PARTS: [&str; 5] = [
    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: {\"choi",
    "ces\":[{\"delta\":{\"content\":\"c\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"d\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
     data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
];

async fn serve_event_streams(listener: tokio::net::TcpListener) {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use http_body_util::BodyExt as _;
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        // Each frame goes out when written, as a real stream's would (no Nagle delay behind the headers).
        stream.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                assert!(request.uri().path().ends_with("/invocations-response-stream"), "{}", request.uri());
                let openai = request
                    .headers()
                    .get("x-amzn-sagemaker-custom-attributes")
                    .is_some_and(|value| value.as_bytes() == b"openai");
                let _ = request.into_body().collect().await;
                let (mut sender, body) =
                    http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(8);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    for (part, openai_part) in OPENAI_PARTS.iter().enumerate() {
                        if part > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let payload = match openai {
                            true => openai_part.to_string(),
                            false => format!("{{\"token\": {part}}}"),
                        };
                        let message = Message::new(payload)
                            .add_header(Header::new(":message-type", HeaderValue::String("event".into())))
                            .add_header(Header::new(":event-type", HeaderValue::String("PayloadPart".into())))
                            .add_header(Header::new(
                                ":content-type",
                                HeaderValue::String("application/octet-stream".into()),
                            ));
                        let mut frame = Vec::new();
                        aws_smithy_eventstream::frame::write_message_to(&message, &mut frame).unwrap();
                        if sender.send_data(frame.into()).await.is_err() {
                            return;
                        }
                    }
                });
                let response = hyper::Response::builder()
                    .header("content-type", "application/vnd.amazon.eventstream")
                    .header("x-amzn-sagemaker-content-type", "application/json")
                    .body(body)
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn sagemaker(url: &str) -> aws_sdk_sagemaker::Client {
    aws_sdk_sagemaker::Client::new(&moto_config(url).await)
}

/// The models, endpoint configurations and endpoints moto holds, by name.
async fn provisioned(client: &aws_sdk_sagemaker::Client) -> (Vec<String>, Vec<String>, Vec<String>) {
    let models = client.list_models().send().await.unwrap();
    let configs = client.list_endpoint_configs().send().await.unwrap();
    let endpoints = client.list_endpoints().send().await.unwrap();
    (
        models.models().iter().filter_map(|model| model.model_name.clone()).collect(),
        configs.endpoint_configs().iter().filter_map(|config| config.endpoint_config_name.clone()).collect(),
        endpoints.endpoints().iter().filter_map(|endpoint| endpoint.endpoint_name.clone()).collect(),
    )
}

/// A job that provisions an endpoint for each of three configurations (one of them for each of two environment
/// values, one serverless), from an image, in moto; `steps` sets the ramp's length.
fn provisioning_job(folder: &Path, moto_url: &str, steps: u32) -> PathBuf {
    let job = folder.join("provision.toml");
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "provision-moto"
[target]
kind = "sagemaker"
region = "us-east-1"
endpoint_url = "{moto_url}"
timeout = "5s"
[target.provision]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"
model_data_url = "s3://models/model.tar.gz"
execution_role_arn = "arn:aws:iam::123456789012:role/SageMakerExecution"
endpoint_url = "{moto_url}"
create_timeout = "2m"
tags = {{ team = "ml-platform" }}
[payload]
content_type = "application/json"
body = '{{"inputs": [[1.0, 2.0, 3.0]]}}'
[traffic]
max_step_duration = "2s"
[traffic.stairs]
users_per_step = 2
step_duration = "2s"
steps = {steps}
[cloudwatch]
endpoint_url = "{moto_url}"
metrics_delay = "0s"
[[configurations]]
name = "m5"
instance_type = "ml.m5.large"
environment = {{ OMP_NUM_THREADS = ["1", "2"] }}
[[configurations]]
name = "c5"
instance_type = "ml.c5.xlarge"
[[configurations]]
name = "serverless"
instance_type = "serverless"
price_per_hour_usd = 0.5
serverless = {{ memory_mb = 2048, max_concurrency = 5 }}
"#
        ),
    )
    .unwrap();
    job
}

/// The ledger's lines, parsed.
fn ledger(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("provisioned.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioning_job_creates_benchmarks_and_deletes_an_endpoint_per_test_run() {
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;
    let client = sagemaker(&moto.url).await;
    let folder = tempfile::tempdir().unwrap();
    // Four steps: moto serves one request at a time, so its throughput is flat from the first and the plateau is
    // confirmed, which the IR export below needs (it lists only figures plateau stands behind).
    let job = provisioning_job(folder.path(), &moto.url, 4);
    let out = folder.path().join("out");
    let output =
        plateau(folder.path()).args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results = read_results(&out);
    let run_id = results["manifest"]["run_id"].as_str().unwrap();
    let configurations = results["configurations"].as_array().unwrap();
    // Four test runs (m5 with each OMP_NUM_THREADS, c5, serverless), each on an endpoint of its own, named after
    // the run.
    let names: Vec<&str> = configurations.iter().map(|c| c["endpoint"]["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        (1..=4).map(|n| format!("provision-moto-{run_id}-{n}")).collect::<Vec<_>>(),
        "{configurations:?}"
    );
    for configuration in configurations {
        assert_eq!(configuration["status"], "complete", "{configuration}");
        assert!(configuration["metrics"]["max_invocations"].as_f64().unwrap() > 0.0, "{configuration}");
    }
    // Every resource was written to the ledger before it was asked for, and deleted: 4 of each kind.
    let lines = ledger(&out);
    let count = |event: &str| lines.iter().filter(|line| line["event"] == event).count();
    assert_eq!((count("creating"), count("deleted")), (12, 12), "{lines:?}");
    // And moto holds none of them.
    assert_eq!(provisioned(&client).await, (vec![], vec![], vec![]));
    // The run as Inference Recommender's DescribeInferenceRecommendationsJob response, read by the SDK's own
    // deserialiser from a loopback server that answers with it.
    let exported = plateau(folder.path())
        .args(["report", out.join("results.json").to_str().unwrap(), "--format", "ir-json"])
        .output()
        .unwrap();
    assert_eq!(exported.status.code(), Some(0), "{}", text(&exported));
    let described = describe_through_the_sdk(exported.stdout).await;
    assert_eq!(described.job_name(), Some(format!("provision-moto-{run_id}").as_str()));
    assert_eq!(described.status().map(|status| status.as_str()), Some("COMPLETED"));
    // Only what plateau stands behind: configurations that meet the requirements on a confirmed plateau, best first.
    let stood_behind: Vec<&Value> = results["recommendation"]["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|verdict| verdict["meets_requirements"] == true && verdict["inconclusive"] == false)
        .map(|verdict| configurations.iter().find(|c| c["name"] == verdict["configuration"]).unwrap())
        .collect();
    let recommendations = described.inference_recommendations();
    assert!(!stood_behind.is_empty(), "moto's flat throughput confirmed no plateau: {results}");
    assert_eq!(recommendations.len(), stood_behind.len(), "{described:?}");
    for (recommendation, result) in recommendations.iter().zip(&stood_behind) {
        let endpoint = recommendation.endpoint_configuration().unwrap();
        assert_eq!(endpoint.instance_type().map(|t| t.as_str()), result["instance_type"].as_str());
        assert_eq!(endpoint.endpoint_name(), result["endpoint"]["name"].as_str());
        let metrics = recommendation.metrics().unwrap();
        let max_invocations = result["metrics"]["max_invocations"].as_f64().unwrap();
        assert_eq!(metrics.max_invocations(), Some(max_invocations.round() as i32));
        assert!(metrics.cost_per_hour().unwrap() > 0.0);
        let parameters: Vec<(String, String)> = recommendation
            .model_configuration()
            .map(|model| model.environment_parameters().to_vec())
            .unwrap_or_default()
            .iter()
            .map(|p| (p.key().unwrap_or_default().to_string(), p.value().unwrap_or_default().to_string()))
            .collect();
        // A configuration without environment parameters has no `environment` in the results.
        let environment: Vec<(String, String)> = result["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(parameters, environment);
    }
    let conclusive = configurations.iter().filter(|c| c["metrics"]["lower_bound"] == false).count();
    assert_eq!(described.endpoint_performances().len(), conclusive);

    // Cleaning up a run that left nothing is a no-op that says so.
    let cleanup = plateau(folder.path()).args(["cleanup", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(cleanup.status.code(), Some(0), "{}", text(&cleanup));
    assert!(text(&cleanup).contains("nothing the run provisioned is left (0 deleted now)"), "{}", text(&cleanup));
}

/// Starts `job` (its configuration `only`, if given), waits until moto holds its first endpoint, checks its tags,
/// and returns the child and the endpoint's name.
async fn run_until_provisioned(
    folder: &Path,
    job: &Path,
    out: &Path,
    client: &aws_sdk_sagemaker::Client,
    only: Option<&str>,
) -> (std::process::Child, String) {
    let child = plateau(folder)
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(only.map(|only| ["--only", only]).into_iter().flatten())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let endpoint = loop {
        if let Some(endpoint) = provisioned(client).await.2.first().cloned() {
            break endpoint;
        }
        assert!(std::time::Instant::now() < deadline, "no endpoint was created in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let described = client.describe_endpoint().endpoint_name(&endpoint).send().await.unwrap();
    let tags = client.list_tags().resource_arn(described.endpoint_arn().unwrap()).send().await.unwrap();
    let tags: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|tag| (tag.key().unwrap_or_default().to_string(), tag.value().unwrap_or_default().to_string()))
        .collect();
    for key in ["plateau:job", "plateau:run-id", "plateau:configuration", "team"] {
        assert!(tags.iter().any(|(tag, _)| tag == key), "{key} missing from {tags:?}");
    }
    // A second into its ramp.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (child, endpoint)
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_mid_run_deletes_what_was_provisioned_and_kill_9_leaves_it_to_plateau_cleanup() {
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;
    let client = sagemaker(&moto.url).await;
    let folder = tempfile::tempdir().unwrap();
    let job = provisioning_job(folder.path(), &moto.url, 6);

    let interrupted = folder.path().join("interrupted");
    let (child, endpoint) = run_until_provisioned(folder.path(), &job, &interrupted, &client, None).await;
    // The model carries the test run's environment.
    let model = client.describe_model().model_name(&endpoint).send().await.unwrap();
    let environment = model.primary_container().and_then(|container| container.environment()).cloned();
    assert_eq!(environment.unwrap_or_default().get("OMP_NUM_THREADS").map(String::as_str), Some("1"));
    let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let results = read_results(&interrupted);
    assert!(results["partial"].as_bool().unwrap());
    assert_eq!(results["manifest"]["stopped"], "interrupted");
    assert_eq!(results["configurations"][1]["failure"], "not run: the run was interrupted first");
    assert_eq!(provisioned(&client).await, (vec![], vec![], vec![]), "{}", text(&output));

    let killed = folder.path().join("killed");
    let (mut child, endpoint) = run_until_provisioned(folder.path(), &job, &killed, &client, Some("serverless")).await;
    // A serverless configuration is provisioned as one: memory and concurrency, no instances.
    let config = client.describe_endpoint_config().endpoint_config_name(&endpoint).send().await.unwrap();
    let variant = &config.production_variants()[0];
    let serverless = variant.serverless_config().unwrap();
    assert_eq!((serverless.memory_size_in_mb(), serverless.max_concurrency()), (Some(2048), Some(5)));
    assert_eq!(variant.instance_type(), None);
    child.kill().unwrap();
    child.wait().unwrap();
    let (models, configs, endpoints) = provisioned(&client).await;
    assert_eq!((models.len(), configs.len(), endpoints.len()), (1, 1, 1));
    let cleanup = plateau(folder.path()).args(["cleanup", killed.to_str().unwrap()]).output().unwrap();
    assert_eq!(cleanup.status.code(), Some(0), "{}", text(&cleanup));
    assert!(text(&cleanup).contains("(3 deleted now)"), "{}", text(&cleanup));
    assert_eq!(provisioned(&client).await, (vec![], vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_refuses_a_job_whose_worst_case_is_over_it_and_stops_one_that_reaches_it() {
    let _load = LOAD.lock().await;
    let moto = moto_with_an_endpoint().await;
    let client = sagemaker(&moto.url).await;
    let folder = tempfile::tempdir().unwrap();
    // 3,600 USD an hour is a dollar a second, for each of four test runs of (2 minutes to create, the ramp, 5
    // minutes to delete).
    let job = provisioning_job(folder.path(), &moto.url, 2);
    let priced = std::fs::read_to_string(&job)
        .unwrap()
        .replace("instance_type = \"ml.", "price_per_hour_usd = 3600\ninstance_type = \"ml.")
        .replace("price_per_hour_usd = 0.5", "price_per_hour_usd = 3600");
    std::fs::write(&job, priced).unwrap();
    let plan = plateau(folder.path()).args(["plan", job.to_str().unwrap(), "--format", "json"]).output().unwrap();
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let ramp_s = plan["each_at_most_s"].as_f64().unwrap();
    let worst_case_usd = 4.0 * (120.0 + ramp_s + 300.0);
    assert!((plan["at_most_usd"].as_f64().unwrap() - worst_case_usd).abs() < 1e-6, "{plan}");
    let plan = plateau(folder.path()).args(["plan", job.to_str().unwrap(), "--max-cost-usd", "5"]).output().unwrap();
    assert!(text(&plan).contains(&format!("{worst_case_usd:.4} USD of endpoint time")), "{}", text(&plan));
    assert!(text(&plan).contains("the worst case is over it: `plateau run` refuses to start"), "{}", text(&plan));

    let refused = folder.path().join("refused");
    let output = plateau(folder.path())
        .args(["run", job.to_str().unwrap(), "--out", refused.to_str().unwrap(), "--max-cost-usd", "5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains(&format!("worst case is {worst_case_usd:.4} USD")), "{}", text(&output));
    assert_eq!(provisioned(&client).await, (vec![], vec![], vec![]));

    // Told to run until the budget is spent, it stops at 3 USD, three seconds into its first test run.
    let stopped = folder.path().join("stopped");
    let output = plateau(folder.path())
        .args(["run", job.to_str().unwrap(), "--out", stopped.to_str().unwrap(), "--max-cost-usd", "3"])
        .args(["--set", "limits.over_budget=stop"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let results = read_results(&stopped);
    let reason = results["manifest"]["stopped"].as_str().unwrap();
    assert!(reason.starts_with("the budget of 3.0000 USD was reached"), "{reason}");
    let spent: f64 = reason.split("; ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((3.0..3.5).contains(&spent), "{reason}");
    let configurations = results["configurations"].as_array().unwrap();
    assert_eq!(configurations[0]["status"], "partial", "{}", configurations[0]);
    for skipped in &configurations[1..] {
        assert_eq!(skipped["status"], "skipped");
        assert!(skipped["failure"].as_str().unwrap().starts_with("not run: the budget of 3.0000 USD was reached"));
    }
    assert_eq!(provisioned(&client).await, (vec![], vec![], vec![]));
}

/// `document` as SageMaker's answer to DescribeInferenceRecommendationsJob, parsed by the SDK: a loopback server
/// answers the SDK's one request with it.
async fn describe_through_the_sdk(
    document: Vec<u8>,
) -> aws_sdk_sagemaker::operation::describe_inference_recommendations_job::DescribeInferenceRecommendationsJobOutput {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // Read the request (headers, then the body its Content-Length announces) before answering.
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                if request.len() >= end + 4 + length || read == 0 {
                    break;
                }
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            document.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&document).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    sagemaker(&url).await.describe_inference_recommendations_job().job_name("any").send().await.unwrap()
}
