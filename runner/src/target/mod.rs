//! Targets: what the load engine sends requests to (an HTTP server, a SageMaker endpoint). Each virtual user owns
//! a `Session` (for HTTP, its own connection), so the hot path shares nothing between users. The servers plateau
//! starts itself are in `server`.

pub mod http;
pub mod openai;
pub mod sagemaker;
pub mod sse;
pub mod wire;

use std::future::Future;

use crate::measure::Outcome;
use crate::payload::{PluginError, Reply};

/// Why the next request cannot be made; it ends the run.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Payload(#[from] PluginError),
    #[error("payload plugin returned an invalid {what}: {text:?}")]
    InvalidOverride { what: &'static str, text: String },
}

pub trait Target: Send + Sync + 'static {
    type Session: Session;
    /// A new session for one virtual user; it connects lazily on its first call.
    fn session(&self) -> Self::Session;
}

pub trait Session: Send + 'static {
    /// Readies the next request (generating its body) before the clock starts. An error is fatal for the run:
    /// it names what failed (a payload plugin's trap, say). A prepared request not yet sent stays prepared.
    fn prepare(&mut self) -> Result<(), PrepareError>;
    /// Sends one request and waits for the whole response.
    fn call(&mut self) -> impl Future<Output = Outcome> + Send;
    /// The gaps between the chunks of the last response, when it was a language model's stream.
    fn gaps_us(&self) -> &[u32] {
        &[]
    }
}

/// What a conversation's plugin sees of a response: a successful one's status, body and timings; none for a failed
/// one, which ends the conversation.
fn reply(outcome: &Outcome, status: u16, body: Vec<u8>, gaps_us: &[u32]) -> Option<Reply> {
    let (latency_us, tokens) = match outcome {
        Outcome::Success { latency_us } => (*latency_us, None),
        Outcome::Generated { latency_us, tokens } => (*latency_us, Some(tokens)),
        Outcome::Failure { .. } | Outcome::Broken { .. } => return None,
    };
    Some(Reply {
        status,
        body,
        latency_us,
        first_token_us: tokens.and_then(|tokens| tokens.first_token_us),
        output_tokens: tokens.map(|tokens| tokens.output),
        gaps_us: gaps_us.to_vec(),
    })
}
