//! The request's record: made when the request is routed, filled in by the phases, and emitted by
//! its [`PendingRecord`](crate::telemetry::analytics::PendingRecord) when the response ends.

use hgw_proto::v1::MetricsRecord;
use http::Request;
use http::header::USER_AGENT;
use hyper::body::Incoming;

use super::context::{ConnInfo, Ids, lossy, request_host};
use crate::api::routes::Api;
use crate::http::forwarded::TrustedProxies;

/// The metrics record of a routed request, before security and flows fill in the rest.
pub(crate) fn new_record(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    ids: &Ids,
    api: &Api,
    path_info: &str,
    timestamp_ms: i64,
    trusted: &TrustedProxies,
) -> MetricsRecord {
    let path = req.uri().path();
    MetricsRecord {
        timestamp_ms,
        request_id: lossy(&ids.request),
        transaction_id: lossy(&ids.transaction),
        api_id: api.id.clone(),
        api_name: api.name.clone(),
        api_type: "proxy".to_owned(),
        organization_id: api.organization_id.clone(),
        environment_id: api.environment_id.clone(),
        http_method: req.method().as_str().to_owned(),
        local_address: conn.local_ip.as_ref().to_owned(),
        remote_address: conn.client_address(trusted, req.headers()).into_owned(),
        host: request_host(req).to_owned(),
        // API keys sent in the query string are secrets: the record keeps the parameter, not its value.
        uri: req.uri().path_and_query().map_or_else(
            || path.to_owned(),
            |pq| crate::telemetry::redact::mask_query(pq.as_str(), &api.api_keys.query_params).into_owned(),
        ),
        path_info: path_info.to_owned(),
        user_agent: req.headers().get(USER_AGENT).map(lossy).unwrap_or_default(),
        entrypoint_id: "http-proxy".to_owned(),
        ..Default::default()
    }
}
