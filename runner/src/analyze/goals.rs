//! The percentile goals of `[requirements]` a step is held to: end-to-end latency (`latency_ms`) and, for language
//! models, time to first token (`ttft_ms`) and time per output token (`tpot_ms`), all at `percentile`. A step
//! meets the requirements when it meets every goal set; the highest load that does is "at goal".

use std::fmt;

use super::StepResult;
use crate::measure::{self, precision::Interval};
use crate::spec::{Percentile, Requirements};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    Latency { percentile: Percentile, limit_ms: f64 },
    Ttft { percentile: Percentile, limit_ms: f64 },
    Tpot { percentile: Percentile, limit_ms: f64 },
}

impl Goal {
    /// Every goal `requirements` sets, the latency goal first.
    pub fn all(requirements: &Requirements) -> Vec<Goal> {
        let percentile = requirements.percentile;
        let latency =
            requirements.slo.map(|slo| Goal::Latency { percentile: slo.percentile, limit_ms: slo.latency_ms });
        let ttft = requirements.ttft_ms.map(|limit_ms| Goal::Ttft { percentile, limit_ms });
        let tpot = requirements.tpot_ms.map(|limit_ms| Goal::Tpot { percentile, limit_ms });
        [latency, ttft, tpot].into_iter().flatten().collect()
    }

    pub fn limit_ms(self) -> f64 {
        match self {
            Goal::Latency { limit_ms, .. } | Goal::Ttft { limit_ms, .. } | Goal::Tpot { limit_ms, .. } => limit_ms,
        }
    }

    fn percentile(self) -> f64 {
        match self {
            Goal::Latency { percentile, .. } | Goal::Ttft { percentile, .. } | Goal::Tpot { percentile, .. } => {
                percentile.value()
            }
        }
    }

    /// The step's figure, ms; none when it has none (no response, or TTFT of responses that were not streamed),
    /// which never meets a goal. Latency is read on the step's histogram at any percentile; TTFT and TPOT on the
    /// four percentiles kept (above p99, p99).
    pub fn observed_ms(self, step: &StepResult) -> Option<f64> {
        let percentile = self.percentile();
        match self {
            Goal::Latency { .. } => {
                (!step.histogram.is_empty()).then(|| measure::percentile_ms(&step.histogram, percentile))
            }
            Goal::Ttft { .. } => step.tokens.as_ref()?.ttft.map(|ttft| ttft.at(percentile)),
            Goal::Tpot { .. } => step.tokens.as_ref()?.tpot.map(|tpot| tpot.at(percentile)),
        }
    }

    /// The 95% interval of the step's figure, where one was computed (latency and TTFT; not TPOT).
    pub fn interval(self, step: &StepResult) -> Option<Interval> {
        let percentile = self.percentile();
        match self {
            Goal::Latency { .. } => step.latency_intervals.map(|intervals| intervals.at(percentile)),
            Goal::Ttft { .. } => step.tokens.as_ref()?.ttft_intervals.map(|intervals| intervals.at(percentile)),
            Goal::Tpot { .. } => None,
        }
    }

    pub fn met(self, step: &StepResult) -> bool {
        self.observed_ms(step).is_some_and(|observed| observed <= self.limit_ms())
    }

    /// Met beyond doubt: the figure's whole interval is within the limit.
    pub fn met_beyond_doubt(self, step: &StepResult) -> bool {
        self.interval(step).is_some_and(|interval| interval.high <= self.limit_ms())
    }

    /// Missed beyond doubt: the figure's whole interval is over the limit.
    pub fn missed_beyond_doubt(self, step: &StepResult) -> bool {
        self.interval(step).is_some_and(|interval| interval.low > self.limit_ms())
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::Latency { percentile, limit_ms } => write!(f, "{percentile} ≤ {limit_ms} ms"),
            Goal::Ttft { percentile, limit_ms } => write!(f, "{percentile} TTFT ≤ {limit_ms} ms"),
            Goal::Tpot { percentile, limit_ms } => write!(f, "{percentile} TPOT ≤ {limit_ms} ms"),
        }
    }
}
