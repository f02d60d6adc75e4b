//! Reconnect delays for the agent streams: exponential with full jitter, so a restarted agent is not
//! hit by every dataplane of a host at the same instant.

use std::time::Duration;

use rand::Rng;

/// First ceiling: short, because an agent restart is usually quick.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Largest ceiling: bounds how stale a dataplane can stay after the agent is back.
pub const MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter: each delay is uniform in `[0, ceiling]`, and the ceiling
/// doubles from [`INITIAL`] up to [`MAX`].
#[derive(Debug, Clone)]
pub struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { ceiling: INITIAL }
    }
}

impl Backoff {
    /// The next delay to wait; raises the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(MAX);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Called after a healthy stream, so the next failure retries quickly again.
    pub fn reset(&mut self) {
        self.ceiling = INITIAL;
    }

    /// The current ceiling, for logs and tests.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            assert!(b.next_delay() <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.ceiling(), INITIAL);
    }
}
