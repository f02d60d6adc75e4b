//! Cluster-wide rate-limit, quota and spike-arrest counters, answered to dataplanes over
//! `hgw.v1.RateLimit`.
//!
//! Counters follow Gravitee's semantics so hgw agents and Gravitee gateways sharing one Redis count
//! together: a counter per key, a window that starts at the counter's first hit and ends `period`
//! later (not aligned to the clock), and a request admitted while the counter, after counting it, is at
//! most the limit. Two ways to use a counter:
//!
//! - **count** (strict mode): every request is added, admitted or not, exactly as Gravitee's script
//!   does (`HINCRBY counter weight`), so the decision is exact.
//! - **lease** (async mode): a dataplane reserves admissions in advance; a lease is granted only up to
//!   the limit, so leases never admit more than the limit, and what a dataplane leaves unused when the
//!   window ends is the only inaccuracy.
//!
//! Hits of one batch on the same key are merged into one store operation, then answered one by one in
//! order, so a batch of concurrent requests costs one Redis call per distinct key.

mod deployed;
mod memory;
mod redis;

use std::collections::HashMap;

pub use deployed::{DeployedCounters, Refusal};
pub use memory::{DEFAULT_MAX_KEYS, MemoryCounters};
pub use redis::RedisCounters;

/// One request for a counter: a wire `CounterHit` resolved against the deployed policy
/// ([`DeployedCounters::resolve`]), with the key, limit and period the agent derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub key: String,
    pub limit: u64,
    pub period_ms: u64,
    pub subscription: String,
    /// Requests counted whatever the counter's value.
    pub count: u64,
    /// Admissions wanted in advance; granted up to the limit.
    pub lease: u64,
}

/// A counter after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterState {
    pub value: u64,
    pub reset_at_ms: i64,
    pub granted: u64,
}

/// Why the counters could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("redis: {0}")]
    Redis(#[from] crate::redis::RedisError),
    #[error("redis answered an unexpected value: {0}")]
    Reply(String),
}

/// The hits of one batch merged per key: one hit per distinct key (counts and leases summed, in order of
/// first appearance), plus for every hit the index of its merged group.
pub(crate) fn merge(hits: &[Hit]) -> (Vec<Hit>, Vec<usize>) {
    let mut groups: Vec<Hit> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(hits.len());
    for hit in hits {
        let index = *by_key.entry(hit.key.as_str()).or_insert_with(|| {
            groups.push(Hit { count: 0, lease: 0, ..hit.clone() });
            groups.len() - 1
        });
        groups[index].count += hit.count;
        groups[index].lease += hit.lease;
        group_of.push(index);
    }
    (groups, group_of)
}

/// Answers each hit from its merged group's result (`None`: the group was not counted).
///
/// A group's store operation granted `granted` admissions to its leases, then added its counts, ending at
/// `value`. Leases are served first, in order; counted hits then see the counter rise one by one.
pub(crate) fn split(
    hits: &[Hit],
    groups: &[Hit],
    group_of: &[usize],
    results: &[Option<CounterState>],
) -> Vec<Option<CounterState>> {
    // Per group: admissions still to hand to leases, and the value before its counted hits.
    let mut to_grant: Vec<u64> = results.iter().map(|r| r.map_or(0, |r| r.granted)).collect();
    let mut counted: Vec<u64> =
        results.iter().zip(groups).map(|(r, group)| r.map_or(0, |r| r.value.saturating_sub(group.count))).collect();
    hits.iter()
        .zip(group_of)
        .map(|(hit, &group)| {
            let result = results[group]?;
            let granted = hit.lease.min(to_grant[group]);
            to_grant[group] -= granted;
            counted[group] += hit.count;
            Some(CounterState { value: counted[group], reset_at_ms: result.reset_at_ms, granted })
        })
        .collect()
}

/// Where counters live: Redis (shared by every agent of the cluster) or this agent's memory.
pub enum CounterStore {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

impl CounterStore {
    /// Applies a batch of hits at `now_ms` (this agent's clock starts new windows). A hit answered
    /// `None` was not counted: the in-memory table is full.
    pub async fn acquire(&self, hits: &[Hit], now_ms: i64) -> Result<Vec<Option<CounterState>>, CounterError> {
        let (groups, group_of) = merge(hits);
        let results = match self {
            CounterStore::Memory(memory) => memory.apply(&groups, now_ms),
            CounterStore::Redis(redis) => redis.apply(&groups, now_ms).await?.into_iter().map(Some).collect(),
        };
        Ok(split(hits, &groups, &group_of, &results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &str, count: u64, lease: u64) -> Hit {
        Hit { key: key.into(), limit: 3, period_ms: 1000, subscription: "s".into(), count, lease }
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_as_if_hits_came_one_by_one() {
        let store = CounterStore::Memory(MemoryCounters::default());
        let hits: Vec<Hit> = (0..5).map(|_| hit("k", 1, 0)).chain([hit("other", 1, 0)]).collect();
        let states: Vec<CounterState> = store.acquire(&hits, 1_000).await.unwrap().into_iter().flatten().collect();
        let values: Vec<u64> = states.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![1, 2, 3, 4, 5, 1]);
        assert!(states.iter().all(|s| s.reset_at_ms == 2_000), "the window starts at the first hit");
        let next = store.acquire(&[hit("k", 1, 0)], 1_500).await.unwrap()[0].unwrap();
        assert_eq!((next.value, next.reset_at_ms), (6, 2_000), "counted even when over the limit");
        let fresh = store.acquire(&[hit("k", 1, 0)], 2_000).await.unwrap()[0].unwrap();
        assert_eq!((fresh.value, fresh.reset_at_ms), (1, 3_000), "a new window after the reset");
    }

    #[tokio::test]
    async fn leases_never_grant_past_the_limit() {
        let store = CounterStore::Memory(MemoryCounters::default());
        let states: Vec<CounterState> = store
            .acquire(&[hit("k", 0, 2), hit("k", 0, 2), hit("k", 0, 2)], 0)
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        let granted: Vec<u64> = states.iter().map(|s| s.granted).collect();
        assert_eq!(granted, vec![2, 1, 0]);
        assert_eq!(states[2].value, 3);
        let later = store.acquire(&[hit("k", 0, 5)], 10).await.unwrap()[0].unwrap();
        assert_eq!((later.granted, later.value), (0, 3), "an exhausted counter grants nothing");
    }

    #[test]
    fn mixed_leases_and_counts_on_one_key() {
        let hits = [hit("k", 1, 0), hit("k", 0, 4), hit("k", 1, 0)];
        let (groups, group_of) = merge(&hits);
        assert_eq!((groups.len(), groups[0].count, groups[0].lease), (1, 2, 4));
        // The store granted 3 of the 4 leased, then counted 2: 0 + 3 + 2.
        let results = [Some(CounterState { value: 5, reset_at_ms: 9, granted: 3 })];
        let answers = split(&hits, &groups, &group_of, &results);
        assert_eq!(
            answers.iter().flatten().map(|a| (a.value, a.granted)).collect::<Vec<_>>(),
            vec![(4, 0), (4, 3), (5, 0)]
        );
    }
}
