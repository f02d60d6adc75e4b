//! Plans and their security: which plan a request runs under, and who the caller is.
//!
//! Gravitee's order: plans that need a credential are tried first (mTLS, JWT, OAuth2, then API key),
//! key-less last. A plan
//! "handles" a request when the request carries its credential; a handled request that fails
//! authentication is refused (401), it never falls back to a key-less plan. API keys arrive from the
//! agent as SHA-256 hashes with their subscriptions, so this process never holds a plaintext key. OAuth2
//! tokens are introspected by the agent ([`Introspector`]): this process holds no client secret and
//! never calls the authorization server.

use std::collections::HashMap;

use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use http::{HeaderName, StatusCode};
use sha2::{Digest, Sha256};

use crate::api::flows::Flow;
use crate::http::query::query_pairs;
use crate::policies::Reply;
use crate::policies::el::{ElContext, RequestInfo};
use crate::telemetry::redact::ApiKeyLocations;

#[derive(Debug)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub kind: PlanKind,
    pub flows: Vec<Flow>,
    /// Gravitee EL selection rule: the plan is considered only when it holds.
    pub selection_rule: Option<hgw_el::Expression>,
}

#[derive(Debug)]
pub enum PlanKind {
    KeyLess,
    ApiKey(ApiKeyPlan),
    Jwt(Box<JwtPlan>),
    /// Gravitee's `oauth2` plan: the agent introspects the token.
    OAuth2(OAuth2Plan),
    /// The TLS client certificate is the credential: its SHA-256 names the subscription.
    Mtls,
}

/// A JWT plan's verification settings, compiled once.
pub struct JwtPlan {
    /// Verification keys with their JWKS `kid` (None for given keys).
    keys: Vec<(Option<String>, jsonwebtoken::DecodingKey)>,
    validation: jsonwebtoken::Validation,
    client_id_claim: Option<String>,
    user_claim: String,
    propagate_auth_header: bool,
    required_scopes: Vec<String>,
}

impl std::fmt::Debug for JwtPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtPlan")
            .field("keys", &self.keys.len())
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

/// An OAuth2 plan's settings (the introspection itself is the agent's).
#[derive(Debug)]
pub struct OAuth2Plan {
    required_scopes: Vec<String>,
    check_required_scopes: bool,
    mode_strict: bool,
    extract_payload: bool,
    propagate_auth_header: bool,
}

/// Who introspects OAuth2 tokens: the agent (`hgw.v1.OAuth2/Introspect`). An error is a failure to
/// get an answer (agent away, timeout): the request is refused as the server being unavailable.
pub trait Introspector: Send + Sync + std::fmt::Debug {
    fn introspect(
        &self,
        api_id: &str,
        plan_id: &str,
        token: &str,
    ) -> BoxFuture<'static, Result<pb::IntrospectResponse, String>>;
}

/// No introspection available (a dataplane built without an agent link, tests): every OAuth2 token is
/// refused as the server being unavailable, never let through.
#[derive(Debug)]
pub struct NoIntrospector;

impl Introspector for NoIntrospector {
    fn introspect(&self, _: &str, _: &str, _: &str) -> BoxFuture<'static, Result<pb::IntrospectResponse, String>> {
        Box::pin(async { Err("no introspection available".to_owned()) })
    }
}

#[derive(Debug)]
pub struct ApiKeyPlan {
    header: HeaderName,
    query_param: String,
    propagate: bool,
}

impl Plan {
    /// Gravitee's security type name, for the metrics record.
    pub fn security_type(&self) -> &'static str {
        match self.kind {
            PlanKind::KeyLess => "KEY_LESS",
            PlanKind::ApiKey(_) => "API_KEY",
            PlanKind::Jwt(_) => "JWT",
            PlanKind::OAuth2(_) => "OAUTH2",
            PlanKind::Mtls => "MTLS",
        }
    }
}

#[derive(Debug)]
struct KeyEntry {
    subscriptions: Vec<String>,
    expire_at_ms: i64,
    revoked: bool,
    paused: bool,
}

#[derive(Debug)]
struct SubscriptionEntry {
    plan: String,
    application: String,
    application_name: String,
    client_id: String,
    /// Lower-case hex SHA-256 of the application's client certificate (mTLS plans).
    client_certificate_sha256: String,
    accepted: bool,
    starting_at_ms: i64,
    ending_at_ms: i64,
}

impl SubscriptionEntry {
    /// Whether this subscription lets a request into `plan` at `now_ms`: accepted, and started and
    /// not ended (an end of 0 is none).
    fn admits(&self, plan: &str, now_ms: i64) -> bool {
        self.plan == plan
            && self.accepted
            && self.starting_at_ms <= now_ms
            && (self.ending_at_ms == 0 || self.ending_at_ms > now_ms)
    }

    /// The authentication this subscription (`id`) gives a request into `plan`.
    fn authenticated<'p>(&self, plan: &'p Plan, id: &str) -> Authenticated<'p> {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Authenticated {
            plan,
            application: self.application.clone(),
            subscription: id.to_owned(),
            user: None,
            client_id: text(&self.client_id),
            application_name: text(&self.application_name),
            oauth_payload: None,
        }
    }
}

/// The plans of one API and the credentials that open them.
#[derive(Debug, Default)]
pub struct Security {
    /// In evaluation order: credential plans first, key-less last.
    plans: Vec<Plan>,
    keys: HashMap<String, KeyEntry>,
    subscriptions: HashMap<String, SubscriptionEntry>,
}

/// The outcome of authentication: the plan and, for subscription plans, who called.
#[derive(Debug)]
pub struct Authenticated<'a> {
    pub plan: &'a Plan,
    pub application: String,
    pub subscription: String,
    /// The end user, when the credential names one (JWT `sub` or the configured claim).
    pub user: Option<String>,
    /// The subscription's client id and application name (EL `#subscription.clientId`,
    /// `#subscription.applicationName`); none for key-less plans, as in Gravitee.
    pub client_id: Option<String>,
    pub application_name: Option<String>,
    /// OAuth2 plans with `extractPayload`: the introspection answer (context attribute `oauth.payload`).
    pub oauth_payload: Option<String>,
}

/// Why plans could not be built from the proto.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("no plan")]
    NoPlan,
    #[error("plans[{0}]: security type {1} is not supported by this dataplane")]
    Unsupported(usize, String),
    #[error("plans[{0}].api_key.header: {1:?} is not a header name")]
    Header(usize, String),
    #[error("plans[{0}].jwt: {1}")]
    Jwt(usize, String),
    #[error("plans[{0}].selection_rule: EL {1}")]
    SelectionRule(usize, hgw_el::ParseError),
}

pub use crate::policies::{DEFAULT_API_KEY_HEADER, DEFAULT_API_KEY_QUERY_PARAM};

impl Security {
    pub fn new(
        plans: Vec<(pb::Plan, Vec<Flow>)>,
        subscriptions: Vec<pb::Subscription>,
        keys: Vec<pb::ApiKey>,
    ) -> Result<Security, SecurityError> {
        if plans.is_empty() {
            return Err(SecurityError::NoPlan);
        }
        let mut compiled = Vec::with_capacity(plans.len());
        for (i, (plan, flows)) in plans.into_iter().enumerate() {
            let pb::Plan { id, name, security, flows: _, api_key, jwt, selection_rule, oauth2 } = plan;
            let selection_rule = if selection_rule.trim().is_empty() {
                None
            } else {
                Some(hgw_el::parse(&selection_rule).map_err(|e| SecurityError::SelectionRule(i, e))?)
            };
            let kind = match pb::SecurityType::try_from(security) {
                Ok(pb::SecurityType::KeyLess) => PlanKind::KeyLess,
                Ok(pb::SecurityType::ApiKey) => {
                    let config = api_key.unwrap_or_default();
                    let header_text =
                        if config.header.trim().is_empty() { DEFAULT_API_KEY_HEADER } else { config.header.trim() };
                    let header = HeaderName::from_bytes(header_text.as_bytes())
                        .map_err(|_| SecurityError::Header(i, config.header.clone()))?;
                    let query_param = if config.query_param.trim().is_empty() {
                        DEFAULT_API_KEY_QUERY_PARAM.to_owned()
                    } else {
                        config.query_param.trim().to_owned()
                    };
                    PlanKind::ApiKey(ApiKeyPlan { header, query_param, propagate: config.propagate_api_key })
                }
                Ok(pb::SecurityType::Jwt) => {
                    PlanKind::Jwt(Box::new(jwt_plan(jwt.unwrap_or_default()).map_err(|e| SecurityError::Jwt(i, e))?))
                }
                Ok(pb::SecurityType::Oauth2) => {
                    let config = oauth2.unwrap_or_default();
                    PlanKind::OAuth2(OAuth2Plan {
                        required_scopes: config.required_scopes,
                        check_required_scopes: config.check_required_scopes,
                        mode_strict: config.mode_strict,
                        extract_payload: config.extract_payload,
                        propagate_auth_header: config.propagate_auth_header,
                    })
                }
                Ok(pb::SecurityType::Mtls) => PlanKind::Mtls,
                Ok(other) => return Err(SecurityError::Unsupported(i, other.as_str_name().to_owned())),
                Err(_) => return Err(SecurityError::Unsupported(i, security.to_string())),
            };
            compiled.push(Plan { id, name, kind, flows, selection_rule });
        }
        // Stable: plans of the same kind keep their definition order.
        // Gravitee orders mTLS first (its policy's order is -100), then JWT (0), OAuth2 (100), API
        // key, key-less.
        compiled.sort_by_key(|plan| match plan.kind {
            PlanKind::Mtls => 0,
            PlanKind::Jwt(_) => 1,
            PlanKind::OAuth2(_) => 2,
            PlanKind::ApiKey(_) => 3,
            PlanKind::KeyLess => 4,
        });
        let subscriptions = subscriptions
            .into_iter()
            .map(|s| {
                let accepted = pb::SubscriptionStatus::try_from(s.status) == Ok(pb::SubscriptionStatus::Accepted);
                (
                    s.id,
                    SubscriptionEntry {
                        plan: s.plan,
                        application: s.application,
                        application_name: s.application_name,
                        client_id: s.client_id,
                        client_certificate_sha256: s.client_certificate_sha256.to_ascii_lowercase(),
                        accepted,
                        starting_at_ms: s.starting_at_ms,
                        ending_at_ms: s.ending_at_ms,
                    },
                )
            })
            .collect();
        let keys = keys
            .into_iter()
            .map(|k| {
                (
                    k.key_sha256.to_ascii_lowercase(),
                    KeyEntry {
                        subscriptions: k.subscriptions,
                        expire_at_ms: k.expire_at_ms,
                        revoked: k.revoked,
                        paused: k.paused,
                    },
                )
            })
            .collect();
        Ok(Security { plans: compiled, keys, subscriptions })
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// Where this API's clients put API keys: the headers and query parameters of its API-key plans,
    /// plus Gravitee's defaults (a key sent there is a secret even when no plan reads it).
    pub fn api_key_locations(&self) -> ApiKeyLocations {
        let mut locations = ApiKeyLocations {
            headers: vec![HeaderName::from_static(DEFAULT_API_KEY_HEADER)],
            query_params: vec![DEFAULT_API_KEY_QUERY_PARAM.to_owned()],
        };
        for plan in &self.plans {
            if let PlanKind::ApiKey(config) = &plan.kind {
                if !locations.headers.contains(&config.header) {
                    locations.headers.push(config.header.clone());
                }
                if !locations.query_params.contains(&config.query_param) {
                    locations.query_params.push(config.query_param.clone());
                }
            }
        }
        locations
    }

    /// Whether selection rules or plan flows evaluate EL per request.
    pub fn uses_el(&self) -> bool {
        self.plans.iter().any(|p| p.selection_rule.is_some() || p.flows.iter().any(Flow::uses_el))
    }

    /// Selects the plan for a request and authenticates it; on success the API key is stripped from
    /// the request unless the plan propagates it. `client_ip` identifies key-less callers;
    /// `client_certificate` is the SHA-256 (hex) of the verified TLS client certificate, if any.
    /// OAuth2 tokens of the API `api_id` are introspected by `introspector`.
    #[allow(clippy::too_many_arguments)]
    pub async fn authenticate(
        &self,
        parts: &mut http::request::Parts,
        client_ip: &str,
        client_certificate: Option<&str>,
        now_ms: i64,
        info: &RequestInfo,
        api_id: &str,
        introspector: &dyn Introspector,
    ) -> Result<Authenticated<'_>, Reply> {
        // The first plan that held a credential but refused it decides the error; without any
        // credential, the first plan that wanted one names what is missing.
        let mut refused: Option<Reply> = None;
        let mut missing: Option<Reply> = None;
        for plan in &self.plans {
            if let Some(rule) = &plan.selection_rule
                && !ElContext::request(info, &parts.headers, &[], &[]).holds(rule)
            {
                continue;
            }
            match &plan.kind {
                PlanKind::Mtls => {
                    // As Gravitee: without a certificate (plain HTTP, or none sent) the plan does not
                    // apply; a certificate no subscription of the plan names is a credential that
                    // failed. Either way, without another plan: 401 GATEWAY_PLAN_UNRESOLVABLE.
                    let Some(fingerprint) = client_certificate else {
                        continue;
                    };
                    match self.subscription_for_certificate(fingerprint, &plan.id, now_ms) {
                        Some((subscription, entry)) => return Ok(entry.authenticated(plan, subscription)),
                        None => {
                            refused.get_or_insert_with(|| unauthorized("GATEWAY_PLAN_UNRESOLVABLE", "Unauthorized"));
                        }
                    }
                }
                PlanKind::Jwt(config) => {
                    let Some(token) = find_bearer(parts) else {
                        missing.get_or_insert_with(|| unauthorized("JWT_MISSING_TOKEN", "Unauthorized"));
                        continue;
                    };
                    match self.verify_jwt(plan, config, &token, now_ms) {
                        Some(authenticated) => {
                            if !config.propagate_auth_header {
                                parts.headers.remove(http::header::AUTHORIZATION);
                            }
                            return Ok(authenticated);
                        }
                        None => {
                            refused.get_or_insert_with(|| unauthorized("JWT_INVALID_TOKEN", "Unauthorized"));
                        }
                    }
                }
                PlanKind::OAuth2(config) => {
                    // Gravitee's policy-oauth2: the first `Authorization: Bearer` header, else the
                    // `access_token` query parameter; a bearer with nothing after it is a token missing.
                    let Some(token) = find_oauth2_token(parts) else {
                        missing
                            .get_or_insert_with(|| oauth2_refusal(StatusCode::UNAUTHORIZED, "OAUTH2_MISSING_HEADER"));
                        continue;
                    };
                    if token.is_empty() {
                        refused.get_or_insert_with(|| {
                            oauth2_refusal(StatusCode::UNAUTHORIZED, "OAUTH2_MISSING_ACCESS_TOKEN")
                        });
                        continue;
                    }
                    match self.introspected(
                        plan,
                        config,
                        introspector.introspect(api_id, &plan.id, &token).await,
                        now_ms,
                    ) {
                        Ok(authenticated) => {
                            if !config.propagate_auth_header {
                                parts.headers.remove(http::header::AUTHORIZATION);
                            }
                            return Ok(authenticated);
                        }
                        Err(reply) => {
                            refused.get_or_insert(reply);
                        }
                    }
                }
                PlanKind::ApiKey(config) => {
                    let Some(key) = find_key(parts, config) else {
                        missing.get_or_insert_with(|| unauthorized("API_KEY_MISSING", "API Key is missing"));
                        continue;
                    };
                    match self.subscription_for(&key, &plan.id, now_ms) {
                        Some((subscription, entry)) => {
                            if !config.propagate {
                                strip_key(parts, config);
                            }
                            return Ok(entry.authenticated(plan, subscription));
                        }
                        None => {
                            refused.get_or_insert_with(|| {
                                unauthorized("API_KEY_INVALID", "API Key is not valid or is expired / revoked.")
                            });
                        }
                    }
                }
                PlanKind::KeyLess => {
                    if refused.is_some() {
                        break;
                    }
                    // Gravitee's key-less convention: application "1", subscription = caller address.
                    return Ok(Authenticated {
                        plan,
                        application: "1".to_owned(),
                        subscription: client_ip.to_owned(),
                        user: None,
                        client_id: None,
                        application_name: None,
                        oauth_payload: None,
                    });
                }
            }
        }
        Err(refused.or(missing).unwrap_or_else(|| unauthorized("GATEWAY_PLAN_UNRESOLVABLE", "Unauthorized")))
    }

    /// Verifies the token and finds the plan's subscription for its client id.
    fn verify_jwt<'a>(
        &'a self,
        plan: &'a Plan,
        config: &JwtPlan,
        token: &str,
        now_ms: i64,
    ) -> Option<Authenticated<'a>> {
        // With key ids (JWKS), only the key the token names is tried.
        let kid = jsonwebtoken::decode_header(token).ok()?.kid;
        let claims = config
            .keys
            .iter()
            .filter(|(key_id, _)| kid.is_none() || key_id.is_none() || key_id == &kid)
            .find_map(|(_, key)| jsonwebtoken::decode::<serde_json::Value>(token, key, &config.validation).ok())?
            .claims;
        if !config.required_scopes.is_empty() {
            let granted: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
                (Some(serde_json::Value::String(s)), _) => s.split_whitespace().collect(),
                (_, Some(serde_json::Value::Array(items))) => items.iter().filter_map(|v| v.as_str()).collect(),
                (_, Some(serde_json::Value::String(s))) => s.split_whitespace().collect(),
                _ => Vec::new(),
            };
            if !config.required_scopes.iter().all(|scope| granted.contains(&scope.as_str())) {
                return None;
            }
        }
        let text = |value: Option<&serde_json::Value>| -> Option<String> {
            match value? {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Array(items) => items.first().and_then(|v| v.as_str()).map(str::to_owned),
                _ => None,
            }
        };
        let client_id = match &config.client_id_claim {
            Some(claim) => text(claims.get(claim)),
            None => {
                text(claims.get("azp")).or_else(|| text(claims.get("aud"))).or_else(|| text(claims.get("client_id")))
            }
        }?;
        let (subscription, entry) = self.subscription_for_client(&client_id, &plan.id, now_ms)?;
        Some(Authenticated { user: text(claims.get(&config.user_claim)), ..entry.authenticated(plan, subscription) })
    }

    /// The accepted, current subscription of `plan` whose application has this client id (JWT and
    /// OAuth2 plans).
    fn subscription_for_client(&self, client_id: &str, plan: &str, now_ms: i64) -> Option<(&str, &SubscriptionEntry)> {
        self.subscriptions
            .iter()
            .find(|(_, s)| s.client_id == client_id && s.admits(plan, now_ms))
            .map(|(id, s)| (id.as_str(), s))
    }

    /// What the agent's introspection means for the OAuth2 `plan`, with Gravitee's answers: the
    /// server unreachable or failing → `503 OAUTH2_SERVER_UNAVAILABLE`; an inactive token → `401
    /// OAUTH2_INVALID_ACCESS_TOKEN`; no accepted subscription of the plan for the token's client →
    /// `401 GATEWAY_OAUTH2_ACCESS_DENIED`; required scopes missing → `401 OAUTH2_INSUFFICIENT_SCOPE`.
    fn introspected<'a>(
        &'a self,
        plan: &'a Plan,
        config: &OAuth2Plan,
        answer: Result<pb::IntrospectResponse, String>,
        now_ms: i64,
    ) -> Result<Authenticated<'a>, Reply> {
        let unavailable = || {
            let mut reply = Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("OAUTH2_SERVER_UNAVAILABLE"),
                "temporarily_unavailable",
            );
            reply.headers.push(www_authenticate());
            reply
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(plan = %plan.id, %error, "OAuth2 introspection unavailable");
                return Err(unavailable());
            }
        };
        match pb::IntrospectOutcome::try_from(answer.outcome) {
            Ok(pb::IntrospectOutcome::Active) => {}
            Ok(pb::IntrospectOutcome::Inactive) => {
                return Err(oauth2_refusal(StatusCode::UNAUTHORIZED, "OAUTH2_INVALID_ACCESS_TOKEN"));
            }
            _ => return Err(unavailable()),
        }
        let Some((subscription, entry)) = self.subscription_for_client(&answer.client_id, &plan.id, now_ms) else {
            return Err(oauth2_refusal(StatusCode::UNAUTHORIZED, "GATEWAY_OAUTH2_ACCESS_DENIED"));
        };
        if config.check_required_scopes
            && !has_required_scopes(&answer.scopes, &config.required_scopes, config.mode_strict)
        {
            return Err(oauth2_refusal(StatusCode::UNAUTHORIZED, "OAUTH2_INSUFFICIENT_SCOPE"));
        }
        Ok(Authenticated {
            user: (!answer.user.trim().is_empty()).then_some(answer.user),
            oauth_payload: config.extract_payload.then_some(answer.payload),
            ..entry.authenticated(plan, subscription)
        })
    }

    /// The accepted, current subscription of the mTLS `plan` whose application's certificate has
    /// this SHA-256.
    fn subscription_for_certificate(
        &self,
        fingerprint: &str,
        plan: &str,
        now_ms: i64,
    ) -> Option<(&str, &SubscriptionEntry)> {
        self.subscriptions
            .iter()
            .find(|(_, s)| {
                !s.client_certificate_sha256.is_empty()
                    && s.client_certificate_sha256 == fingerprint
                    && s.admits(plan, now_ms)
            })
            .map(|(id, s)| (id.as_str(), s))
    }

    /// The accepted, current subscription of `plan` that the key opens.
    /// Whether `key` is a key of this API admitting a request now, whatever its plan (Gravitee's
    /// api-key step looks keys up by API).
    fn key_admits_any_plan(&self, key: &str, now_ms: i64) -> bool {
        let Some(entry) = self.keys.get(&sha256_hex(key)) else {
            return false;
        };
        if entry.revoked || entry.paused || (entry.expire_at_ms > 0 && entry.expire_at_ms <= now_ms) {
            return false;
        }
        entry.subscriptions.iter().filter_map(|id| self.subscriptions.get(id)).any(|s| s.admits(&s.plan, now_ms))
    }

    fn subscription_for(&self, key: &str, plan: &str, now_ms: i64) -> Option<(&str, &SubscriptionEntry)> {
        let entry = self.keys.get(&sha256_hex(key))?;
        if entry.revoked || entry.paused || (entry.expire_at_ms > 0 && entry.expire_at_ms <= now_ms) {
            return None;
        }
        entry.subscriptions.iter().find_map(|id| {
            let subscription = self.subscriptions.get(id)?;
            subscription.admits(plan, now_ms).then_some((id.as_str(), subscription))
        })
    }
}

impl crate::policies::ApiKeys for Security {
    fn admits(&self, key: &str, now_ms: i64) -> bool {
        self.key_admits_any_plan(key, now_ms)
    }
}

/// Gravitee's OAuth2 refusals: `Unauthorized` with `WWW-Authenticate: Bearer realm="gravitee.io"`.
fn oauth2_refusal(status: StatusCode, key: &'static str) -> Reply {
    let mut reply = Reply::error(status, Some(key), "Unauthorized");
    reply.headers.push(www_authenticate());
    reply
}

fn www_authenticate() -> (HeaderName, http::HeaderValue) {
    (http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"gravitee.io\""))
}

/// Gravitee's scope check: no required scope passes; strict mode wants them all, otherwise one.
fn has_required_scopes(granted: &[String], required: &[String], strict: bool) -> bool {
    if required.is_empty() {
        return true;
    }
    if strict {
        required.iter().all(|scope| granted.contains(scope))
    } else {
        required.iter().any(|scope| granted.contains(scope))
    }
}

/// The OAuth2 plan's token, as Gravitee's `TokenExtractor`: the first `Authorization` header that
/// starts with `Bearer` (any case; what follows, trimmed, may be empty), else the first `access_token`
/// query parameter (which may be empty too).
fn find_oauth2_token(parts: &http::request::Parts) -> Option<String> {
    for value in parts.headers.get_all(http::header::AUTHORIZATION) {
        if let Ok(value) = value.to_str()
            && value.len() >= 6
            && value.is_char_boundary(6)
            && value[..6].eq_ignore_ascii_case("bearer")
        {
            return Some(value[6..].trim().to_owned());
        }
    }
    query_pairs(parts.uri.query()?).find(|(name, _)| name == "access_token").map(|(_, v)| v)
}

fn unauthorized(key: &'static str, message: &str) -> Reply {
    Reply::error(StatusCode::UNAUTHORIZED, Some(key), message)
}

/// Compiles a JWT plan's settings (keys parsed once).
fn jwt_plan(config: pb::JwtSecurity) -> Result<JwtPlan, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let pb::JwtSecurity {
        algorithm,
        public_keys_pem,
        hmac_secret,
        client_id_claim,
        user_claim,
        propagate_auth_header,
        required_scopes,
        check_required_scopes,
        jwks_url,
        jwks,
    } = config;
    let algorithm = match algorithm.to_ascii_uppercase().as_str() {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => return Err(format!("algorithm {other:?} is not supported")),
    };
    let keys: Vec<(Option<String>, DecodingKey)> = if !jwks_url.is_empty() {
        // Empty until the agent's first successful fetch: every token is refused meanwhile.
        if jwks.is_empty() {
            Vec::new()
        } else {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).map_err(|e| format!("jwks: {e}"))?;
            set.keys
                .iter()
                .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok().map(|key| (jwk.common.key_id.clone(), key)))
                .collect()
        }
    } else if matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        if hmac_secret.is_empty() {
            return Err("an HMAC algorithm needs a secret".into());
        }
        vec![(None, DecodingKey::from_secret(hmac_secret.as_bytes()))]
    } else {
        let keys = public_keys_pem
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map(|key| (None, key))
                    .map_err(|e| format!("public_keys_pem[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no verification key".into());
        }
        keys
    };
    let mut validation = Validation::new(algorithm);
    // Gravitee validates exp/nbf when present but requires neither; the audience is a client id here.
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = 0;
    Ok(JwtPlan {
        keys,
        validation,
        client_id_claim: Some(client_id_claim).filter(|c| !c.trim().is_empty()),
        user_claim: if user_claim.trim().is_empty() { "sub".to_owned() } else { user_claim },
        propagate_auth_header,
        required_scopes: if check_required_scopes { required_scopes } else { Vec::new() },
    })
}

/// The bearer token: `Authorization: Bearer ...` or the `access_token` query parameter (Gravitee's).
fn find_bearer(parts: &http::request::Parts) -> Option<String> {
    for value in parts.headers.get_all(http::header::AUTHORIZATION) {
        if let Ok(value) = value.to_str()
            && let Some((scheme, token)) = value.trim().split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_owned());
        }
    }
    query_pairs(parts.uri.query()?).find(|(name, value)| name == "access_token" && !value.is_empty()).map(|(_, v)| v)
}

pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes` (API keys, client certificates' DER).
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit((byte >> 4) as u32, 16).unwrap_or('0'));
        hex.push(char::from_digit((byte & 0xf) as u32, 16).unwrap_or('0'));
    }
    hex
}

fn find_key(parts: &http::request::Parts, config: &ApiKeyPlan) -> Option<String> {
    if let Some(value) =
        parts.headers.get(&config.header).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    {
        return Some(value.to_owned());
    }
    query_pairs(parts.uri.query()?)
        .find(|(name, value)| name == &config.query_param && !value.is_empty())
        .map(|(_, value)| value)
}

fn strip_key(parts: &mut http::request::Parts, config: &ApiKeyPlan) {
    parts.headers.remove(&config.header);
    crate::http::query::strip_query_param(parts, &config.query_param);
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn plan(id: &str, security: pb::SecurityType) -> (pb::Plan, Vec<Flow>) {
        (
            pb::Plan {
                id: id.into(),
                name: id.into(),
                security: security as i32,
                flows: vec![],
                api_key: None,
                jwt: None,
                selection_rule: String::new(),
                oauth2: None,
            },
            vec![],
        )
    }

    /// Answers as the agent would for a few fixed tokens.
    #[derive(Debug)]
    struct FakeAgent;

    impl Introspector for FakeAgent {
        fn introspect(
            &self,
            api: &str,
            plan: &str,
            token: &str,
        ) -> BoxFuture<'static, Result<pb::IntrospectResponse, String>> {
            assert_eq!((api, plan), ("api", "oauth"));
            let active = |client: &str, scopes: &[&str]| pb::IntrospectResponse {
                outcome: pb::IntrospectOutcome::Active as i32,
                payload: format!("{{\"client_id\":\"{client}\"}}"),
                client_id: client.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                user: "alice".into(),
            };
            let answer = match token {
                "good" => Ok(active("client-a", &["read", "write"])),
                "narrow" => Ok(active("client-a", &["write"])),
                "stranger" => Ok(active("client-b", &["read"])),
                "inactive" => {
                    Ok(pb::IntrospectResponse { outcome: pb::IntrospectOutcome::Inactive as i32, ..Default::default() })
                }
                "idp-down" => Ok(pb::IntrospectResponse {
                    outcome: pb::IntrospectOutcome::Unavailable as i32,
                    ..Default::default()
                }),
                _ => Err("agent away".to_owned()),
            };
            Box::pin(async move { answer })
        }
    }

    #[test]
    fn oauth2_plan_answers_as_gravitee() {
        let (mut oauth, flows) = plan("oauth", pb::SecurityType::Oauth2);
        oauth.oauth2 = Some(pb::OAuth2Security {
            required_scopes: vec!["read".into()],
            check_required_scopes: true,
            mode_strict: true,
            extract_payload: true,
            propagate_auth_header: false,
            introspection: None,
        });
        let mut sub = subscription("s1", "oauth", pb::SubscriptionStatus::Accepted);
        sub.client_id = "client-a".into();
        let security = Security::new(vec![(oauth, flows)], vec![sub], vec![]).unwrap();
        let run = |auth: Option<&str>, uri: &str| {
            let mut builder = http::Request::builder().uri(uri);
            if let Some(value) = auth {
                builder = builder.header("Authorization", value);
            }
            let mut p = builder.body(()).unwrap().into_parts().0;
            security
                .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &FakeAgent)
                .now_or_never()
                .expect("the fake answers at once")
                .map(|a| (a.subscription, a.user, a.oauth_payload, p.headers.contains_key("authorization")))
                .map_err(|r| {
                    (
                        r.status.as_u16(),
                        r.error_key.unwrap_or_default(),
                        r.headers.iter().any(|(n, _)| n == http::header::WWW_AUTHENTICATE),
                    )
                })
        };
        let ok = run(Some("Bearer good"), "/").expect("accepted");
        assert_eq!((ok.0.as_str(), ok.1.as_deref()), ("s1", Some("alice")));
        assert!(ok.2.is_some_and(|p| p.contains("client-a")), "extractPayload");
        assert!(!ok.3, "propagateAuthHeader false strips Authorization");
        assert!(run(None, "/?access_token=good").is_ok(), "query parameter");
        assert_eq!(run(None, "/").unwrap_err(), (401, "OAUTH2_MISSING_HEADER", true));
        assert_eq!(run(Some("Basic abc"), "/").unwrap_err(), (401, "OAUTH2_MISSING_HEADER", true));
        assert_eq!(run(Some("Bearer "), "/").unwrap_err(), (401, "OAUTH2_MISSING_ACCESS_TOKEN", true));
        assert_eq!(run(Some("Bearer inactive"), "/").unwrap_err(), (401, "OAUTH2_INVALID_ACCESS_TOKEN", true));
        assert_eq!(run(Some("Bearer narrow"), "/").unwrap_err(), (401, "OAUTH2_INSUFFICIENT_SCOPE", true));
        assert_eq!(run(Some("Bearer stranger"), "/").unwrap_err(), (401, "GATEWAY_OAUTH2_ACCESS_DENIED", true));
        assert_eq!(run(Some("Bearer idp-down"), "/").unwrap_err(), (503, "OAUTH2_SERVER_UNAVAILABLE", true));
        assert_eq!(
            run(Some("Bearer unknown"), "/").unwrap_err(),
            (503, "OAUTH2_SERVER_UNAVAILABLE", true),
            "agent away: never a pass"
        );
        assert!(has_required_scopes(&["a".into()], &["a".into(), "b".into()], false));
        assert!(!has_required_scopes(&["a".into()], &["a".into(), "b".into()], true));
    }

    fn subscription(id: &str, plan: &str, status: pb::SubscriptionStatus) -> pb::Subscription {
        pb::Subscription {
            id: id.into(),
            plan: plan.into(),
            application: format!("app-{id}"),
            client_id: String::new(),
            status: status as i32,
            starting_at_ms: 0,
            ending_at_ms: 0,
            client_certificate_sha256: String::new(),
            application_name: String::new(),
        }
    }

    fn key(key: &str, subscriptions: &[&str]) -> pb::ApiKey {
        pb::ApiKey {
            key_sha256: sha256_hex(key),
            subscriptions: subscriptions.iter().map(|s| s.to_string()).collect(),
            expire_at_ms: 0,
            revoked: false,
            paused: false,
        }
    }

    fn parts(uri: &str, header: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(key) = header {
            builder = builder.header("X-Gravitee-Api-Key", key);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn outcome(
        security: &Security,
        uri: &str,
        header: Option<&str>,
    ) -> Result<(String, String, String), (u16, &'static str)> {
        let mut p = parts(uri, header);
        security
            .authenticate(&mut p, "10.0.0.1", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
            .now_or_never()
            .expect("no await")
            .map(|a| (a.plan.id.clone(), a.application, a.subscription))
            .map_err(|r| (r.status.as_u16(), r.error_key.unwrap_or_default()))
    }

    #[test]
    fn api_key_plans_come_first_and_keyless_catches_the_rest() {
        let security = Security::new(
            vec![plan("free", pb::SecurityType::KeyLess), plan("gold", pb::SecurityType::ApiKey)],
            vec![subscription("s1", "gold", pb::SubscriptionStatus::Accepted)],
            vec![key("k-good", &["s1"])],
        )
        .unwrap();
        assert_eq!(outcome(&security, "/a", Some("k-good")), Ok(("gold".into(), "app-s1".into(), "s1".into())));
        assert_eq!(outcome(&security, "/a?api-key=k-good", None), Ok(("gold".into(), "app-s1".into(), "s1".into())));
        assert_eq!(outcome(&security, "/a", None), Ok(("free".into(), "1".into(), "10.0.0.1".into())));
        assert_eq!(
            outcome(&security, "/a", Some("wrong")),
            Err((401, "API_KEY_INVALID")),
            "a bad key never falls back to key-less"
        );
    }

    #[test]
    fn mtls_plans_open_to_subscribed_certificates_only() {
        let (cert_a, cert_b) = (sha256_hex_bytes(b"a"), sha256_hex_bytes(b"b"));
        let mut subscribed = subscription("s1", "mtls", pb::SubscriptionStatus::Accepted);
        subscribed.client_certificate_sha256 = cert_a.to_ascii_uppercase();
        let mut paused = subscription("s2", "mtls", pb::SubscriptionStatus::Paused);
        paused.client_certificate_sha256 = cert_b.clone();
        let security = Security::new(
            vec![plan("free", pb::SecurityType::KeyLess), plan("mtls", pb::SecurityType::Mtls)],
            vec![subscribed, paused],
            vec![],
        )
        .unwrap();
        assert_eq!(security.plans()[0].security_type(), "MTLS", "mTLS plans come first");
        let run = |certificate: Option<&str>| {
            let mut p = parts("/a", None);
            security
                .authenticate(&mut p, "10.0.0.1", certificate, NOW, &RequestInfo::default(), "api", &NoIntrospector)
                .now_or_never()
                .expect("no await")
                .map(|a| (a.plan.id.clone(), a.application, a.subscription))
                .map_err(|r| (r.status.as_u16(), r.error_key.unwrap_or_default()))
        };
        assert_eq!(run(Some(&cert_a)), Ok(("mtls".into(), "app-s1".into(), "s1".into())));
        assert_eq!(run(Some(&cert_b)), Err((401, "GATEWAY_PLAN_UNRESOLVABLE")), "paused subscription");
        assert_eq!(run(Some(&sha256_hex_bytes(b"c"))), Err((401, "GATEWAY_PLAN_UNRESOLVABLE")), "not subscribed");
        assert_eq!(run(None), Ok(("free".into(), "1".into(), "10.0.0.1".into())), "no certificate: key-less");
        let only_mtls = Security::new(vec![plan("mtls", pb::SecurityType::Mtls)], vec![], vec![]).unwrap();
        let mut p = parts("/a", None);
        let refused = only_mtls
            .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
            .now_or_never()
            .expect("no await")
            .unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.error_key), (401, Some("GATEWAY_PLAN_UNRESOLVABLE")));
    }

    #[test]
    fn revoked_paused_expired_and_non_accepted_keys_are_invalid() {
        let mut revoked = key("revoked", &["s1"]);
        revoked.revoked = true;
        let mut paused = key("paused", &["s1"]);
        paused.paused = true;
        let mut expired = key("expired", &["s1"]);
        expired.expire_at_ms = NOW - 1;
        let mut later = key("later", &["s1"]);
        later.expire_at_ms = NOW + 60_000;
        let mut ended = subscription("s3", "gold", pb::SubscriptionStatus::Accepted);
        ended.ending_at_ms = NOW - 1;
        let security = Security::new(
            vec![plan("gold", pb::SecurityType::ApiKey)],
            vec![
                subscription("s1", "gold", pb::SubscriptionStatus::Accepted),
                subscription("s2", "gold", pb::SubscriptionStatus::Paused),
                ended,
            ],
            vec![revoked, paused, expired, later, key("sub-paused", &["s2"]), key("sub-ended", &["s3"])],
        )
        .unwrap();
        for bad in ["revoked", "paused", "expired", "sub-paused", "sub-ended"] {
            assert_eq!(outcome(&security, "/", Some(bad)), Err((401, "API_KEY_INVALID")), "{bad}");
        }
        assert!(outcome(&security, "/", Some("later")).is_ok());
        assert_eq!(outcome(&security, "/", None), Err((401, "API_KEY_MISSING")));
    }

    #[test]
    fn key_is_stripped_unless_propagated() {
        let security = Security::new(
            vec![plan("gold", pb::SecurityType::ApiKey)],
            vec![subscription("s1", "gold", pb::SubscriptionStatus::Accepted)],
            vec![key("k", &["s1"])],
        )
        .unwrap();
        let mut p = parts("/x?a=1&api-key=k&b=2", Some("k"));
        security
            .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
            .now_or_never()
            .expect("no await")
            .unwrap();
        assert!(p.headers.get("x-gravitee-api-key").is_none());
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");

        let (mut propagating, flows) = plan("gold", pb::SecurityType::ApiKey);
        propagating.api_key =
            Some(pb::ApiKeySecurity { header: "X-Key".into(), query_param: "key".into(), propagate_api_key: true });
        let security = Security::new(
            vec![(propagating, flows)],
            vec![subscription("s1", "gold", pb::SubscriptionStatus::Accepted)],
            vec![key("k", &["s1"])],
        )
        .unwrap();
        let mut p = http::Request::builder().uri("/x?key=k").header("x-key", "k").body(()).unwrap().into_parts().0;
        security
            .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
            .now_or_never()
            .expect("no await")
            .unwrap();
        assert_eq!(p.headers["x-key"], "k");
        assert_eq!(p.uri.to_string(), "/x?key=k");
    }

    fn jwt_security(client_id: &str) -> Security {
        let (mut jwt_plan, flows) = plan("jwt", pb::SecurityType::Jwt);
        jwt_plan.jwt = Some(pb::JwtSecurity {
            algorithm: "HS256".into(),
            hmac_secret: "shared-secret".into(),
            required_scopes: vec!["orders:read".into()],
            check_required_scopes: true,
            ..Default::default()
        });
        let mut subscription = subscription("js", "jwt", pb::SubscriptionStatus::Accepted);
        subscription.client_id = client_id.into();
        Security::new(vec![plan("free", pb::SecurityType::KeyLess), (jwt_plan, flows)], vec![subscription], vec![])
            .unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn bearer(security: &Security, token: &str) -> Result<(String, String, Option<String>), (u16, &'static str)> {
        let mut p = http::Request::builder()
            .uri("/")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        security
            .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
            .now_or_never()
            .expect("no await")
            .map(|a| (a.plan.id.clone(), a.subscription, a.user))
            .map_err(|r| (r.status.as_u16(), r.error_key.unwrap_or_default()))
    }

    #[test]
    fn jwt_plans_verify_signature_expiry_scopes_and_subscription() {
        let security = jwt_security("client-a");
        let exp = NOW / 1000 + 600;
        let good = token(
            serde_json::json!({"sub": "alice", "azp": "client-a", "scope": "orders:read other", "exp": exp}),
            "shared-secret",
        );
        assert_eq!(bearer(&security, &good), Ok(("jwt".into(), "js".into(), Some("alice".into()))));
        let wrong_secret = token(serde_json::json!({"azp": "client-a", "scope": "orders:read", "exp": exp}), "other");
        assert_eq!(
            bearer(&security, &wrong_secret),
            Err((401, "JWT_INVALID_TOKEN")),
            "a bad token never falls back to key-less"
        );
        let expired =
            token(serde_json::json!({"azp": "client-a", "scope": "orders:read", "exp": 1000}), "shared-secret");
        assert_eq!(bearer(&security, &expired), Err((401, "JWT_INVALID_TOKEN")));
        let no_scope = token(serde_json::json!({"azp": "client-a", "scope": "other", "exp": exp}), "shared-secret");
        assert_eq!(bearer(&security, &no_scope), Err((401, "JWT_INVALID_TOKEN")));
        let unknown_client =
            token(serde_json::json!({"aud": ["client-b"], "scope": "orders:read", "exp": exp}), "shared-secret");
        assert_eq!(
            bearer(&security, &unknown_client),
            Err((401, "JWT_INVALID_TOKEN")),
            "no subscription for the client id"
        );
        assert_eq!(bearer(&security, "not.a.jwt"), Err((401, "JWT_INVALID_TOKEN")));
        let mut p = parts("/", None);
        assert_eq!(
            security
                .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
                .now_or_never()
                .expect("no await")
                .unwrap()
                .plan
                .id,
            "free",
            "no token: the key-less plan serves"
        );
        let only_jwt = {
            let (mut jwt_plan, flows) = plan("jwt", pb::SecurityType::Jwt);
            jwt_plan.jwt =
                Some(pb::JwtSecurity { algorithm: "HS256".into(), hmac_secret: "s".into(), ..Default::default() });
            Security::new(vec![(jwt_plan, flows)], vec![], vec![]).unwrap()
        };
        let mut p = parts("/", None);
        assert_eq!(
            only_jwt
                .authenticate(&mut p, "ip", None, NOW, &RequestInfo::default(), "api", &NoIntrospector)
                .now_or_never()
                .expect("no await")
                .unwrap_err()
                .error_key,
            Some("JWT_MISSING_TOKEN")
        );
    }

    #[test]
    fn percent_encoded_keys_and_hashing() {
        assert_eq!(crate::http::query::percent_decode("a%20b+c%zz%"), "a b c%zz%");
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
