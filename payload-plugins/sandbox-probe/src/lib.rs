//! For tests only: each request's body reports what the sandbox let the plugin see, so the tests can check that
//! nothing is granted by default and that each grant works. A config of `{"header": [name, value]}` adds that
//! header to every request, exactly as given, so tests can check what the host refuses.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::OnceLock;

static HEADER: OnceLock<Option<(String, String)>> = OnceLock::new();
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({ path: "../wit", world: "generator" });

struct Probe;

impl Guest for Probe {
    fn init(config: String) -> Result<(), String> {
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        let header = config["header"].as_array().and_then(|pair| {
            Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.as_str()?.to_string()))
        });
        let _ = HEADER.set(header);
        Ok(())
    }

    fn generate(_ctx: Context) -> Result<Request, String> {
        let report = serde_json::json!({
            "env": std::env::var("PLATEAU_PROBE").ok(),
            "env_count": std::env::vars().count(),
            "file": std::fs::read_to_string("/data/sample.txt").map_err(|error| error.to_string()),
            "clock_s": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            // RandomState's keys come from WASI random, so this hash shows whether randomness is seeded.
            "random": RandomState::new().hash_one(0u8),
        });
        Ok(Request {
            body: report.to_string().into_bytes(),
            content_type: None,
            headers: HEADER.get().cloned().flatten().into_iter().collect(),
            path_suffix: None,
        })
    }
}

export!(Probe);
