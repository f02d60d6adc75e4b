//! Gravitee's response templates: when the gateway answers an error with a key (a policy refusal, a
//! failed authentication, an upstream failure), the API may replace the answer. The template is chosen
//! by error key (else `DEFAULT`), then by the request's `Accept` (best quality first, `*/*` template as
//! the fallback). The metrics record keeps the original error key.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};

use hgw_proto::v1 as pb;

/// The key whose templates apply to every error key without its own.
pub const DEFAULT_KEY: &str = "DEFAULT";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}: invalid status {1}")]
    Status(String, u32),
    #[error("{0}: invalid header {1:?}")]
    Header(String, String),
}

/// One compiled template.
#[derive(Debug)]
pub struct Template {
    media_type: String,
    pub status: Option<StatusCode>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// An API's templates by error key.
#[derive(Debug, Default)]
pub struct ResponseTemplates {
    by_key: HashMap<String, Vec<Template>>,
}

impl ResponseTemplates {
    pub fn compile(list: Vec<pb::ResponseTemplates>) -> Result<Option<ResponseTemplates>, TemplateError> {
        if list.is_empty() {
            return Ok(None);
        }
        let mut by_key = HashMap::new();
        for (i, pb::ResponseTemplates { error_key, templates }) in list.into_iter().enumerate() {
            let mut compiled = Vec::with_capacity(templates.len());
            for (j, template) in templates.into_iter().enumerate() {
                let at = format!("response_templates[{i}].templates[{j}]");
                let pb::ResponseTemplate { media_type, status, headers, body, propagate_error_key_to_logs: _ } =
                    template;
                let status = match status {
                    0 => None,
                    s => Some(
                        u16::try_from(s)
                            .ok()
                            .and_then(|s| StatusCode::from_u16(s).ok())
                            .ok_or_else(|| TemplateError::Status(at.clone(), s))?,
                    ),
                };
                let headers = headers
                    .into_iter()
                    .map(|pb::Header { name, value }| {
                        let parsed = HeaderName::from_bytes(name.trim().as_bytes())
                            .ok()
                            .zip(HeaderValue::from_bytes(value.as_bytes()).ok());
                        parsed.ok_or_else(|| TemplateError::Header(at.clone(), name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                compiled.push(Template {
                    media_type: media_type.trim().to_ascii_lowercase(),
                    status,
                    headers,
                    body: Bytes::from(body),
                });
            }
            by_key.insert(error_key, compiled);
        }
        Ok(Some(ResponseTemplates { by_key }))
    }

    /// The template answering `error_key` for a request with these headers, if any.
    pub fn select(&self, error_key: &str, accept: &[HeaderValue]) -> Option<&Template> {
        let accepted = accepted_media_types(accept);
        [error_key, DEFAULT_KEY]
            .into_iter()
            .filter_map(|key| self.by_key.get(key))
            .find_map(|templates| best_match(templates, &accepted))
    }
}

impl Template {
    /// Applies the template to a gateway answer: status, headers (set), body (replaced). As Gravitee's
    /// template failure processor: the connection is closed, and a body is labelled with the request's
    /// own `Accept` value (`accept`, the first one) unless the template sets a Content-Type itself.
    pub fn apply(
        &self,
        status: &mut StatusCode,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
        accept: Option<&HeaderValue>,
    ) -> Bytes {
        if let Some(s) = self.status {
            *status = s;
        }
        // The error's own Content-Type described the body being replaced.
        headers.retain(|(name, _)| name != CONTENT_TYPE && name != CONNECTION);
        headers.push((CONNECTION, HeaderValue::from_static("close")));
        if let Some(accept) = accept.filter(|_| !self.body.is_empty()) {
            headers.push((CONTENT_TYPE, accept.clone()));
        }
        for (name, value) in &self.headers {
            headers.retain(|(n, _)| n != name);
            headers.push((name.clone(), value.clone()));
        }
        self.body.clone()
    }
}

/// `Accept` media types, best quality first (stable for equal qualities); `*/*` when absent.
fn accepted_media_types(accept: &[HeaderValue]) -> Vec<String> {
    let mut accepted: Vec<(String, u16)> = accept
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            if media.is_empty() {
                return None;
            }
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((media, (quality.clamp(0.0, 1.0) * 1000.0) as u16))
        })
        .filter(|(_, q)| *q > 0)
        .collect();
    if accepted.is_empty() {
        return vec!["*/*".to_owned()];
    }
    accepted.sort_by_key(|(_, q)| std::cmp::Reverse(*q));
    accepted.into_iter().map(|(m, _)| m).collect()
}

/// The first accepted media type a template has (`type/*` accepts that type's templates), else the
/// `*/*` template.
fn best_match<'t>(templates: &'t [Template], accepted: &[String]) -> Option<&'t Template> {
    accepted
        .iter()
        .find_map(|media| {
            templates.iter().find(|t| {
                t.media_type == *media
                    || media
                        .strip_suffix("/*")
                        .is_some_and(|kind| t.media_type.strip_prefix(kind).is_some_and(|rest| rest.starts_with('/')))
            })
        })
        .or_else(|| templates.iter().find(|t| t.media_type == "*/*"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::ACCEPT;

    fn template(media: &str, status: u32, body: &str) -> pb::ResponseTemplate {
        pb::ResponseTemplate { media_type: media.into(), status, body: body.into(), ..Default::default() }
    }

    fn templates() -> ResponseTemplates {
        ResponseTemplates::compile(vec![
            pb::ResponseTemplates {
                error_key: "API_KEY_MISSING".into(),
                templates: vec![
                    pb::ResponseTemplate {
                        headers: vec![pb::Header { name: "Content-Type".into(), value: "application/json".into() }],
                        ..template("application/json", 403, "{\"e\":1}")
                    },
                    template("text/plain", 403, "no key"),
                ],
            },
            pb::ResponseTemplates { error_key: "DEFAULT".into(), templates: vec![template("*/*", 0, "default")] },
        ])
        .unwrap()
        .unwrap()
    }

    fn accept(value: &str) -> Vec<HeaderValue> {
        vec![HeaderValue::from_str(value).unwrap()]
    }

    #[test]
    fn selects_by_key_then_accept_quality() {
        let t = templates();
        let body = |key: &str, h: &[HeaderValue]| t.select(key, h).map(|t| t.body.clone());
        assert_eq!(body("API_KEY_MISSING", &accept("application/json")), Some(Bytes::from("{\"e\":1}")));
        assert_eq!(body("API_KEY_MISSING", &accept("text/plain;q=0.9, application/json;q=0.5")), Some("no key".into()));
        assert_eq!(body("API_KEY_MISSING", &accept("text/*")), Some("no key".into()));
        // No template of the key accepts XML: DEFAULT's `*/*` answers.
        assert_eq!(body("API_KEY_MISSING", &accept("application/xml")), Some("default".into()));
        assert_eq!(body("RATE_LIMIT_TOO_MANY_REQUESTS", &[]), Some("default".into()));
        assert_eq!(body("API_KEY_MISSING", &accept("application/json;q=0, */*")), Some("default".into()));
    }

    #[test]
    fn apply_overrides_status_headers_and_body() {
        let t = templates();
        let chosen = t.select("API_KEY_MISSING", &accept("application/json")).unwrap();
        let mut status = StatusCode::UNAUTHORIZED;
        let mut headers =
            vec![(CONTENT_TYPE, HeaderValue::from_static("text/html")), (ACCEPT, HeaderValue::from_static("x"))];
        let body = chosen.apply(&mut status, &mut headers, Some(&HeaderValue::from_static("application/json")));
        assert_eq!((status, body), (StatusCode::FORBIDDEN, Bytes::from("{\"e\":1}")));
        assert_eq!(headers.iter().filter(|(n, _)| n == CONTENT_TYPE).count(), 1);
        assert!(headers.contains(&(CONTENT_TYPE, HeaderValue::from_static("application/json"))));
        // Status 0 keeps the error's status; the body is replaced even when empty.
        let default = t.select("OTHER", &[]).unwrap();
        let mut status = StatusCode::BAD_GATEWAY;
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        assert_eq!(
            default.apply(&mut status, &mut headers, Some(&HeaderValue::from_static("*/*"))),
            Bytes::from("default")
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        // The request's Accept labels the body; the connection closes.
        assert_eq!(
            headers,
            vec![(CONNECTION, HeaderValue::from_static("close")), (CONTENT_TYPE, HeaderValue::from_static("*/*"))]
        );
    }

    #[test]
    fn no_templates_and_bad_entries() {
        assert!(ResponseTemplates::compile(Vec::new()).unwrap().is_none());
        let only_json = ResponseTemplates::compile(vec![pb::ResponseTemplates {
            error_key: "K".into(),
            templates: vec![template("application/json", 400, "x")],
        }])
        .unwrap()
        .unwrap();
        assert!(only_json.select("K", &accept("text/html")).is_none());
        assert!(only_json.select("K", &[]).is_none(), "no */* template and no Accept");
        // A non-UTF-8 Accept is ignored, never a panic.
        assert!(only_json.select("K", &[HeaderValue::from_bytes(b"\xff").unwrap()]).is_none());
        let bad = ResponseTemplates::compile(vec![pb::ResponseTemplates {
            error_key: "K".into(),
            templates: vec![template("*/*", 1000, "")],
        }]);
        assert!(bad.is_err());
    }
}
