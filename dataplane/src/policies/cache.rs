//! `cache`: Gravitee's cache policy 3.0 with its `cache` (in memory) and `cache-redis` resources. The
//! step does not answer by itself: like Gravitee's, which swaps the endpoint invoker for its own, it
//! arms the exchange ([`RequestExchange::cache`]), and the exchange, at the endpoint call, either
//! answers from the cache (the endpoint is not called; response flows still run) or calls the endpoint
//! and stores its answer (status, headers, body) when `responseCondition` holds (by default a 2xx
//! status).
//!
//! As Gravitee's policy: `X-Gravitee-Cache` (else the `cache` query parameter, when the header is not
//! there) `BY_PASS` skips the cache and `REFRESH` calls the endpoint and stores its answer anew; that
//! header or parameter is not sent on. The client's own `Cache-Control` is not read (Gravitee's policy
//! does not). The key is `{api}.{application}.` (the application only for scope APPLICATION), Java's
//! hash of the path, Java's hash of the sorted query parameters, then the rendered `key` template.
//! The method is not in the key (Gravitee's neither): a `HEAD` answer stored first is what a later
//! `GET` of the same URL gets.
//!
//! A `cache-redis` resource's entries live in Redis, reached through the agent ([`RemoteCache`]): the
//! key's parts are joined with `:` (its resource's separator; the in-memory one's is `.`) and an entry
//! is Gravitee's text form of the answer (see [`encode`]), so hgw and Gravitee gateways sharing a Redis
//! serve each other's entries. Reading fails open: an agent or Redis that does not answer is a miss.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Value as Json, json};

use super::el::ElContext;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, invalid};

/// Gravitee's header (and, without it, query parameter) that asks to skip or refresh the cache.
pub const CACHE_ACTION_HEADER: &str = "x-gravitee-cache";
const CACHE_ACTION_PARAM: &str = "cache";
/// The largest answer (body and headers) one entry holds: a larger one is relayed but not stored, so
/// a cache never pins big bodies in memory.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The most bytes one in-memory cache holds in all; the oldest entries go to make room.
const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Separator between the parts of a key: Gravitee's in-memory resource's, and its Redis resource's.
const MEMORY_KEY_SEPARATOR: char = '.';
const REDIS_KEY_SEPARATOR: char = ':';

/// Where the entries of a `cache-redis` resource are read and written: the agent, which holds the
/// resource's Redis. Implemented over gRPC in `crate::agent`.
pub trait RemoteCache: Send + Sync + std::fmt::Debug {
    /// The entry under `key`; `None` for a miss or when it could not be read.
    fn get(&self, api_id: &str, resource_id: &str, key: &str) -> BoxFuture<'static, Option<Bytes>>;
    /// Stores an entry in the background (a failure is logged, never waited for).
    fn put(&self, api_id: &str, resource_id: &str, key: String, value: Vec<u8>, time_to_live: u64);
}

/// Without an agent (tests, tools): every read is a miss, nothing is stored.
#[derive(Debug)]
pub struct NoRemoteCache;

impl RemoteCache for NoRemoteCache {
    fn get(&self, _: &str, _: &str, _: &str) -> BoxFuture<'static, Option<Bytes>> {
        Box::pin(std::future::ready(None))
    }

    fn put(&self, _: &str, _: &str, _: String, _: Vec<u8>, _: u64) {}
}

/// Where a cache step's resource keeps its entries.
#[derive(Debug)]
enum Store {
    Memory(Arc<MemoryStore>),
    /// A `cache-redis` resource: its id, for the agent (which finds it in the API).
    Redis {
        resource_id: String,
    },
}

/// What a cache step needs at the endpoint call.
#[derive(Debug)]
pub struct CacheSettings {
    cache_name: String,
    key: Option<Value>,
    /// Seconds; 0: none from the policy.
    time_to_live: u64,
    use_response_cache_headers: bool,
    application_scope: bool,
    methods: Vec<Method>,
    condition: Option<hgw_el::Expression>,
    /// `None`: the API has no such resource.
    store: Option<Store>,
}

/// A cache step that applies to this request.
#[derive(Debug, Clone)]
pub struct Armed {
    pub settings: Arc<CacheSettings>,
    /// `REFRESH`: the endpoint is called even when an answer is stored.
    pub refresh: bool,
}

/// An answer as stored.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl CachedResponse {
    fn weight(&self) -> usize {
        self.body.len() + self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
    }
}

#[derive(Debug)]
pub struct Cache {
    settings: Arc<CacheSettings>,
}

impl Cache {
    pub fn compile(config: pb::CachePolicy) -> Result<Cache, PolicyError> {
        let key = match config.key.as_str() {
            "" => None,
            _ => Some(Value::compile("cache.key", config.key)?),
        };
        let condition = match config.response_condition.trim() {
            "" => None,
            text => Some(hgw_el::parse(text).map_err(|e| invalid("cache.responseCondition", format!("EL {e}")))?),
        };
        let methods = config
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes()).map_err(|_| invalid("cache.methods", format!("{m:?} is not a method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = match config.resource {
            None => None,
            Some(resource) => match pb::CacheBackend::try_from(resource.backend) {
                Ok(pb::CacheBackend::Redis) => Some(Store::Redis { resource_id: resource.id }),
                Ok(pb::CacheBackend::Memory) => Some(Store::Memory(MemoryStore::shared(&resource))),
                _ => return Err(invalid("cache.resource", "a cache resource of an unknown kind")),
            },
        };
        Ok(Cache {
            settings: Arc::new(CacheSettings {
                cache_name: config.cache_name,
                key,
                time_to_live: config.time_to_live_seconds,
                use_response_cache_headers: config.use_response_cache_headers,
                application_scope: config.application_scope,
                methods,
                condition,
                store,
            }),
        })
    }
}

impl Policy for Cache {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let action = take_action(exchange.parts);
        if action == Some(Action::ByPass) || !self.settings.caches(&exchange.parts.method) {
            return Outcome::Continue;
        }
        if self.settings.store.is_none() {
            return Outcome::Respond(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                format!("No cache has been defined with name {}", self.settings.cache_name),
            ));
        }
        *exchange.cache = Some(Armed { settings: self.settings.clone(), refresh: action == Some(Action::Refresh) });
        Outcome::Continue
    }

    fn uses_el(&self) -> bool {
        self.settings.condition.is_some() || self.settings.key.as_ref().is_some_and(Value::is_template)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ByPass,
    Refresh,
}

/// Gravitee's `lookForAction`: the header when it is there and not empty (then removed), else the
/// query parameter (then removed); a value that is neither action means none.
fn take_action(parts: &mut http::request::Parts) -> Option<Action> {
    let header = parts.headers.get(CACHE_ACTION_HEADER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let value = match header {
        Some(value) if !value.is_empty() => {
            parts.headers.remove(CACHE_ACTION_HEADER);
            Some(value)
        }
        _ => {
            let value = parts.uri.query().filter(|q| q.contains(CACHE_ACTION_PARAM)).and_then(|query| {
                crate::http::query::query_pairs(query).find(|(name, _)| name == CACHE_ACTION_PARAM).map(|(_, v)| v)
            });
            if value.is_some() {
                crate::http::query::strip_query_param(parts, CACHE_ACTION_PARAM);
            }
            value
        }
    };
    match value?.to_uppercase().as_str() {
        "BY_PASS" => Some(Action::ByPass),
        "REFRESH" => Some(Action::Refresh),
        _ => None,
    }
}

impl CacheSettings {
    fn caches(&self, method: &Method) -> bool {
        if self.methods.is_empty() {
            return [Method::GET, Method::OPTIONS, Method::HEAD].contains(method);
        }
        self.methods.contains(method)
    }

    /// Whether the endpoint's answer is stored: the condition (which fails closed), else a 2xx status.
    pub fn stores(&self, el: &ElContext<'_>, status: StatusCode) -> bool {
        match &self.condition {
            Some(condition) => el.holds(condition),
            None => status.is_success(),
        }
    }
}

impl Armed {
    /// The request's key, as Gravitee's `CacheInvoker.hash` builds it.
    pub fn key(&self, api_id: &str, application: &str, uri: &http::Uri, el: &ElContext<'_>) -> String {
        let sep = match self.settings.store {
            Some(Store::Redis { .. }) => REDIS_KEY_SEPARATOR,
            _ => MEMORY_KEY_SEPARATOR,
        };
        let mut key = String::with_capacity(api_id.len() + 64);
        key.push_str(api_id);
        key.push(sep);
        if self.settings.application_scope {
            key.push_str(application);
            key.push(sep);
        }
        key.push_str(&java_hash(uri.path()).to_string());
        key.push(sep);
        key.push_str(&java_hash(&parameters_text(uri.query())).to_string());
        if let Some(template) = &self.settings.key {
            key.push(sep);
            key.push_str(&template.render(el));
        }
        key
    }

    /// The answer stored under `key`, if any. An entry of a `cache-redis` resource that cannot be read
    /// as one is a miss (and is replaced by the next answer stored), as with Gravitee's policy.
    pub async fn lookup(&self, api_id: &str, key: &str, remote: &dyn RemoteCache) -> Option<Arc<CachedResponse>> {
        match self.settings.store.as_ref()? {
            Store::Memory(store) => store.get(key),
            Store::Redis { resource_id } => {
                let value = remote.get(api_id, resource_id, key).await?;
                let decoded = decode(&value);
                if decoded.is_none() {
                    tracing::debug!(api = %api_id, "cache: an entry that is not a cached answer is read as a miss");
                }
                decoded.map(Arc::new)
            }
        }
    }

    /// Stores `response` under `key` for the time the policy, the answer's headers (with
    /// `useResponseCacheHeaders`) and the resource allow.
    pub fn store(&self, api_id: &str, key: String, response: CachedResponse, remote: &dyn RemoteCache) {
        let element_ttl = self.element_time_to_live(&response.headers);
        match &self.settings.store {
            None => {}
            Some(Store::Memory(store)) => store.put(key, response, element_ttl),
            Some(Store::Redis { resource_id }) => {
                if let Some(value) = encode(&response) {
                    remote.put(api_id, resource_id, key, value, element_ttl);
                }
            }
        }
    }

    /// Gravitee's `resolveTimeToLive`: the answer's `s-maxage`, `max-age` or `Expires` when asked to
    /// read them, never longer than the policy's own time to live.
    fn element_time_to_live(&self, headers: &HeaderMap) -> u64 {
        let policy = self.settings.time_to_live;
        if self.settings.use_response_cache_headers
            && let Some(from_headers) = time_to_live_from_headers(headers, SystemTime::now())
            && from_headers <= policy
        {
            return from_headers;
        }
        policy
    }
}

/// Whether Gravitee's policy keeps the body as base64 (`hasBinaryContentType`): the first
/// `Content-Type` is `application/octet-stream` or an `image/*` type.
fn has_binary_content_type(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/octet-stream" || essence.split('/').next() == Some("image")
}

/// An answer in Gravitee's text form (its `CacheResponse` as JSON: `status`, `headers` as name → list
/// of values, `content.buffer` the body as text, base64 for binary content types). `None` for a body
/// that is not UTF-8 under a textual content type: Gravitee would store it mangled; hgw relays it
/// without storing it.
pub fn encode(response: &CachedResponse) -> Option<Vec<u8>> {
    let mut headers = serde_json::Map::new();
    for name in response.headers.keys() {
        let values: Vec<Json> = response
            .headers
            .get_all(name)
            .iter()
            .map(|v| Json::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_owned(), Json::Array(values));
    }
    let content = if has_binary_content_type(&response.headers) {
        base64::engine::general_purpose::STANDARD.encode(&response.body)
    } else {
        std::str::from_utf8(&response.body).ok()?.to_owned()
    };
    let entry = json!({"status": response.status.as_u16(), "headers": headers, "content": {"buffer": content}});
    serde_json::to_vec(&entry).ok()
}

/// Reads an entry in Gravitee's text form (see [`encode`]); `None` when it is not one. Headers that
/// are not valid HTTP are left out.
pub fn decode(value: &[u8]) -> Option<CachedResponse> {
    let entry: Json = serde_json::from_slice(value).ok()?;
    let status = StatusCode::from_u16(u16::try_from(entry.get("status")?.as_u64()?).ok()?).ok()?;
    let mut headers = HeaderMap::new();
    if let Some(map) = entry.get("headers").and_then(Json::as_object) {
        for (name, values) in map {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
            for value in values.as_array().into_iter().flatten().filter_map(Json::as_str) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.append(name.clone(), value);
                }
            }
        }
    }
    let text = match entry.get("content") {
        None | Some(Json::Null) => "",
        Some(content) => match content.get("buffer") {
            None | Some(Json::Null) => "",
            Some(buffer) => buffer.as_str()?,
        },
    };
    let body = if has_binary_content_type(&headers) {
        Bytes::from(base64::engine::general_purpose::STANDARD.decode(text).ok()?)
    } else {
        Bytes::copy_from_slice(text.as_bytes())
    };
    Some(CachedResponse { status, headers, body })
}

/// Seconds an answer may be kept according to its `Cache-Control` (`s-maxage`, then `max-age`, of
/// the first value) or else its `Expires` (RFC 1123, in the future).
fn time_to_live_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    if let Some(cache_control) = headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        let directive = |name: &str| {
            cache_control.split(',').find_map(|part| {
                let (directive, value) = part.split_once('=')?;
                let directive = directive.trim().replace('-', "");
                (directive.eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
            })
        };
        if let Some(age) = directive("smaxage").or_else(|| directive("maxage")) {
            return Some(age);
        }
    }
    let expires = headers.get(http::header::EXPIRES)?.to_str().ok()?;
    let at = httpdate_rfc1123(expires)?;
    at.duration_since(now).ok().map(|left| left.as_secs())
}

/// An RFC 1123 date (`Thu, 01 Dec 1994 16:00:00 GMT`), as Gravitee's `ExpiresUtil` reads it.
fn httpdate_rfc1123(text: &str) -> Option<SystemTime> {
    let mut parts = text.split_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|n| n.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's civil-from-days inverse).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    let seconds = u64::try_from(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Gravitee's parameter component: `name=[v1, v2]` for each name in order, values sorted.
fn parameters_text(query: Option<&str>) -> String {
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in query.map(crate::http::query::query_pairs).into_iter().flatten() {
        parameters.entry(name).or_default().push(value);
    }
    let mut text = String::new();
    for (name, mut values) in parameters {
        values.sort();
        text.push_str(&name);
        text.push_str("=[");
        text.push_str(&values.join(", "));
        text.push(']');
    }
    text
}

/// Java's `String.hashCode` (over UTF-16 units), so keys read as Gravitee's.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// One in-memory cache resource: entries in shards, each behind its own short lock (a lookup or an
/// insert holds one shard's lock for a map operation only), the oldest entries evicted first when the
/// entry count or the byte budget is reached, expired entries dropped when met.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// The resource's time to live; 0: none.
    time_to_live: u64,
    bytes: AtomicUsize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Keys in insertion order (a key may be listed again after a replacement; stale ones skipped).
    order: VecDeque<(String, u64)>,
    next: u64,
}

#[derive(Debug)]
struct Entry {
    response: Arc<CachedResponse>,
    expires: Option<Instant>,
    weight: usize,
    serial: u64,
}

const SHARDS: usize = 16;

/// The live in-memory caches by resource id: steps of one API naming one resource share its cache,
/// and a cache goes away with the last API version using it.
static STORES: LazyLock<Mutex<HashMap<String, Weak<MemoryStore>>>> = LazyLock::new(Default::default);

impl MemoryStore {
    fn shared(resource: &pb::CacheResource) -> Arc<MemoryStore> {
        let mut stores = STORES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(&resource.id).and_then(Weak::upgrade) {
            return store;
        }
        let store = Arc::new(MemoryStore::new(resource.max_entries, resource.time_to_live_seconds));
        stores.insert(resource.id.clone(), Arc::downgrade(&store));
        store
    }

    fn new(max_entries: u64, time_to_live: u64) -> MemoryStore {
        let max_entries = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        let shards = if max_entries < SHARDS * 4 { 1 } else { SHARDS };
        MemoryStore {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(shards),
            time_to_live,
            bytes: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = rustc_hash::FxBuildHasher.build_hasher();
        hasher.write(key.as_bytes());
        let index = (hasher.finish() as usize) % self.shards.len();
        self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedResponse>> {
        let mut shard = self.shard(key);
        let entry = shard.entries.get(key)?;
        if entry.expires.is_some_and(|at| at <= Instant::now()) {
            let weight = entry.weight;
            shard.entries.remove(key);
            self.bytes.fetch_sub(weight, Ordering::Relaxed);
            return None;
        }
        Some(entry.response.clone())
    }

    /// Gravitee's `NodeCacheDelegate.put`: the element's time to live when the resource has none or a
    /// longer one; 0 means the entry does not expire.
    fn put(&self, key: String, response: CachedResponse, element_ttl: u64) {
        let weight = response.weight() + key.len();
        if weight > MAX_ENTRY_BYTES {
            return;
        }
        let ttl = match (self.time_to_live, element_ttl) {
            (0, element) => element,
            (resource, 0) => resource,
            (resource, element) => resource.min(element),
        };
        let expires = (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl));
        let mut shard = self.shard(&key);
        if let Some(old) = shard.entries.remove(&key) {
            self.bytes.fetch_sub(old.weight, Ordering::Relaxed);
        }
        while shard.entries.len() >= self.per_shard
            || (self.bytes.load(Ordering::Relaxed) + weight > MAX_CACHE_BYTES && !shard.entries.is_empty())
        {
            let Some((oldest, serial)) = shard.order.pop_front() else {
                break;
            };
            if shard.entries.get(&oldest).is_some_and(|e| e.serial == serial)
                && let Some(evicted) = shard.entries.remove(&oldest)
            {
                self.bytes.fetch_sub(evicted.weight, Ordering::Relaxed);
            }
        }
        if self.bytes.load(Ordering::Relaxed) + weight > MAX_CACHE_BYTES {
            return;
        }
        shard.next += 1;
        let serial = shard.next;
        shard.order.push_back((key.clone(), serial));
        // Stale order entries (replaced keys) must not pile up without bound.
        if shard.order.len() > shard.entries.len() * 2 + 16 {
            let Shard { entries, order, .. } = &mut *shard;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.serial == *s));
        }
        shard.entries.insert(key, Entry { response: Arc::new(response), expires, weight, serial });
        self.bytes.fetch_add(weight, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static str) -> CachedResponse {
        CachedResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn java_hash_matches_javas() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("/test"), 46_961_985);
        assert_eq!(java_hash("hello"), 99_162_322);
    }

    #[test]
    fn parameters_are_sorted_by_name_then_value() {
        assert_eq!(parameters_text(Some("b=2&a=y&a=x")), "a=[x, y]b=[2]");
        assert_eq!(parameters_text(None), "");
    }

    #[test]
    fn the_oldest_entry_goes_when_full() {
        let store = MemoryStore::new(2, 0);
        store.put("a".into(), response("1"), 0);
        store.put("b".into(), response("2"), 0);
        store.put("c".into(), response("3"), 0);
        assert!(store.get("a").is_none());
        assert_eq!(store.get("c").map(|r| r.body.clone()), Some(Bytes::from_static(b"3")));
    }

    #[test]
    fn a_large_answer_is_not_stored() {
        let store = MemoryStore::new(10, 0);
        let big = CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; MAX_ENTRY_BYTES + 1]),
        };
        store.put("a".into(), big, 0);
        assert!(store.get("a").is_none());
    }

    #[test]
    fn entries_in_gravitees_text_form_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.append("x-many", "1".parse().unwrap());
        headers.append("x-many", "2".parse().unwrap());
        let text = CachedResponse { status: StatusCode::CREATED, headers, body: Bytes::from("{\"a\":\"\u{e9}\"}") };
        let encoded = encode(&text).unwrap();
        let json: Json = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(json["status"], 201);
        assert_eq!(json["headers"]["x-many"], json!(["1", "2"]));
        assert_eq!(json["content"]["buffer"], "{\"a\":\"\u{e9}\"}");
        let decoded = decode(&encoded).unwrap();
        assert_eq!(
            (decoded.status, &decoded.body, decoded.headers.get_all("x-many").iter().count()),
            (text.status, &text.body, 2)
        );

        // Binary content types are kept as base64, as Gravitee's policy does.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "image/png".parse().unwrap());
        let png =
            CachedResponse { status: StatusCode::OK, headers, body: Bytes::from_static(&[0x89, 0x50, 0xff, 0x00]) };
        let encoded = encode(&png).unwrap();
        let json: Json = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(json["content"]["buffer"], "iVD/AA==");
        assert_eq!(decode(&encoded).unwrap().body, png.body);

        // Not UTF-8 under a textual type: not stored (Gravitee would keep it mangled).
        let raw =
            CachedResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(&[0xff]) };
        assert!(encode(&raw).is_none());

        // What Gravitee writes (pretty-printed, its header names) reads back; other values are misses.
        let gravitee = br#"{
  "status" : 200,
  "headers" : {
    "Content-Type" : [ "text/plain" ],
    "Bad Name" : [ "x" ]
  },
  "content" : {
    "buffer" : "hello"
  }
}"#;
        let decoded = decode(gravitee).unwrap();
        assert_eq!((decoded.status, decoded.body.as_ref()), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(decoded.headers.get("content-type").unwrap(), "text/plain");
        assert_eq!(decoded.headers.len(), 1);
        for broken in [&b"not json"[..], br#"{"status": 99}"#, br#"{"status": 200, "content": {"buffer": 5}}"#] {
            assert!(decode(broken).is_none());
        }
        assert_eq!(decode(br#"{"status": 204}"#).unwrap().body.len(), 0);
    }

    #[test]
    fn headers_give_the_time_to_live() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CACHE_CONTROL, "public, max-age=30".parse().unwrap());
        assert_eq!(time_to_live_from_headers(&headers, SystemTime::now()), Some(30));
        headers.insert(http::header::CACHE_CONTROL, "s-maxage=5, max-age=30".parse().unwrap());
        assert_eq!(time_to_live_from_headers(&headers, SystemTime::now()), Some(5));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::EXPIRES, "Thu, 01 Dec 1994 16:00:00 GMT".parse().unwrap());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(786_297_600 - 60);
        assert_eq!(time_to_live_from_headers(&headers, now), Some(60));
    }
}
