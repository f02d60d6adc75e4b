//! The Cloud Token: a JWT from Gravitee Cloud whose claims name the organization (`org`), the
//! environments (`envs`) and the control-plane geography (`cpg`, which picks the Cloud Gate).
//!
//! Gravitee's public tools decode it without verifying the signature (they hold no key); hgw does the same
//! by default and verifies the signature when the user gives a key. Every error names the claim and the
//! problem; none prints the token.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Map, Value};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cloud token is empty")]
    Empty,
    #[error("cloud token is not a JWT: expected 3 dot-separated parts, found {0}")]
    Parts(usize),
    #[error("cloud token header is not base64url-encoded JSON")]
    Header,
    #[error("cloud token payload is not base64url-encoded ({0})")]
    PayloadEncoding(String),
    #[error("cloud token payload is not a JSON object ({0})")]
    PayloadJson(String),
    #[error("cloud token claim `{0}` is missing")]
    Missing(&'static str),
    #[error("cloud token claim `{claim}` {problem}")]
    Invalid { claim: &'static str, problem: String },
    #[error("cloud token expired at {at} (claim `exp` = {exp})")]
    Expired { exp: i64, at: String },
    #[error("cloud token is not valid before {at} (claim `nbf` = {nbf})")]
    NotYetValid { nbf: i64, at: String },
    #[error("cloud token signature does not verify: {0}")]
    Signature(String),
    #[error("--cloud-token-key {path}: {problem}")]
    Key { path: String, problem: String },
}

/// The claims hgw reads from the Cloud Token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// Organization id (`org`).
    pub org: String,
    /// Environment ids (`envs`), never empty.
    pub envs: Vec<String>,
    /// Control-plane geography (`cpg`): `eu`, `us`, ...
    pub cpg: String,
    /// Expiry (`exp`), epoch seconds.
    pub exp: Option<i64>,
    /// Not-before (`nbf`), epoch seconds.
    pub nbf: Option<i64>,
}

impl TokenClaims {
    /// `https://{cpg}.cloudgate.gravitee.io`, Gravitee's regional Cloud Gate.
    pub fn default_gate_url(&self) -> String {
        format!("https://{}.cloudgate.gravitee.io", self.cpg)
    }
}

/// A decoded (and, when a key was given, verified) Cloud Token.
#[derive(Debug, Clone)]
pub struct CloudToken {
    raw: Secret,
    pub claims: TokenClaims,
    pub verified: bool,
}

/// A key to verify the token's signature.
pub enum TokenKey {
    Pem(Vec<u8>),
    Jwks(JwkSet),
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKey::Pem(_) => f.write_str("TokenKey::Pem"),
            TokenKey::Jwks(set) => write!(f, "TokenKey::Jwks({} keys)", set.keys.len()),
        }
    }
}

impl TokenKey {
    /// Loads a PEM public key or a JWKS document.
    pub fn load(path: &Path) -> Result<TokenKey, TokenError> {
        let err = |problem: String| TokenError::Key { path: path.display().to_string(), problem };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        if text.trim_start().starts_with('{') {
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| err(format!("not a JWKS document: {e}")))?;
            if set.keys.is_empty() {
                return Err(err("the JWKS has no keys".into()));
            }
            Ok(TokenKey::Jwks(set))
        } else if text.contains("-----BEGIN") {
            Ok(TokenKey::Pem(bytes))
        } else {
            Err(err("neither a PEM public key nor a JWKS document".into()))
        }
    }
}

impl CloudToken {
    /// Decodes and checks the token at time `now` (epoch seconds).
    pub fn parse(text: &str, key: Option<&TokenKey>, now: i64) -> Result<CloudToken, TokenError> {
        let text = text.trim();
        let text = text.strip_prefix("Bearer ").unwrap_or(text).trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 3 {
            return Err(TokenError::Parts(parts.len()));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.decode(parts[0].trim_end_matches('=')).map_err(|_| TokenError::Header)?;
        serde_json::from_slice::<Map<String, Value>>(&header).map_err(|_| TokenError::Header)?;
        let payload =
            b64.decode(parts[1].trim_end_matches('=')).map_err(|e| TokenError::PayloadEncoding(e.to_string()))?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|e| TokenError::PayloadJson(e.to_string()))?;
        let claims = read_claims(&claims)?;

        if let Some(exp) = claims.exp
            && exp <= now
        {
            return Err(TokenError::Expired { exp, at: format_epoch(exp) });
        }
        if let Some(nbf) = claims.nbf
            && nbf > now
        {
            return Err(TokenError::NotYetValid { nbf, at: format_epoch(nbf) });
        }
        if let Some(key) = key {
            verify_signature(text, key)?;
        }
        Ok(CloudToken { raw: Secret::new(text), claims, verified: key.is_some() })
    }

    /// The token for the `Authorization: Bearer` header. Never log it.
    pub fn bearer(&self) -> &Secret {
        &self.raw
    }
}

fn read_claims(claims: &Map<String, Value>) -> Result<TokenClaims, TokenError> {
    let string = |name: &'static str| -> Result<String, TokenError> {
        match claims.get(name) {
            None | Some(Value::Null) => Err(TokenError::Missing(name)),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(TokenError::Invalid { claim: name, problem: "is empty".into() })
            }
            Some(Value::String(s)) => Ok(s.trim().to_owned()),
            Some(other) => {
                Err(TokenError::Invalid { claim: name, problem: format!("must be a string, found {}", kind(other)) })
            }
        }
    };
    let epoch = |name: &'static str| -> Result<Option<i64>, TokenError> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or(TokenError::Invalid { claim: name, problem: "is not an epoch-seconds number".into() }),
            Some(other) => {
                Err(TokenError::Invalid { claim: name, problem: format!("must be a number, found {}", kind(other)) })
            }
        }
    };
    let org = string("org")?;
    let cpg = string("cpg")?.to_ascii_lowercase();
    if !cpg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(TokenError::Invalid {
            claim: "cpg",
            problem: format!("`{cpg}` is not a region name like `eu` or `us`"),
        });
    }
    let envs = match claims.get("envs") {
        None | Some(Value::Null) => return Err(TokenError::Missing("envs")),
        Some(Value::Array(items)) => {
            let mut envs = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) if !s.trim().is_empty() => envs.push(s.trim().to_owned()),
                    other => {
                        return Err(TokenError::Invalid {
                            claim: "envs",
                            problem: format!("must hold environment ids (strings), found {}", kind(other)),
                        });
                    }
                }
            }
            if envs.is_empty() {
                return Err(TokenError::Invalid {
                    claim: "envs",
                    problem: "is empty (it must name at least one environment)".into(),
                });
            }
            envs
        }
        Some(other) => {
            return Err(TokenError::Invalid {
                claim: "envs",
                problem: format!("must be an array, found {}", kind(other)),
            });
        }
    };
    Ok(TokenClaims { org, envs, cpg, exp: epoch("exp")?, nbf: epoch("nbf")? })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn verify_signature(token: &str, key: &TokenKey) -> Result<(), TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Signature(e.to_string()))?;
    let alg = header.alg;
    let decoding_key = match key {
        TokenKey::Pem(pem) => pem_key(pem, alg)?,
        TokenKey::Jwks(set) => {
            let jwk = match &header.kid {
                Some(kid) => set
                    .find(kid)
                    .ok_or_else(|| TokenError::Signature(format!("no key with kid `{kid}` in the JWKS")))?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => {
                    return Err(TokenError::Signature("the token has no `kid` and the JWKS holds several keys".into()));
                }
            };
            DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Signature(e.to_string()))?
        }
    };
    let mut validation = Validation::new(alg);
    // Time claims were checked above with precise messages; the audience is not ours to check.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &decoding_key, &validation)
        .map(|_| ())
        .map_err(|e| TokenError::Signature(e.to_string()))
}

fn pem_key(pem: &[u8], alg: Algorithm) -> Result<DecodingKey, TokenError> {
    use Algorithm::*;
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => {
            return Err(TokenError::Signature(format!(
                "the token uses {alg:?} (a shared secret), which a public key cannot verify"
            )));
        }
    };
    key.map_err(|e| TokenError::Signature(format!("the key does not fit a {alg:?} token: {e}")))
}

/// Formats epoch seconds as RFC 3339 (UTC) for messages.
pub fn format_epoch(secs: i64) -> String {
    if secs < 0 {
        return secs.to_string();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned-looking JWT with the given claims (signature bytes are not checked without a key).
    pub fn jwt(claims: &Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.{}",
            b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64.encode(serde_json::to_vec(claims).unwrap()),
            b64.encode(b"sig")
        )
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn good_token_gives_claims_and_gate_url() {
        let token = CloudToken::parse(
            &jwt(&serde_json::json!({"org":"o1","envs":["e1","e2"],"cpg":"EU","exp":NOW+60})),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(token.claims.envs, vec!["e1", "e2"]);
        assert_eq!(token.claims.default_gate_url(), "https://eu.cloudgate.gravitee.io");
        assert!(!format!("{token:?}").contains(&jwt(&serde_json::json!({}))[..10]));
    }

    #[test]
    fn each_problem_names_the_claim() {
        let cases = [
            (serde_json::json!({"envs":["e"],"cpg":"eu"}), "cloud token claim `org` is missing"),
            (serde_json::json!({"org":"o","cpg":"eu"}), "cloud token claim `envs` is missing"),
            (serde_json::json!({"org":"o","envs":[],"cpg":"eu"}), "cloud token claim `envs` is empty"),
            (
                serde_json::json!({"org":"o","envs":"e","cpg":"eu"}),
                "cloud token claim `envs` must be an array, found a string",
            ),
            (serde_json::json!({"org":"o","envs":["e"]}), "cloud token claim `cpg` is missing"),
            (serde_json::json!({"org":"o","envs":["e"],"cpg":"e u"}), "cloud token claim `cpg` `e u` is not a region"),
            (serde_json::json!({"org":"o","envs":["e"],"cpg":"eu","exp":NOW-1}), "cloud token expired at"),
            (serde_json::json!({"org":"o","envs":["e"],"cpg":"eu","nbf":NOW+100}), "cloud token is not valid before"),
            (
                serde_json::json!({"org":"o","envs":["e"],"cpg":"eu","exp":"soon"}),
                "cloud token claim `exp` must be a number",
            ),
        ];
        for (claims, expected) in cases {
            let err = CloudToken::parse(&jwt(&claims), None, NOW).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{claims}: {err}");
        }
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(CloudToken::parse("", None, NOW).unwrap_err().to_string(), "cloud token is empty");
        assert_eq!(
            CloudToken::parse("abc", None, NOW).unwrap_err().to_string(),
            "cloud token is not a JWT: expected 3 dot-separated parts, found 1"
        );
        assert!(matches!(CloudToken::parse("a.b.c", None, NOW), Err(TokenError::Header)));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none"}"#);
        assert!(matches!(CloudToken::parse(&format!("{header}.!!.x"), None, NOW), Err(TokenError::PayloadEncoding(_))));
        let not_json = b64.encode(b"[1,2]");
        assert!(matches!(
            CloudToken::parse(&format!("{header}.{not_json}.x"), None, NOW),
            Err(TokenError::PayloadJson(_))
        ));
    }

    #[test]
    fn signature_is_checked_when_a_key_is_given() {
        let secret_token = jwt(&serde_json::json!({"org":"o","envs":["e"],"cpg":"eu"}));
        let key = TokenKey::Pem(b"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n".to_vec());
        let err = CloudToken::parse(&secret_token, Some(&key), NOW).unwrap_err();
        assert!(err.to_string().starts_with("cloud token signature does not verify"), "{err}");
    }
}
