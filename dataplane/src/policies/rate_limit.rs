//! `rate-limit`, `quota` and `spike-arrest`, counted in this dataplane (the agent-backed, cluster-wide
//! counters are a later step).
//!
//! Gravitee's semantics: a counter per key `ratelimit:{plan}{subscription}[:{key}]:{rl|q|sa}`; its window
//! starts at the first request and resets `period` later (not clock-aligned); a request is allowed while
//! the counter, after counting it, is `<= limit`. Spike arrest cuts the period into slices of
//! `period/limit` (at least 100 ms, allowing proportionally more per slice).

use std::collections::HashMap;
use std::sync::Mutex;

use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, invalid};

/// Spike arrest never counts in slices shorter than this (Gravitee's minimum).
const MIN_SLICE_MS: u64 = 100;
/// Counters kept before expired windows are swept (bounded memory with per-client key-less keys).
const SWEEP_AT: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RateLimit,
    Quota,
    SpikeArrest,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::RateLimit => "rl",
            Kind::Quota => "q",
            Kind::SpikeArrest => "sa",
        }
    }

    fn error_key(self) -> &'static str {
        match self {
            Kind::RateLimit => "RATE_LIMIT_TOO_MANY_REQUESTS",
            Kind::Quota => "QUOTA_TOO_MANY_REQUESTS",
            Kind::SpikeArrest => "SPIKE_ARREST_TOO_MANY_REQUESTS",
        }
    }

    fn headers(self) -> [HeaderName; 3] {
        let names = match self {
            Kind::RateLimit => ["x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"],
            Kind::Quota => ["x-quota-limit", "x-quota-remaining", "x-quota-reset"],
            Kind::SpikeArrest => ["x-spike-arrest-limit", "x-spike-arrest-remaining", "x-spike-arrest-reset"],
        };
        names.map(HeaderName::from_static)
    }
}

/// One counting window.
#[derive(Debug, Clone, Copy)]
struct Window {
    counter: u64,
    /// Epoch milliseconds when the window ends.
    reset_at: i64,
}

/// The dataplane's local counters, shared by every rate-limiting step (keys include the kind).
#[derive(Debug, Default)]
pub struct LocalCounters {
    windows: Mutex<HashMap<String, Window>>,
}

impl LocalCounters {
    /// Counts one request on `key`; returns the window after counting.
    fn increment(&self, key: &str, period_ms: u64, now_ms: i64) -> Window {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= SWEEP_AT && !windows.contains_key(key) {
            windows.retain(|_, w| w.reset_at > now_ms);
        }
        let window =
            windows.entry(key.to_owned()).or_insert(Window { counter: 0, reset_at: now_ms + period_ms as i64 });
        if window.reset_at <= now_ms {
            *window = Window { counter: 0, reset_at: now_ms + period_ms as i64 };
        }
        window.counter += 1;
        *window
    }

    pub fn len(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub struct RateLimit {
    kind: Kind,
    /// Allowed per counting window (for spike arrest: per slice).
    limit: u64,
    /// Counting window (for spike arrest: the slice).
    window_ms: u64,
    /// Custom key: constant or an EL template (e.g. a client header).
    key: Value,
    use_key_only: bool,
    add_headers: bool,
    message: String,
}

impl RateLimit {
    pub fn compile(config: pb::RateLimitPolicy) -> Result<RateLimit, PolicyError> {
        let pb::RateLimitPolicy { kind, limit, period_time, period_unit, period_ms, key, use_key_only, add_headers } =
            config;
        let kind = match pb::RateLimitKind::try_from(kind) {
            Ok(pb::RateLimitKind::RateLimit) => Kind::RateLimit,
            Ok(pb::RateLimitKind::Quota) => Kind::Quota,
            Ok(pb::RateLimitKind::SpikeArrest) => Kind::SpikeArrest,
            _ => return Err(invalid("rate-limit.kind", format!("unknown kind {kind}"))),
        };
        if period_ms == 0 {
            return Err(invalid("rate-limit.period", "the period must be longer than 0 ms"));
        }
        let unit = period_unit.to_ascii_lowercase();
        let (limit, window_ms, message) = match kind {
            Kind::SpikeArrest => {
                let (slice_ms, slice_limit) = spike_slice(limit, period_ms);
                (
                    slice_limit,
                    slice_ms,
                    format!("Spike limit exceeded! You reached the limit of {slice_limit} requests per {slice_ms} ms."),
                )
            }
            Kind::RateLimit => (
                limit,
                period_ms,
                format!("Rate limit exceeded! You reached the limit of {limit} requests per {period_time} {unit}"),
            ),
            Kind::Quota => (
                limit,
                period_ms,
                format!("Quota exceeded! You reached the limit of {limit} requests per {period_time} {unit}"),
            ),
        };
        let key = Value::compile("rate-limit.key", key)?;
        Ok(RateLimit { kind, limit, window_ms, key, use_key_only, add_headers, message })
    }

    /// Gravitee's counter key (`key` is the rendered custom key).
    fn counter_key(&self, plan: &str, subscription: &str, key: &str) -> String {
        let suffix = self.kind.suffix();
        match (self.use_key_only && !key.is_empty(), key.is_empty()) {
            (true, _) => format!("ratelimit:{key}:{suffix}"),
            (false, true) => format!("ratelimit:{plan}{subscription}:{suffix}"),
            (false, false) => format!("ratelimit:{plan}{subscription}:{key}:{suffix}"),
        }
    }
}

/// Spike arrest's slice: `(slice period ms, requests per slice)`.
fn spike_slice(limit: u64, period_ms: u64) -> (u64, u64) {
    if limit == 0 {
        return (period_ms, 0);
    }
    let slice = period_ms as f64 / limit as f64;
    if slice < MIN_SLICE_MS as f64 {
        let per_slice = (MIN_SLICE_MS as f64 / slice).round().max(1.0);
        ((slice * per_slice) as u64, per_slice as u64)
    } else {
        (slice as u64, 1)
    }
}

impl Policy for RateLimit {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let custom = self.key.render(&exchange.el());
        let key = self.counter_key(exchange.plan_id, exchange.subscription_id, &custom);
        let window = exchange.counters.increment(&key, self.window_ms, exchange.now_ms);
        let remaining = self.limit.saturating_sub(window.counter);
        let headers: Vec<(HeaderName, HeaderValue)> = if self.add_headers {
            let [limit, left, reset] = self.kind.headers();
            vec![
                (limit, HeaderValue::from(self.limit)),
                (left, HeaderValue::from(remaining)),
                (reset, HeaderValue::from(window.reset_at)),
            ]
        } else {
            Vec::new()
        };
        if window.counter <= self.limit {
            exchange.response_headers.extend(headers);
            return Outcome::Continue;
        }
        let mut reply = Reply::error(StatusCode::TOO_MANY_REQUESTS, Some(self.kind.error_key()), self.message.clone());
        reply.headers.extend(headers);
        Outcome::Respond(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::Attributes;

    fn policy(kind: pb::RateLimitKind, limit: u64, period_ms: u64, key: &str) -> RateLimit {
        RateLimit::compile(pb::RateLimitPolicy {
            kind: kind as i32,
            limit,
            period_time: period_ms / 1000,
            period_unit: "SECONDS".into(),
            period_ms,
            key: key.into(),
            use_key_only: false,
            add_headers: true,
        })
        .unwrap()
    }

    fn call(
        policy: &RateLimit,
        counters: &LocalCounters,
        subscription: &str,
        now_ms: i64,
    ) -> (bool, Vec<(HeaderName, HeaderValue)>) {
        let (mut parts, ()) = http::Request::builder().body(()).unwrap().into_parts();
        let mut attributes = Attributes::new();
        let mut response_headers = Vec::new();
        let mut exchange = RequestExchange {
            parts: &mut parts,
            peer_ip: "127.0.0.1".parse().unwrap(),
            attributes: &mut attributes,
            plan_id: "plan",
            subscription_id: subscription,
            counters,
            now_ms,
            response_headers: &mut response_headers,
            info: &crate::el::RequestInfo::default(),
            path_params: &[],
        };
        match policy.on_request(&mut exchange) {
            Outcome::Continue => (true, response_headers),
            Outcome::Respond(reply) => {
                assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
                (false, reply.headers)
            }
        }
    }

    #[test]
    fn window_starts_at_first_request_and_allows_exactly_the_limit() {
        let counters = LocalCounters::default();
        let p = policy(pb::RateLimitKind::RateLimit, 3, 1000, "");
        let start = 1_000_000;
        let results: Vec<bool> = (0..5).map(|i| call(&p, &counters, "s1", start + i).0).collect();
        assert_eq!(results, vec![true, true, true, false, false]);
        let (_, headers) = call(&p, &counters, "s1", start + 10);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(header("x-rate-limit-limit"), Some(HeaderValue::from(3u64)));
        assert_eq!(header("x-rate-limit-remaining"), Some(HeaderValue::from(0u64)));
        assert_eq!(
            header("x-rate-limit-reset"),
            Some(HeaderValue::from(start + 1000)),
            "reset = first request + period"
        );
        assert!(call(&p, &counters, "s2", start + 10).0, "another subscription has its own counter");
        assert!(call(&p, &counters, "s1", start + 1000).0, "a new window after the reset");
    }

    #[test]
    fn quota_and_rate_limit_count_separately_with_their_own_headers() {
        let counters = LocalCounters::default();
        let rate = policy(pb::RateLimitKind::RateLimit, 1, 1000, "");
        let quota = policy(pb::RateLimitKind::Quota, 1, 1000, "");
        assert!(call(&rate, &counters, "s", 0).0);
        let (allowed, headers) = call(&quota, &counters, "s", 0);
        assert!(allowed);
        assert_eq!(headers[0].0, "x-quota-limit");
        assert_eq!(counters.len(), 2);
        assert_eq!(rate.counter_key("p", "s", ""), "ratelimit:ps:rl");
        let keyed = policy(pb::RateLimitKind::Quota, 1, 1000, "k");
        assert_eq!(keyed.counter_key("p", "s", "k"), "ratelimit:ps:k:q");
    }

    #[test]
    fn spike_arrest_slices() {
        assert_eq!(spike_slice(10, 1000), (100, 1));
        assert_eq!(spike_slice(2, 1000), (500, 1));
        assert_eq!(spike_slice(100, 1000), (100, 10), "slices never shorter than 100 ms");
        assert_eq!(spike_slice(0, 1000), (1000, 0));
        let counters = LocalCounters::default();
        let spike = policy(pb::RateLimitKind::SpikeArrest, 2, 1000, "");
        assert!(call(&spike, &counters, "s", 0).0);
        assert!(!call(&spike, &counters, "s", 100).0, "one request per 500 ms slice");
        assert!(call(&spike, &counters, "s", 500).0);
        assert_eq!(spike.message, "Spike limit exceeded! You reached the limit of 1 requests per 500 ms.");
    }

    #[test]
    fn zero_limit_blocks_and_zero_period_is_refused() {
        let counters = LocalCounters::default();
        assert!(!call(&policy(pb::RateLimitKind::RateLimit, 0, 1000, ""), &counters, "s", 0).0);
        assert!(RateLimit::compile(pb::RateLimitPolicy { kind: 1, period_ms: 0, ..Default::default() }).is_err());
    }
}
