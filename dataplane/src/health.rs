//! Active endpoint health checks (Gravitee's `http-health-check` endpoint-group service).
//!
//! Every dataplane probes the endpoints of the APIs it serves, as each Gravitee gateway does. An
//! endpoint goes DOWN after `failure_threshold` failed probes in a row and is then skipped by load
//! balancing (like an open circuit: secondaries take over when every primary is down); it comes back
//! UP after `success_threshold` good probes. Every probe becomes a health-check record, sent to the
//! agent with the analytics. Probe state lives in the endpoint, so it starts fresh (UP) when an API's
//! configuration changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::analytics::epoch_millis;
use crate::body::RequestBody;
use crate::el::{ElContext, RequestInfo};
use crate::routes::{Api, RouteTable};

/// How often the scheduler looks for due probes (the finest probe period is one second).
const TICK: Duration = Duration::from_millis(200);

/// A compiled health check.
#[derive(Debug)]
pub struct HealthCheck {
    pub interval: Duration,
    method: Method,
    path: String,
    override_endpoint_path: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    assertion: hgw_el::Expression,
    success_threshold: u32,
    failure_threshold: u32,
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
    next_due_ms: AtomicI64,
    probing: AtomicBool,
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
    fn record(&self, success: bool, check: &HealthCheck) -> (bool, bool) {
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

/// Runs probes for every API of the current route table until `cancel`.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let table = shared.routes.load_full();
        let now = epoch_millis();
        for api in table.apis().values() {
            let Some(check) = &api.endpoints.health_check else {
                continue;
            };
            for (index, endpoint) in api.endpoints.endpoints().iter().enumerate() {
                let health = &endpoint.health;
                if health.next_due_ms.load(Ordering::Relaxed) > now || health.probing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                health.next_due_ms.store(now + check.interval.as_millis() as i64, Ordering::Relaxed);
                tokio::spawn(probe(shared.clone(), table.clone(), api.clone(), index));
            }
        }
    }
}

/// One probe of one endpoint, reported as a health-check record.
async fn probe(shared: Arc<Shared>, table: Arc<RouteTable>, api: Arc<Api>, index: usize) {
    let (Some(check), Some(endpoint)) = (&api.endpoints.health_check, api.endpoints.endpoints().get(index)) else {
        return;
    };
    let url = probe_url(&endpoint.target.url_for("", None), check);
    let started = Instant::now();
    let outcome = match (table.client(&endpoint.client_key), url.parse::<http::Uri>()) {
        (Some(client), Ok(uri)) => {
            let mut request = Request::new(RequestBody::empty());
            *request.method_mut() = check.method.clone();
            *request.uri_mut() = uri;
            for (name, value) in endpoint.headers.iter().chain(check.headers.iter()) {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            match tokio::time::timeout(endpoint.http.read_timeout, client.request(request)).await {
                Ok(Ok(response)) => Ok((response.status().as_u16(), response.headers().clone())),
                Ok(Err(error)) => Err(crate::upstream::error_chain(&error)),
                Err(_) => Err("timed out".to_owned()),
            }
        }
        (None, _) => Err("no client for the endpoint".to_owned()),
        (_, Err(error)) => Err(format!("invalid probe URL {url:?}: {error}")),
    };
    let response_time_ms = started.elapsed().as_millis() as i64;
    let (success, status, message) = match outcome {
        Ok((status, headers)) => {
            let held = assertion_holds(check, status, &headers);
            let message = if held { String::new() } else { format!("assertion {} not met", check.assertion.source()) };
            (held, status, message)
        }
        Err(message) => (false, 0, message),
    };
    let (up, transition) = endpoint.health.record(success, check);
    endpoint.health.probing.store(false, Ordering::Release);
    if transition {
        tracing::info!(api = %api.id, endpoint = %endpoint.name, state = if up { "UP" } else { "DOWN" }, "endpoint health changed");
    }
    shared.analytics.health(pb::HealthCheckRecord {
        timestamp_ms: epoch_millis(),
        api_id: api.id.clone(),
        api_name: api.name.clone(),
        endpoint: endpoint.name.clone(),
        uri: url,
        method: check.method.as_str().to_owned(),
        available: up,
        success,
        response_time_ms,
        state: if up { "UP" } else { "DOWN" }.to_owned(),
        transition,
        status: u32::from(status),
        message,
    });
}

/// The probe URL: the check path appended to the target, or on the target's origin alone.
fn probe_url(target: &str, check: &HealthCheck) -> String {
    if check.override_endpoint_path {
        let origin_end =
            target.find("://").map(|i| i + 3).and_then(|start| target[start..].find('/').map(|p| start + p));
        let origin = origin_end.map_or(target, |end| &target[..end]);
        return format!("{origin}{}", check.path);
    }
    let base = target.split('?').next().unwrap_or(target).trim_end_matches('/');
    format!("{base}{}", check.path)
}

fn assertion_holds(check: &HealthCheck, status: u16, headers: &HeaderMap) -> bool {
    let info = RequestInfo::default();
    ElContext::response(&info, &[], status, headers).holds(&check.assertion)
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

    #[test]
    fn probe_urls_and_default_assertion() {
        assert_eq!(probe_url("http://b:8080/api/v1", &check(1, 1, false)), "http://b:8080/api/v1/health");
        assert_eq!(probe_url("http://b:8080/api/v1", &check(1, 1, true)), "http://b:8080/health");
        assert_eq!(probe_url("http://b:8080", &check(1, 1, true)), "http://b:8080/health");
        let c = check(1, 1, false);
        assert!(assertion_holds(&c, 200, &HeaderMap::new()));
        assert!(!assertion_holds(&c, 503, &HeaderMap::new()));
    }
}
