//! The wasmtime host for payload plugins. A plugin is untrusted: it runs with no filesystem, network, environment
//! or real clock and randomness unless the job file grants them, with a memory limit per instance, a time limit per
//! call (epoch interruption) and optional fuel. Any failure stops the configuration's run with a message that names
//! the plugin, the call and the sequence number.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand010::SeedableRng as _;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Overrides, Prepared};
use crate::plan::Segment;
use crate::spec::{PluginGrant, PluginSpec};

mod single {
    wasmtime::component::bindgen!({ path: "../payload-plugins/wit", world: "generator" });
}

mod batch {
    wasmtime::component::bindgen!({
        path: "../payload-plugins/wit",
        world: "batch-generator",
        with: { "plateau:payload/types": super::single::plateau::payload::types },
    });
}

mod conversation {
    wasmtime::component::bindgen!({
        path: "../payload-plugins/wit",
        world: "conversation",
        with: { "plateau:payload/types": super::single::plateau::payload::types },
    });
}

pub use conversation::plateau::payload::turns::{Reply, Turn};
use single::plateau::payload::types::Context as GenerateContext;
pub use single::plateau::payload::types::Request as GeneratedRequest;

/// Requests asked of a plugin that exports `generate-batch`, per call.
const BATCH: u64 = 16;

/// How instances of a plugin are made: plugins that export `generate-batch` are called a batch at a time, and
/// plugins that export `next-turn` hold conversations.
enum Pre {
    Single(single::GeneratorPre<PluginState>),
    Batch(batch::BatchGeneratorPre<PluginState>),
    Conversation(conversation::ConversationPre<PluginState>),
}

enum Bindings {
    Single(single::Generator),
    Batch(batch::BatchGenerator),
    Conversation(conversation::Conversation),
}

/// The contract, also used to wrap core modules into components.
const WIT_SOURCE: &str = include_str!("../../../payload-plugins/wit/payload.wit");
/// Epoch ticks drive the per-call time limit; a call may overrun its limit by up to one tick.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// `init` gets this many calls' worth of time: it may build tables or parse a corpus.
const INIT_CALLS: u64 = 10;
/// Where a granted `read_dir` appears inside the plugin.
pub const GUEST_DATA_DIR: &str = "/data";

/// A compiled plugin, shared by every instance in a job.
pub struct LoadedPlugin {
    /// The file name, for messages.
    pub name: String,
    pub sha256: String,
    /// Whether the file was a core module wrapped into a component at load time.
    pub wrapped_core_module: bool,
    spec: PluginSpec,
    engine: Engine,
    pre: Pre,
    ticker_stop: Arc<AtomicBool>,
    /// Set when the run is interrupted (Ctrl-C, SIGTERM): every call in progress traps at its next epoch tick.
    interrupted: Arc<AtomicBool>,
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// When the call in progress runs out of time.
    call_deadline: Instant,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// One instance, used by one thread at a time: calls never cross threads or wait on a lock.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    store: Store<PluginState>,
    bindings: Bindings,
    /// Requests generated ahead by a batch call, oldest first.
    ready: std::collections::VecDeque<(u64, GeneratedRequest)>,
    /// Reused call to call: only the sequence and seed change within a configuration's run.
    context: GenerateContext,
    job_seed: u64,
}

/// Why a payload plugin cannot be loaded, or cannot make a request: each names the plugin and, for a call, which
/// call and sequence number, and the limit in the job file's words.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read payload plugin `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot configure wasmtime: {0}")]
    Engine(String),
    #[error("payload plugin `{plugin}` cannot be loaded: {reason}")]
    Unloadable { plugin: String, reason: CompileError },
    #[error(
        "plugins may import WASI and nothing else; file, network, clock and random access is granted in \
         [payload.grant]: payload plugin `{plugin}` needs something plateau does not provide: {reason}"
    )]
    Imports { plugin: String, reason: String },
    #[error("payload plugin `{plugin}` does not export the plateau:payload world: {reason}")]
    World { plugin: String, reason: String },
    #[error("cannot open `{}` for payload.grant.read_dir: {reason}", dir.display())]
    GrantedFolder { dir: PathBuf, reason: String },
    #[error("payload plugin `{plugin}`: init refused its config: {message}")]
    InitRefused { plugin: String, message: String },
    #[error("payload plugin `{plugin}`: generate for sequence {sequence} failed: {message}")]
    GenerateRefused { plugin: String, sequence: u64, message: String },
    #[error("payload plugin `{plugin}`: next-turn for conversation {sequence}, turn {turn}, failed: {message}")]
    TurnRefused { plugin: String, sequence: u64, turn: u32, message: String },
    #[error("payload plugin `{plugin}`: generate-batch for sequences {first}-{last} failed: {message}")]
    BatchRefused { plugin: String, first: u64, last: u64, message: String },
    #[error(
        "payload plugin `{plugin}`: generate-batch for sequences {first}-{last} returned {returned} requests for \
         {BATCH} contexts"
    )]
    BatchShort { plugin: String, first: u64, last: u64, returned: usize },
    #[error(
        "payload plugin `{plugin}`: generate for sequence {sequence} returned a body of {bytes} bytes, over the limit \
         of {max} (payload.limits.max_body_bytes)"
    )]
    BodyTooLarge { plugin: String, sequence: u64, bytes: usize, max: u64 },
    #[error(
        "payload plugin `{plugin}` (sha256 {sha256_prefix}): generate for sequence {sequence} returned an invalid \
         {what}: \"{text}\" (header names and values may not hold line breaks or control characters; a path suffix \
         starts with `/`)"
    )]
    InvalidRequest { plugin: String, sha256_prefix: String, sequence: u64, what: &'static str, text: String },
    #[error("payload plugin `{plugin}` (sha256 {sha256_prefix}): {call}{} {failure}", for_sequence(*sequence))]
    CallFailed {
        plugin: String,
        sha256_prefix: String,
        call: &'static str,
        sequence: Option<u64>,
        failure: CallFailure,
    },
}

fn for_sequence(sequence: Option<u64>) -> String {
    sequence.map(|n| format!(" for sequence {n}")).unwrap_or_default()
}

/// How a call into a plugin failed: which limit it hit, or how it trapped.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    #[error("ran past its time limit of {} (payload.limits.call_timeout)", humantime::format_duration(*.0))]
    TimeLimit(Duration),
    #[error(
        "ran past init's time limit of {} ({INIT_CALLS} × payload.limits.call_timeout)",
        humantime::format_duration(*.0)
    )]
    InitTimeLimit(Duration),
    #[error("was stopped: the run was interrupted")]
    Interrupted,
    #[error("used up its fuel of {0} per call (payload.limits.fuel_per_call)")]
    Fuel(u64),
    #[error("tried to grow its memory past the limit of {0} MiB (payload.limits.memory_mb)")]
    Memory(u32),
    /// wasmtime refuses to copy more than a bounded amount out of a guest in one call.
    #[error(
        "returned more data than the host copies in one call; bodies are limited to {0} bytes \
         (payload.limits.max_body_bytes)"
    )]
    TooMuchData(u64),
    #[error("trapped: {0}")]
    Trap(Trap),
    #[error("failed: {0}")]
    Other(String),
}

/// Why a plugin's bytes do not compile into a component of the plateau:payload world.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("not WebAssembly (binary or text): {0}")]
    NotWebAssembly(wat::Error),
    #[error("neither a component nor a core module")]
    NeitherComponentNorModule,
    #[error(
        "the core module imports `{module}::{name}`; a core-module plugin may import nothing (a component may \
         import WASI)"
    )]
    CoreModuleImports { module: String, name: String },
    #[error("the core module does not export the plateau:payload world under the canonical ABI: {0}")]
    NotTheWorld(String),
    /// wasmtime's or wit-component's own message.
    #[error("{0}")]
    Invalid(String),
}

impl LoadedPlugin {
    /// Reads, hashes and compiles the plugin (or loads its compiled form from the cache), and links it against
    /// the WASI the job file grants. Nothing runs yet.
    pub fn load(spec: &PluginSpec) -> Result<Arc<Self>, PluginError> {
        let name = spec.path.file_name().map_or_else(|| spec.path.display().to_string(), |n| n.display().to_string());
        let bytes =
            std::fs::read(&spec.path).map_err(|source| PluginError::Read { path: spec.path.clone(), source })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));

        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(spec.limits.fuel_per_call.is_some());
        // Component calls cost about a third as much without the async machinery, which plugins never use.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|error| PluginError::Engine(error.to_string()))?;

        let (component, wrapped_core_module) = compile_cached(&engine, &bytes, &sha256)
            .map_err(|reason| PluginError::Unloadable { plugin: name.clone(), reason })?;
        let mut linker = Linker::<PluginState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|error| PluginError::Engine(format!("{error:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|error| PluginError::Imports { plugin: name.clone(), reason: format!("{error:#}") })?;
        let pre = if let Ok(conversation) = conversation::ConversationPre::new(pre.clone()) {
            Pre::Conversation(conversation)
        } else if let Ok(batch) = batch::BatchGeneratorPre::new(pre.clone()) {
            Pre::Batch(batch)
        } else {
            Pre::Single(
                single::GeneratorPre::new(pre)
                    .map_err(|error| PluginError::World { plugin: name.clone(), reason: format!("{error:#}") })?,
            )
        };

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), Arc::clone(&ticker_stop));
        let interrupted = Arc::new(AtomicBool::new(false));
        Ok(Arc::new(Self {
            name,
            sha256,
            wrapped_core_module,
            spec: spec.clone(),
            engine,
            pre,
            ticker_stop,
            interrupted,
        }))
    }

    /// Ends every call in progress and refuses the rest: the run is over (Ctrl-C, SIGTERM).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    /// Whether calls may reach WASI's files or network, which block on an async runtime from inside (see
    /// `payload::off_the_runtime`).
    pub fn does_io(&self) -> bool {
        self.spec.grant.read_dir.is_some() || self.spec.grant.network
    }

    /// Whether the plugin holds conversations (exports `next-turn`): its sessions keep each reply for it.
    pub fn holds_conversations(&self) -> bool {
        matches!(self.pre, Pre::Conversation(_))
    }

    /// A new instance with `init` called on it, generating for `configuration`.
    pub fn instantiate(self: &Arc<Self>, configuration: &str, job_seed: u64) -> Result<PluginInstance, PluginError> {
        let wasi = self.wasi_context(job_seed)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.spec.limits.memory_mb as usize * 1024 * 1024)
            .trap_on_grow_failure(true)
            .instances(64)
            .build();
        let state = PluginState { wasi, table: ResourceTable::new(), limits, call_deadline: Instant::now() };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Every tick, a call in progress is checked against its own deadline and against an interrupted run.
        let interrupted = Arc::clone(&self.interrupted);
        store.epoch_deadline_callback(move |context| {
            Ok(if interrupted.load(Ordering::Relaxed) || Instant::now() >= context.data().call_deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        // `init` may do real work (build tables, parse a corpus), so it gets `INIT_CALLS` calls' worth of time.
        self.arm(&mut store, INIT_CALLS);
        let describe = |error: wasmtime::Error| self.describe("init", None, &error);
        let bindings = match &self.pre {
            Pre::Single(pre) => Bindings::Single(pre.instantiate(&mut store).map_err(describe)?),
            Pre::Batch(pre) => Bindings::Batch(pre.instantiate(&mut store).map_err(describe)?),
            Pre::Conversation(pre) => Bindings::Conversation(pre.instantiate(&mut store).map_err(describe)?),
        };
        let config = &self.spec.config_json;
        let init = match &bindings {
            Bindings::Single(bindings) => bindings.call_init(&mut store, config),
            Bindings::Batch(bindings) => bindings.call_init(&mut store, config),
            Bindings::Conversation(bindings) => bindings.call_init(&mut store, config),
        };
        match init {
            Ok(Ok(())) => Ok(PluginInstance {
                plugin: Arc::clone(self),
                store,
                bindings,
                ready: std::collections::VecDeque::new(),
                context: GenerateContext { sequence: 0, configuration: configuration.to_string(), seed: 0 },
                job_seed,
            }),
            Ok(Err(message)) => Err(PluginError::InitRefused { plugin: self.name.clone(), message }),
            Err(error) => Err(self.describe("init", None, &error)),
        }
    }

    fn wasi_context(&self, job_seed: u64) -> Result<WasiCtx, PluginError> {
        let grant: &PluginGrant = &self.spec.grant;
        let mut wasi = WasiCtxBuilder::new();
        if let Some(dir) = &grant.read_dir {
            wasi.preopened_dir(dir, GUEST_DATA_DIR, FsPerms::ReadOnly)
                .map_err(|error| PluginError::GrantedFolder { dir: dir.clone(), reason: format!("{error:#}") })?;
        }
        for name in &grant.env {
            if let Ok(value) = std::env::var(name) {
                wasi.env(name, value);
            }
        }
        if !grant.random {
            wasi.secure_random(rand010::rngs::StdRng::seed_from_u64(job_seed));
            wasi.insecure_random(rand010::rngs::StdRng::seed_from_u64(job_seed ^ 0x9e37_79b9_7f4a_7c15));
            wasi.insecure_random_seed(u128::from(job_seed));
        }
        if !grant.clock {
            wasi.wall_clock(FixedClock);
            wasi.monotonic_clock(FixedClock);
        }
        if grant.network {
            wasi.inherit_network().allow_ip_name_lookup(true);
        } else {
            wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        }
        Ok(wasi.build())
    }

    /// Sets the deadline (and fuel) for the next `calls` calls' worth of work.
    fn arm(&self, store: &mut Store<PluginState>, calls: u64) {
        store.data_mut().call_deadline = Instant::now() + self.spec.limits.call_timeout * calls as u32;
        store.set_epoch_deadline(1);
        if let Some(fuel) = self.spec.limits.fuel_per_call {
            let _ = store.set_fuel(fuel.saturating_mul(calls));
        }
    }

    /// A failed call, with the limit it hit.
    fn describe(&self, call: &'static str, sequence: Option<u64>, error: &wasmtime::Error) -> PluginError {
        let limits = &self.spec.limits;
        let failure = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) if self.interrupted.load(Ordering::Relaxed) => CallFailure::Interrupted,
            Some(Trap::Interrupt) if call == "init" => {
                CallFailure::InitTimeLimit(limits.call_timeout * INIT_CALLS as u32)
            }
            Some(Trap::Interrupt) => CallFailure::TimeLimit(limits.call_timeout),
            Some(Trap::OutOfFuel) => CallFailure::Fuel(limits.fuel_per_call.unwrap_or_default()),
            _ if format!("{error:?}").contains("forcing trap when growing memory") => {
                CallFailure::Memory(limits.memory_mb)
            }
            _ if format!("{error:?}").contains("too much data is being copied") => {
                CallFailure::TooMuchData(limits.max_body_bytes)
            }
            Some(trap) => CallFailure::Trap(*trap),
            None => CallFailure::Other(format!("{error:#}")),
        };
        PluginError::CallFailed {
            plugin: self.name.clone(),
            sha256_prefix: self.sha256[..12].to_string(),
            call,
            sequence,
            failure,
        }
    }
}

impl PluginInstance {
    /// The next request, numbered from `next_sequence` (shared by every instance of the run, and turned into the
    /// single run's numbers by `segment`): one number at a time, or a block of them for a plugin that generates in
    /// batches.
    pub fn next_request(
        &mut self,
        next_sequence: &std::sync::atomic::AtomicU64,
        segment: Segment,
    ) -> Result<Prepared, PluginError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.ready.is_empty() {
            match &self.bindings {
                Bindings::Single(_) | Bindings::Conversation(_) => {
                    let sequence = segment.sequence(next_sequence.fetch_add(1, Relaxed));
                    let request = self.call_generate(sequence)?;
                    self.ready.push_back((sequence, request));
                }
                Bindings::Batch(_) => {
                    let first = next_sequence.fetch_add(BATCH, Relaxed);
                    let sequences: Vec<u64> = (first..first + BATCH).map(|local| segment.sequence(local)).collect();
                    let requests = self.call_generate_batch(&sequences)?;
                    self.ready.extend(sequences.into_iter().zip(requests));
                }
            }
        }
        let (sequence, request) = self.ready.pop_front().expect("a request was just generated");
        self.prepared(sequence, request)
    }

    /// A conversation's first request, numbered from `next_sequence` as `next_request` numbers them; the request
    /// is returned as the plugin made it too, for the turn after it.
    pub fn first_turn(
        &mut self,
        next_sequence: &std::sync::atomic::AtomicU64,
        segment: Segment,
    ) -> Result<(u64, GeneratedRequest, Prepared), PluginError> {
        let sequence = segment.sequence(next_sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let request = self.call_generate(sequence)?;
        let prepared = self.prepared(sequence, request.clone())?;
        Ok((sequence, request, prepared))
    }

    /// The request after `previous` in conversation `sequence`, or `None` when the plugin ends the conversation.
    pub fn next_turn(
        &mut self,
        sequence: u64,
        previous: &Turn,
    ) -> Result<Option<(GeneratedRequest, Prepared)>, PluginError> {
        let plugin = &self.plugin;
        plugin.arm(&mut self.store, 1);
        let index = previous.index + 1;
        self.context.sequence = sequence;
        self.context.seed = request_seed(request_seed(self.job_seed, sequence), u64::from(index));
        let Bindings::Conversation(bindings) = &self.bindings else {
            unreachable!("called for conversation plugins only")
        };
        match bindings.call_next_turn(&mut self.store, &self.context, previous) {
            Ok(Ok(Some(request))) => Ok(Some((request.clone(), self.prepared(sequence, request)?))),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(message)) => {
                Err(PluginError::TurnRefused { plugin: plugin.name.clone(), sequence, turn: index, message })
            }
            Err(error) => Err(plugin.describe("next-turn", Some(sequence), &error)),
        }
    }

    fn call_generate(&mut self, sequence: u64) -> Result<GeneratedRequest, PluginError> {
        let plugin = &self.plugin;
        plugin.arm(&mut self.store, 1);
        self.context.sequence = sequence;
        self.context.seed = request_seed(self.job_seed, sequence);
        let generated = match &self.bindings {
            Bindings::Single(bindings) => bindings.call_generate(&mut self.store, &self.context),
            Bindings::Conversation(bindings) => bindings.call_generate(&mut self.store, &self.context),
            Bindings::Batch(_) => unreachable!("batch plugins are called a batch at a time"),
        };
        match generated {
            Ok(Ok(request)) => Ok(request),
            Ok(Err(message)) => Err(PluginError::GenerateRefused { plugin: plugin.name.clone(), sequence, message }),
            Err(error) => Err(plugin.describe("generate", Some(sequence), &error)),
        }
    }

    fn call_generate_batch(&mut self, sequences: &[u64]) -> Result<Vec<GeneratedRequest>, PluginError> {
        let plugin = &self.plugin;
        plugin.arm(&mut self.store, BATCH);
        let contexts: Vec<GenerateContext> = sequences
            .iter()
            .map(|&sequence| GenerateContext {
                sequence,
                configuration: self.context.configuration.clone(),
                seed: request_seed(self.job_seed, sequence),
            })
            .collect();
        let Bindings::Batch(bindings) = &self.bindings else { unreachable!("called for batch plugins only") };
        let (first, last) = (sequences[0], sequences[sequences.len() - 1]);
        match bindings.call_generate_batch(&mut self.store, &contexts) {
            Ok(Ok(requests)) if requests.len() as u64 == BATCH => Ok(requests),
            Ok(Ok(requests)) => {
                Err(PluginError::BatchShort { plugin: plugin.name.clone(), first, last, returned: requests.len() })
            }
            Ok(Err(message)) => Err(PluginError::BatchRefused { plugin: plugin.name.clone(), first, last, message }),
            Err(error) => Err(plugin.describe("generate-batch", Some(first), &error)),
        }
    }

    /// Checks a generated request against the limits and turns it into what the engine sends.
    fn prepared(&self, sequence: u64, request: GeneratedRequest) -> Result<Prepared, PluginError> {
        let plugin = &self.plugin;
        let GeneratedRequest { body, content_type, headers, path_suffix } = request;
        let max = plugin.spec.limits.max_body_bytes;
        if body.len() as u64 > max {
            return Err(PluginError::BodyTooLarge { plugin: plugin.name.clone(), sequence, bytes: body.len(), max });
        }
        // Checked here, so `payload preview` and `run` refuse the same requests with the same message.
        let invalid = |what: &'static str, text: &str| PluginError::InvalidRequest {
            plugin: plugin.name.clone(),
            sha256_prefix: plugin.sha256[..12].to_string(),
            sequence,
            what,
            text: text.escape_debug().to_string(),
        };
        if let Some(content_type) = &content_type
            && hyper::header::HeaderValue::from_str(content_type).is_err()
        {
            return Err(invalid("content type", content_type));
        }
        for (name, value) in &headers {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid("header name", name));
            }
            if hyper::header::HeaderValue::from_str(value).is_err() {
                return Err(invalid("header value", value));
            }
        }
        if let Some(suffix) = &path_suffix
            && (!suffix.starts_with('/') || suffix.parse::<hyper::Uri>().is_err())
        {
            return Err(invalid("path suffix", suffix));
        }
        let overrides = (content_type.is_some() || !headers.is_empty() || path_suffix.is_some())
            .then(|| Box::new(Overrides { content_type, headers, path_suffix }));
        Ok(Prepared { body: body.into(), overrides })
    }
}

/// Mixes the job seed and the sequence number (SplitMix64's finaliser), so neighbouring requests get unrelated
/// seeds and the same job file gives the same seed for request n on every run.
pub fn request_seed(job_seed: u64, sequence: u64) -> u64 {
    let mut z = job_seed ^ sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The clock a plugin sees unless the job file grants the real one: always 2000-01-01T00:00:00Z, so requests do
/// not depend on when the benchmark ran.
struct FixedClock;

const FIXED_EPOCH_S: u64 = 946_684_800;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_EPOCH_S)
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("plateau-plugin-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning a thread");
}

/// The compiled component for `bytes`, from the on-disk cache when this build compiled it before. The cache key is
/// the plugin's hash plus the engine's compatibility hash, so a new wasmtime or different settings recompile.
fn compile_cached(engine: &Engine, bytes: &[u8], sha256: &str) -> Result<(Component, bool), CompileError> {
    use std::hash::{Hash as _, Hasher as _};
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let wrapped = !wasmparser_is_component(bytes);
    let cache_file = cache_dir().map(|dir| dir.join(format!("{}-{:016x}.cwasm", &sha256[..32], engine_hash.finish())));
    if let Some(path) = cache_file.as_deref().filter(|path| path.exists()) {
        // SAFETY: the file was written by `Component::serialize` of this very build (the name carries the engine's
        // compatibility hash), in a directory only this user writes; wasmtime still checks its header.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
            return Ok((component, wrapped));
        }
    }
    let component_bytes = if wrapped { wrap_core_module(bytes)? } else { bytes.to_vec() };
    let component =
        Component::new(engine, &component_bytes).map_err(|error| CompileError::Invalid(format!("{error:#}")))?;
    if let (Some(path), Ok(serialized)) = (cache_file, component.serialize()) {
        // A cache that cannot be written only costs the next run a compilation.
        let _ = std::fs::create_dir_all(path.parent().expect("cache file has a folder"))
            .and_then(|()| write_atomically(&path, &serialized));
    }
    Ok((component, wrapped))
}

fn wasmparser_is_component(bytes: &[u8]) -> bool {
    let binary = wat::parse_bytes(bytes).map(|cow| cow.into_owned()).unwrap_or_else(|_| bytes.to_vec());
    wasmtime::wasmparser::Parser::is_component(&binary)
}

/// Wraps a core module that exports `init`, `generate`, `memory` and `cabi_realloc` under the canonical ABI into
/// a component of the plateau:payload world, so AssemblyScript, C, Zig or hand-written modules work as plugins.
fn wrap_core_module(bytes: &[u8]) -> Result<Vec<u8>, CompileError> {
    let mut module = wat::parse_bytes(bytes).map_err(CompileError::NotWebAssembly)?.into_owned();
    if !wasmtime::wasmparser::Parser::is_core_wasm(&module) {
        return Err(CompileError::NeitherComponentNorModule);
    }
    for payload in wasmtime::wasmparser::Parser::new(0).parse_all(&module) {
        if let Ok(wasmtime::wasmparser::Payload::ImportSection(imports)) = payload
            && let Some(import) = imports.into_imports().flatten().next()
        {
            return Err(CompileError::CoreModuleImports {
                module: import.module.to_string(),
                name: import.name.to_string(),
            });
        }
    }
    let mut resolve = wit_parser::Resolve::default();
    let invalid = |error: anyhow::Error| CompileError::Invalid(format!("{error:#}"));
    let package = resolve.push_str("payload.wit", WIT_SOURCE).map_err(invalid)?;
    let world = resolve.select_world(&[package], Some("generator")).map_err(invalid)?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .map_err(invalid)?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(invalid)?
        .validate(true)
        .encode()
        .map_err(|error| CompileError::NotTheWorld(format!("{error:#}")))
}

fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("PLATEAU_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("plateau")))
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/plateau")))
        .map(|dir| dir.join("plugins"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}
