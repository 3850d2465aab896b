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
    /// Where the prices come from when they are list prices (a table `plateau price-table` wrote); without it they
    /// are estimates.
    #[serde(default)]
    pub origin: Option<String>,
    /// Serverless inference: USD per GB-second of memory while a request is in the endpoint, when the table has it.
    #[serde(default)]
    pub serverless_gb_second_usd: Option<f64>,
    pub instances: BTreeMap<String, InstancePrice>,
    /// Other regions' prices, each like the table's own: `[regions.eu-west-1.instances]`.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPrices>,
    /// Where the table came from, for reports; not part of the file.
    #[serde(skip)]
    pub source: String,
}

/// One more region's prices in a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    #[serde(default)]
    pub serverless_gb_second_usd: Option<f64>,
    pub instances: BTreeMap<String, InstancePrice>,
}

/// The prices a configuration is priced from: its endpoint's region's, or the table's own region's when the table
/// has none for it (said in `describe`).
pub struct Regional<'a> {
    pub instances: &'a BTreeMap<String, InstancePrice>,
    pub serverless_gb_second_usd: Option<f64>,
    description: String,
}

impl Regional<'_> {
    /// How a report names a price from here.
    pub fn describe(&self) -> &str {
        &self.description
    }
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

    /// The prices for an endpoint in `region` (none: the table's own region).
    pub fn in_region(&self, region: Option<&str>) -> Regional<'_> {
        let estimate = |region: &str| match &self.origin {
            Some(origin) => format!("{origin} via {}, {region} on-demand, as of {}", self.source, self.as_of),
            None => format!("estimate from {}, {region} on-demand, as of {}", self.source, self.as_of),
        };
        match region.filter(|region| *region != self.region) {
            Some(region) => match self.regions.get(region) {
                Some(prices) => Regional {
                    instances: &prices.instances,
                    serverless_gb_second_usd: prices.serverless_gb_second_usd,
                    description: estimate(region),
                },
                None => Regional {
                    instances: &self.instances,
                    serverless_gb_second_usd: self.serverless_gb_second_usd,
                    description: format!("{} (the table has no {region} prices)", estimate(&self.region)),
                },
            },
            None => Regional {
                instances: &self.instances,
                serverless_gb_second_usd: self.serverless_gb_second_usd,
                description: estimate(&self.region),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_priced_from_its_regions_prices_and_says_when_the_table_has_none() {
        let text = "as_of = \"2026-11\"\nregion = \"us-east-1\"\n\
                    [instances]\n\"ml.m5.large\" = { price_per_hour_usd = 0.115, vcpus = 2, memory_gib = 8 }\n\
                    [regions.eu-west-1.instances]\n\"ml.m5.large\" = { price_per_hour_usd = 0.128, vcpus = 2, memory_gib = 8 }\n";
        let mut table: PriceTable = toml::from_str(text).unwrap();
        table.source = "prices.toml".into();
        let price = |region| table.in_region(region).instances["ml.m5.large"].price_per_hour_usd;
        assert_eq!((price(None), price(Some("us-east-1")), price(Some("eu-west-1"))), (0.115, 0.115, 0.128));
        assert_eq!(
            table.in_region(Some("eu-west-1")).describe(),
            "estimate from prices.toml, eu-west-1 on-demand, as of 2026-11"
        );
        assert_eq!(
            table.in_region(Some("ap-south-1")).describe(),
            "estimate from prices.toml, us-east-1 on-demand, as of 2026-11 (the table has no ap-south-1 prices)"
        );
    }

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
