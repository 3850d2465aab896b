//! KServe v2 / Triton inference requests (the Open Inference Protocol's JSON form): each input tensor gets its
//! shape, datatype and values drawn from a distribution, and the request goes to `/v2/models/<model>/infer`.
//!
//! [payload.config]
//! model = "resnet50"
//! version = "1"                  # optional: /v2/models/<model>/versions/<version>/infer
//! outputs = ["output__0"]        # optional: which outputs to ask for
//! [[payload.config.inputs]]
//! name = "input__0"
//! shape = [1, 3, 224, 224]
//! datatype = "FP32"              # BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES
//! distribution = { kind = "uniform", min = 0.0, max = 1.0 }

use std::fmt::Write as _;
use std::sync::OnceLock;

use plugin_kit::{Distribution, Rng, parse_config};
use serde::Deserialize;

wit_bindgen::generate!({ path: "../wit", world: "generator" });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    model: String,
    version: Option<String>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default = "unit_uniform")]
    distribution: Distribution,
}

fn unit_uniform() -> Distribution {
    Distribution::Uniform { min: 0.0, max: 1.0 }
}

/// How a datatype's values are written: whole numbers within a range, reals, booleans or strings.
#[derive(Clone, Copy)]
enum Kind {
    Integer { min: f64, max: f64 },
    Real,
    Bool,
    Bytes,
}

fn kind_of(datatype: &str) -> Option<Kind> {
    let integer = |bits: i32, signed: bool| {
        let span = 2f64.powi(bits);
        if signed {
            Kind::Integer { min: -span / 2.0, max: span / 2.0 - 1.0 }
        } else {
            Kind::Integer { min: 0.0, max: span - 1.0 }
        }
    };
    Some(match datatype {
        "BOOL" => Kind::Bool,
        "INT8" => integer(8, true),
        "INT16" => integer(16, true),
        "INT32" => integer(32, true),
        "INT64" => integer(53, true),
        "UINT8" => integer(8, false),
        "UINT16" => integer(16, false),
        "UINT32" => integer(32, false),
        "UINT64" => integer(53, false),
        "FP16" | "FP32" | "FP64" | "BF16" => Kind::Real,
        "BYTES" => Kind::Bytes,
        _ => return None,
    })
}

struct Prepared {
    path_suffix: String,
    inputs: Vec<(Input, Kind, u64)>,
    outputs: Vec<String>,
}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

/// More elements than this in one request is a configuration mistake, not a benchmark.
const MAX_ELEMENTS: u64 = 4_000_000;

struct KServeV2;

impl Guest for KServeV2 {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if config.inputs.is_empty() {
            return Err("give at least one [[payload.config.inputs]]".into());
        }
        let mut inputs = Vec::new();
        for input in config.inputs {
            let kind = kind_of(&input.datatype)
                .ok_or_else(|| format!("input `{}`: unknown datatype `{}`", input.name, input.datatype))?;
            let elements = input.shape.iter().product::<u64>();
            if elements == 0 || elements > MAX_ELEMENTS {
                return Err(format!(
                    "input `{}`: shape {:?} has {elements} elements (1 to {MAX_ELEMENTS})",
                    input.name, input.shape
                ));
            }
            inputs.push((input, kind, elements));
        }
        let path_suffix = match &config.version {
            Some(version) => format!("/v2/models/{}/versions/{version}/infer", config.model),
            None => format!("/v2/models/{}/infer", config.model),
        };
        let _ = PREPARED.set(Prepared { path_suffix, inputs, outputs: config.outputs });
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let prepared = PREPARED.get().ok_or("generate before init")?;
        let mut rng = Rng::new(ctx.seed);
        let mut body = format!("{{\"id\":\"{}\",\"inputs\":[", ctx.sequence);
        for (index, (input, kind, elements)) in prepared.inputs.iter().enumerate() {
            let separator = if index == 0 { "" } else { "," };
            let name = serde_json::to_string(&input.name).map_err(|error| error.to_string())?;
            let shape = serde_json::to_string(&input.shape).map_err(|error| error.to_string())?;
            let _ = write!(
                body,
                "{separator}{{\"name\":{name},\"shape\":{shape},\"datatype\":\"{}\",\"data\":[",
                input.datatype
            );
            for element in 0..*elements {
                if element > 0 {
                    body.push(',');
                }
                let value = input.distribution.sample(&mut rng);
                let _ = match *kind {
                    Kind::Integer { min, max } => write!(body, "{}", value.round().clamp(min, max) as i64),
                    Kind::Real => write!(body, "{}", if value.is_finite() { value as f32 } else { 0.0 }),
                    Kind::Bool => write!(body, "{}", value >= 0.5),
                    Kind::Bytes => write!(body, "\"{}\"", value.round() as i64),
                };
            }
            body.push_str("]}");
        }
        body.push(']');
        if !prepared.outputs.is_empty() {
            let outputs: Vec<String> = prepared
                .outputs
                .iter()
                .map(|name| format!("{{\"name\":{}}}", serde_json::Value::from(name.as_str())))
                .collect();
            let _ = write!(body, ",\"outputs\":[{}]", outputs.join(","));
        }
        body.push('}');
        Ok(Request {
            body: body.into_bytes(),
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            path_suffix: Some(prepared.path_suffix.clone()),
        })
    }
}

export!(KServeV2);
