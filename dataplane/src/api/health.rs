//! Active endpoint health checks (Gravitee's `http-health-check` endpoint-group service).
//!
//! Every dataplane probes the endpoints of the APIs it serves, as each Gravitee gateway does. An
//! endpoint goes DOWN after `failure_threshold` failed probes in a row and is then skipped by load
//! balancing (like an open circuit: secondaries take over when every primary is down); it comes back
//! UP after `success_threshold` good probes. Every probe becomes a health-check record, sent to the
//! agent with the analytics. The probes run in [`crate::gateway::probes`]. Probe state lives in the
//! endpoint, so it starts fresh (UP) when an API's configuration changes.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, Method};

/// A compiled health check.
#[derive(Debug)]
pub struct HealthCheck {
    pub interval: Duration,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) override_endpoint_path: bool,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) assertion: hgw_el::Expression,
    pub(crate) success_threshold: u32,
    pub(crate) failure_threshold: u32,
}

impl TryFrom<pb::HealthCheck> for HealthCheck {
    type Error = String;

    fn try_from(check: pb::HealthCheck) -> Result<Self, Self::Error> {
        let pb::HealthCheck {
            interval_ms,
            method,
            path,
            override_endpoint_path,
            headers,
            assertion,
            success_threshold,
            failure_threshold,
        } = check;
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("method {method:?}"))?;
        let headers = headers
            .into_iter()
            .map(|pb::Header { name, value }| {
                match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes())) {
                    (Ok(n), Ok(v)) => Ok((n, v)),
                    _ => Err(format!("header {name:?}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let assertion = if assertion.trim().is_empty() { "{#response.status == 200}".to_owned() } else { assertion };
        let assertion = hgw_el::parse(&assertion).map_err(|e| format!("assertion: EL {e}"))?;
        Ok(HealthCheck {
            interval: Duration::from_millis(interval_ms.max(1000)),
            method,
            path: if path.is_empty() { "/".to_owned() } else { path },
            override_endpoint_path,
            headers,
            assertion,
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
        })
    }
}

/// One endpoint's probe state.
#[derive(Debug)]
pub struct EndpointHealth {
    up: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
    /// Epoch milliseconds of the next probe.
    pub(crate) next_due_ms: AtomicI64,
    pub(crate) probing: AtomicBool,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            up: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            next_due_ms: AtomicI64::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl EndpointHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts a probe; returns (up after it, whether it changed the state).
    pub(crate) fn record(&self, success: bool, check: &HealthCheck) -> (bool, bool) {
        let was_up = self.is_up();
        if success {
            self.failures.store(0, Ordering::Relaxed);
            let successes = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            if !was_up && successes >= check.success_threshold {
                self.up.store(true, Ordering::Relaxed);
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if was_up && failures >= check.failure_threshold {
                self.up.store(false, Ordering::Relaxed);
            }
        }
        let up = self.is_up();
        (up, up != was_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(success: u32, failure: u32, override_path: bool) -> HealthCheck {
        HealthCheck::try_from(pb::HealthCheck {
            interval_ms: 1000,
            method: "GET".into(),
            path: "/health".into(),
            override_endpoint_path: override_path,
            headers: vec![],
            assertion: String::new(),
            success_threshold: success,
            failure_threshold: failure,
        })
        .unwrap()
    }

    #[test]
    fn thresholds_move_the_state() {
        let check = check(2, 3, false);
        let health = EndpointHealth::default();
        assert_eq!(health.record(false, &check), (true, false));
        assert_eq!(health.record(false, &check), (true, false));
        assert_eq!(health.record(false, &check), (false, true), "down after 3 failures in a row");
        assert_eq!(health.record(true, &check), (false, false));
        assert_eq!(health.record(false, &check), (false, false), "a failure resets the successes");
        assert_eq!(health.record(true, &check), (false, false));
        assert_eq!(health.record(true, &check), (true, true), "up after 2 successes in a row");
    }
}
