//! The dataplane's way to the cluster-wide rate-limit counters, which the agent holds (in Redis when
//! it has one). The dataplane never talks to Redis.
//!
//! - **Strict** hits wait for the agent: the hits of concurrent requests are batched into one
//!   `hgw.v1.RateLimit/Acquire` call by [`crate::agent::counters_client`] (a few calls in flight at
//!   most; what arrives meanwhile joins the next batch), so the added latency is one round trip to
//!   the agent plus one to Redis, shared.
//! - **Async** hits are admitted from budgets leased from the agent. A request finding its lease
//!   empty refills it (one refill per counter at a time; others wait for it), so most requests wait
//!   for nothing. Leases are granted only up to the limit: async mode never admits more than the
//!   limit; it may admit fewer, by at most one unused lease per dataplane and counter per window.
//!
//! A hit names its counter (API, plan, policy step, subscription, custom key); the agent finds the
//! policy in the config it compiled and counts with that policy's limit and period, so the dataplane
//! decides with the limit the agent answers (the newest, when a config change is on its way here).
//!
//! When the agent (or its Redis) cannot answer, the caller gets [`Unavailable`] and applies the
//! policy's error strategy. After a failure, calls are not retried for [`BACKOFF`]: requests then
//! fail over to the strategy at once instead of each waiting for a timeout. A hit the agent refuses
//! alone (a step it no longer deploys, its counter table full) applies the strategy too, without the
//! backoff: the other counters are fine.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use tokio::sync::watch;

/// How long after a failed call hits fail over without trying.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Lease entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

/// The counters could not answer (agent unreachable, Redis down, queue full); the message says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where hits go: the agent over gRPC, or a stand-in in unit tests.
pub trait Backend: Send + Sync {
    fn acquire(&self, hit: pb::CounterHit) -> BoxFuture<'static, Result<pb::CounterState, Unavailable>>;
}

/// A counter as one request sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub admitted: bool,
    /// Admissions left in the window (for async mode, an estimate that includes this dataplane's
    /// unused lease).
    pub remaining: u64,
    pub reset_at_ms: i64,
}

/// One counter, as the agent knows it: a deployed policy step and what the request adds to its key.
#[derive(Debug, Clone)]
pub struct CounterRef<'a> {
    /// Gravitee's key of the counter: this dataplane's name for its lease (the agent builds its own).
    pub key: &'a str,
    /// The policy's limit as this dataplane's config says (the agent's answer may bring a newer one).
    pub limit: u64,
    pub api_id: &'a str,
    pub plan_id: &'a str,
    /// The step's number within its API (`RateLimitPolicy.step`).
    pub step: u32,
    pub subscription: &'a str,
    /// The rendered custom key (empty: none).
    pub custom_key: &'a str,
}

impl CounterRef<'_> {
    fn hit(&self, count: u64, lease: u64) -> pb::CounterHit {
        pb::CounterHit {
            api_id: self.api_id.to_owned(),
            plan_id: self.plan_id.to_owned(),
            step: self.step,
            subscription: self.subscription.to_owned(),
            custom_key: hgw_proto::counters::key_part(self.custom_key).into_owned(),
            count,
            lease,
        }
    }
}

pub use hgw_proto::counters::lease_size;

#[derive(Default)]
struct Lease {
    /// Admissions left in this dataplane's lease.
    tokens: u64,
    /// The counter's value after the last lease (all dataplanes' leases and counts).
    value: u64,
    reset_at_ms: i64,
    /// The last refill was granted nothing: the counter is at its limit until `reset_at_ms`.
    exhausted: bool,
    /// The limit the agent counted the last refill against.
    limit: u64,
    /// Set while a refill is in flight; waiters see it change (or close) when the refill is done.
    refill: Option<watch::Receiver<()>>,
}

impl Lease {
    /// Admits one request from the lease, or refuses it when the lease is empty.
    fn take_one(&mut self) -> Answer {
        let limit = self.limit;
        let admitted = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        Answer {
            admitted,
            remaining: limit.saturating_sub(self.value).saturating_add(self.tokens),
            reset_at_ms: self.reset_at_ms,
        }
    }
}

/// Counters for every rate-limiting step of this dataplane (they outlive route-table updates).
pub struct Counters {
    backend: Arc<dyn Backend>,
    leases: Mutex<HashMap<String, Lease>>,
    /// Epoch ms before which calls are not tried (after a failure).
    down_until_ms: AtomicI64,
    /// Calls (strict hits and lease refills) that reached the backend, those that failed, and hits the
    /// agent refused alone.
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub refused: AtomicU64,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters").field("calls", &self.calls).field("failures", &self.failures).finish()
    }
}

impl Counters {
    pub fn new(backend: Arc<dyn Backend>) -> Counters {
        Counters {
            backend,
            leases: Mutex::new(HashMap::new()),
            down_until_ms: AtomicI64::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Sends one hit unless a recent failure says the backend is down.
    async fn call(&self, hit: pb::CounterHit, now_ms: i64) -> Result<pb::CounterState, Unavailable> {
        let down_until = self.down_until_ms.load(Ordering::Relaxed);
        if now_ms < down_until {
            return Err(Unavailable("rate-limit counters unavailable (a recent call failed)".into()));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.backend.acquire(hit).await;
        match result {
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.down_until_ms.store(now_ms + BACKOFF.as_millis() as i64, Ordering::Relaxed);
                result
            }
            Ok(state) if !state.refused.is_empty() => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Unavailable(format!("the agent refused the counter: {}", state.refused)))
            }
            Ok(state) => Ok(state),
        }
    }

    /// Strict mode: counts this request, then answers whether it is within the limit.
    pub async fn count(&self, counter: CounterRef<'_>, now_ms: i64) -> Result<Answer, Unavailable> {
        let state = self.call(counter.hit(1, 0), now_ms).await?;
        Ok(Answer {
            admitted: state.value <= state.limit,
            remaining: state.limit.saturating_sub(state.value),
            reset_at_ms: state.reset_at_ms,
        })
    }

    /// Async mode: takes one admission from this dataplane's lease, refilling it from the agent when
    /// empty.
    pub async fn take(&self, counter: CounterRef<'_>, now_ms: i64) -> Result<Answer, Unavailable> {
        loop {
            let waiting = {
                let mut leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if leases.len() >= SWEEP_AT && !leases.contains_key(counter.key) {
                    leases.retain(|_, lease| lease.reset_at_ms > now_ms || lease.refill.is_some());
                }
                // Look up before inserting: most requests find their lease, and need no key copy.
                if !leases.contains_key(counter.key) {
                    leases.insert(counter.key.to_owned(), Lease::default());
                }
                let Some(lease) = leases.get_mut(counter.key) else { unreachable!("inserted above") };
                if lease.reset_at_ms <= now_ms && lease.refill.is_none() {
                    // The window this lease belonged to is over; its tokens counted in it.
                    *lease = Lease::default();
                }
                if lease.tokens > 0 || lease.exhausted {
                    return Ok(lease.take_one());
                }
                lease.refill.clone()
            };
            match waiting {
                // Closed or changed, the refill is over: look again (at worst this request then
                // refills itself, and returns with that answer).
                Some(mut refill) => {
                    let _ = refill.changed().await;
                }
                None => return self.refill(&counter, now_ms).await,
            }
        }
    }

    /// Leases a budget for `counter`, takes this request's admission from it and stores the rest;
    /// waiters are released when this returns. Answers from the lease itself, not by looking again, so
    /// a counter whose reset time is already past on this host's clock cannot make a request loop.
    async fn refill(&self, counter: &CounterRef<'_>, now_ms: i64) -> Result<Answer, Unavailable> {
        let (done, watching) = watch::channel(());
        {
            let mut leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            leases.entry(counter.key.to_owned()).or_default().refill = Some(watching);
        }
        // Cleared however this ends: a request dropped mid-call (its client gone) must not leave a
        // finished refill marked in flight, or every later request on the counter would wait on it.
        let _in_flight = RefillInFlight { counters: self, key: counter.key, _done: done };
        let result = self.call(counter.hit(0, lease_size(counter.limit)), now_ms).await;
        let mut leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lease = leases.entry(counter.key.to_owned()).or_default();
        let answer = result.map(|state| {
            if state.reset_at_ms != lease.reset_at_ms {
                lease.tokens = 0;
            }
            lease.tokens += state.granted;
            lease.value = state.value;
            lease.reset_at_ms = state.reset_at_ms;
            lease.exhausted = state.granted == 0;
            lease.limit = state.limit;
            lease.take_one()
        });
        drop(leases); // before `_in_flight` takes the lock again
        answer
    }
}

/// A lease refill in flight: on drop, marks it done (under the lock) and then releases its waiters.
struct RefillInFlight<'a> {
    counters: &'a Counters,
    key: &'a str,
    /// Dropped after `drop` below has run: waiters look again only once the mark is gone.
    _done: watch::Sender<()>,
}

impl Drop for RefillInFlight<'_> {
    fn drop(&mut self) {
        let mut leases = self.counters.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lease) = leases.get_mut(self.key) {
            lease.refill = None;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Counters in a map, with the agent's arithmetic; `fail` makes every call fail.
    #[derive(Default)]
    pub(crate) struct MapBackend {
        counters: Mutex<HashMap<String, (u64, i64)>>,
        pub fail: std::sync::atomic::AtomicBool,
        pub now_ms: AtomicI64,
    }

    impl Backend for MapBackend {
        fn acquire(&self, hit: pb::CounterHit) -> BoxFuture<'static, Result<pb::CounterState, Unavailable>> {
            let result = if self.fail.load(Ordering::Relaxed) {
                Err(Unavailable("down".into()))
            } else if hit.step == 0 {
                Ok(pb::CounterState { refused: "unknown step 0".into(), ..Default::default() })
            } else {
                let now = self.now_ms.load(Ordering::Relaxed);
                // Test steps: step N (from 1, as the agent numbers them) has the limit N - 1, a 1 s window.
                let (limit, period_ms) = (u64::from(hit.step) - 1, 1000);
                let key = format!("{}/{}/{}/{}", hit.plan_id, hit.step, hit.subscription, hit.custom_key);
                let mut counters = self.counters.lock().unwrap();
                let entry = counters.entry(key).or_insert((0, now + period_ms));
                if entry.1 <= now {
                    *entry = (0, now + period_ms);
                }
                let granted = hit.lease.min(limit.saturating_sub(entry.0));
                entry.0 += granted + hit.count;
                Ok(pb::CounterState { value: entry.0, reset_at_ms: entry.1, granted, limit, refused: String::new() })
            };
            Box::pin(async move { result })
        }
    }

    fn counter(limit: u64) -> CounterRef<'static> {
        let step = u32::try_from(limit + 1).unwrap();
        CounterRef { key: "ratelimit:ps:rl", limit, api_id: "a", plan_id: "p", step, subscription: "s", custom_key: "" }
    }

    #[tokio::test]
    async fn strict_admits_exactly_the_limit() {
        let counters = Counters::new(Arc::new(MapBackend::default()));
        let mut admitted = 0;
        for _ in 0..10 {
            admitted += counters.count(counter(3), 0).await.unwrap().admitted as u32;
        }
        assert_eq!(admitted, 3);
    }

    /// A backend that never answers while `hold` is set (a refill in flight when its request is dropped).
    struct HeldBackend {
        inner: MapBackend,
        hold: std::sync::atomic::AtomicBool,
    }

    impl Backend for HeldBackend {
        fn acquire(&self, hit: pb::CounterHit) -> BoxFuture<'static, Result<pb::CounterState, Unavailable>> {
            if self.hold.load(Ordering::Relaxed) {
                return Box::pin(futures::future::pending());
            }
            self.inner.acquire(hit)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_dropped_during_its_refill_does_not_wedge_the_counter() {
        let backend = Arc::new(HeldBackend { inner: MapBackend::default(), hold: true.into() });
        let counters = Arc::new(Counters::new(backend.clone()));
        // The client goes away while its request is refilling the lease: the request future is dropped.
        let dropped = tokio::time::timeout(Duration::from_millis(50), counters.take(counter(100), 0)).await;
        assert!(dropped.is_err(), "the held backend answered");
        backend.hold.store(false, Ordering::Relaxed);
        // The next request refills the lease itself (before the fix it waited forever on the dead refill,
        // spinning; the bound below only turns such a hang into a failure).
        let next = tokio::spawn({
            let counters = counters.clone();
            async move { counters.take(counter(100), 0).await }
        });
        let answer = tokio::time::timeout(Duration::from_secs(30), next).await;
        assert!(answer.expect("the counter is wedged").unwrap().unwrap().admitted);
    }

    #[tokio::test]
    async fn leases_admit_locally_and_never_past_the_limit() {
        let backend = Arc::new(MapBackend::default());
        let counters = Counters::new(backend.clone());
        let limit = 500;
        let mut admitted = 0;
        for _ in 0..700 {
            admitted += counters.take(counter(limit), 0).await.unwrap().admitted as u64;
        }
        assert_eq!(admitted, limit, "one dataplane uses its leases to the last token");
        assert_eq!(
            counters.calls.load(Ordering::Relaxed),
            limit / lease_size(limit) + 1,
            "one call per lease, plus the one that found the counter exhausted"
        );
        backend.now_ms.store(1000, Ordering::Relaxed);
        assert!(counters.take(counter(limit), 1000).await.unwrap().admitted, "a new window, a new lease");
    }

    #[tokio::test]
    async fn two_dataplanes_sharing_a_counter_stay_within_the_bound() {
        let backend = Arc::new(MapBackend::default());
        let (a, b) = (Counters::new(backend.clone()), Counters::new(backend));
        let limit = 100;
        let mut admitted = 0;
        for i in 0..300 {
            let side = if i % 3 == 0 { &a } else { &b };
            admitted += side.take(counter(limit), 0).await.unwrap().admitted as u64;
        }
        assert!(admitted <= limit && admitted >= limit - 2 * lease_size(limit), "{admitted}");
    }

    #[tokio::test]
    async fn a_reset_time_already_past_on_this_clock_cannot_loop() {
        // The agent's clock (the backend's, at 0) is 5 s behind this host's.
        let counters = Counters::new(Arc::new(MapBackend::default()));
        assert!(counters.take(counter(100), 5_000).await.unwrap().admitted);
        assert!(counters.take(counter(100), 5_000).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn failures_back_off_then_recover() {
        let backend = Arc::new(MapBackend::default());
        backend.fail.store(true, Ordering::Relaxed);
        let counters = Counters::new(backend.clone());
        assert!(counters.count(counter(5), 0).await.is_err());
        assert!(counters.take(counter(5), 10).await.is_err());
        assert_eq!(counters.calls.load(Ordering::Relaxed), 1, "the second hit failed over without a call");
        backend.fail.store(false, Ordering::Relaxed);
        let later = BACKOFF.as_millis() as i64;
        assert!(counters.count(counter(5), later).await.unwrap().admitted);
        assert!(counters.take(counter(5), later).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn a_refused_hit_applies_the_strategy_and_others_keep_counting() {
        let counters = Counters::new(Arc::new(MapBackend::default()));
        let stale = CounterRef { step: 0, ..counter(5) };
        let refused = counters.count(stale.clone(), 0).await.unwrap_err();
        assert!(refused.0.contains("unknown step 0"), "{refused}");
        assert!(counters.take(stale, 0).await.is_err(), "a lease on a refused counter is refused too");
        assert!(counters.count(counter(5), 1).await.unwrap().admitted, "no backoff after a refusal");
        assert_eq!(counters.refused.load(Ordering::Relaxed), 2);
        assert_eq!(counters.failures.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_agents_limit_decides() {
        // The dataplane still thinks the limit is 100; the agent's policy (here: 2) counts.
        let counters = Counters::new(Arc::new(MapBackend::default()));
        let mut admitted = 0;
        for _ in 0..5 {
            admitted += counters.count(CounterRef { limit: 100, ..counter(2) }, 0).await.unwrap().admitted as u32;
        }
        assert_eq!(admitted, 2);
    }
}
