//! `[limits]`: how many test runs a job may make, and how many at once (IR's ResourceLimit).

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
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub max_tests: Option<u32>,
    /// Test runs at once; one at a time when absent.
    pub max_parallel: Option<u32>,
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
    Limits { max_tests, max_parallel }
}
