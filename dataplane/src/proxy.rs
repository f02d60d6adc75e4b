//! The HTTP proxy: accept connections (HTTP/1.1 and h2c), match a route, run the request flows, call
//! the endpoint with the body streamed both ways, and answer Gravitee's error keys when it cannot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hgw_proto::v1::MetricsRecord;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::Shared;
use crate::analytics::{PendingRecord, epoch_millis};
use crate::body::{RequestBody, ResponseBody};
use crate::el::{ElContext, RequestInfo};
use crate::flows::Flow;
use crate::invoke;
use crate::metrics::InFlight;
use crate::policies::{Attributes, Outcome, Reply, RequestExchange, ResponseExchange};
use crate::routes::{RouteTable, normalise_host};
use crate::templates::ResponseTemplates;
use crate::trace::{self, RequestTrace};
use crate::upstream::UpstreamError;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-gravitee-request-id");
pub const X_TRANSACTION_ID: HeaderName = HeaderName::from_static("x-gravitee-transaction-id");

/// Gravitee's answer when no API matches, byte for byte.
pub const NO_CONTEXT_PATH: &str = "No context-path matches the request URI.";

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the legacy ones).
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Errors the gateway answers itself, with Gravitee's keys and statuses.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("The gateway is not ready: waiting for its first configuration")]
    NotReady,
    #[error("No endpoint available")]
    NoEndpoint,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl GatewayError {
    /// Gravitee's error key (also the label a response template would use).
    pub fn key(&self) -> &'static str {
        match self {
            GatewayError::NotReady => "GATEWAY_NOT_READY",
            GatewayError::NoEndpoint => "NO_ENDPOINT_FOUND",
            GatewayError::Upstream(UpstreamError::ReadTimeout) => "REQUEST_TIMEOUT",
            GatewayError::Upstream(UpstreamError::ConnectTimeout) => "UPSTREAM_CONNECT_TIMEOUT",
            GatewayError::Upstream(UpstreamError::ConnectionRefused) => "UPSTREAM_CONNECTION_REFUSED",
            GatewayError::Upstream(UpstreamError::Connection(_)) => "GATEWAY_CLIENT_CONNECTION_ERROR",
            GatewayError::Upstream(UpstreamError::Tls(_)) => "UPSTREAM_TLS_FAILURE",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotReady | GatewayError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Upstream(UpstreamError::ReadTimeout | UpstreamError::ConnectTimeout) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the client reads: causes stay in logs and the metrics record, not in responses.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::Upstream(UpstreamError::Connection(_) | UpstreamError::Tls(_)) => "Bad gateway".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The two addresses of a client connection, and their text made once per connection: analytics
/// records, EL and key-less subscriptions read it on every request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_ip: Arc<str>,
    pub remote_ip: Arc<str>,
}

impl ConnInfo {
    pub fn new(local: SocketAddr, remote: SocketAddr) -> ConnInfo {
        ConnInfo { local, remote, local_ip: local.ip().to_string().into(), remote_ip: remote.ip().to_string().into() }
    }
}

/// Accepts connections until `shutdown`, then lets them finish until `grace` runs out.
/// Returns the grace deadline, which also bounds the analytics flush that follows.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Instant {
    // auto::Builder serves HTTP/1.1 and, on the h2 preface, HTTP/2 with prior knowledge (h2c).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper closes HTTP/1 connections that do not send their headers within 30 s.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let conn = Arc::new(ConnInfo::new(local, remote));
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let (shared, conn) = (shared.clone(), conn.clone());
            // Boxed once here: the request's future is large, and hyper would otherwise move it.
            Box::pin(async move { Ok::<_, Infallible>(handle(req, &conn, &shared).await) })
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(error = %error, %remote, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    tracing::info!(connections = graceful.count(), grace_ms = grace.as_millis() as u64, "draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all client connections drained"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!("shutdown grace period over; abandoning the remaining connections"),
    }
    deadline
}

/// Request and transaction ids, as header values ready to copy.
struct Ids {
    request: HeaderValue,
    transaction: HeaderValue,
}

impl Ids {
    fn new(headers: &HeaderMap) -> Ids {
        // Encoded into a stack buffer: no formatting machinery and no String per request.
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
        let request = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
        let transaction =
            headers.get(&X_TRANSACTION_ID).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| request.clone());
        Ids { request, transaction }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID, self.request.clone());
        headers.insert(X_TRANSACTION_ID, self.transaction.clone());
    }
}

/// One request, start to response headers; the body wrapper carries it to the end.
pub async fn handle(req: Request<Incoming>, conn: &ConnInfo, shared: &Shared) -> Response<ResponseBody> {
    let response = route(req, conn, shared).await;
    shared.metrics.count_response(response.status());
    response
}

async fn route(mut req: Request<Incoming>, conn: &ConnInfo, shared: &Shared) -> Response<ResponseBody> {
    let arrival = Instant::now();
    let timestamp_ms = epoch_millis();
    let in_flight = shared.metrics.in_flight();
    let ids = Ids::new(req.headers());
    // One spelling of the path for routes, flows, plans and the endpoint (see `path`).
    if let Err(error) = crate::path::normalize_request(&mut req) {
        return bad_path(&error, &ids, in_flight);
    }

    if !shared.is_ready() {
        return error_response(&GatewayError::NotReady, &ids, None, in_flight, None);
    }
    // The request keeps this snapshot (and its APIs and clients) until it is done.
    let table: Arc<RouteTable> = shared.routes.load_full();
    let raw_host = request_host(&req);
    let path = req.uri().path();
    let Some(found) = table.lookup(&normalise_host(raw_host), path) else {
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
        Some(cors) if crate::cors::is_preflight(req.method(), req.headers()) => {
            let reply = cors.preflight(req.headers());
            let record = api.analytics_enabled.then(|| {
                PendingRecord::new(
                    new_record(&req, conn, &ids, &api, &path_info, timestamp_ms),
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

/// A routed request's context through the phases after routing (security, request flows, the
/// endpoint call, response flows, the record): what routing found and what every phase reads.
struct Routed<'a> {
    shared: &'a Shared,
    conn: &'a ConnInfo,
    api: Arc<crate::routes::Api>,
    /// The route table snapshot the request keeps (its APIs and clients) until it is done.
    table: Arc<RouteTable>,
    path_info: String,
    ids: Ids,
    arrival: Instant,
    timestamp_ms: i64,
    in_flight: InFlight,
    /// The client's Accept values, kept only for APIs with response templates.
    accept: Vec<HeaderValue>,
    /// For an unsampled request without trace context: the `traceparent` the endpoint gets.
    propagate: Option<HeaderValue>,
}

/// The response status goes on the SERVER span, which ends with the response body.
fn attach_trace(response: &mut Response<ResponseBody>, trace: Option<Box<RequestTrace>>) {
    if let Some(mut trace) = trace {
        trace.status(response.status());
        response.body_mut().attach_trace(trace);
    }
}

/// The metrics record of a routed request, before security and flows fill in the rest.
fn new_record(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    ids: &Ids,
    api: &crate::routes::Api,
    path_info: &str,
    timestamp_ms: i64,
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
        remote_address: conn.remote_ip.as_ref().to_owned(),
        host: request_host(req).to_owned(),
        // API keys sent in the query string are secrets: the record keeps the parameter, not its value.
        uri: req.uri().path_and_query().map_or_else(
            || path.to_owned(),
            |pq| crate::redact::mask_query(pq.as_str(), &api.api_keys.query_params).into_owned(),
        ),
        path_info: path_info.to_owned(),
        user_agent: req.headers().get(USER_AGENT).map(lossy).unwrap_or_default(),
        entrypoint_id: "http-proxy".to_owned(),
        ..Default::default()
    }
}

/// Everything after routing: security, flows, the endpoint call and the response phase. The
/// request's trace gets spans when it is sampled; the caller attaches it to the response.
async fn serve_api(
    req: Request<Incoming>,
    routed: Routed<'_>,
    trace: &mut Option<Box<RequestTrace>>,
) -> Response<ResponseBody> {
    let Routed { shared, conn, api, table, path_info, ids, arrival, timestamp_ms, in_flight, accept, propagate } =
        routed;
    let accept = accept.as_slice();
    let templates = api.response_templates.as_ref().map(|t| (t, accept));
    let mut record = api.analytics_enabled.then(|| {
        PendingRecord::new(
            new_record(&req, conn, &ids, &api, &path_info, timestamp_ms),
            arrival,
            shared.analytics.clone(),
        )
    });

    let (mut parts, body) = req.into_parts();
    // What EL reads; filled only for APIs that use EL, so other requests pay nothing for it.
    let mut info = RequestInfo::default();
    if api.uses_el {
        info = RequestInfo {
            path: parts.uri.path().to_owned(),
            path_info: path_info.clone(),
            method: parts.method.as_str().to_owned(),
            host: request_host_of(&parts).to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            remote_address: conn.remote_ip.as_ref().to_owned(),
            local_address: conn.local_ip.as_ref().to_owned(),
            request_id: lossy(&ids.request),
            transaction_id: lossy(&ids.transaction),
            api_id: api.id.clone(),
            api_name: api.name.clone(),
            headers: HeaderMap::new(),
        };
    }
    // The log captures the request as the client sent it, before security and flows change it.
    if let (Some(logging), Some(r)) = (&api.logging, record.as_mut()) {
        let applies = logging
            .condition
            .as_ref()
            .is_none_or(|condition| ElContext::request(&info, &parts.headers, &[], &[]).holds(condition));
        if applies {
            let masking = crate::logging::Masking {
                headers: shared.analytics.log_masked_headers().clone(),
                api_keys: api.api_keys.clone(),
            };
            r.set_log(logging.capture(
                &parts.method,
                &parts.uri,
                &parts.headers,
                shared.analytics.log_max_payload(),
                masking,
            ));
        }
    }
    let security_span = trace.as_ref().map(|t| t.child("security", hgw_otel::SpanKind::Internal));
    let authenticated = match api.security.authenticate(&mut parts, &conn.remote_ip, timestamp_ms, &info) {
        Ok(authenticated) => authenticated,
        Err(reply) => {
            if let (Some(t), Some(mut span)) = (trace.as_mut(), security_span) {
                span.error(reply.error_key.unwrap_or("refused"));
                if let Some(key) = reply.error_key {
                    span.set("gravitee.error.key", key);
                }
                t.end(span);
            }
            trace::note_error(trace, reply.error_key);
            return reply_response(reply, &ids, record, in_flight, templates);
        }
    };
    let plan = authenticated.plan;
    let subscription_id = authenticated.subscription;
    if let (Some(t), Some(mut span)) = (trace.as_mut(), security_span) {
        span.set("gravitee.plan.id", plan.id.clone());
        span.set("gravitee.security.type", plan.security_type());
        t.end(span);
        t.set("gravitee.plan.id", plan.id.clone());
        t.set("gravitee.application.id", authenticated.application.clone());
        t.set("gravitee.subscription.id", subscription_id.clone());
    }
    if let Some(r) = record.as_mut() {
        let rec = r.record_mut();
        rec.plan_id = plan.id.clone();
        rec.security_type = plan.security_type().to_owned();
        rec.client_identifier = subscription_id.clone();
        rec.application_id = authenticated.application;
        rec.user = authenticated.user.unwrap_or_default();
        rec.subscription_id = subscription_id.clone();
    }

    // Gravitee's order: plan flows, then API flows, in both phases. A flow applies when its method
    // and path match and its EL condition (if any) holds; its `:params` are captured for EL.
    let mut attributes = Attributes::new();
    // In best-match mode only the most specific applicable flow runs, one among the plan's flows and
    // one among the API's.
    let mut flows: Vec<(&Flow, Vec<(String, String)>)> = Vec::new();
    for group in [&plan.flows, &api.flows] {
        let first = flows.len();
        for flow in group.iter().filter(|flow| flow.matches(&parts.method, &path_info)) {
            if api.best_match && flows.get(first).is_some_and(|(best, _)| !flow.more_specific_than(best)) {
                continue;
            }
            let params = if api.uses_el { flow.path_params(&path_info) } else { Vec::new() };
            if let Some(condition) = &flow.condition
                && !ElContext::request(&info, &parts.headers, &params, &attributes).holds(condition)
            {
                continue;
            }
            if api.best_match {
                flows.truncate(first);
            }
            flows.push((flow, params));
        }
    }
    let mut extra_headers = Vec::new();
    let verbose = trace.as_ref().is_some_and(|t| t.verbose);
    let request_span = trace.as_ref().map(|t| t.child("request", hgw_otel::SpanKind::Internal));
    {
        let mut exchange = RequestExchange {
            parts: &mut parts,
            peer_ip: conn.remote.ip(),
            attributes: &mut attributes,
            api_id: &api.id,
            plan_id: &plan.id,
            subscription_id: &subscription_id,
            counters: &shared.counters,
            now_ms: timestamp_ms,
            response_headers: &mut extra_headers,
            info: &info,
            path_params: &[],
        };
        for (flow, params) in &flows {
            exchange.path_params = params;
            for step in &flow.request {
                if let Some(condition) = &step.condition
                    && !exchange.el().holds(condition)
                {
                    continue;
                }
                let policy_span = match (verbose, trace.as_ref(), request_span.as_ref()) {
                    (true, Some(t), Some(phase)) => Some(step_span(t, phase, step, "request")),
                    _ => None,
                };
                let outcome = match step.policy.on_request(&mut exchange) {
                    Outcome::Continue => None,
                    Outcome::Respond(reply) => Some(reply),
                    Outcome::Wait(pending) => {
                        let verdict = pending.await;
                        exchange.response_headers.extend(verdict.headers);
                        if let (Some(warning), Some(r)) = (verdict.warning, record.as_mut()) {
                            r.warn(warning);
                        }
                        verdict.reply
                    }
                };
                if let (Some(t), Some(mut span)) = (trace.as_mut(), policy_span) {
                    if let Some(key) = outcome.as_ref().and_then(|reply| reply.error_key) {
                        span.error(key);
                        span.set("gravitee.error.key", key);
                    }
                    t.end(span);
                }
                let Some(mut reply) = outcome else {
                    continue;
                };
                reply.headers.append(exchange.response_headers);
                if let (Some(t), Some(span)) = (trace.as_mut(), request_span) {
                    t.end(span);
                }
                trace::note_error(trace, reply.error_key);
                return reply_response(reply, &ids, record, in_flight, templates);
            }
        }
    }
    if let (Some(t), Some(span)) = (trace.as_mut(), request_span) {
        t.end(span);
    }
    if api.uses_el && flows.iter().any(|(flow, _)| !flow.response.is_empty()) {
        // Response-phase expressions see the request as it was sent upstream.
        info.headers = parts.headers.clone();
    }

    let (body, stats) = RequestBody::new(body, record.as_ref().and_then(PendingRecord::request_capture));
    if let Some(r) = record.as_mut() {
        r.set_request_stats(stats);
    }

    let client_host = parts
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    ids.apply(&mut headers);
    if let Some(traceparent) = propagate {
        headers.insert(hgw_otel::context::TRACEPARENT, traceparent);
    }
    let outbound = invoke::Outbound {
        client_host,
        method: parts.method,
        path_info,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    let response = match invoke::invoke(&api, &table, outbound, record.as_mut(), trace.as_deref_mut()).await {
        Ok(response) => response,
        Err(error) => {
            trace::note_error(trace, Some(error.key()));
            return error_response(&error, &ids, record, in_flight, templates);
        }
    };
    let (mut parts, body) = response.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    let response_span = trace.as_ref().map(|t| t.child("response", hgw_otel::SpanKind::Internal));
    {
        let mut exchange =
            ResponseExchange { status: &mut parts.status, headers: &mut headers, attributes: &attributes, info: &info };
        for step in flows.iter().flat_map(|(flow, _)| flow.response.iter()) {
            if let Some(condition) = &step.condition
                && !exchange.el().holds(condition)
            {
                continue;
            }
            let policy_span = match (verbose, trace.as_ref(), response_span.as_ref()) {
                (true, Some(t), Some(phase)) => Some(step_span(t, phase, step, "response")),
                _ => None,
            };
            step.policy.on_response(&mut exchange);
            if let (Some(t), Some(span)) = (trace.as_mut(), policy_span) {
                t.end(span);
            }
        }
    }
    if let (Some(t), Some(span)) = (trace.as_mut(), response_span) {
        t.end(span);
    }
    if let Some(r) = record.as_mut() {
        r.record_mut().status = u32::from(parts.status.as_u16());
    }
    for (name, value) in extra_headers {
        headers.insert(name, value);
    }
    ids.apply(&mut headers);
    let rewriters: Vec<&crate::flows::Step> =
        flows.iter().flat_map(|(flow, _)| flow.response.iter()).filter(|step| step.policy.rewrites_body()).collect();
    if let Some(log) = record.as_mut().and_then(PendingRecord::log_mut) {
        log.entrypoint_response(parts.status, &headers);
        if rewriters.is_empty() {
            log.response_from_endpoint();
        }
    }
    let body = if rewriters.is_empty() {
        ResponseBody::upstream(body, record, in_flight)
    } else {
        match rewrite_body(body, &mut headers, &rewriters, &info, &attributes, parts.status).await {
            Ok(content) => ResponseBody::full(content, record, in_flight),
            Err(error) => {
                let error = GatewayError::Upstream(UpstreamError::Connection(error));
                trace::note_error(trace, Some(error.key()));
                return error_response(&error, &ids, record, in_flight, templates);
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    response
}

/// The span of one policy step (verbose tracing), named by its Gravitee policy id.
fn step_span(
    trace: &RequestTrace,
    phase: &hgw_otel::Span,
    step: &crate::flows::Step,
    phase_name: &'static str,
) -> hgw_otel::Span {
    let mut span = trace.child_of(phase, step.policy_id);
    span.set("gravitee.policy.id", step.policy_id);
    if !step.name.is_empty() {
        span.set("gravitee.step.name", step.name.clone());
    }
    span.set("gravitee.flow.phase", phase_name);
    span
}

/// Largest response body `url-rewriting` buffers (Gravitee buffers whole bodies; hgw bounds it).
const MAX_REWRITTEN_BODY: usize = 16 * 1024 * 1024;

/// Buffers the upstream body and applies the body rewriters in order. A body that is not UTF-8 text
/// is passed on unchanged; one larger than [`MAX_REWRITTEN_BODY`] is an error (502), never truncated.
async fn rewrite_body(
    body: Incoming,
    headers: &mut HeaderMap,
    rewriters: &[&crate::flows::Step],
    info: &RequestInfo,
    attributes: &Attributes,
    status: http::StatusCode,
) -> Result<bytes::Bytes, String> {
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, MAX_REWRITTEN_BODY)
        .collect()
        .await
        .map_err(|e| format!("response body for url-rewriting: {e}"))?
        .to_bytes();
    let Ok(text) = std::str::from_utf8(&collected) else {
        return Ok(collected);
    };
    let mut current: Option<String> = None;
    for step in rewriters {
        let el = ElContext::response(info, attributes, status.as_u16(), headers);
        if let Some(condition) = &step.condition
            && !el.holds(condition)
        {
            continue;
        }
        if let Some(rewritten) = step.policy.rewrite_body(current.as_deref().unwrap_or(text), &el) {
            current = Some(rewritten);
        }
    }
    let Some(rewritten) = current else {
        return Ok(collected);
    };
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    Ok(bytes::Bytes::from(rewritten))
}

/// The Host the client asked for: the Host header, or the HTTP/2 :authority.
fn request_host<B>(req: &Request<B>) -> &str {
    host_of(req.headers(), req.uri())
}

fn request_host_of(parts: &http::request::Parts) -> &str {
    host_of(&parts.headers, &parts.uri)
}

fn host_of<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> &'a str {
    headers.get(HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str())).unwrap_or("")
}

/// Removes hop-by-hop headers (and those `Connection` names) and Host, in place: the map then moves
/// on to the other side without a copy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named_by_connection: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named_by_connection {
            headers.remove(name);
        }
    }
    // Usually only Host is there: one pass over the names, then one removal per name found.
    let mut found: [Option<HeaderName>; 8] = Default::default();
    for (slot, name) in found.iter_mut().zip(headers.keys().filter(|name| *name == HOST || HOP_BY_HOP.contains(name))) {
        *slot = Some(name.clone());
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// An API's response templates with the request's Accept values.
type Templates<'a> = Option<(&'a ResponseTemplates, &'a [HeaderValue])>;

/// A response the gateway makes itself: a policy's answer (mock) or refusal (with its error key),
/// which the API's response template for that key replaces.
fn reply_response(
    reply: Reply,
    ids: &Ids,
    mut record: Option<PendingRecord>,
    in_flight: InFlight,
    templates: Templates<'_>,
) -> Response<ResponseBody> {
    let Reply { mut status, mut headers, mut body, error_key, error_message } = reply;
    if let (Some(key), Some((templates, accept))) = (error_key, templates)
        && let Some(template) = templates.select(key, accept)
    {
        body = template.apply(&mut status, &mut headers);
    }
    let mut response_headers = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        response_headers.append(name, value);
    }
    ids.apply(&mut response_headers);
    if let Some(r) = record.as_mut() {
        let rec = r.record_mut();
        rec.status = u32::from(status.as_u16());
        if let Some(key) = error_key {
            rec.error_key = key.to_owned();
        }
        if let Some(message) = error_message {
            rec.error_message = message;
        }
        if let Some(log) = r.log_mut() {
            log.entrypoint_response(status, &response_headers);
        }
    }
    let mut response = Response::new(ResponseBody::full(body, record, in_flight));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}

/// 400 for a path that cannot be normalised, before any API is chosen.
fn bad_path(error: &crate::path::PathError, ids: &Ids, in_flight: InFlight) -> Response<ResponseBody> {
    let body = serde_json::json!({ "message": format!("Bad request: {error}"), "http_status_code": 400 }).to_string();
    let mut response = Response::new(ResponseBody::full(Bytes::from(body), None, in_flight));
    *response.status_mut() = StatusCode::BAD_REQUEST;
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

/// Gravitee's JSON error body: `{"message":"...","http_status_code":N}` (or the API's template).
fn error_response(
    error: &GatewayError,
    ids: &Ids,
    record: Option<PendingRecord>,
    in_flight: InFlight,
    templates: Templates<'_>,
) -> Response<ResponseBody> {
    let status = error.status();
    let body = serde_json::json!({
        "message": error.public_message(),
        "http_status_code": status.as_u16(),
    })
    .to_string();
    let reply = Reply {
        status,
        headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body: Bytes::from(body),
        error_key: Some(error.key()),
        error_message: Some(error.to_string()),
    };
    reply_response(reply, ids, record, in_flight, templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_host_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("client.example"));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        let mut out = h;
        strip_hop_by_hop(&mut out);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["accept"]);
        assert_eq!(out.get_all("accept").iter().count(), 2);
    }

    #[test]
    fn transaction_id_is_kept_or_defaults_to_request_id() {
        let ids = Ids::new(&HeaderMap::new());
        assert_eq!(ids.request, ids.transaction);
        assert_eq!(ids.request.len(), 36);
        let mut h = HeaderMap::new();
        h.insert(X_TRANSACTION_ID, HeaderValue::from_static("tx-1"));
        let ids = Ids::new(&h);
        assert_eq!(ids.transaction, "tx-1");
        assert_ne!(ids.request, "tx-1");
    }

    #[test]
    fn error_keys_and_statuses() {
        let cases = [
            (GatewayError::NotReady, "GATEWAY_NOT_READY", 503),
            (GatewayError::NoEndpoint, "NO_ENDPOINT_FOUND", 503),
            (UpstreamError::ReadTimeout.into(), "REQUEST_TIMEOUT", 504),
            (UpstreamError::ConnectTimeout.into(), "UPSTREAM_CONNECT_TIMEOUT", 504),
            (UpstreamError::ConnectionRefused.into(), "UPSTREAM_CONNECTION_REFUSED", 502),
            (UpstreamError::Connection("x".into()).into(), "GATEWAY_CLIENT_CONNECTION_ERROR", 502),
            (UpstreamError::Tls("x".into()).into(), "UPSTREAM_TLS_FAILURE", 502),
        ];
        for (error, key, status) in cases {
            assert_eq!((error.key(), error.status().as_u16()), (key, status));
        }
        let refused: GatewayError = UpstreamError::ConnectionRefused.into();
        assert_eq!(refused.public_message(), "The upstream refused the connection");
    }
}
