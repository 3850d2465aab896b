//! The HTTP target. Each session owns one HTTP/1.1 keep-alive connection made with hyper's connection API, as oha
//! and wrk do: no pool, no lock, nothing shared between virtual users on the request path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Session, Target};
use crate::measure::{ErrorClass, Outcome};
use crate::payload::{PayloadSource, PayloadStream, Prepared};
use crate::spec::{HeaderValue, HttpRequestSpec, Payload, ResponseCheck};

pub struct HttpTarget {
    shared: Arc<RequestTemplate>,
    payload: PayloadSource,
}

/// Everything needed to send the same request again and again, built once.
struct RequestTemplate {
    /// `host:port` to connect to.
    address: String,
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
        if uri.scheme_str() != Some("http") {
            bail!("`{url}`: only http:// URLs are supported");
        }
        let host = uri.host().ok_or_else(|| anyhow!("`{url}` has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let address = format!("{host}:{port}");
        let path = uri.path_and_query().map_or("/", |path| path.as_str()).parse::<Uri>()?;

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
    sender: Option<SendRequest<Full<Bytes>>>,
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

    async fn connect(&self) -> std::io::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        // The connection task ends when the sender is dropped or the server closes the connection.
        tokio::spawn(connection);
        Ok(sender)
    }
}

impl HttpSession {
    /// A connection ready for the next request: the current one if it is still open, else a new one.
    async fn ready_sender(&mut self) -> Result<SendRequest<Full<Bytes>>, ErrorClass> {
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
        let Some(request) = self.next.take() else {
            debug_assert!(false, "call() without prepare()");
            return Outcome::Failure { class: ErrorClass::Other };
        };
        let start = Instant::now();
        let template = &self.template;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|_| ErrorClass::Other)?;
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
