//! plateau: benchmark-as-code for ML inference endpoints.
//!
//! The stages pass plain data to each other, in this order (docs/architecture.md draws it, and a test keeps every
//! `use crate::` pointing down it): `spec` (job files) -> `plan` (test runs, each with its schedule) -> `drive`
//! (the load engine) against a `target` (what plateau sends to) served by a `server` (what plateau starts) with
//! bodies from `payload` -> `measure` (histograms, per-second series, steps) -> `analyze` (plateau, metrics) ->
//! `results` (the saved document) -> `recommend` -> `report` (templates). `run` drives a job through them; `aws`
//! holds the SDK set-up and CloudWatch; `cli` parses arguments.

pub mod analyze;
pub mod aws;
pub mod cli;
pub mod drive;
pub mod exit;
pub mod git;
pub mod history;
pub mod import;
pub mod measure;
pub mod payload;
pub mod plan;
pub(crate) mod precise_timer;
pub mod publish;
pub mod recommend;
pub mod report;
pub mod results;
pub mod run;
pub mod server;
pub mod spec;
pub mod target;
pub mod tokenizer;
pub mod units;
