//! Cloud Tokens: the sim is the only party holding the signing key, so it can both mint tokens for tests
//! and verify every Cloud Gate call as strictly as the real service would (signature, expiry, claims).

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Lifetime of a minted token when the request names none: long enough for any test run.
pub const DEFAULT_TTL_SECS: i64 = 3600;

/// Why a bearer token was refused. The messages name the problem and never contain the token itself,
/// because the sim's stderr and answers end up in test logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing Authorization header")]
    MissingHeader,
    #[error("Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token must be signed with ES256")]
    WrongAlgorithm,
    #[error("token signature does not verify with the Cloud Gate key")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` is invalid: {1}")]
    BadClaim(&'static str, &'static str),
}

/// The claims every Cloud Gate call is scoped by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudClaims {
    pub org: String,
    pub envs: Vec<String>,
    pub cpg: String,
}

/// Body of `POST /_sim/tokens`; every field optional so `{}` mints a valid default token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// Claims merged over the defaults (any JSON, so tests can mint wrongly typed claims).
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Claim names dropped after merging, to mint tokens lacking e.g. `cpg`.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Seconds until `exp`; negative mints an already expired token.
    pub ttl_secs: Option<i64>,
}

/// The sim's ES256 (P-256) signing key and its verifier.
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: String,
    /// Account and analytics index ids stay fixed for the sim's life, like one Cloud account's.
    account_id: String,
    analytics_index: String,
}

impl TokenAuthority {
    /// Generates a fresh key: nothing signed by an earlier sim run is accepted by this one.
    pub fn generate() -> anyhow::Result<Self> {
        // jsonwebtoken picks its provider from crate features and panics when a workspace build
        // unifies both (another crate enabling `aws_lc_rs`); choosing one explicitly avoids that.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let public_pem = key.public_key_pem();
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
            public_pem,
            account_id: uuid::Uuid::new_v4().to_string(),
            analytics_index: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// SPKI PEM of the verification key, written to `token-key.pem` for `--cloud-token-key`.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// The claims a default token carries at `now` (seconds since the epoch).
    pub fn default_claims(&self, now: i64, ttl_secs: i64) -> Map<String, Value> {
        let claims = json!({
            "org": "DEFAULT",
            "envs": ["DEFAULT"],
            "cpg": "eu",
            "aid": self.account_id,
            "aix": self.analytics_index,
            "iat": now,
            "exp": now.saturating_add(ttl_secs),
        });
        match claims {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// Signs the default claims with the request's overrides and removals applied.
    pub fn mint(&self, req: &MintRequest, now: i64) -> anyhow::Result<String> {
        let mut claims = self.default_claims(now, req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS));
        for (name, value) in &req.claims {
            claims.insert(name.clone(), value.clone());
        }
        for name in &req.remove {
            claims.remove(name);
        }
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)?)
    }

    /// Checks an `Authorization` header value the way the Cloud Gate must: bearer scheme, ES256
    /// signature by this key, `exp` present and in the future (no leeway: tests mint expired tokens
    /// with small negative TTLs), `nbf` honoured, and the scoping claims well-typed.
    pub fn verify_header(&self, header: Option<&str>) -> Result<CloudClaims, TokenError> {
        let header = header.ok_or(TokenError::MissingHeader)?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(TokenError::NotBearer),
        };
        if token.is_empty() {
            return Err(TokenError::NotBearer);
        }
        self.verify(token)
    }

    /// Verifies a bare token; see [`TokenAuthority::verify_header`].
    pub fn verify(&self, token: &str) -> Result<CloudClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim("exp"),
                    ErrorKind::InvalidClaimFormat(_) => TokenError::BadClaim("exp", "not a number"),
                    _ => TokenError::Malformed,
                }
            })?;
        claims_from(&data.claims)
    }
}

/// Extracts the scoping claims, insisting on their types: a real server cannot scope a call by an
/// `envs` that is a string or empty.
fn claims_from(claims: &Map<String, Value>) -> Result<CloudClaims, TokenError> {
    let string_claim = |name: &'static str| match claims.get(name) {
        None | Some(Value::Null) => Err(TokenError::MissingClaim(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(TokenError::BadClaim(name, "empty string")),
        Some(_) => Err(TokenError::BadClaim(name, "not a string")),
    };
    let org = string_claim("org")?;
    let cpg = string_claim("cpg")?;
    let envs = match claims.get("envs") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("envs")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(TokenError::BadClaim("envs", "empty array"));
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(TokenError::BadClaim("envs", "not an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(TokenError::BadClaim("envs", "not an array of strings")),
    };
    Ok(CloudClaims { org, envs, cpg })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn mint(authority: &TokenAuthority, body: Value) -> String {
        let req: MintRequest = serde_json::from_value(body).unwrap();
        authority.mint(&req, now()).unwrap()
    }

    #[test]
    fn default_token_verifies() {
        let a = TokenAuthority::generate().unwrap();
        let token = mint(&a, json!({}));
        let claims = a.verify_header(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(claims, CloudClaims { org: "DEFAULT".into(), envs: vec!["DEFAULT".into()], cpg: "eu".into() });
    }

    #[test]
    fn overrides_apply() {
        let a = TokenAuthority::generate().unwrap();
        let token = mint(&a, json!({"claims": {"envs": ["a", "b"], "cpg": "us"}}));
        let claims = a.verify(&token).unwrap();
        assert_eq!(claims.envs, vec!["a", "b"]);
        assert_eq!(claims.cpg, "us");
    }

    #[test]
    fn header_shape_is_checked() {
        let a = TokenAuthority::generate().unwrap();
        assert_eq!(a.verify_header(None), Err(TokenError::MissingHeader));
        assert_eq!(a.verify_header(Some("Basic abc")), Err(TokenError::NotBearer));
        assert_eq!(a.verify_header(Some("Bearer ")), Err(TokenError::NotBearer));
        assert_eq!(a.verify_header(Some("Bearer not.a.jwt")), Err(TokenError::Malformed));
    }

    #[test]
    fn expired_token_is_refused() {
        let a = TokenAuthority::generate().unwrap();
        let token = mint(&a, json!({"ttl_secs": -1}));
        assert_eq!(a.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn token_from_another_key_is_refused() {
        let a = TokenAuthority::generate().unwrap();
        let b = TokenAuthority::generate().unwrap();
        let token = mint(&b, json!({}));
        assert_eq!(a.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn hs256_token_is_refused() {
        let a = TokenAuthority::generate().unwrap();
        let claims = a.default_claims(now(), 60);
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"guess")).unwrap();
        assert_eq!(a.verify(&token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn scoping_claims_are_required_and_typed() {
        let a = TokenAuthority::generate().unwrap();
        let cases = [
            (json!({"remove": ["cpg"]}), TokenError::MissingClaim("cpg")),
            (json!({"remove": ["org"]}), TokenError::MissingClaim("org")),
            (json!({"remove": ["envs"]}), TokenError::MissingClaim("envs")),
            (json!({"remove": ["exp"]}), TokenError::MissingClaim("exp")),
            (json!({"claims": {"envs": []}}), TokenError::BadClaim("envs", "empty array")),
            (json!({"claims": {"envs": "DEFAULT"}}), TokenError::BadClaim("envs", "not an array of strings")),
            (json!({"claims": {"org": 3}}), TokenError::BadClaim("org", "not a string")),
        ];
        for (body, want) in cases {
            let token = mint(&a, body.clone());
            assert_eq!(a.verify(&token), Err(want), "{body}");
        }
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let a = TokenAuthority::generate().unwrap();
        let token = mint(&a, json!({"ttl_secs": -5}));
        let err = a.verify(&token).unwrap_err().to_string();
        assert!(!err.contains(&token));
    }
}
