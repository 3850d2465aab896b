//! Measurement: latency histograms (HDR, microseconds), per-second accumulation off the request path, error
//! classes, histogram serialization, the resource-sampling interface, the per-second series and per-step records.

pub mod precision;
pub mod process_tree;
pub mod series;
pub mod step;
pub mod tokens;

use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

pub use tokens::{GoodputGoals, TokenCount, TokenTally, Tokens};

/// Latencies are recorded in microseconds up to this bound; slower responses saturate at it.
pub const MAX_LATENCY_US: u64 = 120_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

pub type LatencyHistogram = Histogram<u64>;

pub fn new_histogram() -> LatencyHistogram {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS).expect("static histogram bounds are valid")
}

/// Serializes a histogram as HDR V2 (deflate) in base64, so results can be merged and re-analysed exactly.
pub fn encode_histogram(histogram: &LatencyHistogram) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(histogram, &mut bytes).expect("serializing into memory cannot fail");
    BASE64.encode(bytes)
}

/// Why a serialized histogram cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("a histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("a histogram is not HDR V2: {0}")]
    Hdr(#[from] hdrhistogram::serialization::DeserializeError),
}

pub fn decode_histogram(text: &str) -> Result<LatencyHistogram, HistogramError> {
    let bytes = BASE64.decode(text)?;
    let histogram: LatencyHistogram = Deserializer::new().deserialize(&mut bytes.as_slice())?;
    Ok(histogram)
}

/// Serde for a histogram kept as HDR V2 (deflate) in base64, as results files hold them.
pub mod histogram_base64 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::LatencyHistogram;

    pub fn serialize<S: Serializer>(histogram: &LatencyHistogram, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::encode_histogram(histogram))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<LatencyHistogram, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::decode_histogram(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a request failed; one set of classes for every target kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Connect,
    Timeout,
    // Named as the error counts name them; results written before said `http4xx`.
    #[serde(rename = "http_4xx", alias = "http4xx")]
    Http4xx,
    #[serde(rename = "http_5xx", alias = "http5xx")]
    Http5xx,
    Throttled,
    ModelError,
    /// The service rejected the request as invalid (SageMaker's ValidationError).
    Validation,
    PayloadError,
    /// A streamed response that broke off before its end (the connection failed, or an error event mid-stream);
    /// the tokens it had sent are kept.
    StreamBroken,
    Other,
}

/// How many error classes there are: `ErrorClass::Other` is the last.
const ERROR_CLASSES: usize = ErrorClass::Other as usize + 1;

/// The first failure of each class a target met, as an example for the results (the counts are the recorder's). A
/// failure whose class already has its example costs one atomic load, so a server that fails every request does
/// not slow the engine; the message is only formatted for the first.
#[derive(Debug, Default)]
pub struct ErrorExamples([OnceLock<String>; ERROR_CLASSES]);

impl ErrorExamples {
    pub fn note(&self, class: ErrorClass, message: impl FnOnce() -> String) {
        let example = &self.0[class as usize];
        if example.get().is_none() {
            let _ = example.set(message().chars().take(500).collect());
        }
    }

    /// Each class met, with its first message.
    pub fn examples(&self) -> Vec<(ErrorClass, String)> {
        ErrorClass::ALL.into_iter().filter_map(|class| Some((class, self.0[class as usize].get()?.clone()))).collect()
    }
}

impl ErrorClass {
    /// The class's name in results and messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Throttled => "throttled",
            ErrorClass::ModelError => "model_error",
            ErrorClass::Validation => "validation",
            ErrorClass::PayloadError => "payload_error",
            ErrorClass::StreamBroken => "stream_broken",
            ErrorClass::Other => "other",
        }
    }

    pub const ALL: [ErrorClass; ERROR_CLASSES] = [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Http4xx,
        ErrorClass::Http5xx,
        ErrorClass::Throttled,
        ErrorClass::ModelError,
        ErrorClass::Validation,
        ErrorClass::PayloadError,
        ErrorClass::StreamBroken,
        ErrorClass::Other,
    ];
}

/// Error counts by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    pub throttled: u64,
    pub model_error: u64,
    #[serde(default)]
    pub validation: u64,
    pub payload_error: u64,
    #[serde(default)]
    pub stream_broken: u64,
    pub other: u64,
}

impl ErrorCounts {
    /// Each class with its count, in the classes' order.
    fn by_class(&self) -> [(&'static str, u64); ERROR_CLASSES] {
        ErrorClass::ALL.map(|class| (class.name(), self.count(class)))
    }

    pub fn count(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::Connect => self.connect,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::Http4xx => self.http_4xx,
            ErrorClass::Http5xx => self.http_5xx,
            ErrorClass::Throttled => self.throttled,
            ErrorClass::ModelError => self.model_error,
            ErrorClass::Validation => self.validation,
            ErrorClass::PayloadError => self.payload_error,
            ErrorClass::StreamBroken => self.stream_broken,
            ErrorClass::Other => self.other,
        }
    }

    /// The class with the most errors, by its name in results, and its count; none without errors.
    pub fn dominant(&self) -> Option<(&'static str, u64)> {
        self.by_class().into_iter().filter(|(_, count)| *count > 0).max_by_key(|(_, count)| *count)
    }

    pub fn add(&mut self, class: ErrorClass) {
        let counter = match class {
            ErrorClass::Connect => &mut self.connect,
            ErrorClass::Timeout => &mut self.timeout,
            ErrorClass::Http4xx => &mut self.http_4xx,
            ErrorClass::Http5xx => &mut self.http_5xx,
            ErrorClass::Throttled => &mut self.throttled,
            ErrorClass::ModelError => &mut self.model_error,
            ErrorClass::Validation => &mut self.validation,
            ErrorClass::PayloadError => &mut self.payload_error,
            ErrorClass::StreamBroken => &mut self.stream_broken,
            ErrorClass::Other => &mut self.other,
        };
        *counter += 1;
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.timeout += other.timeout;
        self.http_4xx += other.http_4xx;
        self.http_5xx += other.http_5xx;
        self.throttled += other.throttled;
        self.model_error += other.model_error;
        self.validation += other.validation;
        self.payload_error += other.payload_error;
        self.stream_broken += other.stream_broken;
        self.other += other.other;
    }

    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.http_4xx
            + self.http_5xx
            + self.throttled
            + self.model_error
            + self.validation
            + self.payload_error
            + self.stream_broken
            + self.other
    }
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        latency_us: u64,
    },
    /// A generated response (a language model's): the whole response's latency and its tokens; the gaps between
    /// its chunks are the session's (`Session::gaps_us`).
    Generated {
        latency_us: u64,
        tokens: Tokens,
    },
    Failure {
        class: ErrorClass,
    },
    /// A generated response that broke off mid-stream: a `stream_broken` error, its tokens so far kept.
    Broken {
        latency_us: u64,
        tokens: Tokens,
    },
}

impl Outcome {
    /// The same outcome timed over `total_us` instead, from an earlier start (the open model's due time); a
    /// stream's first token moves by as much.
    pub fn retimed(self, total_us: u64) -> Self {
        let moved = |latency_us: u64, tokens: Tokens| Tokens {
            first_token_us: tokens.first_token_us.map(|first| first + total_us.saturating_sub(latency_us)),
            ..tokens
        };
        match self {
            Outcome::Success { .. } => Outcome::Success { latency_us: total_us },
            Outcome::Generated { latency_us, tokens } => {
                Outcome::Generated { latency_us: total_us, tokens: moved(latency_us, tokens) }
            }
            Outcome::Broken { latency_us, tokens } => {
                Outcome::Broken { latency_us: total_us, tokens: moved(latency_us, tokens) }
            }
            failure @ Outcome::Failure { .. } => failure,
        }
    }
}

/// Requests started and finished in one interval, with the latency of the successful ones.
#[derive(Debug, Clone)]
pub struct Tally {
    pub started: u64,
    pub completed: u64,
    /// Open model: arrivals not sent because `max_in_flight` requests were already in flight.
    pub dropped: u64,
    pub errors: ErrorCounts,
    pub latency_us: LatencyHistogram,
    /// How late the load generator acted against its own schedule: its health, not the server's.
    pub generator_lag_us: LatencyHistogram,
    /// Generated responses: token timings and counts; made at the first, so a run without any merges and resets
    /// no more histograms than it did before language models were measured.
    pub tokens: Option<Box<TokenTally>>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            started: 0,
            completed: 0,
            dropped: 0,
            errors: ErrorCounts::default(),
            latency_us: new_histogram(),
            generator_lag_us: new_histogram(),
            tokens: None,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.started += other.started;
        self.completed += other.completed;
        self.dropped += other.dropped;
        self.errors.merge(&other.errors);
        self.latency_us.add(&other.latency_us).expect("histograms share bounds");
        self.generator_lag_us.add(&other.generator_lag_us).expect("histograms share bounds");
        if let Some(other) = &other.tokens {
            self.tokens.get_or_insert_with(Box::default).merge(other);
        }
    }

    pub fn reset(&mut self) {
        self.started = 0;
        self.completed = 0;
        self.dropped = 0;
        self.errors = ErrorCounts::default();
        self.latency_us.reset();
        self.generator_lag_us.reset();
        if let Some(tokens) = &mut self.tokens {
            tokens.reset();
        }
    }
}

/// Collects outcomes from many virtual users. Each user writes to one of a few shards, so a lock is only ever
/// contended by users on different threads that share a shard; the control loop drains all shards once a second.
pub struct Recorder {
    shards: Box<[Mutex<Tally>]>,
    /// What a good response is (`[requirements]`' per-response goals).
    goals: GoodputGoals,
    /// The first fatal error a user met (a payload plugin that failed); the control loop ends the run on it.
    fault: std::sync::OnceLock<String>,
}

impl Recorder {
    pub fn new(shard_count: usize, goals: GoodputGoals) -> Self {
        Self {
            shards: (0..shard_count.max(1)).map(|_| Mutex::new(Tally::default())).collect(),
            goals,
            fault: std::sync::OnceLock::new(),
        }
    }

    pub fn fail(&self, message: String) {
        let _ = self.fault.set(message);
    }

    pub fn fault(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    pub fn shard_for(&self, user_index: usize) -> usize {
        user_index % self.shards.len()
    }

    pub fn started(&self, shard: usize) {
        self.shards[shard].lock().expect("recorder lock").started += 1;
    }

    /// One request's outcome; `gaps_us` are the gaps between a generated response's chunks (else empty).
    pub fn finished(&self, shard: usize, outcome: Outcome, gaps_us: &[u32]) {
        let mut tally = self.shards[shard].lock().expect("recorder lock");
        match outcome {
            Outcome::Success { latency_us } => {
                tally.completed += 1;
                tally.latency_us.saturating_record(latency_us.max(1));
            }
            Outcome::Generated { latency_us, tokens } => {
                tally.completed += 1;
                tally.latency_us.saturating_record(latency_us.max(1));
                tally.tokens.get_or_insert_with(Box::default).record(latency_us, tokens, gaps_us, Some(&self.goals));
            }
            Outcome::Failure { class } => tally.errors.add(class),
            Outcome::Broken { latency_us, tokens } => {
                tally.errors.add(ErrorClass::StreamBroken);
                // Its tokens count; a broken response is never good.
                tally.tokens.get_or_insert_with(Box::default).record(latency_us, tokens, gaps_us, None);
            }
        }
    }

    pub fn add_dropped(&self, shard: usize, dropped: u64) {
        self.shards[shard].lock().expect("recorder lock").dropped += dropped;
    }

    pub fn generator_lag(&self, shard: usize, lag_us: u64) {
        self.shards[shard].lock().expect("recorder lock").generator_lag_us.saturating_record(lag_us.max(1));
    }

    /// Moves everything recorded since the last drain into `into` and clears the shards.
    pub fn drain_into(&self, into: &mut Tally) {
        for shard in self.shards.iter() {
            let mut tally = shard.lock().expect("recorder lock");
            into.merge(&tally);
            tally.reset();
        }
    }
}

/// Summary statistics of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn percentile_ms(histogram: &LatencyHistogram, percentile: f64) -> f64 {
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

impl LatencySummary {
    pub fn of(histogram: &LatencyHistogram) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: percentile_ms(histogram, 50.0),
            p90_ms: percentile_ms(histogram, 90.0),
            p95_ms: percentile_ms(histogram, 95.0),
            p99_ms: percentile_ms(histogram, 99.0),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }

    /// The percentile a requirement or comparison names, falling back to p99 for percentiles not kept.
    pub fn at(&self, percentile: f64) -> f64 {
        kept_percentile(percentile, [self.p50_ms, self.p90_ms, self.p95_ms, self.p99_ms])
    }
}

/// Of the four percentiles kept (p50, p90, p95, p99), the one a requirement names, or p99 for those above.
pub fn kept_percentile<T>(percentile: f64, [p50, p90, p95, p99]: [T; 4]) -> T {
    match percentile {
        p if p <= 50.0 => p50,
        p if p <= 90.0 => p90,
        p if p <= 95.0 => p95,
        _ => p99,
    }
}

/// Resource use over the last interval, as percentages of what may be used: the system under test's, and the
/// load generator's own CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    /// plateau's own CPU use (user and system, every thread), as a percentage of the cores it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_percent: Option<f64>,
}

/// A source of resource samples, read once a second by the load engine.
pub trait ResourceSource: Send {
    /// Where the figures come from, shown beside them in reports (e.g. "simulated", "/proc").
    fn label(&self) -> &'static str;
    fn sample(&mut self) -> ResourceSample;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_serialize_by_their_names_and_read_the_old_ones() {
        for class in ErrorClass::ALL {
            assert_eq!(serde_json::to_value(class).unwrap(), class.name());
        }
        assert_eq!(serde_json::from_str::<ErrorClass>("\"http5xx\"").unwrap(), ErrorClass::Http5xx);
    }

    #[test]
    fn histograms_round_trip_through_base64() {
        let mut histogram = new_histogram();
        for latency_us in [150, 2_000, 2_000, 35_000, 119_000_000] {
            histogram.record(latency_us).unwrap();
        }
        let decoded = decode_histogram(&encode_histogram(&histogram)).unwrap();
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded.value_at_percentile(50.0), histogram.value_at_percentile(50.0));
        assert_eq!(decoded.max(), histogram.max());
    }

    #[test]
    fn recorder_drains_every_shard_once() {
        let recorder = Recorder::new(4, GoodputGoals::default());
        for user in 0..10 {
            let shard = recorder.shard_for(user);
            recorder.started(shard);
            recorder.finished(shard, Outcome::Success { latency_us: 1_000 * (user as u64 + 1) }, &[]);
        }
        recorder.finished(0, Outcome::Failure { class: ErrorClass::Http5xx }, &[]);
        let mut tally = Tally::default();
        recorder.drain_into(&mut tally);
        assert_eq!((tally.started, tally.completed, tally.errors.http_5xx), (10, 10, 1));
        assert_eq!(tally.latency_us.max(), histogram_value(10_000));
        let mut empty = Tally::default();
        recorder.drain_into(&mut empty);
        assert_eq!((empty.started, empty.completed, empty.errors.total()), (0, 0, 0));
    }

    fn histogram_value(value: u64) -> u64 {
        let histogram = new_histogram();
        histogram.highest_equivalent(value)
    }
}
