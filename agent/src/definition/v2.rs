//! Gravitee v2 definitions (`"gravitee": "2.0.0"`), rewritten into the v4 shape so one compiler serves
//! both. The rewrite is structural only; what hgw cannot honour is still rejected by the compiler.

use serde_json::{Map, Value, json};

/// Rewrites a v2 definition into a v4-shaped JSON document (nulls already stripped).
pub fn to_v4(v2: &Value) -> Result<Value, String> {
    let obj = v2.as_object().ok_or("the definition is not a JSON object")?;
    if let Some(paths) = obj.get("paths").and_then(Value::as_object)
        && paths.values().any(|rules| rules.as_array().is_some_and(|r| !r.is_empty()))
    {
        return Err("`paths`: v1-style path policies are not supported; use flows (design studio)".into());
    }
    let proxy = obj.get("proxy").and_then(Value::as_object).cloned().unwrap_or_default();

    let mut paths = Vec::new();
    match proxy.get("virtual_hosts").and_then(Value::as_array) {
        Some(hosts) if !hosts.is_empty() => {
            for host in hosts {
                paths.push(json!({"host": host.get("host"), "path": host.get("path").cloned().unwrap_or(json!("/"))}));
            }
        }
        _ => {
            if let Some(context_path) = proxy.get("context_path") {
                paths.push(json!({"path": context_path}));
            }
        }
    }
    let listener = json!({
        "type": "http",
        "paths": paths,
        "entrypoints": [{"type": "http-proxy"}],
        "cors": proxy.get("cors"),
        "servers": proxy.get("servers"),
    });

    let preserve_host = proxy.get("preserve_host").and_then(Value::as_bool).unwrap_or(false);
    let services = health_check_v2(obj.get("services"));
    // Gravitee reads a `proxy.endpoints` list (the form before endpoint groups) as one group named
    // `default-group` whose settings (load balancing, http, ssl, proxy, headers) sit on `proxy` itself;
    // when both are present the list wins, as in Gravitee's `ProxyDeserializer`.
    let groups: Vec<Value> = if proxy.get("endpoints").is_some_and(Value::is_array) {
        let proxy = Value::Object(proxy.clone());
        vec![group(&proxy, Some("default-group"), preserve_host, &services)]
    } else {
        proxy
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| group(g, None, preserve_host, &services))
            .collect()
    };

    let plans: Vec<Value> = obj
        .get("plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|plan| {
            json!({
                "id": plan.get("id"),
                "name": plan.get("name"),
                "security": {"type": plan.get("security"), "configuration": plan.get("securityDefinition")},
                "status": plan.get("status"),
                "selectionRule": plan.get("selectionRule").or_else(|| plan.get("selection_rule")),
                "tags": plan.get("tags"),
                "flows": flows(plan.get("flows")),
            })
        })
        .collect();
    if let Some(plan) = obj.get("plans").and_then(Value::as_array).into_iter().flatten().find(|p| {
        p.get("paths")
            .and_then(Value::as_object)
            .is_some_and(|paths| paths.values().any(|r| r.as_array().is_some_and(|r| !r.is_empty())))
    }) {
        return Err(format!(
            "plan `{}`: v1-style path policies are not supported; use flows",
            plan.get("id").and_then(Value::as_str).unwrap_or("?")
        ));
    }

    let logging_on = proxy
        .get("logging")
        .and_then(|l| l.get("mode"))
        .and_then(Value::as_str)
        .is_some_and(|mode| !mode.eq_ignore_ascii_case("NONE"));

    let mut v4 = json!({
        "id": obj.get("id"),
        "name": obj.get("name"),
        "definitionVersion": "2.0.0",
        "type": "proxy",
        "tags": obj.get("tags"),
        "listeners": [listener],
        "endpointGroups": groups,
        "flowExecution": {"mode": obj.get("flow_mode")},
        "flows": flows(obj.get("flows")),
        "plans": plans,
        "analytics": {"enabled": true, "logging": if logging_on { proxy.get("logging").cloned() } else { None }},
        "failover": failover(proxy.get("failover")),
        "responseTemplates": obj.get("response_templates"),
        "executionMode": obj.get("execution_mode"),
        "properties": obj.get("properties"),
        "resources": obj.get("resources"),
    });
    super::model::strip_nulls(&mut v4);
    Ok(v4)
}

/// One v2 endpoint group (or the `proxy` node of the list form) in the v4 shape.
fn group(group: &Value, name: Option<&str>, preserve_host: bool, services: &Value) -> Value {
    let mut http = group.get("http").cloned().unwrap_or_else(|| json!({}));
    if let Some(http) = http.as_object_mut() {
        http.insert("propagateClientHost".into(), Value::Bool(preserve_host));
    }
    let endpoints: Vec<Value> =
        group.get("endpoints").and_then(Value::as_array).into_iter().flatten().map(endpoint).collect();
    json!({
        "services": services,
        "name": name.map(Value::from).or_else(|| group.get("name").cloned()),
        "type": "http-proxy",
        "loadBalancer": {"type": group.get("load_balancing").and_then(|lb| lb.get("type"))},
        "sharedConfiguration": {
            "http": http,
            "headers": group_headers(group),
            "proxy": group.get("proxy"),
            "ssl": group.get("ssl"),
        },
        "endpoints": endpoints,
    })
}

/// One v2 endpoint. `inherit` absent means false, as Gravitee reads it (`Endpoint.inherit` is a nullable
/// Boolean tested for `true`): the endpoint's own `http`, `ssl` and `headers` apply, defaults where absent.
/// A single `tenant` is the older spelling of `tenants`.
fn endpoint(endpoint: &Value) -> Value {
    let endpoint_type = match endpoint.get("type").and_then(Value::as_str) {
        None => "http-proxy".to_owned(),
        Some(t) if t.eq_ignore_ascii_case("http") => "http-proxy".to_owned(),
        Some(other) => other.to_owned(),
    };
    let mut override_config = Map::new();
    if let Some(http) = endpoint.get("http") {
        override_config.insert("http".into(), http.clone());
    }
    if let Some(headers) = endpoint_headers(endpoint) {
        override_config.insert("headers".into(), headers);
    }
    if let Some(ssl) = endpoint.get("ssl") {
        override_config.insert("ssl".into(), ssl.clone());
    }
    if let Some(proxy) = endpoint.get("proxy") {
        override_config.insert("proxy".into(), proxy.clone());
    }
    let tenants = match (endpoint.get("tenants"), endpoint.get("tenant")) {
        (Some(tenants), _) => Some(tenants.clone()),
        (None, Some(Value::String(tenant))) => Some(json!([tenant])),
        _ => None,
    };
    json!({
        "name": endpoint.get("name"),
        "type": endpoint_type,
        "weight": endpoint.get("weight"),
        "secondary": endpoint.get("backup").and_then(Value::as_bool).unwrap_or(false),
        "tenants": tenants,
        "inheritConfiguration": endpoint.get("inherit").and_then(Value::as_bool).unwrap_or(false),
        "configuration": {"target": endpoint.get("target")},
        "sharedConfigurationOverride": Value::Object(override_config),
    })
}

/// v2 `proxy.failover{maxAttempts, retryTimeout, cases}` (present = on): each attempt is limited to
/// `retryTimeout` and up to `maxAttempts` more are made; v2 has no circuit breaker (`maxFailures` 0).
fn failover(failover: Option<&Value>) -> Value {
    match failover {
        Some(f) => json!({
            "enabled": true,
            "maxRetries": f.get("maxAttempts").cloned().unwrap_or(json!(1)),
            "slowCallDuration": f.get("retryTimeout").cloned().unwrap_or(json!(10_000)),
            "maxFailures": 0,
            "perSubscription": false,
        }),
        None => json!({"enabled": false}),
    }
}

/// v2 flows: `path-operator{path, operator}`, `methods`, `condition`, `pre`, `post`.
fn flows(flows: Option<&Value>) -> Value {
    let converted: Vec<Value> = flows
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|flow| {
            let operator = flow.get("path-operator");
            let mut selectors = vec![json!({
                "type": "http",
                "path": operator.and_then(|o| o.get("path")).cloned().unwrap_or(json!("/")),
                "pathOperator": operator.and_then(|o| o.get("operator")),
                "methods": flow.get("methods"),
            })];
            if let Some(condition) = flow.get("condition").and_then(Value::as_str).filter(|c| !c.trim().is_empty()) {
                selectors.push(json!({"type": "condition", "condition": condition}));
            }
            json!({
                "name": flow.get("name"),
                "enabled": flow.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                "selectors": selectors,
                "request": in_phase(flow.get("pre"), "REQUEST"),
                "response": in_phase(flow.get("post"), "RESPONSE"),
            })
        })
        .collect();
    Value::Array(converted)
}

/// Policies whose `scope` is a content phase, `REQUEST_CONTENT` when left out.
const CONTENT_SCOPED: &[&str] = &["json-validation"];

/// Policies whose V3 code runs only in the phase `scope` names, `RESPONSE` when left out (their
/// configuration's default): xml-json and json-xml.
const RESPONSE_SCOPED: &[&str] = &["xml-json", "json-xml"];

/// Policies whose V3 code runs only in the phase `scope` names, `REQUEST` when left out:
/// http-callout.
const REQUEST_SCOPED: &[&str] = &["policy-http-callout"];

/// The steps of one v2 phase that run in it: v2-era policies carry a `scope` and Gravitee's V3-style
/// policy code runs them only in the phase it names (v4 definitions ignore `scope`).
fn in_phase(steps: Option<&Value>, phase: &str) -> Option<Value> {
    let steps = steps?.as_array()?;
    let runs_here = |step: &Value| {
        let configuration = step.get("configuration").map(super::model::object_or_json_string);
        let scope = match &configuration {
            Some(Ok(configuration)) => configuration.get("scope").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        // Body policies of the V3 era name content phases, and run on the request content when the
        // scope is left out (json-validation's default).
        let policy = step.get("policy").and_then(Value::as_str).unwrap_or_default().trim();
        let scope = scope
            .or_else(|| CONTENT_SCOPED.contains(&policy).then(|| "REQUEST_CONTENT".to_owned()))
            .or_else(|| RESPONSE_SCOPED.contains(&policy).then(|| "RESPONSE".to_owned()))
            .or_else(|| REQUEST_SCOPED.contains(&policy).then(|| "REQUEST".to_owned()));
        match scope.map(|s| s.trim().to_ascii_uppercase()) {
            Some(s) if s == "REQUEST" || s == "RESPONSE" => s == phase,
            Some(s) if s == "REQUEST_CONTENT" || s == "RESPONSE_CONTENT" => s.strip_suffix("_CONTENT") == Some(phase),
            _ => true,
        }
    };
    Some(Value::Array(steps.iter().filter(|s| runs_here(s)).cloned().collect()))
}

/// v2 headers are a list of `{name, value}` or (older) a map of name → value.
/// A v2 `hostHeader` (not blank), which Gravitee's definition reader turns into a `Host` header.
fn host_header(node: &Value) -> Option<&str> {
    node.get("hostHeader").and_then(Value::as_str).filter(|h| !h.trim().is_empty())
}

/// A v2 endpoint's headers; its `hostHeader` is one more, `Host`, after them (as Gravitee reads it).
fn endpoint_headers(endpoint: &Value) -> Option<Value> {
    let mut headers = endpoint.get("headers").map(headers_list);
    if let Some(host) = host_header(endpoint) {
        let list = headers.get_or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!({"name": "Host", "value": host}));
        }
    }
    headers
}

/// A v2 group's headers; its `hostHeader` replaces the value of a header named exactly `Host`, or is
/// added as one (as Gravitee reads it).
fn group_headers(group: &Value) -> Option<Value> {
    let mut headers = group.get("headers").map(headers_list);
    if let Some(host) = host_header(group) {
        let list = headers.get_or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            match list.iter_mut().find(|h| h.get("name").and_then(Value::as_str) == Some("Host")) {
                Some(existing) => existing["value"] = json!(host),
                None => list.push(json!({"name": "Host", "value": host})),
            }
        }
    }
    headers
}

fn headers_list(headers: &Value) -> Value {
    match headers {
        Value::Object(map) => {
            Value::Array(map.iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
        }
        other => other.clone(),
    }
}

/// v2's API-level `services["health-check"]` (first step) as a v4 group `services.healthCheck`.
fn health_check_v2(services: Option<&Value>) -> Value {
    let Some(check) = services.and_then(|s| s.get("health-check")) else {
        return Value::Null;
    };
    let step =
        check.get("steps").and_then(Value::as_array).and_then(|steps| steps.first()).cloned().unwrap_or_default();
    let request = step.get("request").cloned().unwrap_or_default();
    let assertions: Vec<String> = step
        .get("response")
        .and_then(|r| r.get("assertions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| format!("({})", a.trim().trim_start_matches('{').trim_end_matches('}')))
        .collect();
    let assertion =
        if assertions.is_empty() { Value::Null } else { Value::String(format!("{{{}}}", assertions.join(" && "))) };
    json!({"healthCheck": {
        "enabled": check.get("enabled").and_then(Value::as_bool).unwrap_or(false),
        "type": "http-health-check",
        "configuration": {
            "schedule": check.get("schedule"),
            "method": request.get("method"),
            "target": request.get("path"),
            "headers": request.get("headers"),
            "overrideEndpointPath": request.get("fromRoot"),
            "assertion": assertion,
        }
    }})
}
