//! Active endpoint health checks, run beside the request pipeline: every dataplane probes the
//! endpoints of the APIs it serves, per each endpoint group's [`HealthCheck`], and every probe
//! becomes a health-check record sent to the agent with the analytics (see [`crate::api::health`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hgw_proto::v1 as pb;
use http::{HeaderMap, Request};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::api::health::HealthCheck;
use crate::api::routes::{Api, RouteTable};
use crate::http::body::RequestBody;
use crate::policies::el::{ElContext, RequestInfo};
use crate::telemetry::analytics::epoch_millis;

/// How often the scheduler looks for due probes (the finest probe period is one second).
const TICK: Duration = Duration::from_millis(200);

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
                Ok(Err(error)) => Err(crate::http::upstream::error_chain(&error)),
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
    fn probe_urls_and_default_assertion() {
        assert_eq!(probe_url("http://b:8080/api/v1", &check(1, 1, false)), "http://b:8080/api/v1/health");
        assert_eq!(probe_url("http://b:8080/api/v1", &check(1, 1, true)), "http://b:8080/health");
        assert_eq!(probe_url("http://b:8080", &check(1, 1, true)), "http://b:8080/health");
        let c = check(1, 1, false);
        assert!(assertion_holds(&c, 200, &HeaderMap::new()));
        assert!(!assertion_holds(&c, 503, &HeaderMap::new()));
    }
}
