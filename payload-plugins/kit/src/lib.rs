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
