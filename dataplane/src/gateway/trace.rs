//! The tracing decision of a routed request (see [`crate::telemetry::trace`]): whether it is traced,
//! sampled, and its SERVER span.

use std::net::SocketAddr;
use std::time::SystemTime;

use hgw_otel::context::{TRACEPARENT, TRACESTATE, tracestate};
use hgw_otel::{Sampling, SpanKind, TraceParent};
use http::{HeaderMap, HeaderValue, Method, Version};

use super::Shared;
use super::context::lossy;
use crate::api::routes::Api;
use crate::telemetry::trace::RequestTrace;

/// What a request does about tracing.
#[derive(Debug)]
pub enum Start {
    /// Not traced: headers pass through untouched.
    Off,
    /// Not sampled and the client sent no trace context: this `traceparent` (sampled flag off) goes to
    /// the endpoint.
    Propagate(HeaderValue),
    /// Sampled: spans are recorded.
    Traced(Box<RequestTrace>),
}

/// The request's fields the SERVER span reports.
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: &'a str,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub remote: SocketAddr,
    pub tls: bool,
    pub context_path: &'a str,
    pub request_id: &'a HeaderValue,
    pub transaction_id: &'a HeaderValue,
}

/// Decides whether this request is traced; `age` is how long ago it arrived (the SERVER span starts
/// then). Costs one branch when tracing is off or the API is not traced.
pub fn start(shared: &Shared, api: &Api, request: &Incoming<'_>, age: std::time::Duration) -> Start {
    let Some(tracing) = &shared.tracing else {
        return Start::Off;
    };
    let verbose = match api.tracing {
        Some(settings) => settings.verbose,
        None if shared.trace_all => false,
        None => return Start::Off,
    };
    let parent = request.headers.get(TRACEPARENT).and_then(|v| TraceParent::parse(v.as_bytes()));
    let state = if parent.is_some() { request.headers.get(TRACESTATE).and_then(tracestate) } else { None };
    let trace = match tracing.sample(parent, state) {
        Sampling::Sampled(trace) => trace,
        Sampling::NotSampled { .. } if parent.is_some() => return Start::Off,
        Sampling::NotSampled { trace_id } => {
            return Start::Propagate(TraceParent::header(trace_id, rand::random::<u64>() | 1, 0));
        }
    };
    let mut server = trace.root(format!("{} {}", request.method, request.context_path), SpanKind::Server);
    server.started_at(SystemTime::now().checked_sub(age).unwrap_or_else(SystemTime::now));
    server.set("http.request.method", request.method.as_str().to_owned());
    server.set("url.path", request.path.to_owned());
    server.set("url.scheme", if request.tls { "https" } else { "http" });
    server.set("http.route", request.context_path.to_owned());
    let (host, port) = split_host(request.host);
    if !host.is_empty() {
        server.set("server.address", host.to_owned());
    }
    if let Some(port) = port {
        server.set("server.port", i64::from(port));
    }
    server.set("client.address", request.remote.ip().to_string());
    server.set("network.peer.address", request.remote.ip().to_string());
    server.set("network.peer.port", i64::from(request.remote.port()));
    server.set("network.protocol.version", protocol_version(request.version));
    if let Some(agent) = request.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        server.set("user_agent.original", agent.to_owned());
    }
    server.set("gravitee.api.id", api.id.clone());
    server.set("gravitee.api.name", api.name.clone());
    server.set("gravitee.request.id", lossy(request.request_id));
    server.set("gravitee.transaction.id", lossy(request.transaction_id));
    Start::Traced(Box::new(RequestTrace::new(trace, server, verbose)))
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(split_host("api.example:8082"), ("api.example", Some(8082)));
        assert_eq!(split_host("api.example"), ("api.example", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
