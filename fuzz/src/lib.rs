//! The fuzz targets' bodies: what each does with one input and what it asserts beyond "no panic". libFuzzer calls
//! them from `fuzz_targets/` (`benches/fuzz.sh`, coverage-guided, as long as asked); `tests/fuzz.rs` calls the
//! same functions on the committed corpus and on seeded mutations of it, within CI's budget.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use plateau::measure::TokenCount;
use plateau::payload::plugin::LoadedPlugin;
use plateau::results::Results;
use plateau::spec::{PluginGrant, PluginLimits, PluginSpec};
use plateau::target::openai::{Reading, TokenReader};
use plateau::target::wire::{Connection, WireError};

/// The targets, by the names `cargo fuzz` and the corpus folders use.
/// Each returns whether the input reached past the first check (a job that validates, results that load, a
/// response that parses, a plugin that initialises), so a corpus that stops reaching it is seen.
pub const TARGETS: [(&str, fn(&[u8]) -> bool); 5] = [
    ("job_file", job_file),
    ("results_file", results_file),
    ("http_response", http_response),
    ("token_stream", token_stream),
    ("plugin_module", plugin_module),
];

/// Keeps generated plugins out of plateau's compiled-plugin cache, which would keep a file per input.
///
/// # Safety
/// It sets an environment variable: call it before any other thread runs.
pub unsafe fn without_plugin_cache() {
    // A folder under a file: the cache can be neither read nor written, so every plugin is compiled afresh.
    unsafe { std::env::set_var("PLATEAU_CACHE_DIR", "/dev/null/plateau-fuzz") }
}

/// What an unrelated file holds; no error message may ever show it.
const SECRET: &str = "PLATEAU-FUZZ-SECRET-7f3a";

/// A folder per process: `job/` holds the job file's folder (the included file is written there), `outside/` a
/// TOML file the job may not include, and `job/secret.env` a file that is not TOML.
fn workspace() -> &'static Path {
    static FOLDER: OnceLock<PathBuf> = OnceLock::new();
    FOLDER.get_or_init(|| {
        let folder = std::env::temp_dir().join(format!("plateau-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(folder.join("job")).unwrap();
        std::fs::create_dir_all(folder.join("outside")).unwrap();
        std::fs::write(folder.join("outside/secret.toml"), format!("[job]\nname = \"{SECRET}\"\n")).unwrap();
        std::fs::write(folder.join("job/secret.env"), format!("export TOKEN={SECRET}\n")).unwrap();
        folder
    })
}

/// A job file, then (after the first NUL byte, if any) the text of `included.toml` beside it. Parsing either
/// yields a job that plans, or errors that render; neither shows what a file outside the job's folder or a file
/// that is not TOML holds.
pub fn job_file(data: &[u8]) -> bool {
    let (main, included) = match data.iter().position(|&byte| byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(main) = std::str::from_utf8(main) else { return false };
    let folder = workspace().join("job");
    std::fs::write(folder.join("included.toml"), included).unwrap();
    match plateau::spec::parse(&folder.join("job.toml"), main) {
        Ok(job) => {
            let _ = plateau::plan::plan(&job);
            true
        }
        Err(error) => {
            let printed = error.to_string();
            assert!(!printed.is_empty());
            let quoted_by_the_input = main.contains(SECRET) || String::from_utf8_lossy(included).contains(SECRET);
            assert!(
                quoted_by_the_input || !printed.contains(SECRET),
                "an error showed another file's text:\n{printed}"
            );
            false
        }
    }
}

/// A results document (two, split at the first NUL byte, for `compare`). A document that loads renders every
/// report and compares, and what plateau writes of it loads again.
pub fn results_file(data: &[u8]) -> bool {
    let (base, head) = match data.iter().position(|&byte| byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let load = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).ok()?;
        Results::from_json(Path::new("results.json"), text).map_err(|error| assert!(!error.to_string().is_empty())).ok()
    };
    let Some(base) = load(base) else { return false };
    let written = serde_json::to_string(&base).unwrap();
    if let Err(error) = Results::from_json(Path::new("written.json"), &written) {
        panic!("plateau cannot read back the results it wrote: {error}\n{written}");
    }
    let env = plateau::report::environment(None);
    let view = plateau::report::view(&base, &env).unwrap();
    for template in ["report.md.j2", "report.html.j2", "summary.txt.j2"] {
        plateau::report::render(&env, template, &view).unwrap();
    }
    let head = load(head).unwrap_or_else(|| base.clone());
    let comparison = plateau::report::compare::compare(&base, &head, &[]);
    for template in ["compare.md.j2", "compare.junit.xml.j2"] {
        plateau::report::render(&env, template, &comparison).unwrap();
    }
    serde_json::to_string(&comparison).unwrap();
    true
}

/// A server's bytes, as the wire client reads them after sending a request. The first byte chooses the request
/// (HEAD or not), whether the body is kept and its cap; the second how the rest arrives in pieces. Read whole or
/// in pieces, the response is the same: the parser is incremental and keeps nothing of a read's boundaries.
pub fn http_response(data: &[u8]) -> bool {
    let [options, pieces, response @ ..] = data else { return false };
    let head_request = options & 1 == 1;
    let keep_body = options & 2 == 2;
    let max_body_bytes = [0, 16, 1024, 1 << 20][usize::from(options >> 2 & 3)];
    let exchange = |piece_sizes: &mut dyn Iterator<Item = usize>| {
        let mut script = Vec::new();
        let mut rest = response;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(piece_sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len()));
            script.push(piece);
            rest = after;
        }
        let mut connection = Connection::over(Scripted { pieces: script.into_iter() });
        let exchanged = connection.exchange(b"GET / HTTP/1.1\r\n\r\n", head_request, max_body_bytes, keep_body, None);
        // A scripted stream is always ready, so one poll finishes the exchange.
        match exchanged.now_or_never().expect("the exchange waited on a stream that is always ready") {
            Ok((response, _keep_alive)) => {
                assert!(response.body.len() as u64 <= max_body_bytes && (keep_body || response.body.is_empty()));
                Ok((response.status, response.body))
            }
            Err(error) => Err(error),
        }
    };
    let whole = exchange(&mut std::iter::empty());
    let mut seed = u64::from(*pieces) | 1;
    let mut sizes = std::iter::from_fn(|| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        Some((seed >> 60) as usize + 1)
    });
    let in_pieces: Result<(u16, Vec<u8>), WireError> = exchange(&mut sizes);
    assert_eq!(whole, in_pieces, "the same bytes in pieces read differently");
    whole.is_ok()
}

/// A language model's event stream, as the token reader reads a response's body. The first byte chooses how the
/// rest arrives in pieces. Read whole or in pieces (at one instant, so timings cannot differ), the reading is the
/// same: tokens, usage, and why a stream broke. Returns whether the stream carried a token or its end.
pub fn token_stream(data: &[u8]) -> bool {
    let [pieces, stream @ ..] = data else { return false };
    let at = Instant::now();
    let read = |piece_sizes: &mut dyn Iterator<Item = usize>| {
        let mut reader = TokenReader::default();
        reader.begin(at);
        reader.event_stream(true);
        let mut rest = stream;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(piece_sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len()));
            reader.feed(piece, at);
            rest = after;
        }
        let gaps = reader.gaps_us().to_vec();
        (reader.finish(b""), gaps)
    };
    let whole = read(&mut std::iter::empty());
    let mut seed = u64::from(*pieces) | 1;
    let mut sizes = std::iter::from_fn(|| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        Some((seed >> 58) as usize + 1)
    });
    let in_pieces = read(&mut sizes);
    assert_eq!(whole, in_pieces, "the same stream in pieces read differently");
    let (reading, gaps) = whole;
    let tokens = match &reading {
        Reading::Complete(tokens) | Reading::Broken(tokens, _) => *tokens,
    };
    // A gap between every two text chunks, none before the first.
    if tokens.counted == TokenCount::Estimated {
        assert_eq!(gaps.len() as u32, tokens.output.saturating_sub(1));
    }
    tokens.output > 0 || matches!(reading, Reading::Complete(_))
}

/// A stream whose reads return the scripted pieces, then the end; writes go nowhere.
struct Scripted<'a> {
    pieces: std::vec::IntoIter<&'a [u8]>,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(piece) = self.pieces.next() {
            let room = buffer.remaining();
            buffer.put_slice(&piece[..piece.len().min(room)]);
            if piece.len() > room {
                // The rest of the piece comes with the next read.
                let rest: Vec<&[u8]> = std::iter::once(&piece[room..]).chain(self.pieces.by_ref()).collect();
                self.pieces = rest.into_iter();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(bytes.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The exports of a core-module plugin under the canonical ABI; wasm-smith writes random bodies for them.
const PLUGIN_EXPORTS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "init") (param i32 i32) (result i32) unreachable)
  (func (export "generate") (param i64 i32 i32 i64) (result i32) unreachable))"#;

/// Time limit per call: small, so looping modules end quickly.
const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(10);

/// A generated core module with the plugin exports, loaded with a seeded config and limits, initialised and asked
/// for three requests. Whatever the module does, each step ends in a request or an error that names the plugin,
/// within its limits (init gets ten calls' time).
pub fn plugin_module(data: &[u8]) -> bool {
    static EXPORTS: OnceLock<Vec<u8>> = OnceLock::new();
    let mut input = Unstructured::new(data);
    let mut config = wasm_smith::Config {
        exports: Some(EXPORTS.get_or_init(|| wat::parse_str(PLUGIN_EXPORTS).unwrap()).clone()),
        max_imports: 0,
        // What wasmtime is built without (plateau's features): a module using it would fail to compile, and no more.
        gc_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        reference_types_enabled: false,
        relaxed_simd_enabled: false,
        // Half the modules trap wherever wasm-smith likes; the other half never trap, so init returns and
        // generate's results are lifted and checked.
        disallow_traps: input.arbitrary().unwrap_or(false),
        max_memory32_bytes: 4 << 20,
        ..wasm_smith::Config::default()
    };
    config.max_memories = 1;
    let fuel_per_call = input.arbitrary::<bool>().unwrap_or(false).then_some(100_000);
    let config_json = serde_json::to_string(&input.arbitrary::<String>().unwrap_or_default()).unwrap();
    let Ok(module) = wasm_smith::Module::new(config, &mut input) else { return false };
    let path = workspace().join("plugin.wasm");
    std::fs::write(&path, module.to_bytes()).unwrap();
    let spec = PluginSpec {
        path,
        config_json,
        limits: PluginLimits { memory_mb: 16, call_timeout: PLUGIN_CALL_TIMEOUT, fuel_per_call, max_body_bytes: 4096 },
        grant: PluginGrant::default(),
    };
    let named = |error: &plateau::payload::plugin::PluginError| {
        let message = error.to_string();
        assert!(message.contains("plugin.wasm"), "the error does not name the plugin: {message}");
        false
    };
    let plugin = match LoadedPlugin::load(&spec) {
        Ok(plugin) => plugin,
        Err(error) => return named(&error),
    };
    let started = Instant::now();
    let mut instance = match plugin.instantiate("fuzz", 7) {
        Ok(instance) => instance,
        Err(error) => return named(&error),
    };
    // Init's limit, plus two ticks of the epoch that enforces it and room for a loaded machine.
    assert!(started.elapsed() < PLUGIN_CALL_TIMEOUT * 10 + Duration::from_secs(1), "init ran past its limit");
    let sequence = AtomicU64::new(0);
    for _ in 0..3 {
        let started = Instant::now();
        let generated = instance.next_request(&sequence, plateau::plan::Segment::whole());
        assert!(started.elapsed() < PLUGIN_CALL_TIMEOUT * 16 + Duration::from_secs(1), "generate ran past its limit");
        if let Err(error) = generated {
            named(&error);
            break;
        }
    }
    true
}
