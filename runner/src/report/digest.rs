//! A run in a few figures: what `plateau run --json` prints, and what a wiki keeps of each run for its index row and
//! trend points (`publish`).

use serde::{Deserialize, Serialize};

use crate::git::Revision;
use crate::results::{Results, RunStatus};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDigest {
    pub job: String,
    /// RFC 3339, UTC: orders the runs.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    pub partial: bool,
    pub recommendation: Option<String>,
    pub initial_instance_count: Option<u32>,
    /// The recommendation is not established (its best candidates are within each other's intervals).
    pub inconclusive: bool,
    pub configurations: Vec<ConfigurationDigest>,
}

/// One configuration's figures; a bound is marked as one, a figure the run has none of is absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigurationDigest {
    pub name: String,
    pub status: RunStatus,
    /// Its line of the ranking, when it was ranked: "recommended", "costs 33% more per inference", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    pub max_invocations: Option<f64>,
    pub lower_bound: bool,
    pub p99_ms: Option<f64>,
    pub cost_per_million_usd: Option<f64>,
}

impl RunDigest {
    pub fn of(results: &Results) -> RunDigest {
        let recommendation = results.recommendation.as_ref();
        let configurations = results
            .configurations
            .iter()
            .map(|result| {
                let metrics = result.metrics.as_ref().filter(|_| result.eliminated.is_none());
                let verdict = recommendation
                    .and_then(|recommendation| {
                        recommendation.ranking.iter().find(|verdict| verdict.configuration == result.name)
                    })
                    .map(|verdict| verdict.verdict.clone());
                ConfigurationDigest {
                    name: result.name.clone(),
                    status: result.status,
                    verdict,
                    max_invocations: metrics.map(|metrics| metrics.max_invocations),
                    lower_bound: metrics.is_some_and(|metrics| metrics.lower_bound),
                    p99_ms: metrics.map(|metrics| metrics.model_latency.p99_ms),
                    cost_per_million_usd: metrics
                        .and_then(|metrics| metrics.cost_per_inference_usd)
                        .map(|usd| usd * 1e6),
                }
            })
            .collect();
        RunDigest {
            job: results.job.name.clone(),
            started_at: results.manifest.started_at.clone(),
            revision: results.manifest.revision.clone(),
            partial: results.partial,
            recommendation: recommendation.and_then(|recommendation| recommendation.configuration.clone()),
            initial_instance_count: recommendation.and_then(|recommendation| recommendation.initial_instance_count),
            inconclusive: recommendation.is_some_and(|recommendation| {
                matches!(recommendation.confidence, crate::results::Confidence::Inconclusive { .. })
            }),
            configurations,
        }
    }

    /// A short label for a chart's axis: the start's month, day and time, and the commit when there is one.
    pub fn label(&self) -> String {
        let when = self.started_at.get(5..16).unwrap_or(&self.started_at).replace('T', " ");
        match &self.revision {
            Some(revision) => format!("{when} {}", revision.short()),
            None => when,
        }
    }
}

/// A name as a file or page name: lowercase letters, digits and dashes, the same on every wiki and file system.
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for character in name.chars().flat_map(char::to_lowercase) {
        if character.is_ascii_alphanumeric() {
            slug.push(character);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() { "job".to_string() } else { slug.to_string() }
}

/// `2026-12-02T18:35:07Z` as `20261202T183507Z`.
pub fn stamp(started_at: &str) -> String {
    started_at.chars().filter(|character| character.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_are_the_same_on_every_wiki() {
        assert_eq!(slug("Quickstart: GPU / p99 ≤ 60 ms"), "quickstart-gpu-p99-60-ms");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug("≤"), "job");
        assert_eq!(stamp("2026-12-02T18:35:07Z"), "20261202T183507Z");
    }
}
