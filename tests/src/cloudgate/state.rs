//! What the sim remembers: APIs and the Gravitee Events describing their latest deployment,
//! subscriptions, API keys, gateway heartbeats, received reports, call statistics and pending faults.
//!
//! Everything here is plain data behind one mutex (no I/O, no awaits), so filtering and paging can be
//! unit-tested without a server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Event types of Gravitee's `EventType` the sim produces for APIs.
pub const PUBLISH_API: &str = "PUBLISH_API";
pub const START_API: &str = "START_API";
pub const STOP_API: &str = "STOP_API";
pub const UNPUBLISH_API: &str = "UNPUBLISH_API";

/// Page size of the bridge searches when `size` is absent (Gravitee's bridge client asks for 100).
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Subscription statuses Gravitee knows; a search naming another is a client bug worth a 400.
pub const SUBSCRIPTION_STATUSES: &[&str] = &["ACCEPTED", "PENDING", "PAUSED", "CLOSED", "REJECTED"];

/// Wall-clock milliseconds since the epoch, the unit of every date on the bridge.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A Gravitee Event as the bridge serialises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON document encoded as a string, as Gravitee stores it.
    pub payload: String,
    pub parent_id: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub environments: Vec<String>,
    pub organizations: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An API as the management side would publish it: the raw definition string is kept as-is so tests
/// can publish malformed definitions and check that clients reject them.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub id: String,
    pub name: String,
    pub environment_id: String,
    pub organization_id: String,
    pub lifecycle_state: String,
    pub definition_version: String,
    pub api_type: String,
    pub definition: String,
}

impl ApiSpec {
    /// Reads id, name, definition version and type from a definition object, with Gravitee's
    /// defaults: v4 names its version `definitionVersion`, v2 `gravitee`; the type defaults to proxy.
    pub fn from_definition(definition: &Value) -> Result<Self, String> {
        let obj = definition.as_object().ok_or("definition must be a JSON object")?;
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("definition.id must be a non-empty string".into()),
        };
        let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            name: text("name").unwrap_or_else(|| id.clone()),
            definition_version: text("definitionVersion")
                .or_else(|| text("gravitee"))
                .unwrap_or_else(|| "4.0.0".into()),
            api_type: text("type").unwrap_or_else(|| "proxy".into()),
            definition: definition.to_string(),
            environment_id: "DEFAULT".into(),
            organization_id: "DEFAULT".into(),
            lifecycle_state: "STARTED".into(),
            id,
        })
    }
}

/// One API and the last event generated for it.
#[derive(Debug, Clone)]
struct ApiRecord {
    spec: ApiSpec,
    deployment_number: u64,
    /// False once unpublished: lifecycle calls then answer 404 until it is published again.
    published: bool,
    latest: Event,
}

/// Lifecycle changes the control API can apply to a published API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Start,
    Stop,
    Unpublish,
}

/// Body of the event searches (`eventsLatest/_search`, `events/_searchLatest`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSearch {
    pub from: Option<i64>,
    pub to: Option<i64>,
    #[serde(default)]
    pub types: Vec<String>,
    pub environments: Option<Vec<String>>,
}

/// Body of `subscriptions/_search`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSearch {
    #[serde(default)]
    pub apis: Vec<String>,
    #[serde(default)]
    pub statuses: Vec<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub environments: Option<Vec<String>>,
}

/// Body of `keys/_findByCriteria`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySearch {
    #[serde(default)]
    pub subscriptions: Vec<String>,
    #[serde(default)]
    pub include_revoked: bool,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub environments: Option<Vec<String>>,
}

/// Gzip NDJSON batches received on `/reports`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Reports {
    /// Authenticated `POST /reports` calls, accepted or not.
    pub requests: u64,
    pub documents: Vec<Value>,
    /// Documents accepted since start; unlike `documents`, never cleared (benchmarks count with it
    /// while clearing the stored documents to bound the sim's memory).
    pub documents_received: u64,
    /// Batches refused whole (wrong headers, bad gzip, a bad line).
    pub rejected: u64,
    /// Compressed bytes received, as on the wire.
    pub bytes: u64,
    /// `type` and `_id` of the stored documents, kept as they arrive: the summary is polled under load
    /// and must not walk every stored document (hundreds of thousands in a benchmark) each time.
    #[serde(skip)]
    index: ReportIndex,
}

#[derive(Debug, Default, Clone)]
struct ReportIndex {
    ids: HashSet<String>,
    by_type: HashMap<String, TypeIndex>,
}

#[derive(Debug, Default, Clone)]
struct TypeIndex {
    documents: usize,
    ids: HashSet<String>,
}

impl Reports {
    /// Stores accepted documents and indexes them.
    pub fn store(&mut self, documents: Vec<Value>) {
        self.documents_received += documents.len() as u64;
        for document in &documents {
            let id = document["_id"].as_str();
            if let Some(id) = id {
                self.index.ids.insert(id.to_owned());
            }
            if let Some(kind) = document["type"].as_str() {
                let entry = self.index.by_type.entry(kind.to_owned()).or_default();
                entry.documents += 1;
                if let Some(id) = id {
                    entry.ids.insert(id.to_owned());
                }
            }
        }
        self.documents.extend(documents);
    }

    /// Drops the stored documents (the counters since start stay).
    pub fn clear_documents(&mut self) {
        self.documents.clear();
        self.index = ReportIndex::default();
    }

    /// Stored documents (of `kind`, when given) and how many distinct `_id`s they hold.
    pub fn counts(&self, kind: Option<&str>) -> (usize, usize) {
        match kind {
            None => (self.documents.len(), self.index.ids.len()),
            Some(kind) => self.index.by_type.get(kind).map_or((0, 0), |t| (t.documents, t.ids.len())),
        }
    }
}

/// Counters the tests assert on.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    /// Cloud Gate calls per route (`"POST /sync/_bridge/events"`), counted before auth and faults.
    pub calls: BTreeMap<String, u64>,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub faulted: u64,
}

/// Which Cloud Gate calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultTarget {
    Sync,
    Reports,
    All,
}

/// A pending fault; `remaining: None` lasts until cleared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default = "all_targets")]
    pub target: FaultTarget,
    pub status: Option<u16>,
    #[serde(rename = "count")]
    pub remaining: Option<u64>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub drop: bool,
}

fn all_targets() -> FaultTarget {
    FaultTarget::All
}

/// What to do to one faulted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAction {
    pub status: Option<u16>,
    pub delay_ms: u64,
    pub drop: bool,
}

/// The sim's whole memory.
#[derive(Debug, Default)]
pub struct Store {
    /// Last event timestamp handed out, so successive events sort strictly even within one ms.
    last_event_ms: i64,
    apis: BTreeMap<String, ApiRecord>,
    subscriptions: BTreeMap<String, Value>,
    keys: BTreeMap<String, Value>,
    heartbeats: BTreeMap<String, Value>,
    pub heartbeat_history: Vec<Value>,
    pub heartbeat_puts: u64,
    pub reports: Reports,
    pub stats: Stats,
    faults: Vec<Fault>,
}

impl Store {
    /// Next event timestamp: now, but always after the previous one, so `updatedAt` orders events
    /// and incremental syncs (`from` = last `to`) never miss one.
    fn next_event_ms(&mut self) -> i64 {
        self.last_event_ms = now_ms().max(self.last_event_ms.saturating_add(1));
        self.last_event_ms
    }

    /// Publishes (or republishes) an API: a new `PUBLISH_API` event replaces its latest.
    pub fn publish_api(&mut self, spec: ApiSpec) -> Event {
        let deployment_number = self.apis.get(&spec.id).map_or(1, |r| r.deployment_number + 1);
        let latest = self.api_event(&spec, PUBLISH_API, deployment_number);
        self.apis
            .insert(spec.id.clone(), ApiRecord { spec, deployment_number, published: true, latest: latest.clone() });
        latest
    }

    /// Applies a lifecycle change to a published API; `None` when unknown or unpublished.
    pub fn change_lifecycle(&mut self, id: &str, change: Lifecycle) -> Option<Event> {
        let mut record = self.apis.get(id).filter(|r| r.published)?.clone();
        let kind = match change {
            Lifecycle::Start => START_API,
            Lifecycle::Stop => STOP_API,
            Lifecycle::Unpublish => UNPUBLISH_API,
        };
        record.spec.lifecycle_state = match change {
            Lifecycle::Start => "STARTED".into(),
            Lifecycle::Stop | Lifecycle::Unpublish => "STOPPED".into(),
        };
        record.deployment_number += 1;
        record.published = change != Lifecycle::Unpublish;
        record.latest = self.api_event(&record.spec, kind, record.deployment_number);
        let event = record.latest.clone();
        self.apis.insert(id.to_owned(), record);
        Some(event)
    }

    /// Builds an API event the way Gravitee's management does: the payload is the API as a JSON
    /// string, whose `definition` is the definition as a JSON string again.
    fn api_event(&mut self, spec: &ApiSpec, kind: &str, deployment_number: u64) -> Event {
        let at = self.next_event_ms();
        let payload = json!({
            "id": spec.id,
            "name": spec.name,
            "environmentId": spec.environment_id,
            "definitionVersion": spec.definition_version,
            "type": spec.api_type,
            "lifecycleState": spec.lifecycle_state,
            "deployedAt": at,
            "definition": spec.definition,
        });
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            payload: payload.to_string(),
            parent_id: None,
            properties: BTreeMap::from([
                ("api_id".to_owned(), spec.id.clone()),
                ("deployment_number".to_owned(), deployment_number.to_string()),
            ]),
            environments: vec![spec.environment_id.clone()],
            organizations: vec![spec.organization_id.clone()],
            created_at: at,
            updated_at: at,
        }
    }

    /// Latest event of every API, for the searches.
    pub fn latest_events(&self) -> impl Iterator<Item = &Event> {
        self.apis.values().map(|r| &r.latest)
    }

    /// Stores a subscription, stamping `updatedAt` (and `id`) when absent; answers what was stored.
    pub fn put_subscription(&mut self, sub: Value) -> Result<Value, String> {
        let sub = stamp(sub)?;
        let id = sub["id"].as_str().unwrap_or_default().to_owned();
        self.subscriptions.insert(id, sub.clone());
        Ok(sub)
    }

    /// Stores an API key, stamping `updatedAt` (and `id`) when absent; answers what was stored.
    pub fn put_key(&mut self, key: Value) -> Result<Value, String> {
        let key = stamp(key)?;
        let id = key["id"].as_str().unwrap_or_default().to_owned();
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    /// Subscriptions matching the search, oldest change first.
    pub fn search_subscriptions(&self, q: &SubscriptionSearch) -> Vec<Value> {
        let mut found: Vec<Value> = self
            .subscriptions
            .values()
            .filter(|s| q.apis.is_empty() || listed(&q.apis, s["api"].as_str()))
            .filter(|s| q.statuses.is_empty() || listed(&q.statuses, s["status"].as_str()))
            .filter(|s| in_window(s["updatedAt"].as_i64().unwrap_or(0), q.from, q.to))
            .cloned()
            .collect();
        sort_by_update(&mut found);
        found
    }

    /// API keys matching the search: by `subscription` or any of `subscriptions` (an empty list
    /// matches every key, as Gravitee's criteria do), revoked ones only when asked.
    pub fn find_keys(&self, q: &KeySearch) -> Vec<Value> {
        let mut found: Vec<Value> = self
            .keys
            .values()
            .filter(|k| {
                q.subscriptions.is_empty()
                    || listed(&q.subscriptions, k["subscription"].as_str())
                    || k["subscriptions"]
                        .as_array()
                        .is_some_and(|subs| subs.iter().any(|s| listed(&q.subscriptions, s.as_str())))
            })
            .filter(|k| q.include_revoked || !k["revoked"].as_bool().unwrap_or(false))
            .filter(|k| in_window(k["updatedAt"].as_i64().unwrap_or(0), q.from, q.to))
            .cloned()
            .collect();
        sort_by_update(&mut found);
        found
    }

    /// Records a heartbeat event (create); answers it with its id.
    pub fn create_heartbeat(&mut self, mut event: Value) -> Value {
        let id = match event.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        event["id"] = Value::String(id.clone());
        self.heartbeats.insert(id, event.clone());
        self.heartbeat_history.push(event.clone());
        event
    }

    /// Replaces a known heartbeat event; `None` when the id was never created.
    pub fn update_heartbeat(&mut self, id: &str, mut event: Value) -> Option<Value> {
        let slot = self.heartbeats.get_mut(id)?;
        event["id"] = Value::String(id.to_owned());
        *slot = event.clone();
        self.heartbeat_puts += 1;
        self.heartbeat_history.push(event.clone());
        Some(event)
    }

    pub fn add_fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Consumes one use of the first pending fault matching the call (faults apply in the order they
    /// were set); counts it.
    pub fn take_fault(&mut self, call: FaultTarget) -> Option<FaultAction> {
        let index = self
            .faults
            .iter()
            .position(|f| f.remaining != Some(0) && (f.target == FaultTarget::All || f.target == call))?;
        let fault = &mut self.faults[index];
        let action = FaultAction { status: fault.status, delay_ms: fault.delay_ms, drop: fault.drop };
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(index);
            }
        }
        self.stats.faulted += 1;
        Some(action)
    }
}

/// Gives a control-API object an `id` (uuid) and `updatedAt` (now) when it lacks them.
fn stamp(mut value: Value) -> Result<Value, String> {
    let obj = value.as_object_mut().ok_or("body must be a JSON object")?;
    match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => {}
        None | Some(Value::Null) => {
            obj.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
        }
        Some(_) => return Err("id must be a non-empty string".into()),
    }
    match obj.get("updatedAt") {
        None | Some(Value::Null) => {
            obj.insert("updatedAt".into(), now_ms().into());
        }
        Some(v) if v.is_i64() => {}
        Some(_) => return Err("updatedAt must be epoch milliseconds".into()),
    }
    Ok(value)
}

fn listed(list: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| list.iter().any(|l| l == v))
}

/// The bridge's date window: `from` ≤ 0 or absent is unbounded below, `to` absent unbounded above;
/// both ends inclusive.
pub fn in_window(at: i64, from: Option<i64>, to: Option<i64>) -> bool {
    from.is_none_or(|f| f <= 0 || at >= f) && to.is_none_or(|t| at <= t)
}

fn sort_by_update(items: &mut [Value]) {
    items.sort_by(|a, b| {
        let key = |v: &Value| (v["updatedAt"].as_i64().unwrap_or(0), v["id"].as_str().map(str::to_owned));
        key(a).cmp(&key(b))
    });
}

/// Filters the latest event of each API by type (empty = any), environment (the given ones must
/// intersect the event's) and `updatedAt` window, sorted by `updatedAt` then id.
pub fn select_events<'a>(
    latest: impl Iterator<Item = &'a Event>,
    q: &EventSearch,
    environments: &[String],
) -> Vec<Event> {
    let mut found: Vec<Event> = latest
        .filter(|e| q.types.is_empty() || q.types.contains(&e.kind))
        .filter(|e| e.environments.iter().any(|env| environments.contains(env)))
        .filter(|e| in_window(e.updated_at, q.from, q.to))
        .cloned()
        .collect();
    found.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    found
}

/// Page `page` (from 0) of `size` items; past the end (or an overflowing offset) is empty.
pub fn page<T: Clone>(items: &[T], page: usize, size: usize) -> Vec<T> {
    page.checked_mul(size)
        .and_then(|start| items.get(start..))
        .map(|rest| rest.iter().take(size).cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, env: &str) -> ApiSpec {
        let mut s = ApiSpec::from_definition(&json!({"id": id, "definitionVersion": "4.0.0"})).unwrap();
        s.environment_id = env.into();
        s
    }

    fn envs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn payload_nests_the_definition_as_a_string() {
        let mut store = Store::default();
        let def = json!({"id": "a", "name": "A", "gravitee": "2.0.0", "proxy": {}});
        let event = store.publish_api(ApiSpec::from_definition(&def).unwrap());
        assert_eq!(event.kind, PUBLISH_API);
        assert_eq!(event.properties["api_id"], "a");
        assert_eq!(event.properties["deployment_number"], "1");
        let payload: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(payload["definitionVersion"], "2.0.0");
        assert_eq!(payload["type"], "proxy");
        assert_eq!(payload["lifecycleState"], "STARTED");
        let inner: Value = serde_json::from_str(payload["definition"].as_str().unwrap()).unwrap();
        assert_eq!(inner, def);
        let wire = serde_json::to_value(&event).unwrap();
        assert!(wire["parentId"].is_null());
        assert_eq!(wire["type"], "PUBLISH_API");
        assert!(wire["updatedAt"].is_i64());
    }

    #[test]
    fn changes_replace_the_latest_with_strictly_later_events() {
        let mut store = Store::default();
        let first = store.publish_api(spec("a", "DEFAULT"));
        let stopped = store.change_lifecycle("a", Lifecycle::Stop).unwrap();
        let started = store.change_lifecycle("a", Lifecycle::Start).unwrap();
        assert!(first.updated_at < stopped.updated_at && stopped.updated_at < started.updated_at);
        assert_ne!(first.id, stopped.id);
        assert_eq!(started.properties["deployment_number"], "3");
        let latest: Vec<_> = store.latest_events().cloned().collect();
        assert_eq!(latest, vec![started]);
        let gone = store.change_lifecycle("a", Lifecycle::Unpublish).unwrap();
        assert_eq!(gone.kind, UNPUBLISH_API);
        assert!(store.change_lifecycle("a", Lifecycle::Start).is_none());
        assert!(store.change_lifecycle("nope", Lifecycle::Stop).is_none());
    }

    #[test]
    fn search_filters_by_type_environment_and_window() {
        let mut store = Store::default();
        let a = store.publish_api(spec("a", "DEFAULT"));
        let b = store.publish_api(spec("b", "other"));
        store.publish_api(spec("c", "DEFAULT"));
        let c = store.change_lifecycle("c", Lifecycle::Stop).unwrap();
        let all = envs(&["DEFAULT", "other"]);

        let q = EventSearch { types: envs(&[PUBLISH_API, START_API]), ..Default::default() };
        let ids: Vec<_> = select_events(store.latest_events(), &q, &all).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);

        let q = EventSearch::default();
        let only_default = select_events(store.latest_events(), &q, &envs(&["DEFAULT"]));
        assert_eq!(only_default, vec![a.clone(), c.clone()]);

        let q = EventSearch { from: Some(b.updated_at), to: Some(c.updated_at), ..Default::default() };
        assert_eq!(select_events(store.latest_events(), &q, &all), vec![b.clone(), c.clone()]);

        let q = EventSearch { from: Some(-1), to: Some(a.updated_at), ..Default::default() };
        assert_eq!(select_events(store.latest_events(), &q, &all), vec![a]);
    }

    #[test]
    fn paging_is_bounded() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(page(&items, 0, 2), vec![0, 1]);
        assert_eq!(page(&items, 2, 2), vec![4]);
        assert!(page(&items, 3, 2).is_empty());
        assert!(page(&items, usize::MAX, 2).is_empty());
    }

    #[test]
    fn keys_match_by_subscription_and_hide_revoked() {
        let mut store = Store::default();
        store.put_key(json!({"id": "k1", "key": "x", "subscription": "s1", "revoked": false})).unwrap();
        store.put_key(json!({"id": "k2", "key": "y", "subscriptions": ["s2", "s3"], "revoked": true})).unwrap();
        let q = |subs: &[&str], include_revoked| KeySearch {
            subscriptions: envs(subs),
            include_revoked,
            ..Default::default()
        };
        let ids = |found: Vec<Value>| found.iter().map(|k| k["id"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(store.find_keys(&q(&["s1"], false))), vec![json!("k1")]);
        assert!(store.find_keys(&q(&["s3"], false)).is_empty());
        assert_eq!(ids(store.find_keys(&q(&["s3"], true))), vec![json!("k2")]);
    }

    #[test]
    fn subscriptions_filter_by_api_status_and_window() {
        let mut store = Store::default();
        store.put_subscription(json!({"id": "s1", "api": "a", "status": "ACCEPTED", "updatedAt": 10})).unwrap();
        store.put_subscription(json!({"id": "s2", "api": "a", "status": "CLOSED", "updatedAt": 20})).unwrap();
        store.put_subscription(json!({"id": "s3", "api": "b", "status": "ACCEPTED", "updatedAt": 30})).unwrap();
        let q = SubscriptionSearch {
            apis: envs(&["a"]),
            statuses: envs(&["ACCEPTED", "CLOSED"]),
            from: Some(15),
            ..Default::default()
        };
        let found = store.search_subscriptions(&q);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["id"], "s2");
        let stamped = store.put_subscription(json!({"api": "c"})).unwrap();
        assert!(stamped["id"].is_string() && stamped["updatedAt"].is_i64());
        assert!(store.put_subscription(json!([1])).is_err());
    }

    #[test]
    fn counted_faults_run_out() {
        let mut store = Store::default();
        store.add_fault(Fault {
            target: FaultTarget::Reports,
            status: Some(503),
            remaining: Some(2),
            delay_ms: 0,
            drop: false,
        });
        assert!(store.take_fault(FaultTarget::Sync).is_none());
        assert_eq!(store.take_fault(FaultTarget::Reports).unwrap().status, Some(503));
        assert!(store.take_fault(FaultTarget::Reports).is_some());
        assert!(store.take_fault(FaultTarget::Reports).is_none());
        assert_eq!(store.stats.faulted, 2);
    }

    #[test]
    fn heartbeats_keep_history() {
        let mut store = Store::default();
        let created = store.create_heartbeat(json!({"type": "GATEWAY_STARTED"}));
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(store.update_heartbeat(&id, json!({"type": "GATEWAY_STARTED", "x": 1})).is_some());
        assert!(store.update_heartbeat("unknown", json!({})).is_none());
        assert_eq!(store.heartbeat_history.len(), 2);
        assert_eq!(store.heartbeat_puts, 1);
    }
}
