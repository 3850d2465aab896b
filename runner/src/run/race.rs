//! Racing across a job's test runs (`recommend::race` has the rules): the leader so far, which the runs in progress
//! measure themselves against after every step, and the configurations whose later trials are not run because
//! they cannot win.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::analyze::{self, Analysis, ConfigurationFacts};
use crate::measure::step::StepRecord;
use crate::plan::StepRole;
use crate::recommend::race::{Evidence, Leader, best_possible, cannot_win, leader};
use crate::results::ConfigurationResult;
use crate::spec::Job;

#[derive(Default)]
pub(crate) struct Race {
    state: Mutex<Standings>,
}

#[derive(Default)]
struct Standings {
    leader: Option<Leader>,
    /// Configurations that cannot win, by name, with why: their later trials are skipped.
    eliminated: BTreeMap<String, String>,
}

impl Race {
    /// After a result: the leader among the configurations so far (trials combined), and those that cannot beat it.
    pub(super) fn update(&self, configurations: &[ConfigurationResult], job: &Job) {
        let leader = leader(configurations, &job.requirements);
        let mut state = self.state.lock().expect("race lock");
        for result in configurations {
            let reason = result.eliminated.clone().or_else(|| {
                let evidence = Evidence { steps: &result.steps, metrics: result.metrics.as_ref()? };
                let beaten = leader.as_ref().filter(|leader| leader.name != result.name);
                cannot_win(&[evidence], &job.requirements, beaten)
            });
            if let Some(reason) = reason {
                state.eliminated.entry(result.name.clone()).or_insert(reason);
            }
        }
        state.leader = leader;
    }

    /// Why the configuration's later trials need not run, if they need not.
    pub(super) fn eliminated(&self, name: &str) -> Option<String> {
        self.state.lock().expect("race lock").eliminated.get(name).cloned()
    }

    fn leader(&self) -> Option<Leader> {
        self.state.lock().expect("race lock").leader.clone()
    }
}

/// One running configuration in the race.
pub(super) struct Racer<'a> {
    /// The configuration's name: with trials it may be the leader itself, which it does not race.
    pub(super) name: &'a str,
    pub(super) race: &'a Race,
    pub(super) job: &'a Job,
    pub(super) facts: &'a ConfigurationFacts,
}

impl Racer<'_> {
    /// Why the configuration cannot win after its steps so far, if it cannot: its measured steps and search mode's
    /// probe are each analysed as a ramp of their own.
    pub(super) fn cannot_win(&self, steps: &[StepRecord]) -> Option<String> {
        let analyses = self.analyses(steps);
        let leader = self.race.leader().filter(|leader| leader.name != self.name);
        cannot_win(&evidence(&analyses), &self.job.requirements, leader.as_ref())
    }

    /// The favourable end of the objective the steps so far allow, once they bound it: how promising it is.
    pub(super) fn best_possible(&self, steps: &[StepRecord]) -> Option<f64> {
        best_possible(&evidence(&self.analyses(steps)), &self.job.requirements)
    }

    fn analyses(&self, steps: &[StepRecord]) -> Vec<Analysis> {
        let job = self.job;
        [StepRole::Probe, StepRole::Measured]
            .into_iter()
            .map(|role| steps.iter().filter(|step| step.window.role == role).cloned().collect::<Vec<_>>())
            .filter(|group| !group.is_empty())
            .map(|group| {
                analyze::analyze_steps(&group, &[], self.facts, &job.stopping, &job.requirements, &job.plateau, None)
            })
            .collect()
    }
}

fn evidence(analyses: &[Analysis]) -> Vec<Evidence<'_>> {
    analyses
        .iter()
        .filter_map(|analysis| Some(Evidence { steps: &analysis.steps, metrics: analysis.metrics.as_ref()? }))
        .collect()
}
