//! Calling the endpoint: pick one (load balancer, circuit breakers, secondaries), build the upstream
//! request, send it with its time limit, and with failover retry on another endpoint.
//!
//! Only connection failures and timeouts are failures, as in Gravitee: an HTTP error status from the
//! endpoint is an answer. A retry needs the request body again, so with failover a small body (up to
//! [`MAX_REPLAY_BODY`]) is read into memory first; a larger or unknown-length body streams through
//! once, without retry.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::respond::GatewayError;
use crate::api::endpoints::{Circuit, Endpoint, EndpointGroup, Permit, Selected, Tried};
use crate::api::routes::{Api, RouteTable};
use crate::http::body::{ClientBodyError, RequestBody};
use crate::http::decompress::{self, Coding, UpstreamBody};
use crate::http::upstream::{ClientKey, UpstreamError, error_chain};
use crate::telemetry::analytics::{ClientFault, PendingRecord};
use crate::telemetry::trace::{self, RequestTrace};

/// Largest request body kept in memory so failover can send it again (bytes). Larger bodies stream.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// What the proxy hands over: the request as it should reach any endpoint.
#[derive(Debug)]
pub struct Outbound {
    pub method: Method,
    /// The path after the context path (appended to the endpoint's target).
    pub path_info: String,
    pub query: Option<String>,
    /// Headers to forward: hop-by-hop ones removed, the gateway's ids added, no Host.
    pub headers: HeaderMap,
    /// The client's Host (header or `:authority`), for endpoints that propagate it.
    pub client_host: Option<HeaderValue>,
    pub body: RequestBody,
    /// A WebSocket handshake: sent on an HTTP/1.1 connection of its own, which a `101` hands over.
    pub upgrade: bool,
    /// Where `dynamic-routing` sent the request (`None`: the API's default group).
    pub endpoint_target: Option<String>,
}

/// Where a request goes, read from dynamic routing's target as Gravitee's endpoint invoker reads it.
enum Destination<'a> {
    /// The group's load balancer picks; `path` (with its query) replaces the path below the context
    /// path when dynamic routing gave one.
    Group { group: &'a EndpointGroup, path: Option<&'a str> },
    /// The endpoint called `name` and no other.
    Endpoint { group: &'a EndpointGroup, name: &'a str, path: &'a str },
    /// An absolute URL, called with the client of the default group's pick.
    Absolute(&'a str),
}

impl<'a> Destination<'a> {
    /// `name:rest` names an endpoint (first) or an endpoint group, unless `name` is a URL scheme
    /// (`http`, `https`, `ws`, `wss`: the whole text is an absolute URL); anything else is a path for
    /// the default group. An unknown name is `None` (Gravitee: 503 NO_ENDPOINT_FOUND).
    fn of(api: &'a Api, target: Option<&'a str>) -> Option<Destination<'a>> {
        let Some(target) = target else {
            return Some(Destination::Group { group: &api.endpoints, path: None });
        };
        let Some((name, rest)) = target.split_once(':').filter(|(name, _)| !name.is_empty() && !name.starts_with('/'))
        else {
            return Some(Destination::Group { group: &api.endpoints, path: Some(target) });
        };
        if ["http", "https", "ws", "wss"].iter().any(|scheme| name.eq_ignore_ascii_case(scheme)) {
            return Some(Destination::Absolute(target));
        }
        if let Some(group) = api.groups().find(|g| g.endpoints().iter().any(|e| e.name == name)) {
            return Some(Destination::Endpoint { group, name, path: rest });
        }
        api.groups().find(|g| g.name == name).map(|group| Destination::Group { group, path: Some(rest) })
    }

    /// The endpoint this destination calls now: the one it names, else the group's load balancer's
    /// pick among those not `tried`.
    fn pick(&self, group: &'a EndpointGroup, tried: &Tried) -> Option<Selected<'a>> {
        match self {
            Destination::Endpoint { name, .. } => group.select_named(name, Instant::now()).flatten(),
            _ => group.select(tried, Instant::now()),
        }
    }

    fn group(&self, api: &'a Api) -> &'a EndpointGroup {
        match self {
            Destination::Group { group, .. } | Destination::Endpoint { group, .. } => group,
            Destination::Absolute(_) => &api.endpoints,
        }
    }

    /// The URL for `endpoint`: its target + the path (the request's below the context path, or
    /// dynamic routing's) + the request's query, then the routed target's own query.
    fn url(&self, endpoint: &Endpoint, path_info: &str, query: Option<&str>) -> String {
        let routed = match self {
            Destination::Group { path: None, .. } => return endpoint.target.url_for(path_info, query),
            Destination::Group { path: Some(path), .. } | Destination::Endpoint { path, .. } => path,
            Destination::Absolute(url) => url,
        };
        let (path, routed_query) = match routed.split_once('?') {
            Some((path, q)) => (path, Some(q)),
            None => (*routed, None),
        };
        let query = match (query.filter(|q| !q.is_empty()), routed_query.filter(|q| !q.is_empty())) {
            (Some(a), Some(b)) => Some(format!("{a}&{b}")),
            (a, b) => a.or(b).map(str::to_owned),
        };
        match self {
            Destination::Absolute(_) => match query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            },
            _ => endpoint.target.url_for(path, query.as_deref()),
        }
    }
}

/// The request body for one or more attempts.
enum Payload {
    /// Can be sent once only.
    Once(Option<RequestBody>),
    /// In memory: every attempt sends a copy.
    Replay(Bytes),
}

impl Payload {
    fn take(&mut self) -> Option<RequestBody> {
        match self {
            Payload::Once(body) => body.take(),
            Payload::Replay(bytes) => Some(RequestBody::buffered(bytes.clone())),
        }
    }
}

/// What a retry condition reads: the request's EL info and context attributes.
pub struct RetryContext<'a> {
    pub settings: &'a crate::policies::retry::RetrySettings,
    pub info: &'a crate::policies::el::RequestInfo,
    pub attributes: &'a crate::policies::Attributes,
}

/// [`invoke`] under Gravitee's retry policy: the call is made again (its body replayed from memory)
/// while it fails, times out (`timeout` per attempt) or answers what the condition retries, at most
/// `max_retries` more times, `delay` apart. The last answer is relayed when `last_response` is set;
/// otherwise a call that never succeeds is [`GatewayError::RetriesExhausted`]. A client whose body
/// fails is answered at once: retrying cannot mend it.
pub async fn invoke_with_retry(
    api: &Api,
    table: &RouteTable,
    outbound: Outbound,
    retry: RetryContext<'_>,
    mut record: Option<&mut PendingRecord>,
    mut trace: Option<&mut RequestTrace>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let settings = retry.settings;
    let Outbound { method, path_info, query, headers, client_host, body, upgrade, endpoint_target } = outbound;
    let body = match replayable(body).await? {
        Payload::Replay(bytes) => bytes,
        // Too large to hold: sent once, as without the policy.
        Payload::Once(body) => {
            let body = body.unwrap_or_else(|| RequestBody::buffered(Bytes::new()));
            let outbound = Outbound { method, path_info, query, headers, client_host, body, upgrade, endpoint_target };
            return invoke(api, table, outbound, record, trace).await;
        }
    };
    for attempt in 0..=settings.max_retries {
        if attempt > 0 && !settings.delay.is_zero() {
            tokio::time::sleep(settings.delay).await;
        }
        let outbound = Outbound {
            method: method.clone(),
            path_info: path_info.clone(),
            query: query.clone(),
            headers: headers.clone(),
            client_host: client_host.clone(),
            body: RequestBody::buffered(body.clone()),
            upgrade,
            endpoint_target: endpoint_target.clone(),
        };
        let call = invoke(api, table, outbound, record.as_deref_mut(), trace.as_deref_mut());
        let last = attempt == settings.max_retries;
        match tokio::time::timeout(settings.timeout, call).await {
            Ok(Ok(response)) => {
                let retried = settings.condition.as_ref().is_some_and(|condition| {
                    crate::policies::el::ElContext::response(
                        retry.info,
                        retry.attributes,
                        response.status().as_u16(),
                        response.headers(),
                    )
                    .holds(condition)
                });
                if !retried || (last && settings.last_response) {
                    return Ok(response);
                }
                tracing::debug!(api = %api.id, attempt, status = response.status().as_u16(), "retry: the condition asks for another attempt");
            }
            Ok(Err(error @ GatewayError::ClientBody(_))) => return Err(error),
            Ok(Err(error)) => tracing::debug!(api = %api.id, attempt, %error, "retry: the attempt failed"),
            Err(_) => tracing::debug!(api = %api.id, attempt, "retry: the attempt timed out"),
        }
    }
    Err(GatewayError::RetriesExhausted)
}

/// A circuit permit that is given back if the attempt ends without an outcome (client gone).
struct PermitGuard<'a> {
    circuit: &'a Circuit,
    permit: Option<Permit>,
}

impl PermitGuard<'_> {
    fn success(mut self) {
        if let Some(permit) = self.permit.take() {
            self.circuit.on_success(permit);
        }
    }

    fn failure(mut self) {
        if let Some(permit) = self.permit.take() {
            self.circuit.on_failure(permit, Instant::now());
        }
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.circuit.release(permit);
        }
    }
}

/// Calls the API's endpoint group for this request; the answer's body streams from the endpoint.
/// Sets the metrics record's endpoint (the URL of the last attempt) and endpoint time. With a sampled
/// `trace`, each attempt is a CLIENT span whose id the endpoint receives in `traceparent`.
pub async fn invoke(
    api: &Api,
    table: &RouteTable,
    outbound: Outbound,
    mut record: Option<&mut PendingRecord>,
    mut trace: Option<&mut RequestTrace>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let Outbound { method, path_info, query, mut headers, client_host, body, upgrade, endpoint_target } = outbound;
    let Some(destination) = Destination::of(api, endpoint_target.as_deref()) else {
        tracing::debug!(api = %api.id, target = ?endpoint_target, "dynamic routing named no endpoint or group of the API");
        return Err(GatewayError::NoEndpoint);
    };
    let group = destination.group(api);
    if group.endpoints().is_empty() {
        // Gravitee's emulation engine deploys a v2 API without endpoints and fails each call when it
        // resolves none: 502 GATEWAY_CLIENT_CONNECTION_ERROR without a body.
        return Err(UpstreamError::Connection(format!("the endpoint group `{}` has no endpoint", group.name)).into());
    }
    let mut payload = match group.failover {
        // Boxed: only failover groups hold the body for another attempt (see `serve_api`).
        Some(_) => Box::pin(replayable(body)).await?,
        None => Payload::Once(Some(body)),
    };
    // A streamed body's stats tell whether a failed call was the client's doing.
    let client_body = match &payload {
        Payload::Once(Some(body)) => Some(body.stats().clone()),
        _ => None,
    };
    let attempts = match (&group.failover, &payload) {
        (Some(failover), Payload::Replay(_)) => failover.max_retries.saturating_add(1),
        _ => 1,
    };
    let mut tried = Tried::default();
    let mut last_error = None;
    for attempt in 1..=attempts {
        let selected = destination.pick(group, &tried);
        let Some(selected) = selected else {
            break;
        };
        tried.insert(selected.index);
        let endpoint = selected.endpoint;
        let guard = PermitGuard { circuit: &endpoint.circuit, permit: Some(selected.permit) };
        // A WebSocket handshake is never a gRPC call (Gravitee tests for it first).
        let (client_key, grpc) = if upgrade { (&endpoint.client_key, false) } else { endpoint.client_for(&headers) };
        let Some(client) = table.client(client_key) else {
            return Err(GatewayError::NoEndpoint);
        };
        let url = destination.url(endpoint, &path_info, query.as_deref());
        // What analytics, logs and messages show: an API key forwarded in the query (key-less plans
        // pass it on) keeps its name, not its value.
        let shown = crate::telemetry::redact::mask_query(&url, &api.api_keys.query_params);
        let uri: http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(error) => {
                return Err(UpstreamError::Connection(format!("invalid upstream URL {shown:?}: {error}")).into());
            }
        };
        let Some(body) = payload.take() else {
            break;
        };
        let headers = if attempt == attempts { std::mem::take(&mut headers) } else { headers.clone() };
        let mut request = build_request(endpoint, &method, uri, headers, client_host.as_ref(), body, upgrade);
        if grpc {
            grpc_call(&mut request, client_key);
        }
        let mut span = trace.as_deref_mut().map(|t| {
            t.set("gravitee.endpoint", endpoint.name.clone());
            let uri = request.uri().clone();
            trace::endpoint_attempt(t, &method, &uri, &endpoint.name, attempt, request.headers_mut())
        });
        if let Some(r) = record.as_deref_mut() {
            r.record_mut().endpoint = shown.clone().into_owned();
            if let Some(log) = r.log_mut() {
                log.endpoint_request(request.method(), &url, request.headers());
            }
        }

        let limit = match group.failover {
            Some(failover) => endpoint.http.read_timeout.min(failover.slow_call),
            None => endpoint.http.read_timeout,
        };
        let sent = Instant::now();
        // What a redirect is sent with: only kept for endpoints that follow them.
        let redirectable = (endpoint.http.follow_redirects && !upgrade)
            .then(|| (request.method().clone(), request.uri().clone(), request.headers().clone(), request.version()));
        // The limit covers the handshake's connection too (it is not pooled).
        let outcome = if upgrade {
            tokio::time::timeout(limit, Box::pin(client.upgrade(request))).await
        } else {
            tokio::time::timeout(limit, async {
                let response = client.send(request).await;
                match (response, redirectable) {
                    (Ok(response), Some(original)) => Box::pin(follow_redirects(client, response, original)).await,
                    (response, _) => response,
                }
            })
            .await
            .map(|sent| {
                sent.map_err(|error| {
                    tracing::debug!(api = %api.id, url = %shown, attempt, error = %error_chain(&error), "endpoint call failed");
                    error.classify()
                })
            })
        };
        if let Some(r) = record.as_deref_mut() {
            r.set_endpoint_time(sent.elapsed());
        }
        let timed_out = outcome.is_err();
        if !matches!(outcome, Ok(Ok(_)))
            && let Some(fault) = client_body.as_ref().and_then(|stats| stats.client_fault(timed_out))
        {
            // The permit goes back unused: the endpoint did nothing wrong.
            drop(guard);
            let error = GatewayError::ClientBody(fault);
            tracing::debug!(api = %api.id, url = %shown, error = %error, "the client's request body failed");
            if let (Some(t), Some(mut span)) = (trace.as_deref_mut(), span.take()) {
                span.error(error.key());
                span.set("error.type", error.key());
                t.end(span);
            }
            return Err(error);
        }
        let error = match outcome {
            Ok(Ok(response)) => {
                guard.success();
                if let (Some(t), Some(mut span)) = (trace.as_deref_mut(), span.take()) {
                    span.set("http.response.status_code", i64::from(response.status().as_u16()));
                    if response.status().is_server_error() {
                        span.error(response.status().as_u16().to_string());
                        span.set("error.type", response.status().as_u16().to_string());
                    }
                    t.end(span);
                }
                if let Some(log) = record.as_deref_mut().and_then(PendingRecord::log_mut) {
                    log.endpoint_response(response.status(), response.headers());
                }
                return Ok(decoded(response, endpoint.http.use_compression));
            }
            Ok(Err(error)) => {
                if upgrade {
                    tracing::debug!(api = %api.id, url = %shown, attempt, %error, "endpoint handshake failed");
                }
                error
            }
            Err(_) => {
                tracing::debug!(api = %api.id, url = %shown, attempt, limit_ms = limit.as_millis() as u64, "endpoint call timed out");
                UpstreamError::ReadTimeout
            }
        };
        guard.failure();
        if let (Some(t), Some(mut span)) = (trace.as_deref_mut(), span.take()) {
            let key = GatewayError::from(error.clone()).key();
            span.error(key);
            span.set("error.type", key);
            t.end(span);
        }
        last_error = Some(error);
    }
    // Nothing was available (every circuit open), or every attempt failed: the last failure tells.
    match last_error {
        Some(error) => Err(error.into()),
        // With failover, Gravitee wraps the call in a circuit breaker: while it is open the call is
        // not permitted, which it answers 502 without a body, not "no endpoint".
        None if group.failover.is_some()
            && group.endpoints().iter().any(|e| e.health.is_up() && e.circuit.is_open(Instant::now())) =>
        {
            Err(GatewayError::CircuitOpen)
        }
        None => Err(GatewayError::NoEndpoint),
    }
}

/// Most redirects followed for one call (Vert.x's `HttpClientOptions.DEFAULT_MAX_REDIRECTS`); the
/// answer after the last one is relayed as it is.
const MAX_REDIRECTS: usize = 16;

/// Gravitee's V3 engine connects to the endpoint before its request-content policies run (they
/// transform the body as it is streamed to the endpoint): when it cannot connect, the client gets the
/// connection failure (502) whatever those policies would have answered. The exchange asks this
/// before it answers a content step's failure on that engine: the endpoint the load balancer would
/// pick (or dynamic routing named) is connected to (TCP only, within its connect timeout, nothing
/// sent) and the failure is returned when it cannot be. Only failing exchanges pay for it.
pub async fn unreachable_endpoint(api: &Api, endpoint_target: Option<&str>, path_info: &str) -> Option<GatewayError> {
    let destination = Destination::of(api, endpoint_target)?;
    let group = destination.group(api);
    let selected = destination.pick(group, &Tried::default())?;
    let endpoint = selected.endpoint;
    // Only asked, not called: the permit goes back untouched.
    let _permit = PermitGuard { circuit: &endpoint.circuit, permit: Some(selected.permit) };
    let uri: http::Uri = destination.url(endpoint, path_info, None).parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let https = uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss"));
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(endpoint.http.connect_timeout, connect).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(UpstreamError::Connection(format!("{host}:{port}: {error}")).into()),
        Err(_) => Some(UpstreamError::Connection(format!("{host}:{port}: connect timed out")).into()),
    }
}

/// Follows the endpoint's redirects as Vert.x's default redirect handler does for Gravitee's
/// `followRedirects`: `301`, `302`, `303`, `307` and `308` with a `Location` for GET and HEAD; for
/// other methods only `303`, which becomes a GET without body. The request keeps its headers (not
/// its body length); the `Location` is resolved against the URL that answered.
async fn follow_redirects(
    client: &crate::http::upstream::UpstreamClient,
    mut response: Response<Incoming>,
    original: (Method, http::Uri, HeaderMap, Version),
) -> Result<Response<Incoming>, crate::http::upstream::CallError> {
    let (mut method, mut uri, mut headers, version) = original;
    for _ in 0..MAX_REDIRECTS {
        let status = response.status().as_u16();
        let follows = match status {
            301 | 302 | 307 | 308 => method == Method::GET || method == Method::HEAD,
            303 => true,
            _ => false,
        };
        let Some(next) = follows
            .then(|| response.headers().get(http::header::LOCATION))
            .flatten()
            .and_then(|location| location.to_str().ok())
            .and_then(|location| resolve_location(&uri, location))
        else {
            return Ok(response);
        };
        if status == 303 && method != Method::HEAD {
            method = Method::GET;
        }
        if method == Method::GET || method == Method::HEAD {
            headers.remove(http::header::CONTENT_LENGTH);
            headers.remove(http::header::TRANSFER_ENCODING);
        }
        // A Host the gateway chose for the first URL does not name the next one.
        if next.authority() != uri.authority() {
            headers.remove(HOST);
        }
        uri = next;
        let mut request = Request::new(RequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = version;
        *request.headers_mut() = headers.clone();
        response = client.send(request).await?;
    }
    Ok(response)
}

/// A redirect's `Location` as an absolute URL: absolute (http or https), absolute-path, or relative
/// to the directory of `base`'s path.
fn resolve_location(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let location = location.trim();
    let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// The endpoint's answer with its body decoded when the endpoint uses compression and the answer is
/// gzip or deflate (the log above keeps the headers as the endpoint sent them).
fn decoded(response: Response<Incoming>, use_compression: bool) -> Response<UpstreamBody> {
    let (mut parts, body) = response.into_parts();
    let coding = if use_compression { Coding::of(&parts.headers) } else { None };
    if coding.is_some() {
        Coding::strip_headers(&mut parts.headers);
    }
    Response::from_parts(parts, UpstreamBody::new(body, coding))
}

/// The request for one endpoint: its URL, the forwarded headers, the client's Host when the endpoint
/// propagates it, then the endpoint's own headers (which win). As Gravitee's connector: the client's
/// Accept-Encoding goes unless the endpoint propagates it, and with compression an endpoint header
/// does not set it, the gateway offers `deflate, gzip`.
fn build_request(
    endpoint: &Endpoint,
    method: &Method,
    uri: http::Uri,
    mut headers: HeaderMap,
    client_host: Option<&HeaderValue>,
    body: RequestBody,
    upgrade: bool,
) -> Request<RequestBody> {
    if endpoint.http.propagate_client_host
        && let Some(host) = client_host
    {
        headers.insert(HOST, host.clone());
    }
    if !endpoint.http.propagate_client_accept_encoding {
        headers.remove(ACCEPT_ENCODING);
    }
    for (name, value) in &endpoint.headers {
        headers.insert(name.clone(), value.clone());
    }
    // A WebSocket handshake has no body to decode (Vert.x's WebSocket client offers nothing either).
    if endpoint.http.use_compression && !upgrade && !headers.contains_key(ACCEPT_ENCODING) {
        headers.insert(ACCEPT_ENCODING, decompress::OFFERED);
    }
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    // h2c clients speak HTTP/2 only; otherwise HTTP/1.1 (an ALPN-negotiated h2 connection accepts it).
    *request.version_mut() = if endpoint.client_key.h2c { Version::HTTP_2 } else { Version::HTTP_11 };
    *request.headers_mut() = headers;
    request
}

/// A gRPC call as Gravitee's gRPC connectors make it: `POST`, `Content-Type: application/grpc` and
/// `TE: trailers` (the one TE an HTTP/2 request may carry), over HTTP/2.
fn grpc_call(request: &mut Request<RequestBody>, client: &ClientKey) {
    *request.method_mut() = Method::POST;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    *request.version_mut() = if client.h2c { Version::HTTP_2 } else { Version::HTTP_11 };
}

/// With failover, reads a small body into memory so it can be sent again; a large or unknown-length
/// body is left streaming (one attempt only).
async fn replayable(body: RequestBody) -> Result<Payload, GatewayError> {
    if body.is_end_stream() {
        return Ok(Payload::Replay(Bytes::new()));
    }
    if body.size_hint().upper().is_none_or(|upper| upper > MAX_REPLAY_BODY) {
        return Ok(Payload::Once(Some(body)));
    }
    // Buffering is bounded in time as well as size: a slow small body does not hold the request.
    let limit = body.stall_limit().unwrap_or(Duration::MAX);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(collected)) => Ok(Payload::Replay(collected.to_bytes())),
        Ok(Err(ClientBodyError::Malformed(_))) => Err(GatewayError::ClientBody(ClientFault::Malformed)),
        Ok(Err(ClientBodyError::Stalled(_))) | Err(_) => Err(GatewayError::ClientBody(ClientFault::Stalled)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_url_that_answered() {
        let base: http::Uri = "http://backend:8080/api/items/1?x=1".parse().unwrap();
        let resolve = |location: &str| resolve_location(&base, location).map(|u| u.to_string());
        assert_eq!(resolve("/other?y=2").as_deref(), Some("http://backend:8080/other?y=2"));
        assert_eq!(resolve("2").as_deref(), Some("http://backend:8080/api/items/2"));
        assert_eq!(resolve("https://elsewhere/x").as_deref(), Some("https://elsewhere/x"));
        assert_eq!(resolve("//cdn.example/x").as_deref(), Some("http://cdn.example/x"));
        assert_eq!(resolve("http://bad host/"), None);
    }

    #[tokio::test]
    async fn small_bodies_are_replayable_and_large_ones_stream() {
        assert!(matches!(replayable(RequestBody::empty()).await, Ok(Payload::Replay(b)) if b.is_empty()));
        let small = RequestBody::buffered(Bytes::from_static(b"hello"));
        assert!(matches!(replayable(small).await, Ok(Payload::Replay(b)) if b == "hello"));
        let large = RequestBody::buffered(Bytes::from(vec![0u8; MAX_REPLAY_BODY as usize + 1]));
        let mut payload = replayable(large).await.unwrap();
        assert!(matches!(payload, Payload::Once(_)));
        assert!(payload.take().is_some());
        assert!(payload.take().is_none(), "a streamed body goes once");
    }
}
