//! What the example plugins share. Randomness comes only from the per-request seed plateau passes in, so a job
//! file produces the same requests on every run.

use serde::Deserialize;

/// SplitMix64: tiny, fast and good enough for test data; seeded per request.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A distribution as the job file writes it, e.g. `{ kind = "normal", mean = 0.0, stddev = 1.0 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Normal {
        mean: f64,
        stddev: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    /// exp(normal(mu, sigma)): skewed sizes such as prompt lengths.
    Lognormal {
        median: f64,
        sigma: f64,
    },
    Constant {
        value: f64,
    },
}

impl Distribution {
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Self::Normal { mean, stddev } => mean + stddev * rng.normal(),
            Self::Uniform { min, max } => min + (max - min) * rng.unit(),
            Self::Lognormal { median, sigma } => median * (sigma * rng.normal()).exp(),
            Self::Constant { value } => value,
        }
    }
}

/// Parses `init`'s JSON config into `T`, with a message that says what is wrong and where.
pub fn parse_config<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|error| format!("bad [payload.config]: {error}"))
}

/// Appends `value` with exactly `decimals` decimals, as `format!("{value:.decimals$}")` would for the values test
/// data has, at a fraction of the cost (integer formatting instead of exact float printing; ties may round the
/// other way in the last decimal). Values too large for the fast path fall back to `format!`.
pub fn push_fixed(out: &mut String, value: f64, decimals: usize) {
    use std::fmt::Write as _;
    const POWERS: [u64; 10] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];
    let scaled = value * POWERS.get(decimals).copied().unwrap_or(0) as f64;
    if decimals >= POWERS.len() || !scaled.is_finite() || scaled.abs() >= 9.0e15 {
        let _ = write!(out, "{value:.decimals$}");
        return;
    }
    let units = scaled.round().abs() as u64;
    let scale = POWERS[decimals];
    if scaled.round() < 0.0 {
        out.push('-');
    }
    let _ = write!(out, "{}", units / scale);
    if decimals > 0 {
        let _ = write!(out, ".{:0decimals$}", units % scale);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_fixed_matches_format() {
        for value in [0.0, 1.4, -0.26, 123.456789, -7.0, 0.0004, -0.0004, 99.9996, 1e12] {
            for decimals in [0, 1, 3, 4] {
                let mut fast = String::new();
                super::push_fixed(&mut fast, value, decimals);
                let exact = format!("{value:.decimals$}");
                // Only the sign of a value that rounds to zero may differ ("-0.000" vs "0.000").
                assert_eq!(fast.trim_start_matches('-'), exact.trim_start_matches('-'), "{value} {decimals}");
            }
        }
    }
}
