//! Request/response logging (Gravitee's v4 log records): which phases an API logs, and the capture of
//! one request's phases while it runs.
//!
//! Capture never buffers a stream: headers are copied when a phase's head passes, and bodies are teed
//! as they stream, keeping at most `--log-max-payload` bytes each. Requests of APIs without logging
//! carry no capture at all.

use std::sync::Arc;

use hgw_proto::v1::{self as pb, LogHeader, LogRecord, LogRequest, LogResponse};
use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::telemetry::redact::ApiKeyLocations;
use crate::telemetry::redact::{MASK, mask_query};
use crate::telemetry::request_metrics::{RequestMetrics, value_text};

/// Bytes of each body kept in a log record by default (`--log-max-payload`).
pub const DEFAULT_LOG_MAX_PAYLOAD: usize = 8 * 1024;

/// An API's compiled logging settings.
#[derive(Debug)]
pub struct Logging {
    pub entrypoint: bool,
    pub endpoint: bool,
    pub request: bool,
    pub response: bool,
    pub headers: bool,
    pub payload: bool,
    /// Requests are logged only when it holds; `None` logs every request.
    pub condition: Option<hgw_el::Expression>,
}

#[derive(Debug, thiserror::Error)]
#[error("condition: EL {0}")]
pub struct LoggingError(#[from] hgw_el::ParseError);

impl TryFrom<pb::LoggingSettings> for Logging {
    type Error = LoggingError;

    fn try_from(settings: pb::LoggingSettings) -> Result<Self, Self::Error> {
        let pb::LoggingSettings { entrypoint, endpoint, request, response, headers, payload, condition } = settings;
        let condition = match condition.trim() {
            "" => None,
            text => Some(hgw_el::parse(text)?),
        };
        Ok(Logging { entrypoint, endpoint, request, response, headers, payload, condition })
    }
}

/// What a log record masks: header values (the dataplane's `--log-masked-headers` and the API's
/// API-key headers) and the API's API-key query parameters in request URIs.
#[derive(Debug, Clone)]
pub struct Masking {
    pub headers: Arc<[HeaderName]>,
    pub api_keys: Arc<ApiKeyLocations>,
}

impl Masking {
    fn masks_header(&self, name: &HeaderName) -> bool {
        self.headers.contains(name) || self.api_keys.headers.contains(name)
    }
}

impl Logging {
    /// Starts a capture with the client's request as it arrived.
    pub fn capture(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        max_payload: usize,
        masking: Masking,
    ) -> LogCapture {
        let mut capture = LogCapture {
            masking,
            entrypoint_request: None,
            endpoint_request: None,
            endpoint_response: None,
            entrypoint_response: None,
            headers: self.headers,
            payload: self.payload,
            endpoint: self.endpoint,
            entrypoint: self.entrypoint,
            request: self.request,
            response: self.response,
            max_payload,
            response_body: CappedBody::default(),
            response_from_endpoint: false,
        };
        if self.entrypoint && self.request {
            capture.entrypoint_request = Some(capture.request_phase(method, &uri.to_string(), headers));
        }
        capture
    }
}

/// Up to `max` bytes of a body, and whether more went by.
#[derive(Debug, Default, Clone)]
pub struct CappedBody {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl CappedBody {
    pub fn push(&mut self, data: &[u8], max: usize) {
        let room = max.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// One request's log while it runs; turned into a [`LogRecord`] when its metrics record is emitted.
#[derive(Debug)]
pub struct LogCapture {
    masking: Masking,
    entrypoint_request: Option<LogRequest>,
    endpoint_request: Option<LogRequest>,
    endpoint_response: Option<LogResponse>,
    entrypoint_response: Option<LogResponse>,
    headers: bool,
    payload: bool,
    entrypoint: bool,
    endpoint: bool,
    request: bool,
    response: bool,
    max_payload: usize,
    /// The body sent to the client (the endpoint's, unless the gateway made or rewrote it).
    response_body: CappedBody,
    response_from_endpoint: bool,
}

impl LogCapture {
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn request_phase(&self, method: &Method, uri: &str, headers: &HeaderMap) -> LogRequest {
        LogRequest {
            method: method.as_str().to_owned(),
            uri: mask_query(uri, &self.masking.api_keys.query_params).into_owned(),
            headers: if self.headers { log_headers(headers, &self.masking) } else { Vec::new() },
            body: Vec::new(),
            body_truncated: false,
        }
    }

    fn response_phase(&self, status: StatusCode, headers: &HeaderMap) -> LogResponse {
        LogResponse {
            status: u32::from(status.as_u16()),
            headers: if self.headers { log_headers(headers, &self.masking) } else { Vec::new() },
            body: Vec::new(),
            body_truncated: false,
        }
    }

    /// The request as sent to the endpoint (the last attempt wins).
    pub fn endpoint_request(&mut self, method: &Method, uri: &str, headers: &HeaderMap) {
        if self.endpoint && self.request {
            self.endpoint_request = Some(self.request_phase(method, uri, headers));
        }
    }

    /// The endpoint's response head, before the response flows.
    pub fn endpoint_response(&mut self, status: StatusCode, headers: &HeaderMap) {
        if self.endpoint && self.response {
            self.endpoint_response = Some(self.response_phase(status, headers));
        }
    }

    /// The response head sent to the client.
    pub fn entrypoint_response(&mut self, status: StatusCode, headers: &HeaderMap) {
        if self.entrypoint && self.response {
            self.entrypoint_response = Some(self.response_phase(status, headers));
        }
    }

    /// Whether request bodies are teed (the log keeps a request phase with its payload).
    pub fn wants_request_body(&self) -> bool {
        self.payload && self.request
    }

    /// Whether response bodies are teed.
    pub fn wants_response_body(&self) -> bool {
        self.payload && self.response
    }

    /// The response body streams from the endpoint unchanged (so it is also the endpoint's body).
    pub fn response_from_endpoint(&mut self) {
        self.response_from_endpoint = true;
    }

    pub fn response_data(&mut self, data: &[u8]) {
        if self.wants_response_body() {
            self.response_body.push(data, self.max_payload);
        }
    }

    /// The finished record; `api` is the API's id and name (the metrics record may leave them to its
    /// batch's table), `request_body` what the request body tee kept.
    pub fn finish(
        self,
        metrics: &RequestMetrics,
        (api_id, api_name): (&str, &str),
        request_body: Option<CappedBody>,
    ) -> LogRecord {
        let LogCapture {
            mut entrypoint_request,
            mut endpoint_request,
            mut endpoint_response,
            mut entrypoint_response,
            payload,
            response_body,
            response_from_endpoint,
            ..
        } = self;
        if payload {
            if let Some(body) = request_body {
                for phase in [entrypoint_request.as_mut(), endpoint_request.as_mut()].into_iter().flatten() {
                    phase.body.clone_from(&body.bytes);
                    phase.body_truncated = body.truncated;
                }
            }
            let mut responses = vec![entrypoint_response.as_mut()];
            if response_from_endpoint {
                responses.push(endpoint_response.as_mut());
            }
            for phase in responses.into_iter().flatten() {
                phase.body.clone_from(&response_body.bytes);
                phase.body_truncated = response_body.truncated;
            }
        }
        LogRecord {
            timestamp_ms: metrics.timestamp_ms,
            request_id: value_text(&metrics.request_id).into_owned(),
            transaction_id: value_text(&metrics.transaction_id).into_owned(),
            api_id: api_id.to_owned(),
            api_name: api_name.to_owned(),
            client_identifier: metrics.client_identifier().into_owned(),
            application_id: metrics.application_id.clone(),
            plan_id: metrics.plan_id.clone(),
            subscription_id: metrics.subscription_id.clone(),
            request_ended: metrics.request_ended,
            entrypoint_request,
            endpoint_request,
            endpoint_response,
            entrypoint_response,
        }
    }
}

/// Headers as name → values, names in first-seen order (`HeaderMap` groups a name's values); masked
/// headers keep their name and count of values, each value replaced by `*****`.
fn log_headers(headers: &HeaderMap, masking: &Masking) -> Vec<LogHeader> {
    headers
        .keys()
        .map(|name| {
            let masked = masking.masks_header(name);
            LogHeader {
                name: name.as_str().to_owned(),
                values: headers
                    .get_all(name)
                    .iter()
                    .map(|v| if masked { MASK.to_owned() } else { value_text(v).into_owned() })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn logging(entrypoint: bool, endpoint: bool, payload: bool) -> Logging {
        Logging { entrypoint, endpoint, request: true, response: true, headers: true, payload, condition: None }
    }

    fn no_masking() -> Masking {
        Masking { headers: Arc::from(Vec::new()), api_keys: Arc::default() }
    }

    #[test]
    fn credentials_and_api_keys_are_masked() {
        let masking = Masking {
            headers: Arc::from(vec![http::header::AUTHORIZATION, http::header::COOKIE, http::header::SET_COOKIE]),
            api_keys: Arc::new(ApiKeyLocations {
                headers: vec![HeaderName::from_static("x-key")],
                query_params: vec!["key".into()],
            }),
        };
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("Basic c2VjcmV0"));
        headers.append("cookie", HeaderValue::from_static("a=SESSION1"));
        headers.append("cookie", HeaderValue::from_static("b=SESSION2"));
        headers.append("x-key", HeaderValue::from_static("KEY1"));
        headers.append("accept", HeaderValue::from_static("text/plain"));
        let uri: http::Uri = "/p?key=KEY2&q=1".parse().unwrap();
        let metrics = RequestMetrics::default();
        let mut capture = logging(true, true, false).capture(&Method::GET, &uri, &headers, 4, masking);
        capture.endpoint_request(&Method::GET, "http://b/p?q=1", &headers);
        let mut response = HeaderMap::new();
        response.append("set-cookie", HeaderValue::from_static("s=SESSION3"));
        capture.endpoint_response(StatusCode::OK, &response);
        capture.entrypoint_response(StatusCode::OK, &response);
        let record = capture.finish(&metrics, ("", ""), None);
        let text = format!("{record:?}");
        for secret in ["c2VjcmV0", "SESSION1", "SESSION2", "SESSION3", "KEY1", "KEY2"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let request = record.entrypoint_request.unwrap();
        assert_eq!(request.uri, "/p?key=*****&q=1");
        let cookie = request.headers.iter().find(|h| h.name == "cookie").unwrap();
        assert_eq!(cookie.values, ["*****", "*****"]);
        let accept = request.headers.iter().find(|h| h.name == "accept").unwrap();
        assert_eq!(accept.values, ["text/plain"]);
    }

    #[test]
    fn capped_body_keeps_the_first_bytes_and_notes_truncation() {
        let mut body = CappedBody::default();
        body.push(b"hello ", 8);
        assert!(!body.truncated);
        body.push(b"world", 8);
        body.push(b"!", 8);
        assert_eq!((body.bytes.as_slice(), body.truncated), (&b"hello wo"[..], true));
    }

    #[test]
    fn phases_follow_the_settings() {
        let mut headers = HeaderMap::new();
        headers.append("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        let uri: http::Uri = "/p?q=1".parse().unwrap();
        let metrics = RequestMetrics { request_id: HeaderValue::from_static("r"), ..Default::default() };

        let mut capture = logging(true, false, true).capture(&Method::POST, &uri, &headers, 4, no_masking());
        capture.endpoint_request(&Method::POST, "http://b/p", &headers);
        capture.endpoint_response(StatusCode::OK, &HeaderMap::new());
        capture.response_from_endpoint();
        capture.entrypoint_response(StatusCode::OK, &HeaderMap::new());
        capture.response_data(b"abcdef");
        let body = CappedBody { bytes: b"in".to_vec(), truncated: false };
        let record = capture.finish(&metrics, ("", ""), Some(body));
        let request = record.entrypoint_request.unwrap();
        assert_eq!((request.method.as_str(), request.uri.as_str()), ("POST", "/p?q=1"));
        assert_eq!(request.headers, vec![LogHeader { name: "accept".into(), values: vec!["a".into(), "b".into()] }]);
        assert_eq!(request.body, b"in");
        let response = record.entrypoint_response.unwrap();
        assert_eq!((response.body.as_slice(), response.body_truncated), (&b"abcd"[..], true));
        assert!(record.endpoint_request.is_none() && record.endpoint_response.is_none(), "endpoint side is off");
        assert_eq!(record.request_id, "r");

        // Without payloads nothing is teed; a gateway-made body is not the endpoint's.
        let mut capture = logging(true, true, false).capture(&Method::GET, &uri, &headers, 4, no_masking());
        capture.endpoint_response(StatusCode::OK, &HeaderMap::new());
        assert!(!capture.wants_response_body());
        capture.response_data(b"abc");
        let record = capture.finish(&metrics, ("", ""), None);
        assert!(record.endpoint_response.unwrap().body.is_empty());
    }
}
