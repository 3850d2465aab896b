//! Request bodies: the job file's fixed body, or one generated per request by a WASM plugin. Each virtual user
//! (or open-model worker) owns a `PayloadStream` and prepares its next request before it starts the clock, so
//! generation never sits inside a measured latency and never waits on a lock.

pub mod plugin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub use plugin::LoadedPlugin;
use plugin::PluginInstance;

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
    Plugin(Arc<PluginRun>),
}

/// A plugin generating for one configuration: the sequence counter is shared so request n is generated once,
/// whichever user sends it.
pub struct PluginRun {
    pub plugin: Arc<LoadedPlugin>,
    pub configuration: String,
    pub job_seed: u64,
    next_sequence: AtomicU64,
}

impl PayloadSource {
    pub fn plugin(plugin: Arc<LoadedPlugin>, configuration: &str, job_seed: u64) -> Self {
        Self::Plugin(Arc::new(PluginRun {
            plugin,
            configuration: configuration.to_string(),
            job_seed,
            next_sequence: AtomicU64::new(0),
        }))
    }

    pub fn stream(&self) -> PayloadStream {
        match self {
            Self::Fixed(body) => PayloadStream::Fixed(body.clone()),
            Self::Plugin(run) => PayloadStream::Plugin { run: Arc::clone(run), instance: None },
        }
    }
}

pub enum PayloadStream {
    Fixed(Bytes),
    /// The instance is made on the first request, in the user's own task.
    Plugin {
        run: Arc<PluginRun>,
        instance: Option<Box<PluginInstance>>,
    },
}

impl PayloadStream {
    /// The next request, or why the run must stop (a plugin that failed; its message names the plugin and call).
    pub fn next_request(&mut self) -> Result<Prepared, String> {
        match self {
            Self::Fixed(body) => Ok(Prepared { body: body.clone(), overrides: None }),
            Self::Plugin { run, instance } => {
                let instance = match instance {
                    Some(instance) => instance,
                    None => instance.insert(Box::new(run.plugin.instantiate(run.job_seed)?)),
                };
                let sequence = run.next_sequence.fetch_add(1, Ordering::Relaxed);
                instance.generate(sequence, &run.configuration, run.job_seed)
            }
        }
    }
}

/// The first `count` requests a plugin generates for `configuration`, as a run would (for `payload preview`).
pub fn preview(
    plugin: &Arc<LoadedPlugin>,
    configuration: &str,
    job_seed: u64,
    count: u64,
) -> Result<Vec<Prepared>, String> {
    let mut stream = PayloadSource::plugin(Arc::clone(plugin), configuration, job_seed).stream();
    (0..count).map(|_| stream.next_request()).collect()
}
