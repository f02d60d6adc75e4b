//! `resource-filtering` (Gravitee's policy 1.10, request phase): whitelisted and blacklisted resources,
//! each an Ant pattern with optional methods.
//!
//! As Gravitee's policy: a pattern is matched against the request path (context path included), and
//! also as `contextPath + pattern`, with Spring's `AntPathMatcher` rules (`?` one character, `*` any
//! characters of one segment, `**` any segments, `{name}` one segment's text; empty segments ignored; a
//! pattern and a path must both start with `/` or both not). A whitelist, when there is one, must have
//! an entry matching path and method; then no blacklist entry may match. Refusals: `405
//! RESOURCE_FILTERING_METHOD_NOT_ALLOWED` when the path matched an entry whose methods do not (or, for
//! the blacklist, do) name the method, else `403 RESOURCE_FILTERING_FORBIDDEN`.

use hgw_proto::v1 as pb;
use http::{Method, StatusCode};
use regex::Regex;

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, invalid};

#[derive(Debug)]
pub struct ResourceFiltering {
    whitelist: Vec<Resource>,
    blacklist: Vec<Resource>,
}

#[derive(Debug)]
struct Resource {
    /// `None`: every path (Gravitee's null pattern).
    pattern: Option<AntPattern>,
    /// Empty: every method.
    methods: Vec<Method>,
}

impl ResourceFiltering {
    pub fn compile(config: pb::ResourceFilteringPolicy) -> Result<ResourceFiltering, PolicyError> {
        let list = |field: &str, resources: Vec<pb::resource_filtering_policy::Resource>| {
            resources
                .into_iter()
                .enumerate()
                .map(|(i, pb::resource_filtering_policy::Resource { pattern, methods })| {
                    let methods = methods
                        .iter()
                        .map(|m| {
                            Method::from_bytes(m.as_bytes())
                                .map_err(|_| invalid(format!("{field}[{i}].methods"), format!("`{m}` is not a method")))
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(Resource { pattern: (!pattern.is_empty()).then(|| AntPattern::new(&pattern)), methods })
                })
                .collect::<Result<Vec<_>, PolicyError>>()
        };
        Ok(ResourceFiltering {
            whitelist: list("whitelist", config.whitelist)?,
            blacklist: list("blacklist", config.blacklist)?,
        })
    }
}

impl Resource {
    fn path_matches(&self, context_path: &str, path: &str) -> bool {
        match &self.pattern {
            None => true,
            Some(pattern) => pattern.matches(path) || pattern.matches_below(context_path, path),
        }
    }

    fn method_matches(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }
}

impl Policy for ResourceFiltering {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let path = exchange.parts.uri.path();
        let context_path = exchange.info.context_path.as_str();
        let method = &exchange.parts.method;
        let matching = |resource: &&Resource| resource.path_matches(context_path, path);
        let whitelisted =
            self.whitelist.is_empty() || self.whitelist.iter().filter(matching).any(|r| r.method_matches(method));
        let refusal = if !whitelisted {
            // A whitelisted path with other methods.
            Some(self.whitelist.iter().filter(matching).any(|r| !r.methods.is_empty() && !r.methods.contains(method)))
        } else if self.blacklist.iter().filter(matching).any(|r| r.method_matches(method)) {
            // A blacklist entry naming this method.
            Some(self.blacklist.iter().filter(matching).any(|r| r.methods.contains(method)))
        } else {
            None
        };
        match refusal {
            None => Outcome::Continue,
            Some(true) => Outcome::Respond(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                Some("RESOURCE_FILTERING_METHOD_NOT_ALLOWED"),
                "Method not allowed while accessing this resource",
            )),
            Some(false) => Outcome::Respond(Reply::error(
                StatusCode::FORBIDDEN,
                Some("RESOURCE_FILTERING_FORBIDDEN"),
                "You're not allowed to access this resource",
            )),
        }
    }

    fn uses_el(&self) -> bool {
        // The context path is read from the EL request info.
        true
    }
}

/// A Spring `AntPathMatcher` pattern, split into segments once.
#[derive(Debug)]
struct AntPattern {
    absolute: bool,
    segments: Vec<Segment>,
    trailing_slash: bool,
}

#[derive(Debug)]
enum Segment {
    /// `**`: any number of segments.
    Any,
    /// `*`: one segment's text.
    Star,
    Literal(String),
    /// A segment with `*`, `?` or `{...}`, anchored.
    Glob(Regex),
}

impl Segment {
    fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Any | Segment::Star => true,
            Segment::Literal(text) => text == segment,
            Segment::Glob(regex) => regex.is_match(segment),
        }
    }
}

impl AntPattern {
    fn new(pattern: &str) -> AntPattern {
        let segments = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s == "**" {
                    Segment::Any
                } else if s == "*" {
                    Segment::Star
                } else if s.contains(['*', '?', '{']) {
                    Segment::Glob(glob(s))
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        AntPattern { absolute: pattern.starts_with('/'), segments, trailing_slash: pattern.ends_with('/') }
    }

    /// Spring's `AntPathMatcher.match(pattern, path)`.
    fn matches(&self, path: &str) -> bool {
        if path.starts_with('/') != self.absolute {
            return false;
        }
        let dirs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.matches_dirs(&dirs, path.ends_with('/'))
    }

    /// `match(contextPath + pattern, path)` without building that pattern per request: the context
    /// path's segments are literals, so they must start the path, and the pattern matches the rest.
    fn matches_below(&self, context_path: &str, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let dirs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let prefix: Vec<&str> = context_path.split('/').filter(|s| !s.is_empty()).collect();
        if self.segments.is_empty() || dirs.len() < prefix.len() || dirs[..prefix.len()] != prefix[..] {
            return false;
        }
        self.matches_dirs(&dirs[prefix.len()..], path.ends_with('/'))
    }

    /// Spring's `AntPathMatcher.doMatch` (full match) on the path's non-empty segments.
    fn matches_dirs(&self, dirs: &[&str], path_trailing_slash: bool) -> bool {
        let patt = &self.segments;
        let is_any = |i: usize| matches!(patt[i], Segment::Any);
        let (mut ps, mut pe) = (0isize, patt.len() as isize - 1);
        let (mut ds, mut de) = (0isize, dirs.len() as isize - 1);
        while ps <= pe && ds <= de {
            if is_any(ps as usize) {
                break;
            }
            if !patt[ps as usize].matches(dirs[ds as usize]) {
                return false;
            }
            ps += 1;
            ds += 1;
        }
        if ds > de {
            if ps > pe {
                return self.trailing_slash == path_trailing_slash;
            }
            if ps == pe && matches!(&patt[ps as usize], Segment::Star) && path_trailing_slash {
                return true;
            }
            return (ps..=pe).all(|i| is_any(i as usize));
        }
        if ps > pe {
            return false;
        }
        while ps <= pe && ds <= de {
            if is_any(pe as usize) {
                break;
            }
            if !patt[pe as usize].matches(dirs[de as usize]) {
                return false;
            }
            pe -= 1;
            de -= 1;
        }
        if ds > de {
            return (ps..=pe).all(|i| is_any(i as usize));
        }
        while ps != pe && ds <= de {
            let Some(next) = (ps + 1..=pe).find(|&i| is_any(i as usize)) else {
                return false;
            };
            if next == ps + 1 {
                ps += 1;
                continue;
            }
            let length = next - ps - 1;
            let room = de - ds + 1;
            let found = (0..=room - length)
                .find(|&i| (0..length).all(|j| patt[(ps + j + 1) as usize].matches(dirs[(ds + i + j) as usize])));
            let Some(found) = found else {
                return false;
            };
            ps = next;
            ds = ds + found + length;
        }
        (ps..=pe).all(|i| is_any(i as usize))
    }
}

/// One segment's `?`, `*` and `{name}` / `{name:regex}` as an anchored regular expression (Spring's
/// `AntPathStringMatcher`); a `{name:regex}` that does not compile matches its segment's text only.
fn glob(segment: &str) -> Regex {
    let mut out = String::from("^(?:");
    let mut chars = segment.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '{' => {
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    inner.push(c);
                }
                match inner.split_once(':') {
                    Some((_, regex)) if Regex::new(regex).is_ok() => {
                        out.push('(');
                        out.push_str(regex);
                        out.push(')');
                    }
                    _ => out.push_str("(.*)"),
                }
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push_str(")$");
    Regex::new(&out)
        .unwrap_or_else(|_| Regex::new(&format!("^{}$", regex::escape(segment))).expect("an escaped literal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ant_patterns_as_spring_matches_them() {
        let m = |pattern: &str, path: &str| AntPattern::new(pattern).matches(path);
        assert!(m("/**", "/anything/at/all"));
        assert!(m("/**", "/"));
        assert!(m("/api/*", "/api/x"));
        assert!(!m("/api/*", "/api/x/y"));
        assert!(m("/api/**", "/api"));
        assert!(m("/echo/**/admin/**", "/echo/a/b/admin/c"));
        assert!(m("/echo/**/admin/**", "/echo/admin"));
        assert!(!m("**/admin/**", "/echo/admin/x"), "relative pattern, absolute path");
        assert!(m("/a?c/{id}.json", "/abc/42.json"));
        assert!(!m("/a?c", "/ac"));
        assert!(m("/a/**/b/**/c", "/a/x/b/y/z/c"));
        assert!(!m("/a/**/b/**/c", "/a/x/y/c"));
        assert!(m("/a/", "/a/") && !m("/a/", "/a") && !m("/a", "/a/"));
        assert!(m("/a/*", "/a/"), "Spring: a lone `*` matches the trailing slash");
        assert!(!m("/API/**", "/api/x"), "case-sensitive");
        let below = |pattern: &str, path: &str| AntPattern::new(pattern).matches_below("/echo/", path);
        assert!(below("**/admin/**", "/echo/x/admin/y"));
        assert!(below("**/admin/**", "/echo/admin"));
        assert!(!below("**/admin/**", "/other/admin"));
        assert!(below("/public", "/echo/public") && !below("/public", "/echo/public/x"));
    }

    fn run(policy: &ResourceFiltering, method: &str, path: &str) -> Option<(u16, &'static str)> {
        let (mut parts, _) = http::Request::builder().method(method).uri(path).body(()).unwrap().into_parts();
        match super::super::with_test_exchange(&mut parts, "127.0.0.1", |exchange| policy.on_request(exchange)) {
            Outcome::Respond(reply) => Some((reply.status.as_u16(), reply.error_key.unwrap())),
            _ => None,
        }
    }

    fn policy(whitelist: &[(&str, &[&str])], blacklist: &[(&str, &[&str])]) -> ResourceFiltering {
        let list = |l: &[(&str, &[&str])]| {
            l.iter()
                .map(|(p, m)| pb::resource_filtering_policy::Resource {
                    pattern: p.to_string(),
                    methods: m.iter().map(|s| s.to_string()).collect(),
                })
                .collect()
        };
        ResourceFiltering::compile(pb::ResourceFilteringPolicy {
            whitelist: list(whitelist),
            blacklist: list(blacklist),
        })
        .unwrap()
    }

    #[test]
    fn whitelist_then_blacklist_with_gravitee_answers() {
        let p = policy(&[("/api/**", &["GET", "POST"])], &[("/api/admin/**", &["DELETE"]), ("/api/secret", &[])]);
        assert_eq!(run(&p, "GET", "/api/x"), None);
        assert_eq!(run(&p, "PUT", "/api/x"), Some((405, "RESOURCE_FILTERING_METHOD_NOT_ALLOWED")));
        assert_eq!(run(&p, "GET", "/other"), Some((403, "RESOURCE_FILTERING_FORBIDDEN")));
        assert_eq!(run(&p, "GET", "/api/secret"), Some((403, "RESOURCE_FILTERING_FORBIDDEN")));
        assert_eq!(run(&p, "GET", "/api/admin/x"), None);
        let blacklist = policy(&[], &[("/admin/**", &["DELETE"])]);
        assert_eq!(run(&blacklist, "DELETE", "/admin/x"), Some((405, "RESOURCE_FILTERING_METHOD_NOT_ALLOWED")));
        assert_eq!(run(&blacklist, "GET", "/admin/x"), None);
        assert_eq!(run(&policy(&[], &[]), "GET", "/x"), None);
        assert_eq!(
            run(&policy(&[("", &["GET"])], &[]), "POST", "/x"),
            Some((405, "RESOURCE_FILTERING_METHOD_NOT_ALLOWED"))
        );
    }
}
