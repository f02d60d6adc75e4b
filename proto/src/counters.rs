//! The rate-limit counter rules the agent and the dataplane must compute alike: the window of a policy,
//! the lease a dataplane may ask for, and Gravitee's counter key. The dataplane uses them to decide and
//! to size its requests; the agent uses the same functions to check those requests against the policy
//! it compiled, so the two can never disagree on what a well-behaved dataplane sends.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::v1::{RateLimitKind, RateLimitPolicy};

/// Hits one `Acquire` call may carry: a dataplane batches the requests waiting at one moment.
pub const MAX_HITS_PER_CALL: usize = 1024;
/// Spike arrest never counts in slices shorter than this (Gravitee's minimum).
pub const MIN_SPIKE_SLICE_MS: u64 = 100;
/// A lease is this fraction of the limit (at least 1, at most [`MAX_LEASE`]): small enough that what a
/// dataplane leaves unused is a small part of the limit, large enough that most requests find a token.
const LEASE_DIVISOR: u64 = 50;
pub const MAX_LEASE: u64 = 1000;
/// Custom keys (and subscriptions) longer than this are replaced by their SHA-256 in counter keys:
/// a key rendered from a client header must not make Redis keys, gRPC messages or the agent's table
/// entries as large as the header.
pub const MAX_KEY_PART_BYTES: usize = 256;

/// The lease size for a limit.
pub fn lease_size(limit: u64) -> u64 {
    (limit / LEASE_DIVISOR).clamp(1, MAX_LEASE)
}

/// Spike arrest's slice: `(slice period ms, requests per slice)`.
pub fn spike_slice(limit: u64, period_ms: u64) -> (u64, u64) {
    if limit == 0 {
        return (period_ms, 0);
    }
    let slice = period_ms as f64 / limit as f64;
    if slice < MIN_SPIKE_SLICE_MS as f64 {
        let per_slice = (MIN_SPIKE_SLICE_MS as f64 / slice).round().max(1.0);
        ((slice * per_slice) as u64, per_slice as u64)
    } else {
        (slice as u64, 1)
    }
}

/// What one counter of `policy` allows: `(requests per window, window ms)`; for spike arrest, per slice.
pub fn window(policy: &RateLimitPolicy) -> (u64, u64) {
    match RateLimitKind::try_from(policy.kind) {
        Ok(RateLimitKind::SpikeArrest) => {
            let (slice_ms, per_slice) = spike_slice(policy.limit, policy.period_ms);
            (per_slice, slice_ms)
        }
        _ => (policy.limit, policy.period_ms),
    }
}

/// Gravitee's suffix of a counter key; `None` for an unknown kind.
pub fn suffix(kind: i32) -> Option<&'static str> {
    match RateLimitKind::try_from(kind) {
        Ok(RateLimitKind::RateLimit) => Some("rl"),
        Ok(RateLimitKind::Quota) => Some("q"),
        Ok(RateLimitKind::SpikeArrest) => Some("sa"),
        _ => None,
    }
}

/// A custom key (or subscription) as it goes into a counter key: unchanged when short and printable
/// (Gravitee's key, so hgw and Gravitee gateways sharing a Redis count together), else `sha256-` and its
/// hex digest, so distinct values keep distinct counters (a client cannot escape its limit by sending
/// an odd value) while no control character or megabyte-long header reaches Redis or a log line.
pub fn key_part(raw: &str) -> Cow<'_, str> {
    if raw.len() <= MAX_KEY_PART_BYTES && !raw.chars().any(char::is_control) {
        return Cow::Borrowed(raw);
    }
    let digest = Sha256::digest(raw.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256-");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    Cow::Owned(out)
}

/// Gravitee's counter key `ratelimit:{plan}{subscription}[:{key}]:{rl|q|sa}` (`ratelimit:{key}:{suffix}`
/// with `useKeyOnly`). Always under `ratelimit:`: nothing a request carries can name another Redis key.
pub fn counter_key(suffix: &str, plan: &str, subscription: &str, custom: &str, use_key_only: bool) -> String {
    let subscription = key_part(subscription);
    let custom = key_part(custom);
    match (use_key_only && !custom.is_empty(), custom.is_empty()) {
        (true, _) => format!("ratelimit:{custom}:{suffix}"),
        (false, true) => format!("ratelimit:{plan}{subscription}:{suffix}"),
        (false, false) => format!("ratelimit:{plan}{subscription}:{custom}:{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_follow_gravitee() {
        assert_eq!(counter_key("rl", "p", "s", "", false), "ratelimit:ps:rl");
        assert_eq!(counter_key("q", "p", "s", "k", false), "ratelimit:ps:k:q");
        assert_eq!(counter_key("sa", "p", "s", "k", true), "ratelimit:k:sa");
        assert_eq!(counter_key("sa", "p", "s", "", true), "ratelimit:ps:sa", "useKeyOnly without a key");
    }

    #[test]
    fn odd_key_parts_are_hashed_and_stay_distinct() {
        let long = "x".repeat(MAX_KEY_PART_BYTES + 1);
        let hashed = key_part(&long);
        assert!(hashed.starts_with("sha256-") && hashed.len() == 71, "{hashed}");
        assert_ne!(key_part("a\r\nDEL app:user:42"), key_part("a\r\nDEL app:user:43"));
        assert!(!key_part("a\nb").contains('\n'));
        assert_eq!(key_part("client-42"), "client-42");
        assert_eq!(key_part(&hashed), hashed, "a hashed part is kept as it is");
    }

    #[test]
    fn spike_arrest_slices() {
        assert_eq!(spike_slice(10, 1000), (100, 1));
        assert_eq!(spike_slice(2, 1000), (500, 1));
        assert_eq!(spike_slice(100, 1000), (100, 10), "slices never shorter than 100 ms");
        assert_eq!(spike_slice(0, 1000), (1000, 0));
    }

    #[test]
    fn leases_are_a_small_part_of_the_limit() {
        assert_eq!((lease_size(0), lease_size(10), lease_size(500), lease_size(10_000_000)), (1, 1, 10, 1000));
    }
}
