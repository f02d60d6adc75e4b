//! `http-redirect` (Gravitee's policy, request phase): the first rule whose regular expression matches
//! the whole path below the context path answers its status with a `Location` and no body. The
//! location is an EL template that reads the match as `#group[i]` and `#groupName['name']`.

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::{HeaderValue, StatusCode, header::LOCATION};
use regex::Regex;

use super::el::RegexCaptures;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, invalid};

#[derive(Debug)]
pub struct HttpRedirect {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// Anchored at both ends: Java's `Matcher.matches()`.
    path: Regex,
    location: Value,
    status: StatusCode,
}

impl HttpRedirect {
    pub fn compile(config: pb::HttpRedirectPolicy) -> Result<HttpRedirect, PolicyError> {
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let path = Regex::new(&format!("^(?:{})$", rule.path_regex))
                    .map_err(|e| invalid(format!("rules[{i}].path"), e.to_string()))?;
                let status = u16::try_from(rule.status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| invalid(format!("rules[{i}].status"), format!("{} is not a status", rule.status)))?;
                Ok(Rule { path, location: Value::compile(&format!("rules[{i}].location"), rule.location)?, status })
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(HttpRedirect { rules })
    }
}

impl Policy for HttpRedirect {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let path_info = exchange.info.path_info.as_str();
        for rule in &self.rules {
            let Some(captures) = rule.path.captures(path_info) else {
                continue;
            };
            let groups = RegexCaptures::of(&rule.path, &captures);
            let location = rule.location.render(&exchange.el().with_captures(&groups));
            let location = normalize_location(&location);
            // v4 interrupts with an empty body; the V3 engine's policy fails with an empty message,
            // which its failure processor writes as Gravitee's JSON error.
            let mut reply = if exchange.legacy_engine {
                Reply::error(rule.status, None, "")
            } else {
                Reply {
                    status: rule.status,
                    headers: Vec::new(),
                    body: Bytes::new(),
                    error_key: None,
                    error_message: None,
                }
            };
            // A location that is not a valid header value cannot be sent; Gravitee would fail the
            // request the same way (500).
            match HeaderValue::from_str(&location) {
                Ok(value) => reply.headers.push((LOCATION, value)),
                Err(_) => {
                    return Outcome::Respond(Reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "Unable to build redirect",
                    ));
                }
            }
            return Outcome::Respond(reply);
        }
        Outcome::Continue
    }

    fn uses_el(&self) -> bool {
        // The path below the context path is read from the EL request info.
        true
    }
}

/// Java's `URI.normalize()` on the location, as Gravitee sends it: `.`/`..` segments removed and
/// repeated slashes merged in the path (`https://h//a/./b` → `https://h/a/b`); query and fragment
/// kept. A location whose path cannot be normalised is sent as rendered.
fn normalize_location(location: &str) -> String {
    let (head, rest) = match location.find("://") {
        Some(i) => {
            let after = &location[i + 3..];
            let path_start = after.find(['/', '?', '#']).map_or(location.len(), |j| i + 3 + j);
            location.split_at(path_start)
        }
        None => ("", location),
    };
    let split = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(split);
    if !path.starts_with('/') {
        return location.to_owned();
    }
    match crate::http::path::normalize(path) {
        Ok(path) => format!("{head}{path}{tail}"),
        Err(_) => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_normalised_like_java_uri() {
        assert_eq!(normalize_location("https://httpbin.org//headers"), "https://httpbin.org/headers");
        assert_eq!(normalize_location("https://h/a/./b/../c?x=//y"), "https://h/a/c?x=//y");
        assert_eq!(normalize_location("https://h"), "https://h");
        assert_eq!(normalize_location("/local//path"), "/local/path");
        assert_eq!(normalize_location("relative"), "relative");
    }
}
