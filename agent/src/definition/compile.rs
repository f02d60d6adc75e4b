//! Validation and compilation of one definition into [`hgw_proto::v1::Api`].
//!
//! The support matrix lives here: every feature the dataplane cannot run yet is refused with the field
//! path and a reason, so a user never gets an API that silently behaves differently than on Gravitee.

use std::collections::HashMap;

use hgw_proto::v1 as pb;
use serde_json::Value;

use super::ApiSource;
use super::model::{self, ApiV4, EndpointProxy, Flow, HttpOptions, NameValue, SharedConfiguration, Ssl, Step, norm};
use super::shared_policy_group::{self as spg, SharedPolicyGroups};
use super::v2;
use crate::tags::ShardingTags;

/// Longest timeout accepted (ms): beyond an hour a "timeout" is a configuration mistake.
const MAX_TIMEOUT_MS: i64 = 3_600_000;
/// Most failover retries accepted: each one is a full endpoint call.
const MAX_RETRIES: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    /// JSON path of the offending field (`endpointGroups[0].endpoints[1].configuration.target`).
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError { path: path.into(), message: message.into() }
}

/// What compiling an API depends on besides its definition: this gateway's sharding tags and tenant,
/// the files definitions may name, and the shared policy groups its flows may call.
pub struct CompileEnv<'a> {
    pub tags: &'a ShardingTags,
    pub tenant: Option<&'a str>,
    pub files: &'a DefinitionFiles,
    pub shared_policy_groups: &'a SharedPolicyGroups,
}

pub enum Compiled {
    Deploy(Box<pb::Api>),
    Skipped { name: String, why: String },
}

/// Compiles a parsed definition; on error returns the API name (when known) with the error.
pub fn compile_value(value: Value, source: &ApiSource, env: &CompileEnv) -> Result<Compiled, (String, CompileError)> {
    let name_of = |v: &Value| v.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = name_of(&value);
    let (value, definition_version) = match detect_version(&value) {
        Some(DefinitionVersion::V4) => (value, "4.0.0"),
        Some(DefinitionVersion::V2) => match v2::to_v4(&value) {
            Ok(v4) => (v4, "2.0.0"),
            Err(message) => return Err((name, err("$", message))),
        },
        None => {
            return Err((
                name,
                err(
                    "$",
                    "unknown definition format: expected `definitionVersion: \"4.0.0\"` (v4) or `gravitee: \"2.0.0\"` (v2)",
                ),
            ));
        }
    };
    let api: ApiV4 = serde_path_to_error::deserialize(value)
        .map_err(|e| (name.clone(), err(e.path().to_string(), e.inner().to_string())))?;
    compile_api(&api, definition_version, source, env).map_err(|e| (api.name.clone(), e))
}

enum DefinitionVersion {
    V4,
    V2,
}

fn detect_version(value: &Value) -> Option<DefinitionVersion> {
    let version = value
        .get("definitionVersion")
        .and_then(Value::as_str)
        .or_else(|| value.get("gravitee").and_then(Value::as_str));
    match version.map(str::trim) {
        Some(v) if v.starts_with('4') || v.eq_ignore_ascii_case("v4") => Some(DefinitionVersion::V4),
        Some(v) if v.starts_with('2') || v.starts_with('1') || v.eq_ignore_ascii_case("v2") => {
            Some(DefinitionVersion::V2)
        }
        Some(_) => None,
        None if value.get("listeners").is_some() => Some(DefinitionVersion::V4),
        None if value.get("proxy").is_some() => Some(DefinitionVersion::V2),
        None => None,
    }
}

fn compile_api(
    api: &ApiV4,
    definition_version: &str,
    source: &ApiSource,
    env: &CompileEnv,
) -> Result<Compiled, CompileError> {
    let CompileEnv { tags, tenant, files, shared_policy_groups } = *env;
    let id = if api.id.trim().is_empty() { source.id.trim().to_owned() } else { api.id.trim().to_owned() };
    if id.is_empty() {
        return Err(err("id", "the API has no id"));
    }
    if !source.id.is_empty() && source.id != id {
        return Err(err("id", format!("`{id}` differs from the id `{}` the event or file announces", source.id)));
    }
    let name = if api.name.trim().is_empty() { id.clone() } else { api.name.trim().to_owned() };

    match norm(&api.api_type).as_str() {
        "" | "proxy" => {}
        "message" => {
            return Err(err(
                "type",
                "message APIs (SSE, WebSocket, webhook and HTTP GET/POST entrypoints; Kafka, MQTT and other \
                 broker endpoints) are not supported: hgw runs HTTP proxy APIs",
            ));
        }
        other => return Err(err("type", format!("API type `{other}` is not supported (hgw runs HTTP proxy APIs)"))),
    }
    if !tags.matches_api(&api.tags) {
        return Ok(Compiled::Skipped {
            name,
            why: format!("sharding tags {:?} do not match this gateway's tags {:?}", api.tags, tags.to_list()),
        });
    }

    let (context_paths, elsewhere) = compile_listeners(api)?;
    if context_paths.is_empty() {
        // Bound to other servers of a multi-server Gravitee gateway: served nowhere here, as Gravitee's
        // acceptors on its `http` server do not take it either (the request finds no context path, 404).
        return Ok(Compiled::Skipped {
            name,
            why: format!("its listeners are bound to the servers {elsewhere:?}, not to this gateway's `{SERVER_ID}`"),
        });
    }
    let cors = compile_cors(api)?;
    let endpoint_groups = if api.endpoint_groups.is_empty() && definition_version == "2.0.0" {
        // A v2 API may define no endpoint at all (neither `proxy.endpoints` nor `proxy.groups`):
        // Gravitee's emulation engine deploys it and fails each call with 502; its V3 engine fails
        // with an internal error, which hgw does not imitate.
        if runs_on_legacy_engine(&api.execution_mode) {
            return Err(err(
                "proxy",
                "the API defines no endpoint (`proxy.endpoints` or `proxy.groups`); Gravitee's V3 engine fails \
                 every request of such an API (with `execution_mode: v4-emulation-engine` it deploys, and every \
                 call answers 502)",
            ));
        }
        vec![pb::EndpointGroup {
            name: "default-group".into(),
            load_balancer: pb::LoadBalancer::RoundRobin as i32,
            ..Default::default()
        }]
    } else {
        compile_endpoint_groups(api, tenant, files, definition_version == "2.0.0")?
    };
    if !api.endpoint_groups.is_empty() && endpoint_groups[0].endpoints.is_empty() {
        return Ok(Compiled::Skipped {
            name,
            why: format!(
                "no endpoint of the first endpoint group serves this gateway's tenant `{}`",
                tenant.unwrap_or_default()
            ),
        });
    }

    let flow_mode = match norm(&api.flow_execution.mode).as_str() {
        "" | "default" => pb::FlowMode::Default,
        "best-match" => pb::FlowMode::BestMatch,
        other => {
            tracing::debug!(api = %id, mode = other, "unknown flow mode, using default as Gravitee does");
            pb::FlowMode::Default
        }
    };
    let scope = StepScope::Api {
        groups: shared_policy_groups,
        environment: if api.environment_id.trim().is_empty() {
            &source.environment_id
        } else {
            api.environment_id.trim()
        },
    };
    let mut flows = compile_flows(&api.flows, "flows", scope)?;

    let mut plans = Vec::new();
    for (i, plan) in api.plans.iter().enumerate() {
        let at = format!("plans[{i}]");
        match norm(&plan.status).as_str() {
            "published" | "deprecated" => {}
            _ => continue,
        }
        if !tags.matches_plan(&plan.tags) {
            continue;
        }
        let mut api_key = None;
        let mut jwt = None;
        let mut oauth2 = None;
        let security = match norm(&plan.security.security_type).as_str() {
            "key-less" | "keyless" => pb::SecurityType::KeyLess,
            "api-key" | "apikey" => {
                let configuration = model::object_or_json_string(&plan.security.configuration)
                    .map_err(|m| err(format!("{at}.security.configuration"), m))?;
                let propagate = configuration.get("propagateApiKey").and_then(Value::as_bool).unwrap_or(false);
                // Header and query parameter are the gateway's (Gravitee defaults, applied by the dataplane).
                api_key = Some(pb::ApiKeySecurity {
                    header: String::new(),
                    query_param: String::new(),
                    propagate_api_key: propagate,
                });
                pb::SecurityType::ApiKey
            }
            "jwt" => {
                let configuration = model::object_or_json_string(&plan.security.configuration)
                    .map_err(|m| err(format!("{at}.security.configuration"), m))?;
                jwt = Some(jwt_security(&configuration, &format!("{at}.security.configuration"))?);
                pb::SecurityType::Jwt
            }
            "oauth2" => {
                let configuration = model::object_or_json_string(&plan.security.configuration)
                    .map_err(|m| err(format!("{at}.security.configuration"), m))?;
                oauth2 = Some(oauth2::oauth2_security(
                    &configuration,
                    &format!("{at}.security.configuration"),
                    &api.resources,
                )?);
                pb::SecurityType::Oauth2
            }
            // The TLS client certificate is the credential; subscriptions carry the certificates.
            "mtls" => pb::SecurityType::Mtls,
            "" => return Err(err(format!("{at}.security.type"), "the plan has no security type")),
            other => {
                return Err(err(
                    format!("{at}.security.type"),
                    format!(
                        "plan `{}` uses `{other}` security, which is not supported yet (key-less, api-key, jwt, oauth2 and mtls are)",
                        plan.name
                    ),
                ));
            }
        };
        let selection_rule = el_expression(&plan.selection_rule, &format!("{at}.selectionRule"))?;
        let plan_id = if plan.id.trim().is_empty() { format!("{id}-plan-{i}") } else { plan.id.trim().to_owned() };
        plans.push(pb::Plan {
            id: plan_id,
            name: plan.name.clone(),
            security: security as i32,
            flows: compile_flows(&plan.flows, &format!("{at}.flows"), scope)?,
            api_key,
            jwt,
            selection_rule,
            oauth2,
        });
    }
    if plans.is_empty() {
        return Ok(Compiled::Skipped {
            name,
            why: "no published or deprecated plan left after sharding-tag filtering".into(),
        });
    }

    let failover = match &api.failover {
        Some(f) if f.enabled => Some(compile_failover(f)?),
        _ => None,
    };
    let response_templates = compile_response_templates(&api.response_templates)?;
    number_counter_steps(&mut flows, &mut plans);
    let mut redis_caches = HashMap::new();
    resolve_cache_resources(&mut flows, &mut plans, &api.resources, &id, &mut redis_caches)?;
    let analytics = api.analytics.as_ref();
    let logging = match analytics.and_then(|a| a.logging.as_ref()) {
        Some(logging) => compile_logging(logging, "analytics.logging")?,
        None => None,
    };
    let tracing = match analytics.and_then(|a| a.tracing.as_ref()) {
        Some(tracing) => compile_tracing(tracing, "analytics.tracing")?,
        None => None,
    };

    let mut compiled = pb::Api {
        id,
        name,
        revision: String::new(),
        environment_id: source.environment_id.clone(),
        organization_id: source.organization_id.clone(),
        definition_version: definition_version.to_owned(),
        context_paths,
        endpoint_groups,
        plans,
        flows,
        flow_mode: flow_mode as i32,
        flow_match_required: api.flow_execution.match_required,
        analytics_enabled: analytics.is_none_or(|a| a.enabled),
        tags: api.tags.clone(),
        subscriptions: Vec::new(),
        api_keys: Vec::new(),
        failover,
        cors,
        response_templates,
        logging,
        tracing,
        legacy_engine: definition_version == "2.0.0" && runs_on_legacy_engine(&api.execution_mode),
        properties: api
            .properties
            .iter()
            .filter(|p| {
                if p.encrypted {
                    tracing::warn!(api = %api.id, key = %p.key, "encrypted API property left out: hgw cannot decrypt Gravitee's property encryption; EL reads it as null");
                }
                !p.encrypted && !p.key.trim().is_empty()
            })
            .map(|p| (p.key.trim().to_owned(), p.value.clone()))
            .collect(),
        redis_caches: HashMap::new(),
    };
    with_redis_caches(&mut compiled, redis_caches);
    Ok(Compiled::Deploy(Box::new(compiled)))
}

/// Whether Gravitee runs a v2 API on its V3 (legacy) engine: its `ExecutionMode.fromLabel` gives the
/// V4 emulation engine for `v4-emulation-engine` and `jupiter` (exact spellings) and V3 otherwise,
/// absent included.
fn runs_on_legacy_engine(execution_mode: &Value) -> bool {
    !matches!(execution_mode.as_str(), Some("v4-emulation-engine" | "jupiter"))
}

/// Numbers the rate-limit, quota and spike-arrest steps of an API 1, 2, ... (API flows first, then each
/// plan's flows, in order): a dataplane names a counter by this number, and the agent finds the policy
/// (and its limit and period) by it, never trusting a limit or period sent by the caller.
fn number_counter_steps(flows: &mut [pb::Flow], plans: &mut [pb::Plan]) {
    let mut next = 0u32;
    let api_flows = flows.iter_mut();
    let plan_flows = plans.iter_mut().flat_map(|plan| plan.flows.iter_mut());
    for flow in api_flows.chain(plan_flows) {
        for step in flow.request.iter_mut().chain(flow.response.iter_mut()) {
            if let Some(pb::step::Policy::RateLimit(policy)) = &mut step.policy {
                next += 1;
                policy.step = next;
            }
        }
    }
}

/// Gravitee's v4 `analytics.tracing` `{enabled, verbose}` (both false when absent or null).
fn compile_tracing(tracing: &Value, at: &str) -> Result<Option<pb::TracingSettings>, CompileError> {
    if tracing.is_null() {
        return Ok(None);
    }
    if !tracing.is_object() {
        return Err(err(at.to_owned(), "expected an object {enabled, verbose}"));
    }
    Ok(Some(pb::TracingSettings {
        enabled: optional_bool(tracing, "enabled", at)?,
        verbose: optional_bool(tracing, "verbose", at)?,
    }))
}

/// Gravitee's logging settings, in either shape: v4 `{mode{entrypoint, endpoint}, phase{request,
/// response}, content{headers, payload}, condition}` or v2 `{mode: CLIENT|PROXY|CLIENT_PROXY, scope:
/// REQUEST|RESPONSE|REQUEST_RESPONSE, content: HEADERS|PAYLOADS|HEADERS_PAYLOADS, condition}`.
///
/// `None` when nothing would be captured (no side, or no direction). Leniency: a v4 `phase` left out
/// means both directions, and a v2 `scope`/`content` left out means everything, since a user who turned
/// a mode on wants logs. Message-API fields (`messageHeaders`, `messagePayload`) have no meaning for a
/// proxy API and are ignored.
fn compile_logging(logging: &Value, at: &str) -> Result<Option<pb::LoggingSettings>, CompileError> {
    let flag = |object: Option<&Value>, key: &str, default: bool| {
        object.and_then(|o| o.get(key)).map_or(default, |v| v.as_bool().unwrap_or(false))
    };
    let mut settings = match logging.get("mode") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(_)) => {
            let mode = logging.get("mode");
            let phase = logging.get("phase").filter(|p| p.is_object());
            let content = logging.get("content");
            pb::LoggingSettings {
                entrypoint: flag(mode, "entrypoint", false),
                endpoint: flag(mode, "endpoint", false),
                request: flag(phase, "request", phase.is_none()),
                response: flag(phase, "response", phase.is_none()),
                headers: flag(content, "headers", false),
                payload: flag(content, "payload", false),
                condition: String::new(),
            }
        }
        Some(Value::String(mode)) => {
            let upper = |key: &str, default: &str| {
                logging.get(key).and_then(Value::as_str).unwrap_or(default).trim().to_ascii_uppercase()
            };
            let (entrypoint, endpoint) = match mode.trim().to_ascii_uppercase().as_str() {
                "NONE" | "" => (false, false),
                "CLIENT" => (true, false),
                "PROXY" => (false, true),
                "CLIENT_PROXY" => (true, true),
                other => return Err(err(format!("{at}.mode"), format!("unknown logging mode `{other}`"))),
            };
            let scope = upper("scope", "REQUEST_RESPONSE");
            let content = upper("content", "HEADERS_PAYLOADS");
            pb::LoggingSettings {
                entrypoint,
                endpoint,
                request: scope.contains("REQUEST"),
                response: scope.contains("RESPONSE"),
                headers: content.contains("HEADERS"),
                payload: content.contains("PAYLOADS"),
                condition: String::new(),
            }
        }
        Some(_) => return Err(err(format!("{at}.mode"), "expected an object or a string")),
    };
    if !(settings.entrypoint || settings.endpoint) || !(settings.request || settings.response) {
        return Ok(None);
    }
    if let Some(condition) = logging.get("condition") {
        let text = condition.as_str().ok_or_else(|| err(format!("{at}.condition"), "expected a string"))?;
        settings.condition = el_expression(text, &format!("{at}.condition"))?;
    }
    Ok(Some(settings))
}

/// The id of the server hgw's listener is in Gravitee's terms: a gateway configured with one `http:`
/// block (no `servers:` list) names its server `http`.
const SERVER_ID: &str = "http";

/// The context paths this gateway serves, and the other servers some listeners are bound to.
fn compile_listeners(api: &ApiV4) -> Result<(Vec<pb::ContextPath>, Vec<String>), CompileError> {
    let mut context_paths: Vec<pb::ContextPath> = Vec::new();
    let mut elsewhere = Vec::new();
    for (i, listener) in api.listeners.iter().enumerate() {
        if !listener.servers.is_empty() && !listener.servers.iter().any(|s| s.trim() == SERVER_ID) {
            elsewhere.extend(listener.servers.iter().cloned());
            continue;
        }
        let at = format!("listeners[{i}]");
        match norm(&listener.listener_type).as_str() {
            "http" => {}
            other => {
                return Err(err(format!("{at}.type"), format!("listener type `{other}` is not supported (only http)")));
            }
        }
        for (j, entrypoint) in listener.entrypoints.iter().enumerate() {
            match norm(&entrypoint.entrypoint_type).as_str() {
                "http-proxy" | "" => {}
                other => {
                    return Err(err(
                        format!("{at}.entrypoints[{j}].type"),
                        format!("entrypoint `{other}` is not supported (only http-proxy)"),
                    ));
                }
            }
        }
        for (j, path) in listener.paths.iter().enumerate() {
            let at = format!("{at}.paths[{j}]");
            let normalized = normalize_context_path(&path.path).map_err(|m| err(format!("{at}.path"), m))?;
            let host = path.host.as_deref().unwrap_or("").trim().to_ascii_lowercase();
            if host.contains('/') || host.contains(' ') {
                return Err(err(format!("{at}.host"), format!("`{host}` is not a host name")));
            }
            let host = host.split(':').next().unwrap_or_default().to_owned();
            let entry = pb::ContextPath { host, path: normalized };
            if !context_paths.contains(&entry) {
                context_paths.push(entry);
            }
        }
    }
    if context_paths.is_empty() && elsewhere.is_empty() {
        return Err(err("listeners", "the API has no http listener path to serve"));
    }
    Ok((context_paths, elsewhere))
}

/// `responseTemplates{ERROR_KEY: {media type: {status, headers, body, propagateErrorKeyToLogs}}}`.
fn compile_response_templates(
    templates: &serde_json::Map<String, Value>,
) -> Result<Vec<pb::ResponseTemplates>, CompileError> {
    let mut compiled = Vec::new();
    for (key, by_media) in templates {
        let at = format!("responseTemplates.{key}");
        if key.trim().is_empty() {
            return Err(err("responseTemplates", "an error key is empty"));
        }
        let Value::Object(by_media) = by_media else {
            if by_media.is_null() {
                continue;
            }
            return Err(err(at, "expected an object of media types"));
        };
        let mut entry = pb::ResponseTemplates { error_key: key.trim().to_owned(), templates: Vec::new() };
        for (media, template) in by_media {
            let at = format!("{at}.{media}");
            let media_type = media.trim().to_ascii_lowercase();
            if media_type.split_once('/').is_none_or(|(t, s)| t.is_empty() || s.is_empty()) {
                return Err(err(at, format!("`{media}` is not a media type")));
            }
            let status = match template.get("status") {
                None | Some(Value::Null) => 0,
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
                Some(_) => 0,
            };
            if status != 0 && !(100..=599).contains(&status) {
                return Err(err(format!("{at}.status"), "must be an HTTP status code (100-599)"));
            }
            let mut headers = Vec::new();
            if let Some(map) = template.get("headers").and_then(Value::as_object) {
                for (name, value) in map {
                    let value = value.as_str().unwrap_or_default();
                    if axum::http::HeaderName::try_from(name.trim()).is_err()
                        || axum::http::HeaderValue::try_from(value).is_err()
                    {
                        return Err(err(format!("{at}.headers.{name}"), "not a valid HTTP header"));
                    }
                    headers.push(pb::Header { name: name.trim().to_owned(), value: value.to_owned() });
                }
            }
            let body = template.get("body").and_then(Value::as_str).unwrap_or_default().to_owned();
            check_el(template, &at, &|_: &str| false).map_err(|e| {
                err(
                    e.path,
                    "Gravitee EL is not supported in response templates yet (the error context `#error` is not available)",
                )
            })?;
            entry.templates.push(pb::ResponseTemplate {
                media_type,
                status: status as u32,
                headers,
                body,
                propagate_error_key_to_logs: template
                    .get("propagateErrorKeyToLogs")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        compiled.push(entry);
    }
    Ok(compiled)
}

/// The CORS configuration of the first http listener that enables it (Gravitee keeps CORS per listener;
/// hgw has one http listener per API).
fn compile_cors(api: &ApiV4) -> Result<Option<pb::Cors>, CompileError> {
    let Some((i, cors)) =
        api.listeners.iter().enumerate().find_map(|(i, l)| l.cors.as_ref().filter(|c| c.enabled).map(|c| (i, c)))
    else {
        return Ok(None);
    };
    let at = format!("listeners[{i}].cors");
    if cors.run_policies {
        return Err(err(
            format!("{at}.runPolicies"),
            "running flows on preflight requests is not supported yet (hgw answers preflights itself)",
        ));
    }
    let clean = |list: &[String]| -> Vec<String> {
        list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    let allow_origin = clean(&cors.allow_origin);
    for (j, origin) in allow_origin.iter().enumerate() {
        if origin != "*" && regex::Regex::new(&format!("^(?:{origin})$")).is_err() {
            return Err(err(
                format!("{at}.allowOrigin[{j}]"),
                format!("`{origin}` is neither `*`, an origin nor a valid regular expression"),
            ));
        }
    }
    let mut allow_methods = clean(&cors.allow_methods);
    allow_methods.iter_mut().for_each(|m| m.make_ascii_uppercase());
    let mut allow_headers = clean(&cors.allow_headers);
    allow_headers.iter_mut().for_each(|h| h.make_ascii_lowercase());
    let expose_headers = clean(&cors.expose_headers);
    for (field, list) in [("allowHeaders", &allow_headers), ("exposeHeaders", &expose_headers)] {
        for (j, name) in list.iter().enumerate() {
            if name != "*" && axum::http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(err(format!("{at}.{field}[{j}]"), format!("`{name}` is not a header name")));
            }
        }
    }
    for (j, method) in allow_methods.iter().enumerate() {
        if method != "*" && axum::http::Method::from_bytes(method.as_bytes()).is_err() {
            return Err(err(format!("{at}.allowMethods[{j}]"), format!("`{method}` is not an HTTP method")));
        }
    }
    Ok(Some(pb::Cors {
        allow_origin,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age: cors.max_age.clamp(-1, i64::from(i32::MAX)) as i32,
        allow_credentials: cors.allow_credentials,
    }))
}

/// `/a/b/` → `/a/b`; `/` stays `/`; doubled slashes fold.
pub fn normalize_context_path(path: &str) -> Result<String, String> {
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!("context path `{path}` must start with `/`"));
    }
    if path.chars().any(|c| c.is_whitespace() || c == '?' || c == '#' || c.is_control()) {
        return Err(format!("context path `{path}` holds a character not allowed in a path"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Ok(format!("/{}", segments.join("/")))
}

/// v4 `failover` (v2's is mapped onto it with `maxFailures` 0: no circuit breaking).
fn compile_failover(failover: &model::Failover) -> Result<pb::Failover, CompileError> {
    let ranged = |name: &str, value: i64, min: i64, max: i64| -> Result<u32, CompileError> {
        if !(min..=max).contains(&value) {
            return Err(err(format!("failover.{name}"), format!("{value} is out of range ({min}..={max})")));
        }
        Ok(value as u32)
    };
    Ok(pb::Failover {
        max_retries: ranged("maxRetries", failover.max_retries, 0, MAX_RETRIES)?,
        slow_call_duration_ms: ranged("slowCallDuration", failover.slow_call_duration, 1, MAX_TIMEOUT_MS)?,
        open_state_duration_ms: ranged("openStateDuration", failover.open_state_duration, 1, MAX_TIMEOUT_MS)?,
        max_failures: ranged("maxFailures", failover.max_failures, 0, i64::from(u32::MAX))?,
        per_subscription: failover.per_subscription,
    })
}

/// Gravitee's tenant rule: an endpoint with tenants serves only gateways of one of them; a gateway
/// without a tenant keeps every endpoint.
fn serves_tenant(endpoint_tenants: &[String], tenant: Option<&str>) -> bool {
    match tenant {
        Some(tenant) if !endpoint_tenants.is_empty() => endpoint_tenants.iter().any(|t| t.trim() == tenant),
        _ => true,
    }
}

fn compile_endpoint_groups(
    api: &ApiV4,
    tenant: Option<&str>,
    files: &DefinitionFiles,
    v2: bool,
) -> Result<Vec<pb::EndpointGroup>, CompileError> {
    if api.endpoint_groups.is_empty() {
        return Err(err("endpointGroups", "the API has no endpoint group"));
    }
    let mut groups = Vec::new();
    for (i, group) in api.endpoint_groups.iter().enumerate() {
        let at = format!("endpointGroups[{i}]");
        match norm(&group.group_type).as_str() {
            "http-proxy" | "" => {}
            other => {
                return Err(err(
                    format!("{at}.type"),
                    format!("endpoint type `{other}` is not supported (only http-proxy)"),
                ));
            }
        }
        let load_balancer = match norm(&group.load_balancer.lb_type).as_str() {
            "random" => pb::LoadBalancer::Random,
            "weighted-round-robin" => pb::LoadBalancer::WeightedRoundRobin,
            "weighted-random" => pb::LoadBalancer::WeightedRandom,
            // Unknown values fall back to the default, as Gravitee reads enums.
            _ => pb::LoadBalancer::RoundRobin,
        };
        let shared = shared_configuration(&group.shared_configuration, &format!("{at}.sharedConfiguration"))?;
        let mut endpoints = Vec::new();
        for (j, endpoint) in group.endpoints.iter().enumerate() {
            let at = format!("{at}.endpoints[{j}]");
            // A v2 endpoint is `http` or `grpc` (Gravitee's two V3 connectors); a v4 one `http-proxy`.
            let grpc_endpoint = match norm(&endpoint.endpoint_type).as_str() {
                "http-proxy" | "" => false,
                "grpc" if v2 => true,
                other => {
                    return Err(err(
                        format!("{at}.type"),
                        format!("endpoint type `{other}` is not supported (only http-proxy)"),
                    ));
                }
            };
            let configuration = model::object_or_json_string(&endpoint.configuration)
                .map_err(|m| err(format!("{at}.configuration"), m))?;
            let target = configuration.get("target").and_then(Value::as_str).unwrap_or_default();
            let target_at = format!("{at}.configuration.target");
            let target = deploy_time::evaluate(target, &target_at, &api.id, &api.name)?;
            let (target, grpc_target) = grpc_scheme(&target);
            let grpc = match (v2, grpc_endpoint, grpc_target) {
                (true, true, _) | (false, _, true) => pb::GrpcCalls::All,
                (false, _, false) => pb::GrpcCalls::ByContentType,
                (true, false, _) => pb::GrpcCalls::Unspecified,
            };
            let (target, credentials) = validate_target(&target).map_err(|m| err(target_at, m))?;
            let effective = if endpoint.inherit_configuration || endpoint.shared_configuration_override.is_null() {
                None
            } else {
                Some(shared_configuration(
                    &endpoint.shared_configuration_override,
                    &format!("{at}.sharedConfigurationOverride"),
                )?)
            };
            let config = effective.as_ref().unwrap_or(&shared);
            let weight = endpoint.weight.unwrap_or(1);
            if !(0..=u32::MAX as i64).contains(&weight) {
                return Err(err(format!("{at}.weight"), format!("weight {weight} is out of range")));
            }
            let config_at = if effective.is_some() {
                format!("{at}.sharedConfigurationOverride")
            } else {
                format!("endpointGroups[{i}].sharedConfiguration")
            };
            let tls = if target.starts_with("https://") {
                let name = if endpoint.name.is_empty() { format!("endpoint-{j}") } else { endpoint.name.clone() };
                Some(tls_options(config.ssl.as_ref(), &format!("{config_at}.ssl"), &api.id, &name, files)?)
            } else {
                None
            };
            if !serves_tenant(&endpoint.tenants, tenant) {
                continue;
            }
            endpoints.push(pb::Endpoint {
                name: if endpoint.name.is_empty() { format!("endpoint-{j}") } else { endpoint.name.clone() },
                target,
                weight: weight as u32,
                secondary: endpoint.secondary,
                http: Some(http_options(&config.http, &config_at)?),
                headers: with_target_credentials(endpoint_headers(&config.headers, &config_at, api)?, credentials),
                tls,
                proxy: endpoint_proxy(config.proxy.as_ref(), &format!("{config_at}.proxy"))?,
                grpc: grpc as i32,
            });
        }
        if i == 0 && group.endpoints.is_empty() {
            return Err(err(format!("{at}.endpoints"), "the first endpoint group has no endpoint"));
        }
        groups.push(pb::EndpointGroup {
            name: if group.name.is_empty() { format!("group-{i}") } else { group.name.clone() },
            load_balancer: load_balancer as i32,
            endpoints,
            health_check: health_check(&group.services, &format!("{at}.services"))?,
        });
    }
    Ok(groups)
}

fn shared_configuration(value: &Value, at: &str) -> Result<SharedConfiguration, CompileError> {
    let value = model::object_or_json_string(value).map_err(|m| err(at, m))?;
    let shared: SharedConfiguration = serde_path_to_error::deserialize(value)
        .map_err(|e| err(format!("{at}.{}", e.path()), e.inner().to_string()))?;
    Ok(shared)
}

/// An endpoint's `proxy` when `enabled`: HTTP (the default), SOCKS4 or SOCKS5, with a host and a
/// port (a SOCKS4 proxy gets no credentials: as Netty's, which Gravitee uses). `useSystemProxy` is refused: Gravitee takes the gateway's `system.proxy` settings, and
/// calls the endpoint directly when they are missing; hgw has no such setting, and an endpoint meant
/// to go through a proxy never silently goes around it.
fn endpoint_proxy(proxy: Option<&EndpointProxy>, at: &str) -> Result<Option<pb::EndpointProxy>, CompileError> {
    let Some(proxy) = proxy.filter(|p| p.enabled) else { return Ok(None) };
    if proxy.use_system_proxy {
        return Err(err(
            format!("{at}.useSystemProxy"),
            "hgw has no system proxy setting: give the endpoint's proxy its own host and port",
        ));
    }
    let proxy_type = match norm(&proxy.proxy_type).as_str() {
        "" | "http" => pb::ProxyType::Http,
        "socks4" => pb::ProxyType::Socks4,
        "socks5" => pb::ProxyType::Socks5,
        other => {
            return Err(err(format!("{at}.type"), format!("unknown proxy type `{other}` (HTTP, SOCKS4 or SOCKS5)")));
        }
    };
    let host = proxy.host.trim();
    if host.is_empty() {
        return Err(err(format!("{at}.host"), "the proxy has no host"));
    }
    let bracketed = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    if host.contains(['/', '@', '?', '#', ' '])
        || format!("{bracketed}:1").parse::<axum::http::uri::Authority>().is_err()
    {
        return Err(err(format!("{at}.host"), format!("`{host}` is not a host name or address")));
    }
    let port = match &proxy.port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null => return Err(err(format!("{at}.port"), "the proxy has no port")),
        _ => None,
    }
    .filter(|port| (1..=65_535).contains(port))
    .ok_or_else(|| err(format!("{at}.port"), "must be a port number (1 to 65535)"))?;
    let username = proxy.username.as_deref().or(proxy.principal.as_deref()).unwrap_or_default().trim();
    if proxy_type == pb::ProxyType::Socks5 && (username.len() > 255 || proxy.password.len() > 255) {
        return Err(err(format!("{at}.username"), "SOCKS5 credentials are at most 255 bytes each"));
    }
    Ok(Some(pb::EndpointProxy {
        r#type: proxy_type as i32,
        host: bracketed,
        port: port as u32,
        username: username.to_owned(),
        password: proxy.password.clone(),
    }))
}

fn http_options(http: &HttpOptions, at: &str) -> Result<pb::HttpClientOptions, CompileError> {
    let version = match norm(&http.version).as_str() {
        "" | "http-1-1" | "http1" | "http-1" => pb::HttpVersion::Http11,
        "http-2" | "http2" => pb::HttpVersion::Http2,
        other => return Err(err(format!("{at}.http.version"), format!("unknown HTTP version `{other}`"))),
    };
    let timeout = |name: &str, value: i64| -> Result<u32, CompileError> {
        if !(1..=MAX_TIMEOUT_MS).contains(&value) {
            return Err(err(format!("{at}.http.{name}"), format!("{value} ms is out of range (1..={MAX_TIMEOUT_MS})")));
        }
        Ok(value as u32)
    };
    Ok(pb::HttpClientOptions {
        connect_timeout_ms: timeout("connectTimeout", http.connect_timeout)?,
        read_timeout_ms: timeout("readTimeout", http.read_timeout)?,
        idle_timeout_ms: timeout("idleTimeout", http.idle_timeout)?,
        keep_alive: http.keep_alive,
        propagate_client_host: http.propagate_client_host,
        version: version as i32,
        use_compression: http.use_compression,
        // As Gravitee's `isPropagateClientAcceptEncoding()`: only without compression.
        propagate_client_accept_encoding: !http.use_compression && http.propagate_client_accept_encoding,
        follow_redirects: http.follow_redirects,
    })
}

/// An https endpoint's `ssl`: stores are read into PEM here, so dataplanes need no files.
fn tls_options(
    ssl: Option<&Ssl>,
    at: &str,
    api_id: &str,
    endpoint: &str,
    files: &DefinitionFiles,
) -> Result<pb::TlsOptions, CompileError> {
    let default = Ssl::default();
    let ssl = ssl.unwrap_or(&default);
    if ssl.trust_all {
        tracing::warn!(api = %api_id, endpoint, "ssl.trustAll is set: the endpoint's certificate will not be verified");
    }
    let mut options = pb::TlsOptions {
        trust_all: ssl.trust_all,
        disable_hostname_verification: !ssl.hostname_verifier,
        ..Default::default()
    };
    if let Some(store) = ssl.trust_store.as_ref() {
        let at = format!("{at}.trustStore");
        match norm(&store.store_type).as_str() {
            "" | "none" => {}
            "pem" => options.trusted_ca_pem = pem(&store.content, &store.path, &at, "content", "path", files)?,
            other => return Err(store_type_error(&at, other)),
        }
    }
    if let Some(store) = ssl.key_store.as_ref() {
        let at = format!("{at}.keyStore");
        match norm(&store.store_type).as_str() {
            "" | "none" => {}
            "pem" => {
                options.client_cert_pem =
                    pem(&store.cert_content, &store.cert_path, &at, "certContent", "certPath", files)?;
                options.client_key_pem = pem(&store.key_content, &store.key_path, &at, "keyContent", "keyPath", files)?;
            }
            other => return Err(store_type_error(&at, other)),
        }
    }
    Ok(options)
}

fn store_type_error(at: &str, store_type: &str) -> CompileError {
    err(format!("{at}.type"), format!("`{}` stores are not supported yet (use PEM)", store_type.to_ascii_uppercase()))
}

/// PEM text given inline or as a file on the agent's host under `--definition-files-dir` (read once,
/// when the API is compiled).
fn pem(
    content: &str,
    path: &str,
    at: &str,
    content_name: &str,
    path_name: &str,
    files: &DefinitionFiles,
) -> Result<String, CompileError> {
    let text = if !content.trim().is_empty() {
        content.to_owned()
    } else if !path.trim().is_empty() {
        files.read(path.trim()).map_err(|reason| err(format!("{at}.{path_name}"), reason))?
    } else {
        return Err(err(
            format!("{at}.{content_name}"),
            format!("a PEM store needs `{content_name}` or `{path_name}`"),
        ));
    };
    if !text.contains("-----BEGIN ") {
        return Err(err(format!("{at}.{content_name}"), "is not PEM (no -----BEGIN block)"));
    }
    Ok(text)
}

/// An endpoint's headers, their values evaluated as Gravitee does when the API deploys.
fn endpoint_headers(list: &[NameValue], at: &str, api: &ApiV4) -> Result<Vec<pb::Header>, CompileError> {
    let mut compiled = headers(list);
    for (i, header) in compiled.iter_mut().enumerate() {
        header.value = deploy_time::evaluate(&header.value, &format!("{at}.headers[{i}].value"), &api.id, &api.name)?;
    }
    Ok(compiled)
}

fn headers(list: &[NameValue]) -> Vec<pb::Header> {
    list.iter()
        .filter(|h| !h.name.trim().is_empty())
        .map(|h| pb::Header { name: h.name.trim().to_owned(), value: h.value.clone() })
        .collect()
}

/// The endpoint's headers, with `Authorization: Basic …` from the target's userinfo added unless a
/// configured header already sets Authorization (the configured header wins, as endpoint headers
/// always do). Gravitee's v4 HTTP proxy takes only host, port and path from the target and drops the
/// userinfo silently; hgw sends it, as curl and browsers do for such a URL, and keeps it out of the URL
/// (and so out of analytics, logs, `/config` and messages).
fn with_target_credentials(mut headers: Vec<pb::Header>, credentials: Option<String>) -> Vec<pb::Header> {
    if let Some(value) = credentials
        && !headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization"))
    {
        headers.push(pb::Header { name: "Authorization".to_owned(), value });
    }
    headers
}

/// An endpoint target: an absolute `http://host[:port][/path]` URL, answered without its userinfo
/// (`user:password@`), which comes back separately as an `Authorization: Basic` value. Messages show
/// the target with the userinfo masked.
/// A `grpc://` or `grpcs://` target as the `http://` or `https://` one it is (Gravitee's clients read
/// a scheme ending in `s` as TLS), and whether it was `grpc://`: Gravitee's v4 connector then makes
/// every call a gRPC call (it tests that prefix only, so a `grpcs://` target goes by Content-Type).
fn grpc_scheme(target: &str) -> (String, bool) {
    let trimmed = target.trim_start();
    if let Some(rest) = trimmed.strip_prefix("grpc://") {
        (format!("http://{rest}"), true)
    } else if let Some(rest) = trimmed.strip_prefix("grpcs://") {
        (format!("https://{rest}"), false)
    } else {
        (target.to_owned(), false)
    }
}

fn validate_target(target: &str) -> Result<(String, Option<String>), String> {
    let (target, credentials) = match split_userinfo(target.trim()) {
        (target, Some(userinfo)) => (target, Some(basic_authorization(userinfo))),
        (target, None) => (target, None),
    };
    match validate_plain_target(&target) {
        Ok(target) => Ok((target, credentials)),
        // The message quotes the target without its userinfo; say that there was some.
        Err(message) if credentials.is_some() => Err(format!("{message} (credentials in the URL not shown)")),
        Err(message) => Err(message),
    }
}

/// `scheme://USERINFO@rest` split into the URL without userinfo and the userinfo (lexically, so it
/// works on URLs that do not parse).
fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (format!("{}{}", &url[..scheme_end], &rest[at + 1..]), Some(&rest[..at])),
        None => (url.to_owned(), None),
    }
}

/// `Basic base64(user:password)` for percent-encoded userinfo `user[:password]` (RFC 3986, RFC 7617).
fn basic_authorization(userinfo: &str) -> String {
    use base64::Engine;
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
            if bytes[i] == b'%'
                && let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2))
            {
                out.push((high << 4 | low) as u8);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut credentials = decode(user);
    credentials.push(b':');
    credentials.extend(decode(password));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

fn validate_plain_target(target: &str) -> Result<String, String> {
    if target.is_empty() {
        return Err("the endpoint has no target".into());
    }
    if target.contains("{#") {
        return Err(format!("`{target}` uses EL, which is not supported in targets yet"));
    }
    let uri: axum::http::Uri = target.parse().map_err(|e| format!("`{target}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("`{target}`: scheme `{other}` is not supported (http or https)")),
        None => return Err(format!("`{target}` is not an absolute URL (http://host:port/path)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{target}` has no host"));
    }
    Ok(target.to_owned())
}

fn compile_flows(flows: &[Flow], at: &str, scope: StepScope) -> Result<Vec<pb::Flow>, CompileError> {
    let mut compiled = Vec::new();
    for (i, flow) in flows.iter().enumerate() {
        if !flow.enabled {
            continue;
        }
        let at = format!("{at}[{i}]");
        let mut path = "/".to_owned();
        let mut operator = pb::PathOperator::StartsWith;
        let mut methods = Vec::new();
        let mut condition = String::new();
        for (j, selector) in flow.selectors.iter().enumerate() {
            let at = format!("{at}.selectors[{j}]");
            match norm(&selector.selector_type).as_str() {
                "http" => {
                    path = if selector.path.trim().is_empty() {
                        "/".to_owned()
                    } else {
                        normalize_context_path(&selector.path).map_err(|m| err(format!("{at}.path"), m))?
                    };
                    operator = match norm(&selector.path_operator).as_str() {
                        "equals" => pb::PathOperator::Equals,
                        _ => pb::PathOperator::StartsWith,
                    };
                    for method in &selector.methods {
                        let method = method.trim().to_ascii_uppercase();
                        if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
                            return Err(err(format!("{at}.methods"), format!("`{method}` is not an HTTP method")));
                        }
                        if !methods.contains(&method) {
                            methods.push(method);
                        }
                    }
                }
                "condition" => {
                    if !condition.is_empty() {
                        return Err(err(format!("{at}.condition"), "a flow takes one condition selector"));
                    }
                    condition = el_expression(&selector.condition, &format!("{at}.condition"))?;
                }
                other => return Err(err(format!("{at}.type"), format!("selector `{other}` is not supported"))),
            }
        }
        compiled.push(pb::Flow {
            name: flow.name.clone(),
            path,
            path_operator: operator as i32,
            methods,
            request: compile_steps(&flow.request, &format!("{at}.request"), Phase::Request, scope)?,
            response: compile_steps(&flow.response, &format!("{at}.response"), Phase::Response, scope)?,
            condition,
        });
    }
    Ok(compiled)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Request,
    Response,
}

/// Where steps are compiled: in an API's flows, which may call the shared policy groups of the API's
/// environment, or inside a group, where Gravitee ignores calls to other groups.
#[derive(Clone, Copy)]
enum StepScope<'a> {
    Api { groups: &'a SharedPolicyGroups, environment: &'a str },
    Group,
}

fn compile_steps(steps: &[Step], at: &str, phase: Phase, scope: StepScope) -> Result<Vec<pb::Step>, CompileError> {
    let mut compiled = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if !step.enabled {
            continue;
        }
        let at = format!("{at}[{i}]");
        let condition = el_expression(&step.condition, &format!("{at}.condition"))?;
        let mut configuration =
            model::object_or_json_string(&step.configuration).map_err(|m| err(format!("{at}.configuration"), m))?;
        if step.policy.trim() == "cache" {
            upstream_response_as_response(&mut configuration);
        }
        if step.policy.trim() == spg::POLICY_ID {
            compiled.extend(call_shared_policy_group(step, &condition, &configuration, &at, phase, scope)?);
            continue;
        }
        let at_config = format!("{at}.configuration");
        // The policy is named before anything inside its configuration: an EL complaint about a policy
        // hgw does not run at all would send the user looking in the wrong place.
        check_policy_runs(step.policy.trim(), phase, &at)?;
        check_groups(&configuration, &at_config, step.policy.trim())?;
        // assign-content's body is a FreeMarker template, not EL: checked by its own parser below;
        // and a script is JavaScript, where `{#` is just text.
        let el_checked = if matches!(step.policy.trim(), "policy-assign-content" | "js" | "javascript") {
            Ok(())
        } else {
            check_el(&configuration, &at_config, templated_fields(step.policy.trim()))
        };
        el_checked.or_else(|e| {
            // Gravitee's mock renders its EL per request and answers a 500 (content) or leaves the
            // header out when it does not parse; hgw's mock does the same, so it deploys with a warning.
            if step.policy.trim() == "mock" && e.message.starts_with("EL ") {
                tracing::warn!(field = %e.path, reason = %e.message, "mock EL does not parse; requests get Gravitee's answer for it");
                Ok(())
            } else {
                Err(e)
            }
        })?;
        use pb::step::Policy as P;
        let policy = match (step.policy.trim(), phase) {
            ("mock", Phase::Request) => P::Mock(mock(&configuration, &at_config)?),
            ("transform-headers", _) => P::TransformHeaders(transform_headers(&configuration, &at_config)?),
            ("ip-filtering", Phase::Request) => P::IpFiltering(ip_filtering(&configuration, &at_config)?),
            ("request-content-limit", Phase::Request) => {
                P::RequestContentLimit(request_content_limit(&configuration, &at_config)?)
            }
            ("policy-assign-attributes", Phase::Request) => {
                P::AssignAttributes(assign_attributes(&configuration, &at_config)?)
            }
            ("rate-limit", Phase::Request) => {
                P::RateLimit(rate_limit(&configuration, &at_config, pb::RateLimitKind::RateLimit)?)
            }
            ("quota", Phase::Request) => {
                P::RateLimit(rate_limit(&configuration, &at_config, pb::RateLimitKind::Quota)?)
            }
            ("spike-arrest", Phase::Request) => {
                P::RateLimit(rate_limit(&configuration, &at_config, pb::RateLimitKind::SpikeArrest)?)
            }
            ("url-rewriting", Phase::Response) => P::UrlRewriting(url_rewriting(&configuration, &at_config)?),
            ("latency", Phase::Request) => P::Latency(latency(&configuration, &at_config)?),
            ("policy-override-request-method", Phase::Request) => {
                P::OverrideMethod(override_method(&configuration, &at_config)?)
            }
            ("status-code", Phase::Response) => P::StatusCode(status_code(&configuration, &at_config)?),
            ("http-redirect", Phase::Request) => P::HttpRedirect(http_redirect(&configuration, &at_config)?),
            ("dynamic-routing", Phase::Request) => P::DynamicRouting(dynamic_routing(&configuration, &at_config)?),
            ("policy-assign-content", _) => P::AssignContent(assign_content(&configuration, &at_config)?),
            ("api-key", Phase::Request) => P::ApiKey(api_key_step(&configuration)),
            ("json-to-json", _) => P::JsonToJson(json_to_json(&configuration, &at_config)?),
            ("xml-json", _) => P::XmlToJson(pb::XmlToJsonPolicy {}),
            ("json-xml", _) => P::JsonToXml(json_to_xml(&configuration, &at_config)?),
            ("retry", Phase::Request) => P::Retry(retry(&configuration, &at_config)?),
            ("policy-generate-jwt", Phase::Request) => P::GenerateJwt(generate_jwt(&configuration, &at_config)?),
            ("policy-http-callout", _) => P::HttpCallout(http_callout(&configuration, &at_config)?),
            ("cache", Phase::Request) => P::Cache(cache(&configuration, &at_config)?),
            ("json-validation", _) => match json_validation(&configuration, &at_config)? {
                Some(policy) => P::JsonValidation(policy),
                None => {
                    tracing::warn!(
                        at,
                        "json-validation without a `schema`: the step validates nothing (as Gravitee's 2.x)"
                    );
                    continue;
                }
            },
            ("resource-filtering", Phase::Request) => {
                P::ResourceFiltering(resource_filtering(&configuration, &at_config)?)
            }
            ("transform-queryparams", Phase::Request) => {
                P::TransformQueryParams(transform_query_params(&configuration, &at_config)?)
            }
            ("js", _) => P::Javascript(javascript(&configuration, &at_config, true)?),
            ("javascript", _) => P::Javascript(javascript(&configuration, &at_config, false)?),
            // Gravitee's key-less policy as a flow step does nothing: the plan already admitted the call.
            ("key-less", Phase::Request) => continue,
            // Gravitee's latency policy only delays requests; in the response phase it does nothing.
            ("latency", Phase::Response) => continue,
            (other, _) => unreachable!("check_policy_runs admitted `{other}` in {phase:?}"),
        };
        compiled.push(pb::Step { name: step.name.clone(), condition, policy: Some(policy) });
    }
    Ok(compiled)
}

/// A `shared-policy-group-policy` step: the group's steps in its place, each guarded by this step's
/// condition too. Gravitee's answers for a group it cannot run are kept: not deployed in the API's
/// environment, or called from inside another group, the step is skipped with a warning.
fn call_shared_policy_group(
    step: &Step,
    condition: &str,
    configuration: &Value,
    at: &str,
    phase: Phase,
    scope: StepScope,
) -> Result<Vec<pb::Step>, CompileError> {
    let StepScope::Api { groups, environment } = scope else {
        tracing::warn!(step = %step.name, at, "a shared policy group calls another: nested shared policy groups are not supported, the step is ignored (as Gravitee does)");
        return Ok(Vec::new());
    };
    let Some(id) = spg::called_group(configuration) else {
        return Err(err(format!("{at}.configuration.sharedPolicyGroupId"), "the step names no shared policy group"));
    };
    let Some(group) = groups.get(environment, id) else {
        tracing::warn!(
            at,
            group = id,
            environment,
            "no shared policy group with this id in the API's environment: the step is skipped (as Gravitee does)"
        );
        return Ok(Vec::new());
    };
    let group_phase = if group.is_request_phase() { Phase::Request } else { Phase::Response };
    if group_phase != phase {
        return Err(err(
            format!("{at}.configuration.sharedPolicyGroupId"),
            format!("shared policy group `{id}` is for the {group_phase:?} phase, called from the {phase:?} phase"),
        ));
    }
    let inner_at = format!("{at} (shared policy group `{id}`).policies");
    let mut steps = compile_steps(&group.policies, &inner_at, phase, StepScope::Group)?;
    for inner in &mut steps {
        inner.condition =
            spg::guarded_condition(condition, &inner.condition).map_err(|m| err(format!("{at}.condition"), m))?;
    }
    Ok(steps)
}

/// The policies hgw runs, each with the phases it runs them in (Gravitee's policy ids).
const POLICIES: &[(&str, &[Phase])] = &[
    ("mock", &[Phase::Request]),
    ("transform-headers", &[Phase::Request, Phase::Response]),
    ("ip-filtering", &[Phase::Request]),
    ("request-content-limit", &[Phase::Request]),
    ("policy-assign-attributes", &[Phase::Request]),
    ("rate-limit", &[Phase::Request]),
    ("quota", &[Phase::Request]),
    ("spike-arrest", &[Phase::Request]),
    ("url-rewriting", &[Phase::Response]),
    ("latency", &[Phase::Request, Phase::Response]),
    ("policy-override-request-method", &[Phase::Request]),
    ("status-code", &[Phase::Response]),
    ("http-redirect", &[Phase::Request]),
    ("dynamic-routing", &[Phase::Request]),
    ("policy-assign-content", &[Phase::Request, Phase::Response]),
    ("api-key", &[Phase::Request]),
    ("json-to-json", &[Phase::Request, Phase::Response]),
    ("xml-json", &[Phase::Request, Phase::Response]),
    ("json-xml", &[Phase::Request, Phase::Response]),
    ("retry", &[Phase::Request]),
    ("cache", &[Phase::Request]),
    ("key-less", &[Phase::Request]),
    ("transform-queryparams", &[Phase::Request]),
    ("json-validation", &[Phase::Request, Phase::Response]),
    ("resource-filtering", &[Phase::Request]),
    ("policy-generate-jwt", &[Phase::Request]),
    ("policy-http-callout", &[Phase::Request, Phase::Response]),
    ("js", &[Phase::Request, Phase::Response]),
    ("javascript", &[Phase::Request, Phase::Response]),
];

/// Refuses a step whose policy hgw does not run at all, or not in this phase, naming which it is.
fn check_policy_runs(policy: &str, phase: Phase, at: &str) -> Result<(), CompileError> {
    if policy.is_empty() {
        return Err(err(format!("{at}.policy"), "the step names no policy"));
    }
    let phase_name = |p: &Phase| match p {
        Phase::Request => "request",
        Phase::Response => "response",
    };
    match POLICIES.iter().find(|(id, _)| *id == policy) {
        Some((_, phases)) if phases.contains(&phase) => Ok(()),
        Some((_, phases)) => Err(err(
            format!("{at}.policy"),
            format!(
                "policy `{policy}` runs in the {} phase only in hgw, not in the {} phase",
                phases.iter().map(phase_name).collect::<Vec<_>>().join(" and "),
                phase_name(&phase)
            ),
        )),
        None if policy == "groovy" => Err(err(
            format!("{at}.policy"),
            "policy `groovy` is not supported: hgw does not run Groovy scripts (no JVM)",
        )),
        None => Err(err(
            format!("{at}.policy"),
            format!(
                "policy `{policy}` is not supported by hgw (it runs {})",
                POLICIES.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Checks Gravitee EL in a policy configuration: where the dataplane renders the value as a template
/// (`templated(path)`), the template must parse; anywhere else EL would be used literally, so it is
/// refused. Either way the API is rejected with the field path, never half-applied.
fn check_el(configuration: &Value, at: &str, templated: &dyn Fn(&str) -> bool) -> Result<(), CompileError> {
    fn walk(value: &Value, path: String, templated: &dyn Fn(&str) -> bool) -> Result<(), CompileError> {
        match value {
            Value::String(text) if text.contains("{#") || text.contains("{(") => {
                if !templated(&path) {
                    return Err(err(path, "Gravitee EL is not supported in this field"));
                }
                hgw_el::parse_template(text).map(|_| ()).map_err(|e| err(path, format!("EL {e}")))
            }
            Value::Array(items) => {
                items.iter().enumerate().try_for_each(|(i, v)| walk(v, format!("{path}[{i}]"), templated))
            }
            Value::Object(map) => map.iter().try_for_each(|(k, v)| walk(v, format!("{path}.{k}"), templated)),
            _ => Ok(()),
        }
    }
    walk(configuration, at.to_owned(), templated)
}

/// `#group`/`#groupName` exist only while a policy's regular expression has just matched; anywhere
/// else Gravitee fails the request, so hgw refuses the definition instead.
fn check_groups(configuration: &Value, at: &str, policy: &str) -> Result<(), CompileError> {
    if ["http-redirect", "dynamic-routing", "url-rewriting"].contains(&policy) {
        return Ok(());
    }
    if configuration.to_string().contains("#group") {
        return Err(err(
            at,
            format!(
                "`#group`/`#groupName` are not set in policy `{policy}` by hgw (only http-redirect, \
                 dynamic-routing and url-rewriting set them)"
            ),
        ));
    }
    Ok(())
}

/// Which configuration values each policy renders as EL templates.
fn templated_fields(policy: &str) -> &'static dyn Fn(&str) -> bool {
    match policy {
        "transform-headers" => &|path: &str| {
            path.ends_with(".value") && (path.contains(".addHeaders[") || path.contains(".appendHeaders["))
        },
        "policy-assign-attributes" => &|path: &str| path.ends_with(".value") && path.contains(".attributes["),
        "mock" => &|path: &str| path.ends_with(".content") || (path.contains(".headers[") && path.ends_with(".value")),
        "url-rewriting" => &|path: &str| path.ends_with(".toReplacement"),
        "http-redirect" => &|path: &str| path.ends_with(".location"),
        "dynamic-routing" => &|path: &str| path.ends_with(".url"),
        "json-to-json" => &|path: &str| path.ends_with(".specification"),
        "retry" => &|path: &str| path.ends_with(".condition"),
        "policy-http-callout" => &|path: &str| {
            path.ends_with(".url")
                || path.ends_with(".body")
                || path.ends_with(".errorContent")
                || path.ends_with(".errorCondition")
                || ((path.contains(".headers[") || path.contains(".variables[")) && path.ends_with(".value"))
        },
        "policy-generate-jwt" => &|path: &str| {
            path.ends_with(".id")
                || path.ends_with(".issuer")
                || path.ends_with(".subject")
                || path.contains(".audiences[")
                || (path.contains(".customClaims[") && path.ends_with(".value"))
        },
        "cache" => &|path: &str| path.ends_with(".key") || path.ends_with(".responseCondition"),
        "json-validation" => &|path: &str| path.ends_with(".errorMessage"),
        "transform-queryparams" => &|path: &str| path.ends_with(".value") && path.contains(".addQueryParameters["),
        "rate-limit" | "quota" | "spike-arrest" => &|path: &str| path.ends_with(".key"),
        _ => &|_: &str| false,
    }
}

/// A condition or selection rule: empty stays empty; otherwise it must parse in hgw's EL subset.
/// The text is kept as written (spaces included): Gravitee's V3 engine quotes it in the error it
/// answers when the condition fails to evaluate.
fn el_expression(text: &str, at: &str) -> Result<String, CompileError> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    if text.contains("#group") {
        return Err(err(at, "`#group`/`#groupName` are only set inside policies that match a regular expression"));
    }
    hgw_el::parse(text).map(|_| text.to_owned()).map_err(|e| err(at, format!("EL {e}")))
}

/// An optional boolean field of a configuration object: absent or null is false.
fn optional_bool(object: &Value, field: &str, at: &str) -> Result<bool, CompileError> {
    bool_or(object, field, at, false)
}

/// An optional boolean field of a configuration object: absent or null is `default`.
fn bool_or(object: &Value, field: &str, at: &str, default: bool) -> Result<bool, CompileError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(format!("{at}.{field}"), "expected true or false")),
    }
}

/// The first 8 bytes of a digest in hex: short ids that still change with what they digest.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn string_list(configuration: &Value, field: &str, at: &str) -> Result<Vec<String>, CompileError> {
    match configuration.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.trim().to_owned()),
                // Gravitee UIs sometimes store list entries as {"value": "..."} objects.
                Value::Object(o) => o
                    .get("value")
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| err(format!("{at}.{field}[{i}]"), "expected a string")),
                _ => Err(err(format!("{at}.{field}[{i}]"), "expected a string")),
            })
            .filter(|item| item.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        Some(_) => Err(err(format!("{at}.{field}"), "expected a list")),
    }
}

fn name_values(configuration: &Value, field: &str, at: &str) -> Result<Vec<pb::Header>, CompileError> {
    let list: Vec<NameValue> = configuration
        .get(field)
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| err(format!("{at}.{field}"), e.to_string()))?
        .unwrap_or_default();
    Ok(headers(&list))
}

fn transform_headers(configuration: &Value, at: &str) -> Result<pb::TransformHeadersPolicy, CompileError> {
    Ok(pb::TransformHeadersPolicy {
        remove_headers: string_list(configuration, "removeHeaders", at)?,
        whitelist_headers: string_list(configuration, "whitelistHeaders", at)?,
        add_headers: name_values(configuration, "addHeaders", at)?,
        append_headers: name_values(configuration, "appendHeaders", at)?,
    })
}

fn ip_filtering(configuration: &Value, at: &str) -> Result<pb::IpFilteringPolicy, CompileError> {
    let check = |field: &str| -> Result<Vec<String>, CompileError> {
        let list = string_list(configuration, field, at)?;
        for (i, item) in list.iter().enumerate() {
            let ip = item.split_once('/').map_or(item.as_str(), |(ip, _)| ip);
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(err(
                    format!("{at}.{field}[{i}]"),
                    format!("`{item}` is not an IP or CIDR (host names are not supported yet)"),
                ));
            }
        }
        Ok(list)
    };
    Ok(pb::IpFilteringPolicy {
        match_all_from_x_forwarded_for: configuration
            .get("matchAllFromXForwardedFor")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        whitelist_ips: check("whitelistIps")?,
        blacklist_ips: check("blacklistIps")?,
    })
}

fn request_content_limit(configuration: &Value, at: &str) -> Result<pb::RequestContentLimitPolicy, CompileError> {
    let limit = match configuration.get("limit") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let limit = limit.ok_or_else(|| err(format!("{at}.limit"), "the limit must be a number of bytes"))?;
    Ok(pb::RequestContentLimitPolicy { limit })
}

fn assign_attributes(configuration: &Value, at: &str) -> Result<pb::AssignAttributesPolicy, CompileError> {
    Ok(pb::AssignAttributesPolicy { attributes: name_values(configuration, "attributes", at)? })
}

/// A JWT plan's configuration (Gravitee's `jwt` policy): signature, key resolver, claims, scopes.
fn jwt_security(configuration: &Value, at: &str) -> Result<pb::JwtSecurity, CompileError> {
    check_el(configuration, at, &|_: &str| false)?;
    let signature =
        configuration.get("signature").and_then(Value::as_str).unwrap_or("RSA_RS256").trim().to_ascii_uppercase();
    let algorithm = match signature.as_str() {
        "RSA_RS256" | "RS256" => "RS256",
        "RSA_RS384" | "RS384" => "RS384",
        "RSA_RS512" | "RS512" => "RS512",
        "HMAC_HS256" | "HS256" => "HS256",
        "HMAC_HS384" | "HS384" => "HS384",
        "HMAC_HS512" | "HS512" => "HS512",
        other => return Err(err(format!("{at}.signature"), format!("signature `{other}` is not supported"))),
    };
    let resolver = configuration
        .get("publicKeyResolver")
        .and_then(Value::as_str)
        .unwrap_or("GIVEN_KEY")
        .trim()
        .to_ascii_uppercase();
    let parameter =
        configuration.get("resolverParameter").and_then(Value::as_str).unwrap_or_default().trim().to_owned();
    if parameter.is_empty() {
        return Err(err(format!("{at}.resolverParameter"), "the key is missing"));
    }
    let mut jwks_url = String::new();
    let (public_keys_pem, hmac_secret) = match resolver.as_str() {
        "GIVEN_KEY" if algorithm.starts_with("HS") => (Vec::new(), parameter),
        "GIVEN_KEY" => {
            if !parameter.contains("-----BEGIN") {
                return Err(err(
                    format!("{at}.resolverParameter"),
                    "expected an RSA public key in PEM form (ssh-rsa keys are not supported yet)",
                ));
            }
            jsonwebtoken::DecodingKey::from_rsa_pem(parameter.as_bytes())
                .map_err(|e| err(format!("{at}.resolverParameter"), format!("not an RSA public key: {e}")))?;
            (vec![parameter], String::new())
        }
        "JWKS_URL" => {
            if algorithm.starts_with("HS") {
                return Err(err(format!("{at}.signature"), "a JWKS holds public keys: use an RSA signature"));
            }
            let uri: axum::http::Uri = parameter
                .parse()
                .map_err(|_| err(format!("{at}.resolverParameter"), format!("`{parameter}` is not a URL")))?;
            if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                return Err(err(format!("{at}.resolverParameter"), format!("`{parameter}` is not an http(s) URL")));
            }
            jwks_url = parameter;
            (Vec::new(), String::new())
        }
        other => {
            return Err(err(
                format!("{at}.publicKeyResolver"),
                format!("key resolver `{other}` is not supported yet (GIVEN_KEY and JWKS_URL are)"),
            ));
        }
    };
    if configuration
        .get("confirmationMethodValidation")
        .and_then(|c| c.get("certificateBoundThumbprint"))
        .and_then(|c| c.get("enabled"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(err(
            format!("{at}.confirmationMethodValidation"),
            "certificate-bound tokens are not supported yet",
        ));
    }
    Ok(pb::JwtSecurity {
        algorithm: algorithm.to_owned(),
        public_keys_pem,
        hmac_secret,
        client_id_claim: configuration
            .get("clientIdClaim")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        user_claim: configuration.get("userClaim").and_then(Value::as_str).unwrap_or_default().trim().to_owned(),
        propagate_auth_header: configuration.get("propagateAuthHeader").and_then(Value::as_bool).unwrap_or(true),
        required_scopes: string_list(configuration, "requiredScopes", at)?,
        check_required_scopes: configuration.get("checkRequiredScopes").and_then(Value::as_bool).unwrap_or(false),
        jwks_url,
        jwks: String::new(),
    })
}

/// The group's `services.healthCheck` (Gravitee's `http-health-check` service), when enabled.
fn health_check(services: &Value, at: &str) -> Result<Option<pb::HealthCheck>, CompileError> {
    let services = model::object_or_json_string(services).map_err(|m| err(at, m))?;
    let Some(check) = services.get("healthCheck") else {
        return Ok(None);
    };
    let at = format!("{at}.healthCheck");
    if !check.get("enabled").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(None);
    }
    match check.get("type").and_then(Value::as_str).map(norm).as_deref() {
        None | Some("http-health-check") => {}
        Some(other) => {
            return Err(err(
                format!("{at}.type"),
                format!("health check `{other}` is not supported (http-health-check is)"),
            ));
        }
    }
    let configuration = model::object_or_json_string(check.get("configuration").unwrap_or(&Value::Null))
        .map_err(|m| err(format!("{at}.configuration"), m))?;
    let at = format!("{at}.configuration");
    check_el(&configuration, &at, &|path: &str| path.ends_with(".assertion"))?;
    let text = |field: &str, default: &str| -> String {
        configuration
            .get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_owned()
    };
    let interval =
        schedule_interval(&text("schedule", "*/1 * * * * *")).map_err(|m| err(format!("{at}.schedule"), m))?;
    let method = text("method", "GET").to_ascii_uppercase();
    if !method.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(err(format!("{at}.method"), format!("`{method}` is not an HTTP method")));
    }
    let path = text("target", "/");
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        return Err(err(format!("{at}.target"), format!("`{path}` is not a path")));
    }
    let assertion = el_expression(&text("assertion", "{#response.status == 200}"), &format!("{at}.assertion"))?;
    let threshold = |field: &str| -> Result<u32, CompileError> {
        match configuration.get(field) {
            None => Ok(2),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| (1..=100).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| err(format!("{at}.{field}"), "must be a number from 1 to 100")),
        }
    };
    Ok(Some(pb::HealthCheck {
        interval_ms: interval.as_millis() as u64,
        method,
        path,
        override_endpoint_path: configuration.get("overrideEndpointPath").and_then(Value::as_bool).unwrap_or(false),
        headers: name_values(&configuration, "headers", &at)?,
        assertion,
        success_threshold: threshold("successThreshold")?,
        failure_threshold: threshold("failureThreshold")?,
    }))
}

/// Gravitee schedules are Spring cron expressions (seconds first). The fixed-period forms are
/// supported: every N seconds, minutes or hours.
fn schedule_interval(cron: &str) -> Result<std::time::Duration, String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let unsupported = || {
        format!(
            "schedule `{cron}`: only fixed periods (`*/N * * * * *`, `0 */N * * * *`, `0 0 */N * * *`) are supported"
        )
    };
    if fields.len() != 6 || fields[3..].iter().any(|f| *f != "*" && *f != "?") {
        return Err(unsupported());
    }
    let every = |field: &str| -> Option<u64> {
        match field {
            "*" => Some(1),
            f => f.strip_prefix("*/").and_then(|n| n.parse().ok()).filter(|n| *n > 0),
        }
    };
    let seconds = match (fields[0], fields[1], fields[2]) {
        (s, "*", "*") => every(s).ok_or_else(unsupported)?,
        ("0", m, "*") => every(m).ok_or_else(unsupported)? * 60,
        ("0", "0", h) => every(h).ok_or_else(unsupported)? * 3600,
        _ => return Err(unsupported()),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

/// `rate-limit` (`rate`), `quota` (`quota`) and `spike-arrest` (`spike`): one shape, three semantics.
fn rate_limit(configuration: &Value, at: &str, kind: pb::RateLimitKind) -> Result<pb::RateLimitPolicy, CompileError> {
    let (section, default_unit, default_headers) = match kind {
        pb::RateLimitKind::Quota => ("quota", "MONTHS", true),
        pb::RateLimitKind::SpikeArrest => ("spike", "SECONDS", false),
        _ => ("rate", "SECONDS", false),
    };
    let at_section = format!("{at}.{section}");
    let rate = configuration.get(section).ok_or_else(|| err(at_section.clone(), "missing"))?;
    let number = |field: &str| -> Result<Option<u64>, CompileError> {
        match rate.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| err(format!("{at_section}.{field}"), "must be a positive whole number")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| err(format!("{at_section}.{field}"), "must be a whole number"))
            }
            Some(_) => Err(err(format!("{at_section}.{field}"), "must be a number")),
        }
    };
    let mut limit = number("limit")?.unwrap_or(0);
    if limit == 0
        && let Some(dynamic) = rate.get("dynamicLimit").and_then(Value::as_str).filter(|d| !d.trim().is_empty())
    {
        limit = dynamic
            .trim()
            .parse()
            .map_err(|_| err(format!("{at_section}.dynamicLimit"), "dynamic limits (EL) are not supported yet"))?;
    }
    let period_time = number("periodTime")?.unwrap_or(1).max(1);
    let unit = rate.get("periodTimeUnit").and_then(Value::as_str).unwrap_or(default_unit).trim().to_ascii_uppercase();
    let unit_ms: u64 = match unit.as_str() {
        "MILLISECONDS" => 1,
        "SECONDS" => 1_000,
        "MINUTES" => 60_000,
        "HOURS" => 3_600_000,
        "DAYS" => 86_400_000,
        "WEEKS" => 7 * 86_400_000,
        // Java's ChronoUnit estimates (a month is 1/12 of 365.2425 days).
        "MONTHS" => 2_629_746_000,
        "YEARS" => 31_556_952_000,
        other => return Err(err(format!("{at_section}.periodTimeUnit"), format!("unknown time unit `{other}`"))),
    };
    let period_ms = period_time
        .checked_mul(unit_ms)
        .ok_or_else(|| err(format!("{at_section}.periodTime"), "the period is too long"))?;
    Ok(pb::RateLimitPolicy {
        kind: kind as i32,
        limit,
        period_time,
        period_unit: unit,
        period_ms,
        key: rate.get("key").and_then(Value::as_str).unwrap_or_default().trim().to_owned(),
        use_key_only: rate.get("useKeyOnly").and_then(Value::as_bool).unwrap_or(false),
        add_headers: configuration.get("addHeaders").and_then(Value::as_bool).unwrap_or(default_headers),
        mode: if configuration.get("async").and_then(Value::as_bool).unwrap_or(false) {
            pb::RateLimitMode::Async
        } else {
            pb::RateLimitMode::Strict
        } as i32,
        error_strategy: error_strategy(configuration, at)? as i32,
        // Numbered once the whole API is compiled (`number_counter_steps`).
        step: 0,
    })
}

/// Gravitee's `errorStrategy` (its spelling `FALLBACK_PASS_TROUGH`, and the corrected one, both accepted).
fn error_strategy(configuration: &Value, at: &str) -> Result<pb::RateLimitErrorStrategy, CompileError> {
    match configuration.get("errorStrategy") {
        None | Some(Value::Null) => Ok(pb::RateLimitErrorStrategy::PassThrough),
        Some(Value::String(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "" | "FALLBACK_PASS_TROUGH" | "FALLBACK_PASS_THROUGH" => Ok(pb::RateLimitErrorStrategy::PassThrough),
            "BLOCK_ON_INTERNAL_ERROR" => Ok(pb::RateLimitErrorStrategy::Block),
            other => Err(err(
                format!("{at}.errorStrategy"),
                format!("unknown strategy `{other}` (FALLBACK_PASS_TROUGH or BLOCK_ON_INTERNAL_ERROR)"),
            )),
        },
        Some(_) => Err(err(format!("{at}.errorStrategy"), "must be a string")),
    }
}

/// `url-rewriting`: response headers and (when asked) the response body.
fn url_rewriting(configuration: &Value, at: &str) -> Result<pb::UrlRewritingPolicy, CompileError> {
    let flag = |field: &str| configuration.get(field).and_then(Value::as_bool);
    let from_regex = configuration.get("fromRegex").and_then(Value::as_str).unwrap_or_default().to_owned();
    if from_regex.is_empty() {
        return Err(err(format!("{at}.fromRegex"), "the regular expression is missing"));
    }
    hgw_el::JavaRegex::new(&from_regex)
        .map_err(|e| err(format!("{at}.fromRegex"), format!("not a valid regular expression: {e}")))?;
    Ok(pb::UrlRewritingPolicy {
        from_regex,
        to_replacement: configuration.get("toReplacement").and_then(Value::as_str).unwrap_or_default().to_owned(),
        // Gravitee's defaults: headers are rewritten, bodies are not.
        rewrite_response_headers: flag("rewriteResponseHeaders").unwrap_or(true),
        rewrite_response_body: flag("rewriteResponseBody").unwrap_or(false),
    })
}

/// Largest script hgw accepts (each of a `javascript` step's scripts too): a script is code an API
/// publisher wrote, not data; anything this large is a mistake or an attack on the dataplanes.
const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// Gravitee's `js` (`graal`) and `javascript` policies: the configuration as written; the dataplane
/// decides which scripts run in each phase, as Gravitee's policy does on each engine.
fn javascript(configuration: &Value, at: &str, graal: bool) -> Result<pb::JavascriptPolicy, CompileError> {
    let script = |field: &str| -> Result<String, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) if text.len() > MAX_SCRIPT_BYTES => Err(err(
                format!("{at}.{field}"),
                format!("the script is {} bytes; hgw accepts scripts up to {MAX_SCRIPT_BYTES} bytes", text.len()),
            )),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(err(format!("{at}.{field}"), "a script must be a string")),
        }
    };
    let flag = |field: &str| optional_bool(configuration, field, at);
    let policy = pb::JavascriptPolicy {
        graal,
        script: script("script")?,
        read_content: flag("readContent")?,
        override_content: flag("overrideContent")?,
        // The `js` policy has only `script`; its configuration ignores anything else.
        on_request_script: if graal { String::new() } else { script("onRequestScript")? },
        on_request_content_script: if graal { String::new() } else { script("onRequestContentScript")? },
        on_response_script: if graal { String::new() } else { script("onResponseScript")? },
        on_response_content_script: if graal { String::new() } else { script("onResponseContentScript")? },
    };
    Ok(policy)
}

/// Gravitee's `latency`: `time` in `timeUnit` (java.util.concurrent.TimeUnit names).
fn latency(configuration: &Value, at: &str) -> Result<pb::LatencyPolicy, CompileError> {
    let time = match configuration.get("time") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| err(format!("{at}.time"), "the time must be a whole number, 0 or more"))?
        }
        Some(_) => return Err(err(format!("{at}.time"), "the time must be a number")),
    };
    let millis_per_unit: u64 = match configuration.get("timeUnit").and_then(Value::as_str).map(str::trim) {
        // Gravitee's policy reads a missing unit as null and fails every request (see the proto).
        None => return Ok(pb::LatencyPolicy { delay_ms: 0, broken: true }),
        Some("NANOSECONDS" | "MICROSECONDS") => 0,
        Some("MILLISECONDS") => 1,
        Some("SECONDS") => 1_000,
        Some("MINUTES") => 60_000,
        Some("HOURS") => 3_600_000,
        Some("DAYS") => 86_400_000,
        Some(other) => return Err(err(format!("{at}.timeUnit"), format!("`{other}` is not a time unit"))),
    };
    let delay_ms = time
        .checked_mul(millis_per_unit)
        .filter(|ms| *ms <= 3_600_000)
        .ok_or_else(|| err(format!("{at}.time"), "a latency above one hour is refused (it would hold connections)"))?;
    Ok(pb::LatencyPolicy { delay_ms, broken: false })
}

/// Gravitee's `transform-queryparams`: `clearAll`, `addQueryParameters` [{name, value (EL),
/// appendToExistingArray}], `removeQueryParameters` [names]. As Gravitee's policy: an addition with a
/// blank name or without a value is skipped, names are not trimmed.
fn transform_query_params(configuration: &Value, at: &str) -> Result<pb::TransformQueryParamsPolicy, CompileError> {
    use pb::transform_query_params_policy::Parameter;
    let clear_all = optional_bool(configuration, "clearAll", at)?;
    let list = |field: &str| match configuration.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(err(format!("{at}.{field}"), "expected a list")),
    };
    let mut add = Vec::new();
    for (i, item) in list("addQueryParameters")?.iter().enumerate() {
        let at = format!("{at}.addQueryParameters[{i}]");
        if !item.is_object() {
            return Err(err(at, "expected an object {name, value, appendToExistingArray}"));
        }
        let text = |field: &str| match item.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(format!("{at}.{field}"), "expected a string")),
        };
        let (Some(name), Some(value)) = (text("name")?, text("value")?) else {
            continue;
        };
        let append_to_existing = optional_bool(item, "appendToExistingArray", &at)?;
        if !name.trim().is_empty() {
            add.push(Parameter { name, value, append_to_existing });
        }
    }
    let mut remove = Vec::new();
    for (i, item) in list("removeQueryParameters")?.iter().enumerate() {
        match item {
            Value::Null => {}
            Value::String(name) if name.trim().is_empty() => {}
            Value::String(name) => remove.push(name.clone()),
            _ => return Err(err(format!("{at}.removeQueryParameters[{i}]"), "expected a string")),
        }
    }
    Ok(pb::TransformQueryParamsPolicy { clear_all, add, remove })
}

/// Gravitee's `json-validation` (2.x): `schema` (JSON Schema text), `errorMessage` (EL),
/// `validateUnchecked`, `deepCheck`, `straightRespondMode`; `scope` is read by the v2 conversion only.
/// `None`: no schema, where Gravitee's policy validates nothing. A schema that is not JSON or not a valid
/// draft 4 schema rejects the API (Gravitee would skip or fail it per request).
fn json_validation(configuration: &Value, at: &str) -> Result<Option<pb::JsonValidationPolicy>, CompileError> {
    let text = |field: &str| match configuration.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(format!("{at}.{field}"), "expected a string")),
    };
    let flag = |field: &str| optional_bool(configuration, field, at);
    let schema = text("schema")?;
    if schema.trim().is_empty() {
        return Ok(None);
    }
    check_json_schema(&schema).map_err(|reason| err(format!("{at}.schema"), reason))?;
    Ok(Some(pb::JsonValidationPolicy {
        schema,
        error_message: text("errorMessage")?,
        validate_unchecked: flag("validateUnchecked")?,
        deep_check: flag("deepCheck")?,
        straight_respond_mode: flag("straightRespondMode")?,
    }))
}

/// The schema as the dataplane compiles it (draft 4 whatever `$schema` names, draft 3 refused, no
/// remote `$ref`), so a schema the dataplane would refuse rejects the API here with its field.
fn check_json_schema(text: &str) -> Result<(), String> {
    let mut schema: Value = serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    if let Some(object) = schema.as_object_mut() {
        if object.get("$schema").and_then(Value::as_str).is_some_and(|s| s.contains("draft-03")) {
            return Err("draft 3 schemas are not supported (draft 4 and the drafts read as it are)".into());
        }
        object.remove("$schema");
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .map(|_| ())
        .map_err(|e| format!("not a valid draft 4 JSON Schema: {e}"))
}

/// Gravitee's `resource-filtering` (1.x): `whitelist` and `blacklist`, each a list of `{pattern,
/// methods}` (a missing pattern matches every path, no methods every method). Methods are Gravitee's
/// `HttpMethod` names; an unknown one rejects the API, as Gravitee cannot read the configuration.
fn resource_filtering(configuration: &Value, at: &str) -> Result<pb::ResourceFilteringPolicy, CompileError> {
    use pb::resource_filtering_policy::Resource;
    const METHODS: &[&str] = &["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"];
    let list = |field: &str| -> Result<Vec<Resource>, CompileError> {
        let items = match configuration.get(field) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(err(format!("{at}.{field}"), "expected a list")),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{at}.{field}[{i}]");
                let pattern = match item.get("pattern") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(p)) => p.clone(),
                    Some(_) => return Err(err(format!("{at}.pattern"), "expected a string")),
                };
                let methods = match item.get("methods") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(methods)) => methods
                        .iter()
                        .enumerate()
                        .map(|(j, m)| {
                            let method = m.as_str().map(|m| m.trim().to_ascii_uppercase()).unwrap_or_default();
                            if METHODS.contains(&method.as_str()) {
                                Ok(method)
                            } else {
                                Err(err(
                                    format!("{at}.methods[{j}]"),
                                    format!("{m} is not an HTTP method Gravitee knows"),
                                ))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(err(format!("{at}.methods"), "expected a list")),
                };
                Ok(Resource { pattern, methods })
            })
            .collect()
    };
    Ok(pb::ResourceFilteringPolicy { whitelist: list("whitelist")?, blacklist: list("blacklist")? })
}

/// Gravitee's `policy-override-request-method`.
fn override_method(configuration: &Value, at: &str) -> Result<pb::OverrideMethodPolicy, CompileError> {
    let method = configuration.get("method").and_then(Value::as_str).unwrap_or_default().trim().to_ascii_uppercase();
    const METHODS: &[&str] = &["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"];
    if !METHODS.contains(&method.as_str()) {
        return Err(err(format!("{at}.method"), format!("`{method}` is not an HTTP method Gravitee knows")));
    }
    Ok(pb::OverrideMethodPolicy { method })
}

/// Gravitee's `http-redirect`: rules tried in order, each a Java regular expression matched against the
/// whole path below the context path.
fn http_redirect(configuration: &Value, at: &str) -> Result<pb::HttpRedirectPolicy, CompileError> {
    let rules = regex_rules(configuration, at, "path", "location")?
        .into_iter()
        .map(|(rule, at, path_regex, location)| {
            let status = rule
                .get("status")
                .and_then(Value::as_u64)
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| err(format!("{at}.status"), "must be an HTTP status code (100-599)"))?;
            Ok(pb::http_redirect_policy::Rule { path_regex, location, status: status as u32 })
        })
        .collect::<Result<_, CompileError>>()?;
    Ok(pb::HttpRedirectPolicy { rules })
}

/// A policy's `rules`: each a Java regular expression (`regex_field`, matched against the whole path,
/// checked here) and a non-empty target (`target_field`, an EL template), with the rule and its path.
fn regex_rules<'c>(
    configuration: &'c Value,
    at: &str,
    regex_field: &str,
    target_field: &str,
) -> Result<Vec<(&'c Value, String, String, String)>, CompileError> {
    let rules = match configuration.get("rules") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(rules)) => rules,
        Some(_) => return Err(err(format!("{at}.rules"), "must be a list")),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = format!("{at}.rules[{i}]");
            let regex = rule.get(regex_field).and_then(Value::as_str).unwrap_or_default().to_owned();
            regex::Regex::new(&format!("^(?:{regex})$"))
                .map_err(|e| err(format!("{at}.{regex_field}"), format!("not a valid regular expression: {e}")))?;
            let target = rule.get(target_field).and_then(Value::as_str).unwrap_or_default().trim().to_owned();
            if target.is_empty() {
                return Err(err(format!("{at}.{target_field}"), "is missing"));
            }
            Ok((rule, at, regex, target))
        })
        .collect()
}

/// Gravitee's `dynamic-routing`: rules tried in order, each a Java regular expression matched against
/// the whole path below the context path, and the URL (an EL template) the request goes to.
fn dynamic_routing(configuration: &Value, at: &str) -> Result<pb::DynamicRoutingPolicy, CompileError> {
    let rules = regex_rules(configuration, at, "pattern", "url")?
        .into_iter()
        .map(|(_, _, pattern, url)| pb::dynamic_routing_policy::Rule { pattern, url })
        .collect();
    Ok(pb::DynamicRoutingPolicy { rules })
}

/// Gravitee's `status-code` (transform-status-code).
/// Gravitee's json-to-json: the JOLT specification (an EL template). Without EL it is checked here:
/// an operation hgw does not run rejects the API; text that is not a JOLT chain at all deploys, and
/// every request gets Gravitee's answer for it (500 JSON_INVALID_SPECIFICATION), as Gravitee's does.
fn json_to_json(configuration: &Value, at: &str) -> Result<pb::JsonToJsonPolicy, CompileError> {
    let specification = match configuration.get("specification") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    let at_spec = format!("{at}.specification");
    if let Ok(Value::Array(operations)) = serde_json::from_str::<Value>(&specification) {
        for (i, operation) in operations.iter().enumerate() {
            let name = operation.get("operation").and_then(Value::as_str).unwrap_or_default();
            if !["shift", "default", "remove"].contains(&name) {
                return Err(err(
                    format!("{at_spec}[{i}].operation"),
                    format!("JOLT operation `{name}` is not supported by hgw (it runs shift, default and remove)"),
                ));
            }
        }
        let constant = !specification.contains("{#") && !specification.contains("{(");
        if constant && let Err(e) = serde_json::from_str::<harmony_jolt::TransformSpec>(&specification) {
            tracing::warn!(field = %at_spec, error = %e, "JOLT specification does not parse; requests get Gravitee's 500 for it");
        }
    } else {
        tracing::warn!(field = %at_spec, "JOLT specification is not a JSON list; requests get Gravitee's 500 for it");
    }
    Ok(pb::JsonToJsonPolicy {
        specification,
        override_content_type: configuration.get("overrideContentType").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// Gravitee's json-xml: `rootElement` encloses the XML (`root` when left out). Gravitee's gateway
/// writes it as given (its schema's name pattern is only the console's check), so any text is kept;
/// a number or boolean is read as its text, as Jackson does.
fn json_to_xml(configuration: &Value, at: &str) -> Result<pb::JsonToXmlPolicy, CompileError> {
    let root_element = match configuration.get("rootElement") {
        None | Some(Value::Null) => "root".to_owned(),
        Some(Value::String(name)) => name.clone(),
        Some(scalar @ (Value::Number(_) | Value::Bool(_))) => scalar.to_string(),
        Some(_) => return Err(err(format!("{at}.rootElement"), "must be a string (the XML root element name)")),
    };
    Ok(pb::JsonToXmlPolicy { root_element })
}

/// Gravitee's retry: Gravitee's defaults for 0 (one retry, a 1 s timeout per attempt); the condition
/// is EL over `#response`.
fn retry(configuration: &Value, at: &str) -> Result<pb::RetryPolicy, CompileError> {
    let number = |field: &str| -> Result<u64, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| err(format!("{at}.{field}"), "must be a non-negative number")),
        }
    };
    let condition = configuration.get("condition").and_then(Value::as_str).unwrap_or_default();
    let condition = el_expression(condition, &format!("{at}.condition"))?;
    let max_retries = number("maxRetries")?;
    Ok(pb::RetryPolicy {
        condition,
        max_retries: if max_retries == 0 { 1 } else { u32::try_from(max_retries.min(100)).unwrap_or(100) },
        timeout_ms: match number("timeout")? {
            0 => 1000,
            ms => ms,
        },
        delay_ms: number("delay")?.min(3_600_000),
        last_response: configuration.get("lastResponse").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// gravitee-policy-generate-jwt 1.8's configuration. Its key is checked here (parsed and made to sign
/// once), so a definition whose every request would fail on its key is rejected naming `content`
/// (Gravitee deploys it and answers 500 `Unable to generate JWT token: ...` per request). Key
/// resolvers that read a keystore or PEM file on the gateway host are refused: hgw takes the key
/// inline. Nothing here quotes the key.
fn generate_jwt(configuration: &Value, at: &str) -> Result<pb::GenerateJwtPolicy, CompileError> {
    let text = |field: &str| -> Result<Option<String>, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(format!("{at}.{field}"), "expected a string")),
        }
    };
    let algorithm = match text("signature")?.as_deref() {
        None | Some("RSA_RS256") => "RS256",
        Some("HMAC_HS256") => "HS256",
        Some("HMAC_HS384") => "HS384",
        Some("HMAC_HS512") => "HS512",
        Some(other) => {
            return Err(err(
                format!("{at}.signature"),
                format!("`{other}` is not one of RSA_RS256, HMAC_HS256, HMAC_HS384, HMAC_HS512"),
            ));
        }
    };
    let content = text("content")?.ok_or_else(|| err(format!("{at}.content"), "no key is configured"))?;
    let key = if algorithm == "RS256" {
        // Gravitee's HMAC signers ignore the key resolver; its RSA signer honours it.
        match text("keyResolver")?.as_deref() {
            None | Some("INLINE") => content.into_bytes(),
            Some(resolver @ ("PEM" | "JKS" | "PKCS12")) => {
                return Err(err(
                    format!("{at}.keyResolver"),
                    format!(
                        "`{resolver}` reads a key file on the gateway host; hgw takes the PEM private key inline \
                         (keyResolver INLINE)"
                    ),
                ));
            }
            Some(other) => {
                return Err(err(
                    format!("{at}.keyResolver"),
                    format!("`{other}` is not one of INLINE, PEM, JKS, PKCS12"),
                ));
            }
        }
    } else if configuration.get("secretBase64Encoded").and_then(Value::as_bool).unwrap_or(false) {
        // java.util.Base64's basic decoder: the standard alphabet, padding optional, nothing else.
        use base64::Engine;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        engine.decode(content.as_bytes()).map_err(|_| err(format!("{at}.content"), "the secret is not valid base64"))?
    } else {
        content.into_bytes()
    };
    hgw_proto::signing::signing_key(algorithm, &key).map_err(|reason| err(format!("{at}.content"), reason))?;
    match text("x509CertificateChain")?.as_deref() {
        // X5C adds the chain of a keystore entry only: with an inline key Gravitee adds nothing either.
        None | Some("NONE" | "X5C") => {}
        Some(other) => return Err(err(format!("{at}.x509CertificateChain"), format!("`{other}` is not NONE or X5C"))),
    }
    let expires_in = match configuration.get("expiresIn") {
        None => 30,
        Some(Value::Null) => 0,
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| err(format!("{at}.expiresIn"), "must be a whole number"))?,
    };
    let unit_seconds: u64 = match text("expiresInUnit")?.as_deref() {
        None | Some("SECONDS") => 1,
        Some("MINUTES") => 60,
        Some("HOURS") => 3600,
        Some("DAYS") => 86_400,
        Some(other) => {
            return Err(err(
                format!("{at}.expiresInUnit"),
                format!("`{other}` is not one of SECONDS, MINUTES, HOURS, DAYS"),
            ));
        }
    };
    let expires_in_seconds = match u64::try_from(expires_in) {
        Ok(0) | Err(_) => 0,
        Ok(n) => n
            .checked_mul(unit_seconds)
            .filter(|s| *s <= 315_576_000_000)
            .ok_or_else(|| err(format!("{at}.expiresIn"), "is too far in the future"))?,
    };
    let mut custom_claims = Vec::new();
    if let Some(claims) = configuration.get("customClaims").filter(|v| !v.is_null()) {
        let Value::Array(claims) = claims else { return Err(err(format!("{at}.customClaims"), "expected a list")) };
        for (i, claim) in claims.iter().enumerate() {
            let name = claim.get("name").and_then(Value::as_str).map(str::trim).unwrap_or_default();
            if name.is_empty() {
                return Err(err(format!("{at}.customClaims[{i}].name"), "must not be empty"));
            }
            match claim.get("value") {
                // Gravitee sets a null claim, which the token leaves out.
                None | Some(Value::Null) => {}
                Some(Value::String(value)) => {
                    custom_claims.push(pb::Header { name: name.to_owned(), value: value.clone() })
                }
                Some(_) => return Err(err(format!("{at}.customClaims[{i}].value"), "expected a string")),
            }
        }
    }
    Ok(pb::GenerateJwtPolicy {
        algorithm: algorithm.to_owned(),
        key,
        kid: text("kid")?.unwrap_or_default(),
        audiences: match configuration.get("audiences") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, a)| match a {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(err(format!("{at}.audiences[{i}]"), "expected a string")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err(format!("{at}.audiences"), "expected a list")),
        },
        expires_in_seconds,
        id: text("id")?.unwrap_or_default(),
        issuer: match configuration.get("issuer") {
            None => "urn://gravitee-api-gw".to_owned(),
            _ => text("issuer")?.unwrap_or_default(),
        },
        subject: text("subject")?.unwrap_or_default(),
        custom_claims,
    })
}

/// Gravitee's `errorCondition` when a definition leaves it out (the plugin's schema default).
const CALLOUT_ERROR_CONDITION: &str = "{#calloutResponse.status >= 400 and #calloutResponse.status <= 599}";

/// gravitee-policy-http-callout 5.x's configuration (APIM 4.6 to 4.10). A constant URL must be
/// http or https; `useSystemProxy` is refused (hgw has no system proxy setting), so a callout never
/// silently bypasses a proxy it was meant to go through.
fn http_callout(configuration: &Value, at: &str) -> Result<pb::HttpCalloutPolicy, CompileError> {
    let text = |field: &str| -> Result<Option<String>, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(format!("{at}.{field}"), "expected a string")),
        }
    };
    let flag = |field: &str| -> Result<bool, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(_) => Err(err(format!("{at}.{field}"), "expected true or false")),
        }
    };
    if flag("useSystemProxy")? {
        return Err(err(
            format!("{at}.useSystemProxy"),
            "hgw has no system proxy: a callout through the gateway's proxy is not supported",
        ));
    }
    let url = text("url")?.filter(|u| !u.trim().is_empty()).ok_or_else(|| err(format!("{at}.url"), "no URL"))?;
    if !url.contains("{#") && !url.contains("{(") {
        let parsed =
            url.trim().parse::<axum::http::Uri>().map_err(|e| err(format!("{at}.url"), format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(err(format!("{at}.url"), "only http and https URLs with a host can be called"));
        }
    }
    let method = text("method")?.unwrap_or_else(|| "GET".to_owned()).trim().to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"].contains(&method.as_str()) {
        return Err(err(format!("{at}.method"), format!("`{method}` is not an HTTP method hgw calls")));
    }
    let error_status_code = match configuration.get("errorStatusCode") {
        None | Some(Value::Null) => 500,
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|code| (100..=599).contains(code))
            .ok_or_else(|| err(format!("{at}.errorStatusCode"), "must be an HTTP status (100 to 599)"))?,
    };
    let error_condition = match text("errorCondition")? {
        Some(c) if !c.trim().is_empty() => c,
        _ => CALLOUT_ERROR_CONDITION.to_owned(),
    };
    el_expression(&error_condition, &format!("{at}.errorCondition"))?;
    let mut headers = Vec::new();
    for (i, header) in configuration.get("headers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = header.get("name").and_then(Value::as_str).map(str::trim).unwrap_or_default();
        if name.is_empty() || axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(format!("{at}.headers[{i}].name"), "not a header name"));
        }
        // Gravitee leaves out a header without a value.
        if let Some(value) = header.get("value").and_then(Value::as_str) {
            headers.push(pb::Header { name: name.to_owned(), value: value.to_owned() });
        }
    }
    let mut variables = Vec::new();
    for (i, variable) in configuration.get("variables").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = variable.get("name").and_then(Value::as_str).map(str::trim).unwrap_or_default();
        if name.is_empty() {
            return Err(err(format!("{at}.variables[{i}].name"), "must not be empty"));
        }
        variables.push(pb::CalloutVariable {
            name: name.to_owned(),
            value: variable.get("value").and_then(Value::as_str).map(str::to_owned),
        });
    }
    Ok(pb::HttpCalloutPolicy {
        method,
        url,
        headers,
        body: text("body")?.unwrap_or_default(),
        fire_and_forget: flag("fireAndForget")?,
        exit_on_error: flag("exitOnError")?,
        error_condition,
        error_status_code: u32::try_from(error_status_code).unwrap_or(500),
        error_content: text("errorContent")?.unwrap_or_default(),
        variables,
    })
}

/// Gravitee's cache policy 3.0 (`CachePolicyConfiguration`): its defaults (scope APPLICATION, 600 s,
/// GET/OPTIONS/HEAD when `methods` is empty). The resource it names is filled in later, from the API's
/// `resources` ([`resolve_cache_resources`]).
fn cache(configuration: &Value, at: &str) -> Result<pb::CachePolicy, CompileError> {
    let text = |field: &str| -> Result<String, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(format!("{at}.{field}"), "must be a string")),
        }
    };
    let cache_name = text("cacheName")?;
    let key = text("key")?;
    let response_condition = el_expression(&text("responseCondition")?, &format!("{at}.responseCondition"))?;
    let time_to_live_seconds = match configuration.get("timeToLiveSeconds") {
        None | Some(Value::Null) => 600,
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| err(format!("{at}.timeToLiveSeconds"), "must be a number"))?
            // Gravitee stores a negative TTL as "no TTL from the policy".
            .max(0) as u64,
    };
    let scope = match configuration.get("scope") {
        None | Some(Value::Null) => "APPLICATION".to_owned(),
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        Some(_) => return Err(err(format!("{at}.scope"), "must be API or APPLICATION")),
    };
    let application_scope = match scope.as_str() {
        "APPLICATION" => true,
        "API" => false,
        other => return Err(err(format!("{at}.scope"), format!("`{other}` is not API or APPLICATION"))),
    };
    let mut methods = Vec::new();
    match configuration.get("methods") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let method = item.as_str().map(|m| m.trim().to_ascii_uppercase()).unwrap_or_default();
                if !["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "OTHER"]
                    .contains(&method.as_str())
                {
                    return Err(err(format!("{at}.methods[{i}]"), "must be an HTTP method name"));
                }
                methods.push(method);
            }
        }
        Some(_) => return Err(err(format!("{at}.methods"), "must be a list of HTTP methods")),
    }
    Ok(pb::CachePolicy {
        cache_name,
        key,
        time_to_live_seconds,
        use_response_cache_headers: configuration
            .get("useResponseCacheHeaders")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        application_scope,
        methods,
        response_condition,
        resource: None,
    })
}

/// The cache policy's condition reads the endpoint's answer as `#upstreamResponse`; that is what hgw's
/// EL calls `#response` at the point the condition runs (right after the endpoint call).
fn upstream_response_as_response(configuration: &mut Value) {
    if let Some(Value::String(condition)) = configuration.get_mut("responseCondition") {
        *condition = condition.replace("#upstreamResponse", "#response");
    }
}

/// Gives each cache step the resource its `cacheName` names among the API's enabled `resources`. A
/// name with no such resource leaves the step without one (Gravitee deploys the API and fails the
/// cached requests with a 500); a resource of another type than Gravitee's cache resources rejects
/// the API, since hgw cannot tell what Gravitee would make of it.
fn resolve_cache_resources(
    flows: &mut [pb::Flow],
    plans: &mut [pb::Plan],
    resources: &[model::Resource],
    api_id: &str,
    redis_caches: &mut HashMap<String, pb::RedisCacheConnection>,
) -> Result<(), CompileError> {
    let api_flows = flows.iter_mut();
    let plan_flows = plans.iter_mut().flat_map(|plan| plan.flows.iter_mut());
    for flow in api_flows.chain(plan_flows) {
        for step in flow.request.iter_mut() {
            let Some(pb::step::Policy::Cache(policy)) = &mut step.policy else {
                continue;
            };
            let Some((index, resource)) =
                resources.iter().enumerate().find(|(_, r)| r.enabled && r.name == policy.cache_name)
            else {
                tracing::warn!(api = api_id, cache = %policy.cache_name, "cache step names no enabled resource of the API: cached requests answer 500, as Gravitee's");
                continue;
            };
            let (resource, redis) = cache_resource(resource, &format!("resources[{index}]"), api_id)?;
            if let Some(redis) = redis {
                redis_caches.insert(resource.id.clone(), redis);
            }
            policy.resource = Some(resource);
        }
    }
    Ok(())
}

/// Adds the `cache-redis` resources' connections to the compiled API. With `releaseCache`, Gravitee
/// ends each key with the API's deployment time, so that a redeployment starts with an empty cache;
/// definitions carry no such time, so a digest of the compiled API stands in for it: it changes
/// whenever the API does, and stays the same when an unchanged API is synced again or the agent
/// restarts.
fn with_redis_caches(api: &mut pb::Api, mut redis_caches: HashMap<String, pb::RedisCacheConnection>) {
    use prost::Message;
    use sha2::Digest;
    if redis_caches.values().any(|c| c.release_cache) {
        let deployed = short_hex(&sha2::Sha256::digest(api.encode_to_vec()));
        for connection in redis_caches.values_mut() {
            connection.deployed_at = deployed.clone();
        }
    }
    api.redis_caches = redis_caches;
}

/// Gravitee's `cache` (in-memory, one per gateway node) and `cache-redis` resources. A `cache-redis`
/// resource also gives how to reach its Redis, which stays on the agent.
fn cache_resource(
    resource: &model::Resource,
    at: &str,
    api_id: &str,
) -> Result<(pb::CacheResource, Option<pb::RedisCacheConnection>), CompileError> {
    use sha2::Digest;
    let configuration =
        model::object_or_json_string(&resource.configuration).map_err(|m| err(format!("{at}.configuration"), m))?;
    let number = |field: &str, default: u64| -> Result<u64, CompileError> {
        match configuration.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .map(|n| n.max(0) as u64)
                .ok_or_else(|| err(format!("{at}.configuration.{field}"), "must be a number")),
        }
    };
    let (backend, redis) = match resource.resource_type.trim() {
        "cache" => (pb::CacheBackend::Memory, None),
        "cache-redis" => (pb::CacheBackend::Redis, Some(redis_cache_connection(&configuration, at)?)),
        other => {
            return Err(err(
                format!("{at}.type"),
                format!("resource type `{other}` is not a cache resource hgw runs (`cache`, `cache-redis`)"),
            ));
        }
    };
    let digest =
        short_hex(&sha2::Sha256::digest(format!("{}\n{}\n{}", resource.name, resource.resource_type, configuration)));
    let time_to_live_seconds = number("timeToLiveSeconds", 0)?;
    let resource = pb::CacheResource {
        id: format!("{api_id}/{}/{digest}", resource.name),
        time_to_live_seconds,
        max_entries: number("maxEntriesLocalHeap", 1000)?,
        backend: backend as i32,
    };
    let redis = redis.map(|connection| pb::RedisCacheConnection { time_to_live_seconds, ..connection });
    Ok((resource, redis))
}

/// A `cache-redis` resource's Redis, read as Gravitee's resource reads its configuration: `host` and
/// `port` (or the older `standalone` object), `password`, `useSsl` (default true) with `ssl.trustAll`,
/// `sentinel` {`enabled`, `masterId`, `password`, `nodes`} (or the older `sentinelMode`), `timeout`
/// (ms, default 2000), `releaseCache`. Pool settings (`maxTotal`, `maxPoolSize`...) are not read: the
/// agent keeps a small pool per resource. A value written as EL (Gravitee evaluates the resource's
/// configuration, e.g. `{#secrets.get(...)}`) is refused: hgw does not evaluate it, and a literal
/// `{#...}` password would only fail later, at every request.
fn redis_cache_connection(configuration: &Value, at: &str) -> Result<pb::RedisCacheConnection, CompileError> {
    let at = &format!("{at}.configuration");
    let field = |path: &str| format!("{at}.{path}");
    let text = |value: Option<&Value>, path: &str| -> Result<Option<String>, CompileError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.contains("{#") => Err(err(
                field(path),
                "EL in a cache-redis resource's configuration is not evaluated by hgw: give the value itself",
            )),
            // As written: a password may begin or end with spaces.
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(err(field(path), "must be a string")),
        }
    };
    let port = |value: Option<&Value>, path: &str, default: u32| -> Result<u32, CompileError> {
        match value {
            None | Some(Value::Null) => Ok(default),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|p| (1..=65535).contains(p))
                .map(|p| p as u32)
                .ok_or_else(|| err(field(path), "must be a port number (1-65535)")),
        }
    };
    let host_of = |value: Option<&Value>, path: &str| -> Result<Option<String>, CompileError> {
        match text(value, path)?.map(|host| host.trim().to_owned()) {
            Some(host) if host.is_empty() || host.contains(['/', ' ', '@']) => {
                Err(err(field(path), "must be a host name or address"))
            }
            host => Ok(host),
        }
    };
    // Gravitee 4.x wrote `standalone: {host, port}`; 5.x writes `host`/`port` and reads both.
    let standalone = configuration.get("standalone").filter(|s| s.is_object());
    let mut host = host_of(configuration.get("host"), "host")?.unwrap_or_else(|| "localhost".to_owned());
    let mut port_number = port(configuration.get("port"), "port", 6379)?;
    if let Some(standalone) = standalone {
        if let Some(h) = host_of(standalone.get("host"), "standalone.host")? {
            host = h;
        }
        if standalone.get("port").is_some_and(|p| !p.is_null()) {
            port_number = port(standalone.get("port"), "standalone.port", 6379)?;
        }
    }
    let password = text(configuration.get("password"), "password")?.unwrap_or_default();
    let use_ssl = bool_or(configuration, "useSsl", at, true)?;
    let trust_all = match configuration.get("ssl") {
        Some(ssl) if ssl.is_object() => {
            for unsupported in ["trustStore", "keyStore"] {
                if ssl.get(unsupported).is_some_and(|v| !v.is_null() && v.get("type").is_none_or(|t| t != "NONE")) {
                    return Err(err(
                        field(&format!("ssl.{unsupported}")),
                        "not supported by hgw: the Redis certificate is checked against the system's roots \
                         (or not at all with `trustAll`)",
                    ));
                }
            }
            optional_bool(ssl, "trustAll", &field("ssl"))?
        }
        // The older boolean `ssl` is ignored by Gravitee too (`useSsl` decides).
        _ => false,
    };
    let sentinel = configuration.get("sentinel").filter(|s| s.is_object());
    let legacy_sentinel = optional_bool(configuration, "sentinelMode", at)?;
    let mut sentinel_master = String::new();
    let mut sentinel_nodes = Vec::new();
    let mut sentinel_password = None;
    if let Some(sentinel) = sentinel {
        let nodes = match sentinel.get("nodes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(nodes)) => nodes.clone(),
            Some(_) => return Err(err(field("sentinel.nodes"), "must be a list of {host, port}")),
        };
        // As Gravitee's: sentinel mode needs it enabled (or the older flag) and at least one node.
        if !nodes.is_empty() && (optional_bool(sentinel, "enabled", &field("sentinel"))? || legacy_sentinel) {
            for (i, node) in nodes.iter().enumerate() {
                let host = host_of(node.get("host"), &format!("sentinel.nodes[{i}].host"))?
                    .ok_or_else(|| err(field(&format!("sentinel.nodes[{i}].host")), "is required"))?;
                let port = port(node.get("port"), &format!("sentinel.nodes[{i}].port"), 26379)?;
                sentinel_nodes.push(pb::RedisCacheNode { host, port });
            }
            sentinel_master = text(sentinel.get("masterId"), "sentinel.masterId")?
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .ok_or_else(|| err(field("sentinel.masterId"), "is required in sentinel mode"))?;
            sentinel_password = text(sentinel.get("password"), "sentinel.password")?.filter(|p| !p.is_empty());
        }
    }
    let timeout_ms = match configuration.get("timeout") {
        None | Some(Value::Null) => 2000,
        Some(value) => value
            .as_u64()
            .filter(|t| *t <= 60_000)
            .map(|t| if t == 0 { 2000 } else { t })
            .ok_or_else(|| err(field("timeout"), "must be a number of milliseconds (at most 60000)"))?,
    };
    Ok(pb::RedisCacheConnection {
        host,
        port: port_number,
        // In sentinel mode Gravitee 4.x authenticated with the Sentinel password only.
        password: if password.is_empty() { sentinel_password.unwrap_or_default() } else { password },
        use_ssl,
        trust_all,
        sentinel_master,
        sentinel_nodes,
        timeout_ms,
        release_cache: optional_bool(configuration, "releaseCache", at)?,
        deployed_at: String::new(),
        time_to_live_seconds: 0,
    })
}

/// Gravitee's api-key policy as a flow step: its own header when `apiKeyHeader` is set, else the
/// gateway's (filled in with the plans' when credentials are attached).
fn api_key_step(configuration: &Value) -> pb::ApiKeySecurity {
    pb::ApiKeySecurity {
        header: configuration.get("apiKeyHeader").and_then(Value::as_str).map(str::trim).unwrap_or_default().to_owned(),
        query_param: String::new(),
        propagate_api_key: configuration.get("propagateApiKey").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// Gravitee's assign-content: `body` is a FreeMarker template, parsed here so an API using what hgw's
/// FreeMarker subset lacks is rejected with the construct named, never run half-understood.
fn assign_content(configuration: &Value, at: &str) -> Result<pb::AssignContentPolicy, CompileError> {
    let body = match configuration.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(body)) => body.clone(),
        Some(_) => return Err(err(format!("{at}.body"), "must be a string (a FreeMarker template)")),
    };
    hgw_el::freemarker::parse(&body).map_err(|e| err(format!("{at}.body"), e.message))?;
    Ok(pb::AssignContentPolicy { body })
}

fn status_code(configuration: &Value, at: &str) -> Result<pb::StatusCodePolicy, CompileError> {
    let status =
        |mapping: &Value, field: &str, i: usize| -> Result<u32, CompileError> {
            mapping.get(field).and_then(Value::as_u64).filter(|s| (100..=599).contains(s)).map(|s| s as u32).ok_or_else(
                || err(format!("{at}.statusMappings[{i}].{field}"), "must be an HTTP status code (100-599)"),
            )
        };
    let mappings = match configuration.get("statusMappings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(pb::status_code_policy::Mapping {
                    input: status(m, "inputStatusCode", i)?,
                    output: status(m, "outputStatusCode", i)?,
                })
            })
            .collect::<Result<_, CompileError>>()?,
        Some(_) => return Err(err(format!("{at}.statusMappings"), "must be a list")),
    };
    Ok(pb::StatusCodePolicy { mappings })
}

fn mock(configuration: &Value, at: &str) -> Result<pb::MockPolicy, CompileError> {
    let status = match configuration.get("status") {
        None => 200,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(_) => 0,
    };
    if !(100..=599).contains(&status) {
        return Err(err(format!("{at}.status"), "the mock status must be an HTTP status code (100-599)"));
    }
    let headers: Vec<NameValue> = configuration
        .get("headers")
        .map(|h| serde_json::from_value(h.clone()))
        .transpose()
        .map_err(|e| err(format!("{at}.headers"), e.to_string()))?
        .unwrap_or_default();
    for header in &headers {
        if axum::http::HeaderName::try_from(header.name.trim()).is_err()
            || axum::http::HeaderValue::try_from(header.value.as_str()).is_err()
        {
            return Err(err(format!("{at}.headers"), format!("`{}` is not a valid HTTP header", header.name)));
        }
    }
    Ok(pb::MockPolicy {
        status: status as u32,
        headers: self::headers(&headers),
        content: configuration.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

mod deploy_time;
mod oauth2;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod endpoint_tests;

/// Where definitions may name files (`trustStore.path`, `keyStore.certPath`, `keyStore.keyPath`): only
/// under `--definition-files-dir`. A definition comes from the control plane, so without this anyone
/// who can publish an API could make the agent read any file it can (a root-only private key ended
/// up in the compiled config); with no directory configured, no definition may name a file at all.
#[derive(Debug, Clone, Default)]
pub struct DefinitionFiles {
    /// Canonical (symlinks resolved) directory; `None`: file paths are refused.
    dir: Option<std::path::PathBuf>,
}

/// Largest file a definition may name: PEM bundles are kilobytes; this keeps `/dev/zero`-style
/// surprises out.
pub const MAX_DEFINITION_FILE_BYTES: u64 = 1024 * 1024;

impl DefinitionFiles {
    /// File paths in definitions are refused.
    pub fn disabled() -> DefinitionFiles {
        DefinitionFiles { dir: None }
    }

    /// File paths are accepted under `dir` (which must exist; it is canonicalized once here).
    pub fn under(dir: &std::path::Path) -> std::io::Result<DefinitionFiles> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(DefinitionFiles { dir: Some(dir) })
    }

    /// Reads `path` (relative paths are taken under the directory) if, once symlinks are resolved, it
    /// is a regular file inside the directory; the error is the reason, for the field's message.
    pub fn read(&self, path: &str) -> Result<String, String> {
        use std::io::Read;
        let Some(dir) = &self.dir else {
            return Err(format!(
                "`{path}`: definitions may not name files on the agent's host unless the agent is started \
                 with --definition-files-dir DIR and the file is under DIR (or give the PEM inline)"
            ));
        };
        let outside = || format!("`{path}` is not under --definition-files-dir {}", dir.display());
        let joined = dir.join(path);
        let resolved = match joined.canonicalize() {
            Ok(resolved) => resolved,
            // Say "cannot read" only for paths that would be inside: the message must not tell an API
            // publisher which files exist elsewhere on this host.
            Err(e) if lexically_normal(&joined).starts_with(dir) => return Err(format!("cannot read `{path}`: {e}")),
            Err(_) => return Err(outside()),
        };
        if !resolved.starts_with(dir) {
            return Err(outside());
        }
        let file = std::fs::File::open(&resolved).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("cannot read `{path}`: {e}"))?;
        if !meta.is_file() {
            return Err(format!("`{path}` is not a regular file"));
        }
        if meta.len() > MAX_DEFINITION_FILE_BYTES {
            return Err(format!("`{path}` is larger than {MAX_DEFINITION_FILE_BYTES} bytes"));
        }
        let mut text = String::new();
        file.take(MAX_DEFINITION_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read `{path}`: {e}"))?;
        Ok(text)
    }
}

/// `path` with `.` and `..` applied without touching the file system (symlinks are not resolved).
fn lexically_normal(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[path = "compile/body_policy_tests.rs"]
mod body_policy_tests;
