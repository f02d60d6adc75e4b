//! Gravitee's v4 API definition, read leniently: unknown fields are ignored, every field has a default,
//! and `null` counts as absent (exports are full of them). v2 definitions are mapped onto these same types
//! (see `v2.rs`), so one compiler serves both.
//!
//! Enum-like fields stay strings here; [`norm`] folds case and `_`/`-` when they are compiled.

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiV4 {
    pub id: String,
    pub name: String,
    pub definition_version: String,
    #[serde(rename = "type")]
    pub api_type: String,
    pub tags: Vec<String>,
    pub listeners: Vec<Listener>,
    pub endpoint_groups: Vec<EndpointGroup>,
    pub flow_execution: FlowExecution,
    pub flows: Vec<Flow>,
    pub plans: Vec<Plan>,
    pub analytics: Option<Analytics>,
    pub failover: Option<Failover>,
    pub response_templates: Map<String, Value>,
    /// v2 `execution_mode` (carried over by `v2.rs`): which of Gravitee's engines runs a v2 API.
    pub execution_mode: Value,
    /// The environment the API belongs to, when the definition says (shared policy groups are looked
    /// up in it).
    pub environment_id: String,
    /// `properties`: key/value pairs EL reads (`#api.properties['key']`).
    pub properties: Vec<Property>,
    /// `resources`: named components policies use (the cache policy's cache resources).
    pub resources: Vec<Resource>,
}

/// An API resource (`resources[]`, the same shape in v2 and v4).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub enabled: bool,
    /// An object, or a JSON string holding one.
    pub configuration: Value,
}

impl Default for Resource {
    fn default() -> Self {
        Resource { name: String::new(), resource_type: String::new(), enabled: true, configuration: Value::Null }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Property {
    pub key: String,
    pub value: String,
    pub encrypted: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    #[serde(rename = "type")]
    pub listener_type: String,
    pub paths: Vec<ListenerPath>,
    pub entrypoints: Vec<Entrypoint>,
    pub cors: Option<Cors>,
    /// Gravitee server ids this listener is bound to (empty: every server).
    pub servers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListenerPath {
    pub host: Option<String>,
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Entrypoint {
    #[serde(rename = "type")]
    pub entrypoint_type: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cors {
    pub enabled: bool,
    pub allow_origin: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds; Gravitee's default -1 sends no `Access-Control-Max-Age`.
    #[serde(default = "minus_one")]
    pub max_age: i64,
    pub allow_credentials: bool,
    pub run_policies: bool,
}

fn minus_one() -> i64 {
    -1
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointGroup {
    pub name: String,
    #[serde(rename = "type")]
    pub group_type: String,
    pub load_balancer: LoadBalancerConfig,
    /// An object, or a JSON string holding one (both occur in exports).
    pub shared_configuration: Value,
    pub endpoints: Vec<Endpoint>,
    /// `{healthCheck: {enabled, type, configuration}}`.
    pub services: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancerConfig {
    #[serde(rename = "type")]
    pub lb_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Endpoint {
    pub name: String,
    #[serde(rename = "type")]
    pub endpoint_type: String,
    pub weight: Option<i64>,
    pub secondary: bool,
    pub tenants: Vec<String>,
    pub inherit_configuration: bool,
    /// An object, or a JSON string holding one.
    pub configuration: Value,
    pub shared_configuration_override: Value,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            name: String::new(),
            endpoint_type: String::new(),
            weight: None,
            secondary: false,
            tenants: Vec::new(),
            inherit_configuration: true,
            configuration: Value::Null,
            shared_configuration_override: Value::Null,
        }
    }
}

/// The `http` part of an endpoint group's shared configuration.
#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpOptions {
    pub version: String,
    pub connect_timeout: i64,
    pub read_timeout: i64,
    pub idle_timeout: i64,
    pub keep_alive: bool,
    pub propagate_client_host: bool,
    pub use_compression: bool,
    pub propagate_client_accept_encoding: bool,
    pub follow_redirects: bool,
}

/// Gravitee's http-proxy connector defaults.
impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            version: "HTTP_1_1".into(),
            connect_timeout: 3_000,
            read_timeout: 10_000,
            idle_timeout: 60_000,
            keep_alive: true,
            propagate_client_host: false,
            use_compression: true,
            propagate_client_accept_encoding: false,
            follow_redirects: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SharedConfiguration {
    pub http: HttpOptions,
    pub headers: Vec<NameValue>,
    pub proxy: Option<EndpointProxy>,
    pub ssl: Option<Ssl>,
}

/// The `ssl` part of an endpoint's configuration (v4 http-proxy connector; v2 `ssl` has the same shape).
#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Ssl {
    pub trust_all: bool,
    pub hostname_verifier: bool,
    pub trust_store: Option<Store>,
    pub key_store: Option<Store>,
}

/// Hostname verification is on unless turned off; trusting everything is off unless turned on.
impl Default for Ssl {
    fn default() -> Self {
        Ssl { trust_all: false, hostname_verifier: true, trust_store: None, key_store: None }
    }
}

/// A trust store or key store: `type` PEM (`path`/`content`; for key stores `certPath`/`certContent`
/// and `keyPath`/`keyContent`), or JKS/PKCS12 (`path`/`content` base64, `password`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Store {
    #[serde(rename = "type")]
    pub store_type: String,
    pub path: String,
    pub content: String,
    pub cert_path: String,
    pub cert_content: String,
    pub key_path: String,
    pub key_content: String,
}

/// An endpoint's `proxy` (Gravitee's `HttpProxyOptions`; v2 calls the user `principal`).
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointProxy {
    pub enabled: bool,
    pub use_system_proxy: bool,
    pub host: String,
    /// A number, or a number written as a string.
    pub port: Value,
    pub username: Option<String>,
    pub principal: Option<String>,
    pub password: String,
    #[serde(rename = "type")]
    pub proxy_type: String,
}

/// Without the password.
impl std::fmt::Debug for EndpointProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointProxy")
            .field("enabled", &self.enabled)
            .field("use_system_proxy", &self.use_system_proxy)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("type", &self.proxy_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default, rename_all = "camelCase")]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FlowExecution {
    pub mode: String,
    pub match_required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Flow {
    pub name: String,
    pub enabled: bool,
    pub selectors: Vec<Selector>,
    pub request: Vec<Step>,
    pub response: Vec<Step>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow { name: String::new(), enabled: true, selectors: Vec::new(), request: Vec::new(), response: Vec::new() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Selector {
    #[serde(rename = "type")]
    pub selector_type: String,
    pub path: String,
    pub path_operator: String,
    pub methods: Vec<String>,
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub enabled: bool,
    pub policy: String,
    /// An object, or a JSON string holding one.
    pub configuration: Value,
    pub condition: String,
}

impl Default for Step {
    fn default() -> Self {
        Step {
            name: String::new(),
            enabled: true,
            policy: String::new(),
            configuration: Value::Null,
            condition: String::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub security: PlanSecurity,
    pub status: String,
    pub selection_rule: String,
    pub tags: Vec<String>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PlanSecurity {
    #[serde(rename = "type")]
    pub security_type: String,
    /// An object, or a JSON string holding one (v2's `securityDefinition`).
    pub configuration: Value,
}

#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Analytics {
    pub enabled: bool,
    pub logging: Option<Value>,
    /// v4 `analytics.tracing` `{enabled, verbose}` (both default false).
    pub tracing: Option<Value>,
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics { enabled: true, logging: None, tracing: None }
    }
}

/// v4 `failover`, with Gravitee's defaults.
#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Failover {
    pub enabled: bool,
    pub max_retries: i64,
    /// Milliseconds.
    pub slow_call_duration: i64,
    /// Milliseconds.
    pub open_state_duration: i64,
    pub max_failures: i64,
    pub per_subscription: bool,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            enabled: false,
            max_retries: 2,
            slow_call_duration: 2_000,
            open_state_duration: 10_000,
            max_failures: 5,
            per_subscription: true,
        }
    }
}

/// Folds an enum-like value the way Gravitee reads it: case-insensitive, `_` ≙ `-`.
pub fn norm(value: &str) -> String {
    value.trim().to_ascii_lowercase().replace('_', "-")
}

/// Removes `null` members everywhere, so `"tags": null` reads as "no tags" rather than a type error.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Some exports carry nested configuration as a JSON string; accept both forms.
pub fn object_or_json_string(value: &Value) -> Result<Value, String> {
    match value {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::String(text) if text.trim().is_empty() => Ok(Value::Object(Map::new())),
        Value::String(text) => {
            let mut parsed: Value = serde_json::from_str(text).map_err(|e| format!("is a string but not JSON: {e}"))?;
            strip_nulls(&mut parsed);
            Ok(parsed)
        }
        Value::Object(_) => Ok(value.clone()),
        other => Err(format!("must be an object, found {other}")),
    }
}
