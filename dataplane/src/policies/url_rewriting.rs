//! `url-rewriting`: rewrites backend URLs in response headers (`Location`, `Link`, ...). Every match
//! of `fromRegex` in every header value is replaced; `toReplacement` may reference groups (`$1`,
//! `${name}`) and may be an EL template, rendered once per response before the groups are expanded.

use hgw_proto::v1 as pb;
use http::HeaderValue;
use regex::Regex;

use super::{Policy, PolicyError, ResponseExchange, Value, invalid};

#[derive(Debug)]
pub struct UrlRewriting {
    from: Regex,
    to: Value,
    headers: bool,
    body: bool,
}

impl UrlRewriting {
    pub fn compile(config: pb::UrlRewritingPolicy) -> Result<UrlRewriting, PolicyError> {
        let pb::UrlRewritingPolicy { from_regex, to_replacement, rewrite_response_headers, rewrite_response_body } =
            config;
        let from = Regex::new(&from_regex)
            .map_err(|e| invalid("url-rewriting.fromRegex", format!("not a valid regular expression: {e}")))?;
        Ok(UrlRewriting {
            from,
            to: Value::compile("url-rewriting.toReplacement", to_replacement)?,
            headers: rewrite_response_headers,
            body: rewrite_response_body,
        })
    }
}

impl Policy for UrlRewriting {
    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        if !self.headers {
            return;
        }
        let mut replacement: Option<String> = None;
        let mut changed = Vec::new();
        for (name, value) in exchange.headers.iter() {
            // Values that are not UTF-8 text cannot hold a URL the regex could match: kept as they are.
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                continue;
            };
            if !self.from.is_match(text) {
                continue;
            }
            let to = replacement.get_or_insert_with(|| match &self.to {
                Value::Constant(text) => text.clone(),
                Value::Template(_) => self.to.render(&exchange.el()),
            });
            let rewritten = self.from.replace_all(text, to.as_str());
            changed.push((name.clone(), value.clone(), rewritten.into_owned()));
        }
        for (name, old, new) in changed {
            // A rewrite that is not a valid header value leaves the original in place.
            let Ok(new) = HeaderValue::try_from(new) else {
                continue;
            };
            if let http::header::Entry::Occupied(mut entry) = exchange.headers.entry(&name) {
                for value in entry.iter_mut() {
                    if *value == old {
                        *value = new.clone();
                    }
                }
            }
        }
    }

    fn uses_el(&self) -> bool {
        self.to.is_template()
    }

    fn rewrites_body(&self) -> bool {
        self.body
    }

    fn rewrite_body(&self, body: &str, el: &crate::policies::el::ElContext<'_>) -> Option<String> {
        if !self.body || !self.from.is_match(body) {
            return None;
        }
        let to = self.to.render(el);
        Some(self.from.replace_all(body, to.as_str()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::Attributes;
    use crate::policies::el::RequestInfo;
    use http::{HeaderMap, StatusCode};

    fn run(policy: &UrlRewriting, headers: &mut HeaderMap) {
        let mut status = StatusCode::OK;
        let attributes = Attributes::new();
        let info = RequestInfo::default();
        let mut exchange = ResponseExchange { status: &mut status, headers, attributes: &attributes, info: &info };
        policy.on_response(&mut exchange);
    }

    fn policy(from: &str, to: &str, headers: bool) -> UrlRewriting {
        UrlRewriting::compile(pb::UrlRewritingPolicy {
            from_regex: from.into(),
            to_replacement: to.into(),
            rewrite_response_headers: headers,
            rewrite_response_body: true,
        })
        .unwrap()
    }

    #[test]
    fn bodies_are_rewritten_with_groups() {
        let p = policy("http://backend:8080/(\\w+)", "https://api.example.com/$1", false);
        let info = RequestInfo::default();
        let headers = HeaderMap::new();
        let el = crate::policies::el::ElContext::response(&info, &[], 200, &headers);
        assert_eq!(
            p.rewrite_body("see http://backend:8080/orders and http://backend:8080/items", &el).as_deref(),
            Some("see https://api.example.com/orders and https://api.example.com/items")
        );
        assert_eq!(p.rewrite_body("nothing to do", &el), None);
        assert!(p.rewrites_body());
    }

    #[test]
    fn rewrites_every_matching_value_with_groups() {
        let p = policy("http://backend:8080/(\\w+)", "https://api.example.com/v1/$1", true);
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("http://backend:8080/orders?x=1"));
        h.append("link", HeaderValue::from_static("<http://backend:8080/a>; rel=a"));
        h.append("link", HeaderValue::from_static("<http://backend:8080/b>; rel=b, <http://backend:8080/c>"));
        h.insert("x-other", HeaderValue::from_static("untouched"));
        run(&p, &mut h);
        assert_eq!(h["location"], "https://api.example.com/v1/orders?x=1");
        let links: Vec<_> = h.get_all("link").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(
            links,
            vec![
                "<https://api.example.com/v1/a>; rel=a",
                "<https://api.example.com/v1/b>; rel=b, <https://api.example.com/v1/c>"
            ]
        );
        assert_eq!(h["x-other"], "untouched");
    }

    #[test]
    fn disabled_non_utf8_and_invalid_results_leave_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("http://backend/a"));
        run(&policy("backend", "front", false), &mut h);
        assert_eq!(h["location"], "http://backend/a");

        h.insert("x-bin", HeaderValue::from_bytes(b"backend \xff").unwrap());
        run(&policy("backend", "bad\nvalue", true), &mut h);
        assert_eq!(h["location"], "http://backend/a", "a newline cannot go into a header");
        assert_eq!(h["x-bin"].as_bytes(), b"backend \xff");

        h.insert("x-uni", HeaderValue::from_str("café backend").unwrap());
        run(&policy("backend", "frönt", true), &mut h);
        assert_eq!(h["x-uni"].as_bytes(), "café frönt".as_bytes());
    }

    #[test]
    fn invalid_regex_is_refused() {
        let error =
            UrlRewriting::compile(pb::UrlRewritingPolicy { from_regex: "(".into(), ..Default::default() }).unwrap_err();
        assert!(error.to_string().starts_with("url-rewriting.fromRegex"), "{error}");
    }
}
