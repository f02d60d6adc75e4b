//! Gravitee compatibility: API-key plans and policies, from Gravitee-format definitions served by the
//! Cloud Gate emulator, checked with real requests (status codes, headers, bodies, error keys) and the
//! metrics records that reach `/reports`.

use hgw_tests::gateway::{Agent, Dataplane, PROPAGATION, cloud_gateway, get, now_ms, report_for};
use hgw_tests::{Backend, CloudGateSim, eventually, v2_api, v4_api};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_plan_authenticates_strips_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("secured", "/secured", &backend.url());
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    sim.put_api(api).await;
    sim.put_subscription(json!({"id": "sub-1", "api": "secured", "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": "key-1", "key": "s3cr3t-key", "subscriptions": ["sub-1"], "subscription": "sub-1",
        "api": "secured", "plan": "gold", "application": "app-1", "revoked": false, "paused": false, "updatedAt": now_ms()}))
        .await;
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let missing = get(&client, &dp.url("/secured/x")).await.unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), json!({"message": "API Key is missing", "http_status_code": 401}));
    let invalid = client.get(dp.url("/secured/x")).header("X-Gravitee-Api-Key", "nope").send().await.unwrap();
    assert_eq!(invalid.status(), 401);
    assert_eq!(invalid.json::<Value>().await.unwrap()["message"], "API Key is not valid or is expired / revoked.");

    let ok = client.get(dp.url("/secured/x?a=1")).header("X-Gravitee-Api-Key", "s3cr3t-key").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let request_id = ok.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let echo: Value = ok.json().await.unwrap();
    assert!(echo["headers"].get("x-gravitee-api-key").is_none(), "the key is stripped: {echo}");
    let by_query = get(&client, &dp.url("/secured/y?api-key=s3cr3t-key&b=2")).await.unwrap();
    assert_eq!(by_query.status, 200);
    assert_eq!(by_query.json()["query"], "b=2", "the api-key query parameter is stripped");

    let doc = report_for(&sim, &request_id).await;
    assert_eq!(
        (&doc["plan-id"], &doc["application-id"], &doc["subscription-id"], &doc["security-type"]),
        (&json!("gold"), &json!("app-1"), &json!("sub-1"), &json!("API_KEY"))
    );
    let missing_id = missing.header("x-gravitee-request-id").unwrap();
    let doc = report_for(&sim, missing_id).await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(401), &json!("API_KEY_MISSING")));

    // The plaintext key never reaches the dataplane or the agent's config views.
    let (_, dump) = agent.node_get("/_node/apis").await;
    assert!(!dump.to_string().contains("s3cr3t-key"));
    assert!(!dp.config().await.to_string().contains("s3cr3t-key"));

    // Revoked in the control plane → refused within a few syncs.
    sim.put_key(json!({"id": "key-1", "key": "s3cr3t-key", "subscriptions": ["sub-1"], "subscription": "sub-1",
        "api": "secured", "plan": "gold", "application": "app-1", "revoked": true, "paused": false, "updatedAt": now_ms()}))
        .await;
    eventually("the revoked key is refused", PROPAGATION, || async {
        let reply = client.get(dp.url("/secured/x")).header("X-Gravitee-Api-Key", "s3cr3t-key").send().await.ok()?;
        (reply.status() == 401).then_some(())
    })
    .await;
    assert!(!agent.proc.stderr().contains("s3cr3t-key"), "keys are never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_transform_filter_limit_and_mock() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("policies", "/p", &backend.url());
    api["flows"] = json!([
        {"name": "headers", "enabled": true, "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
         "request": [{"name": "in", "policy": "transform-headers", "enabled": true, "configuration": {
             "removeHeaders": ["X-Internal"], "addHeaders": [{"name": "X-Added", "value": "yes"}], "appendHeaders": [{"name": "X-Multi", "value": "two"}]}}],
         "response": [{"name": "out", "policy": "transform-headers", "enabled": true, "configuration": {
             "removeHeaders": ["X-Gravitee-Backend-Secret"], "addHeaders": [{"name": "X-Served-By", "value": "hgw"}]}}]},
        {"name": "upload limit", "selectors": [{"type": "http", "path": "/upload", "pathOperator": "STARTS_WITH", "methods": ["POST"]}],
         "request": [{"policy": "request-content-limit", "configuration": {"limit": 16}}]},
        {"name": "private", "selectors": [{"type": "http", "path": "/private", "pathOperator": "STARTS_WITH"}],
         "request": [{"policy": "ip-filtering", "configuration": {"whitelistIps": ["10.0.0.0/8"], "blacklistIps": []}}]},
        {"name": "local", "selectors": [{"type": "http", "path": "/local", "pathOperator": "STARTS_WITH"}],
         "request": [{"policy": "ip-filtering", "configuration": {"whitelistIps": ["127.0.0.0/8", "::1"]}}]},
        {"name": "status", "selectors": [{"type": "http", "path": "/status/:code", "pathOperator": "EQUALS", "methods": ["GET"]}],
         "request": [{"policy": "mock", "configuration": {"status": 202, "headers": [{"name": "X-Mock", "value": "1"}], "content": "mocked"}}]}
    ]);
    sim.put_api(api).await;

    // The same header transformation in v2 form (pre/post steps with a scope).
    let mut v2 = v2_api("legacy", "/legacy", &backend.url());
    v2["flows"] = json!([{"name": "all", "path-operator": {"path": "/", "operator": "STARTS_WITH"}, "methods": [], "enabled": true,
        "pre": [{"name": "h", "policy": "transform-headers", "enabled": true, "configuration": {"scope": "REQUEST", "addHeaders": [{"name": "X-V2", "value": "in"}]}}],
        "post": [{"name": "h", "policy": "transform-headers", "enabled": true, "configuration": {"scope": "RESPONSE", "addHeaders": [{"name": "X-V2-Out", "value": "out"}]}}]}]);
    sim.put_api(v2).await;

    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let reply =
        client.get(dp.url("/p/things")).header("X-Internal", "1").header("X-Multi", "one").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["x-served-by"], "hgw", "response-phase transform");
    let echo: Value = reply.json().await.unwrap();
    assert!(echo["headers"].get("x-internal").is_none(), "{echo}");
    assert_eq!(echo["headers"]["x-added"], "yes");
    assert_eq!(echo["headers"]["x-multi"], "one, two");

    let small = client.post(dp.url("/p/upload")).body("0123456789").send().await.unwrap();
    assert_eq!(small.status(), 200);
    let large = client.post(dp.url("/p/upload")).body("01234567890123456789").send().await.unwrap();
    assert_eq!(large.status(), 413);
    let large_id = large.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    assert_eq!(large.json::<Value>().await.unwrap()["http_status_code"], 413);
    let doc = report_for(&sim, &large_id).await;
    assert_eq!(doc["error-key"], "REQUEST_CONTENT_LIMIT_TOO_LARGE");

    let denied = get(&client, &dp.url("/p/private/data")).await.unwrap();
    assert_eq!(denied.status, 403);
    assert!(denied.json()["message"].as_str().unwrap().starts_with("Your IP (127.0.0.1)"));
    assert_eq!(get(&client, &dp.url("/p/local/data")).await.unwrap().status, 200);
    let forwarded = client.get(dp.url("/p/private/data")).header("X-Forwarded-For", "10.1.2.3").send().await.unwrap();
    assert_eq!(forwarded.status(), 200, "the address a trusted (loopback) proxy forwarded is the client");
    let forwarded_id = forwarded.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    // An entry the client wrote itself, left of the one the trusted proxy added, does not count
    // (`--trusted-proxies all` would read it as Gravitee does).
    let spoofed =
        client.get(dp.url("/p/private/data")).header("X-Forwarded-For", "10.1.2.3, 8.8.8.8").send().await.unwrap();
    assert_eq!(spoofed.status(), 403);
    assert!(spoofed.json::<Value>().await.unwrap()["message"].as_str().unwrap().starts_with("Your IP (8.8.8.8)"));
    assert_eq!(report_for(&sim, &forwarded_id).await["remote-address"], "10.1.2.3", "records show the client");

    let mocked = get(&client, &dp.url("/p/status/7")).await.unwrap();
    assert_eq!((mocked.status, mocked.body.as_str(), mocked.header("x-mock")), (202, "mocked", Some("1")));
    assert_eq!(
        get(&client, &dp.url("/p/status/7/more")).await.unwrap().status,
        200,
        "EQUALS does not match deeper paths"
    );

    let legacy = get(&client, &dp.url("/legacy/x")).await.unwrap();
    assert_eq!(legacy.header("x-v2-out"), Some("out"));
    assert_eq!(legacy.json()["headers"]["x-v2"], "in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_quota_answer_429_with_gravitee_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("limited", "/limited", &backend.url());
    api["flows"] = json!([
        {"name": "rate", "selectors": [{"type": "http", "path": "/rate", "pathOperator": "STARTS_WITH"}],
         "request": [{"policy": "rate-limit", "configuration": {"addHeaders": true,
             "rate": {"limit": 3, "periodTime": 1, "periodTimeUnit": "HOURS"}}}]},
        {"name": "quota", "selectors": [{"type": "http", "path": "/quota", "pathOperator": "STARTS_WITH"}],
         "request": [{"policy": "quota", "configuration": {"quota": {"limit": 1, "periodTime": 1, "periodTimeUnit": "DAYS"}}}]}
    ]);
    sim.put_api(api).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let mut remaining = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = get(&client, &dp.url("/limited/rate")).await.unwrap();
        statuses.push(reply.status);
        remaining.push(reply.header("x-rate-limit-remaining").unwrap().to_owned());
        assert_eq!(reply.header("x-rate-limit-limit"), Some("3"));
        let reset: i64 = reply.header("x-rate-limit-reset").unwrap().parse().unwrap();
        assert!(reset > now_ms() + 3_500_000, "reset is first request + 1 hour, in epoch ms: {reset}");
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(remaining, vec!["2", "1", "0", "0", "0"]);
    let refused = get(&client, &dp.url("/limited/rate")).await.unwrap();
    assert_eq!(refused.json()["message"], "Rate limit exceeded! You reached the limit of 3 requests per 1 hours");
    let doc = report_for(&sim, refused.header("x-gravitee-request-id").unwrap()).await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(429), &json!("RATE_LIMIT_TOO_MANY_REQUESTS")));

    assert_eq!(get(&client, &dp.url("/limited/quota")).await.unwrap().status, 200);
    let over = get(&client, &dp.url("/limited/quota")).await.unwrap();
    assert_eq!(over.status, 429);
    assert_eq!(over.header("x-quota-remaining"), Some("0"), "quota adds its headers by default");
    assert_eq!(over.json()["message"], "Quota exceeded! You reached the limit of 1 requests per 1 days");
}

/// An RSA key pair made with openssl at test time: (private PEM, public PEM).
fn rsa_key_pair(dir: &std::path::Path) -> (String, String) {
    let private = dir.join("jwt-key.pem");
    let public = dir.join("jwt-pub.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private.to_str().unwrap()]);
    run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read_to_string(private).unwrap(), std::fs::read_to_string(public).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_plan_with_a_given_rsa_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path());
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("jwt-api", "/jwt", &backend.url());
    api["plans"] = json!([{"id": "jwt-plan", "name": "JWT", "status": "PUBLISHED", "security": {"type": "JWT", "configuration": {
        "signature": "RSA_RS256", "publicKeyResolver": "GIVEN_KEY", "resolverParameter": public_pem,
        "userClaim": "sub", "propagateAuthHeader": false, "checkRequiredScopes": true, "requiredScopes": ["orders:read"]}}}]);
    sim.put_api(api).await;
    sim.put_subscription(json!({"id": "sub-jwt", "api": "jwt-api", "plan": "jwt-plan", "application": "app-jwt",
        "clientId": "my-client", "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let exp = now_ms() / 1000 + 600;
    let good = sign(json!({"sub": "alice", "azp": "my-client", "scope": "orders:read", "exp": exp}));
    let ok = client.get(dp.url("/jwt/orders")).bearer_auth(&good).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let request_id = ok.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let echo: Value = ok.json().await.unwrap();
    assert!(echo["headers"].get("authorization").is_none(), "propagateAuthHeader=false strips it");
    let doc = report_for(&sim, &request_id).await;
    assert_eq!(
        (&doc["plan-id"], &doc["application-id"], &doc["subscription-id"], &doc["security-type"], &doc["user"]),
        (&json!("jwt-plan"), &json!("app-jwt"), &json!("sub-jwt"), &json!("JWT"), &json!("alice"))
    );

    let missing = get(&client, &dp.url("/jwt/orders")).await.unwrap();
    assert_eq!((missing.status, missing.json()["message"].clone()), (401, json!("Unauthorized")));
    let doc = report_for(&sim, missing.header("x-gravitee-request-id").unwrap()).await;
    assert_eq!(doc["error-key"], "JWT_MISSING_TOKEN");
    for (what, token) in [
        ("expired", sign(json!({"azp": "my-client", "scope": "orders:read", "exp": 1_000}))),
        ("no scope", sign(json!({"azp": "my-client", "scope": "other", "exp": exp}))),
        ("no subscription", sign(json!({"azp": "someone-else", "scope": "orders:read", "exp": exp}))),
        ("tampered", format!("{}x", good)),
    ] {
        let reply = client.get(dp.url("/jwt/orders")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(reply.status(), 401, "{what}");
        let id = reply.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
        assert_eq!(report_for(&sim, &id).await["error-key"], "JWT_INVALID_TOKEN", "{what}");
    }
    let by_query = get(&client, &dp.url(&format!("/jwt/orders?access_token={good}"))).await.unwrap();
    assert_eq!(by_query.status, 200, "access_token query parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gravitee_el_conditions_rules_and_templates() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("el", "/el", &backend.url());
    api["plans"] = json!([
        {"id": "beta", "name": "Beta", "status": "PUBLISHED", "security": {"type": "KEY_LESS"},
         "selectionRule": "{#request.headers['X-Channel'][0] == 'beta'}",
         "flows": [{"name": "beta", "selectors": [{"type": "http", "path": "/"}],
            "request": [{"policy": "transform-headers", "configuration": {"addHeaders": [{"name": "X-Plan", "value": "beta"}]}}]}]},
        {"id": "public", "name": "Public", "status": "PUBLISHED", "security": {"type": "KEY_LESS"}}
    ]);
    api["flows"] = json!([
        {"name": "posts only", "selectors": [{"type": "http", "path": "/"}, {"type": "condition", "condition": "{#request.method == 'POST'}"}],
         "request": [{"policy": "transform-headers", "configuration": {"addHeaders": [{"name": "X-Was-Post", "value": "yes"}]}}]},
        {"name": "templates", "selectors": [{"type": "http", "path": "/users/:id"}],
         "request": [
            {"policy": "policy-assign-attributes", "configuration": {"attributes": [{"name": "who", "value": "user-{#request.pathParams['id'][0]}"}]}},
            {"policy": "transform-headers", "configuration": {"addHeaders": [
                {"name": "X-Who", "value": "{#context.attributes['who']}"},
                {"name": "X-Query", "value": "{#request.params['q'][0]}"}]}},
            {"policy": "transform-headers", "condition": "{#request.headers['X-Debug'] != null}",
             "configuration": {"addHeaders": [{"name": "X-Debugging", "value": "on"}]}}
         ],
         "response": [{"policy": "transform-headers", "configuration": {"addHeaders": [{"name": "X-Status-Seen", "value": "{#response.status}"}]}}]},
        {"name": "hello", "selectors": [{"type": "http", "path": "/hello/:name", "pathOperator": "EQUALS"}],
         "request": [{"policy": "mock", "configuration": {"status": 200, "content": "hello {#request.pathParams['name'][0]}"}}]},
        {"name": "per client", "selectors": [{"type": "http", "path": "/limited"}],
         "request": [{"policy": "rate-limit", "configuration": {"addHeaders": true,
             "rate": {"limit": 1, "periodTime": 1, "periodTimeUnit": "HOURS", "key": "{#request.headers['X-Client'][0]}"}}}]}
    ]);
    sim.put_api(api).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let echo = |reply: reqwest::Response| async move { reply.json::<Value>().await.unwrap() };
    let get_echo = echo(client.get(dp.url("/el/users/42?q=find")).header("X-Debug", "1").send().await.unwrap()).await;
    assert_eq!(get_echo["headers"]["x-who"], "user-42");
    assert_eq!(get_echo["headers"]["x-query"], "find");
    assert_eq!(get_echo["headers"]["x-debugging"], "on", "step condition held");
    assert!(get_echo["headers"].get("x-was-post").is_none(), "condition selector: GET is not POST");
    assert!(get_echo["headers"].get("x-plan").is_none(), "no X-Channel: the public plan serves");
    let reply = client.get(dp.url("/el/users/7")).send().await.unwrap();
    assert_eq!(reply.headers()["x-status-seen"], "200", "response-phase template reads #response.status");
    let no_debug = echo(reply).await;
    assert!(no_debug["headers"].get("x-debugging").is_none(), "step condition did not hold");

    let post = echo(client.post(dp.url("/el/anything")).body("x").send().await.unwrap()).await;
    assert_eq!(post["headers"]["x-was-post"], "yes");
    let beta = echo(client.get(dp.url("/el/x")).header("X-Channel", "beta").send().await.unwrap()).await;
    assert_eq!(beta["headers"]["x-plan"], "beta", "the selection rule picked the beta plan");

    let hello = get(&client, &dp.url("/el/hello/world")).await.unwrap();
    assert_eq!(hello.body, "hello world");

    let limited = |client_id: &'static str| {
        let client = client.clone();
        let url = dp.url("/el/limited");
        async move { client.get(url).header("X-Client", client_id).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        (limited("a").await, limited("a").await, limited("b").await),
        (200, 429, 200),
        "the counter key is per X-Client"
    );
}

/// The JWK (RSA) of a PEM public key, with `kid`; the modulus comes from openssl.
fn rsa_jwk(public_pem_path: &std::path::Path, kid: &str) -> Value {
    use base64::Engine;
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-pubin", "-in", public_pem_path.to_str().unwrap(), "-noout", "-modulus"])
        .output()
        .expect("openssl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_plan_with_a_jwks_url_follows_key_rotation() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let key_a = dir.path().join("a");
    let key_b = dir.path().join("b");
    std::fs::create_dir_all(&key_a).unwrap();
    std::fs::create_dir_all(&key_b).unwrap();
    let (private_a, _) = rsa_key_pair(&key_a);
    let (private_b, _) = rsa_key_pair(&key_b);
    let jwk_a = rsa_jwk(&key_a.join("jwt-pub.pem"), "key-a");
    let jwk_b = rsa_jwk(&key_b.join("jwt-pub.pem"), "key-b");

    // A real JWKS endpoint whose document the test can change.
    let document = Arc::new(Mutex::new(json!({"keys": [jwk_a]}).to_string()));
    let served = document.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let served = served.clone();
            async move { served.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("jwks-api", "/jwks-api", &backend.url());
    api["plans"] = json!([{"id": "jwks-plan", "name": "JWT", "status": "PUBLISHED", "security": {"type": "JWT", "configuration": {
        "signature": "RSA_RS256", "publicKeyResolver": "JWKS_URL", "resolverParameter": jwks_url}}}]);
    sim.put_api(api).await;
    sim.put_subscription(json!({"id": "sub-k", "api": "jwks-api", "plan": "jwks-plan", "application": "app-k",
        "clientId": "client-k", "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &["--jwks-refresh-interval", "1s"]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();

    let sign = |private: &str, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let claims = json!({"sub": "bob", "azp": "client-k", "exp": now_ms() / 1000 + 600});
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap())
            .unwrap()
    };
    let token_a = sign(&private_a, "key-a");
    let token_b = sign(&private_b, "key-b");
    let status = |token: String| {
        let client = client.clone();
        let url = dp.url("/jwks-api/x");
        async move { client.get(url).bearer_auth(token).send().await.ok().map(|r| r.status().as_u16()) }
    };
    eventually("the agent fetched the JWKS", PROPAGATION, || async {
        (status(token_a.clone()).await? == 200).then_some(())
    })
    .await;
    assert_eq!(status(token_b.clone()).await, Some(401), "key B is not in the set yet");

    *document.lock().unwrap() = json!({"keys": [jwk_b]}).to_string();
    eventually("the rotated key set arrives", PROPAGATION, || async {
        (status(token_b.clone()).await? == 200).then_some(())
    })
    .await;
    assert_eq!(status(token_a.clone()).await, Some(401), "key A was rotated out");

    // The identity provider going away keeps the last good key set.
    server.abort();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(status(token_b).await, Some(200));
    assert!(agent.proc.stderr().contains("JWKS fetch failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_location_is_the_gateways_setting() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("keyed", "/keyed", &backend.url());
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY"}, "status": "PUBLISHED"}]);
    sim.put_api(api).await;
    sim.put_subscription(json!({"id": "s", "api": "keyed", "plan": "gold", "application": "a", "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": "k", "key": "my-key", "subscriptions": ["s"], "subscription": "s", "revoked": false, "updatedAt": now_ms()}))
        .await;
    let token = sim.token().await;
    let args = ["--api-key-header", "X-Api-Key", "--api-key-query-param", "key"];
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &args).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    let ok = client.get(dp.url("/keyed/x")).header("X-Api-Key", "my-key").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let echo: Value = ok.json().await.unwrap();
    assert!(echo["headers"].get("x-api-key").is_none(), "the configured header is stripped");
    assert_eq!(get(&client, &dp.url("/keyed/x?key=my-key")).await.unwrap().status, 200);
    let default_header = client.get(dp.url("/keyed/x")).header("X-Gravitee-Api-Key", "my-key").send().await.unwrap();
    assert_eq!(default_header.status(), 401, "only the configured location is read");
}
