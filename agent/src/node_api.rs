//! The node API on `--node-listen` (Gravitee's port 18082): health, sync state, Prometheus metrics, and
//! hgw's views of the deployment set and the connected dataplanes.
//!
//! With `--node-api-token-file`, every path needs `Authorization: Bearer TOKEN` (401 otherwise), except
//! `/_node/health`: load balancers and orchestrator probes must reach it without credentials, so without
//! the token it answers only `{"status": "UP"|"DOWN"}` (and the same status code); the details (mode,
//! sync state, dataplanes, Redis) need the token like everything else.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::grpc::registry::DataplaneRegistry;
use crate::metrics::{Gauges, Metrics};
use crate::redis::{Redis, RedisHealth};
use crate::reports::spool::SpoolStats;
use crate::store::ConfigStore;
use crate::sync::SyncStatus;

pub struct NodeState {
    pub store: Arc<ConfigStore>,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<DataplaneRegistry>,
    pub reports: SpoolStats,
    pub mode: &'static str,
    /// Cancelled when shutdown starts: health turns 503 so load balancers stop sending.
    pub draining: CancellationToken,
    /// `None`: no Redis configured (state in memory).
    pub redis: Option<Redis>,
    /// OpenTelemetry export; its counters join the Prometheus page when traces are exported.
    pub tracing: Option<hgw_otel::Tracing>,
    /// SHA-256 of the bearer token every path but a bare health check needs; `None`: no token.
    pub token_sha256: Option<[u8; 32]>,
}

impl NodeState {
    /// Whether `headers` carry the node API token (always, when none is configured). Both sides are
    /// hashed first, so the comparison takes the same time whatever the token's length or content.
    fn authorized(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(expected) = &self.token_sha256 else { return true };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or_default();
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(presented.ct_eq(expected))
    }
}

/// The SHA-256 kept in place of the token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 401 unless the request carries the token; `/_node/health` passes (it shows less without it).
async fn require_token(
    State(state): State<Arc<NodeState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/_node/health" || state.authorized(request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"hgw node API\"")],
        Json(json!({"message": "Unauthorized: this node API needs `Authorization: Bearer <token>` (--node-api-token-file)", "http_status_code": 401})),
    )
        .into_response()
}

pub fn router(state: Arc<NodeState>) -> axum::Router {
    axum::Router::new()
        .route("/_node/health", get(health))
        .route("/_node/sync", get(sync))
        .route("/_node/metrics/prometheus", get(prometheus))
        .route("/_node/apis", get(apis))
        .route("/_node/dataplanes", get(dataplanes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn health(State(state): State<Arc<NodeState>>, headers: axum::http::HeaderMap) -> Response {
    let sync = state.status.snapshot();
    let draining = state.draining.is_cancelled();
    let code = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    if !state.authorized(&headers) {
        return (code, Json(json!({"status": if draining { "DOWN" } else { "UP" }}))).into_response();
    }
    let body = json!({
        "status": if draining { "DOWN" } else { "UP" },
        "mode": state.mode,
        "sync": {"initialDone": sync.initial_done, "lastOnError": sync.last_on_error},
        "dataplanes": state.registry.connected(),
    });
    let mut body = body;
    if let Some(redis) = &state.redis {
        // Shown, but never turns the node DOWN: the gateway keeps serving without Redis (rate limits
        // apply their errorStrategy).
        body["redis"] = redis_health(redis);
    }
    (code, Json(body)).into_response()
}

fn redis_health(redis: &Redis) -> serde_json::Value {
    let mut entry = match redis.health() {
        RedisHealth::Up => json!({"healthy": true}),
        RedisHealth::Unknown => json!({"healthy": false, "error": "pending", "message": "not checked yet"}),
        RedisHealth::Down { kind, message } => json!({"healthy": false, "error": kind, "message": message}),
    };
    entry["mode"] = json!(redis.mode());
    entry["description"] = json!(redis.describe());
    entry
}

/// Gravitee's sync state, plus `restoredSnapshot` while a last-good snapshot is served (null otherwise).
/// 503 until the first successful sync, even when a restored snapshot serves.
async fn sync(State(state): State<Arc<NodeState>>) -> Response {
    let sync = state.status.snapshot();
    let code = if sync.initial_done { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::to_value(&sync).unwrap_or_default();
    body["restoredSnapshot"] = match &state.store.current().restored {
        Some(restored) => json!({
            "source": restored.source, "version": restored.version, "writtenAt": restored.written_at_ms,
            "writtenBy": restored.written_by_node,
        }),
        None => serde_json::Value::Null,
    };
    (code, Json(body)).into_response()
}

async fn prometheus(State(state): State<Arc<NodeState>>) -> Response {
    let snapshot = state.store.current();
    let gauges = Gauges {
        config_version: snapshot.version,
        apis_deployed: snapshot.apis.len(),
        apis_rejected: snapshot.rejected.len(),
        dataplanes_connected: state.registry.connected(),
        reports_spool_documents: state.reports.records(),
        reports_spool_bytes: state.reports.bytes(),
        reports_spool_max_bytes: state.reports.max_bytes,
        reports_spool_segments: state.reports.segments(),
        reports_spool_full: state.reports.full(),
        sync_initial_done: state.status.snapshot().initial_done,
        redis_configured: state.redis.is_some(),
    };
    let mut page = state.metrics.render(&gauges);
    if let Some(tracing) = &state.tracing {
        page.push_str(&tracing.stats().prometheus("hgw_agent"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page).into_response()
}

async fn apis(State(state): State<Arc<NodeState>>) -> Response {
    let snapshot = state.store.current();
    let deployed: Vec<_> = snapshot
        .apis
        .values()
        .map(|api| {
            json!({
                "id": api.id, "name": api.name, "revision": api.revision, "definitionVersion": api.definition_version,
                "contextPaths": api.context_paths.iter().map(|c| format!("{}{}", c.host, c.path)).collect::<Vec<_>>(),
                "plans": api.plans.iter().map(|p| &p.id).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rejected: Vec<_> = snapshot
        .rejected
        .values()
        .map(|r| json!({"id": r.id, "name": r.name, "source": r.origin, "reason": r.reason}))
        .collect();
    let skipped: Vec<_> = snapshot.skipped.iter().map(|(id, why)| json!({"id": id, "reason": why})).collect();
    // What keeps APIs out, by feature, most frequent first: where a user looks to see what their set
    // needs from hgw.
    let mut by_feature: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for r in snapshot.rejected.values() {
        *by_feature.entry(feature_of(&r.reason)).or_default() += 1;
    }
    let mut features: Vec<_> = by_feature.into_iter().collect();
    features.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Json(json!({
        "version": snapshot.version,
        "compatibility": {
            "deployed": deployed.len(),
            "rejected": rejected.len(),
            "skipped": skipped.len(),
            "rejectedBy": features.into_iter().map(|(feature, apis)| json!({"feature": feature, "apis": apis})).collect::<Vec<_>>(),
        },
        "deployed": deployed,
        "rejected": rejected,
        "skipped": skipped,
        "subscriptions": snapshot.subscriptions,
        "apiKeys": snapshot.api_keys,
    }))
    .into_response()
}

/// The feature a rejection reason names: the policy or endpoint type when it is one, else the field
/// path without its indexes (`endpointGroups.endpoints.sharedConfigurationOverride.proxy`).
fn feature_of(reason: &str) -> String {
    for marker in ["policy `", "endpoint type `", "listener type `", "entrypoint `", "API type `"] {
        if let Some(start) = reason.find(marker) {
            let rest = &reason[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return format!("{}{}`", marker, &rest[..end]);
            }
        }
    }
    let path = reason.split(": ").next().unwrap_or(reason);
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

async fn dataplanes(State(state): State<Arc<NodeState>>) -> Response {
    let list: Vec<_> = state
        .registry
        .list()
        .into_iter()
        .map(|d| {
            json!({
                "id": d.dataplane_id, "hostname": d.hostname, "pid": d.pid, "tags": d.tags, "connected": d.connected,
                "ackedVersion": d.acked_version, "apis": d.api_count, "lastNackError": d.last_nack_error,
                "listenAddress": d.listen_address, "connectedAt": d.connected_at_ms, "lastSeen": d.last_seen_ms,
            })
        })
        .collect();
    Json(json!({"currentVersion": state.store.current().version, "dataplanes": list})).into_response()
}

#[cfg(test)]
mod feature_tests {
    use super::feature_of;

    #[test]
    fn rejections_are_grouped_by_what_they_name() {
        assert_eq!(feature_of("flows[0].request[1].policy: policy `groovy` is not supported"), "policy `groovy`");
        assert_eq!(
            feature_of(
                "endpointGroups[0].endpoints[2].sharedConfigurationOverride.proxy: calling endpoints through a proxy"
            ),
            "endpointGroups.endpoints.sharedConfigurationOverride.proxy"
        );
        assert_eq!(feature_of("type: message APIs are not supported"), "type");
    }
}
