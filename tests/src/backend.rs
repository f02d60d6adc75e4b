//! A real HTTP/1.1 backend inside the test process: it echoes what it received as JSON, so a test
//! can check what the dataplane forwarded (path, headers, body size) and which backend answered.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// An HTTP/1.1 server on `127.0.0.1:0` answering every request with 200 JSON
/// `{"backend","method","path","query","headers":{lowercase name: value},"body_len"}` once the whole
/// body is read. Query `sleep_ms=N` delays the answer, `status=N` sets its status. Stops on drop.
pub struct Backend {
    pub addr: SocketAddr,
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    server: JoinHandle<()>,
}

impl Backend {
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port for the backend");
        let addr = listener.local_addr().expect("bound address");
        let name: Arc<str> = Arc::from(name);
        let requests = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(serve(listener, name.clone(), requests.clone()));
        Backend { addr, name, requests, server }
    }

    /// `http://127.0.0.1:PORT`, the endpoint target to put in a definition.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

async fn serve(listener: TcpListener, name: Arc<str>, requests: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let name = name.clone();
        let requests = requests.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| echo(name.clone(), requests.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
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
    let body_len = match axum::body::to_bytes(Body::new(body), usize::MAX).await {
        Ok(bytes) => bytes.len(),
        Err(_) => {
            // The client went away mid-body; nobody is left to answer.
            return Ok(status_response(StatusCode::BAD_REQUEST, "incomplete body"));
        }
    };
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
        "headers": headers,
        "body_len": body_len,
    });
    Ok(json_response(status, answer.to_string()))
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
