//! A real HTTP backend inside the test process: it echoes what it received as JSON, so a test can
//! check what the dataplane forwarded (path, headers, body size, HTTP version) and which backend
//! answered. Plain HTTP/1.1 by default; h2c-only and TLS variants for endpoint tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// An HTTP server on `127.0.0.1:0` answering every request with 200 JSON
/// `{"backend","method","path","query","version","headers":{lowercase name: value},"body_len"}` once
/// the whole body is read. Query `sleep_ms=N` delays the answer, `status=N` sets its status,
/// `redirect=N` answers status N with `Location: /redirected?from=PATH` instead (no echo),
/// `encoding=gzip|deflate` compresses it (with `Content-Encoding` and `Content-Length`, the JSON then
/// padded with `pad=N` bytes of spaces), `echo_body` answers the request's body itself with its
/// Content-Type (for response-phase body policies). Stops on drop.
pub struct Backend {
    pub addr: SocketAddr,
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    tls_failures: Arc<AtomicU64>,
    https: bool,
    server: JoinHandle<()>,
}

/// What a backend speaks.
enum Mode {
    Http1,
    H2c,
    Tls(TlsAcceptor),
}

#[derive(Clone)]
struct Counters {
    requests: Arc<AtomicU64>,
    tls_failures: Arc<AtomicU64>,
}

impl Backend {
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(name: &str) -> Backend {
        Backend::start_with(name, Mode::Http1).await
    }

    /// A backend that speaks HTTP/2 with prior knowledge (h2c) only: HTTP/1.1 requests fail.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start_h2c(name: &str) -> Backend {
        Backend::start_with(name, Mode::H2c).await
    }

    /// An HTTPS backend presenting `identity` (HTTP/1.1, or h2 when the client offers it by ALPN).
    /// Failed handshakes are counted by [`Backend::tls_failures`], not as requests.
    ///
    /// # Panics
    /// When the certificate or key cannot be read, or no loopback port can be bound.
    pub async fn start_tls(name: &str, identity: &crate::CertifiedKey) -> Backend {
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("key PEM");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Backend::start_with(name, Mode::Tls(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(name: &str, mode: Mode) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port for the backend");
        let addr = listener.local_addr().expect("bound address");
        let name: Arc<str> = Arc::from(name);
        let requests = Arc::new(AtomicU64::new(0));
        let tls_failures = Arc::new(AtomicU64::new(0));
        let https = matches!(mode, Mode::Tls(_));
        let counters = Counters { requests: requests.clone(), tls_failures: tls_failures.clone() };
        let server = tokio::spawn(serve(listener, name.clone(), counters, mode));
        Backend { addr, name, requests, tls_failures, https, server }
    }

    /// `http://127.0.0.1:PORT` (`https://` for TLS backends), the endpoint target for a definition.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// TLS handshakes that failed (the client refused the certificate, or spoke no TLS).
    pub fn tls_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::SeqCst)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests received so far (counted on arrival, before the body is read).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet owned by the server task: aborting it closes all.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, name: Arc<str>, counters: Counters, mode: Mode) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let name = name.clone();
        let counters = counters.clone();
        let requests = counters.requests.clone();
        let service = hyper::service::service_fn(move |req| echo(name.clone(), requests.clone(), req));
        match &mode {
            Mode::Http1 => {
                connections.spawn(async move {
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
            Mode::H2c => {
                connections.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
            Mode::Tls(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        counters.tls_failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    }
}

async fn echo(name: Arc<str>, requests: Arc<AtomicU64>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(key.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let received = match axum::body::to_bytes(Body::new(body), usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => {
            // The client went away mid-body; nobody is left to answer.
            return Ok(status_response(StatusCode::BAD_REQUEST, "incomplete body"));
        }
    };
    let body_len = received.len();
    if query.split('&').any(|pair| pair == "echo_body") {
        let mut response = Response::new(Body::from(received));
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
        }
        return Ok(response);
    }
    if let Some(code) = param("redirect").and_then(|c| u16::try_from(c).ok()).and_then(|c| StatusCode::from_u16(c).ok())
    {
        let mut response = Response::new(Body::from("moved"));
        *response.status_mut() = code;
        let location = format!("/redirected?from={}", parts.uri.path());
        response.headers_mut().insert(header::LOCATION, header::HeaderValue::from_str(&location).unwrap());
        return Ok(response);
    }
    if let Some(ms) = param("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = param("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let answer = json!({
        "backend": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": query,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let encoding = query.split('&').find_map(|pair| pair.strip_prefix("encoding=")).map(str::to_owned);
    let Some(encoding) = encoding else {
        return Ok(json_response(status, answer.to_string()));
    };
    let mut text = answer.to_string();
    text.push_str(&" ".repeat(usize::try_from(param("pad").unwrap_or(0)).unwrap_or(0)));
    let compressed = compress(&encoding, text.as_bytes());
    let mut response = Response::new(Body::from(compressed.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_ENCODING, header::HeaderValue::from_str(&encoding).unwrap());
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(compressed.len()));
    Ok(response)
}

/// `data` in the content coding `encoding` (`gzip`, or `deflate` as zlib); other names leave it as is.
fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match encoding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "deflate" => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn status_response(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_the_request() {
        let backend = Backend::start("b1").await;
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/some/path?x=1&status=201", backend.url()))
            .header("X-Test", "yes")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["backend"], "b1");
        assert_eq!(answer["method"], "POST");
        assert_eq!(answer["path"], "/some/path");
        assert_eq!(answer["query"], "x=1&status=201");
        assert_eq!(answer["headers"]["x-test"], "yes");
        assert_eq!(answer["body_len"], 5);
        assert_eq!(backend.requests(), 1);
    }
}
