//! Counters in this agent's memory: used when no Redis is configured (one agent per cluster, or
//! counters that need not be shared between hosts).
//!
//! The table is bounded (`--rate-limit-max-keys`): counters whose window ended are swept when it is
//! full, and a new counter that still finds no room is refused (the dataplane applies the policy's
//! error strategy) rather than growing the agent without limit — per-client keys are chosen by clients.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{CounterState, Hit};

/// Default of `--rate-limit-max-keys`: about 100 bytes per counter, so ~10 MB at most.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// A full table is swept at most this often: sweeping walks the whole table, and a flood of new keys
/// must not make every call pay for it.
const SWEEP_EVERY_MS: i64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Window {
    counter: u64,
    reset_at_ms: i64,
}

#[derive(Debug)]
struct Table {
    windows: HashMap<String, Window>,
    /// Epoch ms before which a full table is not swept again.
    next_sweep_ms: i64,
}

#[derive(Debug)]
pub struct MemoryCounters {
    table: Mutex<Table>,
    max_keys: usize,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters::new(DEFAULT_MAX_KEYS)
    }
}

impl MemoryCounters {
    pub fn new(max_keys: usize) -> MemoryCounters {
        MemoryCounters { table: Mutex::new(Table { windows: HashMap::new(), next_sweep_ms: 0 }), max_keys }
    }

    /// The same arithmetic as the Redis script: start a window on first use, grant leases up to the
    /// limit, then add counts and grants. `None` for a new counter the full table has no room for.
    pub fn apply(&self, groups: &[Hit], now_ms: i64) -> Vec<Option<CounterState>> {
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        groups
            .iter()
            .map(|hit| {
                let fresh = Window { counter: 0, reset_at_ms: now_ms.saturating_add(hit.period_ms as i64) };
                if !table.windows.contains_key(&hit.key) && table.windows.len() >= self.max_keys {
                    if now_ms < table.next_sweep_ms {
                        return None;
                    }
                    table.windows.retain(|_, w| w.reset_at_ms > now_ms);
                    table.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
                    if table.windows.len() >= self.max_keys {
                        return None;
                    }
                }
                let window = table.windows.entry(hit.key.clone()).or_insert(fresh);
                if window.reset_at_ms <= now_ms {
                    *window = fresh;
                }
                let granted = hit.lease.min(hit.limit.saturating_sub(window.counter));
                window.counter = window.counter.saturating_add(granted).saturating_add(hit.count);
                Some(CounterState { value: window.counter, reset_at_ms: window.reset_at_ms, granted })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.windows.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &str, period_ms: u64) -> Hit {
        Hit { key: key.into(), limit: 10, period_ms, subscription: "s".into(), count: 1, lease: 0 }
    }

    #[test]
    fn a_full_table_refuses_new_keys_keeps_counting_known_ones_and_frees_ended_windows() {
        let counters = MemoryCounters::new(2);
        let first = counters.apply(&[hit("a", 1000), hit("b", 5000), hit("c", 1000)], 0);
        assert!(first[0].is_some() && first[1].is_some());
        assert!(first[2].is_none(), "no room for a third key");
        assert_eq!(counters.apply(&[hit("a", 1000)], 10)[0].map(|s| s.value), Some(2), "known keys still count");
        assert!(counters.apply(&[hit("c", 1000)], 500)[0].is_none(), "nothing has ended yet");
        // `a` ended at 1000: the sweep (at most once a second) frees its slot.
        assert_eq!(counters.apply(&[hit("c", 1000)], 1500)[0].map(|s| s.value), Some(1));
        assert_eq!(counters.len(), 2);
    }
}
