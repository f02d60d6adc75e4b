//! `transform-headers`: remove, keep only (whitelist), set and append headers of the phase the step
//! runs in (request headers before the endpoint call, response headers after it).

use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Outcome, Policy, PolicyError, RequestExchange, ResponseExchange, Value, header_name, invalid};
use crate::policies::el::ElContext;

/// Rendered headers, in order.
type Headers = Vec<(HeaderName, HeaderValue)>;

#[derive(Debug)]
pub struct TransformHeaders {
    remove: Vec<HeaderName>,
    whitelist: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    append: Vec<(HeaderName, Value)>,
    uses_el: bool,
}

impl TransformHeaders {
    pub fn compile(config: pb::TransformHeadersPolicy) -> Result<TransformHeaders, PolicyError> {
        let pb::TransformHeadersPolicy { remove_headers, whitelist_headers, add_headers, append_headers } = config;
        let names = |field: &str, list: Vec<String>| -> Result<Vec<HeaderName>, PolicyError> {
            list.iter().enumerate().map(|(i, n)| header_name(&format!("transform-headers.{field}[{i}]"), n)).collect()
        };
        let pairs = |field: &str, list: Vec<pb::Header>| -> Result<Vec<(HeaderName, Value)>, PolicyError> {
            list.into_iter()
                .enumerate()
                .map(|(i, pb::Header { name, value })| {
                    let at = format!("transform-headers.{field}[{i}]");
                    let value = Value::compile(&at, value)?;
                    if let Value::Constant(text) = &value {
                        HeaderValue::from_bytes(text.as_bytes())
                            .map_err(|_| invalid(&at, format!("value of {name:?} is not a valid header value")))?;
                    }
                    Ok((header_name(&at, &name)?, value))
                })
                .collect()
        };
        let set = pairs("addHeaders", add_headers)?;
        let append = pairs("appendHeaders", append_headers)?;
        let uses_el = set.iter().chain(append.iter()).any(|(_, v)| v.is_template());
        Ok(TransformHeaders {
            remove: names("removeHeaders", remove_headers)?,
            whitelist: names("whitelistHeaders", whitelist_headers)?,
            set,
            append,
            uses_el,
        })
    }

    /// The values to set and append, rendered (templates read the headers before the change).
    fn render(&self, el: Option<&ElContext<'_>>) -> (Headers, Headers) {
        let render = |list: &[(HeaderName, Value)]| -> Headers {
            list.iter()
                .filter_map(|(name, value)| {
                    let text = match (value, el) {
                        (Value::Constant(text), _) => text.clone(),
                        // As Gravitee's policy: a value that evaluates to null adds no header.
                        (Value::Template(template), Some(el)) => match template.render_nullable(el) {
                            Ok(Some(text)) => text,
                            Ok(None) => return None,
                            Err(_) => value.render(el),
                        },
                        (Value::Template(_), None) => String::new(),
                    };
                    // A rendered value that is not a valid header value is dropped, not sent broken.
                    HeaderValue::from_bytes(text.as_bytes()).ok().map(|v| (name.clone(), v))
                })
                .collect()
        };
        (render(&self.set), render(&self.append))
    }

    /// Gravitee's order (transform-headers 5.x, v4 and v3 alike): additions (set, then append), then
    /// removals, then every header the whitelist does not name (names compared case-insensitively),
    /// so a header added by the same step goes when it is removed or not whitelisted.
    fn apply(
        &self,
        headers: &mut HeaderMap,
        set: Vec<(HeaderName, HeaderValue)>,
        append: Vec<(HeaderName, HeaderValue)>,
    ) {
        for (name, value) in set {
            headers.insert(name, value);
        }
        for (name, value) in append {
            headers.append(name, value);
        }
        for name in &self.remove {
            headers.remove(name);
        }
        if !self.whitelist.is_empty() {
            let drop: Vec<HeaderName> = headers.keys().filter(|name| !self.whitelist.contains(name)).cloned().collect();
            for name in drop {
                headers.remove(name);
            }
        }
    }
}

impl Policy for TransformHeaders {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let (set, append) = if self.uses_el { self.render(Some(&exchange.el())) } else { self.render(None) };
        self.apply(&mut exchange.parts.headers, set, append);
        Outcome::Continue
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        let (set, append) = if self.uses_el { self.render(Some(&exchange.el())) } else { self.render(None) };
        self.apply(exchange.headers, set, append);
    }

    fn uses_el(&self) -> bool {
        self.uses_el
    }

    fn reads_request_body(&self) -> bool {
        self.set.iter().chain(self.append.iter()).any(|(_, v)| v.reads_content())
    }

    fn reads_response_body(&self) -> bool {
        self.reads_request_body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(remove: &[&str], whitelist: &[&str], add: &[(&str, &str)], append: &[(&str, &str)]) -> TransformHeaders {
        let h = |list: &[(&str, &str)]| {
            list.iter().map(|(n, v)| pb::Header { name: n.to_string(), value: v.to_string() }).collect()
        };
        TransformHeaders::compile(pb::TransformHeadersPolicy {
            remove_headers: remove.iter().map(|s| s.to_string()).collect(),
            whitelist_headers: whitelist.iter().map(|s| s.to_string()).collect(),
            add_headers: h(add),
            append_headers: h(append),
        })
        .unwrap()
    }

    fn apply(policy: &TransformHeaders, headers: &mut HeaderMap) {
        let (set, append) = policy.render(None);
        policy.apply(headers, set, append);
    }

    #[test]
    fn set_append_remove_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-keep", HeaderValue::from_static("a"));
        apply(
            &policy(&["X-Secret"], &[], &[("X-Keep", "b"), ("X-New", "n"), ("X-Secret", "2")], &[("X-Keep", "c")]),
            &mut headers,
        );
        assert!(headers.get("x-secret").is_none());
        let keep: Vec<&str> = headers.get_all("x-keep").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(keep, vec!["b", "c"]);
        assert_eq!(headers["x-new"], "n");
    }

    #[test]
    fn whitelist_and_removals_apply_after_additions() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        headers.insert("cookie", HeaderValue::from_static("c"));
        headers.insert("x-b", HeaderValue::from_static("b"));
        let step = policy(
            &["x-b"],
            &["Accept", "X-KEEP-ADDED", "X-B"],
            &[("X-Added", "1"), ("X-Keep-Added", "2"), ("X-B", "set")],
            &[],
        );
        apply(&step, &mut headers);
        assert_eq!(headers.get_all("accept").iter().count(), 2, "whitelisted (any case), every value");
        assert_eq!(headers["x-keep-added"], "2", "added and whitelisted");
        assert!(headers.get("cookie").is_none());
        assert!(headers.get("x-added").is_none(), "added but not whitelisted: removed, as Gravitee does");
        assert!(headers.get("x-b").is_none(), "set then removed by the same step");
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn empty_lists_change_nothing_and_unicode_values_are_refused_cleanly() {
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("1"));
        apply(&policy(&[], &[], &[], &[]), &mut headers);
        assert_eq!(headers.len(), 1);
        let err = TransformHeaders::compile(pb::TransformHeadersPolicy {
            add_headers: vec![pb::Header { name: "X Bad".into(), value: "v".into() }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("transform-headers.addHeaders[0]"), "{err}");
        // Non-ASCII (UTF-8) values are opaque bytes in HTTP: accepted as given.
        assert!(
            TransformHeaders::compile(pb::TransformHeadersPolicy {
                add_headers: vec![pb::Header { name: "X-Name".into(), value: "Zoë ✓".into() }],
                ..Default::default()
            })
            .is_ok()
        );
    }
}
