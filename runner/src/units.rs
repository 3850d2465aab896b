//! Unit conversions, in one place: plateau measures per second, Inference Recommender reports per minute, prices
//! are per hour.

/// Requests per second as invocations per minute (IR's MaxInvocations unit).
pub fn per_minute(per_second: f64) -> f64 {
    per_second * 60.0
}

/// Invocations per minute as requests per second.
pub fn per_second(per_minute: f64) -> f64 {
    per_minute / 60.0
}

/// Invocations per minute as invocations per hour, the unit prices come in.
pub fn per_hour(per_minute: f64) -> f64 {
    per_minute * 60.0
}
