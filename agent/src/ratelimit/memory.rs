//! Counters in this agent's memory: used when no Redis is configured (one agent per cluster, or
//! counters that need not be shared between hosts).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{CounterState, Hit};

/// Counters kept before expired windows are swept (per-client keys would otherwise grow forever).
const SWEEP_AT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    counter: u64,
    reset_at_ms: i64,
}

#[derive(Debug, Default)]
pub struct MemoryCounters {
    windows: Mutex<HashMap<String, Window>>,
}

impl MemoryCounters {
    /// The same arithmetic as the Redis script: start a window on first use, grant leases up to the
    /// limit, then add counts and grants.
    pub fn apply(&self, groups: &[Hit], now_ms: i64) -> Vec<CounterState> {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, w| w.reset_at_ms > now_ms);
        }
        groups
            .iter()
            .map(|hit| {
                let fresh = Window { counter: 0, reset_at_ms: now_ms.saturating_add(hit.period_ms as i64) };
                let window = windows.entry(hit.key.clone()).or_insert(fresh);
                if window.reset_at_ms <= now_ms {
                    *window = fresh;
                }
                let granted = hit.lease.min(hit.limit.saturating_sub(window.counter));
                window.counter = window.counter.saturating_add(granted).saturating_add(hit.count);
                CounterState { value: window.counter, reset_at_ms: window.reset_at_ms, granted }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
