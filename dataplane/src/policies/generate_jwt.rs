//! `policy-generate-jwt` (gravitee-policy-generate-jwt 1.8): signs a JWT and puts it in the context
//! attribute `jwt.generated`, where a later step (typically transform-headers with
//! `{#context.attributes['jwt.generated']}`) picks it up.
//!
//! As Gravitee's policy: the header is `alg` and `kid` (no `typ`, no `x5c` for inline keys); claims
//! are `iat`, `jti` (the rendered `id`, or a random UUID when that is empty), `aud` (a string for one
//! audience, an array for several), `sub` and `iss` when not empty, `exp` when the lifetime is
//! positive, then the custom claims, whose value keeps its type when the template is one expression
//! (a header list stays an array). A template that fails to evaluate fails the request with 500
//! `Unable to generate JWT token: ...`, Gravitee's answer for any exception in the policy.
//!
//! The key was checked by the agent; it is checked again here by signing once, so a dataplane never
//! holds an API whose every request would fail on its key.

use std::time::{SystemTime, UNIX_EPOCH};

use hgw_proto::v1 as pb;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value as Json};

use super::el::ElContext;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, invalid};

/// The context attribute Gravitee's policy sets.
pub const GENERATED_ATTRIBUTE: &str = "jwt.generated";

pub struct GenerateJwt {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    audiences: Vec<hgw_el::Template>,
    expires_in_seconds: u64,
    id: hgw_el::Template,
    issuer: hgw_el::Template,
    subject: hgw_el::Template,
    custom_claims: Vec<(String, hgw_el::Template)>,
}

/// Key material stays out of debug output.
impl std::fmt::Debug for GenerateJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateJwt")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("expires_in_seconds", &self.expires_in_seconds)
            .finish_non_exhaustive()
    }
}

pub use hgw_proto::signing::signing_key;

impl GenerateJwt {
    pub fn compile(config: pb::GenerateJwtPolicy) -> Result<GenerateJwt, PolicyError> {
        const AT: &str = "policy-generate-jwt";
        let (algorithm, key) =
            signing_key(&config.algorithm, &config.key).map_err(|reason| invalid(format!("{AT}.content"), reason))?;
        let template =
            |field: String, text: &str| hgw_el::parse_template(text).map_err(|e| invalid(field, format!("EL {e}")));
        let audiences = config
            .audiences
            .iter()
            .enumerate()
            .map(|(i, a)| template(format!("{AT}.audiences[{i}]"), a))
            .collect::<Result<_, _>>()?;
        let custom_claims = config
            .custom_claims
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((c.name.clone(), template(format!("{AT}.customClaims[{i}].value"), &c.value)?)))
            .collect::<Result<_, PolicyError>>()?;
        Ok(GenerateJwt {
            algorithm,
            key,
            kid: (!config.kid.is_empty()).then_some(config.kid),
            audiences,
            expires_in_seconds: config.expires_in_seconds,
            id: template(format!("{AT}.id"), &config.id)?,
            issuer: template(format!("{AT}.issuer"), &config.issuer)?,
            subject: template(format!("{AT}.subject"), &config.subject)?,
            custom_claims,
        })
    }

    /// The claims set, in Gravitee's order.
    fn claims(&self, el: &ElContext<'_>, now_seconds: u64) -> Result<Map<String, Json>, hgw_el::EvalError> {
        let text = |t: &hgw_el::Template| t.render_nullable(el).map(Option::unwrap_or_default);
        let mut claims = Map::new();
        claims.insert("iat".into(), now_seconds.into());
        let jti = text(&self.id)?;
        let jti = if jti.is_empty() { uuid::Uuid::new_v4().to_string() } else { jti };
        claims.insert("jti".into(), jti.into());
        match self.audiences.as_slice() {
            [] => {}
            // One audience is a string claim; an empty (or null) one leaves `aud` out, as Nimbus does.
            [one] => {
                if let Some(aud) = one.render_nullable(el)? {
                    claims.insert("aud".into(), aud.into());
                }
            }
            many => {
                let list = many
                    .iter()
                    .map(|t| t.render_nullable(el).map(|a| a.map_or(Json::Null, Json::String)))
                    .collect::<Result<Vec<_>, _>>()?;
                claims.insert("aud".into(), Json::Array(list));
            }
        }
        let subject = text(&self.subject)?;
        if !subject.is_empty() {
            claims.insert("sub".into(), subject.into());
        }
        let issuer = text(&self.issuer)?;
        if !issuer.is_empty() {
            claims.insert("iss".into(), issuer.into());
        }
        if self.expires_in_seconds > 0 {
            claims.insert("exp".into(), now_seconds.saturating_add(self.expires_in_seconds).into());
        }
        for (name, value) in &self.custom_claims {
            match typed(value, el)? {
                // Nimbus leaves null claims out of the token.
                Json::Null => {
                    claims.remove(name);
                }
                value => {
                    claims.insert(name.clone(), value);
                }
            }
        }
        Ok(claims)
    }
}

/// A custom claim's value as Gravitee's template engine gives it as an `Object`: a template that is
/// exactly one expression keeps the expression's type; text (with or without expressions) is a string.
fn typed(template: &hgw_el::Template, el: &ElContext<'_>) -> Result<Json, hgw_el::EvalError> {
    let mut expressions = template.expressions();
    if let (Some(only), None) = (expressions.next(), expressions.next())
        && only.source() == template.source()
    {
        return Ok(match only.eval(el)? {
            hgw_el::Value::Null => Json::Null,
            hgw_el::Value::Bool(b) => Json::Bool(b),
            hgw_el::Value::Int(i) => Json::from(i),
            hgw_el::Value::Str(s) => Json::String(s.into_owned()),
            hgw_el::Value::List(items) => Json::Array(items.into_iter().map(|s| Json::String(s.to_owned())).collect()),
        });
    }
    if template.source().is_empty() {
        // Gravitee's policy passes an empty value through untouched (then Nimbus keeps "").
        return Ok(Json::String(String::new()));
    }
    template.render(el).map(Json::String)
}

impl Policy for GenerateJwt {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let signed = self.claims(&exchange.el(), now).map_err(|e| e.to_string()).and_then(|claims| {
            let mut header = Header::new(self.algorithm);
            // Nimbus' JWSHeader carries no `typ` unless asked.
            header.typ = None;
            header.kid = self.kid.clone();
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
        });
        match signed {
            Ok(token) => {
                match exchange.attributes.iter_mut().find(|(n, _)| n == GENERATED_ATTRIBUTE) {
                    Some(existing) => existing.1 = token,
                    None => exchange.attributes.push((GENERATED_ATTRIBUTE.to_owned(), token)),
                }
                Outcome::Continue
            }
            Err(reason) => {
                tracing::warn!(%reason, "Unable to generate JWT token");
                Outcome::Respond(Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    format!("Unable to generate JWT token: {reason}"),
                ))
            }
        }
    }

    fn uses_el(&self) -> bool {
        let templated = |t: &hgw_el::Template| !t.is_constant();
        self.audiences.iter().any(templated)
            || [&self.id, &self.issuer, &self.subject].into_iter().any(templated)
            || self.custom_claims.iter().any(|(_, t)| templated(t))
    }

    fn reads_request_body(&self) -> bool {
        self.audiences.iter().any(hgw_el::Template::reads_content)
            || [&self.id, &self.issuer, &self.subject].into_iter().any(hgw_el::Template::reads_content)
            || self.custom_claims.iter().any(|(_, t)| t.reads_content())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn policy(algorithm: &str, key: &[u8]) -> pb::GenerateJwtPolicy {
        pb::GenerateJwtPolicy {
            algorithm: algorithm.into(),
            key: key.to_vec(),
            kid: "k1".into(),
            audiences: vec!["aud-1".into()],
            expires_in_seconds: 60,
            issuer: "urn://gravitee-api-gw".into(),
            subject: "{#request.headers['x-user'][0]}".into(),
            custom_claims: vec![
                pb::Header { name: "path".into(), value: "{#request.headers['x-user']}".into() },
                pb::Header { name: "text".into(), value: "user={#request.headers['x-user'][0]}".into() },
                pb::Header { name: "gone".into(), value: "{#request.headers['nope']}".into() },
            ],
            ..Default::default()
        }
    }

    fn run(config: pb::GenerateJwtPolicy) -> (Outcome, Option<String>) {
        let jwt = GenerateJwt::compile(config).unwrap();
        let (mut parts, ()) = http::Request::builder().header("x-user", "ann").body(()).unwrap().into_parts();
        super::super::with_test_exchange(&mut parts, "127.0.0.1", |exchange| {
            let outcome = jwt.on_request(exchange);
            let token = exchange.attributes.iter().find(|(n, _)| n == GENERATED_ATTRIBUTE).map(|(_, v)| v.clone());
            (outcome, token)
        })
    }

    #[test]
    fn hmac_token_has_gravitees_claims_and_header() {
        let (outcome, token) = run(policy("HS256", SECRET));
        assert!(matches!(outcome, Outcome::Continue));
        let token = token.unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref(), header.typ), (Algorithm::HS256, Some("k1"), None));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["aud-1"]);
        let claims =
            jsonwebtoken::decode::<Json>(&token, &DecodingKey::from_secret(SECRET), &validation).unwrap().claims;
        assert_eq!(claims["sub"], "ann");
        assert_eq!(claims["aud"], "aud-1");
        assert_eq!(claims["path"], serde_json::json!(["ann"]));
        assert_eq!(claims["text"], "user=ann");
        assert!(claims.get("gone").is_none());
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn bad_keys_are_refused_naming_the_content() {
        for (algorithm, key) in [
            ("HS256", &b"short"[..]),
            ("HS512", SECRET),
            ("RS256", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ("ES256", SECRET),
        ] {
            let error = GenerateJwt::compile(policy(algorithm, key)).unwrap_err();
            assert!(error.to_string().starts_with("policy-generate-jwt.content: "), "{error}");
            assert!(!error.to_string().contains("0123456789"), "{error}");
        }
    }

    #[test]
    fn no_expiry_and_several_audiences() {
        let mut config = policy("HS384", &[7u8; 48]);
        config.expires_in_seconds = 0;
        config.audiences = vec!["a".into(), "b".into()];
        config.id = "fixed".into();
        let (_, token) = run(config);
        let mut validation = Validation::new(Algorithm::HS384);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Json>(&token.unwrap(), &DecodingKey::from_secret(&[7u8; 48]), &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(claims["jti"], "fixed");
        assert!(claims.get("exp").is_none());
    }
}
