//! Request bodies: the job file's fixed body, or one generated per request by a WASM plugin. Each virtual user
//! (or open-model worker) owns a `PayloadStream` and prepares its next request before it starts the clock, so
//! generation never sits inside a measured latency. Plugin instances are one per runtime thread, not one per user:
//! a call runs to completion on its thread (it never awaits), so the users a thread runs can share that thread's
//! instance without a lock, and two instances stay warm in cache instead of hundreds.

pub mod plugin;

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::plan::Segment;
use crate::spec::Payload;
pub use plugin::{CallFailure, CompileError, LoadedPlugin, PluginError, Reply};
use plugin::{GeneratedRequest, PluginInstance, Turn};

/// The next request's body, and what a plugin changed of the job file's request.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: Bytes,
    /// `None` on the fast path: the request is the template's.
    pub overrides: Option<Box<Overrides>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub path_suffix: Option<String>,
}

/// Where one configuration's requests come from.
#[derive(Clone)]
pub enum PayloadSource {
    Fixed(Bytes),
    /// Sample bodies in turn: request n (numbered as in the single run, when this is a shard) sends sample n mod
    /// count.
    Samples(Arc<SampleRun>),
    Plugin(Arc<PluginRun>),
}

pub struct SampleRun {
    samples: Vec<Bytes>,
    next_sequence: AtomicU64,
    segment: Segment,
}

/// A plugin generating for one configuration: the sequence counter is shared so request n is generated once,
/// whichever user sends it.
pub struct PluginRun {
    pub plugin: Arc<LoadedPlugin>,
    pub configuration: String,
    pub job_seed: u64,
    /// This process's requests counted from 0; the plugin sees each as the single run's number (`Segment::sequence`).
    next_sequence: AtomicU64,
    segment: Segment,
}

thread_local! {
    /// This thread's instances, one per plugin run still alive.
    static INSTANCES: RefCell<Vec<(Weak<PluginRun>, PluginInstance)>> = const { RefCell::new(Vec::new()) };
}

impl PayloadSource {
    /// Where one test run's requests come from: the job's plugin (instantiated for this run), its samples, or its
    /// fixed body; a shard's requests are numbered as the single run's.
    pub fn for_run(
        payload: &Payload,
        plugin: Option<&Arc<LoadedPlugin>>,
        run_name: &str,
        seed: u64,
        segment: Segment,
    ) -> Self {
        match plugin {
            Some(plugin) => Self::plugin(Arc::clone(plugin), run_name, seed, segment),
            None if !payload.samples.is_empty() => Self::Samples(Arc::new(SampleRun {
                samples: payload.samples.clone(),
                next_sequence: AtomicU64::new(0),
                segment,
            })),
            None => Self::Fixed(payload.body.clone()),
        }
    }

    /// Requests from `plugin` for the configuration named `configuration`.
    pub fn plugin(plugin: Arc<LoadedPlugin>, configuration: &str, job_seed: u64, segment: Segment) -> Self {
        Self::Plugin(Arc::new(PluginRun {
            plugin,
            configuration: configuration.to_string(),
            job_seed,
            next_sequence: AtomicU64::new(0),
            segment,
        }))
    }

    /// Before the ramp: a plugin is instantiated and its `init` called once, off the runtime's threads, so a plugin
    /// that loops, traps or refuses its config fails the run with its own message before any load is sent.
    pub async fn preflight(&self) -> Result<(), PluginError> {
        let Self::Plugin(run) = self else { return Ok(()) };
        let run = Arc::clone(run);
        let instantiated =
            tokio::task::spawn_blocking(move || run.plugin.instantiate(&run.configuration, run.job_seed).map(drop));
        instantiated.await.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }

    pub fn stream(&self) -> PayloadStream {
        match self {
            Self::Fixed(body) => PayloadStream::Fixed(body.clone()),
            Self::Samples(run) => PayloadStream::Samples(Arc::clone(run)),
            Self::Plugin(run) if run.plugin.holds_conversations() => {
                PayloadStream::Conversation(Conversation { run: Arc::clone(run), current: None, reply: None })
            }
            Self::Plugin(run) => PayloadStream::Plugin(Arc::clone(run)),
        }
    }
}

pub enum PayloadStream {
    Fixed(Bytes),
    Samples(Arc<SampleRun>),
    Plugin(Arc<PluginRun>),
    /// A plugin that holds conversations: this stream's user is in one of them.
    Conversation(Conversation),
}

/// One virtual user's conversation: its last request, as the plugin made it, and the reply to it once it came.
pub struct Conversation {
    run: Arc<PluginRun>,
    current: Option<Ongoing>,
    reply: Option<Reply>,
}

struct Ongoing {
    /// The conversation's number (the `sequence` its plugin sees on every turn).
    sequence: u64,
    index: u32,
    sent: GeneratedRequest,
}

impl Conversation {
    /// The next turn when the last request was answered and the plugin goes on; else a new conversation.
    fn next(&mut self, instance: &mut PluginInstance) -> Result<Prepared, PluginError> {
        if let (Some(ongoing), Some(reply)) = (self.current.take(), self.reply.take()) {
            let turn = Turn { index: ongoing.index, sent: ongoing.sent, reply };
            if let Some((sent, prepared)) = instance.next_turn(ongoing.sequence, &turn)? {
                self.current = Some(Ongoing { sequence: ongoing.sequence, index: turn.index + 1, sent });
                return Ok(prepared);
            }
        }
        let (sequence, sent, prepared) = instance.first_turn(&self.run.next_sequence, self.run.segment)?;
        self.current = Some(Ongoing { sequence, index: 0, sent });
        Ok(prepared)
    }
}

impl PayloadStream {
    /// The next request, or why the run must stop (a plugin that failed; its message names the plugin and call).
    pub fn next_request(&mut self) -> Result<Prepared, PluginError> {
        match self {
            Self::Fixed(body) => Ok(Prepared { body: body.clone(), overrides: None }),
            Self::Samples(run) => {
                let local = run.next_sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sequence = run.segment.sequence(local);
                let body = run.samples[(sequence % run.samples.len() as u64) as usize].clone();
                Ok(Prepared { body, overrides: None })
            }
            Self::Plugin(run) => with_instance(run, |instance| instance.next_request(&run.next_sequence, run.segment)),
            Self::Conversation(conversation) => {
                let run = Arc::clone(&conversation.run);
                with_instance(&run, |instance| conversation.next(instance))
            }
        }
    }

    /// Whether the session must hand each successful reply to `replied` (the plugin holds conversations).
    pub fn wants_replies(&self) -> bool {
        matches!(self, Self::Conversation(_))
    }

    /// The reply to the request last made, for the conversation's next turn. A request that failed has none, and
    /// the next request starts a new conversation.
    pub fn replied(&mut self, reply: Reply) {
        if let Self::Conversation(conversation) = self {
            conversation.reply = Some(reply);
        }
    }
}

/// Calls `call` with this thread's instance of `run`'s plugin, made (and `init` called) on first use.
fn with_instance<T>(
    run: &Arc<PluginRun>,
    call: impl FnOnce(&mut PluginInstance) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    off_the_runtime(run.plugin.does_io(), || {
        INSTANCES.with_borrow_mut(|instances| {
            let index = match instances.iter().position(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(run))) {
                Some(index) => index,
                None => {
                    // Instances of runs that have ended go with the first new one.
                    instances.retain(|(owner, _)| owner.strong_count() > 0);
                    let instance = run.plugin.instantiate(&run.configuration, run.job_seed)?;
                    instances.push((Arc::downgrade(run), instance));
                    instances.len() - 1
                }
            };
            call(&mut instances[index].1)
        })
    })
}

/// Runs `call` outside the async runtime's context when `needed`. WASI's file and network calls block on the
/// runtime from inside (wasmtime-wasi's `in_tokio`), which panics on one of its threads; `block_in_place` hands the
/// thread's other work to another thread for the call. It costs a hand-off per call, so only plugins granted
/// files or network pay it.
fn off_the_runtime<T>(needed: bool, call: impl FnOnce() -> T) -> T {
    // Only plugins that need it look up the runtime: this is on every request's path.
    let on_a_worker = || {
        tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    };
    if needed && on_a_worker() { tokio::task::block_in_place(call) } else { call() }
}

/// The first `count` requests a plugin generates for `configuration`, as a run would (for `payload preview`).
pub fn preview(
    plugin: &Arc<LoadedPlugin>,
    configuration: &str,
    job_seed: u64,
    count: u64,
) -> Result<Vec<Prepared>, PluginError> {
    let mut stream = PayloadSource::plugin(Arc::clone(plugin), configuration, job_seed, Segment::whole()).stream();
    (0..count).map(|_| stream.next_request()).collect()
}
