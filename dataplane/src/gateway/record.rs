//! The request's record: made when the request is routed, filled in by the phases, and emitted by
//! its [`PendingRecord`](crate::telemetry::analytics::PendingRecord) when the response ends.

use std::borrow::Cow;

use http::Request;
use http::header::USER_AGENT;
use hyper::body::Incoming;

use super::context::{ConnInfo, Ids, request_host};
use crate::api::routes::Api;
use crate::http::forwarded::TrustedProxies;
use crate::telemetry::redact::mask_query;
use crate::telemetry::request_metrics::{ArrivalTexts, RequestMetrics, RequestTexts};

/// The metrics record of a routed request, before security and flows fill in the rest. Its API
/// goes with it as the API's shared [`Api::record_api`]. Made in its box (built on the stack it would
/// be copied into the box).
pub(crate) fn new_record(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    ids: &Ids,
    api: &Api,
    path_info: &str,
    timestamp_ms: i64,
    trusted: &TrustedProxies,
) -> Box<RequestMetrics> {
    let mut record = Box::<RequestMetrics>::default();
    record.timestamp_ms = timestamp_ms;
    record.request_id = ids.request.clone();
    record.transaction_id = ids.own_transaction();
    record.method = req.method().clone();
    record.local_address = conn.local_ip.clone();
    record.remote_address = conn.client_address_shared(trusted, req.headers());
    // API keys sent in the query string are secrets: the record keeps the parameter, not its value
    // (only a query is searched for them).
    let uri = match req.uri().path_and_query() {
        Some(pq) if pq.query().is_some() => mask_query(pq.as_str(), &api.api_keys.query_params),
        Some(pq) => Cow::Borrowed(pq.as_str()),
        None => Cow::Borrowed(req.uri().path()),
    };
    record.texts = ArrivalTexts::new(RequestTexts {
        host: request_host(req),
        uri: &uri,
        path_info,
        user_agent: req.headers().get(USER_AGENT).map_or(&[], |v| v.as_bytes()),
    });
    record
}
