//! Gravitee's listener-level CORS: preflights are answered before plans and flows (a browser never
//! sends credentials on a preflight), and actual requests from an allowed origin get the
//! `Access-Control-*` response headers, on the endpoint's answer as on the gateway's own errors.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use hgw_proto::v1 as pb;

use crate::policies::Reply;

/// Gravitee's error key for a refused preflight.
pub const CORS_PREFLIGHT_FAILED: &str = "CORS_PREFLIGHT_FAILED";

/// Why a `Cors` message cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CorsError {
    #[error("allow_origin[{0}]: {1:?} is not a valid regular expression")]
    Origin(usize, String),
    #[error("{0}: {1:?} is not a valid header value")]
    Header(&'static str, String),
}

/// One `allowOrigin` entry: Gravitee compiles each one as a regular expression matched against the
/// whole origin; exact strings are checked first so the common case costs a comparison.
#[derive(Debug)]
struct Origin {
    exact: String,
    pattern: Regex,
}

/// A compiled CORS configuration.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<Origin>,
    methods: Vec<String>,
    any_header: bool,
    headers: Vec<String>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
}

impl TryFrom<pb::Cors> for Cors {
    type Error = CorsError;

    fn try_from(cors: pb::Cors) -> Result<Self, Self::Error> {
        let pb::Cors { allow_origin, allow_methods, allow_headers, expose_headers, max_age, allow_credentials } = cors;
        let mut any_origin = false;
        let mut origins = Vec::new();
        for (i, origin) in allow_origin.into_iter().enumerate() {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            let pattern = Regex::new(&format!("^(?:{origin})$")).map_err(|_| CorsError::Origin(i, origin.clone()))?;
            origins.push(Origin { exact: origin, pattern });
        }
        let joined = |field: &'static str, list: &[String]| -> Result<Option<HeaderValue>, CorsError> {
            if list.is_empty() {
                return Ok(None);
            }
            let text = list.join(", ");
            HeaderValue::try_from(text.as_str()).map(Some).map_err(|_| CorsError::Header(field, text))
        };
        let methods: Vec<String> = allow_methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        let headers: Vec<String> = allow_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        Ok(Cors {
            any_origin,
            origins,
            allow_methods: joined("allow_methods", &allow_methods)?,
            allow_headers: joined("allow_headers", &allow_headers)?,
            expose_headers: joined("expose_headers", &expose_headers)?,
            max_age: (max_age >= 0).then(|| HeaderValue::from(max_age)),
            any_header: headers.iter().any(|h| h == "*"),
            headers,
            methods,
            allow_credentials,
        })
    }
}

/// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(ORIGIN) && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

impl Cors {
    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.exact == origin || o.pattern.is_match(origin))
    }

    /// `Access-Control-Allow-Origin` (and `Vary`) for an allowed origin: `*` only when any origin is
    /// allowed without credentials, since browsers refuse `*` on credentialed requests.
    fn origin_headers(&self, origin: &HeaderValue, out: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.any_origin && !self.allow_credentials {
            out.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
        } else {
            out.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            out.push((VARY, HeaderValue::from_static("Origin")));
        }
        if self.allow_credentials {
            out.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
    }

    /// The gateway's answer to a preflight: 200 with the allowed methods and headers, or 400
    /// `CORS_PREFLIGHT_FAILED` when the origin, method or a requested header is not allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Reply {
        let refuse = |why: &str| Reply::error(StatusCode::BAD_REQUEST, Some(CORS_PREFLIGHT_FAILED), why);
        let Some(origin) = headers.get(ORIGIN) else {
            return refuse("CORS preflight request without an origin");
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return refuse("Origin is not allowed");
        }
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok()).unwrap_or("").trim();
        if !self.methods.iter().any(|m| m == "*" || m.eq_ignore_ascii_case(method)) {
            return refuse("Method is not allowed");
        }
        if !self.any_header {
            for requested in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
                let Ok(list) = requested.to_str() else {
                    return refuse("Request headers are not allowed");
                };
                let allowed = list
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)));
                if !allowed {
                    return refuse("Request headers are not allowed");
                }
            }
        }
        let mut out = Vec::with_capacity(6);
        self.origin_headers(origin, &mut out);
        if let Some(methods) = &self.allow_methods {
            out.push((ACCESS_CONTROL_ALLOW_METHODS, methods.clone()));
        }
        if let Some(allowed) = &self.allow_headers {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone()));
        }
        if let Some(max_age) = &self.max_age {
            out.push((ACCESS_CONTROL_MAX_AGE, max_age.clone()));
        }
        Reply { status: StatusCode::OK, headers: out, body: Default::default(), error_key: None, error_message: None }
    }

    /// Headers for the response to an actual request; empty when it has no allowed `Origin`.
    pub fn response_headers(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        let Some(origin) = headers.get(ORIGIN) else {
            return out;
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return out;
        }
        self.origin_headers(origin, &mut out);
        if let Some(expose) = &self.expose_headers {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::try_from(pb::Cors {
            allow_origin: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-token".into(), "content-type".into()],
            expose_headers: vec!["X-Total".into()],
            max_age: 600,
            allow_credentials: credentials,
        })
        .unwrap()
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn preflight_allows_exact_and_regex_origins() {
        let c = cors(&["https://app.example.com", "https://.*\\.example\\.org"], true);
        for origin in ["https://app.example.com", "https://a.b.example.org"] {
            let reply = c.preflight(&request(&[
                ("origin", origin),
                ("access-control-request-method", "post"),
                ("access-control-request-headers", "X-Token, Content-Type"),
            ]));
            assert_eq!(reply.status, StatusCode::OK, "{origin}");
            assert_eq!(get(&reply.headers, "access-control-allow-origin"), Some(origin));
            assert_eq!(get(&reply.headers, "access-control-allow-methods"), Some("GET, POST"));
            assert_eq!(get(&reply.headers, "access-control-allow-headers"), Some("x-token, content-type"));
            assert_eq!(get(&reply.headers, "access-control-max-age"), Some("600"));
            assert_eq!(get(&reply.headers, "access-control-allow-credentials"), Some("true"));
            assert_eq!(get(&reply.headers, "vary"), Some("Origin"));
        }
        // Anchored: a suffix or prefix does not match.
        for origin in ["https://a.example.org.evil.com", "xhttps://a.example.org"] {
            let reply = c.preflight(&request(&[("origin", origin), ("access-control-request-method", "GET")]));
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{origin}");
            assert_eq!(reply.error_key, Some(CORS_PREFLIGHT_FAILED));
        }
    }

    #[test]
    fn preflight_refuses_methods_and_headers_not_allowed() {
        let c = cors(&["*"], false);
        let bad_method = c.preflight(&request(&[("origin", "https://x"), ("access-control-request-method", "DELETE")]));
        assert_eq!((bad_method.status, bad_method.error_key), (StatusCode::BAD_REQUEST, Some(CORS_PREFLIGHT_FAILED)));
        let bad_header = c.preflight(&request(&[
            ("origin", "https://x"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-token, x-other"),
        ]));
        assert_eq!(bad_header.status, StatusCode::BAD_REQUEST);
        let ok = c.preflight(&request(&[("origin", "https://x"), ("access-control-request-method", "GET")]));
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(get(&ok.headers, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&ok.headers, "vary"), None);
        assert_eq!(get(&ok.headers, "access-control-allow-credentials"), None);
    }

    #[test]
    fn empty_lists_allow_nothing_and_send_no_headers() {
        let c = Cors::try_from(pb::Cors { max_age: -1, ..Default::default() }).unwrap();
        let reply = c.preflight(&request(&[("origin", "https://x"), ("access-control-request-method", "GET")]));
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(c.response_headers(&request(&[("origin", "https://x")])).is_empty());
    }

    #[test]
    fn star_with_credentials_echoes_the_origin() {
        let c = cors(&["*"], true);
        let out = c.response_headers(&request(&[("origin", "https://x.test")]));
        assert_eq!(get(&out, "access-control-allow-origin"), Some("https://x.test"));
        assert_eq!(get(&out, "access-control-expose-headers"), Some("X-Total"));
        assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
    }

    #[test]
    fn actual_requests_without_an_allowed_origin_get_nothing() {
        let c = cors(&["https://app.example.com"], false);
        assert!(c.response_headers(&request(&[])).is_empty());
        assert!(c.response_headers(&request(&[("origin", "https://other.example.com")])).is_empty());
        // A non-ASCII (opaque) origin is never allowed, and never panics.
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_bytes("https://é.example".as_bytes()).unwrap());
        assert!(c.response_headers(&h).is_empty());
        assert!(is_preflight(&Method::OPTIONS, &request(&[("origin", "a"), ("access-control-request-method", "GET")])));
        assert!(!is_preflight(&Method::OPTIONS, &request(&[("origin", "a")])));
    }

    #[test]
    fn invalid_regex_is_refused() {
        let error =
            Cors::try_from(pb::Cors { allow_origin: vec!["*".into(), "(".into()], ..Default::default() }).unwrap_err();
        assert!(error.to_string().starts_with("allow_origin[1]"), "{error}");
    }
}
