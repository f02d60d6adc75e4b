//! The `/sync` loop: Gravitee's bridge sync against the Cloud Gate.
//!
//! A full sync at start (latest `PUBLISH_API`/`START_API` event per API), then an incremental one every
//! `--sync-interval` over the window since the previous sync, widened by 30 s on both sides for clock
//! skew. Pages of 100 until a short page. Subscriptions and API keys of the deployed APIs follow. Any
//! failure keeps the last good set deployed and retries with jittered exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cloudgate::{
    ApiEventPayload, ApiKey, CloudGate, Event, EventCriteria, GateError, KeyCriteria, Subscription,
    SubscriptionCriteria,
};
use crate::definition::{ApiSource, DefinitionText};
use crate::metrics::Metrics;
use crate::store::ConfigStore;

/// Events per page; a shorter page is the last.
pub const PAGE_SIZE: usize = 100;
/// Gravitee widens each incremental window by this on both sides, for clock skew between nodes.
pub const SKEW_WINDOW_MS: i64 = 30_000;
/// Upper bound on pages in one sync, so a misbehaving server cannot keep the loop paging forever.
const MAX_PAGES: usize = 10_000;
/// Subscriptions and keys are asked for in chunks of this many ids (request size stays small).
const ID_CHUNK: usize = 100;
const FULL_TYPES: &[&str] = &["PUBLISH_API", "START_API"];
const INCREMENTAL_TYPES: &[&str] = &["PUBLISH_API", "START_API", "UNPUBLISH_API", "STOP_API"];
const LIVE_SUBSCRIPTION_STATUSES: &[&str] = &["ACCEPTED", "PENDING", "PAUSED"];
const ALL_SUBSCRIPTION_STATUSES: &[&str] = &["ACCEPTED", "PENDING", "PAUSED", "CLOSED", "REJECTED"];
/// Backoff after a failed sync: from 1 s doubling up to 30 s, full jitter.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What `/_node/sync` and the Admin RPC report (Gravitee's field names).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    pub initial_done: bool,
    pub counter: u64,
    pub next_sync_time: i64,
    pub last_on_error: bool,
    pub last_error_message: Option<String>,
    pub total_on_errors: u64,
}

#[derive(Default)]
pub struct SyncStatus {
    state: Mutex<SyncState>,
}

impl SyncStatus {
    pub fn snapshot(&self) -> SyncState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn succeeded(&self, next_sync_time: i64) {
        let mut state = self.lock();
        state.initial_done = true;
        state.counter += 1;
        state.last_on_error = false;
        state.last_error_message = None;
        state.next_sync_time = next_sync_time;
    }

    pub fn failed(&self, message: String, next_sync_time: i64) {
        let mut state = self.lock();
        state.last_on_error = true;
        state.last_error_message = Some(message);
        state.total_on_errors += 1;
        state.next_sync_time = next_sync_time;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What an API event asks for.
#[derive(Debug)]
pub enum ApiChange {
    Deploy(ApiSource),
    Undeploy {
        api_id: String,
    },
    /// Not an API event, or an event hgw does not act on.
    Ignore,
}

/// Decodes one Event (from the bridge or a local registry file). A payload that cannot be read still
/// yields a source, marked invalid, so the API shows up as rejected with the reason. A payload larger
/// than `max_bytes` (`--max-definition-bytes`) is rejected unparsed: parsing and compiling cost many times
/// the size of a definition, and one huge API must not stall the others.
pub fn decode_api_event(
    event: &Event,
    origin: &str,
    default_env: &str,
    default_org: &str,
    max_bytes: u64,
) -> (String, ApiChange) {
    let type_ = event.event_type.to_ascii_uppercase();
    let deploy = match type_.as_str() {
        "PUBLISH_API" | "START_API" => true,
        "STOP_API" | "UNPUBLISH_API" => false,
        _ => return (String::new(), ApiChange::Ignore),
    };
    let property_id = event.property("api_id").unwrap_or_default();
    let too_large = event.payload.as_ref().is_some_and(|text| text.len() as u64 > max_bytes);
    let payload: Result<ApiEventPayload, String> = match &event.payload {
        None => Err("the event has no payload".into()),
        Some(text) if too_large => {
            Err(format!("the definition is {} bytes, more than --max-definition-bytes ({max_bytes})", text.len()))
        }
        Some(text) => serde_json::from_str::<Value>(text)
            .map_err(|e| format!("the event payload is not JSON: {e}"))
            .and_then(|mut v| {
                crate::definition::model::strip_nulls(&mut v);
                serde_json::from_value(v).map_err(|e| format!("the event payload is not an API: {e}"))
            }),
    };
    let api_id = match &payload {
        Ok(p) if property_id.is_empty() => p.id.clone(),
        _ => property_id,
    };
    if !deploy {
        return (api_id.clone(), ApiChange::Undeploy { api_id });
    }
    let environment_id = event.environments.first().cloned().unwrap_or_else(|| default_env.to_owned());
    let organization_id = event.organizations.first().cloned().unwrap_or_else(|| default_org.to_owned());
    let mut source = ApiSource {
        id: api_id.clone(),
        name: String::new(),
        origin: format!("{origin} (event {})", event.id),
        definition: DefinitionText::Invalid(String::new()),
        environment_id,
        organization_id,
    };
    match payload {
        Err(reason) => source.definition = DefinitionText::Invalid(reason),
        Ok(payload) => {
            if payload.lifecycle_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("STOPPED")) {
                return (api_id.clone(), ApiChange::Undeploy { api_id });
            }
            source.name = payload.name.clone();
            if let Some(env) = payload.environment_id.filter(|e| !e.is_empty()) {
                source.environment_id = env;
            }
            source.definition = match payload.definition {
                Some(Value::String(text)) => DefinitionText::Json(text),
                Some(value @ Value::Object(_)) => DefinitionText::Parsed(value),
                Some(_) | None => DefinitionText::Invalid("the event payload has no `definition`".into()),
            };
        }
    }
    if source.id.is_empty() && !too_large {
        source.definition =
            DefinitionText::Invalid("the event names no API id (properties.api_id or payload.id)".into());
    }
    (api_id, ApiChange::Deploy(source))
}

struct DeployedApi {
    updated_at: i64,
    source: ApiSource,
}

/// The agent's view of the control plane, built from events.
#[derive(Default)]
struct CloudState {
    apis: BTreeMap<String, DeployedApi>,
    /// When each API was last undeployed, so a stale publish from the skew window cannot revive it.
    undeployed_at: HashMap<String, i64>,
    subscriptions: HashMap<String, Subscription>,
    keys: HashMap<String, ApiKey>,
}

pub struct CloudSync {
    pub gate: Arc<CloudGate>,
    pub store: Arc<ConfigStore>,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub environments: Vec<String>,
    pub organization: String,
    pub interval: Duration,
    /// `--max-definition-bytes`: larger event payloads are rejected alone.
    pub max_definition_bytes: u64,
    /// OpenTelemetry export: each round is a `sync` trace (with `compile`); `None`: no traces.
    pub tracing: Option<hgw_otel::Tracing>,
}

impl CloudSync {
    pub async fn run(self, cancel: CancellationToken) {
        let mut state = CloudState::default();
        let mut last_to: Option<i64> = None;
        let mut backoff = BACKOFF_START;
        loop {
            let started = now_ms();
            let mut trace = self.tracing.as_ref().and_then(hgw_otel::Tracing::start_trace);
            let mut root = trace.as_ref().map(|t| {
                let mut span = t.root("sync", hgw_otel::SpanKind::Internal);
                span.set("hgw.sync.full", last_to.is_none());
                span
            });
            let log_span = match (&trace, &root) {
                (Some(t), Some(span)) => t.log_span(span),
                _ => tracing::Span::none(),
            };
            let result = tracing::Instrument::instrument(
                self.sync_once(&mut state, last_to, started, trace.as_mut().zip(root.as_ref())),
                log_span,
            )
            .await;
            if let (Some(t), Some(mut span)) = (trace.as_mut(), root.take()) {
                match &result {
                    Ok(report) => {
                        span.set("hgw.config.version", report.version as i64);
                        span.set("hgw.config.changed", report.changed);
                        span.set("hgw.apis.deployed", report.deployed as i64);
                        span.set("hgw.apis.rejected", report.rejected as i64);
                    }
                    Err(error) => span.error(error.to_string()),
                }
                t.end(span);
            }
            drop(trace);
            let wait = match result {
                Ok(report) => {
                    last_to = Some(started);
                    backoff = BACKOFF_START;
                    self.metrics.sync_ok.inc();
                    self.status.succeeded(now_ms() + self.interval.as_millis() as i64);
                    if report.changed {
                        tracing::info!(
                            version = report.version,
                            deployed = report.deployed,
                            rejected = report.rejected,
                            "sync applied"
                        );
                    }
                    self.interval
                }
                Err(error) => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    self.metrics.sync_errors.inc();
                    tracing::warn!(error = %error, retry_in_ms = wait.as_millis() as u64, full = last_to.is_none(), "sync failed; serving the last good config");
                    self.status.failed(error.to_string(), now_ms() + wait.as_millis() as i64);
                    wait
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn sync_once(
        &self,
        state: &mut CloudState,
        last_to: Option<i64>,
        now: i64,
        mut trace: Option<(&mut hgw_otel::Trace, &hgw_otel::Span)>,
    ) -> Result<crate::store::DeployReport, GateError> {
        let full = last_to.is_none();
        let criteria = EventCriteria {
            from: last_to.map_or(-1, |t| t - SKEW_WINDOW_MS),
            to: now + SKEW_WINDOW_MS,
            types: if full { FULL_TYPES.to_vec() } else { INCREMENTAL_TYPES.to_vec() },
            environments: self.environments.clone(),
        };
        let fetch = trace.as_ref().map(|(t, root)| t.child(root, "fetch", hgw_otel::SpanKind::Client));
        let mut events = Vec::new();
        for page in 0..MAX_PAGES {
            let batch = self.gate.latest_events(&criteria, page, PAGE_SIZE).await?;
            let short = batch.len() < PAGE_SIZE;
            events.extend(batch);
            if short {
                break;
            }
        }
        // Apply everything only once every page arrived: a failed sync changes nothing.
        // A full sync starts from nothing (and leaves `state` intact if it fails); an incremental one
        // moves the state out and back, to avoid copying thousands of definitions every interval.
        let mut next = if full { CloudState::default() } else { std::mem::take(state) };
        events.sort_by_key(|e| e.updated_at.or(e.created_at).unwrap_or(0));
        for event in &events {
            let updated_at = event.updated_at.or(event.created_at).unwrap_or(0);
            let (api_id, change) = decode_api_event(
                event,
                "cloud",
                self.environments.first().map_or("", String::as_str),
                &self.organization,
                self.max_definition_bytes,
            );
            let newer_than_known = next.apis.get(&api_id).is_none_or(|d| updated_at >= d.updated_at)
                && next.undeployed_at.get(&api_id).is_none_or(|at| updated_at >= *at);
            if !newer_than_known {
                continue;
            }
            match change {
                ApiChange::Deploy(source) => {
                    next.undeployed_at.remove(&api_id);
                    next.apis.insert(api_id, DeployedApi { updated_at, source });
                }
                ApiChange::Undeploy { api_id } => {
                    next.apis.remove(&api_id);
                    next.undeployed_at.insert(api_id, updated_at);
                }
                ApiChange::Ignore => {}
            }
        }
        let result = self.sync_subscriptions_and_keys(&mut next, full, criteria.from, criteria.to).await;
        if let (Some((t, _)), Some(mut span)) = (trace.as_mut(), fetch) {
            span.set("hgw.sync.events", events.len() as i64);
            if let Err(error) = &result {
                span.error(error.to_string());
            }
            t.end(span);
        }
        if let Err(error) = result {
            if !full {
                *state = next;
            }
            return Err(error);
        }
        *state = next;
        let sources: Vec<ApiSource> = state.apis.values().map(|d| d.source.clone()).collect();
        let subscriptions: Vec<Subscription> = state.subscriptions.values().cloned().collect();
        let keys: Vec<ApiKey> = state.keys.values().cloned().collect();
        let Some((t, root)) = trace else {
            return Ok(self.store.deploy(sources, &subscriptions, &keys));
        };
        let mut span = t.child(root, "compile", hgw_otel::SpanKind::Internal);
        span.set("hgw.sync.definitions", sources.len() as i64);
        // Pushes of the version this round makes are children of the round's root span.
        let origin = hgw_otel::TraceParent { trace_id: t.trace_id, parent_id: root.id, flags: 1 };
        let report = self.store.deploy_traced(sources, &subscriptions, &keys, Some(origin));
        span.set("hgw.config.version", report.version as i64);
        span.set("hgw.apis.deployed", report.deployed as i64);
        span.set("hgw.apis.rejected", report.rejected as i64);
        t.end(span);
        Ok(report)
    }

    async fn sync_subscriptions_and_keys(
        &self,
        state: &mut CloudState,
        full: bool,
        from: i64,
        to: i64,
    ) -> Result<(), GateError> {
        let api_ids: Vec<String> = state.apis.keys().cloned().collect();
        if full {
            state.subscriptions.clear();
            state.keys.clear();
        }
        let statuses = if full { LIVE_SUBSCRIPTION_STATUSES } else { ALL_SUBSCRIPTION_STATUSES };
        for chunk in api_ids.chunks(ID_CHUNK) {
            let found = self
                .gate
                .subscriptions(&SubscriptionCriteria { apis: chunk.to_vec(), statuses: statuses.to_vec(), from, to })
                .await?;
            for subscription in found {
                if LIVE_SUBSCRIPTION_STATUSES.iter().any(|s| s.eq_ignore_ascii_case(&subscription.status)) {
                    state.subscriptions.insert(subscription.id.clone(), subscription);
                } else {
                    state.subscriptions.remove(&subscription.id);
                }
            }
        }
        state.subscriptions.retain(|_, s| state.apis.contains_key(&s.api));
        let subscription_ids: Vec<String> = state.subscriptions.keys().cloned().collect();
        for chunk in subscription_ids.chunks(ID_CHUNK) {
            let found = self
                .gate
                .api_keys(&KeyCriteria { subscriptions: chunk.to_vec(), include_revoked: true, from, to })
                .await?;
            for key in found {
                state.keys.insert(key.id.clone(), key);
            }
        }
        let live: std::collections::HashSet<&String> = state.subscriptions.keys().collect();
        state.keys.retain(|_, k| k.subscription.iter().chain(k.subscriptions.iter()).any(|s| live.contains(s)));
        Ok(())
    }
}

/// Full jitter: a uniform wait in [d/2, d], so restarting agents do not retry in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let millis = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(type_: &str, payload: Value) -> Event {
        Event {
            id: "evt-1".into(),
            event_type: type_.into(),
            payload: Some(payload.to_string()),
            properties: json!({"api_id": "api-1"}).as_object().unwrap().clone(),
            environments: vec!["env".into()],
            ..Event::default()
        }
    }

    #[test]
    fn publish_event_yields_the_definition_string() {
        let payload =
            json!({"id": "api-1", "name": "Orders", "lifecycleState": "STARTED", "definition": "{\"id\":\"api-1\"}"});
        let (id, change) = decode_api_event(&event("PUBLISH_API", payload), "cloud", "DEFAULT", "org", u64::MAX);
        assert_eq!(id, "api-1");
        match change {
            ApiChange::Deploy(source) => {
                assert_eq!(source.environment_id, "env");
                assert_eq!(source.organization_id, "org");
                assert!(matches!(source.definition, DefinitionText::Json(ref t) if t == "{\"id\":\"api-1\"}"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stopped_and_stop_events_undeploy() {
        let stopped = json!({"id": "api-1", "lifecycleState": "STOPPED", "definition": "{}"});
        assert!(matches!(
            decode_api_event(&event("START_API", stopped), "c", "", "", u64::MAX).1,
            ApiChange::Undeploy { .. }
        ));
        assert!(matches!(
            decode_api_event(&event("STOP_API", json!({})), "c", "", "", u64::MAX).1,
            ApiChange::Undeploy { .. }
        ));
        assert!(matches!(
            decode_api_event(&event("GATEWAY_STARTED", json!({})), "c", "", "", u64::MAX).1,
            ApiChange::Ignore
        ));
    }

    #[test]
    fn an_oversized_payload_is_rejected_unparsed() {
        let payload = json!({"id": "big", "definition": "x".repeat(4096)});
        let mut big = event("PUBLISH_API", payload);
        big.properties.insert("api_id".into(), json!("big"));
        match decode_api_event(&big, "cloud", "", "", 1024) {
            (id, ApiChange::Deploy(source)) => {
                assert_eq!(id, "big");
                assert!(
                    matches!(source.definition, DefinitionText::Invalid(ref r) if r.contains("more than --max-definition-bytes (1024)")),
                    "{:?}",
                    source.definition
                );
            }
            _ => panic!("an oversized API is rejected, not skipped"),
        }
    }

    #[test]
    fn broken_payload_becomes_a_visible_rejection() {
        let mut broken = event("PUBLISH_API", json!({}));
        broken.payload = Some("{not json".into());
        match decode_api_event(&broken, "cloud", "", "", u64::MAX).1 {
            ApiChange::Deploy(source) => {
                assert_eq!(source.id, "api-1");
                assert!(
                    matches!(source.definition, DefinitionText::Invalid(ref r) if r.starts_with("the event payload is not JSON"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }
}
