//! Gravitee EL in the dataplane: a request (or response) seen as an [`hgw_el::Context`].
//!
//! Expressions are compiled once when an API arrives; per request the proxy fills a [`RequestInfo`]
//! only for APIs that use EL, so requests of other APIs pay nothing.

use std::cell::OnceCell;

use http::HeaderMap;

use crate::http::query::query_pairs;

/// What EL can read about the request beyond its (live) headers.
#[derive(Debug, Default, Clone)]
pub struct RequestInfo {
    pub path: String,
    pub path_info: String,
    /// The matched context path with a trailing `/`, as Gravitee's acceptors hold it.
    pub context_path: String,
    pub method: String,
    pub host: String,
    pub query: String,
    pub remote_address: String,
    pub local_address: String,
    pub request_id: String,
    pub transaction_id: String,
    pub api_id: String,
    pub api_name: String,
    /// The subscription the request runs under, once the plan is resolved (`#subscription`).
    pub subscription_id: String,
    pub subscription_client_id: Option<String>,
    pub application_name: Option<String>,
    /// The request headers as sent upstream (for response-phase expressions).
    pub headers: HeaderMap,
    /// The API's properties (`#api.properties`).
    pub api_properties: std::sync::Arc<std::collections::HashMap<String, String>>,
    /// The HTTPS session (`#request.ssl`); `None` on plain HTTP.
    pub tls: Option<std::sync::Arc<crate::http::tls_session::TlsSession>>,
}

/// One evaluation context; cheap to build (and to clone: references, and the query once decoded),
/// decodes the query string only if an expression asks.
#[derive(Clone)]
pub struct ElContext<'a> {
    info: &'a RequestInfo,
    headers: &'a HeaderMap,
    path_params: &'a [(String, String)],
    attributes: &'a [(String, String)],
    response: Option<(u16, &'a HeaderMap)>,
    query: OnceCell<Vec<(String, String)>>,
    /// The regular expression a policy just matched (`#group`, `#groupName`).
    captures: Option<&'a RegexCaptures>,
    /// `#request.content` / `#response.content`: the body, where the gateway buffered it (as text;
    /// a body that is not UTF-8 reads as null).
    request_content: Option<&'a str>,
    response_content: Option<&'a str>,
    /// `#calloutResponse`: the http-callout policy's answer, while that policy reads it.
    callout: Option<&'a CalloutAnswer>,
}

/// What an HTTP callout answered (`#calloutResponse`).
#[derive(Debug, Clone)]
pub struct CalloutAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as text (invalid UTF-8 replaced, as Vert.x's `Buffer.toString()`).
    pub content: String,
}

/// The groups of one regular-expression match, owned (only policies that redirect or route build one).
#[derive(Debug, Default)]
pub struct RegexCaptures {
    /// Groups 1.. in order; a group that did not take part is empty.
    groups: Vec<String>,
    named: Vec<(String, String)>,
}

impl RegexCaptures {
    pub fn of(regex: &regex::Regex, captures: &regex::Captures<'_>) -> RegexCaptures {
        let text = |m: Option<regex::Match<'_>>| m.map_or_else(String::new, |m| m.as_str().to_owned());
        RegexCaptures {
            groups: (1..captures.len()).map(|i| text(captures.get(i))).collect(),
            named: regex.capture_names().flatten().map(|name| (name.to_owned(), text(captures.name(name)))).collect(),
        }
    }
    /// The groups of a Java-style match (url-rewriting).
    pub fn of_java(found: hgw_el::JavaMatch) -> RegexCaptures {
        RegexCaptures {
            groups: found.groups.into_iter().map(Option::unwrap_or_default).collect(),
            named: found.named.into_iter().map(|(name, value)| (name, value.unwrap_or_default())).collect(),
        }
    }
}

impl<'a> ElContext<'a> {
    pub fn request(
        info: &'a RequestInfo,
        headers: &'a HeaderMap,
        path_params: &'a [(String, String)],
        attributes: &'a [(String, String)],
    ) -> ElContext<'a> {
        ElContext {
            info,
            headers,
            path_params,
            attributes,
            response: None,
            query: OnceCell::new(),
            captures: None,
            request_content: None,
            response_content: None,
            callout: None,
        }
    }

    pub fn response(
        info: &'a RequestInfo,
        attributes: &'a [(String, String)],
        status: u16,
        response_headers: &'a HeaderMap,
    ) -> ElContext<'a> {
        ElContext {
            info,
            headers: &info.headers,
            path_params: &[],
            attributes,
            response: Some((status, response_headers)),
            query: OnceCell::new(),
            captures: None,
            request_content: None,
            response_content: None,
            callout: None,
        }
    }

    /// This context reading `#request.content` from `body` (buffered for the request flows).
    pub fn with_request_content(self, body: Option<&'a [u8]>) -> ElContext<'a> {
        ElContext { request_content: body.and_then(|b| std::str::from_utf8(b).ok()), ..self }
    }

    /// This context reading `#response.content` from `body` (buffered for the response flows).
    pub fn with_response_content(self, body: Option<&'a [u8]>) -> ElContext<'a> {
        ElContext { response_content: body.and_then(|b| std::str::from_utf8(b).ok()), ..self }
    }

    /// This context with an HTTP callout's answer readable as `#calloutResponse`.
    pub fn with_callout(self, answer: &'a CalloutAnswer) -> ElContext<'a> {
        ElContext { callout: Some(answer), ..self }
    }

    /// A copy of this context with `answer` readable as `#calloutResponse`.
    pub fn clone_with_callout<'b>(&'b self, answer: &'b CalloutAnswer) -> ElContext<'b> {
        self.clone().with_callout(answer)
    }

    /// This context with a policy's regular-expression match readable as `#group`/`#groupName`.
    pub fn with_captures(self, captures: &'a RegexCaptures) -> ElContext<'a> {
        ElContext { captures: Some(captures), ..self }
    }

    /// A copy of this context with `captures` readable as `#group`/`#groupName` (one per match when a
    /// policy renders a template for each match).
    pub fn capturing<'b>(&'b self, captures: &'b RegexCaptures) -> ElContext<'b> {
        self.clone().with_captures(captures)
    }

    /// Evaluates a condition: Gravitee treats an evaluation error as "not met".
    pub fn holds(&self, expression: &hgw_el::Expression) -> bool {
        match expression.eval_bool(self) {
            Ok(value) => value,
            Err(error) => {
                tracing::debug!(expression = expression.source(), %error, "EL condition not met (evaluation error)");
                false
            }
        }
    }

    /// Evaluates a condition as Gravitee's V3 engine (v2 APIs without `execution_mode`) does: an
    /// evaluation error fails the request, with the message that engine answers (500).
    pub fn holds_or_fails(&self, expression: &hgw_el::Expression) -> Result<bool, String> {
        expression.eval_bool(self).map_err(|error| {
            tracing::debug!(expression = expression.source(), %error, "EL condition failed (V3 engine: 500)");
            // The engine quotes the condition as its template parser saw it: `{#` → `{##`.
            let source = expression.source();
            let quoted = match source.strip_prefix('{') {
                Some(rest) => format!("{{#{rest}"),
                None => source.to_owned(),
            };
            format!("The template evaluation returns an error. Expression:\n{quoted}")
        })
    }

    /// Renders a template; an evaluation error renders as empty text (logged at debug).
    pub fn render(&self, template: &hgw_el::Template) -> String {
        template.render(self).unwrap_or_else(|error| {
            tracing::debug!(template = template.source(), %error, "EL template rendered empty (evaluation error)");
            String::new()
        })
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

impl hgw_el::Context for ElContext<'_> {
    fn callout_status(&self) -> Option<u16> {
        self.callout.map(|c| c.status)
    }
    fn callout_header(&self, name: &str) -> Vec<&str> {
        self.callout.map(|c| values(&c.headers, name)).unwrap_or_default()
    }
    fn callout_content(&self) -> Option<&str> {
        self.callout.map(|c| c.content.as_str())
    }
    fn request_content(&self) -> Option<&str> {
        self.request_content
    }
    fn response_content(&self) -> Option<&str> {
        self.response_content
    }
    fn subscription_field(&self, name: &str) -> Option<&str> {
        match name {
            "id" => non_empty(&self.info.subscription_id),
            "clientId" => self.info.subscription_client_id.as_deref(),
            "applicationName" => self.info.application_name.as_deref(),
            _ => None,
        }
    }
    fn regex_group(&self, index: usize) -> Option<&str> {
        self.captures?.groups.get(index).map(String::as_str)
    }
    fn regex_named_group(&self, name: &str) -> Option<&str> {
        self.captures?.named.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn request_path(&self) -> Option<&str> {
        non_empty(&self.info.path)
    }
    fn request_path_info(&self) -> Option<&str> {
        Some(&self.info.path_info)
    }
    fn request_context_path(&self) -> Option<&str> {
        Some(&self.info.context_path)
    }
    fn request_method(&self) -> Option<&str> {
        non_empty(&self.info.method)
    }
    fn request_host(&self) -> Option<&str> {
        non_empty(&self.info.host)
    }
    fn remote_address(&self) -> Option<&str> {
        non_empty(&self.info.remote_address)
    }
    fn local_address(&self) -> Option<&str> {
        non_empty(&self.info.local_address)
    }
    fn ssl_principal(&self, side: hgw_el::SslSide) -> Option<&hgw_el::X500Principal> {
        self.info.tls.as_ref()?.principal(side)
    }
    fn ssl_client_host(&self) -> Option<&str> {
        self.info.tls.as_ref().map(|tls| tls.client_host())
    }
    fn ssl_client_port(&self) -> Option<u16> {
        self.info.tls.as_ref().map(|tls| tls.client_port())
    }
    fn request_id(&self) -> Option<&str> {
        non_empty(&self.info.request_id)
    }
    fn transaction_id(&self) -> Option<&str> {
        non_empty(&self.info.transaction_id)
    }
    fn request_header(&self, name: &str) -> Vec<&str> {
        values(self.headers, name)
    }
    fn query_param(&self, name: &str) -> Vec<&str> {
        let pairs = self.query.get_or_init(|| query_pairs(&self.info.query).collect());
        pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
    fn path_param(&self, name: &str) -> Option<&str> {
        self.path_params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn api_property(&self, key: &str) -> Option<&str> {
        self.info.api_properties.get(key).map(String::as_str)
    }
    fn api_field(&self, name: &str) -> Option<&str> {
        match name {
            "id" => non_empty(&self.info.api_id),
            "name" => non_empty(&self.info.api_name),
            _ => None,
        }
    }
    fn response_status(&self) -> Option<u16> {
        self.response.map(|(status, _)| status)
    }
    fn response_header(&self, name: &str) -> Vec<&str> {
        self.response.map(|(_, headers)| values(headers, name)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_reach_expressions() {
        let info = RequestInfo {
            path: "/api/users/7".into(),
            path_info: "/users/7".into(),
            method: "POST".into(),
            query: "debug=1&tag=a&tag=b%20c".into(),
            api_id: "api-1".into(),
            ..RequestInfo::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-team", "blue".parse().unwrap());
        let params = vec![("id".to_owned(), "7".to_owned())];
        let attributes = vec![("user".to_owned(), "alice".to_owned())];
        let ctx = ElContext::request(&info, &headers, &params, &attributes);
        let check = |text: &str| ctx.holds(&hgw_el::parse(text).unwrap());
        assert!(check("{#request.headers['X-Team'][0] == 'blue'}"));
        assert!(check("{#request.params['tag'][1] == 'b c'}"));
        assert!(check("{#request.pathParams['id'][0] == '7'}"));
        assert!(check("{#context.attributes['user'] == 'alice' && #request.method == 'POST'}"));
        assert!(check("{#request.pathInfo.startsWith('/users')}"));
        assert!(check("{#api.id == 'api-1'}"));
        assert!(!check("{#request.headers['Missing'][0] == 'x'}"), "an evaluation error is 'not met'");
        let template = hgw_el::parse_template("team={#request.headers['x-team'][0]}").unwrap();
        assert_eq!(ctx.render(&template), "team=blue");
    }
}
