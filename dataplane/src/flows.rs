//! Gravitee flows, compiled once when an API is converted: method set, path selector, and policy steps.
//!
//! Only the request phase exists in this dataplane, and the only policy is `mock`. A flow using
//! anything else is rejected at conversion (the API is NACKed), never half-applied.

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, Method, StatusCode};

/// A compiled flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    /// Empty matches every method.
    methods: Vec<Method>,
    path: PathSelector,
    steps: Vec<Step>,
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
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param,
}

/// One request-phase policy invocation.
#[derive(Debug, Clone)]
pub enum Step {
    Mock(Mock),
}

/// Gravitee's `mock` policy: the gateway answers itself, no endpoint is called.
#[derive(Debug, Clone)]
pub struct Mock {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub content: Bytes,
}

/// Why a flow cannot be compiled; the message carries the field path inside the flow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("methods[{index}]: {method:?} is not an HTTP method")]
    Method { index: usize, method: String },
    #[error("path {0:?}: must start with '/'")]
    Path(String),
    #[error("request[{0}]: step has no policy this dataplane supports (only mock)")]
    UnsupportedPolicy(usize),
    #[error("response[{0}]: response-phase policies are not supported by this dataplane")]
    ResponsePhase(usize),
    #[error("request[{step}].mock.status: {status} is not an HTTP status")]
    Status { step: usize, status: u32 },
    #[error("request[{step}].mock.headers[{index}]: invalid header {name:?}")]
    Header { step: usize, index: usize, name: String },
}

impl TryFrom<pb::Flow> for Flow {
    type Error = FlowError;

    fn try_from(flow: pb::Flow) -> Result<Self, Self::Error> {
        let pb::Flow { name, path, path_operator, methods, request, response } = flow;
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
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix(':') {
                Some(_) => Segment::Param,
                None => Segment::Literal(s.to_owned()),
            })
            .collect();
        if !response.is_empty() {
            return Err(FlowError::ResponsePhase(0));
        }
        let steps = request
            .into_iter()
            .enumerate()
            .map(|(index, step)| compile_step(index, step))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Flow { name, methods, path: PathSelector { operator, segments }, steps })
    }
}

fn compile_step(index: usize, step: pb::Step) -> Result<Step, FlowError> {
    let pb::Step { name: _, policy } = step;
    match policy {
        Some(pb::step::Policy::Mock(mock)) => {
            let pb::MockPolicy { status, headers, content } = mock;
            // proto3 zero means unset: Gravitee's mock answers 200 by default.
            let status = if status == 0 {
                StatusCode::OK
            } else {
                u16::try_from(status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or(FlowError::Status { step: index, status })?
            };
            let headers = headers
                .into_iter()
                .enumerate()
                .map(|(i, pb::Header { name, value })| {
                    match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                        (Ok(n), Ok(v)) => Ok((n, v)),
                        _ => Err(FlowError::Header { step: index, index: i, name }),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Step::Mock(Mock { status, headers, content: Bytes::from(content) }))
        }
        None => Err(FlowError::UnsupportedPolicy(index)),
    }
}

impl Flow {
    /// Whether this flow applies to a request; `path_info` is the path after the context path.
    pub fn matches(&self, method: &Method, path_info: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method)) && self.path.matches(path_info)
    }
}

impl PathSelector {
    fn matches(&self, path_info: &str) -> bool {
        let mut request = path_info.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            match (segment, request.next()) {
                (_, None) => return false,
                (Segment::Param, Some(_)) => {}
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

/// Runs the request phase of `flows` (Gravitee's default mode: every matching flow, in order) and
/// returns the mock that answers the request, if a step does.
pub fn request_phase<'a>(flows: &'a [Flow], method: &Method, path_info: &str) -> Option<&'a Mock> {
    flows
        .iter()
        .filter(|flow| flow.matches(method, path_info))
        .flat_map(|flow| flow.steps.iter())
        .map(|step| match step {
            Step::Mock(mock) => mock,
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(path: &str, op: pb::PathOperator, methods: &[&str]) -> Flow {
        Flow::try_from(pb::Flow {
            name: "f".into(),
            path: path.into(),
            path_operator: op as i32,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            request: vec![mock_step(200, "hi")],
            response: vec![],
        })
        .unwrap()
    }

    fn mock_step(status: u32, content: &str) -> pb::Step {
        pb::Step {
            name: "mock".into(),
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
    fn request_phase_returns_first_matching_mock() {
        let a = flow("/a", pb::PathOperator::StartsWith, &["POST"]);
        let mut b = flow("/", pb::PathOperator::StartsWith, &[]);
        b.steps = vec![compile_step(0, mock_step(418, "teapot")).unwrap()];
        let flows = vec![a, b];
        let m = request_phase(&flows, &Method::GET, "/a").unwrap();
        assert_eq!(m.status, StatusCode::IM_A_TEAPOT);
        let m = request_phase(&flows, &Method::POST, "/a").unwrap();
        assert_eq!(m.status, StatusCode::OK);
        assert_eq!(m.content, Bytes::from_static(b"hi"));
        assert_eq!(m.headers[0].0, "x-mock");
        assert!(request_phase(&flows[..1], &Method::GET, "/a").is_none());
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
        };
        let no_policy =
            pb::Flow { request: vec![pb::Step { name: "rate-limit".into(), policy: None }], ..base.clone() };
        assert_eq!(Flow::try_from(no_policy).unwrap_err(), FlowError::UnsupportedPolicy(0));
        let response = pb::Flow { response: vec![mock_step(200, "")], ..base.clone() };
        assert_eq!(Flow::try_from(response).unwrap_err(), FlowError::ResponsePhase(0));
        let status = pb::Flow { request: vec![mock_step(1000, "")], ..base.clone() };
        assert!(matches!(Flow::try_from(status), Err(FlowError::Status { .. })));
        let path = pb::Flow { path: "x".into(), ..base.clone() };
        assert!(matches!(Flow::try_from(path), Err(FlowError::Path(_))));
        let method = pb::Flow { methods: vec!["G T".into()], ..base };
        assert!(matches!(Flow::try_from(method), Err(FlowError::Method { .. })));
    }
}
