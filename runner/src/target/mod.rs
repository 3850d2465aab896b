//! Targets: what the load engine sends requests to. Each virtual user owns a `Session` (for HTTP, its own
//! connection), so the hot path shares nothing between users.

pub mod command;
pub mod http;
pub(crate) mod precise_timer;
pub mod reference;

use std::future::Future;

use crate::measure::Outcome;

pub trait Target: Send + Sync + 'static {
    type Session: Session;
    /// A new session for one virtual user; it connects lazily on its first call.
    fn session(&self) -> Self::Session;
}

pub trait Session: Send + 'static {
    /// Sends one request and waits for the whole response.
    fn call(&mut self) -> impl Future<Output = Outcome> + Send;
}
