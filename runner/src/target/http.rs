//! The HTTP target. Each session owns one keep-alive connection made with hyper's connection API, as oha and wrk
//! do: no pool, no lock, nothing shared between virtual users on the request path. https goes through rustls
//! (system roots plus an optional private CA, optional client certificate); HTTP/2 is negotiated with ALPN, or
//! spoken by prior knowledge over plain http when the job file asks for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Session, Target};
use crate::measure::{ErrorClass, Outcome};
use crate::payload::{PayloadSource, PayloadStream, Prepared};
use crate::spec::{HeaderValue, HttpRequestSpec, HttpVersion, Payload, ResponseCheck, TlsSpec};

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
    timeout: Duration,
    max_response_bytes: u64,
    check: ResponseCheck,
}

impl HttpTarget {
    /// Builds the target for `url`; header values from the environment are resolved here and marked sensitive.
    /// Bodies come from `source`; `payload` gives the content type and accept headers.
    pub fn new(url: &str, spec: &HttpRequestSpec, payload: &Payload, source: PayloadSource) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("`{url}` is not a valid URL"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("`{url}`: only http:// and https:// URLs are supported"),
        };
        let host = uri.host().ok_or_else(|| anyhow!("`{url}` has no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let address = format!("{host}:{port}");
        let path = uri.path_and_query().map_or("/", |path| path.as_str()).parse::<Uri>()?;
        let tls = secure.then(|| tls_connector(&spec.tls, spec.http_version, host)).transpose()?;

        let mut headers = HeaderMap::new();
        let authority = uri.authority().map_or(address.clone(), |authority| authority.to_string());
        headers.insert(header::HOST, authority.parse()?);
        headers.insert(header::USER_AGENT, concat!("plateau/", env!("CARGO_PKG_VERSION")).parse()?);
        headers.insert(
            header::CONTENT_TYPE,
            payload.content_type.parse().context("payload.content_type is not a valid header value")?,
        );
        if let Some(accept) = &payload.accept {
            headers.insert(header::ACCEPT, accept.parse().context("payload.accept is not a valid header value")?);
        }
        for (name, value) in &spec.headers {
            let name: HeaderName = name.parse().with_context(|| format!("`{name}` is not a valid header name"))?;
            let value = match value {
                HeaderValue::Inline(text) => text.parse()?,
                HeaderValue::Env { env } => {
                    let secret = std::env::var(env).with_context(|| {
                        format!("header `{name}` reads environment variable `{env}`, which is not set")
                    })?;
                    let mut value: hyper::header::HeaderValue = secret
                        .parse()
                        .with_context(|| format!("environment variable `{env}` is not a valid header value"))?;
                    value.set_sensitive(true);
                    value
                }
            };
            headers.insert(name, value);
        }
        let method = Method::from_bytes(spec.method.as_bytes())?;
        Ok(Self {
            shared: Arc::new(RequestTemplate {
                address,
                scheme: uri.scheme().cloned().unwrap_or(hyper::http::uri::Scheme::HTTP),
                authority: uri.authority().cloned().ok_or_else(|| anyhow!("`{url}` has no host"))?,
                tls,
                http_version: spec.http_version,
                method,
                path,
                headers,
                timeout: spec.timeout,
                max_response_bytes: spec.max_response_bytes,
                check: spec.check.clone(),
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
) -> anyhow::Result<(TlsConnector, ServerName<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = &spec.ca_file {
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read certificates from `{}` (target.tls.ca_file)", ca_file.display()))?;
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            bail!("`{}` holds no usable certificate (target.tls.ca_file)", ca_file.display());
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read `{}` (target.tls.client_cert)", cert_file.display()))?;
            let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
                format!("cannot read a private key from `{}` (target.tls.client_key)", key_file.display())
            })?;
            builder.with_client_auth_cert(chain, key).context("the client certificate and key do not go together")?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match version {
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    let name = spec.server_name.as_deref().unwrap_or(host).trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(name.to_string()).with_context(|| format!("`{name}` is not a valid TLS server name"))?;
    Ok((TlsConnector::from(Arc::new(config)), server_name))
}

impl HttpTarget {
    /// One request (with an empty body; its status does not matter) before the ramp, so a TLS mistake (an
    /// unknown CA, a missing or refused client certificate, a name mismatch) is one clear message rather than a
    /// run of connection errors. With TLS 1.3 a server refuses a client certificate only after the handshake, so
    /// a handshake alone would not tell.
    pub async fn preflight(&self) -> anyhow::Result<()> {
        let template = &self.shared;
        if template.tls.is_none() {
            return Ok(());
        }
        let exchange = async {
            let mut sender = template.connect().await.map_err(anyhow::Error::new)?;
            sender.ready().await?;
            let mut request = template
                .request(Prepared { body: Bytes::new(), overrides: None })
                .map_err(|message| anyhow!(message))?;
            if matches!(sender, Sender::Http2(_)) {
                request = template.for_http2(request);
            }
            let response = sender.send(request).await?;
            response.into_body().collect().await?;
            anyhow::Ok(())
        };
        let hint =
            "check [target.tls]: ca_file for a private CA, client_cert and client_key for mutual TLS, server_name";
        match tokio::time::timeout(template.timeout, exchange).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(anyhow!("cannot open a TLS connection to {}: {error:#}; {hint}", template.address)),
            Err(_) => Err(anyhow!("no TLS exchange with {} within {:?}", template.address, template.timeout)),
        }
    }
}

impl Target for HttpTarget {
    type Session = HttpSession;
    fn session(&self) -> HttpSession {
        HttpSession { template: Arc::clone(&self.shared), payload: self.payload.stream(), next: None, sender: None }
    }
}

pub struct HttpSession {
    template: Arc<RequestTemplate>,
    payload: PayloadStream,
    /// Built by `prepare`, sent by `call`.
    next: Option<Request<Full<Bytes>>>,
    sender: Option<Sender>,
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
    fn request(&self, prepared: Prepared) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::new(Full::new(prepared.body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(overrides) = prepared.overrides {
            let invalid = |what: &str, text: &str| format!("payload plugin returned an invalid {what}: {text:?}");
            let headers = request.headers_mut();
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
                *request.uri_mut() = joined.parse().map_err(|_| invalid("path suffix", &suffix))?;
            }
        }
        Ok(request)
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

impl HttpSession {
    /// A connection ready for the next request: the current one if it is still open, else a new one.
    async fn ready_sender(&mut self) -> Result<Sender, ErrorClass> {
        if let Some(mut sender) = self.sender.take()
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        let connect = tokio::time::timeout(self.template.timeout, self.template.connect());
        match connect.await {
            Ok(Ok(sender)) => Ok(sender),
            Ok(Err(_)) => Err(ErrorClass::Connect),
            Err(_) => Err(ErrorClass::Timeout),
        }
    }
}

impl Session for HttpSession {
    fn prepare(&mut self) -> Result<(), String> {
        if self.next.is_none() {
            let prepared = self.payload.next_request()?;
            self.next = Some(self.template.request(prepared)?);
        }
        Ok(())
    }

    async fn call(&mut self) -> Outcome {
        let mut sender = match self.ready_sender().await {
            Ok(sender) => sender,
            Err(class) => return Outcome::Failure { class },
        };
        let Some(mut request) = self.next.take() else {
            debug_assert!(false, "call() without prepare()");
            return Outcome::Failure { class: ErrorClass::Other };
        };
        let template = &self.template;
        if matches!(sender, Sender::Http2(_)) {
            request = template.for_http2(request);
        }
        let start = Instant::now();
        let exchange = async {
            let response = sender.send(request).await.map_err(|_| ErrorClass::Other)?;
            let status = response.status();
            let mut body = response.into_body();
            // Read the whole response (the latency includes the last byte), keeping it only if it is to be checked.
            let mut kept = Vec::new();
            let mut received: u64 = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| ErrorClass::Other)?;
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    if received > template.max_response_bytes {
                        return Err(ErrorClass::Other);
                    }
                    if template.check.body_contains.is_some() {
                        kept.extend_from_slice(data);
                    }
                }
            }
            Ok((status, kept))
        };
        match tokio::time::timeout(template.timeout, exchange).await {
            Err(_) => Outcome::Failure { class: ErrorClass::Timeout },
            Ok(Err(class)) => Outcome::Failure { class },
            Ok(Ok((status, body))) => {
                let latency_us = start.elapsed().as_micros() as u64;
                self.sender = Some(sender);
                judge(status, &body, &template.check, latency_us)
            }
        }
    }
}

/// Success, or the error class a response falls in: by status, then by the job's response check.
fn judge(status: StatusCode, body: &[u8], check: &ResponseCheck, latency_us: u64) -> Outcome {
    let class = match status.as_u16() {
        429 => Some(ErrorClass::Throttled),
        400..=499 => Some(ErrorClass::Http4xx),
        500..=599 => Some(ErrorClass::Http5xx),
        _ => None,
    };
    let wrong_status = check.status.is_some_and(|expected| expected != status.as_u16());
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
        assert_eq!(judge(StatusCode::OK, b"{\"predictions\": [1]}", &check, 5), ok);
        assert_eq!(
            judge(StatusCode::OK, b"{\"error\": 1}", &check, 5),
            Outcome::Failure { class: ErrorClass::ModelError }
        );
        assert_eq!(
            judge(StatusCode::ACCEPTED, b"predictions", &check, 5),
            Outcome::Failure { class: ErrorClass::ModelError }
        );
        assert_eq!(
            judge(StatusCode::TOO_MANY_REQUESTS, b"", &check, 5),
            Outcome::Failure { class: ErrorClass::Throttled }
        );
        assert_eq!(
            judge(StatusCode::BAD_GATEWAY, b"", &ResponseCheck::default(), 5),
            Outcome::Failure { class: ErrorClass::Http5xx }
        );
        assert_eq!(judge(StatusCode::NO_CONTENT, b"", &ResponseCheck::default(), 5), ok);
    }
}
