//! What a person watching a run sees: one live line per test run in progress on a terminal, plain log lines (one
//! per step) elsewhere; and the observer that feeds them, CloudWatch publishing and the online plateau detector.

use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::race::Racer;
use crate::analyze::OnlineDetector;
use crate::analyze::search::Searcher;
use crate::aws::cloudwatch::{ClientSecond, Publisher};
use crate::drive::{NextStep, Observer, StepVerdict};
use crate::measure::Tally;
use crate::measure::series::SecondSummary;
use crate::measure::step::StepRecord;
use crate::plan::{LoadUnit, StepRole, StepWindow};
use crate::units;

/// Live progress lines on a terminal, one per test run in progress; plain log lines, one per step, elsewhere (CI).
pub(crate) struct Progress {
    bars: Option<MultiProgress>,
    pub(super) runs: usize,
}

impl Progress {
    pub(super) fn new(runs: usize) -> Self {
        Self { bars: std::io::stderr().is_terminal().then(MultiProgress::new), runs }
    }

    pub(super) fn line(&self, text: String) {
        match &self.bars {
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// The live line of one test run (terminal only), removed when the run ends.
    pub(super) fn run_line(&self) -> RunLine {
        RunLine(self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }))
    }
}

pub(super) struct RunLine(Option<ProgressBar>);

impl RunLine {
    fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    pub(super) fn set(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }
}

impl Drop for RunLine {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

pub(super) struct RunObserver<'a> {
    pub(super) load_unit: LoadUnit,
    pub(super) detector: OnlineDetector<'a>,
    /// A shard's run: the whole ramp runs, whatever its steps show (the detector only ends a ramp on the whole
    /// load's evidence, which no shard has).
    pub(super) fixed_ramp: bool,
    /// Search mode: chooses each next step.
    pub(super) searcher: Option<Searcher<'a>>,
    /// The role of each step run so far: steps are numbered among their own role.
    pub(super) roles: Vec<StepRole>,
    /// Search mode's measured pass: the probe's steps, run in the probe pass before it.
    pub(super) prior: &'a [StepRecord],
    /// Search mode's probe pass: the run stops where measured steps would begin, and keeps the first of them here.
    pub(super) probe_only: bool,
    pub(super) probe_done: Option<NextStep>,
    /// Racing: stops the run once it cannot win.
    pub(super) racer: Option<Racer<'a>>,
    /// Why racing stopped the run, once it has.
    pub(super) eliminated: Option<String>,
    pub(super) progress: &'a Progress,
    pub(super) line: &'a RunLine,
    pub(super) run_label: String,
    pub(super) steps_total: usize,
    pub(super) ramp_s: u64,
    /// Sends each second to CloudWatch when `[cloudwatch] publish` is on.
    pub(super) publisher: Option<&'a Publisher>,
}

fn clock(seconds: u64) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

impl RunObserver<'_> {
    /// `step 3/6`; in search mode `probe 2`, `step 3 of at most 8` or `boundary step 1`.
    fn step_label(&self, step: &StepWindow) -> String {
        let number = self.roles.iter().take(step.index).filter(|role| **role == step.role).count() + 1;
        match (step.role, &self.searcher) {
            (StepRole::Probe, _) => format!("probe {number}"),
            (StepRole::Measured, Some(searcher)) => format!("step {number} of at most {}", searcher.search.max_steps),
            (StepRole::Measured, None) => format!("step {number}/{}", self.steps_total),
            (StepRole::Boundary, _) => format!("boundary step {number}"),
        }
    }

    /// Whether every step so far had this role.
    fn only(&self, role: StepRole) -> bool {
        self.roles.iter().all(|earlier| *earlier == role)
    }
}

impl Observer for RunObserver<'_> {
    fn on_second(&mut self, second: &SecondSummary, tally: &Tally, step: &StepWindow) {
        if let Some(publisher) = self.publisher {
            publisher.send(ClientSecond::new(
                SystemTime::now(),
                second.started,
                second.errors,
                second.load,
                &tally.latency_us,
            ));
        }
        if self.line.is_shown() {
            self.line.set(format!(
                "{} · {} · {:.0} {} · {} req/s · p99 {:.1} ms · {} errors · {} / {}",
                self.run_label,
                self.step_label(step),
                second.load,
                self.load_unit.label(),
                second.completed,
                second.p99_ms,
                second.errors,
                clock(second.second + 1),
                clock(self.ramp_s),
            ));
        }
    }

    fn on_step(&mut self, steps: &[StepRecord]) -> StepVerdict {
        if let Some(step) = steps.last() {
            let latency = crate::measure::LatencySummary::of(&step.steady.latency_us);
            self.progress.line(format!(
                "{} {}: {:.0} {}, {:.0} invocations/min, p50 {:.1} ms, p99 {:.1} ms, {} errors{}",
                self.run_label,
                self.step_label(&step.window),
                step.window.load,
                self.load_unit.label(),
                units::per_minute(step.throughput_rps()),
                latency.p50_ms,
                latency.p99_ms,
                step.steady.errors.total(),
                match (step.steady.dropped, step.generator_saturated()) {
                    (0, false) => String::new(),
                    (dropped, saturated) => format!(
                        "{}{}",
                        if dropped > 0 { format!(", {dropped} dropped at the in-flight cap") } else { String::new() },
                        if saturated { ", load generator saturated" } else { "" }
                    ),
                }
            ));
        }
        self.roles = steps.iter().map(|step| step.window.role).collect();
        let engine_steps = steps;
        let with_prior;
        let steps = if self.prior.is_empty() {
            steps
        } else {
            with_prior = [self.prior, steps].concat();
            &with_prior
        };
        let verdict = match &self.searcher {
            Some(searcher) => searcher.next(steps),
            None if self.fixed_ramp => StepVerdict::Continue,
            None => self.detector.stop_reason(steps).map_or(StepVerdict::Continue, StepVerdict::Stop),
        };
        // Racing stops only a ramp that would go on: one that ends anyway was measured in full.
        let goes_on = match (&verdict, steps.last()) {
            (StepVerdict::Then(_), _) => true,
            (StepVerdict::Continue, Some(last)) => last.window.index + 1 < self.steps_total,
            _ => false,
        };
        if let Some(racer) = self.racer.as_ref().filter(|_| goes_on)
            && let Some(reason) = racer.cannot_win(steps)
        {
            // A measured pass counts its probe pass's time too.
            let end_s = |steps: &[StepRecord]| steps.last().map_or(0, |step| step.window.end_s);
            let elapsed_s = end_s(self.prior) + end_s(engine_steps);
            let saved = match &self.searcher {
                Some(searcher) => {
                    let measured = steps.iter().filter(|step| step.window.role == StepRole::Measured).count();
                    searcher.search.saved(searcher.detector.settings.confirm_steps, measured)
                }
                None => format!("up to {} s of its ramp saved", self.ramp_s.saturating_sub(elapsed_s)),
            };
            self.progress.line(format!("{} eliminated after {elapsed_s} s ({saved}): {reason}", self.run_label));
            self.eliminated = Some(reason.clone());
            return StepVerdict::Stop(format!("eliminated: {reason}"));
        }
        match (&verdict, &self.searcher) {
            (StepVerdict::Stop(reason), Some(_)) => {
                self.progress.line(format!("{} search done: {reason}", self.run_label));
            }
            (StepVerdict::Then(next), Some(_))
                if next.role == StepRole::Boundary
                    && engine_steps.last().is_some_and(|last| last.window.role != next.role) =>
            {
                self.progress.line(format!(
                    "{} bisecting the goals' boundary (missed below the plateau), from {} {}",
                    self.run_label,
                    next.load,
                    self.load_unit.label()
                ));
            }
            (StepVerdict::Stop(reason), None) => {
                self.progress.line(format!("{} stopped early: {reason}", self.run_label));
            }
            // Every step so far was a probe, and the next is measured: the probe just ended.
            (StepVerdict::Then(next), Some(searcher))
                if next.role != StepRole::Probe && self.only(StepRole::Probe) && self.prior.is_empty() =>
            {
                let bracket = searcher.bracket(&crate::analyze::search::split(steps).probe);
                self.progress.line(format!(
                    "{} probe done: {}; knee near {:.1} {}, measured steps from {}{}",
                    self.run_label,
                    bracket.ended,
                    bracket.knee_load,
                    self.load_unit.label(),
                    next.load,
                    if self.probe_only { " once every configuration is probed" } else { "" }
                ));
                if self.probe_only {
                    self.probe_done = Some(*next);
                    return StepVerdict::Stop("the probe pass ends here".to_string());
                }
            }
            _ => {}
        }
        verdict
    }
}
