//! Gravitee policies, one per module behind the small [`Policy`] trait.
//!
//! A policy's configuration is compiled once, when an API arrives from the agent ([`compile`] is the
//! registry: adding a policy is one module and one line there); requests only run the compiled form.
//! A policy sees the request (or response) head and the request's context attributes; it lets the
//! request continue or answers it itself ([`Outcome::Respond`]), as Gravitee's policies do.

mod api_key;
mod assign_attributes;
mod assign_content;
pub mod cache;
pub mod counters;
mod dynamic_routing;
pub mod el;
pub mod generate_jwt;
mod http_callout;
mod http_redirect;
mod ip_filtering;
mod javascript;
mod json_to_json;
mod json_validation;
mod latency;
mod mock;
pub mod orgjson;
mod override_method;
pub mod rate_limit;
mod request_content_limit;
mod resource_filtering;
pub mod retry;
mod status_code;
mod transform_headers;
mod transform_query_params;
mod url_rewriting;
mod xml_json;

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use hgw_proto::v1 as pb;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::policies::el::{ElContext, RequestInfo};
use crate::telemetry::analytics::Warning;

pub use api_key::{ApiKeys, DEFAULT_API_KEY_HEADER, DEFAULT_API_KEY_QUERY_PARAM};

/// Request context attributes (`policy-assign-attributes`, read by later policies).
pub type Attributes = Vec<(String, String)>;

/// What a request-phase policy may look at and change.
pub struct RequestExchange<'a> {
    pub parts: &'a mut http::request::Parts,
    /// The connection's peer address.
    pub peer_ip: IpAddr,
    /// Whose `X-Forwarded-For` entries count (`--trusted-proxies`).
    pub trusted_proxies: &'a crate::http::forwarded::TrustedProxies,
    pub attributes: &'a mut Attributes,
    /// The API, plan and subscription the request runs under (counter names).
    pub api_id: &'a str,
    pub plan_id: &'a str,
    pub subscription_id: &'a str,
    /// The cluster-wide rate-limit counters (through the agent).
    pub counters: &'a Arc<crate::policies::counters::Counters>,
    /// Request arrival, epoch milliseconds.
    pub now_ms: i64,
    /// Headers to add to whatever response the request gets (e.g. X-Rate-Limit-Remaining).
    pub response_headers: &'a mut Vec<(HeaderName, HeaderValue)>,
    /// What EL reads about the request (empty for APIs without EL).
    pub info: &'a RequestInfo,
    /// The current flow's `:name` path parameters.
    pub path_params: &'a [(String, String)],
    /// Where `dynamic-routing` sends the request (Gravitee's request endpoint attribute): `name:/path`
    /// for an endpoint or endpoint group, an absolute URL, or a path; `None`: the default group.
    pub endpoint_target: &'a mut Option<String>,
    /// How the endpoint call is retried, once a `retry` step armed it.
    pub retry: &'a mut Option<Arc<retry::RetrySettings>>,
    /// The cache step that answers for or stores the endpoint call, once one armed it.
    pub cache: &'a mut Option<cache::Armed>,
    /// A v2 API on Gravitee's V3 engine, where a policy's refusal is a failure with a JSON body.
    pub legacy_engine: bool,
    /// The request body, when a step of the request's flows reads or replaces it (it is then
    /// buffered before the flows run, and what the last step left is sent to the endpoint).
    pub body: Option<&'a mut Bytes>,
    /// The API's keys, for the `api-key` step (`None`: no key is valid).
    pub api_keys: Option<&'a dyn ApiKeys>,
}

impl RequestExchange<'_> {
    /// An EL context over the request as it is now (headers and body include earlier policies'
    /// changes).
    pub fn el(&self) -> ElContext<'_> {
        ElContext::request(self.info, &self.parts.headers, self.path_params, self.attributes)
            .with_request_content(self.body.as_deref().map(|b| &b[..]))
    }
}

/// What a response-phase policy may look at and change.
pub struct ResponseExchange<'a> {
    pub status: &'a mut StatusCode,
    pub headers: &'a mut HeaderMap,
    /// Response-phase steps may set attributes too (http-callout's variables).
    pub attributes: &'a mut Attributes,
    pub info: &'a RequestInfo,
    /// The response body, when a step of the response flows reads or replaces it (buffered before
    /// they run); otherwise it streams untouched.
    pub body: Option<&'a mut Bytes>,
    /// Set by a policy that fails the response (Gravitee's policy failure): the steps after it do
    /// not run and the client gets this answer instead.
    pub failure: Option<Reply>,
    /// A v2 API on Gravitee's V3 engine (see [`RequestExchange::legacy_engine`]).
    pub legacy_engine: bool,
}

impl ResponseExchange<'_> {
    /// An EL context over the response (and the request as it was sent upstream).
    pub fn el(&self) -> ElContext<'_> {
        ElContext::response(self.info, &self.attributes[..], self.status.as_u16(), self.headers)
            .with_response_content(self.body.as_deref().map(|b| &b[..]))
    }
}

/// A response the gateway makes itself (a policy's answer or refusal).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Gravitee's error key, for the metrics record (and response templates).
    pub error_key: Option<&'static str>,
    pub error_message: Option<String>,
}

impl Reply {
    /// A failure Gravitee answers without a message: the status alone, no body.
    pub fn empty(status: StatusCode, key: &'static str) -> Reply {
        Reply { status, headers: Vec::new(), body: Bytes::new(), error_key: Some(key), error_message: None }
    }

    /// Gravitee's answer for a failure whose message is declared JSON (`contentType`
    /// `application/json`): the message itself is the body.
    pub fn json_message(status: StatusCode, key: Option<&'static str>, message: String) -> Reply {
        Reply {
            status,
            headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: Bytes::from(message.clone()),
            error_key: key,
            error_message: Some(message),
        }
    }

    /// Gravitee's error body: `{"message":"...","http_status_code":N}`.
    pub fn error(status: StatusCode, key: Option<&'static str>, message: impl Into<String>) -> Reply {
        let message = message.into();
        let body = serde_json::json!({"message": message, "http_status_code": status.as_u16()}).to_string();
        Reply {
            status,
            headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: Bytes::from(body),
            error_key: key,
            error_message: Some(message),
        }
    }
}

pub enum Outcome {
    Continue,
    Respond(Reply),
    /// The policy needs an answer from elsewhere (the agent's counters) before deciding.
    Wait(futures::future::BoxFuture<'static, Verdict>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Continue => f.write_str("Continue"),
            Outcome::Respond(reply) => f.debug_tuple("Respond").field(reply).finish(),
            Outcome::Wait(_) => f.write_str("Wait"),
        }
    }
}

/// The decision of a policy that waited.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `None`: the request continues.
    pub reply: Option<Reply>,
    /// Added to whatever response the request gets.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub warning: Option<Warning>,
    /// What the policy does with the exchange once its wait is over (http-callout reads its answer
    /// with the request's EL and sets attributes); when set, it decides instead of `reply`.
    pub resume: Option<Resume>,
}

/// The rest of a request-phase policy that waited: run with the exchange, it may answer the request.
pub struct Resume(pub ResumeFn);

/// The function inside a [`Resume`].
pub type ResumeFn = Box<dyn FnOnce(&mut RequestExchange<'_>) -> Option<Reply> + Send>;

impl Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resume")
    }
}

/// The rest of a response-phase policy that waited: it may set attributes or fail the response
/// ([`ResponseExchange::failure`]).
pub struct ResponseResume(pub Box<dyn FnOnce(&mut ResponseExchange<'_>) + Send>);

pub trait Policy: Send + Sync + Debug {
    fn on_request(&self, _exchange: &mut RequestExchange<'_>) -> Outcome {
        Outcome::Continue
    }
    fn on_response(&self, _exchange: &mut ResponseExchange<'_>) {}
    /// Called after [`Policy::on_response`]: a response-phase step that must wait for something
    /// (an HTTP callout) returns what it waits for, and then the rest of its work.
    fn on_response_wait(
        &self,
        _exchange: &mut ResponseExchange<'_>,
    ) -> Option<futures::future::BoxFuture<'static, Option<ResponseResume>>> {
        None
    }
    /// Whether the policy evaluates EL per request (the proxy then fills the EL request info).
    fn uses_el(&self) -> bool {
        false
    }
    /// Whether the policy reads or replaces the request body in the request phase (the proxy then
    /// buffers it before the request flows: [`RequestExchange::body`]).
    fn reads_request_body(&self) -> bool {
        false
    }
    /// Whether the policy reads or replaces the response body in the response phase (the proxy then
    /// buffers it before the response flows: [`ResponseExchange::body`]).
    fn reads_response_body(&self) -> bool {
        false
    }
}

/// A configuration value that is constant or a Gravitee EL template, compiled once.
#[derive(Debug, Clone)]
pub enum Value {
    Constant(String),
    Template(hgw_el::Template),
}

impl Value {
    pub fn compile(field: &str, text: String) -> Result<Value, PolicyError> {
        let template = hgw_el::parse_template(&text).map_err(|e| invalid(field, format!("EL {e}")))?;
        Ok(if template.is_constant() { Value::Constant(text) } else { Value::Template(template) })
    }

    pub fn is_template(&self) -> bool {
        matches!(self, Value::Template(_))
    }

    /// Whether rendering it reads `#request.content` or `#response.content`.
    pub fn reads_content(&self) -> bool {
        matches!(self, Value::Template(t) if t.reads_content())
    }

    pub fn render(&self, el: &ElContext<'_>) -> String {
        match self {
            Value::Constant(text) => text.clone(),
            Value::Template(template) => el.render(template),
        }
    }
}

/// Which phase a step is compiled for: some policies only make sense in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

/// Why a step cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the step names no policy this dataplane supports")]
    Unsupported,
    #[error("policy {0} cannot run in the {1:?} phase")]
    Phase(&'static str, Phase),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid { field: field.into(), reason: reason.into() }
}

/// The registry: one line per policy.
pub fn compile(step: pb::Step, phase: Phase) -> Result<Arc<dyn Policy>, PolicyError> {
    use pb::step::Policy as P;
    let pb::Step { name: _, condition: _, policy } = step;
    match policy.ok_or(PolicyError::Unsupported)? {
        P::Mock(config) => request_only(phase, "mock", mock::Mock::compile(config)),
        P::TransformHeaders(config) => Ok(Arc::new(transform_headers::TransformHeaders::compile(config)?)),
        P::IpFiltering(config) => request_only(phase, "ip-filtering", ip_filtering::IpFiltering::compile(config)),
        P::RequestContentLimit(config) => request_only(
            phase,
            "request-content-limit",
            Ok(request_content_limit::RequestContentLimit::compile(config)),
        ),
        P::AssignAttributes(config) => {
            request_only(phase, "policy-assign-attributes", assign_attributes::AssignAttributes::compile(config))
        }
        P::RateLimit(config) => request_only(phase, "rate-limit", rate_limit::RateLimit::compile(config)),
        P::UrlRewriting(config) => {
            if phase != Phase::Response {
                return Err(PolicyError::Phase("url-rewriting", phase));
            }
            Ok(Arc::new(url_rewriting::UrlRewriting::compile(config)?))
        }
        P::Latency(config) => request_only(phase, "latency", Ok(latency::Latency::compile(config))),
        P::OverrideMethod(config) => {
            request_only(phase, "policy-override-request-method", override_method::OverrideMethod::compile(config))
        }
        P::StatusCode(config) => {
            if phase != Phase::Response {
                return Err(PolicyError::Phase("status-code", phase));
            }
            Ok(Arc::new(status_code::StatusCodeMap::compile(config)?))
        }
        P::DynamicRouting(config) => {
            request_only(phase, "dynamic-routing", dynamic_routing::DynamicRouting::compile(config))
        }
        P::AssignContent(config) => Ok(Arc::new(assign_content::AssignContent::compile(config)?)),
        P::ApiKey(config) => request_only(phase, "api-key", api_key::ApiKeyStep::compile(config)),
        P::JsonToJson(config) => Ok(Arc::new(json_to_json::JsonToJson::compile(config)?)),
        P::XmlToJson(config) => Ok(Arc::new(xml_json::XmlJson::xml_to_json(config)?)),
        P::JsonToXml(config) => Ok(Arc::new(xml_json::XmlJson::json_to_xml(config)?)),
        P::Retry(config) => request_only(phase, "retry", retry::Retry::compile(config)),
        P::Cache(config) => request_only(phase, "cache", cache::Cache::compile(config)),
        P::HttpRedirect(config) => request_only(phase, "http-redirect", http_redirect::HttpRedirect::compile(config)),
        P::TransformQueryParams(config) => {
            request_only(phase, "transform-queryparams", transform_query_params::TransformQueryParams::compile(config))
        }
        P::JsonValidation(config) => Ok(Arc::new(json_validation::JsonValidation::compile(config)?)),
        P::ResourceFiltering(config) => {
            request_only(phase, "resource-filtering", resource_filtering::ResourceFiltering::compile(config))
        }
        P::HttpCallout(config) => Ok(Arc::new(http_callout::HttpCallout::compile(config)?)),
        P::Javascript(config) => Ok(Arc::new(javascript::Javascript::compile(config, phase))),
        P::GenerateJwt(config) => {
            request_only(phase, "policy-generate-jwt", generate_jwt::GenerateJwt::compile(config))
        }
    }
}

fn request_only<P: Policy + 'static>(
    phase: Phase,
    name: &'static str,
    policy: Result<P, PolicyError>,
) -> Result<Arc<dyn Policy>, PolicyError> {
    if phase != Phase::Request {
        return Err(PolicyError::Phase(name, phase));
    }
    Ok(Arc::new(policy?))
}

/// An exchange for unit tests of request-phase policies.
#[cfg(test)]
pub(crate) fn with_test_exchange<T>(
    parts: &mut http::request::Parts,
    peer: &str,
    run: impl FnOnce(&mut RequestExchange<'_>) -> T,
) -> T {
    with_test_exchange_behind(parts, peer, &crate::http::forwarded::TrustedProxies::default(), run)
}

/// [`with_test_exchange`] with `trusted` proxies.
#[cfg(test)]
pub(crate) fn with_test_exchange_behind<T>(
    parts: &mut http::request::Parts,
    peer: &str,
    trusted: &crate::http::forwarded::TrustedProxies,
    run: impl FnOnce(&mut RequestExchange<'_>) -> T,
) -> T {
    with_test_exchange_full(parts, peer, trusted, None, false, run)
}

/// [`with_test_exchange`] with a request body, on the V3 engine or not.
#[cfg(test)]
pub(crate) fn with_test_body_exchange<T>(
    parts: &mut http::request::Parts,
    body: &mut Bytes,
    legacy_engine: bool,
    run: impl FnOnce(&mut RequestExchange<'_>) -> T,
) -> T {
    let trusted = crate::http::forwarded::TrustedProxies::default();
    with_test_exchange_full(parts, "127.0.0.1", &trusted, Some(body), legacy_engine, run)
}

#[cfg(test)]
fn with_test_exchange_full<T>(
    parts: &mut http::request::Parts,
    peer: &str,
    trusted: &crate::http::forwarded::TrustedProxies,
    body: Option<&mut Bytes>,
    legacy_engine: bool,
    run: impl FnOnce(&mut RequestExchange<'_>) -> T,
) -> T {
    let mut attributes = Attributes::new();
    let counters = Arc::new(crate::policies::counters::Counters::new(Arc::new(
        crate::policies::counters::tests::MapBackend::default(),
    )));
    let mut response_headers = Vec::new();
    let info = RequestInfo::default();
    let mut exchange = RequestExchange {
        parts,
        peer_ip: peer.parse().expect("test peer address"),
        trusted_proxies: trusted,
        attributes: &mut attributes,
        api_id: "api",
        plan_id: "plan",
        subscription_id: "subscription",
        counters: &counters,
        now_ms: 0,
        response_headers: &mut response_headers,
        info: &info,
        path_params: &[],
        endpoint_target: &mut None,
        retry: &mut None,
        cache: &mut None,
        legacy_engine,
        body,
        api_keys: None,
    };
    run(&mut exchange)
}

/// A header from the proto, checked once.
pub(crate) fn header(
    field: &str,
    pb::Header { name, value }: pb::Header,
) -> Result<(HeaderName, HeaderValue), PolicyError> {
    let parsed_name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| invalid(field, format!("{name:?} is not a header name")))?;
    let parsed_value = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| invalid(field, format!("value of {name:?} is not a valid header value")))?;
    Ok((parsed_name, parsed_value))
}

pub(crate) fn header_name(field: &str, name: &str) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid(field, format!("{name:?} is not a header name")))
}
