//! The admin listener: health for orchestrators (`/ready`, `/live`), Prometheus `/metrics`, and a
//! `/config` dump for debugging and tests. Plain HTTP/1.1 on a separate (loopback) port, so it keeps
//! answering while the proxy listener drains.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gateway::Shared;

const NOT_READY: &str = "not ready: waiting for the first configuration from the agent";
const DRAINING: &str = "not ready: shutting down";

/// Serves until `cancel`; it is cancelled last, after the proxy drained and analytics flushed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let response = answer(&req, &shared);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(error) = result {
                    tracing::debug!(%error, "admin connection ended with an error");
                },
                () = cancel.cancelled() => {}
            }
        });
    }
}

fn answer<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live"),
        "/ready" => {
            if shared.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, DRAINING)
            } else if shared.is_ready() {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
            }
        }
        "/metrics" => with_type(StatusCode::OK, metrics_page(shared), "text/plain; version=0.0.4; charset=utf-8"),
        "/config" => with_type(StatusCode::OK, config_json(shared), "application/json"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `{"version":N,"apis":[{"id","name","revision","context_paths":[{"host","path"}],"targets":[..]}]}`
fn config_json(shared: &Shared) -> String {
    let table = shared.routes.load();
    let apis: Vec<serde_json::Value> = table
        .apis()
        .values()
        .map(|api| {
            serde_json::json!({
                "id": api.id,
                "name": api.name,
                "revision": api.revision,
                "context_paths": api.context_paths.iter()
                    .map(|cp| serde_json::json!({"host": cp.host, "path": cp.path}))
                    .collect::<Vec<_>>(),
                "targets": api.endpoints.endpoints().iter()
                    .map(|e| hgw_proto::redact::url(&e.target.display().to_string()))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "version": table.version(), "apis": apis }).to_string()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The process metrics, then the tracing export counters when traces are exported.
fn metrics_page(shared: &Shared) -> String {
    let mut page = shared.metrics.render();
    if let Some(tracing) = &shared.tracing {
        page.push_str(&tracing.stats().prometheus("hgw_dataplane"));
    }
    page
}
