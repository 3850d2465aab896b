//! Sharded runs end to end (part of the `end_to_end` binary): shards as local processes with the environment a
//! Kubernetes Indexed Job gives them, merged, against one run of the same job by a single process.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::common::{self, load_lock, plateau, read_results, text};
use super::{configuration, standalone_reference, write_job};

/// `--start-at` a few seconds ahead, as the manifests' deploy step sets it: every shard has started by then.
fn start_in(seconds: u64) -> String {
    let at = SystemTime::now() + Duration::from_secs(seconds);
    let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // UTC without a date crate: days since the epoch to a civil date (Howard Hinnant's algorithm).
    let (days, second_of_day) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Shard `index` of `count` of `job`, started as an Indexed Job's pod would be: its index and the count from the
/// environment, the common start too.
fn shard(job: &Path, out: &Path, index: u32, count: u32, start_at: &str) -> Child {
    plateau()
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env("PLATEAU_SEGMENTS", count.to_string())
        .env("PLATEAU_START_AT", start_at)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn two_sizes(small_url: &str, large_url: &str) -> String {
    format!(
        r#"
version = 1
[job]
name = "sharded"
seed = 5
[targets.small]
kind = "http"
url = "{small_url}"
[targets.large]
kind = "http"
url = "{large_url}"
[payload]
body = '{{"inputs": [1]}}'
[traffic]
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 4
step_duration = "3s"
steps = 4
[[configurations]]
name = "small"
target = "small"
instance_type = "local"
price_per_hour_usd = 0.5
[[configurations]]
name = "large"
target = "large"
instance_type = "local"
price_per_hour_usd = 0.9
"#
    )
}

#[test]
fn four_shards_merged_measure_what_one_process_measures_and_recommend_the_same() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    // One pair of reference servers, measured by the shards and then by one process: the two never run at once,
    // as nine processes on two cores made the shards' generators lag.
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for workers in ["4", "8"] {
        let (server, url) = standalone_reference(workers, "25");
        servers.push(server);
        urls.push(url);
    }
    let job = write_job(folder.path(), &two_sizes(&urls[0], &urls[1]));
    let start_at = start_in(2);
    let shards: Vec<(Child, std::path::PathBuf)> = (0..4)
        .map(|index| {
            let out = folder.path().join(format!("shard-{index}"));
            (shard(&job, &out, index, 4, &start_at), out)
        })
        .collect();
    for (child, out) in shards {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}: {}", out.display(), text(&output));
    }
    let single_out = folder.path().join("single-out");
    let single = plateau().arg("run").arg(&job).arg("--out").arg(&single_out).output().unwrap();
    for mut server in servers {
        server.kill().unwrap();
        server.wait().unwrap();
    }
    assert_eq!(single.status.code(), Some(0), "{}", text(&single));

    let merged_out = folder.path().join("merged");
    let folders: Vec<_> = (0..4).map(|index| folder.path().join(format!("shard-{index}"))).collect();
    let merge = plateau().arg("merge").args(&folders).arg("--out").arg(&merged_out).output().unwrap();
    assert_eq!(merge.status.code(), Some(0), "{}", text(&merge));
    // A shard's results are its share of the load: reported or compared alone they would mislead.
    let shard_results = folders[0].join("results.json");
    for command in [
        vec!["report".into(), shard_results.clone()],
        vec!["compare".into(), shard_results.clone(), merged_out.join("results.json")],
    ] {
        let refused = plateau().args(&command).output().unwrap();
        assert_eq!(refused.status.code(), Some(1), "{command:?}: {}", text(&refused));
        assert!(text(&refused).contains("is shard 0/4's results") && text(&refused).contains("merge the shards first"));
    }
    let (merged, single) = (read_results(&merged_out), read_results(&single_out));
    let shards = &merged["manifest"]["shards"];
    assert_eq!(shards["count"], 4);
    assert_eq!(shards["merged"].as_array().unwrap().len(), 4);
    assert_eq!(shards["problems"], Value::Null, "no shard lagged, failed or started late");
    assert_eq!(merged["manifest"]["segment"], Value::Null);
    for name in ["small", "large"] {
        let (sharded, whole) = (configuration(&merged, name), configuration(&single, name));
        let figure = |result: &Value| result["metrics"]["max_invocations"].as_f64().unwrap();
        let ratio = figure(sharded) / figure(whole);
        println!(
            "{name}: MaxInvocations merged from 4 shards {:.0}/min, one process {:.0}/min, ratio {ratio:.4}",
            figure(sharded),
            figure(whole)
        );
        assert!((ratio - 1.0).abs() <= 0.03, "{name}: {ratio}");
        // Every step's load is the whole run's: the shards' users add up to it, second by second.
        let steps = sharded["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 4, "the fixed ramp runs every step");
        for (index, step) in steps.iter().enumerate() {
            assert_eq!(step["load"].as_f64(), Some(4.0 * (index + 1) as f64));
            assert_eq!(step["invalid"], Value::Null, "step {}: {}", index + 1, step["invalid"]);
        }
        for second in sharded["seconds"].as_array().unwrap() {
            let load = second["load"].as_f64().unwrap();
            assert_eq!(load % 4.0, 0.0, "second {}: the shards' users add up to a step's load", second["second"]);
        }
    }
    assert_eq!(
        merged["recommendation"]["configuration"], single["recommendation"]["configuration"],
        "the same recommendation"
    );
    assert_eq!(merged["recommendation"]["configuration"], "large");
    for file in ["report.html", "report.md"] {
        let page = std::fs::read_to_string(merged_out.join(file)).unwrap();
        assert!(page.contains("Merged from 4 of 4 shards"), "the merge writes the run's reports, saying it merged");
    }
}

trait CreateDir {
    fn tap_create(self) -> Self;
}

impl CreateDir for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// An HTTP/1.1 server on loopback that answers every request after `delay` and keeps each body by the sequence
/// number the minimal plugin writes first in it (`{"inputs": [sequence, ...]}`); a number seen twice is kept in
/// `repeated`.
struct Recorder {
    url: String,
    bodies: Arc<Mutex<BTreeMap<u64, String>>>,
    repeated: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn start(delay: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(BTreeMap::new()));
        let repeated = Arc::new(Mutex::new(Vec::new()));
        let (kept, twice) = (Arc::clone(&bodies), Arc::clone(&repeated));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, twice) = (Arc::clone(&kept), Arc::clone(&twice));
                std::thread::spawn(move || serve(stream, delay, &kept, &twice));
            }
        });
        Recorder { url, bodies, repeated }
    }

    fn bodies(&self) -> BTreeMap<u64, String> {
        self.bodies.lock().unwrap().clone()
    }
}

fn serve(
    stream: std::net::TcpStream,
    delay: Duration,
    bodies: &Mutex<BTreeMap<u64, String>>,
    repeated: &Mutex<Vec<u64>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8(body).unwrap();
        let sequence: u64 = body
            .split_once('[')
            .and_then(|(_, rest)| rest.split(',').next())
            .and_then(|number| number.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sequence number in {body}"));
        if bodies.lock().unwrap().insert(sequence, body).is_some() {
            repeated.lock().unwrap().push(sequence);
        }
        std::thread::sleep(delay);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .is_err()
        {
            return;
        }
    }
}

fn plugin_job(url: &str, steps: u32) -> String {
    let plugin = common::built_plugins().join("minimal-rust.wasm");
    format!(
        r#"
version = 1
[job]
name = "numbered"
seed = 11
[target]
kind = "http"
url = "{url}"
[payload]
plugin = "{}"
[traffic]
max_step_duration = "3s"
[traffic.stairs]
users_per_step = 2
step_duration = "3s"
steps = {steps}
[[configurations]]
name = "numbered"
instance_type = "local"
price_per_hour_usd = 1.0
"#,
        plugin.display()
    )
}

/// The length of the run of numbers 0, 1, 2, ... at the start of `numbers`.
fn contiguous_prefix(numbers: &BTreeMap<u64, String>) -> u64 {
    numbers.keys().enumerate().take_while(|(at, number)| *at as u64 == **number).count() as u64
}

#[test]
fn shards_send_the_single_runs_requests_and_a_killed_shard_leaves_the_merge_partial() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let (for_shards, for_single, for_killed) = (
        Recorder::start(Duration::from_millis(4)),
        Recorder::start(Duration::from_millis(4)),
        Recorder::start(Duration::from_millis(4)),
    );
    let shard_job = write_job(&folder.path().join("shards").tap_create(), &plugin_job(&for_shards.url, 2));
    let single_job = write_job(&folder.path().join("single").tap_create(), &plugin_job(&for_single.url, 2));
    let killed_job = write_job(&folder.path().join("killed").tap_create(), &plugin_job(&for_killed.url, 3));
    let start_at = start_in(2);
    let shard_outs: Vec<_> = (0..2).map(|index| folder.path().join(format!("shard-{index}"))).collect();
    let killed_outs: Vec<_> = (0..2).map(|index| folder.path().join(format!("killed-{index}"))).collect();
    let shards: Vec<Child> =
        shard_outs.iter().enumerate().map(|(index, out)| shard(&shard_job, out, index as u32, 2, &start_at)).collect();
    let mut killed: Vec<Child> = killed_outs
        .iter()
        .enumerate()
        .map(|(index, out)| shard(&killed_job, out, index as u32, 2, &start_at))
        .collect();
    let single = plateau()
        .arg("run")
        .arg(&single_job)
        .arg("--out")
        .arg(folder.path().join("single-out"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Shard 1 of the three-step job is killed (SIGKILL) in its second step: the ramp starts 1-2 s from now.
    std::thread::sleep(Duration::from_millis(6_500));
    killed[1].kill().unwrap();
    for child in shards.into_iter().chain(killed.drain(..)) {
        child.wait_with_output().unwrap();
    }
    let single = single.wait_with_output().unwrap();
    assert_eq!(single.status.code(), Some(0), "{}", text(&single));

    // The shards' requests are the single run's: no number twice, the same body for each number, and together
    // every number from 0 (until the end of the run, where requests prepared but never sent leave gaps).
    let (sharded, whole) = (for_shards.bodies(), for_single.bodies());
    assert!(for_shards.repeated.lock().unwrap().is_empty(), "no request number went out twice");
    let prefix = contiguous_prefix(&sharded).min(contiguous_prefix(&whole));
    let common: Vec<u64> = (0..prefix).collect();
    println!(
        "sequence numbers: shards sent {} requests, one process {}; both sent every number below {prefix}, with the \
         same bodies",
        sharded.len(),
        whole.len()
    );
    assert!(prefix as f64 >= 0.8 * sharded.len().min(whole.len()) as f64, "prefix {prefix}");
    for number in common {
        assert_eq!(sharded[&number], whole[&number], "request {number}");
    }
    let from_shard = |index: u64| sharded.keys().filter(|number| *number % 2 == index).count();
    assert!(from_shard(0) > 0 && from_shard(1) > 0, "each shard sent its own numbers");

    // The killed shard: the merge names it, is partial, and keeps every second both shards covered.
    let merged_out = folder.path().join("killed-merged");
    let merge = plateau().arg("merge").args(&killed_outs).arg("--out").arg(&merged_out).output().unwrap();
    assert_eq!(merge.status.code(), Some(2), "{}", text(&merge));
    let merged = read_results(&merged_out);
    assert_eq!(merged["partial"], true);
    let problems = merged["manifest"]["shards"]["problems"].to_string();
    assert!(problems.contains("shard 1/2 stopped during numbered"), "{problems}");
    let page = std::fs::read_to_string(merged_out.join("report.md")).unwrap();
    assert!(page.contains("Merged from 2 of 2 shards") && page.contains("shard 1/2 stopped during numbered"), "{page}");
    let result = configuration(&merged, "numbered");
    assert_eq!(result["status"], "partial");
    let seconds = result["seconds"].as_array().unwrap();
    let cut = seconds.len() as u64;
    assert!((4..9).contains(&cut), "the merge ends where the killed shard did: {cut} s");
    // Nothing the two shards both covered is lost: every request of both series files before the cut.
    let completed_before_cut = |series: &Path| -> u64 {
        std::fs::read_to_string(series)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|second| second["second"].as_u64().unwrap() < cut)
            .map(|second| second["completed"].as_u64().unwrap())
            .sum()
    };
    let shards_completed: u64 =
        killed_outs.iter().map(|out| completed_before_cut(&out.join("series/01-numbered.jsonl"))).sum();
    let merged_completed: u64 = seconds.iter().map(|second| second["completed"].as_u64().unwrap()).sum();
    assert_eq!(merged_completed, shards_completed);
    let complete_steps = result["steps"].as_array().unwrap().iter().filter(|step| step["complete"] == true).count();
    assert_eq!(complete_steps, 1, "the step both shards finished is kept; the rest ran on one shard only");
}

/// moto's S3 through the SDK's own client: the bucket the test makes, and the objects plateau put there.
struct Bucket {
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    const NAME: &str = "plateau-results";

    fn create(moto: &common::Moto) -> Bucket {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let credentials = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "static");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        runtime.block_on(client.create_bucket().bucket(Self::NAME).send()).unwrap();
        Bucket { client, runtime }
    }

    /// An object's text, or None when it is not there.
    fn object(&self, key: &str) -> Option<String> {
        self.runtime.block_on(async {
            let object = self.client.get_object().bucket(Self::NAME).key(key).send().await.ok()?;
            Some(String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap())
        })
    }
}

#[test]
fn shards_write_to_s3_and_the_merge_reads_them_from_there() {
    let _load = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let moto = common::Moto::start();
    let bucket = Bucket::create(&moto);
    let (mut server, url) = standalone_reference("4", "5");
    let job = write_job(folder.path(), &plugin_job(&url, 2));
    // What a pod gets: dummy credentials, the region, and the store's endpoint; run from an empty folder, where the
    // local copy goes.
    let plateau_s3 = || {
        let mut command = plateau();
        command
            .current_dir(folder.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_S3", &moto.url);
        command
    };
    let merge_of = |shards: [&str; 2]| plateau_s3().arg("merge").args(shards).output().unwrap();
    let start_at = start_in(2);
    let shards: Vec<Child> = (0..2)
        .map(|index| {
            plateau_s3()
                .args(["run"])
                .arg(&job)
                .args(["--out", "s3://plateau-results/runs/shard-{shard}"])
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .env("PLATEAU_SEGMENTS", "2")
                .env("PLATEAU_START_AT", &start_at)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in shards {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(text(&output).contains("files to s3://plateau-results/runs/shard-"), "{}", text(&output));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    for index in 0..2 {
        let uploaded: Value =
            serde_json::from_str(&bucket.object(&format!("runs/shard-{index}/results.json")).unwrap()).unwrap();
        assert_eq!(uploaded["manifest"]["segment"], format!("{index}/2"));
        assert!(bucket.object(&format!("runs/shard-{index}/series/01-numbered.jsonl")).is_some());
    }

    // The merge downloads both and, given no --out, writes `merged` beside them, in the bucket.
    let merge = merge_of(["s3://plateau-results/runs/shard-0", "s3://plateau-results/runs/shard-1"]);
    assert_eq!(merge.status.code(), Some(0), "{}", text(&merge));
    let merged: Value = serde_json::from_str(&bucket.object("runs/merged/results.json").unwrap()).unwrap();
    assert_eq!(merged["manifest"]["shards"]["count"], 2);
    assert_eq!(merged["partial"], false);
    assert!(configuration(&merged, "numbered")["metrics"]["max_invocations"].as_f64().unwrap() > 0.0);
    assert!(bucket.object("runs/merged/report.html").unwrap().contains("Merged from 2 of 2 shards"));

    // A location no shard wrote to is named, not merged as an empty shard.
    let missing = merge_of(["s3://plateau-results/runs/shard-0", "s3://plateau-results/runs/shard-7"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("s3://plateau-results/runs/shard-7 holds no results.json"), "{}", text(&missing));
}
