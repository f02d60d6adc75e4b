//! Endpoint groups: load balancers, HTTP options, TLS (`ssl`), failover and tenants.

use serde_json::{Value, json};

use super::super::{
    ApiSource, DefinitionFiles, DefinitionText, Outcome, compile, compile_for_tenant, compile_with_files,
};
use crate::tags::ShardingTags;
use hgw_proto::v1 as pb;

fn v4(endpoints: Value) -> Value {
    json!({
        "id": "a", "name": "A", "definitionVersion": "4.0.0", "type": "proxy",
        "listeners": [{"type": "http", "paths": [{"path": "/a"}], "entrypoints": [{"type": "http-proxy"}]}],
        "endpointGroups": [{"name": "g", "type": "http-proxy", "loadBalancer": {"type": "ROUND_ROBIN"},
            "sharedConfiguration": {}, "endpoints": endpoints}],
        "plans": [{"id": "p1", "name": "Keyless", "security": {"type": "KEY_LESS"}, "status": "PUBLISHED"}]
    })
}

fn endpoint(name: &str, target: &str) -> Value {
    json!({"name": name, "type": "http-proxy", "configuration": {"target": target}})
}

fn source(definition: &Value) -> ApiSource {
    ApiSource {
        id: "a".into(),
        name: String::new(),
        origin: "test".into(),
        definition: DefinitionText::Json(definition.to_string()),
        environment_id: "DEFAULT".into(),
        organization_id: "DEFAULT".into(),
    }
}

fn deploy(definition: Value) -> pb::Api {
    match compile(&source(&definition), &ShardingTags::default()) {
        Outcome::Deploy(api) => *api,
        other => panic!("expected a deployment, got {other:?}"),
    }
}

fn rejection(definition: Value) -> String {
    match compile(&source(&definition), &ShardingTags::default()) {
        Outcome::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn every_load_balancer_compiles() {
    for (name, expected) in [
        ("ROUND_ROBIN", pb::LoadBalancer::RoundRobin),
        ("random", pb::LoadBalancer::Random),
        ("WEIGHTED_ROUND_ROBIN", pb::LoadBalancer::WeightedRoundRobin),
        ("weighted-random", pb::LoadBalancer::WeightedRandom),
    ] {
        let mut api = v4(json!([endpoint("e", "http://b")]));
        api["endpointGroups"][0]["loadBalancer"]["type"] = json!(name);
        assert_eq!(deploy(api).endpoint_groups[0].load_balancer, expected as i32, "{name}");
    }
    let mut weights = v4(json!([endpoint("a", "http://a"), endpoint("b", "http://b"), endpoint("s", "http://s")]));
    weights["endpointGroups"][0]["endpoints"][0]["weight"] = json!(0);
    weights["endpointGroups"][0]["endpoints"][1]["weight"] = json!(3);
    weights["endpointGroups"][0]["endpoints"][2]["secondary"] = json!(true);
    let endpoints = deploy(weights).endpoint_groups[0].endpoints.clone();
    assert_eq!(endpoints.iter().map(|e| e.weight).collect::<Vec<_>>(), [0, 3, 1]);
    assert_eq!(endpoints.iter().map(|e| e.secondary).collect::<Vec<_>>(), [false, false, true]);
}

#[test]
fn http2_and_https_compile() {
    let mut api = v4(json!([endpoint("e", "https://backend.example:8443/base")]));
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"version": "HTTP_2", "readTimeout": 500}});
    let api = deploy(api);
    let compiled = &api.endpoint_groups[0].endpoints[0];
    let http = compiled.http.unwrap();
    assert_eq!((http.version, http.read_timeout_ms), (pb::HttpVersion::Http2 as i32, 500));
    let tls = compiled.tls.clone().expect("https endpoints carry TLS options");
    assert!(!tls.trust_all && !tls.disable_hostname_verification, "verification is the default");

    let plain = deploy(v4(json!([endpoint("e", "http://b")])));
    assert_eq!(plain.endpoint_groups[0].endpoints[0].tls, None);
    assert_eq!(plain.endpoint_groups[0].endpoints[0].http.unwrap().version, pb::HttpVersion::Http11 as i32);
}

#[test]
fn ssl_trust_store_pem_and_switches() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let mut api = v4(json!([endpoint("e", "https://b")]));
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"ssl": {
        "trustAll": false, "hostnameVerifier": false, "trustStore": {"type": "PEM", "content": ca}}});
    let tls = deploy(api).endpoint_groups[0].endpoints[0].tls.clone().unwrap();
    assert_eq!(tls.trusted_ca_pem, ca);
    assert!(tls.disable_hostname_verification && !tls.trust_all);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca).unwrap();
    let mut from_file = v4(json!([endpoint("e", "https://b")]));
    from_file["endpointGroups"][0]["endpoints"][0]["inheritConfiguration"] = json!(false);
    from_file["endpointGroups"][0]["endpoints"][0]["sharedConfigurationOverride"] =
        json!({"ssl": {"trustAll": true, "trustStore": {"type": "pem", "path": path}}});
    let files = DefinitionFiles::under(dir.path()).unwrap();
    let tls = match compile_with_files(&source(&from_file), &ShardingTags::default(), None, &files) {
        Outcome::Deploy(api) => api.endpoint_groups[0].endpoints[0].tls.clone().unwrap(),
        other => panic!("expected a deployment, got {other:?}"),
    };
    assert_eq!((tls.trusted_ca_pem.as_str(), tls.trust_all), (ca, true));

    let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    let mut mtls = v4(json!([endpoint("e", "https://b")]));
    mtls["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"keyStore": {"type": "PEM", "certContent": ca, "keyContent": key}}});
    let tls = deploy(mtls).endpoint_groups[0].endpoints[0].tls.clone().unwrap();
    assert_eq!((tls.client_cert_pem.as_str(), tls.client_key_pem.as_str()), (ca, key));
}

#[test]
fn unsupported_ssl_says_where() {
    let mut jks = v4(json!([endpoint("e", "https://b")]));
    jks["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"trustStore": {"type": "JKS", "content": "AAAA", "password": "x"}}});
    assert_eq!(
        rejection(jks),
        "endpointGroups[0].sharedConfiguration.ssl.trustStore.type: `JKS` stores are not supported yet (use PEM)"
    );
    let mut p12 = v4(json!([endpoint("e", "https://b")]));
    p12["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"keyStore": {"type": "PKCS12", "path": "/k.p12"}}});
    assert!(rejection(p12).contains("ssl.keyStore.type: `PKCS12` stores are not supported yet"));
    let mut missing = v4(json!([endpoint("e", "https://b")]));
    missing["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"trustStore": {"type": "PEM", "path": "/nonexistent/ca.pem"}}});
    let dir = tempfile::tempdir().unwrap();
    let files = DefinitionFiles::under(dir.path()).unwrap();
    let reason = match compile_with_files(&source(&missing), &ShardingTags::default(), None, &files) {
        Outcome::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(
        reason.contains("ssl.trustStore.path: `/nonexistent/ca.pem` is not under --definition-files-dir"),
        "{reason}"
    );
    let mut missing_inside = missing.clone();
    missing_inside["endpointGroups"][0]["sharedConfiguration"]["ssl"]["trustStore"]["path"] = json!("ca.pem");
    let reason = match compile_with_files(&source(&missing_inside), &ShardingTags::default(), None, &files) {
        Outcome::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(reason.contains("ssl.trustStore.path: cannot read `ca.pem`"), "{reason}");
    let mut not_pem = v4(json!([endpoint("e", "https://b")]));
    not_pem["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"trustStore": {"type": "PEM", "content": "x"}}});
    assert!(rejection(not_pem).contains("ssl.trustStore.content: is not PEM"));
    let mut version = v4(json!([endpoint("e", "http://b")]));
    version["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"version": "HTTP_3"}});
    assert_eq!(rejection(version), "endpointGroups[0].sharedConfiguration.http.version: unknown HTTP version `http-3`");
}

#[test]
fn failover_v4_defaults_and_ranges() {
    let mut api = v4(json!([endpoint("e", "http://b")]));
    api["failover"] = json!({"enabled": true});
    assert_eq!(
        deploy(api.clone()).failover,
        Some(pb::Failover {
            max_retries: 2,
            slow_call_duration_ms: 2_000,
            open_state_duration_ms: 10_000,
            max_failures: 5,
            per_subscription: true
        })
    );
    api["failover"] = json!({"enabled": false, "maxRetries": 7});
    assert_eq!(deploy(api.clone()).failover, None);
    api["failover"] = json!({"enabled": true, "maxRetries": -1});
    assert_eq!(rejection(api.clone()), "failover.maxRetries: -1 is out of range (0..=100)");
    api["failover"] = json!({"enabled": true, "slowCallDuration": 0});
    assert!(rejection(api).starts_with("failover.slowCallDuration: 0 is out of range"));
}

#[test]
fn failover_v2_maps_without_circuit_breaking() {
    let api = json!({
        "id": "a", "name": "A", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/a"}],
            "failover": {"maxAttempts": 3, "retryTimeout": 1500, "cases": ["TIMEOUT"]},
            "groups": [{"name": "g", "load_balancing": {"type": "WEIGHTED_RANDOM"},
                "http": {"version": "HTTP_2"},
                "ssl": {"trustAll": true},
                "endpoints": [{"name": "a", "target": "https://a", "weight": 2, "inherit": true},
                              {"name": "b", "target": "http://b", "backup": true, "tenants": ["eu"]}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
    });
    let compiled = deploy(api.clone());
    let failover = compiled.failover.unwrap();
    assert_eq!((failover.max_retries, failover.slow_call_duration_ms, failover.max_failures), (3, 1500, 0));
    let group = &compiled.endpoint_groups[0];
    assert_eq!(group.load_balancer, pb::LoadBalancer::WeightedRandom as i32);
    assert!(group.endpoints[0].tls.as_ref().unwrap().trust_all);
    assert_eq!(group.endpoints[0].http.unwrap().version, pb::HttpVersion::Http2 as i32);
    assert!(group.endpoints[1].secondary);

    let us = compile_for_tenant(&source(&api), &ShardingTags::default(), Some("us"));
    let Outcome::Deploy(us) = us else { panic!("{us:?}") };
    assert_eq!(us.endpoint_groups[0].endpoints.len(), 1, "the eu endpoint is left out");
}

#[test]
fn tenants_filter_endpoints() {
    let mut api = v4(json!([endpoint("any", "http://any"), endpoint("eu", "http://eu"), endpoint("us", "http://us")]));
    api["endpointGroups"][0]["endpoints"][1]["tenants"] = json!(["eu", "ch"]);
    api["endpointGroups"][0]["endpoints"][2]["tenants"] = json!(["us"]);
    let names = |tenant: Option<&str>| match compile_for_tenant(&source(&api), &ShardingTags::default(), tenant) {
        Outcome::Deploy(api) => api.endpoint_groups[0].endpoints.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names(None), ["any", "eu", "us"], "a gateway without tenant keeps every endpoint");
    assert_eq!(names(Some("eu")), ["any", "eu"]);
    assert_eq!(names(Some("us")), ["any", "us"]);

    let mut only_eu = v4(json!([endpoint("eu", "http://eu")]));
    only_eu["endpointGroups"][0]["endpoints"][0]["tenants"] = json!(["eu"]);
    match compile_for_tenant(&source(&only_eu), &ShardingTags::default(), Some("us")) {
        Outcome::Skipped { why, .. } => assert!(why.contains("tenant `us`"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        rejection(v4(json!([]))).starts_with("endpointGroups[0].endpoints: the first endpoint group has no endpoint")
    );
}

#[test]
fn v2_endpoint_list_is_one_default_group_and_inherit_defaults_to_false() {
    // The form before endpoint groups: settings on `proxy`, endpoints listed there (Gravitee names the
    // group `default-group`); the list wins over `groups`.
    let api = json!({
        "id": "a", "name": "A", "gravitee": "2.0.0",
        "proxy": {"context_path": "/a",
            "load_balancing": {"type": "WEIGHTED_ROUND_ROBIN"},
            "http": {"connectTimeout": 1234, "version": "HTTP_2"},
            "headers": [{"name": "X-Group", "value": "g"}],
            "endpoints": [
                {"name": "own", "target": "http://own", "http": {"connectTimeout": 99}},
                {"name": "inherits", "target": "http://inherits", "inherit": true},
                {"name": "eu", "target": "http://eu", "tenant": "eu", "inherit": true}],
            "groups": [{"name": "ignored", "endpoints": [{"name": "x", "target": "http://x"}]}]},
        "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
    });
    let compiled = deploy(api.clone());
    assert_eq!(compiled.endpoint_groups.len(), 1);
    let group = &compiled.endpoint_groups[0];
    assert_eq!(group.name, "default-group");
    assert_eq!(group.load_balancer, pb::LoadBalancer::WeightedRoundRobin as i32);
    let names: Vec<_> = group.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["own", "inherits", "eu"]);
    let own = &group.endpoints[0];
    assert_eq!(own.http.unwrap().connect_timeout_ms, 99, "the endpoint's own http settings");
    assert_eq!(own.http.unwrap().version, pb::HttpVersion::Http11 as i32, "not the group's HTTP_2");
    assert!(own.headers.is_empty(), "no inherit: the group's headers do not apply");
    let inherits = &group.endpoints[1];
    assert_eq!(inherits.http.unwrap().connect_timeout_ms, 1234);
    assert_eq!(inherits.headers, vec![pb::Header { name: "X-Group".into(), value: "g".into() }]);

    let us = compile_for_tenant(&source(&api), &ShardingTags::default(), Some("us"));
    let Outcome::Deploy(us) = us else { panic!("{us:?}") };
    assert_eq!(us.endpoint_groups[0].endpoints.len(), 2, "`tenant: eu` is left out for tenant us");
}

/// Compiles `definition` with file paths allowed under `files`; the rejection reason or `None`.
fn with_files(definition: &Value, files: &DefinitionFiles) -> Option<String> {
    match compile_with_files(&source(definition), &ShardingTags::default(), None, files) {
        Outcome::Rejected(r) => Some(r.reason),
        Outcome::Deploy(_) => None,
        other => panic!("expected a deployment or a rejection, got {other:?}"),
    }
}

fn key_store_paths(cert: &std::path::Path, key: &str) -> Value {
    let mut api = v4(json!([endpoint("e", "https://b")]));
    api["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"keyStore": {"type": "PEM", "certPath": cert, "keyPath": key}}});
    api
}

#[test]
fn definition_file_paths_only_under_the_files_dir() {
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n-----END PRIVATE KEY-----\n";
    std::fs::write(allowed.join("cert.pem"), cert).unwrap();
    std::fs::write(allowed.join("key.pem"), key).unwrap();
    std::fs::write(root.path().join("outside-key.pem"), key).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside-key.pem"), allowed.join("escape.pem")).unwrap();
    let cert_path = allowed.join("cert.pem");

    // No --definition-files-dir: no file at all, and the reason names the field and the flag.
    let inside = key_store_paths(&cert_path, &allowed.join("key.pem").display().to_string());
    let reason = rejection(inside.clone());
    assert!(reason.starts_with("endpointGroups[0].sharedConfiguration.ssl.keyStore.certPath: "), "{reason}");
    assert!(reason.contains("--definition-files-dir"), "{reason}");

    let files = DefinitionFiles::under(&allowed).unwrap();
    // Inside: accepted, by absolute path or relative to the directory.
    assert_eq!(with_files(&inside, &files), None);
    assert_eq!(with_files(&key_store_paths(&cert_path, "key.pem"), &files), None);
    // Outside, by absolute path, by `..` and through a symlink: rejected with the field path, and the
    // key's content never appears in the reason.
    let outside = root.path().join("outside-key.pem").display().to_string();
    for key_path in [outside.as_str(), "../outside-key.pem", "escape.pem"] {
        let reason = with_files(&key_store_paths(&cert_path, key_path), &files).expect("rejected");
        assert!(
            reason.starts_with("endpointGroups[0].sharedConfiguration.ssl.keyStore.keyPath: ")
                && reason.contains("is not under --definition-files-dir"),
            "{key_path}: {reason}"
        );
        assert!(!reason.contains("SECRETKEYBYTES"), "{reason}");
    }
    // Not a regular file.
    let reason = with_files(&key_store_paths(&cert_path, "."), &files).expect("rejected");
    assert!(reason.contains("is not a regular file"), "{reason}");
}

#[test]
fn target_userinfo_becomes_basic_credentials_and_is_never_shown() {
    let api = deploy(v4(json!([endpoint("e", "http://user:p%40ss@backend:8080/base")])));
    let compiled = &api.endpoint_groups[0].endpoints[0];
    assert_eq!(compiled.target, "http://backend:8080/base");
    let auth: Vec<&pb::Header> =
        compiled.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization")).collect();
    // base64("user:p@ss")
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].value, "Basic dXNlcjpwQHNz");

    // A configured Authorization header wins over the userinfo.
    let mut configured = v4(json!([endpoint("e", "http://user:pw@backend")]));
    configured["endpointGroups"][0]["sharedConfiguration"] =
        json!({"headers": [{"name": "Authorization", "value": "Bearer configured"}]});
    let api = deploy(configured);
    let headers = &api.endpoint_groups[0].endpoints[0].headers;
    let auth: Vec<&pb::Header> = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization")).collect();
    assert_eq!((auth.len(), auth[0].value.as_str()), (1, "Bearer configured"));

    // Rejection reasons never quote the password.
    for target in
        ["ftp://user:TOPSECRET@backend", "http://user:TOPSECRET@backend/{#request.path}", "http://user:TOPSECRET@/p"]
    {
        let reason = rejection(v4(json!([endpoint("e", target)])));
        assert!(reason.starts_with("endpointGroups[0].endpoints[0].configuration.target: "), "{reason}");
        assert!(!reason.contains("TOPSECRET"), "{reason}");
    }
}

#[test]
fn compression_options_as_gravitee_reads_them() {
    let http = |shared: Value| {
        let mut api = v4(json!([endpoint("e", "http://b")]));
        api["endpointGroups"][0]["sharedConfiguration"] = shared;
        deploy(api).endpoint_groups[0].endpoints[0].http.unwrap()
    };
    let defaults = http(json!({}));
    assert!(defaults.use_compression && !defaults.propagate_client_accept_encoding, "useCompression defaults to true");
    let off = http(json!({"http": {"useCompression": false, "propagateClientAcceptEncoding": true}}));
    assert!(!off.use_compression && off.propagate_client_accept_encoding);
    // Gravitee's `isPropagateClientAcceptEncoding()` is false while compression is on.
    let both = http(json!({"http": {"propagateClientAcceptEncoding": true}}));
    assert!(both.use_compression && !both.propagate_client_accept_encoding);
}

#[test]
fn v2_execution_mode_chooses_the_engine() {
    let v2 = |mode: Option<&str>| {
        let mut api = json!({
            "id": "a", "name": "A", "gravitee": "2.0.0",
            "proxy": {"context_path": "/a", "endpoints": [{"name": "e", "target": "http://e"}]},
            "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
        });
        if let Some(mode) = mode {
            api["execution_mode"] = json!(mode);
        }
        deploy(api).legacy_engine
    };
    // As Gravitee's `ExecutionMode.fromLabel`: V3 unless the label is exactly one of the emulation's.
    assert!(v2(None));
    assert!(v2(Some("v3")));
    assert!(v2(Some("V4-EMULATION-ENGINE")));
    assert!(!v2(Some("v4-emulation-engine")));
    assert!(!v2(Some("jupiter")));
    assert!(!deploy(v4(json!([endpoint("e", "http://b")]))).legacy_engine, "v4 is never legacy");
}

#[test]
fn v2_host_header_becomes_a_host_header() {
    let api = |endpoint_extra: Value, group_extra: Value| {
        let mut endpoint = json!({"name": "e", "target": "http://e"});
        let mut group = json!({"name": "g", "endpoints": []});
        for (k, v) in endpoint_extra.as_object().unwrap() {
            endpoint[k] = v.clone();
        }
        for (k, v) in group_extra.as_object().unwrap() {
            group[k] = v.clone();
        }
        group["endpoints"] = json!([endpoint]);
        let compiled = deploy(json!({
            "id": "a", "name": "A", "gravitee": "2.0.0",
            "proxy": {"virtual_hosts": [{"path": "/a"}], "groups": [group]},
            "plans": [{"id": "p", "name": "free", "security": "KEY_LESS", "status": "PUBLISHED"}]
        }));
        compiled.endpoint_groups[0].endpoints[0]
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    // On the endpoint: one more header, after its own.
    assert_eq!(
        api(json!({"hostHeader": "api.internal", "headers": {"X-E": "e"}}), json!({})),
        vec![pair("X-E", "e"), pair("Host", "api.internal")]
    );
    assert!(api(json!({"hostHeader": "  "}), json!({})).is_empty(), "a blank one is ignored");
    // On the group: replaces a header named exactly `Host`, else is added (inheriting endpoints get it).
    assert_eq!(
        api(
            json!({"inherit": true}),
            json!({"hostHeader": "g.internal", "headers": [{"name": "Host", "value": "x"}, {"name": "X-G", "value": "g"}]})
        ),
        vec![pair("Host", "g.internal"), pair("X-G", "g")]
    );
    assert_eq!(api(json!({"inherit": true}), json!({"hostHeader": "g.internal"})), vec![pair("Host", "g.internal")]);
}

#[test]
fn endpoint_proxies_compile_in_both_forms() {
    let mut api = v4(json!([endpoint("e", "http://b")]));
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"proxy": {"enabled": true, "useSystemProxy": false,
        "host": " proxy.internal ", "port": 3128, "username": "u", "password": "pw", "type": "HTTP"}});
    let proxy = deploy(api).endpoint_groups[0].endpoints[0].proxy.clone().expect("the proxy is kept");
    assert_eq!(
        (proxy.r#type, proxy.host.as_str(), proxy.port, proxy.username.as_str(), proxy.password.as_str()),
        (pb::ProxyType::Http as i32, "proxy.internal", 3128, "u", "pw")
    );
    // Disabled: called directly, whatever else is written.
    let mut off = v4(json!([endpoint("e", "http://b")]));
    off["endpointGroups"][0]["sharedConfiguration"] = json!({"proxy": {"enabled": false, "useSystemProxy": true}});
    assert_eq!(deploy(off).endpoint_groups[0].endpoints[0].proxy, None);
    // v2: `principal`, a port written as text, SOCKS5; on the endpoint itself (no `inherit`).
    let mut v2 = json!({"id": "a", "name": "A", "gravitee": "2.0.0", "proxy": {
        "virtual_hosts": [{"path": "/a"}],
        "groups": [{"name": "g", "endpoints": [{"name": "e", "target": "http://b", "type": "http",
            "proxy": {"enabled": true, "host": "::1", "port": "1080", "principal": "p", "password": "s",
                "type": "SOCKS5"}}]}]},
        "plans": [{"id": "p1", "name": "K", "security": "KEY_LESS", "status": "PUBLISHED"}]});
    let proxy = deploy(v2.clone()).endpoint_groups[0].endpoints[0].proxy.clone().expect("the proxy is kept");
    assert_eq!(
        (proxy.r#type, proxy.host.as_str(), proxy.port, proxy.username.as_str()),
        (pb::ProxyType::Socks5 as i32, "[::1]", 1080, "p")
    );
    v2["proxy"]["groups"][0]["endpoints"][0]["proxy"]["type"] = json!("socks4");
    assert_eq!(deploy(v2).endpoint_groups[0].endpoints[0].proxy.as_ref().unwrap().r#type, pb::ProxyType::Socks4 as i32);
}

#[test]
fn unusable_endpoint_proxies_are_refused_without_their_password() {
    for (proxy, field, words) in [
        (json!({"useSystemProxy": true}), "proxy.useSystemProxy", "no system proxy"),
        (json!({"host": "p", "port": 1, "type": "SOCKS6"}), "proxy.type", "unknown proxy type"),
        (json!({"port": 3128}), "proxy.host", "no host"),
        (json!({"host": "user@p", "port": 3128}), "proxy.host", "not a host"),
        (json!({"host": "p"}), "proxy.port", "no port"),
        (json!({"host": "p", "port": 0}), "proxy.port", "port number"),
        (json!({"host": "p", "port": "http"}), "proxy.port", "port number"),
        (json!({"host": "p", "port": 1080, "type": "SOCKS5", "username": "u".repeat(256)}), "proxy.username", "255"),
    ] {
        let mut settings = proxy.clone();
        settings["enabled"] = json!(true);
        settings["password"] = json!("proxy-s3cret");
        let mut api = v4(json!([endpoint("e", "http://b")]));
        api["endpointGroups"][0]["sharedConfiguration"] = json!({"proxy": settings});
        let reason = rejection(api);
        assert!(reason.contains(field) && reason.contains(words), "{proxy}: {reason}");
        assert!(!reason.contains("proxy-s3cret"), "{reason}");
    }
}

#[test]
fn grpc_targets_and_endpoints_compile_to_grpc_calls() {
    let compiled = |target: &str| {
        let api = deploy(v4(json!([endpoint("e", target)])));
        let e = api.endpoint_groups[0].endpoints[0].clone();
        (e.target, e.grpc, e.tls.is_some())
    };
    // v4: gRPC by Content-Type, every call with a grpc:// target; grpcs:// is TLS.
    assert_eq!(compiled("http://b:80/x"), ("http://b:80/x".into(), pb::GrpcCalls::ByContentType as i32, false));
    assert_eq!(compiled("grpc://b:50051/svc"), ("http://b:50051/svc".into(), pb::GrpcCalls::All as i32, false));
    assert_eq!(compiled("grpcs://b:443"), ("https://b:443".into(), pb::GrpcCalls::ByContentType as i32, true));
    // v2: only an endpoint of type grpc (any target scheme), never by Content-Type.
    let v2 = |endpoint_type: &str, target: &str| {
        let api = deploy(json!({"id": "a", "name": "A", "gravitee": "2.0.0", "proxy": {
            "virtual_hosts": [{"path": "/a"}],
            "groups": [{"name": "g", "endpoints": [{"name": "e", "target": target, "type": endpoint_type}]}]},
            "plans": [{"id": "p1", "name": "K", "security": "KEY_LESS", "status": "PUBLISHED"}]}));
        let e = api.endpoint_groups[0].endpoints[0].clone();
        (e.target, e.grpc)
    };
    assert_eq!(v2("grpc", "grpc://host1:8083/myapi"), ("http://host1:8083/myapi".into(), pb::GrpcCalls::All as i32));
    assert_eq!(v2("GRPC", "https://h/x"), ("https://h/x".into(), pb::GrpcCalls::All as i32));
    assert_eq!(v2("http", "grpcs://h:8083"), ("https://h:8083".into(), pb::GrpcCalls::Unspecified as i32));
    // A v4 endpoint of type grpc is not Gravitee's.
    let mut api = v4(json!([endpoint("e", "http://b")]));
    api["endpointGroups"][0]["endpoints"][0]["type"] = json!("grpc");
    assert!(rejection(api).contains("endpoint type `grpc` is not supported"));
}
