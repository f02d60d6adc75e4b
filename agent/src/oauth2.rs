//! OAuth2 token introspection (RFC 7662) for `oauth2` plans, as Gravitee's generic OAuth2 resource
//! does it: the agent calls the authorization server with the resource's client credentials, so the
//! client secret never leaves the agent and dataplanes never reach the identity provider.
//!
//! Active answers are cached (bounded, keyed by a hash of the token and the resource, for at most
//! [`MAX_TTL`] and never past the token's `exp`), so a busy API costs the server one call per token
//! per TTL. Inactive answers and failures are not cached: a token just issued, or a server back up,
//! is seen at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hgw_proto::v1 as pb;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest time an active answer is reused (a revoked token passes for at most this long).
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// Cached tokens at most; past this, expired entries are dropped, then new answers are not cached.
const MAX_ENTRIES: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole call, answer included: the dataplane waits a little longer for the agent.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// An introspection answer is a small JSON object; larger ones are refused.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What the authorization server said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Active(ActiveToken),
    Inactive,
    /// Unreachable, another status than 200, or not JSON (Gravitee: `OAUTH2_SERVER_UNAVAILABLE`).
    Unavailable(String),
}

/// What dataplanes need of an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveToken {
    pub payload: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user: String,
    /// `exp` (seconds since the epoch), when the answer has one.
    pub exp: Option<i64>,
}

impl From<Verdict> for pb::IntrospectResponse {
    fn from(verdict: Verdict) -> pb::IntrospectResponse {
        match verdict {
            Verdict::Active(t) => pb::IntrospectResponse {
                outcome: pb::IntrospectOutcome::Active as i32,
                payload: t.payload,
                client_id: t.client_id,
                scopes: t.scopes,
                user: t.user,
            },
            Verdict::Inactive => {
                pb::IntrospectResponse { outcome: pb::IntrospectOutcome::Inactive as i32, ..Default::default() }
            }
            Verdict::Unavailable(_) => {
                pb::IntrospectResponse { outcome: pb::IntrospectOutcome::Unavailable as i32, ..Default::default() }
            }
        }
    }
}

struct Cached {
    token: ActiveToken,
    until: Instant,
}

pub struct Introspector {
    /// Verifies the server's certificate (the default).
    verified: reqwest::Client,
    /// For resources with `ssl.trustAll: true`.
    trust_all: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl Introspector {
    pub fn new() -> Result<Introspector, String> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("hgw-agent/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Introspector {
            verified: builder().build().map_err(|e| e.to_string())?,
            trust_all: builder().danger_accept_invalid_certs(true).build().map_err(|e| e.to_string())?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Introspects `token` with `resource`, from the cache when an active answer is still fresh.
    pub async fn introspect(&self, resource: &pb::OAuth2Introspection, token: &str) -> Verdict {
        let key = cache_key(resource, token);
        let now = Instant::now();
        if let Some(cached) = self.lock().get(&key).filter(|c| c.until > now) {
            return Verdict::Active(cached.token.clone());
        }
        let verdict = self.call(resource, token).await;
        if let Verdict::Active(active) = &verdict {
            self.remember(key, active);
        }
        verdict
    }

    fn remember(&self, key: [u8; 32], token: &ActiveToken) {
        let now = Instant::now();
        let ttl = match token.exp {
            Some(exp) => {
                let left = exp.saturating_sub(unix_now());
                if left <= 0 {
                    return;
                }
                MAX_TTL.min(Duration::from_secs(left as u64))
            }
            None => MAX_TTL,
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_ENTRIES {
                return;
            }
        }
        cache.insert(key, Cached { token: token.clone(), until: now + ttl });
    }

    async fn call(&self, resource: &pb::OAuth2Introspection, token: &str) -> Verdict {
        let client = if resource.trust_all { &self.trust_all } else { &self.verified };
        let method =
            if resource.method.eq_ignore_ascii_case("POST") { reqwest::Method::POST } else { reqwest::Method::GET };
        let is_post = method == reqwest::Method::POST;
        let mut request = client.request(method, &resource.url).header(reqwest::header::ACCEPT, "application/json");
        if !resource.token_query_param.is_empty() {
            request = request.query(&[(resource.token_query_param.as_str(), token)]);
        }
        if resource.use_client_authorization_header {
            let credentials = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", resource.client_id, resource.client_secret));
            request = request.header(
                resource.client_authorization_header_name.as_str(),
                format!("{} {credentials}", resource.client_authorization_header_scheme.trim()),
            );
        }
        if !resource.token_header.is_empty() {
            request = request.header(resource.token_header.as_str(), token);
        }
        if is_post && !resource.token_form_param.is_empty() {
            request = request.form(&[(resource.token_form_param.as_str(), token)]);
        }
        // Errors never carry the URL: it may hold the token (query parameter).
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return unavailable(resource, format!("call failed: {}", e.without_url())),
        };
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return unavailable(resource, format!("answer over {MAX_ANSWER_BYTES} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return unavailable(resource, format!("reading the answer failed: {}", e.without_url())),
            }
        }
        if status != reqwest::StatusCode::OK {
            return unavailable(resource, format!("the server answered {status}"));
        }
        match read_answer(&body, &resource.scope_separator, &resource.user_claim) {
            Ok(verdict) => verdict,
            Err(why) => unavailable(resource, why),
        }
    }
}

fn unavailable(resource: &pb::OAuth2Introspection, why: String) -> Verdict {
    tracing::warn!(resource = %resource.resource, url = %strip_query(&resource.url), %why, "OAuth2 introspection failed");
    Verdict::Unavailable(why)
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The cache key: the token with everything that decides the answer (endpoint and client), hashed so
/// that the cache holds no token in clear.
fn cache_key(resource: &pb::OAuth2Introspection, token: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in
        [&resource.url, &resource.client_id, &resource.client_secret, &resource.scope_separator, &resource.user_claim]
    {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(token.as_bytes());
    hash.finalize().into()
}

/// Reads a 200 answer as Gravitee's generic resource and policy do: JSON or unavailable; `active`
/// absent means active; the client id is `client_id`, else `aud` (its first entry); scopes from
/// `scope` (split on the separator) or `scp`; the user from the user claim.
pub fn read_answer(body: &[u8], separator: &str, user_claim: &str) -> Result<Verdict, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let active = match value.get("active") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        Some(_) => false,
    };
    if !active {
        return Ok(Verdict::Inactive);
    }
    let text = |v: Option<&Value>| -> String {
        match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => String::new(),
        }
    };
    let mut client_id = text(value.get("client_id"));
    if client_id.is_empty() {
        client_id = match value.get("aud") {
            Some(Value::Array(items)) => text(items.first()),
            other => text(other),
        };
    }
    let scopes_node = value.get("scope").or_else(|| value.get("scp"));
    let separator = if separator.is_empty() { " " } else { separator };
    let scopes = match scopes_node {
        Some(Value::Array(items)) => items.iter().map(|v| text(Some(v))).collect(),
        Some(other) => text(Some(other)).split(separator).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let claim = if user_claim.is_empty() { "sub" } else { user_claim };
    let exp = value.get("exp").and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)));
    Ok(Verdict::Active(ActiveToken {
        payload: String::from_utf8_lossy(body).into_owned(),
        client_id: client_id.trim().to_owned(),
        scopes,
        user: text(value.get(claim)),
        exp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(body: &str) -> ActiveToken {
        match read_answer(body.as_bytes(), " ", "sub").expect("JSON") {
            Verdict::Active(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_read_as_gravitee() {
        let t = active(r#"{"active":true,"client_id":"app-a","scope":"read write","sub":"u1","exp":2000000000}"#);
        assert_eq!((t.client_id.as_str(), t.user.as_str(), t.exp), ("app-a", "u1", Some(2_000_000_000)));
        assert_eq!(t.scopes, ["read", "write"]);
        // No `active`: active; client id from `aud`; `scp` as an array.
        let t = active(r#"{"aud":["api","other"],"scp":["a","b"]}"#);
        assert_eq!((t.client_id.as_str(), t.scopes.clone()), ("api", vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(read_answer(br#"{"active":false}"#, " ", "sub"), Ok(Verdict::Inactive));
        assert!(read_answer(b"<html>", " ", "sub").is_err(), "not JSON is a server failure");
        let comma = read_answer(br#"{"scope":"a,b","client_id":"c"}"#, ",", "sub").unwrap();
        assert!(matches!(comma, Verdict::Active(t) if t.scopes == ["a", "b"]));
    }

    #[test]
    fn the_cache_never_outlives_exp_and_is_bounded() {
        let introspector = Introspector::new().unwrap();
        let resource = pb::OAuth2Introspection { url: "http://127.0.0.1:9/x".into(), ..Default::default() };
        let expired = ActiveToken {
            payload: "{}".into(),
            client_id: "c".into(),
            scopes: vec![],
            user: String::new(),
            exp: Some(1),
        };
        introspector.remember(cache_key(&resource, "t1"), &expired);
        assert!(introspector.lock().is_empty(), "an expired token is not cached");
        let soon = ActiveToken { exp: Some(unix_now() + 2), ..expired.clone() };
        introspector.remember(cache_key(&resource, "t2"), &soon);
        let until = introspector.lock().values().next().map(|c| c.until).unwrap();
        assert!(until <= Instant::now() + Duration::from_secs(2));
        assert_ne!(cache_key(&resource, "t1"), cache_key(&resource, "t2"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        let introspector = Introspector::new().unwrap();
        // Port 9 (discard) on loopback: nothing listens.
        let resource = pb::OAuth2Introspection {
            resource: "as".into(),
            url: "http://127.0.0.1:9/introspect".into(),
            method: "GET".into(),
            token_query_param: "token".into(),
            ..Default::default()
        };
        assert!(matches!(introspector.introspect(&resource, "tok").await, Verdict::Unavailable(_)));
    }
}
