//! Comparing two results files for pull-request checks: per-configuration deltas judged against the runs' own
//! noise, `--fail-on` rules, and a verdict.
//!
//! A change counts as significant only when it is larger than the noise of both runs: for throughput and cost,
//! `max(3%, 2 x sqrt(spread_base^2 + spread_head^2))`, where spread is the coefficient of variation of per-second
//! throughput in each plateau window; for latency percentiles the floor is 5%; for the error rate, half a
//! percentage point. A `--fail-on` rule fires only on a significant change, so noise alone never fails a check.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::analyze::Metrics;
use crate::results::{ConfigurationResult, Results};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    MaxInvocations,
    MaxInvocationsAtSlo,
    P50,
    P90,
    P99,
    CostPerInference,
    ErrorRate,
}

const METRICS: [Metric; 7] = [
    Metric::MaxInvocations,
    Metric::MaxInvocationsAtSlo,
    Metric::P50,
    Metric::P90,
    Metric::P99,
    Metric::CostPerInference,
    Metric::ErrorRate,
];

impl Metric {
    fn key(self) -> &'static str {
        match self {
            Metric::MaxInvocations => "max_invocations",
            Metric::MaxInvocationsAtSlo => "max_invocations_at_slo",
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::CostPerInference => "cost_per_inference",
            Metric::ErrorRate => "error_rate",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Metric::MaxInvocations => "MaxInvocations (/min)",
            Metric::MaxInvocationsAtSlo => "MaxInvocations at goal (/min)",
            Metric::P50 => "ModelLatency p50 (ms)",
            Metric::P90 => "ModelLatency p90 (ms)",
            Metric::P99 => "ModelLatency p99 (ms)",
            Metric::CostPerInference => "CostPerInference (USD)",
            Metric::ErrorRate => "Errors (%)",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::MaxInvocations | Metric::MaxInvocationsAtSlo)
    }

    fn value(self, metrics: &Metrics) -> Option<f64> {
        match self {
            Metric::MaxInvocations => Some(metrics.max_invocations),
            Metric::MaxInvocationsAtSlo => metrics.max_invocations_at_slo,
            Metric::P50 => Some(metrics.model_latency.p50_ms),
            Metric::P90 => Some(metrics.model_latency.p90_ms),
            Metric::P99 => Some(metrics.model_latency.p99_ms),
            Metric::CostPerInference => metrics.cost_per_inference_usd,
            Metric::ErrorRate => Some(metrics.error_rate_percent),
        }
    }

    fn noise_floor_percent(self) -> f64 {
        match self {
            Metric::P50 | Metric::P90 | Metric::P99 => 5.0,
            _ => 3.0,
        }
    }
}

/// A `--fail-on` rule that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("unknown metric `{metric}`; expected one of {}", METRICS.map(Metric::key).join(", "))]
    UnknownMetric { metric: String },
    #[error("cannot read rule `{rule}`: {RULE_HINT}")]
    Unreadable { rule: String },
    #[error("cannot read the threshold in `{rule}`: {RULE_HINT}")]
    Threshold { rule: String },
}

const RULE_HINT: &str = "expected `METRIC < -N%`, `METRIC > +N%` or `recommendation changed`, e.g. `p99 > +10%`";

impl FromStr for Metric {
    type Err = RuleError;
    fn from_str(text: &str) -> Result<Self, RuleError> {
        METRICS
            .into_iter()
            .find(|metric| metric.key() == text)
            .ok_or_else(|| RuleError::UnknownMetric { metric: text.to_string() })
    }
}

/// A `--fail-on` rule: `max_invocations < -5%`, `p99 > +10%`, or `recommendation changed`.
#[derive(Debug, Clone, PartialEq)]
pub enum FailRule {
    Change { metric: Metric, above: bool, threshold_percent: f64 },
    RecommendationChanged,
}

impl FromStr for FailRule {
    type Err = RuleError;
    fn from_str(text: &str) -> Result<Self, RuleError> {
        let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalized == "recommendation changed" {
            return Ok(FailRule::RecommendationChanged);
        }
        let (metric, rest, above) = if let Some((metric, rest)) = normalized.split_once('>') {
            (metric, rest, true)
        } else if let Some((metric, rest)) = normalized.split_once('<') {
            (metric, rest, false)
        } else {
            return Err(RuleError::Unreadable { rule: text.to_string() });
        };
        let metric: Metric = metric.trim().parse()?;
        let threshold_percent = rest
            .trim()
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<f64>().ok())
            .ok_or_else(|| RuleError::Threshold { rule: text.to_string() })?;
        Ok(FailRule::Change { metric, above, threshold_percent })
    }
}

impl fmt::Display for FailRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailRule::RecommendationChanged => write!(f, "recommendation changed"),
            FailRule::Change { metric, above, threshold_percent } => {
                write!(f, "{} {} {:+}%", metric.key(), if *above { ">" } else { "<" }, threshold_percent)
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub job: String,
    pub started_at: String,
    pub partial: bool,
    pub recommendation: Option<String>,
    pub initial_instance_count: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricDelta {
    pub metric: Metric,
    pub label: &'static str,
    pub base: f64,
    pub head: f64,
    pub delta_percent: f64,
    /// Changes smaller than this are measurement noise.
    pub noise_percent: f64,
    pub significant: bool,
    /// "better", "worse", or "unchanged" (within noise).
    pub direction: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Both,
    OnlyBase,
    OnlyHead,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationDelta {
    pub name: String,
    pub presence: Presence,
    pub deltas: Vec<MetricDelta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FiredRule {
    pub rule: String,
    pub configuration: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regression,
    Improvement,
    /// Some figures got better and others worse, beyond noise.
    Mixed,
    NoSignificantChange,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub base: Side,
    pub head: Side,
    pub recommendation_changed: bool,
    pub configurations: Vec<ConfigurationDelta>,
    pub verdict: Verdict,
    pub rules: Vec<String>,
    pub fired: Vec<FiredRule>,
}

fn side(results: &Results) -> Side {
    let recommendation = results.recommendation.as_ref();
    Side {
        job: results.job.name.clone(),
        started_at: results.manifest.started_at.clone(),
        partial: results.partial,
        recommendation: recommendation.and_then(|recommendation| recommendation.configuration.clone()),
        initial_instance_count: recommendation.and_then(|recommendation| recommendation.initial_instance_count),
    }
}

fn metric_deltas(base: &Metrics, head: &Metrics) -> Vec<MetricDelta> {
    let spread = (base.throughput_spread_percent.powi(2) + head.throughput_spread_percent.powi(2)).sqrt();
    METRICS
        .into_iter()
        .filter_map(|metric| {
            let (base_value, head_value) = (metric.value(base)?, metric.value(head)?);
            let (delta_percent, noise_percent, significant) = if metric == Metric::ErrorRate {
                // Error rates are compared in percentage points: 0% to 0.1% is not "infinitely worse".
                let delta_points = head_value - base_value;
                (delta_points, 0.5, delta_points.abs() > 0.5)
            } else {
                let delta_percent = match (base_value, head_value) {
                    (0.0, 0.0) => 0.0,
                    (0.0, _) => f64::INFINITY,
                    _ => (head_value / base_value - 1.0) * 100.0,
                };
                let noise_percent = metric.noise_floor_percent().max(2.0 * spread);
                (delta_percent, noise_percent, delta_percent.abs() > noise_percent)
            };
            let better = (delta_percent > 0.0) == metric.higher_is_better();
            let direction = match (significant, better) {
                (false, _) => "unchanged",
                (true, true) => "better",
                (true, false) => "worse",
            };
            Some(MetricDelta {
                metric,
                label: metric.label(),
                base: base_value,
                head: head_value,
                delta_percent,
                noise_percent,
                significant,
                direction,
            })
        })
        .collect()
}

/// Whole numbers for large figures, three significant digits for small ones (costs per inference).
fn readable(value: f64) -> String {
    if value.abs() >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        let decimals = (2 - value.abs().log10().floor() as i32).max(0) as usize;
        format!("{value:.decimals$}")
    }
}

pub fn compare(base: &Results, head: &Results, rules: &[FailRule]) -> Comparison {
    let find = |results: &'_ Results, name: &str| -> Option<ConfigurationResult> {
        results.configurations.iter().find(|result| result.name == name).cloned()
    };
    let mut names: Vec<&str> = base.configurations.iter().map(|result| result.name.as_str()).collect();
    for result in &head.configurations {
        if !names.contains(&result.name.as_str()) {
            names.push(&result.name);
        }
    }
    let configurations: Vec<ConfigurationDelta> = names
        .into_iter()
        .map(|name| {
            let (base_result, head_result) = (find(base, name), find(head, name));
            let presence = match (&base_result, &head_result) {
                (Some(_), Some(_)) => Presence::Both,
                (Some(_), None) => Presence::OnlyBase,
                _ => Presence::OnlyHead,
            };
            let deltas = match (base_result.and_then(|r| r.metrics), head_result.and_then(|r| r.metrics)) {
                (Some(base_metrics), Some(head_metrics)) => metric_deltas(&base_metrics, &head_metrics),
                _ => Vec::new(),
            };
            ConfigurationDelta { name: name.to_string(), presence, deltas }
        })
        .collect();

    let (base_side, head_side) = (side(base), side(head));
    let recommendation_changed = base_side.recommendation != head_side.recommendation
        || base_side.initial_instance_count != head_side.initial_instance_count;
    let mut fired = Vec::new();
    for rule in rules {
        match rule {
            FailRule::RecommendationChanged if recommendation_changed => fired.push(FiredRule {
                rule: rule.to_string(),
                configuration: None,
                detail: format!(
                    "{} x{} became {} x{}",
                    base_side.recommendation.as_deref().unwrap_or("none"),
                    base_side.initial_instance_count.unwrap_or(0),
                    head_side.recommendation.as_deref().unwrap_or("none"),
                    head_side.initial_instance_count.unwrap_or(0)
                ),
            }),
            FailRule::RecommendationChanged => {}
            FailRule::Change { metric, above, threshold_percent } => {
                for configuration in &configurations {
                    let Some(delta) = configuration.deltas.iter().find(|delta| delta.metric == *metric) else {
                        continue;
                    };
                    let crosses = if *above {
                        delta.delta_percent > *threshold_percent
                    } else {
                        delta.delta_percent < *threshold_percent
                    };
                    if crosses && delta.significant {
                        fired.push(FiredRule {
                            rule: rule.to_string(),
                            configuration: Some(configuration.name.clone()),
                            detail: format!(
                                "{} went from {} to {} ({:+.1}%, noise ±{:.1}%)",
                                delta.label,
                                readable(delta.base),
                                readable(delta.head),
                                delta.delta_percent,
                                delta.noise_percent
                            ),
                        });
                    }
                }
            }
        }
    }
    let all_deltas = configurations.iter().flat_map(|configuration| &configuration.deltas);
    let (mut better, mut worse) = (false, false);
    for delta in all_deltas {
        better |= delta.direction == "better";
        worse |= delta.direction == "worse";
    }
    let verdict = match (better, worse) {
        (true, true) => Verdict::Mixed,
        (false, true) => Verdict::Regression,
        (true, false) => Verdict::Improvement,
        (false, false) => Verdict::NoSignificantChange,
    };
    Comparison {
        base: base_side,
        head: head_side,
        recommendation_changed,
        configurations,
        verdict,
        rules: rules.iter().map(ToString::to_string).collect(),
        fired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in ["max_invocations < -5%", "p99 > +10%", "recommendation changed", "cost_per_inference > +2.5%"] {
            let rule: FailRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert!("p42 > 5%".parse::<FailRule>().unwrap_err().to_string().contains("unknown metric `p42`"));
        assert!("p99 >> 5".parse::<FailRule>().is_err());
    }
}
