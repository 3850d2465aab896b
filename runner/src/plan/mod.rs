//! Planning: the validated job expanded into the ordered list of test runs (one per configuration and
//! environment combination), with the time they will take at most.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};

use crate::spec::{Configuration, Job, combinations};

mod schedule;
pub use schedule::{LoadUnit, Schedule, StepWindow};

#[derive(Debug, Clone)]
pub struct TestRun {
    pub index: usize,
    /// The configuration's name, with its environment combination when it has one: `cpu (THREADS=2)`.
    pub name: String,
    pub configuration: Configuration,
    /// The environment variables this run sets (one value of each of the configuration's parameters).
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<TestRun>,
    /// One configuration's full ramp, in seconds.
    pub ramp_s: u64,
    /// The full grid's size, when `limits.max_tests` made the plan a sample of it.
    pub sampled_from: Option<usize>,
    /// Test runs at once (`limits.max_parallel`, default 1).
    pub parallel: usize,
}

impl Plan {
    /// The longest the job can take: every ramp run in full, `parallel` at a time.
    pub fn worst_case_s(&self) -> u64 {
        self.ramp_s * self.runs.len().div_ceil(self.parallel) as u64
    }
}

pub fn plan(job: &Job) -> Plan {
    let mut runs = Vec::new();
    for configuration in &job.configurations {
        for environment in combinations(&configuration.environment) {
            let name = if environment.is_empty() {
                configuration.name.clone()
            } else {
                let settings: Vec<String> = environment.iter().map(|(name, value)| format!("{name}={value}")).collect();
                format!("{} ({})", configuration.name, settings.join(", "))
            };
            runs.push(TestRun { index: runs.len(), name, configuration: configuration.clone(), environment });
        }
    }
    let grid = runs.len();
    let (runs, sampled_from) = match job.limits.max_tests.map(|max| max as usize).filter(|max| *max < grid) {
        Some(max) => (sample(runs, max, job.seed), Some(grid)),
        None => (runs, None),
    };
    let parallel = job.limits.max_parallel.map_or(1, |parallel| parallel as usize).clamp(1, runs.len().max(1));
    Plan { runs, ramp_s: job.ramp_s(), sampled_from, parallel }
}

/// `max` of the runs, seeded: one of each configuration's first (validation ensures there is room), then the rest
/// at random; in their original order.
fn sample(runs: Vec<TestRun>, max: usize, seed: u64) -> Vec<TestRun> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_configuration: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for run in &runs {
        by_configuration.entry(run.configuration.name.as_str()).or_default().push(run.index);
    }
    let mut chosen: BTreeSet<usize> =
        by_configuration.values().filter_map(|indices| indices.choose(&mut rng).copied()).take(max).collect();
    let mut rest: Vec<usize> = (0..runs.len()).filter(|index| !chosen.contains(index)).collect();
    rest.shuffle(&mut rng);
    chosen.extend(rest.into_iter().take(max.saturating_sub(chosen.len())));
    runs.into_iter()
        .filter(|run| chosen.contains(&run.index))
        .enumerate()
        .map(|(index, run)| TestRun { index, ..run })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_cover_the_grid_in_order() {
        let parameters = BTreeMap::from([
            ("THREADS".to_string(), vec!["1".to_string(), "2".to_string()]),
            ("BATCH".to_string(), vec!["8".to_string(), "16".to_string(), "32".to_string()]),
        ]);
        let grid = combinations(&parameters);
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[0], BTreeMap::from([("BATCH".into(), "8".into()), ("THREADS".into(), "1".into())]));
        assert_eq!(grid[5], BTreeMap::from([("BATCH".into(), "32".into()), ("THREADS".into(), "2".into())]));
        assert_eq!(combinations(&BTreeMap::new()), vec![BTreeMap::new()]);
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
