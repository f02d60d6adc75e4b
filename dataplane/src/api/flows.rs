//! Gravitee flows, compiled once when an API is converted: method set, path selector, and the policy
//! steps of the request and response phases (see `policies`). A step this dataplane cannot run rejects
//! the whole API (NACK), never half-applied.

use std::sync::Arc;

use hgw_proto::v1 as pb;
use http::Method;

use crate::policies::{self, Phase, Policy, PolicyError};

/// A compiled flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    /// Empty matches every method.
    methods: Vec<Method>,
    path: PathSelector,
    /// Gravitee EL condition (condition selector), checked after method and path.
    pub condition: Option<hgw_el::Expression>,
    pub request: Vec<Step>,
    pub response: Vec<Step>,
}

/// One policy invocation with its optional EL condition.
#[derive(Debug, Clone)]
pub struct Step {
    pub condition: Option<hgw_el::Expression>,
    pub policy: Arc<dyn Policy>,
    /// The policy's Gravitee id (`transform-headers`, `rate-limit`...): a verbose trace's span name.
    pub policy_id: &'static str,
    /// The step's name as the API designer typed it.
    pub name: String,
}

/// How a flow's path is compared with the request path after the context path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOperator {
    StartsWith,
    Equals,
}

/// A flow path split into segments; `:name` segments match any one segment.
#[derive(Debug, Clone)]
struct PathSelector {
    operator: PathOperator,
    segments: Vec<Segment>,
    /// Best-match rank, computed once: per segment 2 for a literal and 1 for a `:param` (compared
    /// lexicographically, so literals beat params and longer beats shorter), then EQUALS over STARTS_WITH.
    specificity: (Vec<u8>, bool),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// `:name`: any one segment, captured as a path parameter.
    Param(String),
}

/// Why a flow cannot be compiled; the message carries the field path inside the flow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("methods[{index}]: {method:?} is not an HTTP method")]
    Method { index: usize, method: String },
    #[error("path {0:?}: must start with '/'")]
    Path(String),
    #[error("{phase}[{index}]: {error}")]
    Step { phase: &'static str, index: usize, error: PolicyError },
    #[error("{field}: EL {error}")]
    Condition { field: String, error: hgw_el::ParseError },
}

/// Parses an optional EL expression (empty: none).
fn condition(text: &str, field: impl Into<String>) -> Result<Option<hgw_el::Expression>, FlowError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    hgw_el::parse(text).map(Some).map_err(|error| FlowError::Condition { field: field.into(), error })
}

impl TryFrom<pb::Flow> for Flow {
    type Error = FlowError;

    fn try_from(flow: pb::Flow) -> Result<Self, Self::Error> {
        let pb::Flow { name, path, path_operator, methods, request, response, condition: flow_condition } = flow;
        let flow_condition = condition(&flow_condition, "condition")?;
        let methods = methods
            .into_iter()
            .enumerate()
            .map(|(index, m)| {
                Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| FlowError::Method { index, method: m })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let operator = match pb::PathOperator::try_from(path_operator) {
            Ok(pb::PathOperator::Equals) => PathOperator::Equals,
            // Gravitee's default operator, also for values it does not know.
            _ => PathOperator::StartsWith,
        };
        let path = if path.is_empty() { "/".to_owned() } else { path };
        if !path.starts_with('/') {
            return Err(FlowError::Path(path));
        }
        let segments: Vec<Segment> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix(':') {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(s.to_owned()),
            })
            .collect();
        let ranks = segments.iter().map(|s| if matches!(s, Segment::Literal(_)) { 2 } else { 1 }).collect();
        let specificity = (ranks, operator == PathOperator::Equals);
        let request = compile_steps(request, Phase::Request)?;
        let response = compile_steps(response, Phase::Response)?;
        Ok(Flow {
            name,
            methods,
            path: PathSelector { operator, segments, specificity },
            condition: flow_condition,
            request,
            response,
        })
    }
}

fn compile_steps(steps: Vec<pb::Step>, phase: Phase) -> Result<Vec<Step>, FlowError> {
    let label = match phase {
        Phase::Request => "request",
        Phase::Response => "response",
    };
    steps
        .into_iter()
        .enumerate()
        .map(|(index, step)| {
            let step_condition = condition(&step.condition, format!("{label}[{index}].condition"))?;
            let policy_id = policy_id(step.policy.as_ref());
            let name = step.name.clone();
            let policy =
                policies::compile(step, phase).map_err(|error| FlowError::Step { phase: label, index, error })?;
            Ok(Step { condition: step_condition, policy, policy_id, name })
        })
        .collect()
}

impl Step {
    /// Whether the request body is buffered for this step: its policy or its condition reads it.
    pub fn reads_request_body(&self) -> bool {
        self.policy.reads_request_body() || self.condition.as_ref().is_some_and(|c| c.reads_content())
    }

    /// Whether the response body is buffered for this step: its policy or its condition reads it.
    pub fn reads_response_body(&self) -> bool {
        self.policy.reads_response_body() || self.condition.as_ref().is_some_and(|c| c.reads_content())
    }
}

/// The Gravitee policy id a compiled step came from.
fn policy_id(policy: Option<&pb::step::Policy>) -> &'static str {
    use pb::step::Policy as P;
    match policy {
        Some(P::Mock(_)) => "mock",
        Some(P::TransformHeaders(_)) => "transform-headers",
        Some(P::IpFiltering(_)) => "ip-filtering",
        Some(P::RequestContentLimit(_)) => "request-content-limit",
        Some(P::AssignAttributes(_)) => "policy-assign-attributes",
        Some(P::RateLimit(limit)) => match pb::RateLimitKind::try_from(limit.kind) {
            Ok(pb::RateLimitKind::Quota) => "quota",
            Ok(pb::RateLimitKind::SpikeArrest) => "spike-arrest",
            _ => "rate-limit",
        },
        Some(P::UrlRewriting(_)) => "url-rewriting",
        Some(P::Latency(_)) => "latency",
        Some(P::OverrideMethod(_)) => "policy-override-request-method",
        Some(P::StatusCode(_)) => "status-code",
        Some(P::HttpRedirect(_)) => "http-redirect",
        Some(P::DynamicRouting(_)) => "dynamic-routing",
        Some(P::AssignContent(_)) => "policy-assign-content",
        Some(P::ApiKey(_)) => "api-key",
        Some(P::JsonToJson(_)) => "json-to-json",
        Some(P::XmlToJson(_)) => "xml-json",
        Some(P::JsonToXml(_)) => "json-xml",
        Some(P::Retry(_)) => "retry",
        Some(P::Cache(_)) => "cache",
        Some(P::TransformQueryParams(_)) => "transform-queryparams",
        Some(P::JsonValidation(_)) => "json-validation",
        Some(P::ResourceFiltering(_)) => "resource-filtering",
        Some(P::GenerateJwt(_)) => "policy-generate-jwt",
        Some(P::HttpCallout(_)) => "policy-http-callout",
        Some(P::Javascript(js)) if js.graal => "js",
        Some(P::Javascript(_)) => "javascript",
        None => "unknown",
    }
}

impl Flow {
    /// Whether this flow's selectors (method, path) apply; `path_info` is the path after the context
    /// path. The EL condition, if any, is checked by the caller, which has the request context.
    pub fn matches(&self, method: &Method, path_info: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method)) && self.path.matches(path_info)
    }

    /// Whether this flow's path is a strictly better match than `other`'s (Gravitee's best-match:
    /// among equals the first one defined wins, so ties are not better).
    pub fn more_specific_than(&self, other: &Flow) -> bool {
        self.path.specificity > other.path.specificity
    }

    /// The `:name` segments of the flow path, with the request's values.
    pub fn path_params(&self, path_info: &str) -> Vec<(String, String)> {
        let mut request = path_info.split('/').filter(|s| !s.is_empty());
        let mut params = Vec::new();
        for segment in &self.path.segments {
            match (segment, request.next()) {
                (Segment::Param(name), Some(value)) => params.push((name.clone(), value.to_owned())),
                (_, None) => break,
                _ => {}
            }
        }
        params
    }

    /// Whether anything in this flow evaluates EL per request.
    pub fn uses_el(&self) -> bool {
        self.condition.is_some()
            || self.request.iter().chain(self.response.iter()).any(|s| s.condition.is_some() || s.policy.uses_el())
    }
}

impl PathSelector {
    fn matches(&self, path_info: &str) -> bool {
        let mut request = path_info.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            match (segment, request.next()) {
                (_, None) => return false,
                (Segment::Param(_), Some(_)) => {}
                (Segment::Literal(want), Some(got)) if want == got => {}
                (Segment::Literal(_), Some(_)) => return false,
            }
        }
        match self.operator {
            PathOperator::StartsWith => true,
            PathOperator::Equals => request.next().is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index of the flow best-match would run among those that apply.
    fn best(flows: &[Flow], path: &str) -> Option<usize> {
        let mut chosen: Option<usize> = None;
        for (i, flow) in flows.iter().enumerate().filter(|(_, f)| f.matches(&Method::GET, path)) {
            if chosen.is_none_or(|c| flow.more_specific_than(&flows[c])) {
                chosen = Some(i);
            }
        }
        chosen
    }

    #[test]
    fn best_match_prefers_literals_then_length_then_equals_then_order() {
        use pb::PathOperator::{Equals, StartsWith};
        let flows = vec![
            flow("/", StartsWith, &[]),
            flow("/orders", StartsWith, &[]),
            flow("/orders/:id", StartsWith, &[]),
            flow("/orders/special", StartsWith, &[]),
            flow("/orders/special", Equals, &[]),
            flow("/orders/:id", StartsWith, &[]),
            flow("/:any/special/x", StartsWith, &[]),
        ];
        assert_eq!(best(&flows, "/other"), Some(0));
        assert_eq!(best(&flows, "/orders"), Some(1));
        assert_eq!(best(&flows, "/orders/42"), Some(2), "the first of equal matches");
        assert_eq!(best(&flows, "/orders/special"), Some(4), "EQUALS beats STARTS_WITH on the same path");
        assert_eq!(best(&flows, "/orders/special/more"), Some(3));
        assert_eq!(best(&flows, "/orders/special/x"), Some(3), "a literal first segment beats a longer :param path");
        assert_eq!(best(&flows, "/ünïcode/special/x"), Some(6));
        assert_eq!(best(&[], "/x"), None);
        let get_only = vec![flow("/a", StartsWith, &[]), flow("/a/b", StartsWith, &["POST"])];
        assert_eq!(best(&get_only, "/a/b"), Some(0), "method filters apply before best-match");
    }

    fn flow(path: &str, op: pb::PathOperator, methods: &[&str]) -> Flow {
        Flow::try_from(pb::Flow {
            name: "f".into(),
            path: path.into(),
            path_operator: op as i32,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            request: vec![mock_step(200, "hi")],
            response: vec![],
            condition: String::new(),
        })
        .unwrap()
    }

    fn mock_step(status: u32, content: &str) -> pb::Step {
        pb::Step {
            name: "mock".into(),
            condition: String::new(),
            policy: Some(pb::step::Policy::Mock(pb::MockPolicy {
                status,
                headers: vec![pb::Header { name: "x-mock".into(), value: "1".into() }],
                content: content.into(),
            })),
        }
    }

    #[test]
    fn starts_with_is_segment_aligned() {
        let f = flow("/foo", pb::PathOperator::StartsWith, &[]);
        assert!(f.matches(&Method::GET, "/foo"));
        assert!(f.matches(&Method::GET, "/foo/bar"));
        assert!(f.matches(&Method::GET, "/foo/"));
        assert!(!f.matches(&Method::GET, "/foobar"));
        assert!(!f.matches(&Method::GET, ""));
    }

    #[test]
    fn root_starts_with_matches_everything() {
        let f = flow("/", pb::PathOperator::StartsWith, &[]);
        assert!(f.matches(&Method::GET, ""));
        assert!(f.matches(&Method::POST, "/a/b"));
    }

    #[test]
    fn equals_and_params() {
        let f = flow("/users/:id", pb::PathOperator::Equals, &["get"]);
        assert!(f.matches(&Method::GET, "/users/42"));
        assert!(!f.matches(&Method::GET, "/users/42/orders"));
        assert!(!f.matches(&Method::GET, "/users"));
        assert!(!f.matches(&Method::POST, "/users/42"));
        let root = flow("/", pb::PathOperator::Equals, &[]);
        assert!(root.matches(&Method::GET, ""));
        assert!(root.matches(&Method::GET, "/"));
        assert!(!root.matches(&Method::GET, "/a"));
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        let base = pb::Flow {
            name: "f".into(),
            path: "/".into(),
            path_operator: 1,
            methods: vec![],
            request: vec![],
            response: vec![],
            condition: String::new(),
        };
        let no_policy = pb::Flow {
            request: vec![pb::Step { name: "rate-limit".into(), condition: String::new(), policy: None }],
            ..base.clone()
        };
        assert_eq!(
            Flow::try_from(no_policy).unwrap_err(),
            FlowError::Step { phase: "request", index: 0, error: PolicyError::Unsupported }
        );
        let response = pb::Flow { response: vec![mock_step(200, "")], ..base.clone() };
        assert!(matches!(
            Flow::try_from(response),
            Err(FlowError::Step { phase: "response", error: PolicyError::Phase(..), .. })
        ));
        let status = pb::Flow { request: vec![mock_step(1000, "")], ..base.clone() };
        assert!(matches!(Flow::try_from(status), Err(FlowError::Step { error: PolicyError::Invalid { .. }, .. })));
        let path = pb::Flow { path: "x".into(), ..base.clone() };
        assert!(matches!(Flow::try_from(path), Err(FlowError::Path(_))));
        let method = pb::Flow { methods: vec!["G T".into()], ..base };
        assert!(matches!(Flow::try_from(method), Err(FlowError::Method { .. })));
    }
}
