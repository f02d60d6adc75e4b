//! `transform-headers`: remove, keep only (whitelist), set and append headers of the phase the step
//! runs in (request headers before the endpoint call, response headers after it).

use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Outcome, Policy, PolicyError, RequestExchange, ResponseExchange, header, header_name};

#[derive(Debug)]
pub struct TransformHeaders {
    remove: Vec<HeaderName>,
    whitelist: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
}

impl TransformHeaders {
    pub fn compile(config: pb::TransformHeadersPolicy) -> Result<TransformHeaders, PolicyError> {
        let pb::TransformHeadersPolicy { remove_headers, whitelist_headers, add_headers, append_headers } = config;
        let names = |field: &str, list: Vec<String>| -> Result<Vec<HeaderName>, PolicyError> {
            list.iter().enumerate().map(|(i, n)| header_name(&format!("transform-headers.{field}[{i}]"), n)).collect()
        };
        let pairs = |field: &str, list: Vec<pb::Header>| -> Result<Vec<(HeaderName, HeaderValue)>, PolicyError> {
            list.into_iter().enumerate().map(|(i, h)| header(&format!("transform-headers.{field}[{i}]"), h)).collect()
        };
        Ok(TransformHeaders {
            remove: names("removeHeaders", remove_headers)?,
            whitelist: names("whitelistHeaders", whitelist_headers)?,
            set: pairs("addHeaders", add_headers)?,
            append: pairs("appendHeaders", append_headers)?,
        })
    }

    /// Gravitee's order: removals, then the whitelist, then additions (so added headers always stay).
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        if !self.whitelist.is_empty() {
            let keep: Vec<HeaderName> = headers.keys().filter(|name| self.whitelist.contains(name)).cloned().collect();
            let mut kept = HeaderMap::with_capacity(keep.len());
            for name in keep {
                for value in headers.get_all(&name) {
                    kept.append(name.clone(), value.clone());
                }
            }
            *headers = kept;
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
    }
}

impl Policy for TransformHeaders {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        self.apply(&mut exchange.parts.headers);
        Outcome::Continue
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        self.apply(exchange.headers);
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

    #[test]
    fn remove_set_append_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-keep", HeaderValue::from_static("a"));
        policy(&["X-Secret"], &[], &[("X-Keep", "b"), ("X-New", "n")], &[("X-Keep", "c")]).apply(&mut headers);
        assert!(headers.get("x-secret").is_none());
        let keep: Vec<&str> = headers.get_all("x-keep").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(keep, vec!["b", "c"]);
        assert_eq!(headers["x-new"], "n");
    }

    #[test]
    fn whitelist_keeps_only_listed_then_adds() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        headers.insert("cookie", HeaderValue::from_static("c"));
        policy(&[], &["Accept"], &[("X-Added", "1")], &[]).apply(&mut headers);
        assert_eq!(headers.len(), 3);
        assert!(headers.get("cookie").is_none());
        assert_eq!(headers["x-added"], "1");
    }

    #[test]
    fn empty_lists_change_nothing_and_unicode_values_are_refused_cleanly() {
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("1"));
        policy(&[], &[], &[], &[]).apply(&mut headers);
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
