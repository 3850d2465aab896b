//! https and HTTP/2 targets: a real rustls server on 127.0.0.1 with certificates made for the test (a private CA,
//! the server's, a client's), serving HTTP/1.1 and HTTP/2. The server answers with the HTTP version it saw, and
//! each job checks the body for the version it expects, so a request over the wrong protocol counts as an error.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

mod common;
use common::{load_lock, read_results, text};

/// A CA, and a server and a client certificate it signed, written as PEM files into `folder`.
struct Certificates {
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

fn make_certificates(folder: &Path) -> Certificates {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client =
        CertificateParams::new(vec!["plateau-client".to_string()]).unwrap().signed_by(&client_key, &issuer).unwrap();

    std::fs::write(folder.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(folder.join("client.pem"), client.pem()).unwrap();
    std::fs::write(folder.join("client.key"), client_key.serialize_pem()).unwrap();
    Certificates {
        ca: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

/// Serves on 127.0.0.1 in a thread of its own until the test ends: TLS (optionally demanding a client certificate)
/// or plain HTTP/2, answering every request with the HTTP version it arrived in.
fn serve(certificates: Option<&Certificates>, require_client_certificate: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = certificates.map(|certificates| {
        let builder = rustls::ServerConfig::builder();
        let builder = if require_client_certificate {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certificates.ca.clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let mut config =
            builder.with_single_cert(certificates.server_chain.clone(), certificates.server_key.clone_key()).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                            let body = format!("{{\"version\": \"{:?}\"}}", request.version());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            )))
                        });
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let io = TokioIo::new(stream);
                            if h2 {
                                let _ = http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
                            } else {
                                let _ = http1::Builder::new().serve_connection(io, service).await;
                            }
                        }
                        None => {
                            let _ = http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
    });
    port
}

fn run_job(folder: &Path, target: &str) -> (Output, Option<Value>) {
    let job = folder.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"version = 1
[job]
name = "tls"
[target]
kind = "http"
timeout = "5s"
{target}
[payload]
body = '{{"inputs": [1]}}'
[traffic]
max_step_duration = "2s"
[traffic.stairs]
users_per_step = 2
step_duration = "2s"
steps = 1
[[configurations]]
name = "only"
instance_type = "local"
price_per_hour_usd = 1.0
"#
        ),
    )
    .unwrap();
    let out = folder.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_plateau"))
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let results = out.join("results.json").exists().then(|| read_results(&out));
    (output, results)
}

/// Every request succeeded (so each carried the expected version in its answer) and there were some.
fn assert_all_succeeded(output: &Output, results: &Option<Value>) {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
    let configuration = &results.as_ref().unwrap()["configurations"][0];
    let step = &configuration["steps"][0];
    // The first message of each error class, so a failure here says what went wrong.
    let details = &configuration["error_details"];
    assert!(step["throughput_rps"].as_f64().unwrap() > 100.0, "{step}");
    assert_eq!(step["errors"]["model_error"], 0, "requests over the wrong HTTP version: {details}");
    assert_eq!(step["error_rate_percent"], 0.0, "{details}");
}

#[test]
fn https_with_a_private_ca_negotiates_http2_or_keeps_http1_when_asked() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let certificates = make_certificates(folder.path());
    let port = serve(Some(&certificates), false);
    let tls = "[target.tls]\nca_file = \"ca.pem\"\n";

    let (output, results) = run_job(
        folder.path(),
        &format!("url = \"https://localhost:{port}/invocations\"\ncheck = {{ body_contains = \"HTTP/2.0\" }}\n{tls}"),
    );
    assert_all_succeeded(&output, &results);

    let (output, results) = run_job(
        folder.path(),
        &format!(
            "url = \"https://localhost:{port}/invocations\"\nhttp_version = \"1.1\"\ncheck = {{ body_contains = \"HTTP/1.1\" }}\n{tls}"
        ),
    );
    assert_all_succeeded(&output, &results);
}

#[test]
fn an_unknown_certificate_authority_is_one_clear_error() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let certificates = make_certificates(folder.path());
    let port = serve(Some(&certificates), false);
    let (output, results) = run_job(folder.path(), &format!("url = \"https://127.0.0.1:{port}/invocations\"\n"));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let failure = results.unwrap()["configurations"][0]["failure"].as_str().unwrap().to_string();
    assert!(failure.contains("cannot open a TLS connection") && failure.contains("UnknownIssuer"), "{failure}");
    assert!(failure.contains("ca_file"), "the hint names the key: {failure}");
}

#[test]
fn mutual_tls_sends_the_client_certificate() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let certificates = make_certificates(folder.path());
    let port = serve(Some(&certificates), true);
    let url = format!("url = \"https://localhost:{port}/invocations\"\n");

    let (output, _) = run_job(folder.path(), &format!("{url}[target.tls]\nca_file = \"ca.pem\"\n"));
    assert_eq!(output.status.code(), Some(2), "a server that demands a client certificate refuses us without one");

    let (output, results) = run_job(
        folder.path(),
        &format!(
            "{url}check = {{ body_contains = \"HTTP/2.0\" }}\n[target.tls]\nca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\n"
        ),
    );
    assert_all_succeeded(&output, &results);
}

#[test]
fn plain_http2_by_prior_knowledge() {
    let _machine = load_lock();
    let folder = tempfile::tempdir().unwrap();
    let port = serve(None, false);
    let (output, results) = run_job(
        folder.path(),
        &format!(
            "url = \"http://127.0.0.1:{port}/invocations\"\nhttp_version = \"2\"\ncheck = {{ body_contains = \"HTTP/2.0\" }}\n"
        ),
    );
    assert_all_succeeded(&output, &results);
}
