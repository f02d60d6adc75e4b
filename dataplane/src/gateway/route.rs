//! The first phase: match the request to an API of the current route table, decide whether it is
//! traced, answer CORS preflights, then hand it to the [`exchange`](super::exchange).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::Instrument;

use super::Shared;
use super::context::{ConnInfo, Ids, Routed, request_host};
use super::exchange::serve_api;
use super::record::new_record;
use super::respond::{GatewayError, error_response, reply_response};
use super::trace;
use crate::api::routes::{RouteTable, normalise_host};
use crate::http::body::ResponseBody;
use crate::http::limits::{Limits, MIN_READ_BUFFER};
use crate::telemetry::analytics::{PendingRecord, epoch_millis};
use crate::telemetry::metrics::InFlight;
use crate::telemetry::trace::RequestTrace;

/// Gravitee's answer when no API matches, byte for byte.
pub const NO_CONTEXT_PATH: &str = "No context-path matches the request URI.";

/// One request, start to response headers; the body wrapper carries it to the end. The caller
/// counts the response (`Metrics::count_response`): a wrapping `async fn` would copy this future once
/// more per request.
pub async fn route(mut req: Request<Incoming>, conn: &ConnInfo, shared: &Shared) -> Response<ResponseBody> {
    let arrival = Instant::now();
    let timestamp_ms = epoch_millis();
    let in_flight = shared.metrics.in_flight();
    let ids = Ids::new(req.headers());
    if let Some((status, why)) = malformed(&req, &shared.limits) {
        shared.metrics.requests_malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(status, why, &ids, in_flight);
    }
    // One spelling of the path for routes, flows, plans and the endpoint (see `http::path`).
    let exits = match crate::http::path::normalize_request(&mut req, shared.paths) {
        Ok(exits) => exits,
        Err(error) => return bad_path(&error, &ids, in_flight),
    };

    if !shared.is_ready() {
        return error_response(&GatewayError::NotReady, &ids, None, in_flight, None);
    }
    // The request keeps this snapshot (and its APIs and clients) until it is done.
    let table: Arc<RouteTable> = shared.routes.load_full();
    let raw_host = request_host(&req);
    let path = req.uri().path();
    let host = normalise_host(raw_host);
    let found = table.lookup(&host, path);
    // A `..` may not walk a request out of the API it was spelled in (`/pub/../secret/`).
    let left_its_api = exits.iter().any(|exit| {
        table.lookup(&host, exit).is_some_and(|from| found.as_ref().is_none_or(|to| !Arc::ptr_eq(from.api, to.api)))
    });
    if left_its_api {
        return bad_path(&crate::http::path::PathError::OutOfContextPath, &ids, in_flight);
    }
    let Some(found) = found else {
        shared.metrics.unmatched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return not_found(&ids, in_flight);
    };
    let api = found.api.clone();
    let path_info = found.path_info(path).to_owned();
    // The one tracing decision of this request (nothing at all when tracing is off for the API).
    let mut propagate = None;
    let mut request_trace = None;
    if shared.tracing.is_some() {
        let incoming = trace::Incoming {
            method: req.method(),
            path,
            host: raw_host,
            version: req.version(),
            headers: req.headers(),
            remote: conn.remote,
            tls: conn.tls,
            context_path: found.context_path,
            request_id: &ids.request,
            transaction_id: &ids.transaction,
        };
        match trace::start(shared, &api, &incoming, arrival.elapsed()) {
            trace::Start::Off => {}
            trace::Start::Propagate(header) => propagate = Some(header),
            trace::Start::Traced(t) => request_trace = Some(t),
        }
    }
    // The Accept header is kept only for APIs with response templates (it picks the template).
    let accept: Vec<HeaderValue> = match &api.response_templates {
        Some(_) => req.headers().get_all(http::header::ACCEPT).iter().cloned().collect(),
        None => Vec::new(),
    };
    let cors_headers = match &api.cors {
        Some(cors) if crate::api::cors::is_preflight(req.method(), req.headers()) => {
            let reply = cors.preflight(req.headers());
            let record = api.analytics_enabled.then(|| {
                PendingRecord::new(
                    new_record(&req, conn, &ids, &api, &path_info, timestamp_ms, &shared.trusted_proxies),
                    Some(api.record_api.clone()),
                    arrival,
                    shared.analytics.clone(),
                )
            });
            let templates = api.response_templates.as_ref().map(|t| (t, accept.as_slice()));
            let mut response = reply_response(reply, &ids, record, in_flight, templates);
            attach_trace(&mut response, request_trace);
            return response;
        }
        Some(cors) => cors.response_headers(req.headers()),
        None => Vec::new(),
    };
    let log_span = request_trace.as_ref().map_or_else(tracing::Span::none, |t| t.log_span());
    let routed =
        Routed { shared, conn, api, table, path_info, ids, arrival, timestamp_ms, in_flight, accept, propagate };
    let mut response = serve_api(req, routed, &mut request_trace).instrument(log_span).await;
    attach_trace(&mut response, request_trace);
    let headers = response.headers_mut();
    for (name, value) in cors_headers {
        // The endpoint's own Vary (e.g. Accept-Encoding) stays; Access-Control-* are the gateway's.
        if name == http::header::VARY {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
    response
}

/// The response status goes on the SERVER span, which ends with the response body.
fn attach_trace(response: &mut Response<ResponseBody>, trace: Option<Box<RequestTrace>>) {
    if let Some(mut trace) = trace {
        trace.status(response.status());
        response.body_mut().attach_trace(trace);
    }
}

/// 400 for a path that cannot be normalised, before any API is chosen.
fn bad_path(error: &crate::http::path::PathError, ids: &Ids, in_flight: InFlight) -> Response<ResponseBody> {
    refuse(StatusCode::BAD_REQUEST, &format!("Bad request: {error}"), ids, in_flight)
}

/// Why a request is refused for its form before anything else looks at it (status and message), if
/// it is: a request line longer than `--max-initial-line-length` (414, HTTP/1 only, as Gravitee's
/// `http.maxInitialLineLength`), a header block over a `--max-header-size` smaller than hyper's read
/// buffer (431; hyper answers larger ones itself), or a Host missing from an HTTP/1.1 request or
/// repeated in any (400, RFC 9112 §3.2: two readers could pick different ones).
fn malformed(req: &Request<Incoming>, limits: &Limits) -> Option<(StatusCode, &'static str)> {
    // CONNECT asks the gateway itself for a tunnel to wherever the client names: the gateway proxies
    // APIs to their endpoints, so only the WebSocket form of RFC 8441 is served (501, RFC 9110 §15.6.2).
    if req.method() == http::Method::CONNECT && super::websocket::requested(req).is_none() {
        return Some((StatusCode::NOT_IMPLEMENTED, "Not implemented: CONNECT is only served for WebSocket (RFC 8441)"));
    }
    let http1 = req.version() < http::Version::HTTP_2;
    if http1 {
        let uri = req.uri();
        let target = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => scheme.len() + 3 + authority.as_str().len(),
            _ => 0,
        } + uri.path_and_query().map_or(1, |pq| pq.as_str().len());
        // "METHOD SP target SP HTTP/1.1"
        if req.method().as_str().len() + target + 10 > limits.max_initial_line_length {
            return Some((StatusCode::URI_TOO_LONG, "Request-URI too long"));
        }
        if limits.max_header_size < MIN_READ_BUFFER {
            let block = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>()
                + req.method().as_str().len()
                + target
                + 12;
            if block > limits.max_header_size {
                return Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request header fields too large"));
            }
        }
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some((StatusCode::BAD_REQUEST, "Bad request: more than one Host header")),
        (None, None) if req.version() == http::Version::HTTP_11 => {
            Some((StatusCode::BAD_REQUEST, "Bad request: an HTTP/1.1 request needs a Host header"))
        }
        _ => None,
    }
}

/// A refusal in Gravitee's error form (`{"message": …, "http_status_code": …}`).
fn refuse(status: StatusCode, message: &str, ids: &Ids, in_flight: InFlight) -> Response<ResponseBody> {
    let body = serde_json::json!({ "message": message, "http_status_code": status.as_u16() }).to_string();
    let mut response = Response::new(ResponseBody::full(Bytes::from(body), None, in_flight));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    ids.apply(response.headers_mut());
    response
}

fn not_found(ids: &Ids, in_flight: InFlight) -> Response<ResponseBody> {
    let mut response =
        Response::new(ResponseBody::full(Bytes::from_static(NO_CONTEXT_PATH.as_bytes()), None, in_flight));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    ids.apply(response.headers_mut());
    response
}
