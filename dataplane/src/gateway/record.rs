//! The request's record: made when the request is routed, filled in by the phases, and emitted by
//! its [`PendingRecord`](crate::telemetry::analytics::PendingRecord) when the response ends.

use hgw_proto::v1::MetricsRecord;
use http::Request;
use http::header::USER_AGENT;
use hyper::body::Incoming;

use super::context::{ConnInfo, Ids, lossy, request_host};
use crate::api::routes::Api;
use crate::http::forwarded::TrustedProxies;

/// The metrics record of a routed request, before security and flows fill in the rest. The API-level
/// fields stay empty: the record goes with the API's shared [`Api::record_api`]. Made in its box (a
/// record is ~1 KB; built on the stack it would be copied into the box).
pub(crate) fn new_record(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    ids: &Ids,
    api: &Api,
    path_info: &str,
    timestamp_ms: i64,
    trusted: &TrustedProxies,
) -> Box<MetricsRecord> {
    let path = req.uri().path();
    let mut record = Box::<MetricsRecord>::default();
    record.timestamp_ms = timestamp_ms;
    record.request_id = lossy(&ids.request);
    record.transaction_id = lossy(&ids.transaction);
    record.http_method = req.method().as_str().to_owned();
    record.local_address = conn.local_ip.as_ref().to_owned();
    record.remote_address = conn.client_address(trusted, req.headers()).into_owned();
    record.host = request_host(req).to_owned();
    // API keys sent in the query string are secrets: the record keeps the parameter, not its value.
    record.uri = req.uri().path_and_query().map_or_else(
        || path.to_owned(),
        |pq| crate::telemetry::redact::mask_query(pq.as_str(), &api.api_keys.query_params).into_owned(),
    );
    record.path_info = path_info.to_owned();
    record.user_agent = req.headers().get(USER_AGENT).map(lossy).unwrap_or_default();
    record
}
