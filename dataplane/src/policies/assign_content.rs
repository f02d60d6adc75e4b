//! `policy-assign-content`: replaces the request body (request phase) or the response body (response
//! phase) with a FreeMarker template rendered against what Gravitee's policy exposes: `request`
//! (`content`, `headers`, `params`, `path`, `method`, ids...), in the response phase `response`
//! (`status`, `headers`, `content`), and `context` (`attributes`, `dictionaries`). A template that
//! fails to render (a missing value it does not guard with `!` or `??`) answers Gravitee's
//! `500 ASSIGN_CONTENT_ERROR` `Unable to assign body content`; on the V3 engine the message carries
//! the cause, as Gravitee's V3 policy's does.

use bytes::Bytes;
use hgw_el::freemarker::{self, Hash, Value as Ftl};
use hgw_proto::v1 as pb;
use http::{HeaderMap, StatusCode};

use super::el::RequestInfo;
use super::{Attributes, Outcome, Policy, PolicyError, Reply, RequestExchange, ResponseExchange, invalid};

const KEY: &str = "ASSIGN_CONTENT_ERROR";
const MESSAGE: &str = "Unable to assign body content";

#[derive(Debug)]
pub struct AssignContent {
    template: freemarker::Template,
}

impl AssignContent {
    pub fn compile(config: pb::AssignContentPolicy) -> Result<AssignContent, PolicyError> {
        let template = freemarker::parse(&config.body).map_err(|e| invalid("policy-assign-content.body", e.message))?;
        Ok(AssignContent { template })
    }

    fn failure(legacy_engine: bool, error: &freemarker::Error) -> Reply {
        let message = if legacy_engine { format!("{MESSAGE}: {error}") } else { MESSAGE.to_owned() };
        Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(KEY), message)
    }
}

impl Policy for AssignContent {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let content = exchange.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        let model = Hash::new(vec![
            ("request".into(), request_model(exchange.info, &exchange.parts.headers, Some(content))),
            ("context".into(), context_model(exchange.attributes)),
        ]);
        match self.template.render(&model) {
            Ok(text) => {
                if let Some(body) = exchange.body.as_deref_mut() {
                    *body = Bytes::from(text);
                }
                Outcome::Continue
            }
            Err(error) => {
                tracing::debug!(%error, "assign-content: the template did not render");
                Outcome::Respond(AssignContent::failure(exchange.legacy_engine, &error))
            }
        }
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        let content = exchange.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        let response = Ftl::Hash(Hash::new(vec![
            ("status".into(), Ftl::Num(f64::from(exchange.status.as_u16()))),
            ("headers".into(), headers_model(exchange.headers)),
            ("content".into(), Ftl::Str(content)),
        ]));
        let mut entries = vec![("response".into(), response), ("context".into(), context_model(exchange.attributes))];
        // Gravitee's V3 policy offers no `request` in the response phase.
        if !exchange.legacy_engine {
            entries.push(("request".into(), request_model(exchange.info, &exchange.info.headers, None)));
        }
        match self.template.render(&Hash::new(entries)) {
            Ok(text) => {
                if let Some(body) = exchange.body.as_deref_mut() {
                    *body = Bytes::from(text);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "assign-content: the template did not render");
                exchange.failure = Some(AssignContent::failure(exchange.legacy_engine, &error));
            }
        }
    }

    fn uses_el(&self) -> bool {
        // The request model is read from the EL request info.
        true
    }

    fn reads_request_body(&self) -> bool {
        true
    }

    fn reads_response_body(&self) -> bool {
        true
    }
}

fn text(value: &str) -> Ftl {
    Ftl::Str(value.to_owned())
}

/// Header names case-insensitive, each a sequence of its values.
fn headers_model(headers: &HeaderMap) -> Ftl {
    let mut entries: Vec<(String, Ftl)> = Vec::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| Ftl::Str(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        entries.push((name.as_str().to_owned(), Ftl::Seq(values)));
    }
    Ftl::Hash(Hash { entries, case_insensitive: true })
}

fn request_model(info: &RequestInfo, headers: &HeaderMap, content: Option<String>) -> Ftl {
    let mut params: Vec<(String, Ftl)> = Vec::new();
    for (name, value) in crate::http::query::query_pairs(&info.query) {
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, Ftl::Seq(values))) => values.push(Ftl::Str(value)),
            _ => params.push((name, Ftl::Seq(vec![Ftl::Str(value)]))),
        }
    }
    let uri = if info.query.is_empty() { info.path.clone() } else { format!("{}?{}", info.path, info.query) };
    let mut entries = vec![
        ("id".into(), text(&info.request_id)),
        ("transactionId".into(), text(&info.transaction_id)),
        ("uri".into(), Ftl::Str(uri)),
        ("path".into(), text(&info.path)),
        ("pathInfo".into(), text(&info.path_info)),
        ("contextPath".into(), text(&info.context_path)),
        ("method".into(), text(&info.method)),
        ("host".into(), text(&info.host)),
        ("remoteAddress".into(), text(&info.remote_address)),
        ("localAddress".into(), text(&info.local_address)),
        ("headers".into(), headers_model(headers)),
        ("params".into(), Ftl::Hash(Hash::new(params))),
    ];
    if let Some(content) = content {
        entries.push(("content".into(), Ftl::Str(content)));
    }
    Ftl::Hash(Hash::new(entries))
}

fn context_model(attributes: &Attributes) -> Ftl {
    let mut entries: Vec<(String, Ftl)> = Vec::new();
    for (name, value) in attributes {
        entries.retain(|(n, _)| n != name);
        entries.push((name.clone(), text(value)));
    }
    Ftl::Hash(Hash::new(vec![
        ("attributes".into(), Ftl::Hash(Hash::new(entries))),
        // Dictionaries are not synced by hgw yet: an empty map (a lookup in it is missing).
        ("dictionaries".into(), Ftl::Hash(Hash::default())),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(body: &str) -> AssignContent {
        AssignContent::compile(pb::AssignContentPolicy { body: body.into() }).unwrap()
    }

    #[test]
    fn request_and_response_models() {
        let info = RequestInfo {
            path: "/api/x".into(),
            path_info: "/x".into(),
            method: "POST".into(),
            query: "a=1&a=2".into(),
            ..RequestInfo::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-name", "Ada".parse().unwrap());
        let model = Hash::new(vec![
            ("request".into(), request_model(&info, &headers, Some(r#"{"n":2}"#.into()))),
            ("context".into(), context_model(&vec![("k".into(), "v".into())])),
        ]);
        let rendered = policy(
            "${request.method} ${request.headers['X-NAME'][0]} ${request.params['a'][1]} \
             <#assign b = request.content?eval>${b.n} ${context.attributes['k']}",
        )
        .template
        .render(&model)
        .unwrap();
        assert_eq!(rendered, "POST Ada 2 2 v");
        let missing = policy("${context.dictionaries['d']['k']}").template.render(&model).unwrap_err();
        assert!(missing.message.contains("null or missing"), "{missing}");
        assert_eq!(AssignContent::failure(false, &missing).error_message.as_deref(), Some(MESSAGE));
        assert!(
            AssignContent::failure(true, &missing)
                .error_message
                .unwrap()
                .starts_with("Unable to assign body content: ")
        );
    }

    #[test]
    fn unsupported_templates_do_not_compile() {
        let refused = AssignContent::compile(pb::AssignContentPolicy { body: "<#macro x></#macro>".into() });
        assert!(matches!(refused, Err(PolicyError::Invalid { .. })));
    }
}
