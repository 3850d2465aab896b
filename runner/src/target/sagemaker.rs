//! The SageMaker target: existing real-time endpoints, called with InvokeEndpoint (or
//! InvokeEndpointWithResponseStream) through the AWS SDK, on the same engine as HTTP. The SDK's retries are off:
//! a throttled or failed request is a measured error, never a silent second try inside one latency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sagemakerruntime::Client;
use aws_sdk_sagemakerruntime::types::ResponseStream;
use aws_smithy_types::Blob;

use super::openai::{Reading, TokenReader};
use super::{PrepareError, Session, Target};
use crate::aws::errors::{ErrorDetail, Failure, classify, explain, typed_invoke, typed_stream};
use crate::measure::{ErrorClass, Outcome, TokenCount, Tokens};
use crate::payload::{PayloadSource, PayloadStream};
use crate::spec::{Payload, SageMakerSpec};

/// Why an endpoint cannot be benchmarked, found by one request before the ramp.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("{}", explain(endpoint, region, failure))]
    Unusable { endpoint: String, region: String, failure: Failure },
}

pub struct SageMakerTarget {
    shared: Arc<Invocation>,
    payload: PayloadSource,
}

/// What every request to one endpoint shares.
struct Invocation {
    client: Client,
    endpoint_name: String,
    region: String,
    spec: SageMakerSpec,
    content_type: String,
    accept: Option<String>,
    timeout: Duration,
    details: Mutex<BTreeMap<(String, Option<u16>), ErrorDetail>>,
}

impl SageMakerTarget {
    pub fn new(
        config: &aws_config::SdkConfig,
        endpoint_name: &str,
        spec: &SageMakerSpec,
        payload: &Payload,
        source: PayloadSource,
        timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Invocation {
                client: Client::new(config),
                endpoint_name: endpoint_name.to_string(),
                region: config.region().map_or_else(String::new, |region| region.to_string()),
                spec: spec.clone(),
                content_type: payload.content_type.clone(),
                accept: payload.accept.clone(),
                timeout,
                details: Mutex::new(BTreeMap::new()),
            }),
            payload: source,
        }
    }

    /// One request before the ramp: an unknown endpoint, a wrong region or a denied call ends the configuration
    /// with a message naming the endpoint, instead of a run of identical errors.
    pub async fn preflight(&self) -> Result<(), PreflightError> {
        let mut session = self.session();
        session.prepare()?;
        let invocation = &self.shared;
        let body = session.next.take().unwrap_or_default();
        let result = invocation.invoke(body, &mut Vec::new(), None, None).await;
        match result {
            Ok(_) => Ok(()),
            // The endpoint exists and answers; its model's errors and throttling are measured, not fatal.
            Err(failure) if matches!(failure.class, ErrorClass::ModelError | ErrorClass::Throttled) => Ok(()),
            Err(failure) => Err(PreflightError::Unusable {
                endpoint: invocation.endpoint_name.clone(),
                region: invocation.region.clone(),
                failure,
            }),
        }
    }

    pub fn error_details(&self) -> Vec<ErrorDetail> {
        self.shared.details.lock().expect("details lock").values().cloned().collect()
    }
}

/// What one invocation answered, as far as plateau reads it.
enum Answer {
    /// A whole response, not read as a language model's.
    Whole,
    /// A stream not read as a language model's: when its first chunk came, and how many chunks.
    Chunks { first_chunk: Duration, chunks: u32 },
    /// A response read as an OpenAI-compatible model's (`api = "openai"`), streamed or whole.
    Read(Reading),
}

impl Invocation {
    /// Sends one request. A stream is read chunk by chunk, timing the first and the gaps between them (into
    /// `gaps_us`); with a token reader (`api`), its PayloadParts and a whole response's body are read as an
    /// OpenAI-compatible server's. With `kept`, the response's bytes (a stream's parts, in order) are kept there.
    async fn invoke(
        &self,
        body: Vec<u8>,
        gaps_us: &mut Vec<u32>,
        mut tokens: Option<&mut TokenReader>,
        mut kept: Option<&mut Vec<u8>>,
    ) -> Result<Answer, Failure> {
        let spec = &self.spec;
        let started = Instant::now();
        if let Some(tokens) = tokens.as_deref_mut() {
            tokens.begin(started);
            tokens.event_stream(spec.streaming);
        }
        if spec.streaming {
            let request = self
                .client
                .invoke_endpoint_with_response_stream()
                .endpoint_name(&self.endpoint_name)
                .body(Blob::new(body))
                .content_type(&self.content_type)
                .set_accept(self.accept.clone())
                .set_custom_attributes(spec.custom_attributes.clone())
                .set_target_variant(spec.target_variant.clone())
                .set_inference_component_name(spec.inference_component.clone());
            let mut output = request.send().await.map_err(|error| classify(&error, typed_stream))?;
            let mut first_chunk = None;
            let mut last_chunk: Option<Instant> = None;
            let mut chunks = 0u32;
            gaps_us.clear();
            loop {
                match output.body.recv().await {
                    Ok(Some(ResponseStream::PayloadPart(part))) => {
                        let now = Instant::now();
                        let bytes = part.bytes.as_ref().map_or(&[][..], Blob::as_ref);
                        if let Some(kept) = kept.as_deref_mut() {
                            kept.extend_from_slice(bytes);
                        }
                        if let Some(tokens) = tokens.as_deref_mut() {
                            tokens.feed(bytes, now);
                            continue;
                        }
                        first_chunk.get_or_insert_with(|| now.saturating_duration_since(started));
                        if let Some(last) = last_chunk.replace(now) {
                            gaps_us.push(
                                u32::try_from(now.saturating_duration_since(last).as_micros()).unwrap_or(u32::MAX),
                            );
                        }
                        chunks += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(error) => return Err(classify(&error, |_| None)),
                }
            }
            Ok(match tokens {
                Some(tokens) => Answer::Read(tokens.finish(&[])),
                None => Answer::Chunks { first_chunk: first_chunk.unwrap_or_else(|| started.elapsed()), chunks },
            })
        } else {
            let output = self
                .client
                .invoke_endpoint()
                .endpoint_name(&self.endpoint_name)
                .body(Blob::new(body))
                .content_type(&self.content_type)
                .set_accept(self.accept.clone())
                .set_custom_attributes(spec.custom_attributes.clone())
                .set_target_variant(spec.target_variant.clone())
                .set_target_model(spec.target_model.clone())
                .set_inference_component_name(spec.inference_component.clone())
                .send()
                .await
                .map_err(|error| classify(&error, typed_invoke))?;
            let body = output.body.as_ref().map_or(&[][..], Blob::as_ref);
            if let Some(kept) = kept {
                kept.extend_from_slice(body);
            }
            Ok(match tokens {
                Some(tokens) => Answer::Read(tokens.finish(body)),
                None => Answer::Whole,
            })
        }
    }

    fn note(&self, failure: &Failure) {
        let mut details = self.details.lock().expect("details lock");
        let detail = details.entry((failure.code.clone(), failure.model_status)).or_insert_with(|| ErrorDetail {
            class: failure.class,
            code: failure.code.clone(),
            model_status: failure.model_status,
            count: 0,
            example: failure.message.chars().take(500).collect(),
        });
        detail.count += 1;
    }
}

impl Target for SageMakerTarget {
    type Session = SageMakerSession;
    fn session(&self) -> SageMakerSession {
        SageMakerSession {
            invocation: Arc::clone(&self.shared),
            payload: self.payload.stream(),
            next: None,
            gaps_us: Vec::new(),
            tokens: self.shared.spec.api.map(|_| TokenReader::new(self.shared.spec.tokenizer.clone())),
        }
    }
}

pub struct SageMakerSession {
    invocation: Arc<Invocation>,
    payload: PayloadStream,
    next: Option<Vec<u8>>,
    /// The gaps between the last streamed response's chunks, when they are not read as tokens.
    gaps_us: Vec<u32>,
    /// Responses read as a language model's (`api`).
    tokens: Option<TokenReader>,
}

impl Session for SageMakerSession {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        if self.next.is_none() {
            // InvokeEndpoint has no headers or path of its own: a plugin's body is what is sent.
            let prepared = self.payload.next_request()?;
            if let Some(tokens) = &mut self.tokens {
                tokens.prompt(&prepared.body);
            }
            self.next = Some(prepared.body.to_vec());
        }
        Ok(())
    }

    async fn call(&mut self) -> Outcome {
        let Some(body) = self.next.take() else {
            debug_assert!(false, "call() without prepare()");
            return Outcome::Failure { class: ErrorClass::Other };
        };
        // A conversation's plugin sees each reply.
        let mut kept = self.payload.wants_replies().then(Vec::new);
        let outcome = self.invoke(body, kept.as_mut()).await;
        if let Some(body) = kept
            && let Some(reply) = super::reply(&outcome, 200, body, self.gaps_us())
        {
            self.payload.replied(reply);
        }
        outcome
    }

    fn gaps_us(&self) -> &[u32] {
        match &self.tokens {
            Some(tokens) => tokens.gaps_us(),
            None => &self.gaps_us,
        }
    }
}

impl SageMakerSession {
    /// One invocation within the target's timeout, judged.
    async fn invoke(&mut self, body: Vec<u8>, kept: Option<&mut Vec<u8>>) -> Outcome {
        let invocation = &self.invocation;
        let started = Instant::now();
        let answer = invocation.invoke(body, &mut self.gaps_us, self.tokens.as_mut(), kept);
        let answered = tokio::time::timeout(invocation.timeout, answer).await;
        let latency_us = started.elapsed().as_micros() as u64;
        match answered {
            Err(_) => Outcome::Failure { class: ErrorClass::Timeout },
            Ok(Err(failure)) => {
                invocation.note(&failure);
                // A stream that had sent tokens keeps them.
                match self.tokens.as_ref().and_then(|tokens| tokens.broke_off(failure.class)) {
                    Some(tokens) => Outcome::Broken { latency_us, tokens },
                    None => Outcome::Failure { class: failure.class },
                }
            }
            Ok(Ok(Answer::Whole)) => Outcome::Success { latency_us },
            // Without `api`, a chunk is counted as a token: SageMaker's stream carries whatever the container sends.
            Ok(Ok(Answer::Chunks { first_chunk, chunks })) => Outcome::Generated {
                latency_us,
                tokens: Tokens {
                    first_token_us: Some(first_chunk.as_micros() as u64),
                    output: chunks,
                    input: None,
                    counted: TokenCount::Estimated,
                },
            },
            Ok(Ok(Answer::Read(Reading::Complete(tokens)))) => Outcome::Generated { latency_us, tokens },
            Ok(Ok(Answer::Read(Reading::Broken(tokens, reason)))) => {
                invocation.note(&Failure {
                    class: ErrorClass::StreamBroken,
                    code: "StreamBroken".into(),
                    model_status: None,
                    message: format!("endpoint {}: {reason}", invocation.endpoint_name),
                });
                Outcome::Broken { latency_us, tokens }
            }
        }
    }
}
