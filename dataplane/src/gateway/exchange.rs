//! The phases after routing: plan and security, the request flows, the endpoint call
//! ([`invoke`](super::invoke)), the response flows; the request's record is filled in on the way.

use bytes::Bytes;
use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::context::{ConnInfo, Routed, X_CLIENT_IDENTIFIER, detached, lossy, request_host_of};
use super::invoke;
use super::record::new_record;
use super::respond::{GatewayError, error_response, reply_response};
use super::websocket;
use crate::api::flows::{Flow, Step};
use crate::api::routes::Api;
use crate::http::body::{RequestBody, ResponseBody};
use crate::http::upstream::UpstreamError;
use crate::policies::el::{ElContext, RequestInfo};
use crate::policies::{Attributes, Outcome, Reply, RequestExchange, ResponseExchange};
use crate::telemetry::analytics::PendingRecord;
use crate::telemetry::trace::{self, RequestTrace};

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the legacy ones).
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Whether a header name (as `Connection` lists it: any case) is hop-by-hop. The lengths differ for
/// most names, so a comparison usually ends there.
fn is_hop_by_hop_text(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_text(name.as_str())
}
/// Everything after routing: security, flows, the endpoint call and the response phase. The
/// request's trace gets spans when it is sampled; the caller attaches it to the response.
///
/// This future is copied whole when it is created and boxed (every request): what only some requests
/// await (retries, the V3 engine's endpoint probe, buffered bodies) and the large endpoint call are
/// boxed where they are awaited, so that their state does not make every request's future larger.
pub(crate) async fn serve_api(
    mut req: Request<Incoming>,
    routed: Routed<'_>,
    trace: &mut Option<Box<RequestTrace>>,
) -> Response<ResponseBody> {
    let Routed { shared, conn, api, table, path_info, mut ids, arrival, timestamp_ms, in_flight, accept, propagate } =
        routed;
    // Gravitee's V3 engine answers its failures without the gateway's ids (see `Ids::legacy`).
    ids.legacy = api.legacy_engine;
    let accept = accept.as_slice();
    // A WebSocket handshake: the client's connection is taken here, before anything reads the body
    // (hyper hands it over once the `101` is sent).
    let handshake = websocket::requested(&req);
    let client_upgrade = handshake.map(|handshake| (handshake, hyper::upgrade::on(&mut req)));
    if handshake == Some(websocket::Handshake::Http2) {
        // An RFC 8441 CONNECT: plans, flows and the record see the `GET` it stands for.
        *req.method_mut() = http::Method::GET;
    }
    let templates = api.response_templates.as_ref().map(|t| (t, accept));
    let mut record = api.analytics_enabled.then(|| {
        PendingRecord::new(
            new_record(&req, conn, &ids, &api, &path_info, timestamp_ms, &shared.trusted_proxies),
            Some(api.record_api.clone()),
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
            context_path: {
                let path = parts.uri.path();
                format!("{}/", path.get(..path.len().saturating_sub(path_info.len())).unwrap_or_default())
            },
            method: parts.method.as_str().to_owned(),
            host: request_host_of(&parts).to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            remote_address: conn.client_address(&shared.trusted_proxies, &parts.headers).into_owned(),
            local_address: conn.local_ip.as_ref().to_owned(),
            request_id: lossy(&ids.request),
            transaction_id: lossy(&ids.transaction),
            api_id: api.id.clone(),
            api_name: api.name.clone(),
            api_properties: api.properties.clone(),
            headers: HeaderMap::new(),
            tls: conn.tls_session.clone(),
            ..RequestInfo::default()
        };
    }
    // The log captures the request as the client sent it, before security and flows change it.
    if let (Some(logging), Some(r)) = (&api.logging, record.as_mut()) {
        let applies = logging
            .condition
            .as_ref()
            .is_none_or(|condition| ElContext::request(&info, &parts.headers, &[], &[]).holds(condition));
        if applies {
            let masking = crate::telemetry::logging::Masking {
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
    // The client's hop-by-hop list applies to what the client sent, before policies add their headers.
    apply_connection(&mut parts.headers);
    let security_span = trace.as_ref().map(|t| t.child("security", hgw_otel::SpanKind::Internal));
    let authenticated = match api
        .security
        .authenticate(
            &mut parts,
            &conn.remote_ip,
            conn.client_certificate.as_ref().map(|c| &*c.sha256),
            timestamp_ms,
            &info,
            &api.id,
            shared.introspector.as_ref(),
        )
        .await
    {
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
    let application_id = authenticated.application.clone();
    let subscription_id = authenticated.subscription;
    if api.uses_el {
        info.subscription_id.clone_from(&subscription_id);
        info.subscription_client_id = authenticated.client_id;
        info.application_name = authenticated.application_name;
    }
    if let (Some(t), Some(mut span)) = (trace.as_mut(), security_span) {
        span.set("gravitee.plan.id", plan.id.clone());
        span.set("gravitee.security.type", plan.security_type());
        t.end(span);
        t.set("gravitee.plan.id", plan.id.clone());
        t.set("gravitee.application.id", authenticated.application.clone());
        t.set("gravitee.subscription.id", subscription_id.clone());
    }
    // Gravitee's subscription processor runs once the plan is resolved: every answer from here on says
    // who the client is (not on the V3 engine, which has no such processor).
    if !api.legacy_engine {
        ids.client = Some(client_identifier(&parts, &subscription_id, conn));
    }
    if let Some(r) = record.as_mut() {
        let rec = r.record_mut();
        rec.plan_id = plan.id.clone();
        rec.security_type = plan.security_type();
        rec.client_identifier = ids.client.clone();
        rec.application_id = authenticated.application;
        rec.user = authenticated.user.unwrap_or_default();
        rec.subscription_id = subscription_id.clone();
    }

    // Gravitee's order: plan flows, then API flows, in both phases. A flow applies when its method
    // and path match and its EL condition (if any) holds; its `:params` are captured for EL.
    let mut attributes = Attributes::new();
    if let Some(payload) = authenticated.oauth_payload {
        attributes.push(("oauth.payload".to_owned(), payload));
    }
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
            if let Some(condition) = &flow.condition {
                match condition_holds(&api, &ElContext::request(&info, &parts.headers, &params, &attributes), condition)
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(reply) => return reply_response(reply, &ids, record, in_flight, templates),
                }
            }
            if api.best_match {
                flows.truncate(first);
            }
            flows.push((flow, params));
        }
    }
    if api.flow_match_required && flows.is_empty() {
        let reply = Reply::empty(StatusCode::NOT_FOUND, "FLOW_EXECUTION_FLOW_MATCHED_FAILURE");
        trace::note_error(trace, reply.error_key);
        return reply_response(reply, &ids, record, in_flight, templates);
    }
    // Whether the request says it has a body: if its flows take that away (a transform-headers
    // whitelist without Content-Length), Gravitee's connector sends none.
    let framed = has_body_headers(&parts.headers);
    // The gateway's ids are on the request from here on, as Gravitee sets them before its flows: a
    // flow reads them, and one can remove them (transform-headers' whitelist does).
    ids.apply(&mut parts.headers);
    let (body, stats) =
        RequestBody::new(body, record.as_ref().and_then(PendingRecord::request_capture), shared.limits.body_timeout);
    if let Some(r) = record.as_mut() {
        r.set_request_stats(stats);
    }
    // A step that reads or replaces the body (assign-content, `#request.content` in EL...) has it in
    // memory from the start of the flows, so steps see each other's changes in order.
    let mut streamed = Some(body);
    let mut content: Option<Bytes> = None;
    if flows.iter().any(|(flow, _)| flow.request.iter().any(Step::reads_request_body)) {
        match Box::pin(buffer_request_body(streamed.take())).await {
            Ok(bytes) => content = Some(bytes),
            Err(error) => {
                trace::note_error(trace, Some(error.key()));
                return error_response(&error, &ids, record, in_flight, templates);
            }
        }
    }
    let received = content.clone();
    let mut extra_headers = Vec::new();
    let mut endpoint_target = None;
    let mut retry = None;
    let mut cache = None;
    let verbose = trace.as_ref().is_some_and(|t| t.verbose);
    let request_span = trace.as_ref().map(|t| t.child("request", hgw_otel::SpanKind::Internal));
    // Whether any request step ran (and so may have changed the ids the request carries).
    let mut stepped = false;
    {
        let mut exchange = RequestExchange {
            parts: &mut parts,
            peer_ip: conn.remote.ip(),
            trusted_proxies: &shared.trusted_proxies,
            attributes: &mut attributes,
            api_id: &api.id,
            plan_id: &plan.id,
            subscription_id: &subscription_id,
            counters: &shared.counters,
            now_ms: timestamp_ms,
            response_headers: &mut extra_headers,
            info: &info,
            path_params: &[],
            endpoint_target: &mut endpoint_target,
            retry: &mut retry,
            cache: &mut cache,
            legacy_engine: api.legacy_engine,
            body: content.as_mut(),
            api_keys: Some(&api.security),
        };
        for (flow, params) in &flows {
            exchange.path_params = params;
            for step in &flow.request {
                if let Some(condition) = &step.condition {
                    match condition_holds(&api, &exchange.el(), condition) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(reply) => return reply_response(reply, &ids, record, in_flight, templates),
                    }
                }
                let policy_span = match (verbose, trace.as_ref(), request_span.as_ref()) {
                    (true, Some(t), Some(phase)) => Some(step_span(t, phase, step, "request")),
                    _ => None,
                };
                stepped = true;
                let outcome = match step.policy.on_request(&mut exchange) {
                    Outcome::Continue => None,
                    Outcome::Respond(reply) => Some(reply),
                    Outcome::Wait(pending) => {
                        let verdict = pending.await;
                        exchange.response_headers.extend(verdict.headers);
                        if let (Some(warning), Some(r)) = (verdict.warning, record.as_mut()) {
                            r.warn(warning);
                        }
                        match verdict.resume {
                            Some(resume) => (resume.0)(&mut exchange),
                            None => verdict.reply,
                        }
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
                if api.legacy_engine && step.reads_request_body() {
                    let target = exchange.endpoint_target.as_deref();
                    if let Some(error) = Box::pin(invoke::unreachable_endpoint(&api, target, &path_info)).await {
                        trace::note_error(trace, Some(error.key()));
                        return error_response(&error, &ids, record, in_flight, templates);
                    }
                }
                reply.headers.append(exchange.response_headers);
                if let (Some(t), Some(span)) = (trace.as_mut(), request_span) {
                    t.end(span);
                }
                trace::note_error(trace, reply.error_key);
                ids.note_request(&exchange.parts.headers);
                return reply_response(reply, &ids, record, in_flight, templates);
            }
        }
    }
    if let (Some(t), Some(span)) = (trace.as_mut(), request_span) {
        t.end(span);
    }
    if stepped {
        ids.note_request(&parts.headers);
    } else {
        ids.note_unchanged();
    }
    if api.uses_el && flows.iter().any(|(flow, _)| !flow.response.is_empty()) {
        // Response-phase expressions see the request as it was sent upstream.
        info.headers = parts.headers.clone();
    }

    let body = match (content, streamed) {
        (Some(content), _) => {
            // A body the flows replaced is sent with its own length.
            if replaced(received.as_ref(), &content) {
                parts.headers.remove(http::header::TRANSFER_ENCODING);
                parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(content.len()));
            }
            RequestBody::buffered(content)
        }
        (None, Some(body)) => body,
        (None, None) => RequestBody::buffered(Bytes::new()),
    };
    let body = if framed && !has_body_headers(&parts.headers) { RequestBody::buffered(Bytes::new()) } else { body };

    // The cache step's key is made from the request as the flows left it, as Gravitee's cache invoker
    // makes it when the endpoint is about to be called.
    let cache = cache.map(|armed: crate::policies::cache::Armed| {
        let el = ElContext::request(&info, &parts.headers, &[], &attributes);
        let key = armed.key(&api.id, &application_id, &parts.uri, &el);
        (armed, key)
    });
    let client_host = parts
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if let Some(handshake) = handshake {
        websocket::endpoint_handshake(&mut headers, handshake);
    }
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
        upgrade: client_upgrade.is_some(),
        endpoint_target,
    };
    let stored = match &cache {
        Some((armed, key)) if !armed.refresh => armed.lookup(&api.id, key, shared.remote_cache.as_ref()).await,
        _ => None,
    };
    let invoked = match (&retry, stored) {
        (_, Some(stored)) => {
            tracing::debug!(api = %api.id, "cache: answered from the cache");
            let mut response = Response::new(crate::http::decompress::UpstreamBody::Stored(Some(stored.body.clone())));
            *response.status_mut() = stored.status;
            *response.headers_mut() = stored.headers.clone();
            Ok(response)
        }
        // Boxed: the endpoint call's state (≈ 3.7 KB) would otherwise be part of this future, which
        // every level above copies; one allocation costs less than those copies.
        (None, None) => Box::pin(invoke::invoke(&api, &table, outbound, record.as_mut(), trace.as_deref_mut())).await,
        (Some(settings), None) => {
            let context = invoke::RetryContext { settings, info: &info, attributes: &attributes };
            let retried =
                invoke::invoke_with_retry(&api, &table, outbound, context, record.as_mut(), trace.as_deref_mut());
            Box::pin(retried).await
        }
    };
    let mut response = match invoked {
        Ok(response) => match &cache {
            Some((armed, key)) if !matches!(response.body(), crate::http::decompress::UpstreamBody::Stored(_)) => {
                let store = Store { armed, api_id: &api.id, key, remote: &shared.remote_cache };
                store_when_complete(response, store, &info, &attributes, ids.client.as_ref())
            }
            _ => response,
        },
        Err(error) => {
            trace::note_error(trace, Some(error.key()));
            // Gravitee's V3 engine answers an endpoint failure without the ids, but after failover
            // (its failover invoker ends the exchange itself) with them.
            if matches!(error, GatewayError::Upstream(_)) && api.endpoints.failover.is_some() {
                ids.legacy = false;
            }
            // Headers the request flows set on the response (a script's, a rate limit's) stay on
            // Gravitee's answer for the failed call: its failure is written into that same response.
            let mut response = error_response(&error, &ids, record, in_flight, templates);
            for (name, value) in extra_headers {
                response.headers_mut().insert(name, value);
            }
            return response;
        }
    };
    // The endpoint accepted the handshake: its connection is taken for the tunnel. A switch to any
    // other protocol than the one asked for is not relayed.
    let endpoint_upgrade = match client_upgrade {
        Some(_) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if !websocket::accepted(response.headers()) {
                let error = GatewayError::Upstream(UpstreamError::Connection(
                    "the endpoint switched to another protocol than websocket".to_owned(),
                ));
                trace::note_error(trace, Some(error.key()));
                return error_response(&error, &ids, record, in_flight, templates);
            }
            Some(hyper::upgrade::on(&mut response))
        }
        _ => None,
    };
    let (mut parts, body) = response.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    // The client identifier is on the answer before the response flows (Gravitee's subscription
    // processor sets it): a flow can remove or change it. The ids follow the response flows, from
    // the request (Gravitee's transaction post-processor); the V3 engine sets them before.
    if ids.legacy {
        ids.apply_response(&mut headers);
    } else {
        ids.apply_client(&mut headers);
    }
    // A response step that reads or replaces the body has it in memory from the start of the
    // response flows (never a switched protocol's).
    let mut streamed = Some(body);
    let mut content: Option<Bytes> = None;
    if endpoint_upgrade.is_none() && flows.iter().any(|(flow, _)| flow.response.iter().any(Step::reads_response_body)) {
        match Box::pin(buffer_response_body(streamed.take().expect("the body is still there"))).await {
            Ok(bytes) => content = Some(bytes),
            Err(error) => {
                let error = GatewayError::Upstream(UpstreamError::Connection(error));
                trace::note_error(trace, Some(error.key()));
                return error_response(&error, &ids, record, in_flight, templates);
            }
        }
    }
    let received = content.clone();
    let mut response_span = trace.as_ref().map(|t| t.child("response", hgw_otel::SpanKind::Internal));
    {
        let mut exchange = ResponseExchange {
            status: &mut parts.status,
            headers: &mut headers,
            attributes: &mut attributes,
            info: &info,
            body: content.as_mut(),
            failure: None,
            legacy_engine: api.legacy_engine,
        };
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
            // A step that calls out (http-callout) waits for its answer, then looks at it with the
            // exchange (conditions, attributes, a failure).
            if let Some(pending) = step.policy.on_response_wait(&mut exchange)
                && let Some(resume) = pending.await
            {
                (resume.0)(&mut exchange);
            }
            if let (Some(t), Some(span)) = (trace.as_mut(), policy_span) {
                t.end(span);
            }
            // A policy failed the response: the steps after it do not run, the failure is answered
            // with the headers the response has so far (Gravitee's failure processor writes its
            // body into the response as it is), its own framing and type replacing theirs.
            if let Some(mut reply) = exchange.failure.take() {
                let mut kept: Vec<(HeaderName, HeaderValue)> = exchange
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        // The client identifier is set again with the failure's other gateway headers.
                        ![
                            http::header::CONTENT_LENGTH,
                            http::header::TRANSFER_ENCODING,
                            http::header::CONTENT_TYPE,
                            http::header::CONTENT_ENCODING,
                        ]
                        .contains(name)
                            && name.as_str() != X_CLIENT_IDENTIFIER
                    })
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                kept.append(&mut reply.headers);
                reply.headers = kept;
                if let (Some(t), Some(span)) = (trace.as_mut(), response_span.take()) {
                    t.end(span);
                }
                trace::note_error(trace, reply.error_key);
                return reply_response(reply, &ids, record, in_flight, templates);
            }
        }
    }
    if let (Some(t), Some(span)) = (trace.as_mut(), response_span) {
        t.end(span);
    }
    if !ids.legacy {
        ids.apply_ids(&mut headers);
    }
    if let Some(r) = record.as_mut() {
        r.record_mut().status = u32::from(parts.status.as_u16());
    }
    for (name, value) in extra_headers {
        headers.insert(name, value);
    }
    // Response flows may have turned the `101` into something else: then there is no tunnel.
    let tunnel = match (client_upgrade, endpoint_upgrade) {
        (Some((handshake, client)), Some(endpoint)) if parts.status == StatusCode::SWITCHING_PROTOCOLS => {
            websocket::client_switch(&mut parts.status, &mut headers, handshake);
            if let Some(r) = record.as_mut() {
                r.record_mut().status = u32::from(parts.status.as_u16());
            }
            Some((client, endpoint))
        }
        _ => None,
    };
    if let Some(content) = &content
        && replaced(received.as_ref(), content)
    {
        // A body the flows replaced goes with its own length.
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
    }
    if let Some(log) = record.as_mut().and_then(PendingRecord::log_mut) {
        log.entrypoint_response(parts.status, &headers);
        if content.is_none() {
            log.response_from_endpoint();
        }
    }
    if let Some((client, endpoint)) = tunnel {
        websocket::spawn_tunnel(client, endpoint, shared, &api.id);
        // A `101` has no body: the record is emitted as it is sent.
        let mut response = Response::new(ResponseBody::full(bytes::Bytes::new(), record, in_flight));
        *response.status_mut() = parts.status;
        *response.headers_mut() = headers;
        return response;
    }
    let body = match (content, streamed) {
        (Some(content), _) => ResponseBody::full(content, record, in_flight),
        (None, Some(body)) => ResponseBody::upstream(body, record, in_flight),
        (None, None) => ResponseBody::full(Bytes::new(), record, in_flight),
    };
    let mut response = Response::new(body);
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    response
}

/// Where an answer is to be stored: the armed step, the API, the key, and the agent for a resource
/// whose entries it keeps.
struct Store<'a> {
    armed: &'a crate::policies::cache::Armed,
    api_id: &'a str,
    key: &'a str,
    remote: &'a std::sync::Arc<dyn crate::policies::cache::RemoteCache>,
}

/// The endpoint's answer, copied aside as it flows when the cache step stores it (its condition holds,
/// by default a 2xx status): once the whole body has gone through, the answer is stored with the
/// endpoint's headers (hop-by-hop ones left out), and, as Gravitee's v4 engines store the answer's
/// headers once the client identifier is already among them, that identifier too: an answer served
/// from the cache then carries the caller's identifier followed by the one of the call that stored it.
fn store_when_complete(
    response: Response<crate::http::decompress::UpstreamBody>,
    store: Store<'_>,
    info: &RequestInfo,
    attributes: &[(String, String)],
    client: Option<&HeaderValue>,
) -> Response<crate::http::decompress::UpstreamBody> {
    use crate::http::decompress::Copied;
    use crate::policies::cache::{CachedResponse, MAX_ENTRY_BYTES};
    let Store { armed, api_id, key, remote } = store;
    let status = response.status();
    let el = ElContext::response(info, attributes, status.as_u16(), response.headers());
    // A switch of protocol (or any 1xx) is never an answer to replay.
    if status.is_informational() || !armed.settings.stores(&el, status) {
        return response;
    }
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    if let Some(client) = client {
        headers.append(X_CLIENT_IDENTIFIER, client.clone());
    }
    let (parts, body) = response.into_parts();
    let (armed, api_id, key, remote) = (armed.clone(), api_id.to_owned(), key.to_owned(), remote.clone());
    let body = Copied::wrap(
        body,
        MAX_ENTRY_BYTES,
        Box::new(move |body| {
            if let Some(length) = headers.get(http::header::CONTENT_LENGTH)
                && length.as_bytes() != body.len().to_string().as_bytes()
            {
                // A decoded body no longer has the endpoint's length.
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            armed.store(&api_id, key, CachedResponse { status, headers, body }, remote.as_ref());
        }),
    );
    Response::from_parts(parts, body)
}

/// The client identifier of a request whose plan resolved with `subscription`, as Gravitee's
/// subscription processor makes it: the client's own `X-Gravitee-Client-Identifier` header (its first
/// value), else the query parameter of that name, when not blank; otherwise the subscription id, or
/// for a key-less plan (whose subscription is the caller's address) the hex SHA-256 of the address.
fn client_identifier(parts: &http::request::Parts, subscription: &str, conn: &ConnInfo) -> HeaderValue {
    let given = match parts.headers.get(X_CLIENT_IDENTIFIER) {
        Some(header) => Some(detached(header)),
        // Only a query naming the parameter is parsed.
        None => parts.uri.query().filter(|q| q.contains(X_CLIENT_IDENTIFIER_PARAM)).and_then(|query| {
            crate::http::query::query_pairs(query)
                .find(|(name, _)| name == X_CLIENT_IDENTIFIER_PARAM)
                .and_then(|(_, value)| HeaderValue::from_str(&value).ok())
        }),
    };
    if let Some(given) = given.filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace)) {
        return given;
    }
    if subscription == &*conn.remote_ip {
        conn.remote_ip_sha256.clone()
    } else {
        HeaderValue::from_str(subscription).unwrap_or_else(|_| conn.remote_ip_sha256.clone())
    }
}

/// The client identifier as a query parameter (Gravitee reads the header's name there too).
const X_CLIENT_IDENTIFIER_PARAM: &str = "X-Gravitee-Client-Identifier";

/// The span of one policy step (verbose tracing), named by its Gravitee policy id.
fn step_span(
    trace: &RequestTrace,
    phase: &hgw_otel::Span,
    step: &crate::api::flows::Step,
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

/// Whether the flows replaced a buffered body (`received` is what was buffered): then its framing
/// headers no longer hold. Policies that leave the body alone keep the very same buffer.
fn replaced(received: Option<&Bytes>, content: &Bytes) -> bool {
    received.is_none_or(|r| r.as_ptr() != content.as_ptr() || r.len() != content.len())
}

/// Largest body the gateway holds in memory for body policies, in either direction (Gravitee buffers
/// whole bodies; hgw bounds them and never truncates).
const MAX_BUFFERED_BODY: usize = 16 * 1024 * 1024;

/// The client's whole request body, for the request flows (bounded in size and, like any body the
/// gateway waits for, in time). Failures are the client's: 400, 408 or 413.
async fn buffer_request_body(body: Option<RequestBody>) -> Result<Bytes, GatewayError> {
    use crate::http::body::ClientBodyError;
    use crate::telemetry::analytics::ClientFault;
    use http_body_util::BodyExt;
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    let limit = body.stall_limit().unwrap_or(std::time::Duration::MAX);
    match tokio::time::timeout(limit, http_body_util::Limited::new(body, MAX_BUFFERED_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(match error.downcast::<ClientBodyError>().map(|e| *e) {
            Ok(ClientBodyError::Malformed(_)) => GatewayError::ClientBody(ClientFault::Malformed),
            Ok(ClientBodyError::Stalled(_)) => GatewayError::ClientBody(ClientFault::Stalled),
            Err(_) => GatewayError::RequestBodyTooLarge(MAX_BUFFERED_BODY),
        }),
        Err(_) => Err(GatewayError::ClientBody(ClientFault::Stalled)),
    }
}

/// The endpoint's whole response body, for the response flows. One larger than [`MAX_BUFFERED_BODY`]
/// is an error (502), never truncated.
async fn buffer_response_body(body: crate::http::decompress::UpstreamBody) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    Ok(http_body_util::Limited::new(body, MAX_BUFFERED_BODY)
        .collect()
        .await
        .map_err(|e| format!("response body for the response flows: {e}"))?
        .to_bytes())
}

/// The sender's `Connection` header names headers meant for its hop only: they go, and the header
/// with them. On a request this runs before security and flows, so a header a policy adds under such
/// a name still reaches the endpoint.
fn apply_connection(headers: &mut HeaderMap) {
    remove_named_by_connection(headers, false);
}

/// [`apply_connection`], skipping names that are hop-by-hop anyway when `hop_by_hop_follows` (the
/// caller removes those next): the usual `Connection: keep-alive` then costs no name parsing, no
/// allocation and no extra removal.
fn remove_named_by_connection(headers: &mut HeaderMap, hop_by_hop_follows: bool) {
    if !headers.contains_key(CONNECTION) {
        return;
    }
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !(hop_by_hop_follows && is_hop_by_hop_text(name)))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named_by_connection {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
}

/// Removes hop-by-hop headers (and those `Connection` names) and Host, in place: the map then moves
/// on to the other side without a copy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_named_by_connection(headers, true);
    // Usually only Host is there: one pass over the names, then one removal per name found.
    let mut found: [Option<HeaderName>; 8] = Default::default();
    for (slot, name) in found.iter_mut().zip(headers.keys().filter(|name| *name == HOST || is_hop_by_hop(name))) {
        *slot = Some(name.clone());
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

/// Gravitee's connector's test for a request body: a Content-Length or a Transfer-Encoding header.
fn has_body_headers(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::CONTENT_LENGTH) || headers.contains_key(http::header::TRANSFER_ENCODING)
}

/// A flow or step condition: Gravitee's v4 engines read an evaluation error as "not met"; its V3
/// engine (v2 APIs without `execution_mode`) fails the request with a 500 that quotes the condition.
fn condition_holds(api: &Api, el: &ElContext<'_>, condition: &hgw_el::Expression) -> Result<bool, Reply> {
    if !api.legacy_engine {
        return Ok(el.holds(condition));
    }
    el.holds_or_fails(condition).map_err(|message| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_host_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("client.example"));
        h.insert(CONNECTION, HeaderValue::from_static("Keep-Alive, X-Secret"));
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
    fn the_clients_connection_list_does_not_remove_what_policies_add_later() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, X-Added"));
        h.insert("x-added", HeaderValue::from_static("from the client"));
        apply_connection(&mut h);
        assert!(h.is_empty(), "{h:?}");
        // A flow adds the header afterwards; forwarding keeps it.
        h.insert("x-added", HeaderValue::from_static("from a policy"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["x-added"], "from a policy");
    }
}
