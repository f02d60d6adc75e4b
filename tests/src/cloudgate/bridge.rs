//! The bridge protocol under `/sync/_bridge` (GRAVITEE-FORMATS.md, "/sync"): event searches,
//! subscriptions, API keys and gateway heartbeats. Every call needs a valid Cloud Token; a body naming
//! environments the token does not grant is refused with 403.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::{Json, Router, body::Bytes};
use serde::Deserialize;
use serde_json::Value;

use super::state::{
    DEFAULT_PAGE_SIZE, Event, EventSearch, KeySearch, SUBSCRIPTION_STATUSES, SubscriptionSearch, page, select_events,
};
use super::{ApiError, SimState, parse_json};

pub const EVENTS_LATEST_SEARCH: &str = "/sync/_bridge/eventsLatest/_search";
/// The older path of the same search; clients fall back to it on a 404.
pub const EVENTS_SEARCH_LATEST: &str = "/sync/_bridge/events/_searchLatest";
pub const SUBSCRIPTIONS_SEARCH: &str = "/sync/_bridge/subscriptions/_search";
pub const KEYS_FIND: &str = "/sync/_bridge/keys/_findByCriteria";
pub const EVENTS: &str = "/sync/_bridge/events";

pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(EVENTS_LATEST_SEARCH, post(events_latest))
        .route(EVENTS_SEARCH_LATEST, post(events_search_latest))
        .route(SUBSCRIPTIONS_SEARCH, post(search_subscriptions))
        .route(KEYS_FIND, post(find_keys))
        .route(EVENTS, post(create_event))
        .route(&format!("{EVENTS}/{{id}}"), put(update_event))
}

/// Query of the event searches: events are grouped by the `API_ID` property, paged from 0.
#[derive(Debug, Deserialize)]
struct SearchParams {
    group: Option<String>,
    page: Option<usize>,
    size: Option<usize>,
}

async fn events_latest(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    query: Result<Query<SearchParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Vec<Event>>, ApiError> {
    if state.legacy_search {
        // The route does not exist on an old bridge: 404 before anything else, as a router would.
        return Err(ApiError::not_found("no such route"));
    }
    search_latest(&state, &headers, query, &body)
}

async fn events_search_latest(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    query: Result<Query<SearchParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Vec<Event>>, ApiError> {
    search_latest(&state, &headers, query, &body)
}

/// Latest event per API matching the body, scoped to the environments named in the body (each must
/// be granted by the token) or, when it names none, to the token's environments: a tenant never
/// sees another environment's APIs.
fn search_latest(
    state: &SimState,
    headers: &HeaderMap,
    query: Result<Query<SearchParams>, QueryRejection>,
    body: &Bytes,
) -> Result<Json<Vec<Event>>, ApiError> {
    let claims = state.authorize(headers)?;
    let Query(params) = query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    match params.group.as_deref() {
        Some(g) if g.eq_ignore_ascii_case("API_ID") => {}
        Some(_) => return Err(ApiError::bad_request("query `group` must be API_ID")),
        None => return Err(ApiError::bad_request("query `group` is required (API_ID)")),
    }
    let size = params.size.unwrap_or(DEFAULT_PAGE_SIZE);
    if size == 0 {
        return Err(ApiError::bad_request("query `size` must be at least 1"));
    }
    let search: EventSearch = parse_json(body)?;
    state.check_environments(&claims, search.environments.as_deref())?;
    let scope = match &search.environments {
        Some(envs) if !envs.is_empty() => envs.clone(),
        _ => claims.envs.clone(),
    };
    let store = state.store();
    let found = select_events(store.latest_events(), &search, &scope);
    Ok(Json(page(&found, params.page.unwrap_or(0), size)))
}

async fn search_subscriptions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<Value>>, ApiError> {
    let claims = state.authorize(&headers)?;
    let search: SubscriptionSearch = parse_json(&body)?;
    if let Some(bad) = search.statuses.iter().find(|s| !SUBSCRIPTION_STATUSES.contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown subscription status `{bad}` (expected one of {SUBSCRIPTION_STATUSES:?})"
        )));
    }
    state.check_environments(&claims, search.environments.as_deref())?;
    Ok(Json(state.store().search_subscriptions(&search)))
}

async fn find_keys(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<Value>>, ApiError> {
    let claims = state.authorize(&headers)?;
    let search: KeySearch = parse_json(&body)?;
    state.check_environments(&claims, search.environments.as_deref())?;
    Ok(Json(state.store().find_keys(&search)))
}

/// Checks a heartbeat event the way the control plane's deserialiser would: an object with a
/// `type`, a string `payload`, string-valued `properties` and string-array `environments`.
fn heartbeat_body(state: &SimState, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let claims = state.authorize(headers)?;
    let event: Value = parse_json(body)?;
    let obj = event.as_object().ok_or_else(|| ApiError::bad_request("event must be a JSON object"))?;
    match obj.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => {
            return Err(ApiError::bad_request("event `type` must be a non-empty string"));
        }
    }
    if !matches!(obj.get("payload"), None | Some(Value::Null | Value::String(_))) {
        return Err(ApiError::bad_request("event `payload` must be a string"));
    }
    match obj.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) if props.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(ApiError::bad_request("event `properties` must be an object of strings"));
        }
    }
    if !matches!(obj.get("id"), None | Some(Value::Null | Value::String(_))) {
        return Err(ApiError::bad_request("event `id` must be a string"));
    }
    let environments = match obj.get("environments") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Vec<String>>(v.clone())
                .map_err(|_| ApiError::bad_request("event `environments` must be an array of strings"))?,
        ),
    };
    state.check_environments(&claims, environments.as_deref())?;
    Ok(event)
}

async fn create_event(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let event = heartbeat_body(&state, &headers, &body)?;
    Ok(Json(state.store().create_heartbeat(event)))
}

async fn update_event(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let event = heartbeat_body(&state, &headers, &body)?;
    if let Some(body_id) = event.get("id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ApiError::bad_request(format!("event id `{body_id}` does not match the path id `{id}`")));
    }
    state
        .store()
        .update_heartbeat(&id, event)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no event `{id}`")))
}
