//! Tabular-model requests: `rows` rows of `features` numbers each, every feature drawn from its distribution,
//! as `{"instances": [[...], ...]}` (the SageMaker / TensorFlow Serving JSON shape).
//!
//! [payload.config]
//! features = 16                                     # how many columns
//! rows = 1                                          # rows per request (batch size)
//! default = { kind = "normal", mean = 0.0, stddev = 1.0 }
//! columns = { 0 = { kind = "uniform", min = 18.0, max = 90.0 } }   # per-column overrides, by index
//! decimals = 4

use std::collections::BTreeMap;
use std::sync::OnceLock;

use plugin_kit::{Distribution, Rng, parse_config};
use serde::Deserialize;

wit_bindgen::generate!({ path: "../wit", world: "batch-generator" });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    features: usize,
    #[serde(default = "one")]
    rows: usize,
    #[serde(default = "standard_normal")]
    default: Distribution,
    #[serde(default)]
    columns: BTreeMap<String, Distribution>,
    #[serde(default = "four")]
    decimals: usize,
}

fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn standard_normal() -> Distribution {
    Distribution::Normal { mean: 0.0, stddev: 1.0 }
}

/// Each column's distribution, resolved once in `init`.
static COLUMNS: OnceLock<(Vec<Distribution>, usize, usize)> = OnceLock::new();

struct Tabular;

impl Guest for Tabular {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if config.features == 0 || config.rows == 0 {
            return Err("features and rows must be at least 1".into());
        }
        let mut columns = vec![config.default.clone(); config.features];
        for (index, distribution) in config.columns {
            let slot = index
                .parse::<usize>()
                .ok()
                .and_then(|index| columns.get_mut(index))
                .ok_or_else(|| format!("columns.{index}: not a column index below {}", config.features))?;
            *slot = distribution;
        }
        let _ = COLUMNS.set((columns, config.rows, config.decimals));
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let (columns, rows, decimals) = COLUMNS.get().ok_or("generate before init")?;
        let mut rng = Rng::new(ctx.seed);
        let mut body = String::with_capacity(rows * columns.len() * 10 + 16);
        body.push_str("{\"instances\":[");
        for row in 0..*rows {
            body.push_str(if row == 0 { "[" } else { ",[" });
            for (column, distribution) in columns.iter().enumerate() {
                if column > 0 {
                    body.push(',');
                }
                let value = distribution.sample(&mut rng);
                // JSON has no NaN or infinity; a distribution cannot produce them, but stay valid regardless.
                let value = if value.is_finite() { value } else { 0.0 };
                plugin_kit::push_fixed(&mut body, value, *decimals);
            }
            body.push(']');
        }
        body.push_str("]}");
        Ok(Request { body: body.into_bytes(), content_type: None, headers: Vec::new(), path_suffix: None })
    }

    /// Batches save the host's per-call cost; each request is exactly what `generate` makes for its context.
    fn generate_batch(contexts: Vec<Context>) -> Result<Vec<Request>, String> {
        contexts.into_iter().map(Self::generate).collect()
    }
}

export!(Tabular);
