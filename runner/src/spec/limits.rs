//! `[limits]`: how many test runs a job may make, how many at once (IR's ResourceLimit), and what it may spend.

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::target::{TargetDraft, TargetSpec};
use super::{at_least_one, span_of};

/// How many tests a job may run (IR's ResourceLimit).
#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub(super) struct RawLimits {
    /// At most this many test runs: a larger environment grid is sampled (seeded by `[job] seed`).
    #[schemars(with = "Option<u32>")]
    max_tests: Option<Spanned<u32>>,
    /// Test runs at once (default 1). They share this machine's CPU: each run's own lag probe marks its steps
    /// "load generator saturated" when they starve each other.
    #[schemars(with = "Option<u32>")]
    max_parallel: Option<Spanned<u32>>,
    /// At most this many US dollars of instance time (price per hour x instances x hours, endpoints' creation and
    /// deletion included): a job whose worst case is more does not start, and a run that reaches it stops,
    /// deleting what it provisioned.
    #[schemars(with = "Option<f64>")]
    max_cost_usd: Option<Spanned<f64>>,
    /// What a worst case over max_cost_usd does: "refuse" to start (default), or "stop" when the spending reaches it
    /// (the test runs not reached are reported as not run).
    #[schemars(with = "Option<OverBudget>")]
    over_budget: Option<Spanned<OverBudget>>,
}

/// What a job whose worst case is over its budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverBudget {
    /// Do not start.
    #[default]
    Refuse,
    /// Start, and stop when the spending reaches the budget.
    Stop,
}

/// `max_cost_usd` and what to do when the worst case is over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_cost_usd: f64,
    pub over_budget: OverBudget,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub max_tests: Option<u32>,
    /// Test runs at once; one at a time when absent.
    pub max_parallel: Option<u32>,
    pub budget: Option<Budget>,
}

pub(super) fn validate_limits(
    raw: &RawLimits,
    configurations: usize,
    targets: &[TargetDraft],
    sink: &mut DiagnosticSink<'_>,
) -> Limits {
    let max_tests = raw.max_tests.as_ref().map(|max| {
        if (*max.get_ref() as usize) < configurations.max(1) {
            sink.error(
                span_of(max),
                "limits.max_tests",
                format!("{} tests cannot cover the job's {configurations} configurations", max.get_ref()),
                Some("each configuration needs at least one test; raise max_tests or remove configurations".into()),
            );
        }
        *max.get_ref()
    });
    let max_parallel = raw.max_parallel.as_ref().map(|max| at_least_one(max, "limits.max_parallel", sink));
    if let Some(max) = raw.max_parallel.as_ref().filter(|max| *max.get_ref() > 1)
        && let Some(target) = targets
            .iter()
            .find(|target| matches!(&target.spec, Some(TargetSpec::Command { server, .. }) if server.port.is_some()))
    {
        let name = target.key();
        sink.error(
            span_of(max),
            "limits.max_parallel",
            format!("servers started at once cannot share {name}.port"),
            Some("let plateau choose a free port with {port} in the command, or keep max_parallel = 1".into()),
        );
    }
    let over_budget = raw.over_budget.as_ref().map(|over| *over.get_ref());
    let budget = match (&raw.max_cost_usd, over_budget) {
        (Some(max), over_budget) => {
            if !(max.get_ref().is_finite() && *max.get_ref() > 0.0) {
                sink.error(span_of(max), "limits.max_cost_usd", "must be a positive amount of US dollars", None);
            }
            Some(Budget { max_cost_usd: *max.get_ref(), over_budget: over_budget.unwrap_or_default() })
        }
        (None, Some(_)) => {
            sink.error(
                raw.over_budget.as_ref().and_then(span_of),
                "limits.over_budget",
                "says what to do over a budget, and the job sets none",
                Some("add max_cost_usd = <US dollars>".into()),
            );
            None
        }
        (None, None) => None,
    };
    Limits { max_tests, max_parallel, budget }
}
