//! The answers the gateway makes itself: its errors (Gravitee's keys and statuses), policy replies
//! and refusals, each replaced by the API's response template when it has one for the key.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::context::Ids;
use crate::api::templates::ResponseTemplates;
use crate::http::body::ResponseBody;
use crate::http::upstream::UpstreamError;
use crate::policies::Reply;
use crate::telemetry::analytics::{ClientFault, PendingRecord};
use crate::telemetry::metrics::InFlight;

/// Errors the gateway answers itself, with Gravitee's keys and statuses.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("The gateway is not ready: waiting for its first configuration")]
    NotReady,
    #[error("No endpoint available")]
    NoEndpoint,
    /// Failover's circuit breaker is open: the call is not permitted (Gravitee: 502, no body).
    #[error("The failover circuit breaker is open")]
    CircuitOpen,
    /// The retry policy's attempts all failed (Gravitee: 502, no body).
    #[error("The retry policy's attempts all failed")]
    RetriesExhausted,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The client's body failed (never the endpoint's fault: no circuit, retry or health hears of it).
    #[error("{}", match .0 {
        ClientFault::Malformed => "Bad request: the request body is malformed or incomplete",
        ClientFault::Stalled => "Request timeout: the request body stopped arriving",
    })]
    ClientBody(ClientFault),
    /// A body a policy needs in memory is larger than the gateway holds (the client's doing).
    #[error("The request body is larger than the {0} bytes the gateway holds for the API's body policies")]
    RequestBodyTooLarge(usize),
}

impl GatewayError {
    /// Gravitee's error key (also the label a response template would use).
    pub fn key(&self) -> &'static str {
        match self {
            GatewayError::NotReady => "GATEWAY_NOT_READY",
            GatewayError::NoEndpoint => "NO_ENDPOINT_FOUND",
            // Gravitee's failure has no key; this one names it in metrics and logs only.
            GatewayError::CircuitOpen => "FAILOVER_CIRCUIT_OPEN",
            // Idem: Gravitee's retry fails with a bare 502.
            GatewayError::RetriesExhausted => "RETRY_EXHAUSTED",
            // Gravitee 4.10's http-proxy endpoint: every timeout is REQUEST_TIMEOUT, every other
            // failure to reach the endpoint GATEWAY_CLIENT_CONNECTION_ERROR.
            GatewayError::Upstream(UpstreamError::ReadTimeout | UpstreamError::ConnectTimeout) => "REQUEST_TIMEOUT",
            GatewayError::Upstream(
                UpstreamError::ConnectionRefused | UpstreamError::Connection(_) | UpstreamError::Tls(_),
            ) => "GATEWAY_CLIENT_CONNECTION_ERROR",
            GatewayError::ClientBody(ClientFault::Malformed) => "REQUEST_BODY_INVALID",
            GatewayError::ClientBody(ClientFault::Stalled) => "REQUEST_BODY_TIMEOUT",
            GatewayError::RequestBodyTooLarge(_) => "REQUEST_BODY_TOO_LARGE",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotReady | GatewayError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Upstream(UpstreamError::ReadTimeout | UpstreamError::ConnectTimeout) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::Upstream(_) | GatewayError::CircuitOpen | GatewayError::RetriesExhausted => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::ClientBody(ClientFault::Malformed) => StatusCode::BAD_REQUEST,
            GatewayError::ClientBody(ClientFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::RequestBodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// What the client reads: causes stay in logs and the metrics record, not in responses. An
    /// endpoint failure has no message (Gravitee's endpoint connector raises it without one, and its
    /// failure processor then writes no body).
    pub fn public_message(&self) -> Option<String> {
        match self {
            GatewayError::Upstream(_) | GatewayError::CircuitOpen | GatewayError::RetriesExhausted => None,
            other => Some(other.to_string()),
        }
    }
}
/// An API's response templates with the request's Accept values.
pub(crate) type Templates<'a> = Option<(&'a ResponseTemplates, &'a [HeaderValue])>;

/// A response the gateway makes itself: a policy's answer (mock) or refusal (with its error key),
/// which the API's response template for that key replaces.
pub(crate) fn reply_response(
    reply: Reply,
    ids: &Ids,
    mut record: Option<PendingRecord>,
    in_flight: InFlight,
    templates: Templates<'_>,
) -> Response<ResponseBody> {
    let Reply { mut status, mut headers, mut body, error_key, error_message } = reply;
    let failure = error_key.is_some() || error_message.is_some();
    // Gravitee's failure processor closes the connection after any failure but a client error (its
    // V3 engine's after every failure).
    if (error_key.is_some() && !status.is_client_error()) || (ids.legacy && failure) {
        headers.push((CONNECTION, HeaderValue::from_static("close")));
    }
    if let (Some(key), Some((templates, accept))) = (error_key, templates)
        && let Some(template) = templates.select(key, accept)
    {
        body = template.apply(&mut status, &mut headers, accept.first());
    }
    let mut response_headers = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        response_headers.append(name, value);
    }
    // Gravitee's V3 engine answers its failures without the ids (its failure processor runs
    // outside the chain that sets them).
    if !(ids.legacy && failure) {
        ids.apply_response(&mut response_headers);
    }
    if let Some(r) = record.as_mut() {
        let rec = r.record_mut();
        rec.status = u32::from(status.as_u16());
        if let Some(key) = error_key {
            rec.error_key = key;
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
/// Gravitee's JSON error body: `{"message":"...","http_status_code":N}` (or the API's template).
pub(crate) fn error_response(
    error: &GatewayError,
    ids: &Ids,
    record: Option<PendingRecord>,
    in_flight: InFlight,
    templates: Templates<'_>,
) -> Response<ResponseBody> {
    let status = error.status();
    let (headers, body) = match error.public_message() {
        Some(message) => {
            let body = serde_json::json!({ "message": message, "http_status_code": status.as_u16() }).to_string();
            (vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))], Bytes::from(body))
        }
        None => (Vec::new(), Bytes::new()),
    };
    let reply = Reply { status, headers, body, error_key: Some(error.key()), error_message: Some(error.to_string()) };
    reply_response(reply, ids, record, in_flight, templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_keys_and_statuses() {
        let cases = [
            (GatewayError::NotReady, "GATEWAY_NOT_READY", 503),
            (GatewayError::NoEndpoint, "NO_ENDPOINT_FOUND", 503),
            (GatewayError::CircuitOpen, "FAILOVER_CIRCUIT_OPEN", 502),
            (UpstreamError::ReadTimeout.into(), "REQUEST_TIMEOUT", 504),
            (UpstreamError::ConnectTimeout.into(), "REQUEST_TIMEOUT", 504),
            (UpstreamError::ConnectionRefused.into(), "GATEWAY_CLIENT_CONNECTION_ERROR", 502),
            (UpstreamError::Connection("x".into()).into(), "GATEWAY_CLIENT_CONNECTION_ERROR", 502),
            (UpstreamError::Tls("x".into()).into(), "GATEWAY_CLIENT_CONNECTION_ERROR", 502),
        ];
        for (error, key, status) in cases {
            assert_eq!((error.key(), error.status().as_u16()), (key, status));
        }
        let refused: GatewayError = UpstreamError::ConnectionRefused.into();
        assert_eq!(refused.public_message(), None, "Gravitee answers endpoint failures without a body");
        assert!(GatewayError::NoEndpoint.public_message().is_some());
    }
}
