//! `url-rewriting`: rewrites backend URLs in response headers (`Location`, `Link`, ...) and, when
//! asked, in the response body, as Gravitee's policy does: for every match of `fromRegex` (a Java
//! regular expression) the match is replaced by `toReplacement` rendered as an EL template in which
//! `#group[i]` is the match's group i+1 and `#groupName['n']` its named group `n`. The rendered text is
//! used as it is (Gravitee expands no `$1`).

use hgw_el::JavaRegex;
use hgw_proto::v1 as pb;
use http::HeaderValue;

use super::el::{ElContext, RegexCaptures};
use super::{Policy, PolicyError, ResponseExchange, Value, invalid};

#[derive(Debug)]
pub struct UrlRewriting {
    from: JavaRegex,
    to: Value,
    headers: bool,
    body: bool,
}

impl UrlRewriting {
    pub fn compile(config: pb::UrlRewritingPolicy) -> Result<UrlRewriting, PolicyError> {
        let pb::UrlRewritingPolicy { from_regex, to_replacement, rewrite_response_headers, rewrite_response_body } =
            config;
        let from = JavaRegex::new(&from_regex)
            .map_err(|e| invalid("url-rewriting.fromRegex", format!("not a valid regular expression: {e}")))?;
        Ok(UrlRewriting {
            from,
            to: Value::compile("url-rewriting.toReplacement", to_replacement)?,
            headers: rewrite_response_headers,
            body: rewrite_response_body,
        })
    }

    /// `text` with every match replaced, or `None` when nothing matched.
    fn rewrite(&self, text: &str, el: &ElContext<'_>) -> Option<String> {
        let found = self.from.matches(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in found {
            let range = found.range.clone();
            out.push_str(&text[last..range.start]);
            match &self.to {
                Value::Constant(to) => out.push_str(to),
                Value::Template(_) => {
                    let captures = RegexCaptures::of_java(found);
                    out.push_str(&self.to.render(&el.capturing(&captures)));
                }
            }
            last = range.end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }
}

impl Policy for UrlRewriting {
    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        if self.body {
            self.rewrite_content(exchange);
        }
        if !self.headers {
            return;
        }
        let mut changed = Vec::new();
        {
            let el = exchange.el();
            for (name, value) in exchange.headers.iter() {
                // Values that are not UTF-8 text cannot hold a URL the regex could match: kept as they are.
                let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                    continue;
                };
                if let Some(rewritten) = self.rewrite(text, &el) {
                    changed.push((name.clone(), value.clone(), rewritten));
                }
            }
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

    fn reads_response_body(&self) -> bool {
        self.body
    }
}

impl UrlRewriting {
    /// Rewrites the buffered response body (text only: a body that is not UTF-8 is left as it is).
    /// Gravitee's policy rewrites the body as the response streams out, after the header changes
    /// of every step; matches in the body do not depend on those, so here it is done in place.
    fn rewrite_content(&self, exchange: &mut ResponseExchange<'_>) {
        let rewritten = {
            let Some(text) = exchange.body.as_deref().and_then(|b| std::str::from_utf8(b).ok()) else {
                return;
            };
            let el = exchange.el();
            self.rewrite(text, &el)
        };
        if let (Some(rewritten), Some(body)) = (rewritten, exchange.body.as_deref_mut()) {
            *body = bytes::Bytes::from(rewritten);
        }
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
        let mut attributes = Attributes::new();
        let info = RequestInfo::default();
        let mut exchange = ResponseExchange {
            status: &mut status,
            headers,
            attributes: &mut attributes,
            info: &info,
            body: None,
            failure: None,
            legacy_engine: false,
        };
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
        let p = policy("http://backend:8080/(\\w+)", "https://api.example.com/{#group[0]}", false);
        let info = RequestInfo::default();
        let headers = HeaderMap::new();
        let el = crate::policies::el::ElContext::response(&info, &[], 200, &headers);
        assert_eq!(
            p.rewrite("see http://backend:8080/orders and http://backend:8080/items", &el).as_deref(),
            Some("see https://api.example.com/orders and https://api.example.com/items")
        );
        assert_eq!(p.rewrite("nothing to do", &el), None);
        assert!(p.reads_response_body());
    }

    #[test]
    fn rewrites_every_matching_value_with_groups() {
        let p = policy("http://backend:8080/(\\w+)", "https://api.example.com/v1/{#group[0]}", true);
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

    #[test]
    fn each_match_renders_its_own_groups_and_dollar_signs_stay_literal() {
        let info = RequestInfo::default();
        let headers = HeaderMap::new();
        let el = crate::policies::el::ElContext::response(&info, &[], 200, &headers);
        // Gravitee's own test pattern (an atomic group, which needs the backtracking engine).
        let p = policy(r"https?://[^\/]*\/((?>\w|\d|\-|\/|\?|\=|\&)*)", "https://apis.gravitee.io/{#group[0]}", true);
        assert_eq!(
            p.rewrite("a http://10.0.0.1:8080/x/y?z=1 b https://h/k", &el).as_deref(),
            Some("a https://apis.gravitee.io/x/y?z=1 b https://apis.gravitee.io/k")
        );
        let named = policy("http://(?<host>[a-z]+)/", "{#groupName['host']}-$1;", true);
        assert_eq!(named.rewrite("http://one/ http://two/", &el).as_deref(), Some("one-$1; two-$1;"));
    }
}
