//! Single values checked where they are parsed, so a bad value is reported at its own line and column.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A latency percentile written as `p50`, `p99` or `p99.9`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Percentile(f64);

impl Percentile {
    pub fn new(value: f64) -> Option<Self> {
        (value > 0.0 && value < 100.0).then_some(Self(value))
    }

    /// The percentile goals are held to when the job file names none.
    pub fn p99() -> Self {
        Self(99.0)
    }

    /// As a number in (0, 100), the form hdrhistogram's `value_at_percentile` takes.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A single value of the job file that does not parse; serde reports it at the value's line and column.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(
        "invalid percentile `{0}`: expected `p` and a number between 0 and 100, like \"p50\", \"p99\" or \"p99.9\""
    )]
    Percentile(String),
    #[error("invalid duration `{text}` ({reason}): expected a number with a unit, like \"30s\", \"2m\" or \"500ms\"")]
    Duration { text: String, reason: humantime::DurationError },
}

impl TryFrom<String> for Percentile {
    type Error = ValueError;
    fn try_from(text: String) -> Result<Self, ValueError> {
        let number = text.strip_prefix(['p', 'P']).and_then(|rest| rest.parse::<f64>().ok());
        number.and_then(Percentile::new).ok_or(ValueError::Percentile(text))
    }
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl From<Percentile> for String {
    fn from(percentile: Percentile) -> String {
        percentile.to_string()
    }
}

/// A duration with its unit in the value: `"90s"`, `"2m"`, `"1h 30m"`, `"500ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DurationValue(pub Duration);

impl TryFrom<String> for DurationValue {
    type Error = ValueError;
    fn try_from(text: String) -> Result<Self, ValueError> {
        match humantime::parse_duration(text.trim()) {
            Ok(duration) => Ok(DurationValue(duration)),
            Err(reason) => Err(ValueError::Duration { text, reason }),
        }
    }
}

impl schemars::JsonSchema for Percentile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percentile".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^p(100|[1-9]?[0-9])(\\.[0-9]+)?$",
            "description": "A latency percentile: \"p50\", \"p90\", \"p99\", \"p99.9\".",
            "examples": ["p50", "p90", "p99", "p99.9"]
        })
    }
}

impl schemars::JsonSchema for DurationValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with its unit: \"500ms\", \"30s\", \"2m\", \"1h 30m\".",
            "examples": ["500ms", "30s", "2m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_parse_and_reject_out_of_range() {
        assert_eq!(Percentile::try_from("p99.9".to_string()).unwrap().value(), 99.9);
        assert_eq!(Percentile::try_from("P50".to_string()).unwrap().to_string(), "p50");
        assert!(Percentile::try_from("p100".to_string()).is_err());
        assert!(Percentile::try_from("99".to_string()).is_err());
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(DurationValue::try_from("2m".to_string()).unwrap().0, Duration::from_secs(120));
        assert!(DurationValue::try_from("120".to_string()).is_err());
    }
}
