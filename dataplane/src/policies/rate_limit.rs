//! `rate-limit`, `quota` and `spike-arrest`, counted cluster-wide by the agent
//! ([`crate::policies::counters`]).
//!
//! Gravitee's semantics: a counter per key `ratelimit:{plan}{subscription}[:{key}]:{rl|q|sa}`; its window
//! starts at the first request and resets `period` later (not clock-aligned); a request is allowed while
//! the counter, after counting it, is `<= limit`. Spike arrest cuts the period into slices of
//! `period/limit` (at least 100 ms, allowing proportionally more per slice).
//!
//! Strict mode asks the agent for every request; async mode (`"async": true`) admits from leased budgets.
//! When the counters cannot answer, the policy's `errorStrategy` passes the request (marking its metrics
//! record `*_NOT_APPLIED`, as Gravitee's warning does) or refuses it with 429
//! `*_BLOCK_ON_INTERNAL_ERROR`.

use std::sync::Arc;

use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, Verdict, Warning, invalid};
use crate::policies::counters::{Answer, CounterRef, Unavailable};

use hgw_proto::counters::spike_slice;

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

    /// Gravitee's warning when the counters could not be reached and the request passed.
    fn not_applied_key(self) -> &'static str {
        match self {
            Kind::RateLimit => "RATE_LIMIT_NOT_APPLIED",
            Kind::Quota => "QUOTA_NOT_APPLIED",
            Kind::SpikeArrest => "SPIKE_ARREST_NOT_APPLIED",
        }
    }

    /// Gravitee's refusal when the counters could not be reached under `BLOCK_ON_INTERNAL_ERROR`.
    fn blocked_key(self) -> &'static str {
        match self {
            Kind::RateLimit => "RATE_LIMIT_BLOCK_ON_INTERNAL_ERROR",
            Kind::Quota => "QUOTA_BLOCK_ON_INTERNAL_ERROR",
            Kind::SpikeArrest => "SPIKE_ARREST_BLOCK_ON_INTERNAL_ERROR",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::RateLimit => "Rate limit",
            Kind::Quota => "Quota",
            Kind::SpikeArrest => "Spike arrest",
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

/// What decides a request once its counter answered (shared with the request's future).
#[derive(Debug)]
struct Rules {
    kind: Kind,
    /// Allowed per counting window (for spike arrest: per slice), as this dataplane's config says; the
    /// agent counts with the window and limit of the policy it compiled.
    limit: u64,
    add_headers: bool,
    message: String,
    strict: bool,
    block_on_error: bool,
    /// The step's number within its API: how the agent finds this policy (`RateLimitPolicy.step`).
    step: u32,
}

impl Rules {
    fn headers(&self, remaining: u64, reset_at_ms: i64) -> Vec<(HeaderName, HeaderValue)> {
        if !self.add_headers {
            return Vec::new();
        }
        let [limit, left, reset] = self.kind.headers();
        vec![
            (limit, HeaderValue::from(self.limit)),
            (left, HeaderValue::from(remaining)),
            (reset, HeaderValue::from(reset_at_ms)),
        ]
    }

    fn decide(&self, answer: Result<Answer, Unavailable>) -> Verdict {
        match answer {
            Ok(answer) => {
                let headers = self.headers(answer.remaining, answer.reset_at_ms);
                let reply = (!answer.admitted).then(|| {
                    Reply::error(StatusCode::TOO_MANY_REQUESTS, Some(self.kind.error_key()), self.message.clone())
                });
                Verdict { reply, headers, warning: None, resume: None }
            }
            Err(error) if self.block_on_error => {
                let message = format!("{} blocked the query due to internal error", self.kind.label());
                Verdict {
                    reply: Some(Reply::error(StatusCode::TOO_MANY_REQUESTS, Some(self.kind.blocked_key()), message)),
                    headers: Vec::new(),
                    warning: Some(Warning { key: self.kind.blocked_key(), message: error.0 }),
                    resume: None,
                }
            }
            // Gravitee's pass-through headers: the remaining count is unknown, so the limit; reset -1.
            Err(error) => Verdict {
                reply: None,
                headers: self.headers(self.limit, -1),
                warning: Some(Warning {
                    key: self.kind.not_applied_key(),
                    message: format!("Request bypassed {} policy due to internal error: {error}", self.kind.label()),
                }),
                resume: None,
            },
        }
    }
}

#[derive(Debug)]
pub struct RateLimit {
    rules: Arc<Rules>,
    /// Custom key: constant or an EL template (e.g. a client header).
    key: Value,
    use_key_only: bool,
}

impl RateLimit {
    pub fn compile(config: pb::RateLimitPolicy) -> Result<RateLimit, PolicyError> {
        let pb::RateLimitPolicy {
            kind,
            limit,
            period_time,
            period_unit,
            period_ms,
            key,
            use_key_only,
            add_headers,
            mode,
            error_strategy,
            step,
        } = config;
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
        let (limit, message) = match kind {
            Kind::SpikeArrest => {
                let (slice_ms, slice_limit) = spike_slice(limit, period_ms);
                (
                    slice_limit,
                    format!("Spike limit exceeded! You reached the limit of {slice_limit} requests per {slice_ms} ms."),
                )
            }
            Kind::RateLimit => (
                limit,
                format!("Rate limit exceeded! You reached the limit of {limit} requests per {period_time} {unit}"),
            ),
            Kind::Quota => {
                (limit, format!("Quota exceeded! You reached the limit of {limit} requests per {period_time} {unit}"))
            }
        };
        let key = Value::compile("rate-limit.key", key)?;
        let strict = match pb::RateLimitMode::try_from(mode) {
            Ok(pb::RateLimitMode::Async) => false,
            Ok(pb::RateLimitMode::Strict | pb::RateLimitMode::Unspecified) => true,
            Err(_) => return Err(invalid("rate-limit.async", format!("unknown mode {mode}"))),
        };
        let block_on_error = match pb::RateLimitErrorStrategy::try_from(error_strategy) {
            Ok(pb::RateLimitErrorStrategy::Block) => true,
            Ok(pb::RateLimitErrorStrategy::PassThrough | pb::RateLimitErrorStrategy::Unspecified) => false,
            Err(_) => {
                return Err(invalid("rate-limit.errorStrategy", format!("unknown strategy {error_strategy}")));
            }
        };
        let rules = Rules { kind, limit, add_headers, message, strict, block_on_error, step };
        Ok(RateLimit { rules: Arc::new(rules), key, use_key_only })
    }

    /// Gravitee's counter key (`key` is the rendered custom key), as the agent builds it: this
    /// dataplane's name for the counter's lease.
    fn counter_key(&self, plan: &str, subscription: &str, key: &str) -> String {
        hgw_proto::counters::counter_key(self.rules.kind.suffix(), plan, subscription, key, self.use_key_only)
    }
}

impl Policy for RateLimit {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let custom = self.key.render(&exchange.el());
        let key = self.counter_key(exchange.plan_id, exchange.subscription_id, &custom);
        let subscription = exchange.subscription_id.to_owned();
        let api_id = exchange.api_id.to_owned();
        let plan_id = exchange.plan_id.to_owned();
        let counters = exchange.counters.clone();
        let rules = self.rules.clone();
        let now_ms = exchange.now_ms;
        Outcome::Wait(Box::pin(async move {
            let counter = CounterRef {
                key: &key,
                limit: rules.limit,
                api_id: &api_id,
                plan_id: &plan_id,
                step: rules.step,
                subscription: &subscription,
                custom_key: &custom,
            };
            let answer =
                if rules.strict { counters.count(counter, now_ms).await } else { counters.take(counter, now_ms).await };
            rules.decide(answer)
        }))
    }

    fn uses_el(&self) -> bool {
        self.key.is_template()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::Attributes;
    use crate::policies::counters::Counters;
    use crate::policies::counters::tests::MapBackend;
    use std::sync::atomic::Ordering;

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
            mode: pb::RateLimitMode::Strict as i32,
            error_strategy: pb::RateLimitErrorStrategy::PassThrough as i32,
            // The test backend's convention: step N has the limit N - 1.
            step: u32::try_from(limit + 1).unwrap(),
        })
        .unwrap()
    }

    fn counters() -> (Arc<MapBackend>, Arc<Counters>) {
        let backend = Arc::new(MapBackend::default());
        (backend.clone(), Arc::new(Counters::new(backend)))
    }

    async fn call(policy: &RateLimit, counters: &Arc<Counters>, subscription: &str, now_ms: i64) -> Verdict {
        let (mut parts, ()) = http::Request::builder().body(()).unwrap().into_parts();
        let mut attributes = Attributes::new();
        let mut response_headers = Vec::new();
        let mut exchange = RequestExchange {
            parts: &mut parts,
            peer_ip: "127.0.0.1".parse().unwrap(),
            trusted_proxies: &crate::http::forwarded::TrustedProxies::default(),
            attributes: &mut attributes,
            api_id: "api",
            plan_id: "plan",
            subscription_id: subscription,
            counters,
            now_ms,
            response_headers: &mut response_headers,
            info: &crate::policies::el::RequestInfo::default(),
            path_params: &[],
            endpoint_target: &mut None,
            retry: &mut None,
            cache: &mut None,
            legacy_engine: false,
            body: None,
            api_keys: None,
        };
        match policy.on_request(&mut exchange) {
            Outcome::Wait(pending) => pending.await,
            other => panic!("rate limits wait for the counters: {other:?}"),
        }
    }

    fn header(verdict: &Verdict, name: &str) -> Option<HeaderValue> {
        verdict.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    #[tokio::test]
    async fn window_starts_at_first_request_and_allows_exactly_the_limit() {
        let (backend, counters) = counters();
        let p = policy(pb::RateLimitKind::RateLimit, 3, 1000, "");
        let start = 1_000_000;
        backend.now_ms.store(start, Ordering::Relaxed);
        let mut allowed = Vec::new();
        for i in 0..5 {
            allowed.push(call(&p, &counters, "s1", start + i).await.reply.is_none());
        }
        assert_eq!(allowed, vec![true, true, true, false, false]);
        let refused = call(&p, &counters, "s1", start + 10).await;
        let reply = refused.reply.as_ref().unwrap();
        assert_eq!(
            (reply.status, reply.error_key),
            (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMIT_TOO_MANY_REQUESTS"))
        );
        assert_eq!(header(&refused, "x-rate-limit-limit"), Some(HeaderValue::from(3u64)));
        assert_eq!(header(&refused, "x-rate-limit-remaining"), Some(HeaderValue::from(0u64)));
        assert_eq!(header(&refused, "x-rate-limit-reset"), Some(HeaderValue::from(start + 1000)));
        assert!(call(&p, &counters, "s2", start + 10).await.reply.is_none(), "another subscription, another counter");
    }

    #[test]
    fn counter_keys_follow_gravitee() {
        let rate = policy(pb::RateLimitKind::RateLimit, 1, 1000, "");
        assert_eq!(rate.counter_key("p", "s", ""), "ratelimit:ps:rl");
        let keyed = policy(pb::RateLimitKind::Quota, 1, 1000, "k");
        assert_eq!(keyed.counter_key("p", "s", "k"), "ratelimit:ps:k:q");
        let mut only = policy(pb::RateLimitKind::SpikeArrest, 1, 1000, "k");
        only.use_key_only = true;
        assert_eq!(only.counter_key("p", "s", "k"), "ratelimit:k:sa");
    }

    #[test]
    fn spike_arrest_slices() {
        assert_eq!(spike_slice(10, 1000), (100, 1));
        assert_eq!(spike_slice(2, 1000), (500, 1));
        assert_eq!(spike_slice(100, 1000), (100, 10), "slices never shorter than 100 ms");
        assert_eq!(spike_slice(0, 1000), (1000, 0));
        let spike = policy(pb::RateLimitKind::SpikeArrest, 2, 1000, "");
        assert_eq!(spike.rules.limit, 1);
        assert_eq!(spike.rules.message, "Spike limit exceeded! You reached the limit of 1 requests per 500 ms.");
    }

    #[tokio::test]
    async fn zero_limit_blocks_and_zero_period_is_refused() {
        let (_, counters) = counters();
        assert!(call(&policy(pb::RateLimitKind::RateLimit, 0, 1000, ""), &counters, "s", 0).await.reply.is_some());
        assert!(RateLimit::compile(pb::RateLimitPolicy { kind: 1, period_ms: 0, ..Default::default() }).is_err());
    }

    #[tokio::test]
    async fn unreachable_counters_pass_with_a_warning_or_block() {
        let (backend, counters) = counters();
        backend.fail.store(true, Ordering::Relaxed);
        let pass = policy(pb::RateLimitKind::Quota, 5, 1000, "");
        let verdict = call(&pass, &counters, "s", 0).await;
        assert!(verdict.reply.is_none());
        assert_eq!(verdict.warning.as_ref().map(|w| w.key), Some("QUOTA_NOT_APPLIED"));
        assert_eq!(header(&verdict, "x-quota-remaining"), Some(HeaderValue::from(5u64)));
        assert_eq!(header(&verdict, "x-quota-reset"), Some(HeaderValue::from(-1i64)));

        let mut block = policy(pb::RateLimitKind::RateLimit, 5, 1000, "");
        Arc::get_mut(&mut block.rules).unwrap().block_on_error = true;
        let verdict = call(&block, &counters, "s", 0).await;
        let reply = verdict.reply.expect("blocked");
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.error_key, Some("RATE_LIMIT_BLOCK_ON_INTERNAL_ERROR"));
    }

    #[tokio::test]
    async fn async_mode_admits_from_leases() {
        let (_, counters) = counters();
        let mut lazy = policy(pb::RateLimitKind::RateLimit, 100, 1000, "");
        Arc::get_mut(&mut lazy.rules).unwrap().strict = false;
        let mut admitted = 0;
        for _ in 0..150 {
            admitted += call(&lazy, &counters, "s", 0).await.reply.is_none() as u32;
        }
        assert_eq!(admitted, 100);
        assert!(counters.calls.load(Ordering::Relaxed) < 100, "most admissions came from leases");
    }
}
