//! The HTTP target. Each session owns one keep-alive connection, as oha and wrk do: no pool, no lock, nothing
//! shared between virtual users on the request path. Plain-http HTTP/1.1 is written and parsed on the socket
//! directly (`wire`); https goes through rustls (system roots plus an optional private CA, optional client
//! certificate) and hyper's connection API, and HTTP/2 is negotiated with ALPN, or spoken by prior knowledge over
//! plain http when the job file asks for it.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::openai::{Reading, TokenReader};
use super::{PrepareError, Session, Target, wire};
use crate::aws::errors::ErrorDetail;
use crate::aws::errors::error_chain;
use crate::measure::{ErrorClass, ErrorCounts, ErrorExamples, Outcome};
use crate::payload::{Overrides, PayloadSource, PayloadStream, Prepared};
use crate::spec::{Api, HeaderValue, HttpRequestSpec, HttpVersion, Payload, ResponseCheck, TlsSpec};
use crate::tokenizer::Tokenizer;

/// Why an HTTP target cannot be made or reached before the ramp; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum HttpTargetError {
    #[error("`{url}` is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("`{url}`: only http:// and https:// URLs are supported")]
    Scheme { url: String },
    #[error("`{url}` has no host")]
    NoHost { url: String },
    #[error("{what} is not a valid header value: {source}")]
    HeaderValue { what: String, source: hyper::header::InvalidHeaderValue },
    #[error("`{name}` is not a valid header name: {source}")]
    HeaderName { name: String, source: hyper::header::InvalidHeaderName },
    #[error("header `{name}` reads environment variable `{env}`, which is not set: {source}")]
    UnsetSecret { name: String, env: String, source: std::env::VarError },
    #[error("`{method}` is not an HTTP method")]
    Method { method: String },
    #[error("{what}: {reason}")]
    TlsFiles { what: String, reason: String },
    #[error(
        "cannot open a TLS connection to {address}: {reason}; check [target.tls]: ca_file for a private CA, \
         client_cert and client_key for mutual TLS, server_name"
    )]
    Handshake { address: String, reason: String },
    #[error("no TLS exchange with {address} within {timeout:?}")]
    HandshakeTimeout { address: String, timeout: Duration },
}

pub struct HttpTarget {
    shared: Arc<RequestTemplate>,
    payload: PayloadSource,
}

/// Everything needed to send the same request again and again, built once.
struct RequestTemplate {
    /// `host:port` to connect to.
    address: String,
    /// `https` and `host[:port]`, for HTTP/2's absolute request targets.
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    /// Set for https: the TLS configuration and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    http_version: HttpVersion,
    method: Method,
    /// Origin-form path and query, as HTTP/1.1 sends it.
    path: Uri,
    headers: HeaderMap,
    /// Plain-http HTTP/1.1 only: the request head up to its Content-Length, as bytes (see `wire`).
    wire_head: Option<Vec<u8>>,
    timeout: Duration,
    max_response_bytes: u64,
    check: ResponseCheck,
    /// Responses are a language model's, read for their tokens ...
    api: Option<Api>,
    /// ... and counted by the job's tokenizer when the server sends no `usage`.
    tokenizer: Option<Tokenizer>,
    /// The first failure of each class, for the results.
    examples: ErrorExamples,
}

impl RequestTemplate {
    /// `class`, with `message` kept as its example if it is the first of its class.
    fn failed(&self, class: ErrorClass, message: impl FnOnce() -> String) -> ErrorClass {
        self.examples.note(class, message);
        class
    }

    /// The outcome of a response, its example kept when it failed.
    fn judged(&self, status: u16, body: &[u8], latency_us: u64) -> Outcome {
        let outcome = judge(status, body, &self.check, latency_us);
        if let Outcome::Failure { class } = outcome {
            self.examples.note(class, || self.redacted(describe_response(status, body, &self.check)));
        }
        outcome
    }

    /// A response's outcome, read for its tokens when the target's responses are a language model's.
    fn judged_reading(&self, status: u16, body: &[u8], latency_us: u64, tokens: Option<&mut TokenReader>) -> Outcome {
        match (self.judged(status, body, latency_us), tokens) {
            (Outcome::Success { latency_us }, Some(tokens)) => match tokens.finish(body) {
                Reading::Complete(tokens) => Outcome::Generated { latency_us, tokens },
                Reading::Broken(tokens, reason) => {
                    self.examples
                        .note(ErrorClass::StreamBroken, || self.redacted(format!("{}: {reason}", self.address)));
                    Outcome::Broken { latency_us, tokens }
                }
            },
            (outcome, _) => outcome,
        }
    }

    /// A transfer that failed as `class` after `latency_us`: a language model's stream that had sent tokens broke
    /// off (its tokens kept), anything else failed.
    fn failed_reading(&self, class: ErrorClass, latency_us: u64, tokens: Option<&TokenReader>) -> Outcome {
        match tokens.and_then(|tokens| tokens.broke_off(class)) {
            Some(tokens) => {
                self.examples.note(ErrorClass::StreamBroken, || {
                    format!("the stream from {} broke off after {} tokens", self.address, tokens.output)
                });
                Outcome::Broken { latency_us, tokens }
            }
            _ => Outcome::Failure { class },
        }
    }

    /// `text` with every secret header value (from the environment) replaced: a server may echo what it was sent.
    fn redacted(&self, mut text: String) -> String {
        for value in self.headers.values().filter(|value| value.is_sensitive()) {
            if let Ok(secret) = value.to_str()
                && !secret.is_empty()
            {
                text = text.replace(secret, "[redacted]");
            }
        }
        text
    }
}

impl HttpTarget {
    /// Builds the target for `url`; header values from the environment are resolved here and marked sensitive.
    /// Bodies come from `source`; `payload` gives the content type and accept headers.
    pub fn new(
        url: &str,
        spec: &HttpRequestSpec,
        payload: &Payload,
        source: PayloadSource,
    ) -> Result<Self, HttpTargetError> {
        let invalid_url = |reason: String| HttpTargetError::InvalidUrl { url: url.to_string(), reason };
        let uri: Uri = url.parse().map_err(|error: hyper::http::uri::InvalidUri| invalid_url(error.to_string()))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(HttpTargetError::Scheme { url: url.to_string() }),
        };
        let no_host = || HttpTargetError::NoHost { url: url.to_string() };
        let host = uri.host().ok_or_else(no_host)?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let address = format!("{host}:{port}");
        let path = uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse::<Uri>()
            .map_err(|error| invalid_url(error.to_string()))?;
        let tls = secure.then(|| tls_connector(&spec.tls, spec.http_version, host)).transpose()?;

        let header_value = |text: &str, what: &str| {
            text.parse::<hyper::header::HeaderValue>()
                .map_err(|source| HttpTargetError::HeaderValue { what: what.to_string(), source })
        };
        let mut headers = HeaderMap::new();
        let authority = uri.authority().map_or(address.clone(), |authority| authority.to_string());
        headers.insert(header::HOST, header_value(&authority, "the URL's host")?);
        headers.insert(
            header::USER_AGENT,
            header::HeaderValue::from_static(concat!("plateau/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(header::CONTENT_TYPE, header_value(&payload.content_type, "payload.content_type")?);
        if let Some(accept) = &payload.accept {
            headers.insert(header::ACCEPT, header_value(accept, "payload.accept")?);
        }
        for (name, value) in &spec.headers {
            let name: HeaderName =
                name.parse().map_err(|source| HttpTargetError::HeaderName { name: name.clone(), source })?;
            let value = match value {
                HeaderValue::Inline(text) => header_value(text, &format!("header `{name}`"))?,
                HeaderValue::Env { env } => {
                    let secret = std::env::var(env).map_err(|source| HttpTargetError::UnsetSecret {
                        name: name.to_string(),
                        env: env.clone(),
                        source,
                    })?;
                    let mut value = header_value(&secret, &format!("environment variable `{env}`"))?;
                    value.set_sensitive(true);
                    value
                }
            };
            headers.insert(name, value);
        }
        let method = Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| HttpTargetError::Method { method: spec.method.clone() })?;
        let wire_head = (tls.is_none() && spec.http_version != HttpVersion::Http2).then(|| {
            let mut head = Vec::new();
            write_head(&mut head, &method, &path, &headers);
            head
        });
        Ok(Self {
            shared: Arc::new(RequestTemplate {
                address,
                scheme: uri.scheme().cloned().unwrap_or(hyper::http::uri::Scheme::HTTP),
                authority: uri.authority().cloned().ok_or_else(no_host)?,
                tls,
                http_version: spec.http_version,
                method,
                path,
                headers,
                wire_head,
                timeout: spec.timeout,
                max_response_bytes: spec.max_response_bytes,
                check: spec.check.clone(),
                api: spec.api,
                tokenizer: spec.tokenizer.clone(),
                examples: ErrorExamples::default(),
            }),
            payload: source,
        })
    }
}

/// rustls for `host`: the system's roots plus the job's CA, the client certificate if given, and ALPN offering
/// what `version` allows.
fn tls_connector(
    spec: &TlsSpec,
    version: HttpVersion,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), HttpTargetError> {
    let files = |what: String| move |reason: String| HttpTargetError::TlsFiles { what, reason };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = &spec.ca_file {
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|error| error.to_string())
            .map_err(files(format!("cannot read certificates from `{}` (target.tls.ca_file)", ca_file.display())))?;
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            let what = format!("`{}` (target.tls.ca_file)", ca_file.display());
            return Err(HttpTargetError::TlsFiles { what, reason: "holds no usable certificate".to_string() });
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| error.to_string())
                .map_err(files(format!("cannot read `{}` (target.tls.client_cert)", cert_file.display())))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| error.to_string()).map_err(files(
                format!("cannot read a private key from `{}` (target.tls.client_key)", key_file.display()),
            ))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| error.to_string())
                .map_err(files("the client certificate and key do not go together".to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match version {
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    let name = spec.server_name.as_deref().unwrap_or(host).trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|error| error.to_string())
        .map_err(files(format!("`{name}` is not a valid TLS server name")))?;
    Ok((TlsConnector::from(Arc::new(config)), server_name))
}

impl HttpTarget {
    /// One request (with an empty body; its status does not matter) before the ramp, so a TLS mistake (an
    /// unknown CA, a missing or refused client certificate, a name mismatch) is one clear message rather than a
    /// run of connection errors. With TLS 1.3 a server refuses a client certificate only after the handshake, so
    /// a handshake alone would not tell.
    pub async fn preflight(&self) -> Result<(), HttpTargetError> {
        let template = &self.shared;
        if template.tls.is_none() {
            return Ok(());
        }
        let exchange = async {
            let mut sender = template.connect().await.map_err(|error| error.to_string())?;
            sender.ready().await.map_err(|error| error_chain(&error))?;
            let mut request = template
                .request(Prepared { body: Bytes::new(), overrides: None })
                .map_err(|error| error.to_string())?;
            if matches!(sender, Sender::Http2(_)) {
                request = template.for_http2(request);
            }
            let response = sender.send(request).await.map_err(|error| error_chain(&error))?;
            response.into_body().collect().await.map_err(|error| error_chain(&error))?;
            Ok::<(), String>(())
        };
        let address = template.address.clone();
        match tokio::time::timeout(template.timeout, exchange).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(HttpTargetError::Handshake { address, reason }),
            Err(_) => Err(HttpTargetError::HandshakeTimeout { address, timeout: template.timeout }),
        }
    }
}

impl HttpTarget {
    /// Each error class the run met, with its count (`errors`, the run's totals) and its first message, as the
    /// results keep them.
    pub fn error_details(&self, errors: &ErrorCounts) -> Vec<ErrorDetail> {
        self.shared
            .examples
            .examples()
            .into_iter()
            .map(|(class, example)| ErrorDetail {
                class,
                code: class.name().to_string(),
                model_status: None,
                count: errors.count(class),
                example,
            })
            .collect()
    }
}

impl Target for HttpTarget {
    type Session = HttpSession;
    fn session(&self) -> HttpSession {
        let transport = match self.shared.wire_head {
            Some(_) => Transport::Wire { next: Vec::new(), ready: false, connection: None },
            None => Transport::Hyper { next: None, sender: None },
        };
        let tokens = self.shared.api.map(|Api::OpenAi| TokenReader::new(self.shared.tokenizer.clone()));
        HttpSession {
            template: Arc::clone(&self.shared),
            payload: self.payload.stream(),
            transport,
            deadline: None,
            tokens,
        }
    }
}

pub struct HttpSession {
    template: Arc<RequestTemplate>,
    payload: PayloadStream,
    transport: Transport,
    /// Made on the first call, inside the runtime.
    deadline: Option<Deadline>,
    /// Reads a language model's responses for their tokens.
    tokens: Option<TokenReader>,
}

/// The session's connection and its next request, built by `prepare` and sent by `call`.
enum Transport {
    /// Plain-http HTTP/1.1: the request as bytes, on a connection of the session's own (see `wire`).
    Wire { next: Vec<u8>, ready: bool, connection: Option<wire::Connection> },
    /// https and HTTP/2: hyper's connection API.
    Hyper { next: Option<Request<Full<Bytes>>>, sender: Option<Sender> },
}

/// The request timeout, as one timer per session re-armed lazily: a timer set per request costs two timer-wheel
/// operations on every request, this one about one per timeout period. Started requests only ever move the due
/// time later, so a timer that fires early is simply set again for the current request.
struct Deadline {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self { timer: Box::pin(tokio::time::sleep(timeout)) }
    }

    /// `exchange`'s result, or a timeout when it runs past `timeout` from `start`.
    async fn within<T>(
        &mut self,
        start: Instant,
        timeout: Duration,
        exchange: impl Future<Output = Result<T, ErrorClass>>,
    ) -> Result<T, ErrorClass> {
        tokio::select! {
            biased;
            result = exchange => result,
            () = self.passed(start + timeout) => Err(ErrorClass::Timeout),
        }
    }

    /// Resolves when `due` has passed.
    async fn passed(&mut self, due: Instant) {
        let due = tokio::time::Instant::from_std(due);
        loop {
            if self.timer.deadline() > due {
                self.timer.as_mut().reset(due);
            }
            self.timer.as_mut().await;
            if tokio::time::Instant::now() >= due {
                return;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

/// One connection's request side, whichever HTTP it speaks.
enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
    }
}

impl RequestTemplate {
    /// The request for a prepared body; a plugin's headers and path suffix are checked here, off the clock.
    fn request(&self, prepared: Prepared) -> Result<Request<Full<Bytes>>, PrepareError> {
        let (path, headers) = self.path_and_headers(prepared.overrides)?;
        let mut request = Request::new(Full::new(prepared.body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = path;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// The template's path and headers with a plugin's overrides applied, each checked.
    fn path_and_headers(&self, overrides: Option<Box<Overrides>>) -> Result<(Uri, HeaderMap), PrepareError> {
        let mut path = self.path.clone();
        let mut headers = self.headers.clone();
        if let Some(overrides) = overrides {
            let invalid =
                |what: &'static str, text: &str| PrepareError::InvalidOverride { what, text: text.to_string() };
            if let Some(content_type) = overrides.content_type {
                let value = content_type.parse().map_err(|_| invalid("content type", &content_type))?;
                headers.insert(header::CONTENT_TYPE, value);
            }
            for (name, value) in overrides.headers {
                let header_name: HeaderName = name.parse().map_err(|_| invalid("header name", &name))?;
                let header_value = value.parse().map_err(|_| invalid("header value", &value))?;
                headers.append(header_name, header_value);
            }
            if let Some(suffix) = overrides.path_suffix {
                let joined = format!("{}{}", self.path.path().trim_end_matches('/'), suffix);
                let joined = match self.path.query() {
                    Some(query) => format!("{joined}?{query}"),
                    None => joined,
                };
                path = joined.parse().map_err(|_| invalid("path suffix", &suffix))?;
            }
        }
        Ok((path, headers))
    }

    async fn connect(&self) -> std::io::Result<Sender> {
        let stream = TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => self.handshake(TokioIo::new(stream), self.http_version == HttpVersion::Http2).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), stream).await?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.handshake(TokioIo::new(stream), h2).await
            }
        }
    }

    async fn handshake<I>(&self, io: I, h2: bool) -> std::io::Result<Sender>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        // The connection task ends when the sender is dropped or the server closes the connection.
        if h2 {
            let (sender, connection) =
                http2::handshake(TokioExecutor::new(), io).await.map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Ok(Sender::Http1(sender))
        }
    }

    /// The request for a prepared body as HTTP/1.1 bytes, into `out`: the template's head when the payload
    /// changes nothing but the body, else the checked request written out.
    fn write_wire_request(&self, prepared: Prepared, out: &mut Vec<u8>) -> Result<(), PrepareError> {
        out.clear();
        match (&self.wire_head, prepared.overrides) {
            (Some(head), None) => out.extend_from_slice(head),
            (_, overrides) => {
                let (path, headers) = self.path_and_headers(overrides)?;
                write_head(out, &self.method, &path, &headers);
            }
        }
        write!(out, "content-length: {}\r\n\r\n", prepared.body.len()).expect("writing to a Vec cannot fail");
        out.extend_from_slice(&prepared.body);
        Ok(())
    }

    /// HTTP/2 carries the scheme and authority in the request target, not in a Host header.
    fn for_http2(&self, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        request.headers_mut().remove(header::HOST);
        request
    }
}

/// An HTTP/1.1 request head without its Content-Length and final blank line.
fn write_head(out: &mut Vec<u8>, method: &Method, path: &Uri, headers: &HeaderMap) {
    let target = path.path_and_query().map_or("/", |path| path.as_str());
    write!(out, "{method} {target} HTTP/1.1\r\n").expect("writing to a Vec cannot fail");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl Session for HttpSession {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        let mut next_request = || {
            let prepared = self.payload.next_request()?;
            if let Some(tokens) = &mut self.tokens {
                tokens.prompt(&prepared.body);
            }
            Ok::<_, PrepareError>(prepared)
        };
        match &mut self.transport {
            Transport::Wire { next, ready: ready @ false, .. } => {
                self.template.write_wire_request(next_request()?, next)?;
                *ready = true;
            }
            Transport::Hyper { next: next @ None, .. } => {
                *next = Some(self.template.request(next_request()?)?);
            }
            _ => {}
        }
        Ok(())
    }

    async fn call(&mut self) -> Outcome {
        let template = &self.template;
        let deadline = self.deadline.get_or_insert_with(|| Deadline::new(template.timeout));
        let keep = self.payload.wants_replies();
        let (outcome, kept) = match &mut self.transport {
            Transport::Wire { next, ready, connection } => {
                debug_assert!(*ready, "call() without prepare()");
                *ready = false;
                call_wire(template, next, connection, deadline, self.tokens.as_mut(), keep).await
            }
            Transport::Hyper { next, sender } => {
                let Some(request) = next.take() else {
                    debug_assert!(false, "call() without prepare()");
                    return Outcome::Failure { class: ErrorClass::Other };
                };
                call_hyper(template, request, sender, deadline, self.tokens.as_mut(), keep).await
            }
        };
        if let Some((status, body)) = kept
            && let Some(reply) = super::reply(&outcome, status, body, self.gaps_us())
        {
            self.payload.replied(reply);
        }
        outcome
    }

    fn gaps_us(&self) -> &[u32] {
        self.tokens.as_ref().map_or(&[], TokenReader::gaps_us)
    }
}

/// A connection, opened before the clock starts (as wrk and oha do): the current one, else a new one.
async fn open<C>(
    current: Option<C>,
    template: &RequestTemplate,
    connect: impl Future<Output = std::io::Result<C>>,
) -> Result<C, ErrorClass> {
    if let Some(connection) = current {
        return Ok(connection);
    }
    match tokio::time::timeout(template.timeout, connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => {
            Err(template.failed(ErrorClass::Connect, || format!("connecting to {}: {error}", template.address)))
        }
        Err(_) => Err(template.failed(ErrorClass::Timeout, || {
            format!("no connection to {} within {:?}", template.address, template.timeout)
        })),
    }
}

/// What an exchange came to, with the response's status and body when they were to be kept for a conversation's
/// next turn.
type Exchanged = (Outcome, Option<(u16, Vec<u8>)>);

async fn call_wire(
    template: &RequestTemplate,
    request: &[u8],
    slot: &mut Option<wire::Connection>,
    deadline: &mut Deadline,
    mut tokens: Option<&mut TokenReader>,
    keep_reply: bool,
) -> Exchanged {
    let reused = slot.is_some();
    let mut connection = match open(slot.take(), template, wire::Connection::connect(&template.address)).await {
        Ok(connection) => connection,
        Err(class) => return (Outcome::Failure { class }, None),
    };
    let head_request = template.method == Method::HEAD;
    let keep_body = keep_reply || template.check.body_contains.is_some();
    let start = Instant::now();
    if let Some(tokens) = tokens.as_deref_mut() {
        tokens.begin(start);
    }
    let exchange = async {
        let max = template.max_response_bytes;
        let first = connection.exchange(request, head_request, max, keep_body, tokens.as_deref_mut()).await;
        match first {
            // The server had closed this idle keep-alive connection: the request goes again on a new one, and
            // the clock keeps running.
            Err(wire::WireError::ClosedBeforeResponse) if reused => {
                connection = wire::Connection::connect(&template.address).await.map_err(|error| {
                    template.failed(ErrorClass::Connect, || format!("reconnecting to {}: {error}", template.address))
                })?;
                connection.exchange(request, head_request, max, keep_body, tokens.as_deref_mut()).await
            }
            other => other,
        }
        .map_err(|error| template.failed(ErrorClass::Other, || describe_wire_error(&error, template)))
    };
    let exchanged = deadline.within(start, template.timeout, exchange).await;
    let latency_us = start.elapsed().as_micros() as u64;
    match exchanged {
        Err(class) => (template.failed_reading(timed_out(template, class), latency_us, tokens.as_deref()), None),
        Ok((response, keep_alive)) => {
            if keep_alive {
                *slot = Some(connection);
            }
            let outcome = template.judged_reading(response.status, &response.body, latency_us, tokens);
            (outcome, keep_reply.then_some((response.status, response.body)))
        }
    }
}

async fn call_hyper(
    template: &RequestTemplate,
    mut request: Request<Full<Bytes>>,
    slot: &mut Option<Sender>,
    deadline: &mut Deadline,
    mut tokens: Option<&mut TokenReader>,
    keep_reply: bool,
) -> Exchanged {
    let mut current = slot.take();
    if let Some(sender) = &mut current
        && sender.ready().await.is_err()
    {
        current = None;
    }
    let mut sender = match open(current, template, template.connect()).await {
        Ok(sender) => sender,
        Err(class) => return (Outcome::Failure { class }, None),
    };
    if matches!(sender, Sender::Http2(_)) {
        request = template.for_http2(request);
    }
    let start = Instant::now();
    if let Some(tokens) = tokens.as_deref_mut() {
        tokens.begin(start);
    }
    let broken = |error: hyper::Error| {
        template.failed(ErrorClass::Other, || format!("exchange with {}: {}", template.address, error_chain(&error)))
    };
    let exchange = async {
        let response = sender.send(request).await.map_err(broken)?;
        let status = response.status();
        let event_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(wire::is_event_stream);
        let mut body = response.into_body();
        // Read the whole response (the latency includes the last byte), keeping it only if it is to be checked.
        let keep = keep_reply || template.check.body_contains.is_some();
        let mut reader = wire::BodyReader::new(template.max_response_bytes, keep);
        if let Some(tokens) = tokens.as_deref_mut() {
            reader.read_tokens(tokens, event_stream);
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(broken)?;
            if let Some(data) = frame.data_ref() {
                reader
                    .take(data)
                    .map_err(|error| template.failed(ErrorClass::Other, || describe_wire_error(&error, template)))?;
            }
        }
        Ok((status, reader.into_kept()))
    };
    let exchanged = deadline.within(start, template.timeout, exchange).await;
    let latency_us = start.elapsed().as_micros() as u64;
    match exchanged {
        Err(class) => (template.failed_reading(timed_out(template, class), latency_us, tokens.as_deref()), None),
        Ok((status, body)) => {
            *slot = Some(sender);
            let outcome = template.judged_reading(status.as_u16(), &body, latency_us, tokens);
            (outcome, keep_reply.then_some((status.as_u16(), body)))
        }
    }
}

/// A deadline's verdict: a timeout gets its example here (other classes got theirs where they failed).
fn timed_out(template: &RequestTemplate, class: ErrorClass) -> ErrorClass {
    if class == ErrorClass::Timeout {
        template
            .examples
            .note(class, || format!("no response from {} within {:?}", template.address, template.timeout));
    }
    class
}

fn describe_wire_error(error: &wire::WireError, template: &RequestTemplate) -> String {
    let address = &template.address;
    match error {
        wire::WireError::ClosedBeforeResponse => format!("{address} closed the connection before responding"),
        wire::WireError::TooLarge => {
            format!("a response from {address} passed max_response_bytes ({} bytes)", template.max_response_bytes)
        }
        wire::WireError::Broken => {
            format!("a response from {address} that is not HTTP/1.1, or a connection that failed mid-response")
        }
    }
}

/// A failed response in words: its status, what the check expected, and the start of the body when it was kept.
fn describe_response(status: u16, body: &[u8], check: &ResponseCheck) -> String {
    let reason = hyper::StatusCode::from_u16(status).ok().and_then(|code| code.canonical_reason()).unwrap_or("");
    let mut text = format!("HTTP {status} {reason}").trim_end().to_string();
    if let Some(expected) = check.status.filter(|expected| *expected != status) {
        text.push_str(&format!(", expected {expected}"));
    }
    if let Some(wanted) = check.body_contains.as_ref().filter(|wanted| !contains(body, wanted.as_bytes())) {
        text.push_str(&format!(", and the body does not contain `{wanted}`"));
    }
    if !body.is_empty() {
        let start: String =
            String::from_utf8_lossy(&body[..body.len().min(200)]).chars().filter(|c| !c.is_control()).collect();
        text.push_str(&format!(": {start}"));
    }
    text
}

/// Success, or the error class a response falls in: by status, then by the job's response check.
fn judge(status: u16, body: &[u8], check: &ResponseCheck, latency_us: u64) -> Outcome {
    let class = match status {
        429 => Some(ErrorClass::Throttled),
        400..=499 => Some(ErrorClass::Http4xx),
        500..=599 => Some(ErrorClass::Http5xx),
        _ => None,
    };
    let wrong_status = check.status.is_some_and(|expected| expected != status);
    let missing_text = check.body_contains.as_ref().is_some_and(|text| !contains(body, text.as_bytes()));
    match class {
        Some(class) => Outcome::Failure { class },
        None if wrong_status || missing_text => Outcome::Failure { class: ErrorClass::ModelError },
        None => Outcome::Success { latency_us },
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_judged_by_status_then_by_the_check() {
        let check = ResponseCheck { status: Some(200), body_contains: Some("predictions".into()) };
        let ok = Outcome::Success { latency_us: 5 };
        assert_eq!(judge(200, b"{\"predictions\": [1]}", &check, 5), ok);
        assert_eq!(judge(200, b"{\"error\": 1}", &check, 5), Outcome::Failure { class: ErrorClass::ModelError });
        assert_eq!(judge(202, b"predictions", &check, 5), Outcome::Failure { class: ErrorClass::ModelError });
        assert_eq!(judge(429, b"", &check, 5), Outcome::Failure { class: ErrorClass::Throttled });
        assert_eq!(judge(502, b"", &ResponseCheck::default(), 5), Outcome::Failure { class: ErrorClass::Http5xx });
        assert_eq!(judge(204, b"", &ResponseCheck::default(), 5), ok);
    }
}
