use serde_json::{Value, json};

use super::super::{ApiSource, DefinitionText, Outcome, compile};
use super::normalize_context_path;
use crate::tags::ShardingTags;
use hgw_proto::v1 as pb;

fn v4(id: &str, path: &str, target: &str) -> Value {
    json!({
        "id": id, "name": format!("API {id}"), "definitionVersion": "4.0.0", "type": "proxy",
        "listeners": [{"type": "http", "paths": [{"path": path}], "entrypoints": [{"type": "http-proxy"}]}],
        "endpointGroups": [{"name": "default-group", "type": "http-proxy", "loadBalancer": {"type": "ROUND_ROBIN"},
            "sharedConfiguration": {"http": {"connectTimeout": 2000, "readTimeout": 5000}},
            "endpoints": [{"name": "e1", "type": "http-proxy", "configuration": {"target": target}}]}],
        "plans": [{"id": "p1", "name": "Keyless", "security": {"type": "KEY_LESS"}, "status": "PUBLISHED"}],
        "flows": [], "analytics": {"enabled": true}
    })
}

fn source(definition: Value) -> ApiSource {
    ApiSource {
        id: definition.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        name: String::new(),
        origin: "test".into(),
        definition: DefinitionText::Json(definition.to_string()),
        environment_id: "DEFAULT".into(),
        organization_id: "DEFAULT".into(),
    }
}

fn deploy(definition: Value) -> pb::Api {
    match compile(&source(definition), &ShardingTags::default()) {
        Outcome::Deploy(api) => *api,
        other => panic!("expected a deployment, got {other:?}"),
    }
}

fn rejection(definition: Value) -> String {
    match compile(&source(definition), &ShardingTags::default()) {
        Outcome::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn v4_proxy_compiles_with_gravitee_defaults() {
    let api = deploy(v4("a1", "/orders/", "http://127.0.0.1:9000/base"));
    assert_eq!(api.context_paths, vec![pb::ContextPath { host: String::new(), path: "/orders".into() }]);
    let endpoint = &api.endpoint_groups[0].endpoints[0];
    assert_eq!(endpoint.target, "http://127.0.0.1:9000/base");
    let http = endpoint.http.unwrap();
    assert_eq!((http.connect_timeout_ms, http.read_timeout_ms, http.idle_timeout_ms), (2000, 5000, 60000));
    assert!(http.keep_alive);
    assert_eq!(api.plans[0].security, pb::SecurityType::KeyLess as i32);
    assert_eq!(api.revision.len(), 16);
    assert_eq!(api.revision, deploy(v4("a1", "/orders/", "http://127.0.0.1:9000/base")).revision);
    assert_ne!(api.revision, deploy(v4("a1", "/orders2", "http://127.0.0.1:9000/base")).revision);
}

#[test]
fn v2_maps_onto_the_same_model() {
    let api = deploy(json!({
        "id": "v2api", "name": "Old", "gravitee": "2.0.0", "flow_mode": "DEFAULT",
        "proxy": {"virtual_hosts": [{"host": "Shop.Example.com:8082", "path": "/shop"}], "strip_context_path": false,
            "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1:80/", "weight": 2, "backup": false, "inherit": true}],
                "load_balancing": {"type": "ROUND_ROBIN"}, "http": {"connectTimeout": 1000, "readTimeout": 2000, "idleTimeout": 3000, "keepAlive": false},
                "headers": {"X-Team": "a"}}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED", "tags": null, "flows": [
            {"name": "mock", "path-operator": {"path": "/ping", "operator": "EQUALS"}, "methods": ["get"],
             "pre": [{"name": "Mock", "policy": "mock", "configuration": {"status": "201", "content": "pong"}}], "post": []}]}],
        "flows": null, "tags": []
    }));
    assert_eq!(api.definition_version, "2.0.0");
    assert_eq!(api.context_paths[0], pb::ContextPath { host: "shop.example.com".into(), path: "/shop".into() });
    let endpoint = &api.endpoint_groups[0].endpoints[0];
    assert_eq!(endpoint.weight, 2);
    assert_eq!(endpoint.headers, vec![pb::Header { name: "X-Team".into(), value: "a".into() }]);
    assert!(!endpoint.http.unwrap().keep_alive);
    let flow = &api.plans[0].flows[0];
    assert_eq!(
        (flow.path.as_str(), flow.path_operator, flow.methods.clone()),
        ("/ping", pb::PathOperator::Equals as i32, vec!["GET".to_owned()])
    );
    match &flow.request[0].policy {
        Some(pb::step::Policy::Mock(mock)) => assert_eq!((mock.status, mock.content.as_str()), (201, "pong")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_and_unsupported_definitions_say_where() {
    let mut bad_target = v4("a", "/a", "not a url");
    assert!(
        rejection(bad_target.take())
            .starts_with("endpointGroups[0].endpoints[0].configuration.target: `not a url` is not")
    );
    assert!(rejection(v4("a", "/a", "ftp://files")).contains("scheme `ftp` is not supported"));
    assert!(
        rejection(v4("a", "no-slash", "http://b"))
            .starts_with("listeners[0].paths[0].path: context path `no-slash` must start with `/`")
    );

    let mut oauth2 = v4("a", "/a", "http://b");
    oauth2["plans"][0]["security"]["type"] = json!("OAUTH2");
    assert_eq!(rejection(oauth2), "plans[0].security.configuration.oauthResource: the plan names no OAuth2 resource");
    let mut gateway_keys = v4("a", "/a", "http://b");
    gateway_keys["plans"][0]["security"] =
        json!({"type": "JWT", "configuration": {"publicKeyResolver": "GATEWAY_KEYS", "resolverParameter": "x"}});
    assert!(rejection(gateway_keys).starts_with(
        "plans[0].security.configuration.publicKeyResolver: key resolver `GATEWAY_KEYS` is not supported yet"
    ));
    let mut jwks = v4("a", "/a", "http://b");
    jwks["plans"][0]["security"] = json!({"type": "JWT", "configuration": {"publicKeyResolver": "JWKS_URL", "resolverParameter": "https://idp.example/jwks"}});
    assert_eq!(deploy(jwks).plans[0].jwt.as_ref().unwrap().jwks_url, "https://idp.example/jwks");
    let mut jwks_hmac = v4("a", "/a", "http://b");
    jwks_hmac["plans"][0]["security"] = json!({"type": "JWT", "configuration": {"signature": "HMAC_HS256", "publicKeyResolver": "JWKS_URL", "resolverParameter": "https://idp/jwks"}});
    assert!(rejection(jwks_hmac).contains("use an RSA signature"));
    let mut bad_pem = v4("a", "/a", "http://b");
    bad_pem["plans"][0]["security"] = json!({"type": "JWT", "configuration": {"signature": "RSA_RS256", "resolverParameter": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}});
    assert!(rejection(bad_pem).starts_with("plans[0].security.configuration.resolverParameter: not an RSA public key"));
    let mut hmac = v4("a", "/a", "http://b");
    hmac["plans"][0]["security"] = json!({"type": "JWT", "configuration": {"signature": "HMAC_HS512", "resolverParameter": "s3cret",
        "requiredScopes": ["a", "b"], "checkRequiredScopes": true, "clientIdClaim": "cid"}});
    let api = deploy(hmac);
    let jwt = api.plans[0].jwt.as_ref().unwrap();
    assert_eq!(
        (jwt.algorithm.as_str(), jwt.hmac_secret.as_str(), jwt.client_id_claim.as_str()),
        ("HS512", "s3cret", "cid")
    );
    assert!(jwt.propagate_auth_header, "Gravitee propagates the Authorization header by default");
    assert_eq!(jwt.required_scopes, vec!["a", "b"]);

    let mut el = v4("a", "/a", "http://b");
    el["flows"] = json!([{"selectors": [{"type": "http", "path": "/"}], "request": [{"policy": "transform-headers",
        "configuration": {"addHeaders": [{"name": "X-User", "value": "{#xpath(#request.content, '//user')}"}]}}]}]);
    let reason = rejection(el);
    assert!(reason.starts_with("flows[0].request[0].configuration.addHeaders[0].value: EL column"), "{reason}");
    assert!(reason.contains("unsupported EL"), "{reason}");

    let mut el_name = v4("a", "/a", "http://b");
    el_name["flows"] = json!([{"request": [{"policy": "transform-headers", "configuration": {"removeHeaders": ["{#request.headers['h'][0]}"]}}]}]);
    assert_eq!(
        rejection(el_name),
        "flows[0].request[0].configuration.removeHeaders[0]: Gravitee EL is not supported in this field"
    );

    let mut bad_condition = v4("a", "/a", "http://b");
    bad_condition["flows"] =
        json!([{"selectors": [{"type": "condition", "condition": "{T(java.lang.Runtime).getRuntime()}"}]}]);
    assert!(rejection(bad_condition).starts_with("flows[0].selectors[0].condition: EL column"));

    let mut host_filter = v4("a", "/a", "http://b");
    host_filter["flows"] =
        json!([{"request": [{"policy": "ip-filtering", "configuration": {"whitelistIps": ["example.com"]}}]}]);
    assert!(
        rejection(host_filter)
            .starts_with("flows[0].request[0].configuration.whitelistIps[0]: `example.com` is not an IP or CIDR")
    );

    let mut unknown_policy = v4("a", "/a", "http://b");
    unknown_policy["flows"] =
        json!([{"selectors": [{"type": "http", "path": "/"}], "request": [{"policy": "xslt", "configuration": {}}]}]);
    assert!(
        rejection(unknown_policy)
            .starts_with("flows[0].request[0].policy: policy `xslt` is not supported by hgw (it runs mock,")
    );
    // The policy is named before the EL inside its configuration.
    let mut xslt = v4("a", "/a", "http://b");
    xslt["flows"] =
        json!([{"request": [{"policy": "xslt", "configuration": {"stylesheet": "{#request.headers['x'][0]}"}}]}]);
    assert!(rejection(xslt).starts_with("flows[0].request[0].policy: policy `xslt` is not supported by hgw"));
    // A script is JavaScript, not EL: `{#` in it is text.
    let mut js = v4("a", "/a", "http://b");
    js["flows"] = json!([{"request": [{"policy": "js", "configuration": {"script": "var x = '{#not.el}';"}}]}]);
    let step = &deploy(js).flows[0].request[0];
    let Some(pb::step::Policy::Javascript(policy)) = &step.policy else { panic!("{step:?}") };
    assert!(policy.graal && policy.script == "var x = '{#not.el}';");
    let mut big = v4("a", "/a", "http://b");
    big["flows"] =
        json!([{"request": [{"policy": "javascript", "configuration": {"onRequestScript": "x".repeat(300_000)}}]}]);
    assert!(
        rejection(big).starts_with("flows[0].request[0].configuration.onRequestScript: the script is 300000 bytes")
    );
    let mut not_text = v4("a", "/a", "http://b");
    not_text["flows"] = json!([{"request": [{"policy": "js", "configuration": {"script": 3, "readContent": "yes"}}]}]);
    assert!(rejection(not_text).starts_with("flows[0].request[0].configuration.script: a script must be a string"));
    let mut groovy = v4("a", "/a", "http://b");
    groovy["flows"] = json!([{"request": [{"policy": "groovy", "configuration": {}}]}]);
    assert!(rejection(groovy).contains("hgw does not run Groovy scripts"));
    let mut message = v4("a", "/a", "http://b");
    message["type"] = json!("message");
    assert!(rejection(message).starts_with("type: message APIs (SSE, WebSocket, webhook"));

    let mut wrong_type = v4("a", "/a", "http://b");
    wrong_type["listeners"] = json!("oops");
    assert!(rejection(wrong_type).starts_with("listeners: invalid type"));

    let broken = ApiSource { definition: DefinitionText::Json("{\"id\": ".into()), ..source(json!({"id": "x"})) };
    match compile(&broken, &ShardingTags::default()) {
        Outcome::Rejected(r) => assert!(r.reason.starts_with("the definition is not valid JSON"), "{}", r.reason),
        other => panic!("{other:?}"),
    }
    assert!(rejection(json!({"id": "x", "name": "n"})).contains("unknown definition format"));
}

#[test]
fn lenient_enums_and_nulls() {
    let mut api = v4("a", "/a", "http://b:1");
    api["type"] = json!("PROXY");
    api["tags"] = Value::Null;
    api["plans"][0]["status"] = json!("published");
    api["plans"][0]["security"]["type"] = json!("key-less");
    api["endpointGroups"][0]["loadBalancer"]["type"] = json!("SOMETHING_NEW");
    api["endpointGroups"][0]["sharedConfiguration"] = json!("{\"http\":{\"readTimeout\":42}}");
    let api = deploy(api);
    assert_eq!(api.endpoint_groups[0].endpoints[0].http.unwrap().read_timeout_ms, 42);
    assert_eq!(api.endpoint_groups[0].load_balancer, pb::LoadBalancer::RoundRobin as i32);
}

#[test]
fn tags_and_plans_filter_without_rejecting() {
    let mut tagged = v4("a", "/a", "http://b");
    tagged["tags"] = json!(["internal"]);
    let gw = ShardingTags::parse(&["external".to_owned()]).unwrap();
    assert!(matches!(compile(&source(tagged.clone()), &gw), Outcome::Skipped { .. }));
    let gw = ShardingTags::parse(&["internal".to_owned()]).unwrap();
    assert!(matches!(compile(&source(tagged), &gw), Outcome::Deploy(_)));

    let mut closed = v4("a", "/a", "http://b");
    closed["plans"][0]["status"] = json!("CLOSED");
    assert!(matches!(compile(&source(closed), &ShardingTags::default()), Outcome::Skipped { .. }));
}

#[test]
fn id_must_match_the_announced_id() {
    let mut src = source(v4("real", "/a", "http://b"));
    src.id = "other".into();
    match compile(&src, &ShardingTags::default()) {
        Outcome::Rejected(r) => assert!(r.reason.starts_with("id: `real` differs"), "{}", r.reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn policies_and_api_key_plans_compile() {
    let mut api = v4("a", "/a", "http://b:1");
    api["plans"][0]["security"] = json!({"type": "API_KEY", "configuration": {"propagateApiKey": true}});
    api["flows"] = json!([{"name": "all", "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [
            {"policy": "transform-headers", "configuration": {"removeHeaders": ["X-Secret"], "addHeaders": [{"name": "X-A", "value": "1"}]}},
            {"policy": "ip-filtering", "configuration": {"whitelistIps": ["10.0.0.0/8", "::1"], "blacklistIps": []}},
            {"policy": "request-content-limit", "configuration": {"limit": "1024"}},
            {"policy": "policy-assign-attributes", "configuration": {"attributes": [{"name": "team", "value": "blue"}]}},
            {"policy": "transform-headers", "configuration": {"scope": "RESPONSE", "addHeaders": [{"name": "X-Skipped", "value": "1"}]}}
        ],
        "response": [{"policy": "transform-headers", "configuration": {"scope": "RESPONSE", "addHeaders": [{"name": "X-Out", "value": "1"}]}}]}]);
    let api = deploy(api);
    assert_eq!(api.plans[0].security, pb::SecurityType::ApiKey as i32);
    assert!(api.plans[0].api_key.as_ref().unwrap().propagate_api_key);
    let flow = &api.flows[0];
    assert_eq!(flow.request.len(), 5, "a v4 definition's step runs whatever its `scope` says (as in Gravitee)");
    assert!(matches!(&flow.request[2].policy, Some(pb::step::Policy::RequestContentLimit(l)) if l.limit == 1024));
    assert!(
        matches!(&flow.response[0].policy, Some(pb::step::Policy::TransformHeaders(t)) if t.add_headers[0].name == "X-Out")
    );
    // ip-filtering cannot run on responses.
    let mut wrong_phase = v4("a", "/a", "http://b:1");
    wrong_phase["flows"] = json!([{"response": [{"policy": "ip-filtering", "configuration": {}}]}]);
    assert!(
        rejection(wrong_phase)
            .starts_with("flows[0].response[0].policy: policy `ip-filtering` runs in the request phase only in hgw, not in the response phase")
    );
}

#[test]
fn el_conditions_selection_rules_and_templates_compile() {
    let mut api = v4("a", "/a", "http://b:1");
    api["plans"][0]["selectionRule"] = json!("{#request.headers['X-Plan'][0] == 'free'}");
    api["flows"] = json!([{"selectors": [{"type": "http", "path": "/"}, {"type": "condition", "condition": "{#request.method == 'POST'}"}],
        "request": [{"policy": "transform-headers", "condition": "{#request.params['debug'] != null}",
            "configuration": {"addHeaders": [{"name": "X-Path", "value": "path={#request.pathInfo}"}]}}]}]);
    let api = deploy(api);
    assert_eq!(api.plans[0].selection_rule, "{#request.headers['X-Plan'][0] == 'free'}");
    assert_eq!(api.flows[0].condition, "{#request.method == 'POST'}");
    assert_eq!(api.flows[0].request[0].condition, "{#request.params['debug'] != null}");
}

#[test]
fn rate_limit_quota_and_spike_arrest_compile_with_gravitee_defaults() {
    let mut api = v4("a", "/a", "http://b:1");
    api["flows"] = json!([{"request": [
        {"policy": "rate-limit", "configuration": {"addHeaders": true, "rate": {"limit": 10, "periodTime": 2, "periodTimeUnit": "MINUTES"}}},
        {"policy": "quota", "configuration": {"quota": {"limit": "1000", "key": "team"}}},
        {"policy": "spike-arrest", "configuration": {"spike": {"limit": 5, "periodTime": 1, "periodTimeUnit": "SECONDS"}}}
    ]}]);
    let api = deploy(api);
    let limits: Vec<pb::RateLimitPolicy> = api.flows[0]
        .request
        .iter()
        .map(|s| match &s.policy {
            Some(pb::step::Policy::RateLimit(r)) => r.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!((limits[0].limit, limits[0].period_ms, limits[0].add_headers), (10, 120_000, true));
    assert_eq!(
        (limits[1].period_unit.as_str(), limits[1].key.as_str(), limits[1].add_headers),
        ("MONTHS", "team", true)
    );
    assert_eq!((limits[2].kind, limits[2].period_ms), (pb::RateLimitKind::SpikeArrest as i32, 1000));
    assert_eq!(limits.iter().map(|l| l.step).collect::<Vec<_>>(), vec![1, 2, 3], "steps numbered in API order");

    let mut dynamic = v4("a", "/a", "http://b:1");
    dynamic["flows"] = json!([{"request": [{"policy": "rate-limit", "configuration": {"rate": {"dynamicLimit": "{#request.headers['l'][0]}"}}}]}]);
    assert!(rejection(dynamic).contains("EL"));
    let mut unit = v4("a", "/a", "http://b:1");
    unit["flows"] = json!([{"request": [{"policy": "rate-limit", "configuration": {"rate": {"limit": 1, "periodTimeUnit": "FORTNIGHTS"}}}]}]);
    assert!(rejection(unit).ends_with("unknown time unit `FORTNIGHTS`"));
}

#[test]
fn rate_limit_mode_and_error_strategy() {
    let compiled = |configuration: Value| {
        let mut api = v4("a", "/a", "http://b:1");
        api["flows"] = json!([{"request": [{"policy": "rate-limit", "configuration": configuration}]}]);
        match deploy(api).flows[0].request[0].policy.clone() {
            Some(pb::step::Policy::RateLimit(r)) => (r.mode, r.error_strategy),
            other => panic!("{other:?}"),
        }
    };
    let strict = (pb::RateLimitMode::Strict as i32, pb::RateLimitErrorStrategy::PassThrough as i32);
    assert_eq!(compiled(json!({"rate": {"limit": 1}})), strict, "Gravitee's defaults");
    assert_eq!(
        compiled(json!({"async": true, "errorStrategy": "BLOCK_ON_INTERNAL_ERROR", "rate": {"limit": 1}})),
        (pb::RateLimitMode::Async as i32, pb::RateLimitErrorStrategy::Block as i32)
    );
    for spelling in ["FALLBACK_PASS_TROUGH", "FALLBACK_PASS_THROUGH"] {
        assert_eq!(compiled(json!({"errorStrategy": spelling, "rate": {"limit": 1}})), strict);
    }
    let mut bad = v4("a", "/a", "http://b:1");
    bad["flows"] = json!([{"request": [{"policy": "rate-limit", "configuration": {"errorStrategy": "RETRY", "rate": {"limit": 1}}}]}]);
    let reason = rejection(bad);
    assert!(reason.contains("errorStrategy") && reason.contains("RETRY"), "{reason}");
}

#[test]
fn context_paths_normalize() {
    assert_eq!(normalize_context_path("/").unwrap(), "/");
    assert_eq!(normalize_context_path("//a//b/").unwrap(), "/a/b");
    assert!(normalize_context_path("/a b").is_err());
    assert!(normalize_context_path("a").is_err());
}

#[test]
fn health_check_schedules_and_defaults() {
    use super::schedule_interval;
    use std::time::Duration;
    assert_eq!(schedule_interval("*/1 * * * * *").unwrap(), Duration::from_secs(1));
    assert_eq!(schedule_interval("*/30 * * * * *").unwrap(), Duration::from_secs(30));
    assert_eq!(schedule_interval("0 */5 * * * *").unwrap(), Duration::from_secs(300));
    assert_eq!(schedule_interval("0 0 */2 * * ?").unwrap(), Duration::from_secs(7200));
    for bad in ["*/0 * * * * *", "0 15 10 * * MON-FRI", "* * * * *", "", "5 * * * * *"] {
        assert!(schedule_interval(bad).is_err(), "{bad}");
    }
    let mut api = v4("a", "/a", "http://b:1");
    api["endpointGroups"][0]["services"] = json!({"healthCheck": {"enabled": true, "configuration": {}}});
    let check = deploy(api).endpoint_groups[0].health_check.clone().unwrap();
    assert_eq!((check.interval_ms, check.method.as_str(), check.path.as_str()), (1000, "GET", "/"));
    assert_eq!(
        (check.assertion.as_str(), check.success_threshold, check.failure_threshold),
        ("{#response.status == 200}", 2, 2)
    );
    let mut disabled = v4("a", "/a", "http://b:1");
    disabled["endpointGroups"][0]["services"] = json!({"healthCheck": {"enabled": false}});
    assert!(deploy(disabled).endpoint_groups[0].health_check.is_none());
}

fn with_cors(cors: Value) -> Value {
    let mut api = v4("c1", "/c", "http://127.0.0.1:9000");
    api["listeners"][0]["cors"] = cors;
    api
}

#[test]
fn cors_compiles_with_gravitee_defaults_and_normalised_lists() {
    let api = deploy(with_cors(json!({
        "enabled": true, "allowOrigin": ["https://app.example.com", "https://.*\\.example\\.org", " "],
        "allowMethods": ["get", "POST"], "allowHeaders": ["X-Token", "Content-Type"],
        "exposeHeaders": ["X-Total"], "allowCredentials": true
    })));
    let cors = api.cors.expect("cors");
    assert_eq!(cors.allow_origin, vec!["https://app.example.com", "https://.*\\.example\\.org"]);
    assert_eq!(cors.allow_methods, vec!["GET", "POST"]);
    assert_eq!(cors.allow_headers, vec!["x-token", "content-type"]);
    assert_eq!(cors.expose_headers, vec!["X-Total"]);
    assert_eq!(cors.max_age, -1);
    assert!(cors.allow_credentials);
    assert_eq!(deploy(with_cors(json!({"enabled": false, "allowOrigin": ["("]}))).cors, None);
    assert_eq!(deploy(with_cors(json!({"enabled": true, "maxAge": 600}))).cors.unwrap().max_age, 600);
}

#[test]
fn cors_rejects_invalid_entries_with_the_field_path() {
    let reason = rejection(with_cors(json!({"enabled": true, "allowOrigin": ["*", "https://(a"]})));
    assert!(reason.contains("listeners[0].cors.allowOrigin[1]"), "{reason}");
    let reason = rejection(with_cors(json!({"enabled": true, "allowHeaders": ["bad header"]})));
    assert!(reason.contains("listeners[0].cors.allowHeaders[0]"), "{reason}");
    let reason = rejection(with_cors(json!({"enabled": true, "allowMethods": ["G(T"]})));
    assert!(reason.contains("listeners[0].cors.allowMethods[0]"), "{reason}");
    let reason = rejection(with_cors(json!({"enabled": true, "runPolicies": true})));
    assert!(reason.contains("listeners[0].cors.runPolicies"), "{reason}");
}

#[test]
fn v2_cors_is_mapped() {
    let api = deploy(json!({
        "id": "v2c", "name": "Old", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/c"}], "cors": {"enabled": true, "allowOrigin": ["*"],
            "allowMethods": ["GET"], "maxAge": 30},
            "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1:80/"}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
    }));
    let cors = api.cors.unwrap();
    assert_eq!(
        (cors.allow_origin, cors.allow_methods, cors.max_age),
        (vec!["*".to_owned()], vec!["GET".to_owned()], 30)
    );
}

fn with_response_step(policy: &str, configuration: Value) -> Value {
    let mut api = v4("u1", "/u", "http://127.0.0.1:9000");
    api["flows"] = json!([{"name": "f", "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [], "response": [{"name": "s", "policy": policy, "enabled": true, "configuration": configuration}]}]);
    api
}

#[test]
fn url_rewriting_compiles_headers_only() {
    let api = deploy(with_response_step(
        "url-rewriting",
        json!({"rewriteResponseHeaders": true, "rewriteResponseBody": false,
            "fromRegex": "https?://backend:8080/(.*)", "toReplacement": "https://{#request.headers['Host'][0]}/$1"}),
    ));
    let Some(pb::step::Policy::UrlRewriting(policy)) = &api.flows[0].response[0].policy else {
        panic!("expected url-rewriting: {:?}", api.flows[0].response[0]);
    };
    assert_eq!(policy.from_regex, "https?://backend:8080/(.*)");
    assert!(policy.rewrite_response_headers);

    let body = deploy(with_response_step(
        "url-rewriting",
        json!({"rewriteResponseBody": true, "fromRegex": "a", "toReplacement": "b"}),
    ));
    match &body.flows[0].response[0].policy {
        Some(pb::step::Policy::UrlRewriting(p)) => assert!(p.rewrite_response_body && p.rewrite_response_headers),
        other => panic!("{other:?}"),
    }
    let reason = rejection(with_response_step("url-rewriting", json!({"fromRegex": "(", "toReplacement": "b"})));
    assert!(reason.contains("response[0].configuration.fromRegex"), "{reason}");
    let reason = rejection(with_response_step("url-rewriting", json!({"toReplacement": "b"})));
    assert!(reason.contains("fromRegex"), "{reason}");
    // Request phase: Gravitee's url-rewriting only acts on responses.
    let mut api = v4("u2", "/u", "http://127.0.0.1:9000");
    api["flows"] = json!([{"name": "f", "selectors": [{"type": "http", "path": "/"}],
        "request": [{"policy": "url-rewriting", "configuration": {"fromRegex": "a", "toReplacement": "b"}}]}]);
    assert!(rejection(api).contains("policy `url-rewriting` runs in the response phase only in hgw"));
}

#[test]
fn response_templates_compile_per_key_and_media_type() {
    let mut api = v4("t1", "/t", "http://127.0.0.1:9000");
    api["responseTemplates"] = json!({
        "API_KEY_MISSING": {"application/json": {"status": 403, "headers": {"X-Why": "no key"}, "body": "{\"error\":\"key\"}",
            "propagateErrorKeyToLogs": true}, "*/*": {"status": 403, "body": "no key"}},
        "DEFAULT": {"*/*": {"status": 500, "body": "oops"}}
    });
    let api = deploy(api);
    assert_eq!(api.response_templates.len(), 2);
    let missing = api.response_templates.iter().find(|t| t.error_key == "API_KEY_MISSING").unwrap();
    let json = missing.templates.iter().find(|t| t.media_type == "application/json").unwrap();
    assert_eq!((json.status, json.body.as_str()), (403, "{\"error\":\"key\"}"));
    assert_eq!(json.headers, vec![pb::Header { name: "X-Why".into(), value: "no key".into() }]);
    assert!(json.propagate_error_key_to_logs);

    let v2 = deploy(json!({
        "id": "v2t", "name": "Old", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/t"}], "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1:80/"}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}],
        "response_templates": {"DEFAULT": {"*/*": {"status": 418, "body": "teapot"}}}
    }));
    assert_eq!(v2.response_templates[0].templates[0].status, 418);
}

#[test]
fn response_templates_reject_el_and_bad_entries() {
    let with = |templates: Value| {
        let mut api = v4("t2", "/t", "http://127.0.0.1:9000");
        api["responseTemplates"] = templates;
        rejection(api)
    };
    let reason =
        with(json!({"DEFAULT": {"application/json": {"status": 500, "body": "{\"m\":\"{#error.message}\"}"}}}));
    assert!(
        reason.contains("responseTemplates.DEFAULT.application/json.body") && reason.contains("#error"),
        "{reason}"
    );
    assert!(with(json!({"DEFAULT": {"json": {"status": 500}}})).contains("not a media type"));
    assert!(with(json!({"DEFAULT": {"*/*": {"status": 99}}})).contains(".status"));
    assert!(with(json!({"DEFAULT": {"*/*": {"headers": {"bad name": "x"}}}})).contains("headers.bad name"));
}

#[test]
fn best_match_flow_mode_compiles_for_v4_and_v2() {
    let mut api = v4("b1", "/b", "http://127.0.0.1:9000");
    api["flowExecution"] = json!({"mode": "BEST_MATCH", "matchRequired": false});
    assert_eq!(deploy(api).flow_mode, pb::FlowMode::BestMatch as i32);
    let v2 = deploy(json!({
        "id": "v2b", "name": "Old", "gravitee": "2.0.0", "flow_mode": "BEST_MATCH",
        "proxy": {"virtual_hosts": [{"path": "/b"}], "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1:80/"}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
    }));
    assert_eq!(v2.flow_mode, pb::FlowMode::BestMatch as i32);
    let mut required = v4("b2", "/b", "http://127.0.0.1:9000");
    required["flowExecution"] = json!({"mode": "BEST_MATCH", "matchRequired": true});
    assert!(deploy(required).flow_match_required);
}

#[test]
fn v4_logging_compiles_to_settings() {
    let mut def = v4("log", "/log", "http://127.0.0.1:9000");
    def["analytics"] = json!({"enabled": true, "logging": {
        "condition": "{#request.headers['X-Log'][0] == 'yes'}",
        "mode": {"entrypoint": true, "endpoint": false},
        "phase": {"request": true, "response": true},
        "content": {"headers": true, "messageHeaders": false, "payload": true, "messageMetadata": false}}});
    let logging = deploy(def).logging.expect("logging settings");
    assert_eq!(
        logging,
        pb::LoggingSettings {
            entrypoint: true,
            endpoint: false,
            request: true,
            response: true,
            headers: true,
            payload: true,
            condition: "{#request.headers['X-Log'][0] == 'yes'}".into(),
        }
    );

    // Nothing to capture: no side, or no direction.
    let mut def = v4("log", "/log", "http://127.0.0.1:9000");
    def["analytics"] =
        json!({"logging": {"mode": {"entrypoint": false, "endpoint": false}, "content": {"headers": true}}});
    assert_eq!(deploy(def).logging, None);
    let mut def = v4("log", "/log", "http://127.0.0.1:9000");
    def["analytics"] = json!({"logging": {"mode": {"endpoint": true}, "phase": {"request": false, "response": false}}});
    assert_eq!(deploy(def).logging, None);

    // An EL condition outside the supported subset rejects the API with the field path.
    let mut def = v4("log", "/log", "http://127.0.0.1:9000");
    def["analytics"] = json!({"logging": {"mode": {"endpoint": true}, "condition": "{#request.headers['X'"}});
    assert!(rejection(def).contains("analytics.logging.condition"));
}

#[test]
fn v4_tracing_settings_compile() {
    let mut def = v4("tr", "/tr", "http://127.0.0.1:9000");
    assert_eq!(deploy(def.clone()).tracing, None, "absent: no settings");
    def["analytics"] = json!({"enabled": true, "tracing": {"enabled": true, "verbose": true}});
    assert_eq!(deploy(def.clone()).tracing, Some(pb::TracingSettings { enabled: true, verbose: true }));
    def["analytics"]["tracing"] = json!({"enabled": true});
    assert_eq!(deploy(def.clone()).tracing, Some(pb::TracingSettings { enabled: true, verbose: false }));
    def["analytics"]["tracing"] = json!(null);
    assert_eq!(deploy(def.clone()).tracing, None);
    def["analytics"]["tracing"] = json!({"enabled": "yes"});
    assert!(rejection(def).contains("analytics.tracing.enabled"));
}

#[test]
fn v2_logging_maps_mode_scope_and_content() {
    let mut def = json!({
        "id": "v2log", "name": "Old", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/old"}], "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1/"}]}],
            "logging": {"mode": "CLIENT_PROXY", "content": "HEADERS", "scope": "RESPONSE"}},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
    });
    let logging = deploy(def.clone()).logging.expect("logging settings");
    assert!(logging.entrypoint && logging.endpoint && !logging.request && logging.response);
    assert!(logging.headers && !logging.payload);
    def["proxy"]["logging"] = json!({"mode": "NONE", "content": "HEADERS_PAYLOADS", "scope": "REQUEST_RESPONSE"});
    assert_eq!(deploy(def).logging, None);
}

#[test]
fn v2_steps_run_only_in_the_phase_their_scope_names() {
    let v2 = deploy(json!({
        "id": "scoped", "name": "Scoped", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/s"}], "groups": [{"name": "g", "endpoints": [{"name": "b", "target": "http://10.0.0.1:80/"}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}],
        "flows": [{"name": "f", "path-operator": {"path": "/", "operator": "STARTS_WITH"},
            "pre": [{"policy": "transform-headers", "configuration": {"scope": "RESPONSE", "addHeaders": [{"name": "X-No", "value": "1"}]}},
                    {"policy": "transform-headers", "configuration": "{\"scope\": \"REQUEST\", \"addHeaders\": []}"}],
            "post": [{"policy": "transform-headers", "configuration": {"scope": "REQUEST", "addHeaders": []}},
                     {"policy": "transform-headers", "configuration": {"addHeaders": []}}]}]
    }));
    assert_eq!((v2.flows[0].request.len(), v2.flows[0].response.len()), (1, 1));
}

fn with_groups(definition: Value, groups: &[Value]) -> Outcome {
    let mut registry = super::super::SharedPolicyGroups::default();
    for group in groups {
        registry.insert(super::super::SharedPolicyGroup::from_value(group).unwrap(), "DEFAULT");
    }
    let env = super::CompileEnv {
        tags: &ShardingTags::default(),
        tenant: None,
        files: &super::DefinitionFiles::disabled(),
        shared_policy_groups: &registry,
    };
    super::super::compile_in(&source(definition), &env)
}

fn header_step(name: &str, condition: &str) -> Value {
    json!({"name": name, "policy": "transform-headers", "condition": condition,
        "configuration": {"addHeaders": [{"name": name, "value": "1"}]}})
}

fn calling(group: &str, condition: &str) -> Value {
    json!({"name": "call", "policy": "shared-policy-group-policy", "condition": condition,
        "configuration": {"sharedPolicyGroupId": group}})
}

#[test]
fn shared_policy_groups_expand_in_place_with_both_conditions() {
    let group = json!({"id": "spg", "environmentId": "dev", "phase": "RESPONSE", "policies": [
        header_step("X-In-0", "{#request.headers['go'][0] == 'yes'}"),
        {"name": "off", "enabled": false, "policy": "groovy"},
        header_step("X-In-1", ""),
        calling("other", ""),
    ]});
    let mut api = v4("a", "/a", "http://127.0.0.1:1/");
    api["environmentId"] = json!("dev");
    api["flows"] = json!([{"name": "f", "response": [
        header_step("X-Out-0", ""), calling("spg", "{#request.method == 'GET'}"), header_step("X-Out-1", ""),
        calling("missing", ""),
    ]}]);
    let compiled = match with_groups(api.clone(), std::slice::from_ref(&group)) {
        Outcome::Deploy(api) => api,
        other => panic!("expected a deployment, got {other:?}"),
    };
    let steps: Vec<(&str, &str)> =
        compiled.flows[0].response.iter().map(|s| (s.name.as_str(), s.condition.as_str())).collect();
    assert_eq!(
        steps,
        [
            ("X-Out-0", ""),
            ("X-In-0", "{(#request.method == 'GET') && (#request.headers['go'][0] == 'yes')}"),
            ("X-In-1", "{#request.method == 'GET'}"),
            ("X-Out-1", ""),
        ],
        "the group's enabled steps replace the call; a nested call and an unknown group are skipped"
    );

    // The group is looked up in the API's environment.
    api["environmentId"] = json!("prod");
    let Outcome::Deploy(prod) = with_groups(api.clone(), std::slice::from_ref(&group)) else { panic!() };
    assert_eq!(prod.flows[0].response.len(), 2);

    // A group for the other phase, or an inner step hgw cannot run, rejects the API and says where.
    api["environmentId"] = json!("dev");
    api["flows"] = json!([{"name": "f", "request": [calling("spg", "")]}]);
    let Outcome::Rejected(wrong_phase) = with_groups(api.clone(), std::slice::from_ref(&group)) else { panic!() };
    assert!(wrong_phase.reason.contains("is for the Response phase, called from the Request phase"), "{wrong_phase:?}");
    let broken = json!({"id": "spg", "environmentId": "dev", "phase": "REQUEST", "policies": [{"policy": "groovy"}]});
    let Outcome::Rejected(inner) = with_groups(api, &[broken]) else { panic!() };
    assert!(
        inner.reason.starts_with("flows[0].request[0] (shared policy group `spg`).policies[0].policy"),
        "{inner:?}"
    );
}

fn with_cache_step(mut api: Value, configuration: Value, resources: Value) -> Value {
    api["flows"] = json!([{"name": "c", "selectors": [{"type": "http", "path": "/"}],
        "request": [{"name": "cache", "policy": "cache", "configuration": configuration}], "response": []}]);
    api["resources"] = resources;
    api
}

fn cache_policy(api: &pb::Api) -> &pb::CachePolicy {
    match &api.flows[0].request[0].policy {
        Some(pb::step::Policy::Cache(policy)) => policy,
        other => panic!("expected a cache step, got {other:?}"),
    }
}

#[test]
fn cache_steps_get_gravitees_defaults_and_their_resource() {
    let memory = json!([{"name": "mine", "type": "cache", "configuration": {"timeToLiveSeconds": 30, "maxEntriesLocalHeap": 5}}]);
    let api = deploy(with_cache_step(
        v4("c1", "/c", "http://127.0.0.1:9000"),
        json!({"cacheName": "mine", "responseCondition": "{#upstreamResponse.status == 200}"}),
        memory.clone(),
    ));
    let policy = cache_policy(&api);
    assert!(policy.application_scope, "APPLICATION is Gravitee's default scope");
    assert_eq!(policy.time_to_live_seconds, 600);
    assert!(policy.methods.is_empty());
    assert_eq!(policy.response_condition, "{#response.status == 200}");
    let resource = policy.resource.as_ref().unwrap();
    assert_eq!((resource.time_to_live_seconds, resource.max_entries), (30, 5));
    assert_eq!(resource.backend, pb::CacheBackend::Memory as i32);
    assert!(resource.id.starts_with("c1/mine/"));

    // A name no enabled resource has: deployed without one (Gravitee answers 500 per request).
    let disabled = json!([{"name": "mine", "type": "cache", "enabled": false}]);
    let api = deploy(with_cache_step(v4("c2", "/c", "http://127.0.0.1:9000"), json!({"cacheName": "mine"}), disabled));
    assert!(cache_policy(&api).resource.is_none());

    // Resources hgw does not run as caches reject the API, naming them.
    let other = json!([{"name": "mine", "type": "cache-hazelcast", "configuration": {"password": "hunter2"}}]);
    let reason =
        rejection(with_cache_step(v4("c3", "/c", "http://127.0.0.1:9000"), json!({"cacheName": "mine"}), other));
    assert!(reason.contains("cache-hazelcast") && !reason.contains("hunter2"), "{reason}");
    let reason = rejection(with_cache_step(
        v4("c4", "/c", "http://127.0.0.1:9000"),
        json!({"cacheName": "mine", "scope": "EVERYONE"}),
        memory,
    ));
    assert!(reason.contains("scope"), "{reason}");
}

#[test]
fn cache_redis_resources_keep_their_connection_on_the_agent() {
    // Gravitee 4.x's form: `standalone` and the older `sentinelMode`; useSsl defaults to true.
    let older = json!([{"name": "shared", "type": "cache-redis", "configuration": {
        "password": " hunter2", "timeToLiveSeconds": 60, "releaseCache": true, "maxTotal": 8,
        "standalone": {"host": "redis.internal", "port": 6380}, "sentinelMode": false}}]);
    let api = deploy(with_cache_step(v4("r1", "/r", "http://127.0.0.1:9000"), json!({"cacheName": "shared"}), older));
    let resource = cache_policy(&api).resource.clone().unwrap();
    assert_eq!(resource.backend, pb::CacheBackend::Redis as i32);
    let connection = &api.redis_caches[&resource.id];
    assert_eq!((connection.host.as_str(), connection.port), ("redis.internal", 6380));
    assert_eq!(connection.password, " hunter2", "a password is kept as written");
    assert!(connection.use_ssl && !connection.trust_all && connection.release_cache);
    assert_eq!((connection.timeout_ms, connection.time_to_live_seconds), (2000, 60));
    assert_eq!(connection.deployed_at.len(), 16, "a digest of the compiled API stands in for deployedAt");
    assert!(!format!("{connection:?}").contains("hunter2"), "Debug never shows the password");

    // 5.x's form: host/port at the top, nested sentinel with nodes, ssl.trustAll.
    let sentinel = json!([{"name": "s", "type": "cache-redis", "configuration": {
        "host": "ignored", "useSsl": true, "ssl": {"trustAll": true}, "timeout": 500,
        "sentinel": {"enabled": true, "masterId": "mymaster", "password": "sp",
                     "nodes": [{"host": "s1", "port": 26379}, {"host": "s2", "port": 26380}]}}}]);
    let api = deploy(with_cache_step(v4("r2", "/r", "http://127.0.0.1:9000"), json!({"cacheName": "s"}), sentinel));
    let connection = api.redis_caches.values().next().unwrap();
    assert_eq!(connection.sentinel_master, "mymaster");
    assert_eq!(connection.sentinel_nodes.len(), 2);
    assert_eq!(connection.password, "sp", "without a password, the Sentinel password (Gravitee 4.x)");
    assert!(connection.trust_all && connection.timeout_ms == 500 && connection.deployed_at.is_empty());

    // What hgw cannot honour is refused with the field named, and never the password.
    for (configuration, field) in [
        (json!({"password": "{#secrets.get('/vault/redis')}"}), "configuration.password"),
        (json!({"port": 70000, "password": "hunter2"}), "configuration.port"),
        (json!({"useSsl": "yes"}), "configuration.useSsl"),
        (json!({"ssl": {"trustStore": {"type": "PEM", "path": "/ca.pem"}}}), "configuration.ssl.trustStore"),
        (json!({"sentinel": {"enabled": true, "nodes": [{"host": "s1"}]}}), "configuration.sentinel.masterId"),
        (json!({"timeout": -1}), "configuration.timeout"),
    ] {
        let resources = json!([{"name": "x", "type": "cache-redis", "configuration": configuration}]);
        let reason =
            rejection(with_cache_step(v4("r3", "/r", "http://127.0.0.1:9000"), json!({"cacheName": "x"}), resources));
        assert!(reason.contains(field) && !reason.contains("hunter2"), "{field}: {reason}");
    }
}
