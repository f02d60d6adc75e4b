//! OpenTelemetry traces of requests: W3C trace context in, spans out, `traceparent` on to the endpoint.
//!
//! A request is considered for tracing only when the dataplane exports traces (an OTLP endpoint is
//! configured) and its API is traced (`analytics.tracing.enabled`, or `--trace-apis all`). Then one
//! sampling decision is made. An unsampled request records nothing: the client's `traceparent` goes to
//! the endpoint unchanged (the spec lets an intermediary that does not record pass it on as is), and a
//! request without one gets a new trace id with the sampled flag off, so the services behind share the
//! decision. A sampled request gets a SERVER span (HTTP semantic conventions plus Gravitee's
//! attributes), `security`, `request` and `response` phase spans, a CLIENT span per endpoint attempt
//! (retries and failover are further attempts, `http.request.resend_count`), and with `verbose` a span
//! per policy step named by its Gravitee policy id. The endpoint sees the CLIENT span as its parent.
//! The decision is made when the request is routed, in [`crate::gateway::trace`].

use hgw_otel::context::TRACEPARENT;
use hgw_otel::{Span, SpanKind, Trace};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// An API's `analytics.tracing` as the dataplane uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTracing {
    /// A span per policy step.
    pub verbose: bool,
}

/// A sampled request's trace; its SERVER span ends when the trace is dropped (with the response body,
/// or when the client goes away), and the spans go to the export queue then.
#[derive(Debug)]
pub struct RequestTrace {
    trace: Trace,
    server: Option<Span>,
    pub verbose: bool,
    status: Option<StatusCode>,
    error_key: Option<&'static str>,
}

impl RequestTrace {
    /// A sampled request's trace, its SERVER span started ([`crate::gateway::trace::start`]).
    pub(crate) fn new(trace: Trace, server: Span, verbose: bool) -> RequestTrace {
        RequestTrace { trace, server: Some(server), verbose, status: None, error_key: None }
    }

    fn server_id(&self) -> u64 {
        self.server.as_ref().map_or(0, |s| s.id)
    }

    /// A span under the request's SERVER span.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        self.trace.span(self.server_id(), name, kind)
    }

    /// A span under `parent` (a policy step under its phase).
    pub fn child_of(&self, parent: &Span, name: &'static str) -> Span {
        self.trace.child(parent, name, SpanKind::Internal)
    }

    pub fn end(&mut self, span: Span) {
        self.trace.end(span);
    }

    /// The `traceparent` naming `span` as the endpoint's parent.
    pub fn traceparent(&self, span: &Span) -> HeaderValue {
        self.trace.traceparent(span)
    }

    /// An attribute of the SERVER span (plan, application, subscription, endpoint).
    pub fn set(&mut self, key: &'static str, value: impl Into<hgw_otel::Value>) {
        if let Some(server) = self.server.as_mut() {
            server.set(key, value);
        }
    }

    /// The Gravitee error key the gateway answered with.
    pub fn error_key(&mut self, key: &'static str) {
        self.error_key = Some(key);
    }

    pub fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// A `tracing` span naming the trace for log lines written while the request runs.
    pub fn log_span(&self) -> tracing::Span {
        match &self.server {
            Some(server) => self.trace.log_span(server),
            None => tracing::Span::none(),
        }
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        match self.status {
            Some(status) => {
                server.set("http.response.status_code", i64::from(status.as_u16()));
                // Server spans fail on 5xx only (a 4xx is the client's error, not the gateway's).
                if status.is_server_error() {
                    server.error(self.error_key.unwrap_or("").to_owned());
                    server.set("error.type", self.error_key.map_or_else(|| status.as_u16().to_string(), str::to_owned));
                }
            }
            None => {
                // The client went away before a response was made.
                server.error("client disconnected");
                server.set("error.type", "CLIENT_ABORTED");
            }
        }
        if let Some(key) = self.error_key {
            server.set("gravitee.error.key", key);
        }
        self.trace.end(server);
    }
}

/// Notes the error key of a gateway answer on the request's trace, if it is traced.
pub fn note_error(trace: &mut Option<Box<RequestTrace>>, key: Option<&'static str>) {
    if let (Some(trace), Some(key)) = (trace.as_mut(), key) {
        trace.error_key(key);
    }
}

/// The CLIENT span of one endpoint attempt, its `traceparent` set on `headers`.
pub fn endpoint_attempt(
    trace: &mut RequestTrace,
    method: &Method,
    uri: &http::Uri,
    endpoint: &str,
    attempt: u32,
    headers: &mut HeaderMap,
) -> Span {
    let mut span = trace.child(method_name(method), SpanKind::Client);
    span.set("http.request.method", method.as_str().to_owned());
    if let Some(host) = uri.host() {
        span.set("server.address", host.to_owned());
    }
    if let Some(port) = uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("https") => Some(443),
        _ => Some(80),
    }) {
        span.set("server.port", i64::from(port));
    }
    // Without the query: it may carry credentials (an API key propagated to the backend).
    span.set(
        "url.full",
        format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        ),
    );
    span.set("gravitee.endpoint", endpoint.to_owned());
    if attempt > 1 {
        span.set("http.request.resend_count", i64::from(attempt - 1));
    }
    headers.insert(TRACEPARENT, trace.traceparent(&span));
    span
}

/// Semantic conventions name HTTP client spans by method (`_OTHER` for methods outside RFC 9110).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_methods_are_named_other() {
        assert_eq!(method_name(&Method::from_bytes(b"PURGE").unwrap()), "_OTHER");
    }
}
