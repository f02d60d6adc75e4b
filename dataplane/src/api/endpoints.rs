//! Endpoint groups: the endpoints of an API, their load balancer, their circuit breakers and the
//! failover settings, converted once from `hgw.v1.EndpointGroup`.
//!
//! Everything a request touches here is lock-free: load balancers use an atomic counter or a
//! thread-local RNG, circuit breakers are a few atomics. State lives as long as the API's
//! revision: an update that does not change the API keeps its counters and circuits.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::api::conversion::Invalid;
use crate::http::proxy::ProxyOptions;
use crate::http::tls::TlsOptions;
use crate::http::upstream::{ClientKey, HttpOptions, TlsKey, millis};

/// Gravitee's default `failover.slowCallDuration`: one attempt's time limit.
pub const DEFAULT_SLOW_CALL: Duration = Duration::from_millis(2_000);
/// Gravitee's default `failover.openStateDuration`.
pub const DEFAULT_OPEN_STATE: Duration = Duration::from_millis(10_000);
/// Longest weighted round-robin schedule: weights are scaled down beyond it (memory per group).
const MAX_SCHEDULE: u64 = 4_096;

/// Gravitee's four load-balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancer {
    RoundRobin,
    Random,
    WeightedRoundRobin,
    WeightedRandom,
}

impl LoadBalancer {
    fn weighted(self) -> bool {
        matches!(self, LoadBalancer::WeightedRoundRobin | LoadBalancer::WeightedRandom)
    }
}

/// Retries and circuit breaking (Gravitee's `failover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// Attempts after the first.
    pub max_retries: u32,
    /// One attempt's limit to get response headers; beyond it the attempt fails.
    pub slow_call: Duration,
    pub open_state: Duration,
    /// Consecutive failures that open a circuit; 0 = no circuit breaking.
    pub max_failures: u32,
}

impl From<pb::Failover> for Failover {
    fn from(failover: pb::Failover) -> Self {
        let pb::Failover {
            max_retries,
            slow_call_duration_ms,
            open_state_duration_ms,
            max_failures,
            per_subscription: _,
        } = failover;
        Failover {
            max_retries,
            slow_call: millis(slow_call_duration_ms, DEFAULT_SLOW_CALL),
            open_state: millis(open_state_duration_ms, DEFAULT_OPEN_STATE),
            max_failures,
        }
    }
}

/// Endpoints behind one load balancer: primaries first, then secondaries, each tier balanced alone.
#[derive(Debug)]
pub struct EndpointGroup {
    pub name: String,
    pub load_balancer: LoadBalancer,
    pub failover: Option<Failover>,
    /// Active health checking of this group's endpoints (see `health`).
    pub health_check: Option<crate::api::health::HealthCheck>,
    /// Primaries (`..primaries`) then secondaries, each in definition order.
    endpoints: Vec<Endpoint>,
    primaries: usize,
    tiers: [Tier; 2],
}

/// The balancing state of primaries or secondaries.
#[derive(Debug)]
struct Tier {
    /// Round-robin position.
    next: AtomicUsize,
    /// Weighted round-robin: a smooth interleaving of indexes (weight 0 never appears).
    schedule: Vec<u32>,
    /// Weighted random: running sums of the weights.
    cumulative: Vec<u64>,
}

impl Tier {
    fn new(weights: &[u32]) -> Tier {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                total += u64::from(w);
                total
            })
            .collect();
        Tier { next: AtomicUsize::new(0), schedule: smooth_schedule(weights), cumulative }
    }

    /// The load balancer's choice among `n` endpoints of this tier (`None`: nothing eligible).
    fn pick(&self, lb: LoadBalancer, n: usize) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match lb {
            LoadBalancer::RoundRobin => Some(self.next.fetch_add(1, Ordering::Relaxed) % n),
            LoadBalancer::Random => Some(with_rng(|rng| rng.random_range(0..n))),
            LoadBalancer::WeightedRoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                (!self.schedule.is_empty()).then(|| self.schedule[i % self.schedule.len()] as usize)
            }
            LoadBalancer::WeightedRandom => {
                let total = self.cumulative.last().copied().unwrap_or(0);
                if total == 0 {
                    return None;
                }
                let r = with_rng(|rng| rng.random_range(0..total));
                Some(self.cumulative.partition_point(|&c| c <= r))
            }
        }
    }
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// nginx's smooth weighted round-robin, unrolled once into a schedule of `sum(weights)/gcd` picks
/// (scaled to at most [`MAX_SCHEDULE`]), so a request only needs an atomic increment.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let gcd = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if gcd == 0 {
        return Vec::new();
    }
    let mut weights: Vec<u64> = weights.iter().map(|&w| u64::from(w) / gcd).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        for w in &mut weights {
            if *w > 0 {
                *w = (*w * MAX_SCHEDULE / total).max(1);
            }
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if weights[best] == 0 || (*w > 0 && current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Which calls to an endpoint are gRPC calls (Gravitee's gRPC connectors): sent over HTTP/2 as `POST`
/// with `Content-Type: application/grpc` and `TE: trailers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCalls {
    /// Requests whose Content-Type is `application/grpc` (v4's http-proxy connector).
    ByContentType,
    /// Every call (a v4 `grpc://` target, a v2 `grpc` endpoint).
    All,
}

impl Endpoint {
    /// The client for a call with these request headers, and whether it is a gRPC call.
    pub fn client_for(&self, headers: &http::HeaderMap) -> (&ClientKey, bool) {
        match &self.grpc {
            Some((GrpcCalls::All, key)) => (key, true),
            Some((GrpcCalls::ByContentType, key)) if is_grpc_content_type(headers) => (key, true),
            _ => (&self.client_key, false),
        }
    }

    /// Every client this endpoint may use.
    pub fn client_keys(&self) -> impl Iterator<Item = &ClientKey> {
        std::iter::once(&self.client_key).chain(self.grpc.as_ref().map(|(_, key)| key))
    }
}

/// Whether the media type is `application/grpc` (parameters aside; `application/grpc+proto` is
/// another type, as Gravitee's `MediaType.equals` reads it).
fn is_grpc_content_type(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        value.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("application/grpc"))
    })
}

/// One backend target with its effective client options and circuit.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub target: Target,
    pub http: HttpOptions,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub weight: u32,
    pub secondary: bool,
    /// The pooled client this endpoint uses (see [`crate::api::clients::ClientCache`]).
    pub client_key: ClientKey,
    /// Which calls are gRPC calls, and the HTTP/2 client they use (the same as `client_key` when the
    /// endpoint is configured for HTTP/2 already).
    pub grpc: Option<(GrpcCalls, ClientKey)>,
    pub circuit: Circuit,
    /// Health-check state: a DOWN endpoint is skipped like an open circuit.
    pub health: crate::api::health::EndpointHealth,
}

/// An endpoint target split so the request path can be inserted before the target's own query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Scheme, authority and path, without a trailing '/'.
    base: String,
    query: Option<String>,
    https: bool,
    /// A v2 API's endpoint (Gravitee's v2 connector builds URLs its own way).
    v2: bool,
}

/// Appends the parameters of `first` and then `then` (raw `name=value` pieces joined by `&`) as
/// Gravitee's multi-value map holds them: each name at its first appearance, with every value of
/// that name in order. A short query whose names do not come back after another name keeps its order
/// and costs no allocation.
fn push_parameters(out: &mut String, first: &str, then: Option<&str>) {
    /// Above this many pieces the order check is skipped (it is quadratic) and the map is built.
    const SCAN_LIMIT: usize = 32;
    fn name(piece: &str) -> &str {
        piece.split_once('=').map_or(piece, |(name, _)| name)
    }
    let pieces = || first.split('&').chain(then.into_iter().flat_map(|t| t.split('&'))).filter(|p| !p.is_empty());
    let mut previous: Option<&str> = None;
    let mut ordered = true;
    for (i, piece) in pieces().enumerate() {
        let current = name(piece);
        if i >= SCAN_LIMIT
            || (previous.is_some_and(|p| p != current) && pieces().take(i).any(|earlier| name(earlier) == current))
        {
            ordered = false;
            break;
        }
        previous = Some(current);
    }
    let mut separator = "";
    let mut push = |piece: &str| {
        out.push_str(separator);
        out.push_str(piece);
        separator = "&";
    };
    if ordered {
        pieces().for_each(&mut push);
        return;
    }
    let mut list: Vec<(usize, &str)> = Vec::new();
    let mut first_seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, piece) in pieces().enumerate() {
        let at = *first_seen.entry(name(piece)).or_insert(i);
        list.push((at, piece));
    }
    // Stable: values of one name stay in order.
    list.sort_by_key(|(at, _)| *at);
    list.into_iter().for_each(|(_, piece)| push(piece));
}

impl Target {
    /// Accepts an absolute `http://` or `https://` URL with a host (userinfo is dropped: see
    /// [`Target::parse_with_credentials`]).
    pub fn parse(target: &str) -> Result<Target, Invalid> {
        Target::parse_with_credentials(target).map(|(target, _)| target)
    }

    /// Like [`Target::parse`], and answers the `Authorization: Basic` value of the target's userinfo
    /// (`http://user:password@host`), which never stays in the URL: the agent already moves it into
    /// the endpoint's headers; this keeps a target from another source from leaking it into analytics,
    /// logs or `/config`. Error messages show the target with its userinfo masked.
    pub fn parse_with_credentials(target: &str) -> Result<(Target, Option<String>), Invalid> {
        let target = target.trim();
        let invalid = || Invalid::Target(crate::telemetry::redact::redact_userinfo(target).into_owned());
        let (target, userinfo) = crate::telemetry::redact::split_userinfo(target);
        let target = target.as_ref();
        let uri: http::Uri = target.parse().map_err(|_| invalid())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid()),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid());
        }
        let without_fragment = target.split('#').next().unwrap_or(target);
        let (base, query) = match without_fragment.split_once('?') {
            Some((base, query)) => (base, Some(query.to_owned()).filter(|q| !q.is_empty())),
            None => (without_fragment, None),
        };
        let target = Target { base: base.trim_end_matches('/').to_owned(), query, https, v2: false };
        Ok((target, userinfo.map(crate::telemetry::redact::basic_authorization)))
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The upstream URL for a request's path after the context path and its query, as Gravitee
    /// builds it. v4 (the http-proxy endpoint): target path + request path, then the request's
    /// parameters and the target's in one map: names in order of first appearance, each with all its
    /// values (the request's first). A v2 API (Gravitee's HTTP connector) appends the request path to
    /// the whole target, query included, then the request's parameters (grouped the same way) after
    /// `&` or `?`. Parameters keep their encoding as sent.
    pub fn url_for(&self, path_info: &str, query: Option<&str>) -> String {
        let query = query.filter(|q| !q.is_empty());
        let target_query = self.query.as_deref();
        let mut url = String::with_capacity(
            self.base.len() + path_info.len() + query.map_or(0, str::len) + target_query.map_or(0, str::len) + 2,
        );
        url.push_str(&self.base);
        if self.v2 {
            if let Some(q) = target_query {
                url.push('?');
                url.push_str(q);
            }
            url.push_str(path_info);
            if let Some(q) = query {
                url.push(if target_query.is_some() { '&' } else { '?' });
                push_parameters(&mut url, q, None);
            }
            return url;
        }
        url.push_str(path_info);
        match (query, target_query) {
            (Some(q), target) => {
                url.push('?');
                push_parameters(&mut url, q, target);
            }
            (None, Some(target)) => {
                url.push('?');
                push_parameters(&mut url, target, None);
            }
            (None, None) => {}
        }
        url
    }

    /// This target as a v2 API's endpoint builds URLs (see [`Target::url_for`]).
    pub fn for_v2(mut self) -> Target {
        self.v2 = true;
        self
    }

    /// The target as configured (without its trailing '/').
    pub fn display(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.base),
            None => self.base.clone(),
        }
    }
}

/// A per-endpoint circuit breaker: closed → (max failures in a row) → open for `open_state` →
/// half-open: one trial call, whose outcome closes or reopens it.
#[derive(Debug)]
pub struct Circuit {
    max_failures: u32,
    open_state: Duration,
    /// Time origin of `open_until`.
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds after `epoch` (+1) until which the circuit is open; 0 = closed.
    open_until: AtomicU64,
    /// The half-open trial call is out.
    trial: AtomicBool,
}

/// What [`Circuit::acquire`] granted; give it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Closed,
    /// The one call of the half-open state.
    Trial,
}

impl Circuit {
    /// `max_failures` 0 makes a circuit that never opens.
    pub fn new(max_failures: u32, open_state: Duration) -> Circuit {
        Circuit {
            max_failures,
            open_state,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// May a call go to this endpoint now? Half-open grants one trial to the first caller only.
    pub fn acquire(&self, now: Instant) -> Option<Permit> {
        if self.max_failures == 0 {
            return Some(Permit::Closed);
        }
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit::Closed);
        }
        if self.now_ms(now) < until {
            return None;
        }
        self.trial.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| Permit::Trial)
    }

    /// Whether calls are refused now (open, or half-open with its trial out).
    pub fn is_open(&self, now: Instant) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && (self.now_ms(now) < until || self.trial.load(Ordering::Acquire))
    }

    /// Gives a permit back without an outcome (the call never reached the endpoint).
    pub fn release(&self, permit: Permit) {
        if permit == Permit::Trial {
            self.trial.store(false, Ordering::Release);
        }
    }

    pub fn on_success(&self, permit: Permit) {
        if self.max_failures == 0 {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        if permit == Permit::Trial {
            self.open_until.store(0, Ordering::Release);
            self.trial.store(false, Ordering::Release);
        }
    }

    pub fn on_failure(&self, permit: Permit, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let reopen = match permit {
            Permit::Trial => true,
            Permit::Closed => self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= self.max_failures,
        };
        if reopen {
            self.failures.store(0, Ordering::Relaxed);
            let until = self.now_ms(now).saturating_add(u64::try_from(self.open_state.as_millis()).unwrap_or(u64::MAX));
            self.open_until.store(until, Ordering::Release);
            self.trial.store(false, Ordering::Release);
            tracing::debug!(open_ms = self.open_state.as_millis() as u64, "endpoint circuit opened");
        }
    }
}

/// Endpoints a request already tried (indexes into the group), so a retry moves on.
#[derive(Debug, Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        if !self.0.contains(&index) {
            self.0.push(index);
        }
    }

    fn contains(&self, index: usize) -> bool {
        self.0.contains(&index)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An endpoint chosen for one attempt.
#[derive(Debug)]
pub struct Selected<'a> {
    pub index: usize,
    pub endpoint: &'a Endpoint,
    pub permit: Permit,
}

impl EndpointGroup {
    /// Every endpoint, primaries first.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint for the next attempt: the load balancer's pick among available primaries not yet
    /// tried, else among secondaries; when every available endpoint was tried, tried ones again.
    /// `None` when nothing is available (every circuit open).
    pub fn select(&self, tried: &Tried, now: Instant) -> Option<Selected<'_>> {
        let tiers = [(0, self.primaries), (self.primaries, self.endpoints.len())];
        for skip_tried in [true, false] {
            if !skip_tried && tried.is_empty() {
                break;
            }
            for (tier, &(start, end)) in self.tiers.iter().zip(tiers.iter()) {
                if let Some(selected) = self.select_in(tier, start, end, tried, skip_tried, now) {
                    return Some(selected);
                }
            }
        }
        None
    }

    /// The endpoint called `name` in this group, when its circuit lets a call through (Gravitee's
    /// endpoint reference: that endpoint and no other).
    pub fn select_named(&self, name: &str, now: Instant) -> Option<Option<Selected<'_>>> {
        let index = self.endpoints.iter().position(|e| e.name == name)?;
        let endpoint = &self.endpoints[index];
        Some(endpoint.circuit.acquire(now).map(|permit| Selected { index, endpoint, permit }))
    }

    fn select_in(
        &self,
        tier: &Tier,
        start: usize,
        end: usize,
        tried: &Tried,
        skip_tried: bool,
        now: Instant,
    ) -> Option<Selected<'_>> {
        let n = end - start;
        let first = tier.pick(self.load_balancer, n)?;
        // The pick first, then the others in order: the first eligible one wins.
        (0..n).map(|k| start + (first + k) % n).find_map(|index| {
            let endpoint = &self.endpoints[index];
            if (self.load_balancer.weighted() && endpoint.weight == 0)
                || (skip_tried && tried.contains(index))
                || !endpoint.health.is_up()
            {
                return None;
            }
            endpoint.circuit.acquire(now).map(|permit| Selected { index, endpoint, permit })
        })
    }
}

/// Converts the first endpoint group; errors carry the field path inside `hgw.v1.Api`.
/// `v2`: the group belongs to a v2 API (its endpoints build URLs as Gravitee's v2 connector does).
pub fn convert_group(
    group: pb::EndpointGroup,
    failover: Option<pb::Failover>,
    v2: bool,
) -> Result<EndpointGroup, (String, Invalid)> {
    let pb::EndpointGroup { name, load_balancer, endpoints, health_check } = group;
    let health_check = health_check
        .map(crate::api::health::HealthCheck::try_from)
        .transpose()
        .map_err(|reason| ("endpoint_groups[0].health_check".to_owned(), Invalid::HealthCheck(reason)))?;
    let load_balancer = match pb::LoadBalancer::try_from(load_balancer) {
        // Unspecified is proto3's zero: Gravitee's default load balancer is round-robin.
        Ok(pb::LoadBalancer::RoundRobin | pb::LoadBalancer::Unspecified) => LoadBalancer::RoundRobin,
        Ok(pb::LoadBalancer::Random) => LoadBalancer::Random,
        Ok(pb::LoadBalancer::WeightedRoundRobin) => LoadBalancer::WeightedRoundRobin,
        Ok(pb::LoadBalancer::WeightedRandom) => LoadBalancer::WeightedRandom,
        Err(_) => {
            return Err(("endpoint_groups[0].load_balancer".into(), Invalid::LoadBalancer(load_balancer.to_string())));
        }
    };
    let failover = failover.map(Failover::from);
    let max_failures = failover.map_or(0, |f| f.max_failures);
    let open_state = failover.map_or(DEFAULT_OPEN_STATE, |f| f.open_state);
    let mut converted = Vec::with_capacity(endpoints.len());
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let field = |f: &str| format!("endpoint_groups[0].endpoints[{i}].{f}");
        let pb::Endpoint { name, target, weight, secondary, http, headers, tls, proxy, grpc } = endpoint;
        let (target, credentials) =
            Target::parse_with_credentials(&target).map_err(|reason| (field("target"), reason))?;
        let target = if v2 { target.for_v2() } else { target };
        let mut headers = headers
            .into_iter()
            .map(|pb::Header { name, value }| {
                match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                    (Ok(n), Ok(v)) => Ok((n, v)),
                    _ => Err((field("headers"), Invalid::Header(name))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // An Authorization header configured on the endpoint wins over the target's userinfo.
        if let Some(credentials) = credentials
            && !headers.iter().any(|(name, _)| name == http::header::AUTHORIZATION)
        {
            let mut value = HeaderValue::from_str(&credentials)
                .map_err(|_| (field("target"), Invalid::Header("Authorization".into())))?;
            value.set_sensitive(true);
            headers.push((http::header::AUTHORIZATION, value));
        }
        let http = HttpOptions::from(http);
        // TLS options only matter for https targets; those always get some (verifying by default).
        let tls = if target.is_https() {
            let options = TlsOptions::try_from(tls.unwrap_or_default()).map_err(|e| (field("tls"), e.into()))?;
            if options.trust_all {
                tracing::warn!(endpoint = %name, "trustAll: this endpoint's certificate is not verified");
            }
            Some(TlsKey::new(Arc::new(options)))
        } else {
            None
        };
        let proxy = proxy
            .map(|proxy| ProxyOptions::try_from(proxy).map(Arc::new))
            .transpose()
            .map_err(|reason| (field("proxy"), Invalid::Proxy(reason)))?;
        let grpc = match pb::GrpcCalls::try_from(grpc) {
            Ok(pb::GrpcCalls::Unspecified) => None,
            Ok(pb::GrpcCalls::ByContentType) => Some(GrpcCalls::ByContentType),
            Ok(pb::GrpcCalls::All) => Some(GrpcCalls::All),
            Err(_) => return Err((field("grpc"), Invalid::Grpc(grpc))),
        };
        let grpc = grpc.map(|calls| {
            let http2 = HttpOptions { http2: true, ..http };
            (calls, ClientKey::new(&http2, target.is_https(), tls.clone(), proxy.clone()))
        });
        let client_key = ClientKey::new(&http, target.is_https(), tls, proxy);
        converted.push(Endpoint {
            name,
            target,
            http,
            headers,
            weight,
            secondary,
            client_key,
            grpc,
            circuit: Circuit::new(max_failures, open_state),
            health: crate::api::health::EndpointHealth::default(),
        });
    }
    // A group may have no endpoint: a v2 API that defines none, which Gravitee's emulation engine
    // deploys and fails every call of as a connection error (see `invoke`).
    // Stable: definition order within each tier.
    converted.sort_by_key(|e| e.secondary);
    let primaries = converted.iter().filter(|e| !e.secondary).count();
    let weights: Vec<u32> = converted.iter().map(|e| e.weight).collect();
    let tiers = [Tier::new(&weights[..primaries]), Tier::new(&weights[primaries..])];
    Ok(EndpointGroup { name, load_balancer, failover, health_check, endpoints: converted, primaries, tiers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(target: &str, weight: u32, secondary: bool) -> pb::Endpoint {
        pb::Endpoint { name: target.into(), target: target.into(), weight, secondary, ..Default::default() }
    }

    fn group(lb: pb::LoadBalancer, endpoints: Vec<pb::Endpoint>, failover: Option<pb::Failover>) -> EndpointGroup {
        let group = pb::EndpointGroup { name: "g".into(), load_balancer: lb as i32, endpoints, health_check: None };
        convert_group(group, failover, false).unwrap()
    }

    /// Picks `n` times (no retries) and counts picks per target.
    fn distribution(g: &EndpointGroup, n: usize) -> Vec<usize> {
        let mut counts = vec![0; g.endpoints().len()];
        let now = Instant::now();
        for _ in 0..n {
            counts[g.select(&Tried::default(), now).unwrap().index] += 1;
        }
        counts
    }

    fn share(count: usize, n: usize) -> f64 {
        count as f64 / n as f64
    }

    #[test]
    fn round_robin_alternates_and_ignores_weights() {
        let g = group(
            pb::LoadBalancer::RoundRobin,
            vec![endpoint("http://a", 1, false), endpoint("http://b", 5, false)],
            None,
        );
        let now = Instant::now();
        let picks: Vec<usize> = (0..4).map(|_| g.select(&Tried::default(), now).unwrap().index).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn random_is_uniform() {
        let g = group(
            pb::LoadBalancer::Random,
            vec![endpoint("http://a", 1, false), endpoint("http://b", 1, false), endpoint("http://c", 1, false)],
            None,
        );
        for count in distribution(&g, 10_000) {
            assert!((share(count, 10_000) - 1.0 / 3.0).abs() < 0.03, "{count}");
        }
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        let g = group(
            pb::LoadBalancer::WeightedRoundRobin,
            vec![endpoint("http://a", 1, false), endpoint("http://b", 3, false), endpoint("http://zero", 0, false)],
            None,
        );
        assert_eq!(distribution(&g, 10_000), [2_500, 7_500, 0]);
        // Smooth: never a long run of the heavy endpoint.
        assert_eq!(g.tiers[0].schedule, [1, 0, 1, 1]);
        assert_eq!(smooth_schedule(&[2, 4]), [1, 0, 1]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
        assert_eq!(smooth_schedule(&[1, 100_000]).len() as u64, MAX_SCHEDULE);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let g = group(
            pb::LoadBalancer::WeightedRandom,
            vec![endpoint("http://a", 1, false), endpoint("http://zero", 0, false), endpoint("http://b", 3, false)],
            None,
        );
        let counts = distribution(&g, 10_000);
        assert!((share(counts[0], 10_000) - 0.25).abs() < 0.03, "{counts:?}");
        assert!((share(counts[2], 10_000) - 0.75).abs() < 0.03, "{counts:?}");
        assert_eq!(counts[1], 0, "weight 0 is never selected");
    }

    #[test]
    fn secondaries_serve_only_when_primaries_cannot() {
        let failover =
            pb::Failover { max_retries: 1, max_failures: 1, open_state_duration_ms: 1_000, ..Default::default() };
        let g = group(
            pb::LoadBalancer::RoundRobin,
            vec![endpoint("http://backup", 1, true), endpoint("http://a", 1, false)],
            Some(failover),
        );
        let now = Instant::now();
        assert_eq!(g.endpoints()[0].target.display(), "http://a", "primaries first");
        assert_eq!(distribution(&g, 10), [10, 0]);
        // A retry after the primary failed goes to the secondary.
        let mut tried = Tried::default();
        tried.insert(0);
        assert_eq!(g.select(&tried, now).unwrap().index, 1);
        // The primary's circuit opens: the secondary serves first attempts too.
        g.endpoints()[0].circuit.on_failure(Permit::Closed, now);
        assert_eq!(g.select(&Tried::default(), now).unwrap().index, 1);
        // Everything open: nothing to select.
        g.endpoints()[1].circuit.on_failure(Permit::Closed, now);
        assert!(g.select(&Tried::default(), now).is_none());
    }

    #[test]
    fn retries_move_on_then_reuse() {
        let g = group(
            pb::LoadBalancer::RoundRobin,
            vec![endpoint("http://a", 1, false), endpoint("http://b", 1, false)],
            None,
        );
        let now = Instant::now();
        let mut tried = Tried::default();
        let first = g.select(&tried, now).unwrap().index;
        tried.insert(first);
        let second = g.select(&tried, now).unwrap().index;
        assert_ne!(first, second);
        tried.insert(second);
        assert!(g.select(&tried, now).is_some(), "all tried: tried ones are reused");
    }

    #[tokio::test(start_paused = true)]
    async fn circuit_opens_half_opens_and_closes() {
        let circuit = Circuit::new(3, Duration::from_secs(10));
        let now = Instant::now;
        for _ in 0..2 {
            let permit = circuit.acquire(now()).unwrap();
            circuit.on_failure(permit, now());
        }
        // A success resets the count of consecutive failures.
        circuit.on_success(circuit.acquire(now()).unwrap());
        for _ in 0..2 {
            circuit.on_failure(circuit.acquire(now()).unwrap(), now());
        }
        assert!(!circuit.is_open(now()));
        circuit.on_failure(circuit.acquire(now()).unwrap(), now());
        assert!(circuit.is_open(now()));
        assert_eq!(circuit.acquire(now()), None);

        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(circuit.acquire(now()), None, "still open");
        tokio::time::advance(Duration::from_millis(2)).await;
        // Half-open: exactly one trial.
        assert_eq!(circuit.acquire(now()), Some(Permit::Trial));
        assert_eq!(circuit.acquire(now()), None);
        assert!(circuit.is_open(now()));
        // The trial fails: open again for the whole duration.
        circuit.on_failure(Permit::Trial, now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(circuit.acquire(now()), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The next trial succeeds: closed.
        let trial = circuit.acquire(now()).unwrap();
        assert_eq!(trial, Permit::Trial);
        circuit.on_success(trial);
        assert_eq!(circuit.acquire(now()), Some(Permit::Closed));
        assert_eq!(circuit.acquire(now()), Some(Permit::Closed), "closed grants every caller");
    }

    #[test]
    fn without_max_failures_circuits_never_open() {
        let circuit = Circuit::new(0, Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..100 {
            circuit.on_failure(Permit::Closed, now);
        }
        assert_eq!(circuit.acquire(now), Some(Permit::Closed));
    }

    #[test]
    fn conversion_errors_name_the_field() {
        let reason = |endpoints: Vec<pb::Endpoint>, lb: i32| {
            let group = pb::EndpointGroup { name: "g".into(), load_balancer: lb, endpoints, health_check: None };
            let (field, reason) = convert_group(group, None, false).unwrap_err();
            format!("{field}: {reason}")
        };
        assert_eq!(
            reason(vec![endpoint("http://a", 1, false)], 99),
            "endpoint_groups[0].load_balancer: load balancer 99 not supported by this dataplane"
        );
        assert!(reason(vec![endpoint("ftp://a", 1, false)], 1).starts_with("endpoint_groups[0].endpoints[0].target"));
        let with_password = reason(vec![endpoint("ftp://u:SECRETPW@a", 1, false)], 1);
        assert!(!with_password.contains("SECRETPW"), "{with_password}");
        let mut bad_tls = endpoint("https://a", 1, false);
        bad_tls.tls = Some(pb::TlsOptions { trusted_ca_pem: "junk".into(), ..Default::default() });
        let bad_tls = reason(vec![bad_tls], 1);
        assert!(bad_tls.starts_with("endpoint_groups[0].endpoints[0].tls: trusted CA PEM"), "{bad_tls}");
        // A group without endpoints converts (calls to it fail as connection errors, see `invoke`).
        let empty = pb::EndpointGroup { name: "g".into(), load_balancer: 1, endpoints: vec![], health_check: None };
        let empty = convert_group(empty, None, false).unwrap();
        assert!(empty.endpoints().is_empty() && empty.select(&Tried::default(), Instant::now()).is_none());
    }

    #[test]
    fn target_userinfo_becomes_basic_credentials_and_leaves_the_url() {
        let convert = |target: &str, headers: Vec<pb::Header>| {
            let mut e = endpoint(target, 1, false);
            e.headers = headers;
            let group =
                pb::EndpointGroup { name: "g".into(), load_balancer: 0, endpoints: vec![e], health_check: None };
            convert_group(group, None, false).unwrap().endpoints.remove(0)
        };
        let e = convert("http://u:pw@backend:8080/base", Vec::new());
        assert_eq!(e.target.display(), "http://backend:8080/base");
        assert_eq!(e.target.url_for("/x", Some("a=1")), "http://backend:8080/base/x?a=1");
        let auth: Vec<_> = e.headers.iter().filter(|(n, _)| n == http::header::AUTHORIZATION).collect();
        assert_eq!(auth.len(), 1);
        assert_eq!(auth[0].1, "Basic dTpwdw==");
        assert!(auth[0].1.is_sensitive());
        // An Authorization header configured on the endpoint wins.
        let configured = pb::Header { name: "Authorization".into(), value: "Bearer t".into() };
        let e = convert("http://u:pw@backend", vec![configured]);
        let auth: Vec<_> = e.headers.iter().filter(|(n, _)| n == http::header::AUTHORIZATION).collect();
        assert_eq!((auth.len(), auth[0].1.to_str().unwrap()), (1, "Bearer t"));
        assert_eq!(e.target.display(), "http://backend");
    }

    #[test]
    fn grpc_calls_take_an_http2_client() {
        let with = |calls: pb::GrpcCalls| {
            let mut e = endpoint("http://b:80", 1, false);
            e.grpc = calls as i32;
            group(pb::LoadBalancer::RoundRobin, vec![e], None)
        };
        let mut grpc = http::HeaderMap::new();
        grpc.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("Application/gRPC; charset=x"));
        let mut other = http::HeaderMap::new();
        other.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc+proto"));
        let v4 = with(pb::GrpcCalls::ByContentType);
        let e = &v4.endpoints()[0];
        let (key, is_grpc) = e.client_for(&grpc);
        assert!(is_grpc && key.h2c && !e.client_key.h2c);
        assert_eq!(e.client_for(&other), (&e.client_key, false));
        assert_eq!(e.client_keys().count(), 2);
        let all = with(pb::GrpcCalls::All);
        assert!(all.endpoints()[0].client_for(&other).1);
        let none = with(pb::GrpcCalls::Unspecified);
        assert!(!none.endpoints()[0].client_for(&grpc).1);
        assert_eq!(none.endpoints()[0].client_keys().count(), 1);
    }
}
