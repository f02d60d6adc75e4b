//! The `/_sim` control API used by tests: no auth and never faulted, so a test can always steer
//! and inspect the sim whatever state it put the Cloud Gate side in.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router, body::Bytes};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{ApiSpec, Event, Fault, Lifecycle};
use super::token::MintRequest;
use super::{ApiError, SimState, parse_json};

pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/tokens", post(mint_token))
        .route("/_sim/apis", put(put_api))
        .route("/_sim/apis/{id}", axum::routing::delete(undeploy_api))
        .route("/_sim/apis/{id}/stop", post(stop_api))
        .route("/_sim/apis/{id}/start", post(start_api))
        .route("/_sim/events", get(list_events))
        .route("/_sim/subscriptions", put(put_subscription))
        .route("/_sim/keys", put(put_key))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/reports", get(get_reports).delete(clear_reports))
        .route("/_sim/reports/summary", get(get_reports_summary))
        .route("/_sim/reports/ids", get(get_report_ids))
        .route("/_sim/heartbeats", get(get_heartbeats))
        .route("/_sim/stats", get(get_stats))
}

async fn mint_token(State(state): State<Arc<SimState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        parse_json::<MintRequest>(&body)?
    };
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let token = state
        .tokens()
        .mint(&req, now)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("signing failed: {e}")))?;
    Ok(Json(json!({"token": token})))
}

/// `PUT /_sim/apis`: either a definition object, or `id` + `definitionRaw` (a string stored
/// verbatim, possibly malformed, to check that clients reject it alone).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutApi {
    definition: Option<Value>,
    definition_raw: Option<String>,
    id: Option<String>,
    name: Option<String>,
    environment_id: Option<String>,
    organization_id: Option<String>,
    lifecycle_state: Option<String>,
}

impl PutApi {
    fn into_spec(self) -> Result<ApiSpec, String> {
        let mut spec = match (self.definition, self.definition_raw) {
            (Some(definition), None) => ApiSpec::from_definition(&definition)?,
            (None, Some(raw)) => {
                let id = self.id.filter(|id| !id.is_empty()).ok_or("`id` is required with `definitionRaw`")?;
                ApiSpec {
                    name: id.clone(),
                    environment_id: "DEFAULT".into(),
                    organization_id: "DEFAULT".into(),
                    lifecycle_state: "STARTED".into(),
                    definition_version: "4.0.0".into(),
                    api_type: "proxy".into(),
                    definition: raw,
                    id,
                }
            }
            _ => return Err("give exactly one of `definition` and `definitionRaw`".into()),
        };
        if let Some(name) = self.name {
            spec.name = name;
        }
        if let Some(env) = self.environment_id {
            spec.environment_id = env;
        }
        if let Some(org) = self.organization_id {
            spec.organization_id = org;
        }
        if let Some(lifecycle) = self.lifecycle_state {
            let lifecycle = lifecycle.to_ascii_uppercase();
            if lifecycle != "STARTED" && lifecycle != "STOPPED" {
                return Err("`lifecycleState` must be STARTED or STOPPED".into());
            }
            spec.lifecycle_state = lifecycle;
        }
        Ok(spec)
    }
}

async fn put_api(State(state): State<Arc<SimState>>, body: Bytes) -> Result<Json<Event>, ApiError> {
    let spec = parse_json::<PutApi>(&body)?.into_spec().map_err(ApiError::bad_request)?;
    tracing::info!(api = %spec.id, "publishing API");
    Ok(Json(state.store().publish_api(spec)))
}

fn change(state: &SimState, id: &str, change: Lifecycle) -> Result<Json<Event>, ApiError> {
    state
        .store()
        .change_lifecycle(id, change)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no published API `{id}`")))
}

async fn stop_api(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Result<Json<Event>, ApiError> {
    change(&state, &id, Lifecycle::Stop)
}

async fn start_api(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Result<Json<Event>, ApiError> {
    change(&state, &id, Lifecycle::Start)
}

async fn undeploy_api(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Result<Json<Event>, ApiError> {
    change(&state, &id, Lifecycle::Unpublish)
}

/// Latest event of every API, unfiltered: what the store holds, for debugging a test.
async fn list_events(State(state): State<Arc<SimState>>) -> Json<Vec<Event>> {
    Json(state.store().latest_events().cloned().collect())
}

async fn put_subscription(State(state): State<Arc<SimState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let sub: Value = parse_json(&body)?;
    state.store().put_subscription(sub).map(Json).map_err(ApiError::bad_request)
}

async fn put_key(State(state): State<Arc<SimState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let key: Value = parse_json(&body)?;
    state.store().put_key(key).map(Json).map_err(ApiError::bad_request)
}

async fn add_fault(State(state): State<Arc<SimState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let fault: Fault = parse_json(&body)?;
    if let Some(status) = fault.status
        && StatusCode::from_u16(status).is_err()
    {
        return Err(ApiError::bad_request("`status` must be an HTTP status code"));
    }
    if fault.status.is_none() && fault.delay_ms == 0 && !fault.drop {
        return Err(ApiError::bad_request("a fault needs `status`, `delay_ms` or `drop`"));
    }
    tracing::info!(?fault, "fault set");
    state.store().add_fault(fault);
    Ok(Json(json!({"ok": true})))
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.store().clear_faults();
    Json(json!({"ok": true}))
}

async fn get_reports(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!(state.store().reports))
}

/// `?type=v4-metrics`: only documents of that `type`.
#[derive(Debug, Default, Deserialize)]
struct TypeFilter {
    r#type: Option<String>,
}

/// The counters without the documents (cheap to poll under load), plus how many distinct `_id`s the
/// stored documents hold (of `type`, when given): at-least-once delivery may post a document twice,
/// Elasticsearch keeps one per `_id`. `documentsReceived` survives `DELETE /_sim/reports`.
async fn get_reports_summary(State(state): State<Arc<SimState>>, Query(filter): Query<TypeFilter>) -> Json<Value> {
    let store = state.store();
    let reports = &store.reports;
    let (documents, unique) = reports.counts(filter.r#type.as_deref());
    Json(json!({
        "requests": reports.requests, "rejected": reports.rejected, "bytes": reports.bytes,
        "all_documents": reports.documents.len(), "documents": documents, "unique_ids": unique,
        "documentsReceived": reports.documents_received, "documentsStored": reports.documents.len(),
    }))
}

/// Distinct `_id`s of the documents received (of `type`, when given), sorted.
async fn get_report_ids(State(state): State<Arc<SimState>>, Query(filter): Query<TypeFilter>) -> Json<Vec<String>> {
    Json(distinct_ids(select(&state.store().reports.documents, &filter)).into_iter().collect())
}

fn select<'a>(documents: &'a [Value], filter: &'a TypeFilter) -> impl Iterator<Item = &'a Value> {
    documents.iter().filter(|d| filter.r#type.as_deref().is_none_or(|t| d["type"] == t))
}

fn distinct_ids<'a>(documents: impl Iterator<Item = &'a Value>) -> std::collections::BTreeSet<String> {
    documents.filter_map(|d| d["_id"].as_str()).map(str::to_owned).collect()
}

async fn clear_reports(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.store().reports.clear_documents();
    Json(json!({"ok": true}))
}

async fn get_heartbeats(State(state): State<Arc<SimState>>) -> Json<Value> {
    let store = state.store();
    Json(json!({"events": store.heartbeat_history, "puts": store.heartbeat_puts}))
}

async fn get_stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!(state.store().stats))
}
