//! Keeping secrets where they belong: credentials in an endpoint target's userinfo become the request's
//! Basic credentials and leave the URL (so no analytics record, log, `/config` view or error message
//! carries them), and API keys given in the query string are masked in analytics and log records.

use std::borrow::Cow;

use base64::Engine;
use http::HeaderName;

/// What replaces a secret value in analytics, logs and messages.
pub const MASK: &str = "*****";

/// A URL split around its userinfo (`scheme://USERINFO@host...`): the URL without it, and the userinfo.
/// Lexical, so it also works on URLs that do not parse (for error messages).
pub fn split_userinfo(url: &str) -> (Cow<'_, str>, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (Cow::Borrowed(url), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let without = format!("{}{}", &url[..scheme_end], &rest[at + 1..]);
            (Cow::Owned(without), Some(&rest[..at]))
        }
        None => (Cow::Borrowed(url), None),
    }
}

/// `url` with any userinfo replaced by [`MASK`], for messages that must show which URL is meant.
pub fn redact_userinfo(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    match split_userinfo(url) {
        (_, None) => Cow::Borrowed(url),
        (without, Some(_)) => Cow::Owned(format!("{}{MASK}@{}", &url[..scheme_end], &without[scheme_end..])),
    }
}

/// The `Authorization` value for userinfo `user[:password]` (percent-decoded, as RFC 3986 encodes it):
/// `Basic base64(user:password)`, what curl and browsers send for such a URL.
pub fn basic_authorization(userinfo: &str) -> String {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut credentials = percent_decode(user);
    credentials.push(b':');
    credentials.extend(percent_decode(password));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `path?query` with the values of the parameters named in `names` (compared percent-decoded, like
/// the API-key plan reads them) replaced by [`MASK`]. Borrowed, and free, when there is nothing to mask.
pub fn mask_query<'a>(path_and_query: &'a str, names: &[String]) -> Cow<'a, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let secret = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = String::from_utf8_lossy(&percent_decode(&name.replace('+', " "))).into_owned();
        names.contains(&name)
    };
    if !query.split('&').any(|pair| pair.contains('=') && secret(pair)) {
        return Cow::Borrowed(path_and_query);
    }
    let masked: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => Cow::Owned(format!("{name}={MASK}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", masked.join("&")))
}

/// The headers and query parameters that carry an API's keys (masked in analytics and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyLocations {
    pub headers: Vec<HeaderName>,
    pub query_params: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_split_off() {
        assert_eq!(split_userinfo("http://u:pw@h:1/p?q"), (Cow::Borrowed("http://h:1/p?q"), Some("u:pw")));
        assert_eq!(split_userinfo("http://h/p@x"), (Cow::Borrowed("http://h/p@x"), None));
        assert_eq!(split_userinfo("https://a@b@h"), (Cow::Borrowed("https://h"), Some("a@b")));
        assert_eq!(split_userinfo("not a url"), (Cow::Borrowed("not a url"), None));
        assert_eq!(redact_userinfo("http://u:pw@h/p"), "http://*****@h/p");
        assert_eq!(redact_userinfo("http://h/p"), "http://h/p");
    }

    #[test]
    fn userinfo_becomes_basic_credentials() {
        assert_eq!(basic_authorization("u:pw"), "Basic dTpwdw==");
        // Percent-encoded characters are decoded first: `p@ss:w` is the password here.
        assert_eq!(basic_authorization("u:p%40ss%3Aw"), format!("Basic {}", base64_of("u:p@ss:w")));
        assert_eq!(basic_authorization("u"), format!("Basic {}", base64_of("u:")));
    }

    fn base64_of(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn api_key_values_are_masked_in_the_query() {
        let names = vec!["api-key".to_owned()];
        assert_eq!(mask_query("/p?a=1&api-key=SECRET&b=2", &names), "/p?a=1&api-key=*****&b=2");
        assert_eq!(mask_query("/p?api%2Dkey=SECRET", &names), "/p?api%2Dkey=*****");
        assert!(matches!(mask_query("/p?a=1", &names), Cow::Borrowed("/p?a=1")));
        assert!(matches!(mask_query("/p", &names), Cow::Borrowed("/p")));
        // A name alone carries no value to hide.
        assert_eq!(mask_query("/p?api-key", &names), "/p?api-key");
    }
}
