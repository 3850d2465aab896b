//! Planning: the validated job expanded into the ordered list of test runs (one per configuration and
//! environment combination), each with what the run loop needs decided once (its name, seeds and file names), and
//! the traffic pattern turned into the `Schedule` every run follows.

mod schedule;
mod segment;

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};

use crate::spec::{Configuration, Deployment, EndpointSource, Job};
pub use schedule::{LoadUnit, Schedule, StepRole, StepWindow};
pub use segment::{COUNT_VARIABLE, INDEX_VARIABLES, MAX_SEGMENTS, Segment, SegmentError};

#[derive(Debug, Clone)]
pub struct TestRun {
    pub index: usize,
    /// The configuration's name, with its environment combination when it has one: `cpu (THREADS=2)`.
    pub name: String,
    pub configuration: Configuration,
    /// The environment variables this run sets (one value of each of the configuration's parameters).
    pub environment: BTreeMap<String, String>,
    /// The `<name>` of the `[targets.<name>]` it runs against, when the job names its targets.
    pub target_name: Option<String>,
    pub seeds: RunSeeds,
    /// `01-medium`, `03-medium-t2`: what the run's files in the output folder are named after.
    pub file_stem: String,
    /// Which of the configuration's trials this is, when the job runs more than one.
    pub trial: Option<Trial>,
}

/// The time allowed for deleting a provisioned endpoint in the worst case: SageMaker takes a minute or two, and its
/// instances are billed until it is gone.
pub const DELETE_ALLOWANCE_S: u64 = 300;

impl TestRun {
    /// What the test run's instances cost per hour.
    pub fn usd_per_hour(&self) -> f64 {
        self.configuration.price_per_hour_usd * f64::from(self.configuration.instance_count)
    }

    /// The longest this test run's instances are billed for: a ramp of `ramp_s`, and for an endpoint plateau
    /// provisions, the longest its creation may take (`create_timeout`) and its deletion.
    pub fn worst_case_billed_s(&self, ramp_s: u64) -> u64 {
        match &self.configuration.deployment {
            Deployment::Sagemaker { source: EndpointSource::Provisioned { provision, .. }, .. } => {
                provision.create_timeout.as_secs() + ramp_s + DELETE_ALLOWANCE_S
            }
            _ => ramp_s,
        }
    }

    /// The most the test run can cost.
    pub fn worst_case_usd(&self, ramp_s: u64) -> f64 {
        self.usd_per_hour() * self.worst_case_billed_s(ramp_s) as f64 / 3600.0
    }
}

/// One of `of` runs of the same configuration (`[job] trials`), numbered from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    pub number: u32,
    pub of: u32,
}

impl std::fmt::Display for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trial {}/{}", self.number, self.of)
    }
}

/// A test run's seeds, each derived from `[job] seed` and the run's position, so a job replays the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSeeds {
    /// The open model's Poisson arrivals.
    pub arrivals: u64,
    /// The reference endpoint's service times.
    pub service_times: u64,
    /// A payload plugin's: each request is seeded from this and its sequence number.
    pub payload: u64,
}

/// SplitMix64's finalizer: inputs that differ in one bit give unrelated outputs.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

impl RunSeeds {
    fn new(job_seed: u64, index: usize) -> Self {
        // Each stream of each run from its own seed: arrivals and service times drawn from one sequence would be
        // correlated (with Poisson arrivals and exponential service, every service time a fixed share of the gap
        // after it, so no request ever queued).
        let stream = |kind: u64| mix(mix(job_seed) ^ ((index as u64) << 2 | kind));
        Self {
            arrivals: stream(1),
            service_times: stream(2),
            // Configurations get the same requests, so their figures compare like with like.
            payload: job_seed,
        }
    }
}

impl TestRun {
    /// Its name, with its trial when the job runs more than one: `medium (trial 2/3)`.
    pub fn label(&self) -> String {
        match self.trial {
            Some(trial) => format!("{} ({trial})", self.name),
            None => self.name.clone(),
        }
    }

    /// The per-second histograms, relative to the output folder.
    pub fn series_file(&self) -> String {
        format!("series/{}.jsonl", self.file_stem)
    }

    /// The server's output (command targets only), relative to the output folder.
    pub fn log_file(&self) -> Option<String> {
        matches!(self.configuration.deployment, Deployment::Command { .. })
            .then(|| format!("logs/{}.log", self.file_stem))
    }
}

/// A name made safe for a file or folder: letters, digits, `-`, `_` and `.`, the rest as `-`.
pub fn file_stem(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let trimmed = safe.trim_matches(['-', '.']);
    if trimmed.is_empty() { "unnamed".to_string() } else { trimmed.chars().take(64).collect() }
}

/// What the files of the `index`th test run (from 0) are named after: `01-medium`, or `03-medium-t2` for a
/// configuration's second trial.
pub fn run_file_stem(index: usize, name: &str, trial: Option<Trial>) -> String {
    match trial {
        Some(trial) => format!("{:02}-{}-t{}", index + 1, file_stem(name), trial.number),
        None => format!("{:02}-{}", index + 1, file_stem(name)),
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<TestRun>,
    /// The ramp every run follows: warm-up and steps.
    pub schedule: Schedule,
    /// The full grid's size, when `limits.max_tests` made the plan a sample of it.
    pub sampled_from: Option<usize>,
    /// Test runs at once (`limits.max_parallel`, default 1).
    pub parallel: usize,
    /// Runs of each configuration (`[job] trials`).
    pub trials: u32,
}

impl Plan {
    /// One run's full ramp, in seconds: warm-up and every step.
    pub fn ramp_s(&self) -> u64 {
        self.schedule.duration_s()
    }

    /// "1 test run", "12 test runs".
    pub fn runs_counted(&self) -> String {
        match self.runs.len() {
            1 => "1 test run".to_string(),
            count => format!("{count} test runs"),
        }
    }

    /// ` (3 trials of each configuration, interleaved)` when there are trials, to follow a count of test runs.
    pub fn trials_note(&self) -> String {
        if self.trials > 1 {
            format!(" ({} trials of each configuration, interleaved)", self.trials)
        } else {
            String::new()
        }
    }

    /// The longest the job can take: every ramp run in full (and every endpoint created and deleted as slowly as
    /// allowed), `parallel` at a time.
    pub fn worst_case_s(&self) -> u64 {
        let longest = self.runs.iter().map(|run| run.worst_case_billed_s(self.ramp_s())).max().unwrap_or(0);
        longest * self.runs.len().div_ceil(self.parallel) as u64
    }

    /// The most the job can cost: every test run's instances for its worst case.
    pub fn worst_case_usd(&self) -> f64 {
        self.runs.iter().map(|run| run.worst_case_usd(self.ramp_s())).sum()
    }
}

pub fn plan(job: &Job) -> Plan {
    let mut grid: Vec<(&Configuration, BTreeMap<String, String>)> = Vec::new();
    for configuration in &job.configurations {
        grid.extend(
            configuration.deployment.environments().into_iter().map(|environment| (configuration, environment)),
        );
    }
    let chosen: Vec<usize> = match job.limits.max_tests.map(|max| max as usize).filter(|max| *max < grid.len()) {
        Some(max) => sample(&grid, max, job.seed),
        None => (0..grid.len()).collect(),
    };
    let sampled_from = (chosen.len() < grid.len()).then_some(grid.len());
    // Trial-major, each trial in the opposite order to the one before (A B C, C B A, A B C): a slow drift of the
    // machine falls on every configuration alike, and a linear one cancels over each pair of trials.
    let trials = (1..=job.trials).map(|number| (job.trials > 1).then_some(Trial { number, of: job.trials }));
    let runs: Vec<TestRun> = trials
        .flat_map(|trial| {
            let order: Vec<usize> = match trial {
                Some(trial) if trial.number % 2 == 0 => chosen.iter().rev().copied().collect(),
                _ => chosen.clone(),
            };
            order.into_iter().map(move |at| (trial, at))
        })
        .enumerate()
        .map(|(index, (trial, at))| {
            let (configuration, environment) = grid[at].clone();
            let name = if environment.is_empty() {
                configuration.name.clone()
            } else {
                let settings: Vec<String> = environment.iter().map(|(name, value)| format!("{name}={value}")).collect();
                format!("{} ({})", configuration.name, settings.join(", "))
            };
            TestRun {
                index,
                file_stem: run_file_stem(index, &name, trial),
                name,
                trial,
                target_name: job.targets[configuration.target].name.clone(),
                seeds: RunSeeds::new(job.seed, index),
                configuration: configuration.clone(),
                environment,
            }
        })
        .collect();
    let parallel = job.limits.max_parallel.map_or(1, |parallel| parallel as usize).clamp(1, runs.len().max(1));
    Plan {
        runs,
        schedule: Schedule::new(&job.traffic, &job.traffic_options),
        sampled_from,
        parallel,
        trials: job.trials,
    }
}

/// `max` of the grid's entries, seeded: one of each configuration's first (validation ensures there is room), then
/// the rest at random; their indices in the grid's order.
fn sample(grid: &[(&Configuration, BTreeMap<String, String>)], max: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_configuration: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, (configuration, _)) in grid.iter().enumerate() {
        by_configuration.entry(configuration.name.as_str()).or_default().push(index);
    }
    let mut chosen: BTreeSet<usize> =
        by_configuration.values().filter_map(|indices| indices.choose(&mut rng).copied()).take(max).collect();
    let mut rest: Vec<usize> = (0..grid.len()).filter(|index| !chosen.contains(index)).collect();
    rest.shuffle(&mut rng);
    chosen.extend(rest.into_iter().take(max.saturating_sub(chosen.len())));
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_interleave_configurations_each_in_the_opposite_order_to_the_one_before() {
        let text = "version = 1\n[job]\nname = \"t\"\ntrials = 3\n[target]\nkind = \"reference\"\n\
                    [payload]\nbody = \"{}\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"5s\"\nsteps = 2\n\
                    [[configurations]]\nname = \"a\"\ninstance_type = \"ref.a\"\nprice_per_hour_usd = 1\n\
                    reference = { workers = 1, service_time_ms = 10 }\n\
                    [[configurations]]\nname = \"b\"\ninstance_type = \"ref.b\"\nprice_per_hour_usd = 1\n\
                    reference = { workers = 1, service_time_ms = 10 }\n";
        let job = crate::spec::parse(std::path::Path::new("trials.toml"), text).unwrap();
        let plan = plan(&job);
        let stems: Vec<&str> = plan.runs.iter().map(|run| run.file_stem.as_str()).collect();
        assert_eq!(stems, ["01-a-t1", "02-b-t1", "03-b-t2", "04-a-t2", "05-a-t3", "06-b-t3"]);
        assert_eq!(plan.runs[2].trial, Some(Trial { number: 2, of: 3 }));
        assert_eq!(plan.runs[2].name, "b", "a trial keeps its configuration's name");
        let seeds: BTreeSet<u64> = plan.runs.iter().map(|run| run.seeds.service_times).collect();
        assert_eq!(seeds.len(), 6, "every trial draws its own service times");
        assert_eq!(plan.worst_case_s(), 6 * plan.ramp_s());
        let once = crate::spec::parse(std::path::Path::new("once.toml"), &text.replace("trials = 3\n", "")).unwrap();
        let stems: Vec<String> = super::plan(&once).runs.into_iter().map(|run| run.file_stem).collect();
        assert_eq!(stems, ["01-a", "02-b"]);
        let error = crate::spec::parse(std::path::Path::new("t.toml"), &text.replace("trials = 3", "trials = 0"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("job.trials") && error.contains("must be between 1 and 100"), "{error}");
    }

    #[test]
    fn a_grid_larger_than_max_tests_is_sampled_covering_every_configuration() {
        let text = |max_tests: u32| {
            format!(
                "version = 1\n[job]\nname = \"grid\"\nseed = 9\n[target]\nkind = \"command\"\ncommand = [\"server\", \"{{port}}\"]\n\
                 [payload]\nbody = \"{{}}\"\n[traffic.stairs]\nusers_per_step = 1\nstep_duration = \"5s\"\nsteps = 2\n\
                 [limits]\nmax_tests = {max_tests}\n\
                 [[configurations]]\nname = \"a\"\ninstance_type = \"local\"\nprice_per_hour_usd = 1\n\
                 environment = {{ X = [\"1\", \"2\", \"3\"], Y = [\"1\", \"2\", \"3\"] }}\n\
                 [[configurations]]\nname = \"b\"\ninstance_type = \"local\"\nprice_per_hour_usd = 1\n\
                 environment = {{ X = [\"1\", \"2\"] }}\n"
            )
        };
        let job = crate::spec::parse(std::path::Path::new("grid.toml"), &text(4)).unwrap();
        let plan = plan(&job);
        assert_eq!((plan.runs.len(), plan.sampled_from), (4, Some(11)));
        assert!(plan.runs.iter().any(|run| run.configuration.name == "a"));
        assert!(plan.runs.iter().any(|run| run.configuration.name == "b"));
        assert_eq!(plan.runs.iter().map(|run| run.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let again = super::plan(&job);
        assert_eq!(
            plan.runs.iter().map(|run| &run.name).collect::<Vec<_>>(),
            again.runs.iter().map(|run| &run.name).collect::<Vec<_>>(),
            "the sample is seeded"
        );
        let error = crate::spec::parse(std::path::Path::new("grid.toml"), &text(1)).unwrap_err().to_string();
        assert!(
            error.contains("limits.max_tests") && error.contains("cannot cover the job's 2 configurations"),
            "{error}"
        );
    }
}
