//! The request path every later phase sees: normalised once, before routing, so that routes, flows,
//! plans and the endpoint all read the same path and no spelling of it slips past a flow that another
//! spelling would hit (`/pub/%61dmin/`, `/pub/./admin/`, `/pub/x/../admin/`, `/pub//admin/` are all
//! `/pub/admin/`).
//!
//! RFC 3986 §6.2.2 normalisation plus two refusals, as Envoy does with `normalize_path`, `merge_slashes`
//! and `path_with_escaped_slashes_action: REJECT_REQUEST`:
//! - percent-encoded unreserved characters are decoded (`%61` → `a`, `%2E` → `.`); other escapes stay,
//!   with upper-case hex digits;
//! - runs of `/` become one;
//! - `.` and `..` segments are removed (§5.2.4); a `..` that would leave the root is refused, and the
//!   prefixes a `..` walks out of are returned, so the router can refuse a path that leaves the API it
//!   was spelled in (`/pub/../secret/`);
//! - an encoded `/` or `\` (`%2F`, `%5C`) is refused: a backend may decode it into a separator the
//!   gateway never saw;
//! - a malformed escape (`%`, `%4`, `%zz`) is refused.
//!
//! The normalised path is also what the endpoint receives, so the backend cannot read the request
//! differently from the gateway.

use std::borrow::Cow;

/// Why a path is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("malformed percent-encoding in the path")]
    MalformedEscape,
    #[error("encoded '/' or '\\' in the path")]
    EscapedSeparator,
    #[error("the path leaves the root with '..'")]
    AboveRoot,
    #[error("the path leaves its API's context path with '..'")]
    OutOfContextPath,
}

/// What to do with an encoded `/` or `\\` (`%2F`, `%5C`) in a path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EscapedSlashes {
    /// 400: a backend that decodes it would see a separator the gateway never saw.
    #[default]
    Reject,
    /// Forwarded as `%2F` / `%5C`, part of its segment for routing and flows (for backends that keep
    /// it encoded too).
    Keep,
    /// Decoded before routing, so it is a separator for the gateway and the backend alike.
    Unescape,
}

/// How paths are normalised (`--escaped-slashes`, `--merge-slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub escaped_slashes: EscapedSlashes,
    /// `//` becomes `/` (otherwise empty segments are kept, as RFC 3986 does).
    pub merge_slashes: bool,
}

impl Default for PathOptions {
    fn default() -> PathOptions {
        PathOptions { escaped_slashes: EscapedSlashes::Reject, merge_slashes: true }
    }
}

/// The normalised form of `path` (borrowed when it already is normal, the common case).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_tracking(path, PathOptions::default(), &mut Vec::new())
}

/// [`normalize`] with `options`, also pushing onto `exits` each path a `..` stepped out of
/// (`/pub/x/../y` leaves `/pub/x`; `/pub/../y` leaves `/pub`).
fn normalize_tracking<'p>(
    path: &'p str,
    options: PathOptions,
    exits: &mut Vec<String>,
) -> Result<Cow<'p, str>, PathError> {
    if is_normal(path, options.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, options.escaped_slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // Every path here starts with '/': the first split item is empty.
    let mut parts = decoded.split('/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        match segment {
            // Kept inside the path when slashes are not merged; at the end it is the trailing slash.
            "" if !options.merge_slashes && parts.peek().is_some() => {
                segments.push("");
                trailing_slash = false;
            }
            // Merged slashes: an empty segment inside the path adds nothing.
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.is_empty() {
                    return Err(PathError::AboveRoot);
                }
                exits.push(segments.iter().fold(String::new(), |path, segment| path + "/" + segment));
                segments.pop();
                trailing_slash = true;
            }
            other => {
                segments.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Replaces the request's path by its normal form (the query stays as sent); answers the paths a
/// `..` stepped out of (empty, without allocating, for the usual path). `OPTIONS *` is left alone.
pub fn normalize_request<B>(req: &mut http::Request<B>, options: PathOptions) -> Result<Vec<String>, PathError> {
    let mut exits = Vec::new();
    let uri = req.uri();
    if uri.path() == "*" {
        return Ok(exits);
    }
    let Cow::Owned(normal) = normalize_tracking(uri.path(), options, &mut exits)? else {
        return Ok(exits);
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| PathError::MalformedEscape)?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| PathError::MalformedEscape)?;
    Ok(exits)
}

/// True when `path` has nothing to normalise: starts with '/', no escape, no empty, `.` or `..`
/// segment. One pass over the bytes, no allocation.
fn is_normal(path: &str, merge_slashes: bool) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'%' => return false,
            b'/' => {
                let segment = &bytes[segment_start..i];
                if segment == b"." || segment == b".." || (merge_slashes && segment.is_empty()) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    // The last segment may be empty (a trailing slash), but not `.` or `..`.
    let last = &bytes[segment_start..];
    last != b"." && last != b".."
}

/// Decodes escapes of unreserved characters, upper-cases the hex of the others, refuses encoded
/// separators and malformed escapes. A path without '/' at the start gets one (origin form).
fn decode_unreserved(path: &str, escaped_slashes: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 1);
    if bytes.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) else {
            return Err(PathError::MalformedEscape);
        };
        let decoded = hi << 4 | lo;
        match decoded {
            b'/' | b'\\' => match escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSeparator),
                EscapedSlashes::Unescape => out.push(decoded),
                EscapedSlashes::Keep => {
                    out.extend_from_slice(&[b'%', HEX_UPPER[usize::from(hi)], HEX_UPPER[usize::from(lo)]])
                }
            },
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => out.push(c),
            _ => out.extend_from_slice(&[b'%', HEX_UPPER[usize::from(hi)], HEX_UPPER[usize::from(lo)]]),
        }
        i += 3;
    }
    // Only ASCII bytes were replaced by ASCII bytes: the text stays as valid as it came.
    String::from_utf8(out).map_err(|_| PathError::MalformedEscape)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/pub", "/pub/admin/", "/a.b/c..d/.e/f.", "/x/%20y", "/~u/-_."] {
            let out = normalize(path);
            if path.contains('%') {
                assert_eq!(out.unwrap(), path);
            } else {
                assert!(matches!(out, Ok(Cow::Borrowed(p)) if p == path), "{path}");
            }
        }
    }

    #[test]
    fn every_spelling_of_a_path_is_the_same_path() {
        for spelling in [
            "/pub/%61dmin/",
            "/pub/%61%64%6D%69%6e/",
            "/pub/./admin/",
            "/pub/x/../admin/",
            "/pub/x/%2E%2E/admin/",
            "/pub/x/.%2e/admin/",
            "/pub//admin/",
            "//pub///admin//",
            "/pub/admin/.",
            "/pub/admin/x/..",
        ] {
            assert_eq!(n(spelling).as_deref(), Ok("/pub/admin/"), "{spelling}");
        }
        assert_eq!(n("/pub/admin/..").as_deref(), Ok("/pub/"));
        assert_eq!(n("/..%2F").unwrap_err(), PathError::EscapedSeparator);
        assert_eq!(n("/a/b/../../").as_deref(), Ok("/"));
        assert_eq!(n("/%7Euser/%7e").as_deref(), Ok("/~user/~"));
    }

    #[test]
    fn other_escapes_stay_with_upper_case_hex() {
        assert_eq!(n("/a%20b/%c3%a9").as_deref(), Ok("/a%20b/%C3%A9"));
        assert_eq!(n("/q%3Fx%23y").as_deref(), Ok("/q%3Fx%23y"));
    }

    #[test]
    fn separators_in_disguise_and_escapes_out_of_the_root_are_refused() {
        assert_eq!(n("/pub/admin%2F"), Err(PathError::EscapedSeparator));
        assert_eq!(n("/pub/admin%2f"), Err(PathError::EscapedSeparator));
        assert_eq!(n("/pub%5Cadmin"), Err(PathError::EscapedSeparator));
        assert_eq!(n("/pub/../../secret/"), Err(PathError::AboveRoot));
        assert_eq!(n("/../secret/"), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/secret"), Err(PathError::AboveRoot));
        for malformed in ["/a%", "/a%4", "/a%zz", "/a%4g/"] {
            assert_eq!(n(malformed), Err(PathError::MalformedEscape), "{malformed}");
        }
    }

    #[test]
    fn the_request_keeps_its_query_and_authority() {
        let mut req = http::Request::get("http://api.example:8080/pub/x/../%61dmin?api-key=k&a=%2F").body(()).unwrap();
        assert_eq!(normalize_request(&mut req, PathOptions::default()).unwrap(), vec!["/pub/x".to_owned()]);
        assert_eq!(req.uri().to_string(), "http://api.example:8080/pub/admin?api-key=k&a=%2F");
        let mut req = http::Request::get("/pub/admin%2F").body(()).unwrap();
        assert_eq!(normalize_request(&mut req, PathOptions::default()), Err(PathError::EscapedSeparator));
        let mut req = http::Request::get("/a/b/../../c/..").body(()).unwrap();
        assert_eq!(normalize_request(&mut req, PathOptions::default()).unwrap(), vec!["/a/b", "/a", "/c"]);
        assert_eq!(req.uri().path(), "/");
        let mut req = http::Request::options("*").body(()).unwrap();
        assert!(normalize_request(&mut req, PathOptions::default()).unwrap().is_empty());
        assert_eq!(req.uri().path(), "*");
    }

    #[test]
    fn a_path_without_its_leading_slash_gets_one() {
        assert_eq!(n("pub/admin").as_deref(), Ok("/pub/admin"));
        assert_eq!(n("").as_deref(), Ok("/"));
    }

    #[test]
    fn escaped_slashes_and_merging_follow_the_options() {
        let with = |escaped_slashes, merge_slashes, path| {
            normalize_tracking(path, PathOptions { escaped_slashes, merge_slashes }, &mut Vec::new())
                .map(Cow::into_owned)
        };
        use EscapedSlashes::{Keep, Reject, Unescape};
        assert_eq!(with(Reject, true, "/pub/admin%2f"), Err(PathError::EscapedSeparator));
        assert_eq!(with(Keep, true, "/pub/a%2fb/%5c"), Ok("/pub/a%2Fb/%5C".to_owned()));
        assert_eq!(with(Unescape, true, "/pub/x%2F..%2Fadmin"), Ok("/pub/admin".to_owned()));
        assert_eq!(with(Unescape, true, "/pub/a%5Cb"), Ok("/pub/a\\b".to_owned()));
        assert_eq!(with(Reject, false, "/pub//admin//"), Ok("/pub//admin//".to_owned()));
        assert_eq!(with(Reject, false, "/a//../b"), Ok("/a/b".to_owned()));
        assert_eq!(with(Reject, false, "//x/./y"), Ok("//x/y".to_owned()));
        assert_eq!(with(Reject, true, "//x/./y"), Ok("/x/y".to_owned()));
    }
}
