//! What a person watching a run sees: one live line per test run in progress on a terminal, plain log lines (one
//! per step) elsewhere; and the observer that feeds them, CloudWatch publishing and the online plateau detector.

use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::analyze::OnlineDetector;
use crate::aws::cloudwatch::{ClientSecond, Publisher};
use crate::drive::{Observer, StepVerdict};
use crate::measure::Tally;
use crate::measure::series::SecondSummary;
use crate::measure::step::StepRecord;
use crate::plan::{LoadUnit, StepWindow};
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

impl Observer for RunObserver<'_> {
    fn on_second(&mut self, second: &SecondSummary, tally: &Tally, step: &StepWindow) {
        if let Some(publisher) = self.publisher {
            publisher.send(ClientSecond::new(
                SystemTime::now(),
                second.completed,
                second.errors,
                second.load,
                &tally.latency_us,
            ));
        }
        if self.line.is_shown() {
            self.line.set(format!(
                "{} · step {}/{} · {:.0} {} · {} req/s · p99 {:.1} ms · {} errors · {} / {}",
                self.run_label,
                step.index + 1,
                self.steps_total,
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
                "{} step {}/{}: {:.0} {}, {:.0} invocations/min, p50 {:.1} ms, p99 {:.1} ms, {} errors{}",
                self.run_label,
                step.window.index + 1,
                self.steps_total,
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
        let verdict = self.detector.stop_reason(steps).map_or(StepVerdict::Continue, StepVerdict::Stop);
        if let StepVerdict::Stop(reason) = &verdict {
            self.progress.line(format!("{} stopped early: {reason}", self.run_label));
        }
        verdict
    }
}
