//! What the command line changes in a job file: `--set key=value` overrides and `--only NAME` selections. An
//! override is one more layer over the job, the way an included file is one under it: its lines are appended to
//! the job's text (so the run records them and errors point at them, named `--set`) and merged last.

use serde::{Deserialize, Serialize};

use super::diagnostic::{Diagnostic, SpecError};
use super::{Job, JobSource};

/// The file name errors in an override are reported under.
pub const SET_ORIGIN: &str = "--set";

/// One `--set key=value`: a dotted key path (`traffic.stairs.steps`) and its value as TOML; a value that is not
/// TOML (`http://host/invoke`) is taken as a string, as `helm --set` and `cargo --config` users expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SetValue {
    key: String,
    value: toml::Value,
}

impl std::str::FromStr for SetValue {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("`{text}` is not key=value; e.g. --set traffic.stairs.steps=4"));
        };
        let key = key.trim();
        let bare = |part: &str| {
            !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        };
        if !key.split('.').all(bare) {
            return Err(format!(
                "`{key}` is not a key path: dotted names of letters, digits, `_` and `-`, e.g. requirements.latency_ms"
            ));
        }
        let value = value.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        Ok(SetValue { key: key.to_string(), value })
    }
}

impl TryFrom<String> for SetValue {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<SetValue> for String {
    fn from(set: SetValue) -> String {
        format!("{}={}", set.key, set.value)
    }
}

impl SetValue {
    /// The override as a line of TOML (a dotted key sets a key of a nested table).
    fn line(&self) -> String {
        format!("{} = {}\n", self.key, self.value)
    }
}

/// The command line's changes to a job; none by default. Kept in the results' manifest, so `--resume` applies
/// them again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<SetValue>,
    /// Only these configurations run (by name); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.only.is_empty()
    }

    /// The TOML text the `--set` overrides make, one line each; empty without them.
    pub(super) fn text(&self) -> String {
        self.set.iter().map(SetValue::line).collect()
    }

    /// Keeps only the configurations `--only` names; an error names the ones that do not exist and lists the
    /// job's.
    pub(super) fn select(&self, mut job: Job) -> Result<Job, SpecError> {
        if self.only.is_empty() {
            return Ok(job);
        }
        let unknown: Vec<&str> = self
            .only
            .iter()
            .filter(|name| !job.configurations.iter().any(|configuration| &configuration.name == *name))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = job.configurations.iter().map(|configuration| configuration.name.as_str()).collect();
            return Err(unknown_configuration(&job.source, &unknown, &names));
        }
        job.configurations.retain(|configuration| self.only.contains(&configuration.name));
        Ok(job)
    }
}

fn unknown_configuration(source: &JobSource, unknown: &[&str], names: &[&str]) -> SpecError {
    SpecError {
        diagnostics: vec![Diagnostic {
            file: source.path.clone(),
            source: String::new(),
            span: None,
            key_path: "configurations".to_string(),
            message: format!("--only names no configuration of this job: {}", unknown.join(", ")),
            hint: Some(format!("its configurations are: {}", names.join(", "))),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_toml_when_it_parses_and_a_string_otherwise() {
        let set: SetValue = "traffic.stairs.steps = 4".parse().unwrap();
        assert_eq!(set.line(), "traffic.stairs.steps = 4\n");
        let set: SetValue = "target.url=http://127.0.0.1:8080/invoke".parse().unwrap();
        assert_eq!(set.line(), "target.url = \"http://127.0.0.1:8080/invoke\"\n");
        let set: SetValue = "traffic.stairs.step_duration=\"3s\"".parse().unwrap();
        assert_eq!(set.line(), "traffic.stairs.step_duration = \"3s\"\n");
        // A quote inside a bare string stays inside it, never closing the string early.
        let set: SetValue = "job.description=a \"quoted\" word".parse().unwrap();
        let table: toml::Table = toml::from_str(&set.line()).unwrap();
        assert_eq!(table["job"]["description"].as_str(), Some("a \"quoted\" word"));
    }

    #[test]
    fn a_key_that_is_not_a_dotted_path_is_refused() {
        for bad in ["steps", "=4", "a..b=1", "a b=1", "[x]=1", "a.b\nc=1"] {
            assert!(bad.parse::<SetValue>().is_err(), "{bad:?} was taken");
        }
    }
}
