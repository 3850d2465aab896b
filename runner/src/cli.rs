//! The command line: parses arguments, wires the stages together, and turns outcomes into exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

use crate::aws;
use crate::aws::s3::{self, S3Location};
use crate::exit::Exit;
use crate::git;
use crate::history;
use crate::payload::{LoadedPlugin, PayloadSource};
use crate::plan::{self, Segment};
use crate::publish;
use crate::report;
use crate::report::compare::{FailRule, RuleError};
use crate::report::digest::ConfigurationDigest;
use crate::results::Results;
use crate::run;
use crate::server;
use crate::server::llm::LlmServer;
use crate::server::neighbour::Neighbour;
use crate::server::reference::{ReferenceServer, Work};
use crate::spec::{self, LlmModel, ReferenceModel, ServiceTime, Stalls};

#[derive(Parser)]
#[command(
    name = "plateau",
    version,
    about = "Load-test inference endpoint configurations, find where throughput levels off, and recommend the cheapest one that meets the latency goal."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file: ramp load on every configuration, find its plateau, recommend one.
    Run {
        /// The job file (TOML).
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        job: Option<PathBuf>,
        /// Output folder [default: plateau-out/<job name>-<UTC time>]. In a shard's run, `{shard}` in it is the
        /// shard's index. `s3://BUCKET/PREFIX` writes to plateau-out/s3/BUCKET/PREFIX and uploads the folder there
        /// when the run ends (AWS_REGION, the default credential chain; AWS_ENDPOINT_URL_S3 for an S3-compatible
        /// store).
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Finish an interrupted run (Ctrl-C, kill -9, power loss) in its output folder: the test runs it completed
        /// are kept, the rest run. The job file must be unchanged; its --set and --only apply again.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["set", "only"])]
        resume: Option<PathBuf>,
        /// Run each configuration N times, interleaved, instead of the job file's `[job] trials`.
        #[arg(long, value_name = "N", conflicts_with = "resume", value_parser = clap::value_parser!(u32).range(1..=i64::from(spec::MAX_TRIALS)))]
        trials: Option<u32>,
        /// Print the run's digest as JSON on stdout instead of the table: the recommendation, each configuration's
        /// figures and verdict, the results file and the exit code (progress stays on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        overrides: OverrideArgs,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        history: HistoryArgs,
        /// Do not record this run in the history.
        #[arg(long)]
        no_history: bool,
        /// Run shard INDEX of COUNT (from 0): a 1/COUNT share of the load, on a fixed ramp, for `plateau merge` to
        /// combine. Also from the environment: PLATEAU_SEGMENTS (the count) with JOB_COMPLETION_INDEX (a Kubernetes
        /// Indexed Job) or AWS_BATCH_JOB_ARRAY_INDEX (an AWS Batch array job).
        #[arg(long, value_name = "INDEX/COUNT", conflicts_with = "resume")]
        segment: Option<Segment>,
        /// When shards start their first test run's ramp, in UTC, e.g. 2026-12-03T15:00:00Z; each later test
        /// run starts a full ramp and 2 s after the one before, so the shards' loads coincide.
        #[arg(long, value_name = "TIME", env = "PLATEAU_START_AT", value_parser = parse_start_at, conflicts_with = "resume")]
        start_at: Option<SystemTime>,
    },
    /// Merge the shards of one run (`plateau run --segment`, a folder each) into the results one load generator
    /// would have written: per-second histograms merged exactly, then the same analysis, recommendation and
    /// reports. A missing, failed, lagging or late shard is named, and the result marked partial where it cost.
    Merge {
        /// The shards' output folders, local or `s3://BUCKET/PREFIX` (downloaded first).
        #[arg(required = true, value_name = "DIR")]
        folders: Vec<PathBuf>,
        /// Output folder, local or `s3://BUCKET/PREFIX` [default: `merged` beside the first shard's folder].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the merged run's digest as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Delete the SageMaker endpoints, endpoint configurations and models a run provisioned and did not delete (a
    /// run killed with kill -9, or whose deletions failed), from the ledger in its output folder.
    Cleanup {
        /// The run's output folder (it holds provisioned.jsonl).
        folder: PathBuf,
    },
    /// Check job files without sending a request; every error is printed with its location.
    Validate {
        /// The job files (TOML) to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `text` for people, `json` for machines (one object per file, with every error's location).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show the test runs a job file expands into, their order, the longest they can take and what that costs,
    /// without sending a request.
    Plan {
        /// The job file (TOML).
        job: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// `text` for people, `json` for machines (every test run with its price and the worst-case totals).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the job file's JSON Schema, for editors (taplo, Even Better TOML) and CI linters.
    Schema,
    /// Turn a SageMaker Inference Recommender CreateInferenceRecommendationsJob request (the JSON the AWS CLI takes)
    /// into an equivalent job file; what does not carry over is named in warnings.
    ImportSagemaker {
        /// The CreateInferenceRecommendationsJob request (JSON).
        request: PathBuf,
        /// Write the job file here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a price table (`[job] price_table`) from AWS's Price List for SageMaker: the offer file
    /// (https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonSageMaker/current/index.json) or
    /// `aws pricing get-products --service-code AmazonSageMaker` output; every region's real-time on-demand prices.
    PriceTable {
        /// Price list files (JSON); several are merged, e.g. one region's offer file each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The table's own region: configurations outside a SageMaker region are priced from it.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Keep only these other regions (comma-separated) [default: every region in the list].
        #[arg(long, value_delimiter = ',', value_name = "REGION,...")]
        regions: Vec<String>,
        /// Write the table here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Work with a job file's payload.
    #[command(subcommand)]
    Payload(PayloadCommand),
    /// Re-render the reports of a saved results.json without running anything.
    Report {
        /// A results.json that `plateau run` wrote.
        results: PathBuf,
        /// Output folder [default: the folder of the results file].
        #[arg(long, conflicts_with = "format")]
        out: Option<PathBuf>,
        /// Print one report on stdout instead of writing them all: `pr` is the pull-request comment (Mermaid
        /// charts, details folded), `markdown` the wiki page, `html` the page, `summary` the terminal table,
        /// `ir-json` Inference Recommender's DescribeInferenceRecommendationsJob response.
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Compare two results files for a pull-request check: Markdown (or JSON, JUnit XML) on stdout, exit code 4
    /// when a --fail-on rule fires; latency is compared at one load on both curves, changes with their intervals.
    Compare {
        /// BASE HEAD: the results.json to compare against (the base branch's), then the one under review (the pull
        /// request's); HEAD alone with --against-history.
        #[arg(value_name = "RESULTS", num_args = 1..=2, required = true)]
        results: Vec<PathBuf>,
        /// Compare HEAD with the median of the last runs of its job in the history instead of with one base run: for
        /// each configuration its median run by MaxInvocations, and the recommendation most of them made.
        #[arg(long)]
        against_history: bool,
        /// With --against-history: the branch whose runs count [default: any branch].
        #[arg(long, requires = "against_history")]
        branch: Option<String>,
        /// With --against-history: how many of the newest complete runs the median is taken over.
        #[arg(long, default_value_t = 5, requires = "against_history", value_parser = clap::value_parser!(u32).range(1..=100))]
        last: u32,
        #[command(flatten)]
        history: HistoryArgs,
        /// A rule that fails the check, e.g. "max_invocations < -5%", "p99 > +10%", "knee_load < -20%",
        /// "recommendation changed" (repeatable). A rule fires only when the change's 95% interval excludes zero.
        #[arg(long = "fail-on", value_name = "RULE")]
        fail_on: Vec<String>,
        /// Exit 5 when a rule cannot be decided (the change's interval reaches past its threshold), instead of
        /// passing and saying so.
        #[arg(long)]
        fail_on_inconclusive: bool,
        #[arg(long, value_enum, default_value_t = CompareFormat::Pr)]
        format: CompareFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a job's runs over time from the history every run is recorded in (an SQLite file), or list the jobs it
    /// holds; --import records results from elsewhere, such as a CI artifact.
    History {
        /// The job's name (`[job] name`) [default: list the jobs].
        job: Option<String>,
        /// Only runs made from this branch.
        #[arg(long)]
        branch: Option<String>,
        /// How many of the newest runs to show (oldest first).
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// The configuration whose figures to show [default: each run's recommended one].
        #[arg(long, value_name = "NAME")]
        configuration: Option<String>,
        /// `text` for people, `json` for machines (every run's digest).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Record these results (results.json files or run folders) in the history instead of showing it.
        #[arg(long, value_name = "RESULTS", num_args = 1.., conflicts_with_all = ["job", "branch", "configuration"])]
        import: Vec<PathBuf>,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Publish a run where your team reads results. To a git-backed wiki (GitHub and GitLab wikis are git
    /// repositories): its report as a page with its charts, an index of runs newest first and a trend page for its
    /// job, committed and pushed with your git (its credentials, SSH keys and configuration). To Confluence (Cloud
    /// or Data Center): its report as a page with its charts attached, through the REST API, signed in with
    /// CONFLUENCE_TOKEN (with CONFLUENCE_USER, your email, on Cloud).
    Publish {
        /// A run's output folder, or its results.json.
        results: PathBuf,
        /// Where to publish.
        #[arg(long, value_enum, default_value_t = PublishTo::Git)]
        to: PublishTo,
        /// The wiki's git URL or path, e.g. https://github.com/ORG/REPO.wiki.git or git@gitlab.com:ORG/REPO.wiki.git.
        #[arg(long, value_name = "URL", required_if_eq("to", "git"), conflicts_with_all = ["url", "space", "parent"])]
        repo: Option<String>,
        /// The wiki's branch to publish to [default: the wiki's default branch].
        #[arg(long, requires = "repo")]
        branch: Option<String>,
        /// A folder inside the wiki for plateau's pages [default: the wiki's root].
        #[arg(long, value_name = "DIR", requires = "repo")]
        folder: Option<PathBuf>,
        /// Confluence's address up to its REST path: https://ORG.atlassian.net/wiki or https://confluence.example.com.
        #[arg(long, value_name = "URL", required_if_eq("to", "confluence"))]
        url: Option<String>,
        /// The Confluence space's key.
        #[arg(long, value_name = "KEY", required_if_eq("to", "confluence"))]
        space: Option<String>,
        /// The id of the Confluence page to publish under [default: the space's root].
        #[arg(long, value_name = "ID", requires = "url")]
        parent: Option<String>,
        /// A folder of templates that replace the built-in ones of the same name (report.md.j2, wiki-index.md.j2,
        /// wiki-trend.md.j2 for a wiki; confluence.storage.xml.j2 for Confluence).
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Serve the reference endpoint on its own, so any load tool can be pointed at it. Every option can also come
    /// from the environment, so a command target can sweep them as environment parameters.
    ServeReference {
        #[command(flatten)]
        model: ReferenceArgs,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, env = "PLATEAU_REFERENCE_PORT", default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Serve the reference LLM endpoint on its own (OpenAI chat and text completions, streamed or whole), so any
    /// LLM benchmark can be pointed at it; its figures are known in closed form (see `reference_llm` in job files).
    ServeReferenceLlm {
        /// Sequences decoded together in one iteration.
        #[arg(long, default_value_t = 8)]
        max_batch: u32,
        /// One decoding iteration's time, before what the batch adds, in milliseconds.
        #[arg(long, default_value_t = 20.0)]
        iteration_ms: f64,
        /// What each sequence in the batch adds to an iteration, in milliseconds.
        #[arg(long, default_value_t = 0.0)]
        per_sequence_ms: f64,
        /// What each prompt token of a joining sequence adds to its first iteration, in milliseconds.
        #[arg(long, default_value_t = 0.0)]
        prefill_ms_per_token: f64,
        /// The KV cache in tokens: a sequence holds its prompt and max_tokens while it runs.
        #[arg(long)]
        kv_cache_tokens: Option<u32>,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// The CPU-hog neighbour `serve-reference --neighbour-busy-percent` starts beside itself.
    #[command(hide = true)]
    Neighbour {
        #[arg(long)]
        busy_percent: f64,
        #[arg(long)]
        period_ms: u64,
        /// The server it takes CPU from: it ends when that process does.
        #[arg(long)]
        server_pid: i32,
    },
    /// Write a new job file from a few flags: a commented job that validates, to edit from there.
    Init {
        /// Where to write it.
        #[arg(long, default_value = "plateau.toml")]
        out: PathBuf,
        /// What to benchmark: plateau's reference endpoint, an HTTP server, a SageMaker endpoint, or a server
        /// plateau starts (command).
        #[arg(long, value_enum, default_value_t = InitKind::Reference)]
        kind: InitKind,
        /// The HTTP server's URL (--kind http).
        #[arg(long, required_if_eq("kind", "http"))]
        url: Option<String>,
        /// The SageMaker endpoint's name (--kind sagemaker).
        #[arg(long, required_if_eq("kind", "sagemaker"))]
        endpoint: Option<String>,
        /// The SageMaker endpoint's region (--kind sagemaker).
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The server to start, words split at spaces, `{port}` where its port goes (--kind command):
        /// --command "python serve.py --port {port}".
        #[arg(long, required_if_eq("kind", "command"))]
        command: Option<String>,
        /// The job's name [default: the file's name].
        #[arg(long)]
        name: Option<String>,
        /// The instance type the server runs on (ml.c6i.xlarge prices a SageMaker endpoint from the built-in table).
        #[arg(long, default_value = "local", required_if_eq("kind", "sagemaker"))]
        instance_type: String,
        /// The instance's price per hour, USD.
        #[arg(long, value_name = "USD")]
        price: Option<f64>,
        /// The p99 latency goal, ms.
        #[arg(long, default_value_t = 100.0)]
        latency_ms: f64,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script: `plateau completions bash > /etc/bash_completion.d/plateau`, or for zsh
    /// into a folder of `$fpath` as `_plateau`, for fish into `~/.config/fish/completions/plateau.fish`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print plateau's man page (roff) on stdout, or write it and one page per subcommand into a folder.
    Man {
        /// Write plateau.1 and plateau-<subcommand>.1 here (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The reference model's flags, as a job file's `reference = { ... }` says it.
#[derive(clap::Args)]
struct ReferenceArgs {
    #[arg(long, env = "PLATEAU_REFERENCE_WORKERS", default_value_t = 4)]
    workers: u32,
    /// Mean service time in milliseconds.
    #[arg(long, env = "PLATEAU_REFERENCE_SERVICE_MS", default_value_t = 20.0)]
    service_ms: f64,
    #[arg(long, env = "PLATEAU_REFERENCE_DISTRIBUTION", value_enum, default_value_t = DistributionArg::Fixed)]
    distribution: DistributionArg,
    /// Coefficient of variation for lognormal service times.
    #[arg(long, env = "PLATEAU_REFERENCE_CV", default_value_t = 0.5)]
    cv: f64,
    /// Bimodal service times: the share of slow requests (0 to 1).
    #[arg(long, env = "PLATEAU_REFERENCE_SLOW_SHARE", default_value_t = 0.1)]
    slow_share: f64,
    /// Bimodal service times: how many times longer a slow request takes.
    #[arg(long, env = "PLATEAU_REFERENCE_SLOW_FACTOR", default_value_t = 5.0)]
    slow_factor: f64,
    /// Every worker pauses this often, in milliseconds (with --stall-pause-ms).
    #[arg(long, env = "PLATEAU_REFERENCE_STALL_EVERY_MS", requires = "stall_pause_ms")]
    stall_every_ms: Option<f64>,
    /// How long each stall lasts, in milliseconds.
    #[arg(long, env = "PLATEAU_REFERENCE_STALL_PAUSE_MS", requires = "stall_every_ms")]
    stall_pause_ms: Option<f64>,
    /// Capacity changes by this share of nominal each minute.
    #[arg(long, env = "PLATEAU_REFERENCE_DRIFT_PERCENT_PER_MIN", default_value_t = 0.0, allow_negative_numbers = true)]
    drift_percent_per_min: f64,
    /// What service is spent on: `clock` waits on a virtual clock (capacity as modelled, whatever the machine
    /// does); `cpu` computes on a thread per worker, so capacity is what the CPU the server gets allows.
    #[arg(long, env = "PLATEAU_REFERENCE_WORK", value_enum, default_value_t = WorkArg::Clock)]
    work: WorkArg,
    /// With `--work cpu`: a neighbour process keeps every CPU the server may use busy for this share of each
    /// period, as another tenant would (0 for none). With a worker per CPU, capacity falls to about
    /// 1 - share / 200 of what it was.
    #[arg(long, env = "PLATEAU_REFERENCE_NEIGHBOUR_BUSY_PERCENT", default_value_t = 0.0)]
    neighbour_busy_percent: f64,
    /// The neighbour's period, in milliseconds.
    #[arg(long, env = "PLATEAU_REFERENCE_NEIGHBOUR_PERIOD_MS", default_value_t = 100)]
    neighbour_period_ms: u64,
}

impl ReferenceArgs {
    /// The model and what its service is spent on, or which flag is out of range.
    fn model(&self) -> Result<(ReferenceModel, Work), &'static str> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        if self.workers == 0 || !positive(self.service_ms) {
            return Err("--workers must be at least 1 and --service-ms positive");
        }
        let service_time = match self.distribution {
            DistributionArg::Fixed => ServiceTime::Fixed,
            DistributionArg::Exponential => ServiceTime::Exponential,
            DistributionArg::Lognormal if positive(self.cv) => ServiceTime::Lognormal { cv: self.cv },
            DistributionArg::Lognormal => return Err("--cv must be positive"),
            DistributionArg::Bimodal if (0.0..=1.0).contains(&self.slow_share) && self.slow_factor > 1.0 => {
                ServiceTime::Bimodal { slow_share: self.slow_share, slow_factor: self.slow_factor }
            }
            DistributionArg::Bimodal => return Err("--slow-share must be between 0 and 1 and --slow-factor above 1"),
        };
        let stalls = match (self.stall_every_ms, self.stall_pause_ms) {
            (Some(every_ms), Some(pause_ms)) if positive(pause_ms) && every_ms >= 10.0 && pause_ms < every_ms / 2.0 => {
                Some(Stalls { every_ms, pause_ms })
            }
            (Some(_), Some(_)) => {
                return Err("--stall-every-ms must be 10 or more and --stall-pause-ms under half of it");
            }
            _ => None,
        };
        if !(-50.0..=50.0).contains(&self.drift_percent_per_min) {
            return Err("--drift-percent-per-min must be between -50 and 50");
        }
        let busy_percent = self.neighbour_busy_percent;
        if !(0.0..=100.0).contains(&busy_percent) || self.neighbour_period_ms < 10 {
            return Err("--neighbour-busy-percent must be between 0 and 100 and --neighbour-period-ms 10 or more");
        }
        let neighbour = (busy_percent > 0.0)
            .then(|| Neighbour { busy_percent, period: Duration::from_millis(self.neighbour_period_ms) });
        let work = match (self.work, neighbour) {
            (WorkArg::Clock, None) => Work::Clock,
            (WorkArg::Clock, Some(_)) => {
                return Err("a neighbour takes capacity only from computed service: add --work cpu");
            }
            (WorkArg::Cpu, _) if stalls.is_some() => {
                return Err("stalls pause the virtual clock: with --work cpu, take capacity with a neighbour instead");
            }
            (WorkArg::Cpu, neighbour) => Work::Cpu { neighbour },
        };
        let model = ReferenceModel {
            stalls,
            drift_percent_per_min: self.drift_percent_per_min,
            ..ReferenceModel::steady(self.workers, self.service_ms, service_time)
        };
        Ok((model, work))
    }
}

#[derive(Subcommand)]
enum PayloadCommand {
    /// Print the first requests the job's payload produces (body, content type, headers, path), as a run would
    /// for its first configuration, without sending anything.
    Preview {
        /// The job file (TOML).
        job: PathBuf,
        /// How many requests.
        #[arg(short = 'n', long, default_value_t = 5)]
        count: u64,
        /// Show at most this many bytes of each body.
        #[arg(long, default_value_t = 512)]
        max_bytes: usize,
        /// Print no requests, only how long generating them took (ns per request) and their sizes.
        #[arg(long)]
        stats: bool,
    },
}

/// What the command line changes in the job file; a run records it, and `--resume` applies it again.
#[derive(clap::Args)]
struct OverrideArgs {
    /// Set a job-file key for this run, as TOML (a bare word is a string): `--set traffic.stairs.steps=4`,
    /// `--set target.url=http://127.0.0.1:8080/invoke` (repeatable; applied over the file and its includes).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<spec::SetValue>,
    /// Run only this configuration (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Spend at most this many US dollars of instance time ([limits] max_cost_usd): a job whose worst case is more
    /// does not start, and a run that reaches it stops, deleting what it provisioned.
    #[arg(long, value_name = "USD")]
    max_cost_usd: Option<f64>,
}

impl OverrideArgs {
    fn overrides(self) -> spec::Overrides {
        let budget = self.max_cost_usd.map(|usd| {
            format!("limits.max_cost_usd={usd:?}").parse::<spec::SetValue>().expect("a key path and a TOML float")
        });
        spec::Overrides { set: self.set.into_iter().chain(budget).collect(), only: self.only }
    }
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A folder of templates that replace the built-in ones of the same name [job file: report.templates].
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Also render this template into the output folder, named as the file less `.j2` (repeatable).
    #[arg(long = "template", value_name = "FILE")]
    extra: Vec<PathBuf>,
}

impl ReportArgs {
    fn options(self) -> report::ReportOptions {
        report::ReportOptions { templates: self.templates, extra: self.extra }
    }
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// The history's SQLite file [default: $XDG_DATA_HOME/plateau/history.sqlite3, else
    /// ~/.local/share/plateau/history.sqlite3]; `off` records nothing.
    #[arg(long = "history", value_name = "FILE", env = "PLATEAU_HISTORY")]
    file: Option<PathBuf>,
}

impl HistoryArgs {
    /// The history's file, or none when it is turned off or there is no home to keep it in.
    fn path(self) -> Option<PathBuf> {
        match self.file {
            Some(file) if file.as_os_str() == "off" => None,
            Some(file) => Some(file),
            None => history::default_path(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InitKind {
    Reference,
    Http,
    Sagemaker,
    Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PublishTo {
    /// A git-backed wiki (--repo).
    Git,
    /// Confluence's REST API (--url, --space).
    Confluence,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompareFormat {
    /// Markdown for a pull-request comment: the verdict first, details folded, Mermaid charts.
    #[value(alias = "markdown")]
    Pr,
    Json,
    Junit,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Pr,
    Markdown,
    Html,
    Summary,
    /// Inference Recommender's DescribeInferenceRecommendationsJob response (JSON), for scripts written for IR.
    IrJson,
}

impl ReportFormat {
    /// The template it renders; none for the IR document, which is data.
    fn template(self) -> Option<&'static str> {
        match self {
            ReportFormat::Pr => Some("report.pr.md.j2"),
            ReportFormat::Markdown => Some("report.md.j2"),
            ReportFormat::Html => Some("report.html.j2"),
            ReportFormat::Summary => Some("summary.txt.j2"),
            ReportFormat::IrJson => None,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WorkArg {
    Clock,
    Cpu,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DistributionArg {
    Fixed,
    Lognormal,
    Bimodal,
    Exponential,
}

pub fn main() -> Exit {
    // A usage error is invalid input (exit 1), as a bad job file is; clap's own code, 2, is "the run failed" here.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { Exit::InvalidInput } else { Exit::Success };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::RunFailed;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run {
                job,
                out,
                resume,
                trials,
                json,
                overrides,
                report,
                history,
                no_history,
                segment,
                start_at,
            } => {
                let summary = if json { run::Summary::Json } else { run::Summary::Table };
                let history = if no_history { None } else { history.path() };
                let segment = match segment
                    .map(Ok)
                    .or_else(|| Segment::from_environment(|name| std::env::var(name).ok()).transpose())
                {
                    Some(Ok(segment)) => Some(segment),
                    None => None,
                    Some(Err(error)) => {
                        eprintln!("error: {error}");
                        return Ok(Exit::InvalidInput);
                    }
                };
                if start_at.is_some() && segment.is_none() {
                    eprintln!("error: --start-at aligns the shards of a run; give --segment INDEX/COUNT too");
                    return Ok(Exit::InvalidInput);
                }
                let destination = match Destination::of(out, segment) {
                    Ok(destination) => destination,
                    Err(exit) => return Ok(exit),
                };
                // clap asks for one of the two; both absent cannot reach here, and would be invalid input.
                match (job, resume) {
                    (_, Some(folder)) => {
                        run::run(run::Launch::Resume { folder }, report.options(), summary, history).await
                    }
                    (Some(job), None) => {
                        let overrides = overrides.overrides();
                        let out = destination.local();
                        let launch = run::Launch::New { job, out, trials, overrides, segment, start_at };
                        let exit = run::run(launch, report.options(), summary, history).await?;
                        destination.deliver(exit).await
                    }
                    (None, None) => Ok(Exit::InvalidInput),
                }
            }
            Command::Merge { folders, out, json, report, history } => {
                let summary = if json { run::Summary::Json } else { run::Summary::Table };
                let downloads = tempfile::tempdir().context("cannot create a folder for downloaded shards")?;
                let (folders, first_s3) = match fetch_shards(folders, downloads.path()).await {
                    Ok(fetched) => fetched,
                    Err(exit) => return Ok(exit),
                };
                // Shards in S3 merge into S3 by default: `merged` beside the first shard, as for local folders.
                let out = out.or_else(|| {
                    first_s3.map(|location| {
                        let parent = location.prefix().rsplit_once('/').map_or("", |(parent, _)| parent);
                        let merged = if parent.is_empty() { "merged".to_string() } else { format!("{parent}/merged") };
                        PathBuf::from(location.with_prefix(merged).to_string())
                    })
                });
                let destination = match Destination::of(out, None) {
                    Ok(destination) => destination,
                    Err(exit) => return Ok(exit),
                };
                let exit = run::merge(&folders, destination.local(), &report.options(), summary, history.path())?;
                destination.deliver(exit).await
            }
            Command::Cleanup { folder } => Ok(cleanup(&folder).await),
            Command::Validate { files, format } => Ok(validate(&files, format)),
            Command::Plan { job, overrides, format } => Ok(show_plan(&job, &overrides.overrides(), format)),
            Command::ImportSagemaker { request, out } => import_sagemaker(&request, out.as_deref()),
            Command::PriceTable { files, region, regions, out } => {
                price_table(&files, &region, &regions, out.as_deref())
            }
            Command::Schema => {
                println!("{}", serde_json::to_string_pretty(&spec::json_schema())?);
                Ok(Exit::Success)
            }
            Command::Payload(PayloadCommand::Preview { job, count, max_bytes, stats }) => {
                Ok(preview_payload(&job, count, max_bytes, stats))
            }
            Command::Compare {
                results,
                against_history,
                branch,
                last,
                history,
                fail_on,
                fail_on_inconclusive,
                format,
                out,
            } => {
                let sides = match (against_history, results.as_slice()) {
                    (false, [base, head]) => Sides::Files { base, head },
                    (true, [head]) => Sides::History { head, branch: branch.as_deref(), last, history: history.path() },
                    (false, _) => {
                        eprintln!("error: compare takes BASE and HEAD, or HEAD alone with --against-history");
                        return Ok(Exit::InvalidInput);
                    }
                    (true, _) => {
                        eprintln!("error: with --against-history, compare takes HEAD alone: the history is the base");
                        return Ok(Exit::InvalidInput);
                    }
                };
                compare(sides, &fail_on, fail_on_inconclusive, format, out.as_deref())
            }
            Command::History { job, branch, last, configuration, format, import, history } => {
                show_history(job, branch, last, configuration, format, import, history.path())
            }
            Command::Report { results, out, format: None, report } => rerender(&results, out, report.options()),
            Command::Report { results, format: Some(format), report, .. } => {
                print_report(&results, format, report.options())
            }
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "plateau", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Man { out } => man_pages(out.as_deref()),
            // clap cannot require --repo for the default `--to git`: said here, as clap would.
            Command::Publish { results, to, repo, branch, folder, url, space, parent, templates } => {
                match (to, repo, url, space) {
                    (PublishTo::Git, Some(repository), _, _) => {
                        let folder = folder.unwrap_or_default();
                        let target = publish::git_wiki::WikiTarget { repository, branch, folder, templates };
                        publish_to_wiki(&results, &target)
                    }
                    (PublishTo::Confluence, _, Some(url), Some(space)) => {
                        publish_to_confluence(&results, &url, space, parent, templates).await
                    }
                    (PublishTo::Git, None, _, _) => {
                        eprintln!(
                            "error: publish needs --repo URL (a git-backed wiki), or --to confluence with --url and \
                             --space"
                        );
                        Ok(Exit::InvalidInput)
                    }
                    (PublishTo::Confluence, ..) => {
                        eprintln!("error: publish --to confluence needs --url URL and --space KEY");
                        Ok(Exit::InvalidInput)
                    }
                }
            }
            Command::Init {
                out,
                kind,
                url,
                endpoint,
                region,
                command,
                name,
                instance_type,
                price,
                latency_ms,
                force,
            } => {
                let target = match kind {
                    InitKind::Reference => spec::init::NewTarget::Reference,
                    InitKind::Http => spec::init::NewTarget::Http { url: url.unwrap_or_default() },
                    InitKind::Sagemaker => {
                        spec::init::NewTarget::SageMaker { endpoint_name: endpoint.unwrap_or_default(), region }
                    }
                    InitKind::Command => spec::init::NewTarget::Command {
                        command: command.unwrap_or_default().split_whitespace().map(str::to_string).collect(),
                    },
                };
                let name = name.unwrap_or_else(|| out.file_stem().unwrap_or_default().to_string_lossy().into_owned());
                let new = spec::init::NewJob { name, target, instance_type, price_per_hour_usd: price, latency_ms };
                Ok(init(&out, &new, force))
            }
            Command::ServeReferenceLlm {
                max_batch,
                iteration_ms,
                per_sequence_ms,
                prefill_ms_per_token,
                kv_cache_tokens,
                host,
                port,
            } => {
                let model =
                    LlmModel { max_batch, iteration_ms, per_sequence_ms, prefill_ms_per_token, kv_cache_tokens };
                serve_reference_llm(model, SocketAddr::new(host, port)).await
            }
            Command::Neighbour { busy_percent, period_ms, server_pid } => {
                let neighbour = Neighbour { busy_percent, period: Duration::from_millis(period_ms) };
                // Threads that compute and sleep: nothing here is async.
                server::neighbour::run(neighbour, server_pid).context("the neighbour could not start")?;
                Ok(Exit::Success)
            }
            Command::ServeReference { model, host, port, seed } => match model.model() {
                Ok((model, work)) => serve_reference(model, work, SocketAddr::new(host, port), seed).await,
                Err(problem) => {
                    eprintln!("error: {problem}");
                    Ok(Exit::InvalidInput)
                }
            },
        }
    });
    match outcome {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::RunFailed
        }
    }
}

/// The job's payload plugin loaded as `run` loads it (compiled, its imports linked against what the job grants),
/// so `validate` refuses what `run` would: a file that is not WebAssembly, or one that imports what is not granted.
fn check_plugin(job: &spec::Job) -> Result<(), spec::diagnostic::SpecError> {
    let Some(plugin) = &job.payload.plugin else { return Ok(()) };
    let Err(error) = LoadedPlugin::load(plugin) else { return Ok(()) };
    let span = job.source.text.find("\nplugin").map(|newline| newline + 1..newline + 1 + "plugin".len());
    Err(spec::diagnostic::SpecError {
        diagnostics: vec![spec::diagnostic::Diagnostic {
            file: job.source.path.clone(),
            source: job.source.text.clone(),
            span,
            key_path: "payload.plugin".to_string(),
            message: format!("{error:#}"),
            hint: Some("`plateau payload preview` runs the plugin and shows what it generates".to_string()),
        }],
    })
}

/// `plateau cleanup`: deletes what a run's ledger lists as not deleted; exit 2 if anything is left.
async fn cleanup(folder: &Path) -> Exit {
    if !folder.join(aws::provision::LEDGER_FILE).is_file() {
        eprintln!(
            "error: {} holds no {}: plateau provisioned nothing in that run",
            folder.display(),
            aws::provision::LEDGER_FILE
        );
        return Exit::InvalidInput;
    }
    match aws::provision::cleanup(folder).await {
        Ok(cleaned) => {
            let left: Vec<String> = cleaned
                .iter()
                .filter_map(|item| item.error.as_ref().map(|error| format!("{} {}: {error}", item.resource, item.name)))
                .collect();
            for item in cleaned.iter().filter(|item| item.error.is_none()) {
                eprintln!("deleted {} {}", item.resource, item.name);
            }
            if left.is_empty() {
                eprintln!("plateau: nothing the run provisioned is left ({} deleted now)", cleaned.len());
                Exit::Success
            } else {
                eprintln!("error: not deleted, still listed in the ledger:\n  {}", left.join("\n  "));
                Exit::RunFailed
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::RunFailed
        }
    }
}

fn validate(files: &[PathBuf], format: OutputFormat) -> Exit {
    let mut exit = Exit::Success;
    let mut reports = Vec::new();
    for file in files {
        let outcome = spec::load(file, &spec::Overrides::default()).and_then(|job| check_plugin(&job).map(|()| job));
        if outcome.is_err() {
            exit = Exit::InvalidInput;
        }
        match (format, outcome) {
            (OutputFormat::Text, Ok(job)) => {
                let plan = plan::plan(&job);
                println!("ok: {} ({}, at most {} s)", file.display(), plan.runs_counted(), plan.worst_case_s());
            }
            (OutputFormat::Text, Err(error)) => eprintln!("{error}"),
            (OutputFormat::Json, outcome) => {
                let errors: Vec<serde_json::Value> = outcome
                    .err()
                    .map(|error| error.diagnostics)
                    .unwrap_or_default()
                    .iter()
                    .map(|diagnostic| {
                        let (line, column) = diagnostic.line_column().unzip();
                        serde_json::json!({
                            "file": diagnostic.file, "line": line, "column": column, "key": diagnostic.key_path,
                            "message": diagnostic.message, "hint": diagnostic.hint,
                        })
                    })
                    .collect();
                reports.push(serde_json::json!({ "file": file, "valid": errors.is_empty(), "errors": errors }));
            }
        }
    }
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&reports).expect("JSON values serialize"));
    }
    exit
}

/// The job file, or its errors printed and the exit code that says so.
fn load_job(job_path: &Path, overrides: &spec::Overrides) -> Result<spec::Job, Exit> {
    spec::load(job_path, overrides).map_err(|error| {
        eprintln!("{error}");
        Exit::InvalidInput
    })
}

/// `plateau history`: imports results, lists the jobs, or shows one job's runs oldest first with the median.
fn show_history(
    job: Option<String>,
    branch: Option<String>,
    last: usize,
    configuration: Option<String>,
    format: OutputFormat,
    import: Vec<PathBuf>,
    path: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let Some(path) = path else {
        eprintln!(
            "error: the history is off (PLATEAU_HISTORY=off) or there is no home folder; name a file with --history"
        );
        return Ok(Exit::InvalidInput);
    };
    let mut store = match history::History::open(&path) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::InvalidInput);
        }
    };
    if !import.is_empty() {
        for file in import {
            let results = match results_or_exit(&results_file(&file)) {
                Ok(results) => results,
                Err(exit) => return Ok(exit),
            };
            match store.record(&results)? {
                history::Recorded::Added { id } => {
                    println!("recorded {} as run {id} of job {:?}", file.display(), results.job.name)
                }
                history::Recorded::AlreadyThere { id } => println!("{} is run {id} already", file.display()),
            }
        }
        return Ok(Exit::Success);
    }
    let Some(job) = job else {
        let jobs = store.jobs()?;
        match format {
            OutputFormat::Json => {
                let jobs: Vec<_> = jobs
                    .iter()
                    .map(|(job, runs, newest)| serde_json::json!({"job": job, "runs": runs, "newest": newest}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            }
            OutputFormat::Text if jobs.is_empty() => println!("no runs recorded in {}", path.display()),
            OutputFormat::Text => {
                println!("{:<40} {:>5}  newest run", "job", "runs");
                for (job, runs, newest) in jobs {
                    println!("{job:<40} {runs:>5}  {newest}");
                }
            }
        }
        return Ok(Exit::Success);
    };
    let mut runs = store.runs(&job, branch.as_deref(), false, last)?;
    runs.reverse();
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(Exit::Success);
    }
    if runs.is_empty() {
        let on_branch = branch.map(|branch| format!(" on branch {branch}")).unwrap_or_default();
        eprintln!("error: no run of job {job:?}{on_branch} in {}; `plateau history` lists the jobs", path.display());
        return Ok(Exit::InvalidInput);
    }
    print!("{}", history_table(&job, &runs, configuration.as_deref(), &path));
    Ok(Exit::Success)
}

/// A job's runs as a table within 100 columns: for each, the chosen (or recommended) configuration's figures; then
/// the median of the complete runs and how the newest stands against it.
fn history_table(job: &str, runs: &[history::StoredRun], configuration: Option<&str>, path: &Path) -> String {
    use std::fmt::Write as _;
    fn shown<'r>(run: &'r history::StoredRun, configuration: Option<&str>) -> Option<&'r ConfigurationDigest> {
        let name = configuration.or(run.digest.recommendation.as_deref())?;
        run.digest.configurations.iter().find(|candidate| candidate.name == name)
    }
    let which = configuration.map_or("each run's recommended configuration".to_string(), |name| name.to_string());
    let mut table = format!("{job}: {} runs, oldest first; figures of {which}\n", runs.len());
    let _ = writeln!(
        table,
        "{:<16} {:<18} {:<20} {:>14} {:>9} {:>10}",
        "started (UTC)", "commit", "recommendation", "MaxInv. (/min)", "p99 (ms)", "USD per 1M"
    );
    let figure =
        |value: Option<f64>, decimals: usize| value.map_or("n/a".to_string(), |value| format!("{value:.decimals$}"));
    for run in runs {
        let digest = &run.digest;
        let commit = digest.revision.as_ref().map_or(String::from("-"), |revision| {
            let branch = revision.branch.as_deref().map(|branch| format!(" {branch}")).unwrap_or_default();
            format!("{}{branch}", revision.short())
        });
        let mut recommended = match (&digest.recommendation, digest.initial_instance_count) {
            (Some(name), Some(count)) => format!("{name} ×{count}"),
            (Some(name), None) => name.clone(),
            (None, _) => "none".into(),
        };
        if digest.partial {
            recommended.push_str(" (partial)");
        } else if digest.inconclusive {
            recommended.push_str(" (?)");
        }
        let row = shown(run, configuration);
        let bound = if row.is_some_and(|row| row.lower_bound) { "≥" } else { "" };
        let max = format!("{bound}{}", figure(row.and_then(|row| row.max_invocations), 0));
        let _ = writeln!(
            table,
            "{:<16} {:<18.18} {:<20.20} {max:>14} {:>9} {:>10}",
            digest.started_at.get(..16).unwrap_or(&digest.started_at).replace('T', " "),
            commit,
            recommended,
            figure(row.and_then(|row| row.p99_ms), 1),
            figure(row.and_then(|row| row.cost_per_million_usd), 3),
        );
    }
    let complete: Vec<&history::StoredRun> = runs.iter().filter(|run| !run.digest.partial).collect();
    let median = |pick: fn(&ConfigurationDigest) -> Option<f64>| {
        let mut values: Vec<f64> = complete.iter().filter_map(|run| shown(run, configuration).and_then(pick)).collect();
        values.sort_by(f64::total_cmp);
        (!values.is_empty()).then(|| values[(values.len() - 1) / 2])
    };
    let medians = [
        ("MaxInvocations", median(|row| row.max_invocations), 0),
        ("p99 (ms)", median(|row| row.p99_ms), 1),
        ("USD per 1M", median(|row| row.cost_per_million_usd), 3),
    ];
    let _ = writeln!(
        table,
        "median of {} complete runs: {}",
        complete.len(),
        medians
            .iter()
            .map(|(name, value, decimals)| format!("{name} {}", figure(*value, *decimals)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(table, "history: {}", path.display());
    table
}

fn show_plan(job_path: &Path, overrides: &spec::Overrides, format: OutputFormat) -> Exit {
    let job = match load_job(job_path, overrides) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    let plan = plan::plan(&job);
    let worst_case_usd = plan.worst_case_usd();
    if format == OutputFormat::Json {
        let runs: Vec<serde_json::Value> = plan
            .runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "index": run.index + 1, "test_run": run.label(), "configuration": run.name,
                    "trial": run.trial.as_ref().map(|trial| trial.number), "environment": run.environment,
                    "target": run.target_name,
                    "instance_type": run.configuration.instance_type, "instances": run.configuration.instance_count,
                    "usd_per_hour": run.usd_per_hour(), "price_source": run.configuration.price_source,
                    "at_most_usd": run.worst_case_usd(plan.ramp_s()),
                    "at_most_billed_s": run.worst_case_billed_s(plan.ramp_s()),
                })
            })
            .collect();
        let plan_json = serde_json::json!({
            "job": job.name, "runs": runs, "trials": job.trials, "parallel": plan.parallel,
            "sampled_from": plan.sampled_from, "each_at_most_s": plan.ramp_s(),
            "at_most_s": plan.worst_case_s(), "at_most_usd": worst_case_usd,
        });
        println!("{}", serde_json::to_string_pretty(&plan_json).expect("JSON values serialize"));
        return Exit::Success;
    }
    // The target column only when the job has several to choose from.
    let target_of = |run: &plan::TestRun| run.target_name.clone().unwrap_or_default();
    let target_width = match plan.runs.iter().map(|run| target_of(run).len()).max() {
        Some(width) if width > 0 => width.max("target".len()),
        _ => 0,
    };
    let target_column = |text: &str| if target_width > 0 { format!("{text:<target_width$}  ") } else { String::new() };
    println!(
        "{:>3}  {:<40} {}{:<16} {:>9} {:>10} {:>12}",
        "#",
        "test run",
        target_column("target"),
        "instance type",
        "instances",
        "USD/hour",
        "at most USD"
    );
    for run in &plan.runs {
        let configuration = &run.configuration;
        println!(
            "{:>3}  {:<40} {}{:<16} {:>9} {:>10.3} {:>12.4}",
            run.index + 1,
            run.label(),
            target_column(&target_of(run)),
            configuration.instance_type,
            configuration.instance_count,
            run.usd_per_hour(),
            run.worst_case_usd(plan.ramp_s())
        );
    }
    if let Some(grid) = plan.sampled_from {
        println!(
            "\nlimits.max_tests = {}: a seeded sample of the {grid} combinations, every configuration in it.",
            plan.runs.len()
        );
    }
    let at_once = match plan.parallel {
        1 => "one at a time".to_string(),
        parallel => format!("{parallel} at a time (limits.max_parallel; they share this machine's CPU)"),
    };
    println!(
        "\n{}{}, {at_once}, each at most {} s (warm-up and every step): at most {} s and {:.4} USD of \
         endpoint time.",
        plan.runs_counted(),
        plan.trials_note(),
        plan.ramp_s(),
        plan.worst_case_s(),
        worst_case_usd
    );
    let mut price_sources: Vec<&str> = Vec::new();
    for run in &plan.runs {
        let source = run.configuration.price_source.as_str();
        if source != "job file" && !price_sources.contains(&source) {
            price_sources.push(source);
        }
    }
    for source in price_sources {
        println!("Prices not in the job file: {source}.");
    }
    if let Some(create_s) = plan.runs.iter().find_map(provisioned_create_s) {
        println!(
            "Each endpoint plateau provisions counts as billed from its creation (at most {create_s} s, \
             create_timeout) to its deletion ({} s allowed).",
            plan::DELETE_ALLOWANCE_S
        );
    }
    if let Some(budget) = job.limits.budget {
        let verdict = match (worst_case_usd > budget.max_cost_usd, budget.over_budget) {
            (false, _) => "the worst case is within it".to_string(),
            (true, spec::OverBudget::Refuse) => "the worst case is over it: `plateau run` refuses to start (reduce \
                the grid or the steps, raise it, or set over_budget = \"stop\")"
                .to_string(),
            (true, spec::OverBudget::Stop) => {
                "the worst case is over it: the run stops when its spending reaches it (over_budget = \"stop\")"
                    .to_string()
            }
        };
        println!("Budget: {:.4} USD (limits.max_cost_usd); {verdict}.", budget.max_cost_usd);
    }
    Exit::Success
}

/// How long a provisioned endpoint may take to be created, when `run` provisions one.
fn provisioned_create_s(run: &plan::TestRun) -> Option<u64> {
    match &run.configuration.deployment {
        spec::Deployment::Sagemaker { source: spec::EndpointSource::Provisioned { provision, .. }, .. } => {
            Some(provision.create_timeout.as_secs())
        }
        _ => None,
    }
}

/// Writes the new job file, once it validates (as `plateau validate` would say it) and only over an existing
/// file with `--force`.
fn init(out: &Path, new: &spec::init::NewJob, force: bool) -> Exit {
    if out.exists() && !force {
        eprintln!("error: {} exists; choose another --out, or --force to replace it", out.display());
        return Exit::InvalidInput;
    }
    let text = spec::init::job_text(new);
    if let Err(error) = spec::parse(out, &text) {
        eprintln!("{error}");
        return Exit::InvalidInput;
    }
    if let Err(error) = std::fs::write(out, &text) {
        eprintln!("error: cannot write {}: {error}", out.display());
        return Exit::InvalidInput;
    }
    println!("wrote {}: `plateau plan {0}` shows what it runs, `plateau run {0}` runs it", out.display());
    Exit::Success
}

/// The man pages, generated from the same definitions as `--help`: plateau.1 on stdout, or it and one page per
/// subcommand (plateau-run.1, ...) written into `out`.
fn man_pages(out: Option<&Path>) -> anyhow::Result<Exit> {
    let command = Cli::command();
    let Some(folder) = out else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(Exit::Success);
    };
    std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    let mut pages = vec![("plateau".to_string(), command.clone())];
    pages.extend(command.get_subcommands().map(|sub| (format!("plateau-{}", sub.get_name()), sub.clone())));
    for (name, page) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.name(name.clone())).render(&mut roff)?;
        let path = folder.join(format!("{name}.1"));
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Exit::Success)
}

fn preview_payload(job_path: &Path, count: u64, max_bytes: usize, stats: bool) -> Exit {
    let job = match load_job(job_path, &spec::Overrides::default()) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    let plan = plan::plan(&job);
    let Some(run) = plan.runs.first() else { return Exit::Success };
    let configuration = run.name.as_str();
    let plugin = match job.payload.plugin.as_ref().map(|spec| (spec, LoadedPlugin::load(spec))) {
        Some((spec, Ok(plugin))) => {
            println!("plugin {} ({}), sha256 {}", plugin.name, spec.path.display(), plugin.sha256);
            Some(plugin)
        }
        Some((_, Err(error))) => {
            eprintln!("error: {error:#}");
            return Exit::RunFailed;
        }
        None => None,
    };
    // Timed from the first instantiation, not the load: what a run pays per request.
    let started = std::time::Instant::now();
    let mut stream =
        PayloadSource::for_run(&job.payload, plugin.as_ref(), configuration, run.seeds.payload, Segment::whole())
            .stream();
    let requests: Result<Vec<_>, _> = (0..count).map(|_| stream.next_request()).collect();
    let generation = plugin.is_some().then(|| started.elapsed());
    let requests = match requests {
        Ok(requests) => requests,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::RunFailed;
        }
    };
    if stats {
        let bytes: usize = requests.iter().map(|request| request.body.len()).sum();
        let per_request_ns = generation.map_or(0.0, |elapsed| elapsed.as_nanos() as f64 / count.max(1) as f64);
        println!(
            "{count} requests for `{configuration}`: {per_request_ns:.0} ns per request, {:.0} bytes per body on average",
            bytes as f64 / count.max(1) as f64
        );
        return Exit::Success;
    }
    for (sequence, request) in requests.iter().enumerate() {
        let overrides = request.overrides.as_deref().cloned().unwrap_or_default();
        let content_type = overrides.content_type.as_deref().unwrap_or(&job.payload.content_type);
        println!("\n--- request {sequence} for `{configuration}`: {} bytes, {content_type}", request.body.len());
        if let Some(suffix) = &overrides.path_suffix {
            println!("path suffix: {suffix}");
        }
        for (name, value) in &overrides.headers {
            println!("{name}: {value}");
        }
        println!("{}", printable_prefix(&request.body, max_bytes));
    }
    Exit::Success
}

/// The body as text when it is UTF-8, else as hex; cut at `max_bytes` with a note of what was left out.
fn printable_prefix(body: &[u8], max_bytes: usize) -> String {
    let (mut text, shown) = match std::str::from_utf8(body) {
        Ok(text) => {
            let shown = &text[..text.floor_char_boundary(max_bytes)];
            (shown.chars().map(|c| if c.is_control() && c != '\n' { '\u{fffd}' } else { c }).collect(), shown.len())
        }
        Err(_) => {
            let shown = &body[..body.len().min(max_bytes)];
            (shown.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(" "), shown.len())
        }
    };
    if body.len() > shown {
        text.push_str(&format!("\n... ({} more bytes)", body.len() - shown));
    }
    text
}

fn price_table(files: &[PathBuf], region: &str, regions: &[String], out: Option<&Path>) -> anyhow::Result<Exit> {
    use crate::import::price_list::{Gathered, PriceListFile};
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((path.display().to_string(), text)),
            Err(error) => {
                eprintln!("error: cannot read {}: {error}", path.display());
                return Ok(Exit::InvalidInput);
            }
        }
    }
    let files: Vec<PriceListFile<'_>> =
        texts.iter().map(|(path, text)| PriceListFile { path: path.as_str(), text: text.as_str() }).collect();
    let table = match Gathered::read(&files).and_then(|gathered| gathered.to_table(region, regions)) {
        Ok(table) => table,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::InvalidInput);
        }
    };
    match out {
        Some(path) => std::fs::write(path, &table).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{table}"),
    }
    Ok(Exit::Success)
}

fn import_sagemaker(request_path: &Path, out: Option<&Path>) -> anyhow::Result<Exit> {
    let request = std::fs::read_to_string(request_path)
        .map_err(|error| error.to_string())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|error| error.to_string()));
    let imported =
        request.and_then(|request| crate::import::import_sagemaker(&request).map_err(|error| error.to_string()));
    let imported = match imported {
        Ok(imported) => imported,
        Err(message) => {
            eprintln!("error: {}: {message}", request_path.display());
            return Ok(Exit::InvalidInput);
        }
    };
    for warning in &imported.warnings {
        eprintln!("warning: {warning}");
    }
    // The job file written must be one plateau accepts.
    let checked_as = out.map_or_else(|| PathBuf::from("imported.toml"), Path::to_path_buf);
    if let Err(error) = spec::parse(&checked_as, &imported.toml) {
        eprintln!("{error}\nerror: the imported job file is not valid; this is a bug in plateau import-sagemaker");
        return Ok(Exit::RunFailed);
    }
    match out {
        Some(path) => {
            std::fs::write(path, &imported.toml).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => print!("{}", imported.toml),
    }
    Ok(Exit::Success)
}

/// Where a run or a merge writes: a local folder (or the default one), or S3 through a local copy uploaded at the end.
enum Destination {
    Local(Option<PathBuf>),
    S3(S3Location),
}

impl Destination {
    /// `--out` as given; a shard's `{shard}` in an S3 prefix is its index, as in a local folder's name. An S3
    /// location that cannot be one is invalid input, its reason printed.
    fn of(out: Option<PathBuf>, segment: Option<Segment>) -> Result<Self, Exit> {
        let Some(out) = out else { return Ok(Self::Local(None)) };
        match S3Location::parse(&out.to_string_lossy()) {
            None => Ok(Self::Local(Some(out))),
            Some(location) => {
                let location = location.map_err(|error| {
                    eprintln!("error: --out {error}");
                    Exit::InvalidInput
                })?;
                Ok(Self::S3(match segment {
                    Some(segment) => {
                        location.with_prefix(location.prefix().replace("{shard}", &segment.index().to_string()))
                    }
                    None => location,
                }))
            }
        }
    }

    fn local(&self) -> Option<PathBuf> {
        match self {
            Self::Local(out) => out.clone(),
            Self::S3(location) => Some(location.staging_folder()),
        }
    }

    /// Uploads what the run wrote, whatever its outcome (a partial run's results are results too). An upload that
    /// fails fails the run: its results are where they were written, which the message says.
    async fn deliver(self, exit: Exit) -> anyhow::Result<Exit> {
        let Self::S3(location) = self else { return Ok(exit) };
        let folder = location.staging_folder();
        if !folder.join("results.json").exists() {
            return Ok(exit);
        }
        match s3::upload_folder(&folder, &location).await {
            Ok(files) => {
                eprintln!("plateau: uploaded {files} files to {location}");
                Ok(exit)
            }
            Err(error) => {
                eprintln!("error: {error}; the results are in {}", folder.display());
                Ok(Exit::RunFailed)
            }
        }
    }
}

/// The merge's input folders, each S3 location downloaded into `downloads`; also the first S3 location, if any.
async fn fetch_shards(folders: Vec<PathBuf>, downloads: &Path) -> Result<(Vec<PathBuf>, Option<S3Location>), Exit> {
    let mut local = Vec::new();
    let mut first_s3 = None;
    for (index, folder) in folders.into_iter().enumerate() {
        let location = match S3Location::parse(&folder.to_string_lossy()) {
            None => {
                local.push(folder);
                continue;
            }
            Some(Ok(location)) => location,
            Some(Err(error)) => {
                eprintln!("error: {error}");
                return Err(Exit::InvalidInput);
            }
        };
        let into = downloads.join(index.to_string());
        match s3::download_folder(&location, &into).await {
            Ok(files) => eprintln!("plateau: downloaded {files} files from {location}"),
            Err(error) => {
                eprintln!("error: cannot merge: {error}");
                return Err(Exit::InvalidInput);
            }
        }
        first_s3.get_or_insert(location);
        local.push(into);
    }
    Ok((local, first_s3))
}

/// Reads a whole run's results file, or says why it cannot. A shard's results hold its share of the load only:
/// reported, compared or published as they are, they would read as a run at 1/N of the load.
fn load_results(path: &Path) -> Result<Results, String> {
    let results = Results::load(path).map_err(|error| error.to_string())?;
    match results.manifest.segment {
        Some(segment) => Err(format!(
            "{} is shard {segment}'s results: its figures are its share of the load only; merge the shards first \
             (plateau merge SHARD_FOLDER... --out DIR) and use the merged folder",
            path.display()
        )),
        None => Ok(results),
    }
}

/// A results file, or the exit code for one that cannot be read, its reason printed.
fn results_or_exit(path: &Path) -> Result<Results, Exit> {
    load_results(path).map_err(|message| {
        eprintln!("error: {message}");
        Exit::InvalidInput
    })
}

fn rerender(results_path: &Path, out: Option<PathBuf>, options: report::ReportOptions) -> anyhow::Result<Exit> {
    let results = match results_or_exit(results_path) {
        Ok(results) => results,
        Err(exit) => return Ok(exit),
    };
    let out = out.unwrap_or_else(|| results_path.parent().unwrap_or(Path::new(".")).to_path_buf());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let summary = report::write_all(&results, &out, &options)?;
    print!("{summary}");
    println!("reports: {}", out.display());
    Ok(Exit::Success)
}

/// A results.json, named directly or by the folder that holds it.
fn results_file(path: &Path) -> PathBuf {
    if path.is_dir() { path.join("results.json") } else { path.to_path_buf() }
}

fn publish_to_wiki(results_path: &Path, target: &publish::git_wiki::WikiTarget) -> anyhow::Result<Exit> {
    let results = match results_or_exit(&results_file(results_path)) {
        Ok(results) => results,
        Err(exit) => return Ok(exit),
    };
    let shown = git::redact_url(&target.repository, &target.repository);
    match publish::git_wiki::to_wiki(&results, target) {
        Ok(publish::git_wiki::Published::Pushed { page, commit }) => {
            println!("published {page} to {shown} (commit {})", &commit[..commit.len().min(12)]);
            Ok(Exit::Success)
        }
        Ok(publish::git_wiki::Published::Unchanged { page }) => {
            println!("{page} is already published to {shown} as it is; nothing to push");
            Ok(Exit::Success)
        }
        Err(error @ publish::git_wiki::PublishError::Folder { .. }) => {
            eprintln!("error: --folder {error}");
            Ok(Exit::InvalidInput)
        }
        Err(error) => {
            eprintln!("error: cannot publish to {shown}: {error}");
            Ok(Exit::RunFailed)
        }
    }
}

async fn publish_to_confluence(
    results_path: &Path,
    url: &str,
    space: String,
    parent: Option<String>,
    templates: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    use publish::confluence;
    let target = confluence::base_url(url).and_then(|base_url| {
        let credentials = confluence::Credentials::from_env()?;
        Ok(confluence::ConfluenceTarget { base_url, space, parent, templates, credentials })
    });
    let target = match target {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::InvalidInput);
        }
    };
    let results = match results_or_exit(&results_file(results_path)) {
        Ok(results) => results,
        Err(exit) => return Ok(exit),
    };
    match confluence::publish(&results, &target).await {
        Ok(page) => {
            let how = if page.version == 1 { "created".to_string() } else { format!("version {}", page.version) };
            println!("published {:?} to {} ({how}, {} charts attached)", page.title, page.url, page.attachments);
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("error: cannot publish to Confluence at {}: {error}", target.base_url);
            Ok(Exit::RunFailed)
        }
    }
}

/// One report of a saved results.json, on stdout.
fn print_report(results_path: &Path, format: ReportFormat, options: report::ReportOptions) -> anyhow::Result<Exit> {
    let results = match results_or_exit(results_path) {
        Ok(results) => results,
        Err(exit) => return Ok(exit),
    };
    let Some(template) = format.template() else {
        let document = report::ir::describe_job(&results);
        println!("{}", serde_json::to_string_pretty(&document).expect("JSON values serialise"));
        return Ok(Exit::Success);
    };
    let env = report::environment(options.templates.as_deref());
    let view = report::view(&results, &env)?;
    print!("{}", report::render(&env, template, &view)?);
    Ok(Exit::Success)
}

/// What `compare` compares: two results files, or one against the history's median.
enum Sides<'a> {
    Files { base: &'a Path, head: &'a Path },
    History { head: &'a Path, branch: Option<&'a str>, last: u32, history: Option<PathBuf> },
}

/// The base for `compare --against-history`: the median of the newest `last` complete runs of `head`'s job.
fn history_base(
    head: &Results,
    branch: Option<&str>,
    last: u32,
    path: Option<PathBuf>,
) -> Result<(Results, report::compare::HistoryBase), String> {
    let path = path.ok_or("--against-history needs a history: there is no home folder; name one with --history")?;
    let store = history::History::open(&path).map_err(|error| error.to_string())?;
    let job = &head.job.name;
    // The run under review may be recorded already (plateau run records every run): it is not its own base.
    let stored = store.runs(job, branch, true, last as usize + 1).map_err(|error| error.to_string())?;
    let stored: Vec<_> = stored
        .into_iter()
        .filter(|run| run.digest.started_at != head.manifest.started_at)
        .take(last as usize)
        .collect();
    let on_branch = branch.map(|branch| format!(" on branch {branch}")).unwrap_or_default();
    if stored.is_empty() {
        return Err(format!(
            "the history {} has no complete run of job {job:?}{on_branch} to compare with; record runs with `plateau \
             run` or `plateau history --import RESULTS`",
            path.display()
        ));
    }
    let runs = stored.iter().map(|run| store.results(run.id)).collect::<Result<Vec<_>, _>>();
    let runs = runs.map_err(|error| error.to_string())?;
    let baseline = history::median_baseline(&runs).expect("at least one run");
    let summary = report::compare::HistoryBase {
        runs: runs.len(),
        branch: branch.map(str::to_string),
        from: stored.last().map(|run| run.digest.started_at.clone()).unwrap_or_default(),
        to: stored[0].digest.started_at.clone(),
    };
    Ok((baseline, summary))
}

fn compare(
    sides: Sides<'_>,
    fail_on: &[String],
    fail_on_inconclusive: bool,
    format: CompareFormat,
    out: Option<&Path>,
) -> anyhow::Result<Exit> {
    let rules = fail_on
        .iter()
        .map(|rule| rule.parse().map_err(|error: RuleError| error.to_string()))
        .collect::<Result<Vec<FailRule>, String>>();
    // Base and head, and the history's summary when the base is its median; every input's error is printed.
    let sides = match sides {
        Sides::Files { base, head } => match (load_results(base), load_results(head)) {
            (Ok(base), Ok(head)) => Ok((base, head, None)),
            (base, head) => Err([base.err(), head.err()].into_iter().flatten().collect()),
        },
        Sides::History { head, branch, last, history } => load_results(&results_file(head))
            .and_then(|head| {
                let (base, summary) = history_base(&head, branch, last, history)?;
                Ok((base, head, Some(summary)))
            })
            .map_err(|message| vec![message]),
    };
    let (base, head, history_base, rules) = match (sides, rules) {
        (Ok((base, head, summary)), Ok(rules)) => (base, head, summary, rules),
        (sides, rules) => {
            for message in sides.err().into_iter().flatten().chain(rules.err()) {
                eprintln!("error: {message}");
            }
            return Ok(Exit::InvalidInput);
        }
    };
    let comparison =
        report::compare::Comparison { history: history_base, ..report::compare::compare(&base, &head, &rules) };
    let env = report::environment(None);
    let text = match format {
        CompareFormat::Pr => report::render(&env, "compare.md.j2", &report::compare::view(&comparison))?,
        CompareFormat::Junit => report::render(&env, "compare.junit.xml.j2", &comparison)?,
        CompareFormat::Json => serde_json::to_string_pretty(&comparison)? + "\n",
    };
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(if !comparison.fired.is_empty() {
        Exit::Regression
    } else if fail_on_inconclusive && !comparison.inconclusive.is_empty() {
        Exit::Inconclusive
    } else {
        Exit::Success
    })
}

/// `--start-at`: an RFC 3339 time in UTC.
fn parse_start_at(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text).map_err(|error| format!("{error}: write a UTC time like 2026-12-03T15:00:00Z"))
}

async fn serve_reference(model: ReferenceModel, work: Work, address: SocketAddr, seed: u64) -> anyhow::Result<Exit> {
    let server = ReferenceServer::start(model, work, seed, address, std::time::Instant::now())
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let work = match work {
        Work::Clock => String::new(),
        Work::Cpu { neighbour: None } => ", computed".to_string(),
        Work::Cpu { neighbour: Some(neighbour) } => format!(
            ", computed, beside a neighbour busy {}% of every {} ms",
            neighbour.busy_percent,
            neighbour.period.as_millis()
        ),
    };
    println!(
        "reference endpoint: {} ({} workers x {} ms{work}, capacity {:.1} requests/s); Ctrl-C stops it",
        server.url(),
        model.workers,
        model.service_time_ms,
        model.capacity_rps()
    );
    tokio::select! {
        _ = run::shutdown_signal() => {}
        _ = server.run_until_stopped() => {}
    }
    // The truth a benchmark of it is checked against, in its log when it runs as a command target.
    println!("realized: {}", serde_json::to_string(&server.realized())?);
    Ok(Exit::Success)
}

async fn serve_reference_llm(model: LlmModel, address: SocketAddr) -> anyhow::Result<Exit> {
    let valid = |ms: f64| ms.is_finite() && ms >= 0.0;
    let usable = model.max_batch > 0
        && valid(model.iteration_ms)
        && model.iteration_ms > 0.0
        && valid(model.per_sequence_ms)
        && valid(model.prefill_ms_per_token)
        && model.kv_cache_tokens != Some(0);
    if !usable {
        eprintln!(
            "plateau: --max-batch and --kv-cache-tokens must be at least 1, --iteration-ms positive, the other times 0 \
             or more"
        );
        return Ok(Exit::InvalidInput);
    }
    let server = LlmServer::start(model, address).await.with_context(|| format!("cannot listen on {address}"))?;
    let (ttft_ms, gap_ms) = model.unloaded_ms(0);
    println!(
        "reference LLM endpoint: {} (batch {}, {ttft_ms:.1} ms to the first token of an empty prompt alone, {gap_ms:.1} \
         ms a token); Ctrl-C stops it",
        server.url(),
        model.max_batch,
    );
    tokio::select! {
        _ = run::shutdown_signal() => {}
        _ = server.run_until_stopped() => {}
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (names that conflicts and requirements refer to, duplicate flags), which
    /// completions and man pages rely on.
    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
