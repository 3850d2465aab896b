//! `plateau price-table`: AWS's Price List for SageMaker turned into a plateau price table with every region's
//! on-demand real-time inference prices. It reads either shape AWS publishes the list in: the bulk offer file
//! (`https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonSageMaker/current/index.json`, or a region's
//! `.../current/<region>/index.json`) or what `aws pricing get-products --service-code AmazonSageMaker` prints.
//!
//! Only rows plateau can stand behind become prices: product family `ML Instance`, component `Hosting` (real-time
//! endpoints; not notebooks, training or processing), an on-demand hourly rate in USD with no upper bound (a tier
//! that ends is a free tier's or a volume band's, not the rate an endpoint pays). Two different rates for one
//! instance type in one region are an error naming both SKUs, never a silent pick.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Deserialize;

use super::quoted;
use crate::spec::prices::InstancePrice;

/// The list's product family and component of a real-time endpoint's instance-hour.
const PRODUCT_FAMILY: &str = "ML Instance";
const COMPONENT: &str = "Hosting";

/// A product as the list describes it; attributes plateau does not read are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Product {
    sku: String,
    #[serde(default)]
    product_family: Option<String>,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attributes {
    instance_name: Option<String>,
    component: Option<String>,
    region_code: Option<String>,
    v_cpu: Option<String>,
    memory: Option<String>,
    gpu: Option<String>,
}

/// One offer term: its price dimensions, keyed by rate code.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Term {
    price_dimensions: HashMap<String, PriceDimension>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceDimension {
    unit: String,
    #[serde(default)]
    end_range: Option<String>,
    price_per_unit: HashMap<String, String>,
}

/// The terms plateau reads: on-demand only (reserved and savings plans are not what an endpoint costs by default).
#[derive(Debug, Default, Deserialize)]
struct Terms {
    #[serde(rename = "OnDemand", default)]
    on_demand: HashMap<String, HashMap<String, Term>>,
}

/// The bulk offer file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OfferFile {
    offer_code: String,
    version: String,
    publication_date: String,
    products: HashMap<String, Product>,
    #[serde(default)]
    terms: Terms,
}

/// `aws pricing get-products`' output: each product a JSON document in a string.
#[derive(Debug, Deserialize)]
struct GetProducts {
    #[serde(rename = "PriceList")]
    price_list: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceListItem {
    product: Product,
    #[serde(default)]
    terms: Terms,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    publication_date: Option<String>,
}

/// Why a file cannot be turned into prices.
#[derive(Debug, thiserror::Error)]
pub enum PriceListError {
    #[error("`{path}` is not JSON (line {line}, column {column}): {message}")]
    NotJson { path: String, line: usize, column: usize, message: String },
    #[error(
        "`{path}` is neither an AWS Price List offer file nor `aws pricing get-products` output: {message}\n  \
         hint: download https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonSageMaker/current/index.json"
    )]
    NotAPriceList { path: String, message: String },
    #[error("`{path}` is the price list of {offer_code}, not of AmazonSageMaker")]
    OtherService { path: String, offer_code: String },
    #[error(
        "{instance} in {region} has two on-demand Hosting rates, {first_usd} USD/h (SKU {first_sku}) and \
         {second_usd} USD/h (SKU {second_sku}); plateau will not pick one\n  \
         hint: give the instance type its own `price_per_hour_usd` in the job file"
    )]
    Ambiguous {
        instance: String,
        region: String,
        first_usd: f64,
        first_sku: String,
        second_usd: f64,
        second_sku: String,
    },
    #[error("the price list has no real-time inference (Hosting) prices in {region}; it has them in: {found}")]
    NoSuchRegion { region: String, found: String },
    #[error("the price list has no real-time inference (Hosting) instance prices at all")]
    NoHostingPrices,
}

/// One file's text, with the path it came from (for errors).
pub struct PriceListFile<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

/// Prices gathered from one or more files: by region, then instance type.
#[derive(Debug, Default)]
pub struct Gathered {
    regions: BTreeMap<String, BTreeMap<String, Rate>>,
    /// The offer's versions and publication dates, for the table's header and `as_of`.
    versions: Vec<String>,
    latest_publication: String,
}

#[derive(Debug, Clone)]
struct Rate {
    sku: String,
    price: InstancePrice,
}

impl Gathered {
    /// Reads every file into one set of prices.
    pub fn read(files: &[PriceListFile<'_>]) -> Result<Self, PriceListError> {
        let mut gathered = Gathered::default();
        for file in files {
            gathered.add(file)?;
        }
        if gathered.regions.is_empty() {
            return Err(PriceListError::NoHostingPrices);
        }
        Ok(gathered)
    }

    fn add(&mut self, file: &PriceListFile<'_>) -> Result<(), PriceListError> {
        let value: serde_json::Value = serde_json::from_str(file.text).map_err(|error| PriceListError::NotJson {
            path: file.path.to_string(),
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        })?;
        let not_a_list = |message: String| PriceListError::NotAPriceList { path: file.path.to_string(), message };
        if value.get("PriceList").is_some() {
            let listed: GetProducts = serde_json::from_value(value).map_err(|error| not_a_list(error.to_string()))?;
            for (n, item) in listed.price_list.iter().enumerate() {
                let item: PriceListItem =
                    serde_json::from_str(item).map_err(|error| not_a_list(format!("PriceList[{n}]: {error}")))?;
                if let Some(date) = item.publication_date.as_deref() {
                    self.published(date, item.version.as_deref());
                }
                self.product(&item.product, &item.terms)?;
            }
        } else if value.get("products").is_some() {
            let offer: OfferFile = serde_json::from_value(value).map_err(|error| not_a_list(error.to_string()))?;
            if offer.offer_code != "AmazonSageMaker" {
                return Err(PriceListError::OtherService { path: file.path.to_string(), offer_code: offer.offer_code });
            }
            self.published(&offer.publication_date, Some(&offer.version));
            for product in offer.products.values() {
                self.product(product, &offer.terms)?;
            }
        } else {
            return Err(not_a_list("it has neither `products` nor `PriceList`".to_string()));
        }
        Ok(())
    }

    fn published(&mut self, date: &str, version: Option<&str>) {
        if date > self.latest_publication.as_str() {
            self.latest_publication = date.to_string();
        }
        if let Some(version) = version.filter(|version| !self.versions.iter().any(|seen| seen == version)) {
            self.versions.push(version.to_string());
        }
    }

    /// Adds a product's on-demand hourly rate when it is a real-time endpoint's instance.
    fn product(&mut self, product: &Product, terms: &Terms) -> Result<(), PriceListError> {
        let attributes = &product.attributes;
        let (Some(instance), Some(region)) = (&attributes.instance_name, &attributes.region_code) else {
            return Ok(());
        };
        if product.product_family.as_deref() != Some(PRODUCT_FAMILY)
            || attributes.component.as_deref() != Some(COMPONENT)
            || !instance.starts_with("ml.")
        {
            return Ok(());
        }
        let Some(usd_per_hour) = on_demand_hourly_usd(terms.on_demand.get(&product.sku)) else {
            return Ok(());
        };
        let price = InstancePrice {
            price_per_hour_usd: usd_per_hour,
            vcpus: leading_number(attributes.v_cpu.as_deref()).map_or(0, |vcpus| vcpus as u32),
            memory_gib: leading_number(attributes.memory.as_deref()).unwrap_or(0.0),
            gpus: leading_number(attributes.gpu.as_deref()).map_or(0, |gpus| gpus as u32),
        };
        let rates = self.regions.entry(region.clone()).or_default();
        match rates.get(instance) {
            Some(known) if known.price.price_per_hour_usd != usd_per_hour => Err(PriceListError::Ambiguous {
                instance: instance.clone(),
                region: region.clone(),
                first_usd: known.price.price_per_hour_usd,
                first_sku: known.sku.clone(),
                second_usd: usd_per_hour,
                second_sku: product.sku.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                rates.insert(instance.clone(), Rate { sku: product.sku.clone(), price });
                Ok(())
            }
        }
    }

    /// The price table's text: `region`'s prices as the table's own, every other region under `[regions]`
    /// (only those in `only`, when given).
    pub fn to_table(&self, region: &str, only: &[String]) -> Result<String, PriceListError> {
        let own = self.regions.get(region).ok_or_else(|| PriceListError::NoSuchRegion {
            region: region.to_string(),
            found: self.regions.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        for wanted in only {
            if !self.regions.contains_key(wanted) {
                return Err(PriceListError::NoSuchRegion {
                    region: wanted.clone(),
                    found: self.regions.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let as_of = self.latest_publication.get(..10).unwrap_or(&self.latest_publication);
        let versions = if self.versions.is_empty() { "as listed".to_string() } else { self.versions.join(", ") };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# SageMaker real-time inference on-demand prices, USD per instance-hour, with each type's vCPUs, memory\n\
             # and GPUs, from AWS's Price List (AmazonSageMaker, product family \"ML Instance\", component \"Hosting\";\n\
             # offer version {versions}, published {}), written by `plateau price-table`. Storage, data\n\
             # processing and serverless inference are not in it.",
            self.latest_publication
        );
        let _ = writeln!(text, "as_of = {}", quoted(as_of));
        let _ = writeln!(text, "region = {}", quoted(region));
        let _ = writeln!(text, "origin = {}", quoted(&format!("AWS Price List, AmazonSageMaker offer {versions}")));
        write_instances(&mut text, "instances", own);
        for (name, rates) in &self.regions {
            if name != region && (only.is_empty() || only.contains(name)) {
                write_instances(&mut text, &format!("regions.{name}.instances"), rates);
            }
        }
        Ok(text)
    }
}

fn write_instances(text: &mut String, table: &str, rates: &BTreeMap<String, Rate>) {
    let _ = writeln!(text, "\n[{table}]");
    for (instance, Rate { price, .. }) in rates {
        let _ = write!(
            text,
            "{} = {{ price_per_hour_usd = {}, vcpus = {}, memory_gib = {}",
            quoted(instance),
            price.price_per_hour_usd,
            price.vcpus,
            price.memory_gib
        );
        if price.gpus > 0 {
            let _ = write!(text, ", gpus = {}", price.gpus);
        }
        let _ = writeln!(text, " }}");
    }
}

/// The hourly USD rate of a product's on-demand terms: a dimension in hours with no upper bound and a price above
/// zero (free tiers and volume bands end, and a zero is not what an endpoint pays).
fn on_demand_hourly_usd(terms: Option<&HashMap<String, Term>>) -> Option<f64> {
    terms?
        .values()
        .flat_map(|term| term.price_dimensions.values())
        .filter(|dimension| dimension.unit == "Hrs")
        .filter(|dimension| dimension.end_range.as_deref().is_none_or(|end| end == "Inf"))
        .filter_map(|dimension| dimension.price_per_unit.get("USD")?.parse::<f64>().ok())
        .find(|usd| *usd > 0.0)
}

/// The number an attribute starts with: "16 GiB" is 16, "4" is 4, "NA" is none.
fn leading_number(text: Option<&str>) -> Option<f64> {
    let text = text?.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    text[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::prices::PriceTable;

    fn product(sku: &str, region: &str, instance: &str, component: &str, usd: &str) -> (String, String) {
        let product = format!(
            r#""{sku}": {{"sku": "{sku}", "productFamily": "ML Instance", "attributes": {{"servicecode": "AmazonSageMaker",
                "instanceName": "{instance}", "component": "{component}", "regionCode": "{region}", "vCpu": "4",
                "memory": "16 GiB", "gpu": "1", "usagetype": "X-Host:{instance}"}}}}"#
        );
        let term = format!(
            r#""{sku}": {{"{sku}.JRTCKXETXF": {{"offerTermCode": "JRTCKXETXF", "sku": "{sku}",
                "priceDimensions": {{"{sku}.JRTCKXETXF.6YS6EN2CT7": {{"unit": "Hrs", "beginRange": "0",
                "endRange": "Inf", "pricePerUnit": {{"USD": "{usd}"}}}}}}}}}}"#
        );
        (product, term)
    }

    fn offer(rows: &[(String, String)]) -> String {
        let products: Vec<&str> = rows.iter().map(|(product, _)| product.as_str()).collect();
        let terms: Vec<&str> = rows.iter().map(|(_, term)| term.as_str()).collect();
        format!(
            r#"{{"formatVersion": "v1.0", "offerCode": "AmazonSageMaker", "version": "20261101000000",
                "publicationDate": "2026-11-01T00:00:00Z", "products": {{{}}}, "terms": {{"OnDemand": {{{}}}}}}}"#,
            products.join(","),
            terms.join(",")
        )
    }

    #[test]
    fn two_rates_for_one_instance_in_one_region_are_refused_naming_both_skus() {
        let text = offer(&[
            product("A", "us-east-1", "ml.g5.xlarge", "Hosting", "1.4080000000"),
            product("B", "us-east-1", "ml.g5.xlarge", "Hosting", "1.5000000000"),
        ]);
        let error = Gathered::read(&[PriceListFile { path: "offer.json", text: &text }]).unwrap_err().to_string();
        assert!(error.contains("SKU A") && error.contains("SKU B") && error.contains("price_per_hour_usd"), "{error}");
    }

    #[test]
    fn only_real_time_hosting_rates_become_prices_and_the_table_reads_back() {
        let text = offer(&[
            product("A", "us-east-1", "ml.g5.xlarge", "Hosting", "1.4080000000"),
            product("B", "us-east-1", "ml.g5.xlarge", "Notebook", "1.9000000000"),
            product("C", "eu-west-1", "ml.g5.xlarge", "Hosting", "1.5770000000"),
            product("D", "eu-west-1", "ml.g5.2xlarge", "Hosting", "0.0000000000"),
        ]);
        let gathered = Gathered::read(&[PriceListFile { path: "offer.json", text: &text }]).unwrap();
        let written = gathered.to_table("us-east-1", &[]).unwrap();
        let table: PriceTable = toml::from_str(&written).unwrap();
        assert_eq!(table.as_of, "2026-11-01");
        assert_eq!(table.instances["ml.g5.xlarge"].price_per_hour_usd, 1.408);
        assert_eq!(
            table.instances["ml.g5.xlarge"],
            InstancePrice { price_per_hour_usd: 1.408, vcpus: 4, memory_gib: 16.0, gpus: 1 }
        );
        let ireland = &table.regions["eu-west-1"].instances;
        assert_eq!((ireland.len(), ireland["ml.g5.xlarge"].price_per_hour_usd), (1, 1.577));
        let missing = gathered.to_table("ap-south-1", &[]).unwrap_err().to_string();
        assert!(missing.contains("eu-west-1, us-east-1"), "{missing}");
    }

    #[test]
    fn attributes_read_their_leading_number() {
        assert_eq!(leading_number(Some("16 GiB")), Some(16.0));
        assert_eq!(leading_number(Some("0.5 GiB")), Some(0.5));
        assert_eq!(leading_number(Some("NA")), None);
        assert_eq!(leading_number(None), None);
    }
}
