//! Planning: the validated job expanded into the ordered list of test runs, with the time they will take at most.

use crate::spec::{Configuration, Job};

#[derive(Debug, Clone)]
pub struct TestRun {
    pub index: usize,
    pub configuration: Configuration,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<TestRun>,
    /// One configuration's full ramp, in seconds.
    pub ramp_s: u64,
}

impl Plan {
    /// The longest the job can take: every ramp run in full, one configuration after another.
    pub fn worst_case_s(&self) -> u64 {
        self.ramp_s * self.runs.len() as u64
    }
}

pub fn plan(job: &Job) -> Plan {
    let runs = job
        .configurations
        .iter()
        .cloned()
        .enumerate()
        .map(|(index, configuration)| TestRun { index, configuration })
        .collect();
    Plan { runs, ramp_s: job.traffic.duration_s() }
}
