//! `hgw-agent webhook`: a mutating admission webhook (AdmissionReview `admission.k8s.io/v1`) over TLS.
//!
//! Two paths share the injector: `/inject/namespace` for namespaces labelled `hgw.io/inject: enabled`
//! (every pod unless it opts out) and `/inject` for the others (only pods or workloads that ask). The
//! MutatingWebhookConfiguration chooses the path by namespace selector; the webhook never reads namespaces,
//! so it needs no RBAC of its own. Pods and workload templates (Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, Jobs, CronJobs) are both handled: a pod created from an injected template is seen as
//! already injected.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{DefaultPolicy, SidecarConfig, inject_object, patch};

/// Largest AdmissionReview accepted: etcd's object limit is 1.5 MiB, the review carries up to two copies.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--tls-cert {path}: {problem}")]
    Certificate { path: String, problem: String },
    #[error("--tls-key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("--addr-file {path}: {source}")]
    AddrFile { path: String, source: std::io::Error },
}

/// Answers one AdmissionReview. `Err` is for a body that is not an AdmissionReview at all (HTTP 400);
/// a workload the injector refuses is an answer with `allowed: false` and the reason.
pub fn review(body: &[u8], config: &SidecarConfig, policy: DefaultPolicy) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err("not an AdmissionReview".into());
    }
    let request = review.get("request").ok_or("AdmissionReview without request")?;
    let uid = request.get("uid").and_then(Value::as_str).ok_or("AdmissionReview request without uid")?;
    let api_version = review.get("apiVersion").and_then(Value::as_str).unwrap_or("admission.k8s.io/v1");
    let answer = |response: Value| {
        let mut response = response;
        response["uid"] = Value::String(uid.to_owned());
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
    };
    let operation = request.get("operation").and_then(Value::as_str).unwrap_or_default();
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return Ok(answer(json!({"allowed": true})));
    };
    if operation != "CREATE" && operation != "UPDATE" {
        return Ok(answer(json!({"allowed": true})));
    }
    // A running pod's spec cannot change: on UPDATE a pod is only given back the sidecar it had (a
    // server-side apply of the original manifest drops fields the webhook added at creation); a pod
    // created before injection was turned on is left alone.
    let kind = request.pointer("/kind/kind").and_then(Value::as_str).unwrap_or_default();
    if operation == "UPDATE" && kind == "Pod" {
        let had_sidecar = request.get("oldObject").is_some_and(|old| {
            old.pointer("/metadata/annotations").and_then(|a| a.get(super::ANNOTATION_INJECTED)).is_some()
        });
        if !had_sidecar {
            return Ok(answer(json!({"allowed": true})));
        }
    }
    // The object may come without `kind`; the request says what it is.
    let mut working = object.clone();
    let kind_missing = working.get("kind").is_none();
    if kind_missing && let Some(kind) = request.pointer("/kind/kind") {
        working["kind"] = kind.clone();
    }
    match inject_object(&mut working, config, policy) {
        Ok(outcomes) => {
            if kind_missing && let Some(map) = working.as_object_mut() {
                map.remove("kind");
            }
            let operations = patch::diff(object, &working);
            let name = request.get("name").and_then(Value::as_str).unwrap_or("");
            let namespace = request.get("namespace").and_then(Value::as_str).unwrap_or("");
            tracing::info!(uid, operation, namespace, name, outcome = ?outcomes, "admission review");
            if operations.is_empty() {
                return Ok(answer(json!({"allowed": true})));
            }
            let patch = serde_json::to_vec(&operations).map_err(|e| e.to_string())?;
            Ok(answer(json!({
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            })))
        }
        Err(error) => {
            tracing::warn!(uid, %error, "admission refused");
            Ok(answer(
                json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": format!("hgw sidecar injection: {error}")}}),
            ))
        }
    }
}

/// TLS server configuration from PEM files (cert-manager's or the chart's own `tls.crt`/`tls.key`).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, WebhookError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| WebhookError::Certificate { path: cert.display().to_string(), problem: e.to_string() })?;
    if chain.is_empty() {
        return Err(WebhookError::Certificate { path: cert.display().to_string(), problem: "no certificate".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| WebhookError::Key { path: key.display().to_string(), problem: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| WebhookError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the webhook until `shutdown` fires. `addr_file` gets `{"webhook": "ip:port"}` once bound.
pub async fn serve(
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    config: SidecarConfig,
    addr_file: Option<&Path>,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    let listener = TcpListener::bind(listen).await.map_err(|source| WebhookError::Bind { addr: listen, source })?;
    let local = listener.local_addr().map_err(|source| WebhookError::Bind { addr: listen, source })?;
    if let Some(path) = addr_file {
        let text = json!({"webhook": local.to_string()}).to_string();
        std::fs::write(path, text)
            .map_err(|source| WebhookError::AddrFile { path: path.display().to_string(), source })?;
    }
    tracing::info!(%local, "sidecar injection webhook listening (TLS)");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let config = Arc::new(config);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let config = config.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(request, &config).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, %error, "webhook connection");
            }
        });
    }
}

async fn handle(request: Request<Incoming>, config: &SidecarConfig) -> Response<Full<Bytes>> {
    let policy = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz" | "/ready" | "/live") => return text(StatusCode::OK, "ok"),
        (&Method::POST, "/inject") => DefaultPolicy::OptIn,
        (&Method::POST, "/inject/namespace") => DefaultPolicy::Inject,
        _ => return text(StatusCode::NOT_FOUND, "POST /inject or /inject/namespace"),
    };
    let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return text(StatusCode::BAD_REQUEST, &format!("body: {error}")),
    };
    match review(&body, config, policy) {
        Ok(answer) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")),
        Err(problem) => text(StatusCode::BAD_REQUEST, &problem),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(object: Value, operation: &str) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": operation,
                        "namespace": "shop", "name": "web", "object": object},
        })
        .to_string()
        .into_bytes()
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
    }

    #[test]
    fn the_patch_gives_what_inject_gives() {
        let answer = review(&admission(pod(), "CREATE"), &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch =
            base64::engine::general_purpose::STANDARD.decode(answer["response"]["patch"].as_str().unwrap()).unwrap();
        let operations: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        let mut patched = pod();
        patch::apply(&mut patched, &operations).unwrap();
        let mut injected = pod();
        inject_object(&mut injected, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(patched, injected);
        // The injected pod comes back (an UPDATE, or a pod from an injected template): nothing to do.
        let again = review(&admission(injected, "UPDATE"), &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert!(again["response"].get("patch").is_none());
    }

    #[test]
    fn refusals_and_garbage() {
        let mut bad = pod();
        bad["metadata"]["annotations"] = json!({"hgw.io/proxy-port": "eighty"});
        let answer = review(&admission(bad, "CREATE"), &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        assert!(answer["response"]["status"]["message"].as_str().unwrap().contains("hgw.io/proxy-port"));
        assert!(review(b"{}", &SidecarConfig::default(), DefaultPolicy::Inject).is_err());
        assert!(review(b"\xff", &SidecarConfig::default(), DefaultPolicy::Inject).is_err());
        // A pod that had no sidecar is not given one by an UPDATE (its spec is immutable).
        let update = review(&admission(pod(), "UPDATE"), &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert!(update["response"].get("patch").is_none());
        let delete = review(&admission(pod(), "DELETE"), &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(delete["response"]["allowed"], true);
    }
}
