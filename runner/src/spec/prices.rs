//! Instance prices: the built-in table of SageMaker on-demand prices (an estimate, dated; `runner/data/`), or a
//! table of the user's own in the same format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

const BUILT_IN: &str = include_str!("../../data/sagemaker-prices.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub as_of: String,
    pub region: String,
    /// Serverless inference: USD per GB-second of memory while a request is in the endpoint, when the table has it.
    #[serde(default)]
    pub serverless_gb_second_usd: Option<f64>,
    pub instances: BTreeMap<String, InstancePrice>,
    /// Where the table came from, for reports; not part of the file.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstancePrice {
    pub price_per_hour_usd: f64,
    pub vcpus: u32,
    pub memory_gib: f64,
    /// GPUs, for GPUUtilization per GPU (SageMaker reports up to 100 for each); none when absent.
    #[serde(default)]
    pub gpus: u32,
}

/// Why a user's price table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("`{path}` is not a price table: {message}")]
    Invalid { path: String, message: String },
}

impl PriceTable {
    pub fn built_in() -> Self {
        let mut table: PriceTable = toml::from_str(BUILT_IN).expect("the built-in price table is valid (tested)");
        table.source = "plateau's built-in table".to_string();
        table
    }

    pub fn load(path: &Path) -> Result<Self, PriceTableError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PriceTableError::Read { path: path.display().to_string(), source })?;
        let mut table: PriceTable = toml::from_str(&text).map_err(|error| PriceTableError::Invalid {
            path: path.display().to_string(),
            message: error.message().to_string(),
        })?;
        table.source = path.display().to_string();
        Ok(table)
    }

    /// How a report names a price from this table.
    pub fn describe(&self) -> String {
        format!("estimate from {}, {} on-demand, as of {}", self.source, self.region, self.as_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_parses_and_is_plausible() {
        let table = PriceTable::built_in();
        assert!(table.instances.len() >= 20);
        for (name, price) in &table.instances {
            assert!(name.starts_with("ml."), "{name}");
            assert!(price.price_per_hour_usd > 0.01 && price.price_per_hour_usd < 50.0, "{name}");
            assert!(price.vcpus >= 2, "{name}");
        }
        assert_eq!(table.instances["ml.c5.xlarge"].vcpus, 4);
        // 1 GB for an hour: 0.072 USD.
        assert!((table.serverless_gb_second_usd.unwrap() * 3600.0 - 0.072).abs() < 1e-9);
        assert_eq!((table.instances["ml.g5.12xlarge"].gpus, table.instances["ml.c5.xlarge"].gpus), (4, 0));
    }
}
