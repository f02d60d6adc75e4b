//! `mock`: the gateway answers with a fixed status, headers and content; no endpoint is called.
//!
//! As Gravitee's mock policy (1.15): a content whose EL fails, or that is one expression evaluating to
//! null, is answered `500` with Gravitee's message and the whole content quoted; without a configured
//! Content-Type, non-empty content is `application/json` when it parses as a JSON object or array,
//! else `text/plain` (decided from the content as configured, not as rendered).

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, header, invalid};

/// Gravitee's answers when the content cannot be rendered (`ELNullEvaluationException`,
/// `ExpressionEvaluationException`), followed by the content.
const NULL_VALUE: &str = "The template evaluation returns a null value. Expression:\n";
const EVALUATION_ERROR: &str = "The template evaluation returns an error. Expression:\n";

#[derive(Debug)]
pub struct Mock {
    status: StatusCode,
    /// Constant headers, and (rendered per request) those whose value is EL.
    headers: Vec<(HeaderName, HeaderValue)>,
    templated_headers: Vec<(HeaderName, Option<hgw_el::Template>)>,
    /// Constant content is kept as bytes, shared by every response.
    content: Bytes,
    template: Content,
}

/// The mock's content: constant, an EL template, or EL Gravitee cannot parse either (its mock then
/// fails every request with a 500; hgw does the same and warns when the API is loaded).
#[derive(Debug)]
enum Content {
    Constant,
    Template(hgw_el::Template),
    Unparsable,
}

impl Mock {
    pub fn compile(config: pb::MockPolicy) -> Result<Mock, PolicyError> {
        let pb::MockPolicy { status, headers, content } = config;
        // proto3 zero is "unset": Gravitee's mock answers 200 by default.
        let status = if status == 0 {
            StatusCode::OK
        } else {
            u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| invalid("mock.status", format!("{status} is not an HTTP status")))?
        };
        // As Gravitee's mock: a header whose value is EL is set to what it renders to; when that is
        // null, or the EL fails (or does not parse), the header is left out.
        let mut constant = Vec::with_capacity(headers.len() + 1);
        let mut templated_headers = Vec::new();
        for (i, h) in headers.into_iter().enumerate() {
            let (name, value) = header(&format!("mock.headers[{i}]"), h)?;
            let text = value.to_str().unwrap_or_default();
            if !(text.contains("{#") || text.contains("{(")) {
                constant.push((name, value));
                continue;
            }
            let template = hgw_el::parse_template(text)
                .inspect_err(|e| tracing::warn!(header = %name, error = %e, "mock header EL does not parse: the header is never set (as in Gravitee)"))
                .ok();
            templated_headers.push((name, template));
        }
        let mut headers = constant;
        if !content.is_empty()
            && !headers.iter().any(|(name, _)| name == CONTENT_TYPE)
            && !templated_headers.iter().any(|(name, _)| name == CONTENT_TYPE)
        {
            headers.push((CONTENT_TYPE, HeaderValue::from_static(content_type(&content))));
        }
        let template = match hgw_el::parse_template(&content) {
            Ok(template) if template.is_constant() => Content::Constant,
            Ok(template) => Content::Template(template),
            Err(error) => {
                tracing::warn!(%error, "mock content EL does not parse: every request gets Gravitee's 500");
                Content::Unparsable
            }
        };
        Ok(Mock { status, headers, templated_headers, content: Bytes::from(content), template })
    }

    /// The `500` Gravitee's mock answers when its content cannot be rendered.
    fn unrenderable(&self, message: &str) -> (StatusCode, Bytes) {
        let mut body = String::with_capacity(message.len() + self.content.len());
        body.push_str(message);
        body.push_str(&String::from_utf8_lossy(&self.content));
        (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(body))
    }
}

/// Gravitee's mock content type: JSON objects and arrays are `application/json`, anything else
/// `text/plain` (its XML check parses the content as a URI, so it never applies).
fn content_type(content: &str) -> &'static str {
    let trimmed = content.trim_start();
    let json = (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(content).is_ok();
    if json { "application/json" } else { "text/plain" }
}

impl Policy for Mock {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let (status, body) = match &self.template {
            Content::Constant => (self.status, self.content.clone()),
            Content::Template(template) => match template.render_nullable(&exchange.el()) {
                Ok(Some(text)) => (self.status, Bytes::from(text)),
                Ok(None) => self.unrenderable(NULL_VALUE),
                Err(error) => {
                    tracing::debug!(template = template.source(), %error, "mock content EL failed");
                    self.unrenderable(EVALUATION_ERROR)
                }
            },
            Content::Unparsable => self.unrenderable(EVALUATION_ERROR),
        };
        let mut headers = self.headers.clone();
        if !self.templated_headers.is_empty() {
            let el = exchange.el();
            for (name, template) in &self.templated_headers {
                let value = template.as_ref().and_then(|t| t.render_nullable(&el).ok().flatten());
                if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.retain(|(n, _)| n != name);
                    headers.push((name.clone(), value));
                }
            }
        }
        Outcome::Respond(Reply { status, headers, body, error_key: None, error_message: None })
    }

    fn uses_el(&self) -> bool {
        matches!(self.template, Content::Template(_)) || self.templated_headers.iter().any(|(_, t)| t.is_some())
    }

    fn reads_request_body(&self) -> bool {
        matches!(&self.template, Content::Template(t) if t.reads_content())
            || self.templated_headers.iter().any(|(_, t)| t.as_ref().is_some_and(hgw_el::Template::reads_content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_as_gravitee_guesses_it() {
        assert_eq!(content_type(r#"{"a": 1}"#), "application/json");
        assert_eq!(content_type(" [1, 2]"), "application/json");
        assert_eq!(
            content_type(r#"{"id": "{#request.id}"}"#),
            "application/json",
            "decided on the content as configured"
        );
        assert_eq!(content_type("{#request.headers['x']}"), "text/plain");
        assert_eq!(content_type("<a>xml</a>"), "text/plain");
        assert_eq!(content_type("pong"), "text/plain");
        let mock = |content: &str, headers: Vec<pb::Header>| {
            Mock::compile(pb::MockPolicy { status: 200, headers, content: content.into() }).unwrap().headers
        };
        assert_eq!(mock("pong", vec![]), vec![(CONTENT_TYPE, HeaderValue::from_static("text/plain"))]);
        assert!(mock("", vec![]).is_empty(), "no content, no type");
        let own = mock("pong", vec![pb::Header { name: "content-type".into(), value: "text/x-own".into() }]);
        assert_eq!(own, vec![(CONTENT_TYPE, HeaderValue::from_static("text/x-own"))]);
    }
}
