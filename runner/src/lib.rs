//! plateau: benchmark-as-code for ML inference endpoints.
//!
//! The stages pass plain data to each other: `spec` (job files) -> `plan` (test runs) -> `drive` (the load
//! engine, against a `target`, with bodies from `payload`) -> `measure` (histograms, per-second series) -> `analyze` (plateau, metrics,
//! recommendation) -> `results` (the saved document) -> `report` (templates). `execute` runs a job through
//! them; `cloudwatch` publishes client metrics and reads endpoint metrics; `cli` parses arguments.

pub mod analyze;
pub mod cli;
pub mod cloudwatch;
pub mod drive;
pub mod execute;
pub mod exit;
pub mod measure;
pub mod payload;
pub mod plan;
pub mod report;
pub mod results;
pub mod spec;
pub mod target;
