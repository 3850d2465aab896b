//! Planning: the validated job expanded into the ordered list of test runs (one per configuration and
//! environment combination), with the time they will take at most.

use std::collections::BTreeMap;

use crate::spec::{Configuration, Job};

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
}

impl Plan {
    /// The longest the job can take: every ramp run in full, one after another.
    pub fn worst_case_s(&self) -> u64 {
        self.ramp_s * self.runs.len() as u64
    }
}

/// Every combination of the parameters' values, parameters in name order, values in the order given.
pub fn combinations(parameters: &BTreeMap<String, Vec<String>>) -> Vec<BTreeMap<String, String>> {
    parameters.iter().fold(vec![BTreeMap::new()], |partial, (name, values)| {
        partial
            .iter()
            .flat_map(|combination| {
                values.iter().map(move |value| {
                    let mut next = combination.clone();
                    next.insert(name.clone(), value.clone());
                    next
                })
            })
            .collect()
    })
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
    Plan { runs, ramp_s: job.ramp_s() }
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
}
