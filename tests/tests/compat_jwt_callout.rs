//! Gravitee compatibility: generate-jwt (gravitee-policy-generate-jwt 1.8) and http-callout
//! (gravitee-policy-http-callout 5.x, APIM 4.6 to 4.10), end to end through a real agent and
//! dataplane to real backends, on v4 and v2 APIs. Neither plugin is served by Maven Central, so there
//! is no oracle run: the plugins' code and tests are the reference, and the tokens are checked here
//! with the verification key.

use hgw_tests::gateway::cloud_gateway;
use hgw_tests::{Backend, CloudGateSim, flow, step, v2_api, v2_flow, v4_api};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// A throwaway 2048-bit RSA key (PKCS#1), made for these tests only.
const RSA_PRIVATE: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAobHeBmM9roo88wzyrz960cCTthegZ3RTbQCcaQdRlwis1mza\ngTtIbffpHpJrHkgLrt/cLRnOmrSyHzl3ulaC1LwStrvVLE43hO2hFB3do96MvVod\nes36NdLd5DqcqtfMhdaLuHbSwkZF6U6u8eMwhlXcdVckCNAsgVTsUGRolIGcC5GJ\npaGG/iyzoWviRbnBlOFaTa0AXjbiqUFFBLvAM4V8/KKbhID41uMFMC2kgnjkP5mm\neaWxQuuWrS91rBz6qUG53BZeylcBS7QowwQExc6fj4Qqk8N6IsxeL/H92xkXlrRn\n3upnD0txqfTYJw3H1/WbpeHqcP+ijtOrwvKmRQIDAQABAoIBABUOKlE+nwuZaLJl\nnzx+0al6oEF39iVCmpJ5H+T1VQSL1qXdat6lL5tSSwL2IgjBbPQKposg7yxqFz/F\npfeXyFWXYAB3mRy52rTulKkf8nqiQkVt9KTHKavUl5xenYQJsdJDy9HrdyphKD1n\nR5Sr9uenSpvlCwYyxXjZ7CPTz2J3AQxn6y6UaxsEtzTdE6F0ittOHo2o9POTnwfr\nPRdU2PScntpCB5x4AEQjFUjcT/15LT/uWl9gFLScTpvA0GD2Hfkm+mv1K90Vvw4K\nqSl5zwJHU5K97po3Mjbp8Nu6nZUjjyJBTEPAaOgz6EFGrcs7R4lHLQqrTwI5Inji\nWIp75YkCgYEA26Vktte7WJJdkWH8htUFTjpU23XWcO5HKlqIKvRpt3DQzdtnvCdq\n7+gf8H9juFw0nXs6ZZOKDtigB+Xbd3qB+kThT8T0uzMfeNSbW/q+HodQAR0PqZPD\n4x1eMaJU63CJeQYM190qNXtkTtbkhL5rjW0lwhdJB++/0Y3xDQ3T/0sCgYEAvHUG\nYPpteu6asO3kkr1vBtOmau5pOwICABNhLapFL8YUCGBg6dkMSynRIxdVNMAPR2TP\nvFE++CC15JHzGLfrjBVGNZD+fLS/DuvL2Y6l/1HNk8QQRXrvUXu8iOVXrZJNvIIf\nauXz484xovBfm4aZYscA2z3VP+5/FzKJbJYmJq8CgYARXTDqF4HzDZciECoDisGh\nnpDozJcIVH4BxihvpOTaoKuRKqA3yrH0h1hHDfsXLwrlzEEgmJpYdB2qoixIdMHj\nxCA/yyVBy1fYmI4zpk3zYeUcQWzkjg71XHP+3oNyHXJww96uDgjxM3EJnolwSRF9\nm7xZbLfUTcrPSTZePtKcowKBgQCnUZcqPu04ueNptqy7g6ixfPRB+A5Br5SrEIm1\nC3mF4u0iSr+An44Epcnix/KEdQibsGunnNK1ZgVYPCSDC7f7lV/Sazsm6SrASqWg\nMMA8oRpOWULBDVaxF5TaThS8LCsMdNMEC8mvtf/n1FZuNOC2DE08WfedXVhE9j+A\nwwZ4TQKBgBjb5mP1MepeY24rcab4rFZwJi+5dEKctKtuSPscDdkayFLCG70t76if\nMmPl3J1dSIGoZrFIlujzK0krcR6HAitDljuMeLVp/FHVZmrvA36WLhNEQISh/aYw\n4Ij05TDfHALMaHq/IPcSLKLGgAMFtQjMINWlDsk+P8XDkKFnYT9P\n-----END RSA PRIVATE KEY-----";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAobHeBmM9roo88wzyrz96\n0cCTthegZ3RTbQCcaQdRlwis1mzagTtIbffpHpJrHkgLrt/cLRnOmrSyHzl3ulaC\n1LwStrvVLE43hO2hFB3do96MvVodes36NdLd5DqcqtfMhdaLuHbSwkZF6U6u8eMw\nhlXcdVckCNAsgVTsUGRolIGcC5GJpaGG/iyzoWviRbnBlOFaTa0AXjbiqUFFBLvA\nM4V8/KKbhID41uMFMC2kgnjkP5mmeaWxQuuWrS91rBz6qUG53BZeylcBS7QowwQE\nxc6fj4Qqk8N6IsxeL/H92xkXlrRn3upnD0txqfTYJw3H1/WbpeHqcP+ijtOrwvKm\nRQIDAQAB\n-----END PUBLIC KEY-----";
const SECRET: &str = "a-32-byte-long-secret-for-HS256!";

/// A transform-headers step that sends the generated token upstream.
fn send_token() -> Value {
    step(
        "transform-headers",
        json!({"scope": "REQUEST", "addHeaders": [{"name": "X-Jwt", "value": "{#context.attributes['jwt.generated']}"}]}),
    )
}

/// The token the echo backend received.
async fn forwarded_token(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    echo["headers"]["x-jwt"].as_str().unwrap_or_else(|| panic!("no token forwarded: {echo}")).to_owned()
}

fn decode(token: &str, algorithm: Algorithm, key: &DecodingKey, audiences: &[&str]) -> Value {
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    if audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(audiences);
    }
    jsonwebtoken::decode::<Value>(token, key, &validation).unwrap_or_else(|e| panic!("{token}: {e}")).claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_jwt_signs_tokens_that_a_following_step_sends_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("gj", "/gj", &backend.url());
    api["flows"] = json!([
        flow(
            "/hs",
            json!([
                step(
                    "policy-generate-jwt",
                    json!({
                        "signature": "HMAC_HS256", "content": SECRET, "kid": "my-kid", "audiences": ["graviteeam"],
                        "id": "817c6cfa-6ae6-446e-a631-5ded215b404b", "subject": "{#request.headers['x-user'][0]}",
                        "customClaims": [
                            {"name": "claim1", "value": "claim1-value"},
                            {"name": "claim2", "value": "{#request.path}"},
                            {"name": "users", "value": "{#request.headers['x-user']}"},
                            {"name": "greeting", "value": "hello {#request.headers['x-user'][0]}"},
                            {"name": "absent", "value": "{#request.headers['x-none']}"}
                        ]
                    })
                ),
                send_token()
            ]),
            json!([])
        ),
        flow(
            "/rs",
            json!([
                step(
                    "policy-generate-jwt",
                    json!({
                        "content": RSA_PRIVATE, "expiresIn": 2, "expiresInUnit": "MINUTES", "audiences": ["a", "{#request.method}"],
                        "issuer": "", "x509CertificateChain": "X5C"
                    })
                ),
                send_token()
            ]),
            json!([])
        ),
        flow(
            "/b64",
            json!([
                step(
                    "policy-generate-jwt",
                    json!({
                        "signature": "HMAC_HS384", "secretBase64Encoded": true, "expiresIn": 0,
                        "content": "SSdtIGEgdmFsaWQgQmFzZTY0IGtleSB3aXRoIGF0IGxlYXN0IDM4NCBiaXRzLCB5ZXMgaXQgaXMhCg"
                    })
                ),
                send_token()
            ]),
            json!([])
        ),
    ]);
    let mut v2 = v2_api("gj-v2", "/gj-v2", &backend.url());
    v2["flows"] = json!([v2_flow(
        "/",
        json!([
            step(
                "policy-generate-jwt",
                json!({"signature": "HMAC_HS512", "content": SECRET.repeat(2), "issuer": "{#request.method}"})
            ),
            send_token()
        ]),
        json!([])
    )]);
    // Keys that cannot sign: the API is rejected naming `content`, never quoting the key.
    let mut bad_rsa = v4_api("gj-bad-rsa", "/gj-bad-rsa", &backend.url());
    bad_rsa["flows"] = json!([flow(
        "/",
        json!([step(
            "policy-generate-jwt",
            json!({
                "content": "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n"
            })
        )]),
        json!([])
    )]);
    let mut short = v4_api("gj-short", "/gj-short", &backend.url());
    short["flows"] = json!([flow(
        "/",
        json!([step(
            "policy-generate-jwt",
            json!({
                "signature": "HMAC_HS256", "content": "too-short-s3cret"
            })
        )]),
        json!([])
    )]);
    let mut keystore = v4_api("gj-jks", "/gj-jks", &backend.url());
    keystore["flows"] = json!([flow(
        "/",
        json!([step(
            "policy-generate-jwt",
            json!({
                "keyResolver": "JKS", "content": "/opt/keys/gw.jks", "alias": "gw", "storepass": "pw"
            })
        )]),
        json!([])
    )]);
    for a in [api, v2, bad_rsa, short, keystore] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    // HS256: Gravitee's own integration test, claims and header.
    let response = client.get(dp.url("/gj/hs")).header("x-user", "ann").send().await.unwrap();
    let token = forwarded_token(response).await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!((header.alg, header.kid.as_deref(), header.typ.as_deref()), (Algorithm::HS256, Some("my-kid"), None));
    let claims = decode(&token, Algorithm::HS256, &DecodingKey::from_secret(SECRET.as_bytes()), &["graviteeam"]);
    assert_eq!(claims["jti"], "817c6cfa-6ae6-446e-a631-5ded215b404b");
    assert_eq!(claims["aud"], "graviteeam", "one audience is a string claim");
    assert_eq!(claims["iss"], "urn://gravitee-api-gw");
    assert_eq!(claims["sub"], "ann");
    assert_eq!(claims["claim1"], "claim1-value");
    assert_eq!(claims["claim2"], "/gj/hs");
    assert_eq!(claims["users"], json!(["ann"]), "one expression keeps its type");
    assert_eq!(claims["greeting"], "hello ann");
    assert!(claims.get("absent").is_none(), "a null claim is left out: {claims}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now) <= 5, "iat {iat} now {now}");
    assert_eq!(claims["exp"].as_u64().unwrap() - iat, 30, "Gravitee's default: 30 seconds");

    // RS256 with a PKCS#1 key: two audiences make an array, an empty issuer leaves `iss` out, the
    // jti is a fresh UUID per token, X5C adds nothing for an inline key.
    let first = forwarded_token(client.get(dp.url("/gj/rs")).send().await.unwrap()).await;
    let second = forwarded_token(client.get(dp.url("/gj/rs")).send().await.unwrap()).await;
    let header = jsonwebtoken::decode_header(&first).unwrap();
    assert_eq!((header.alg, header.kid, header.x5c), (Algorithm::RS256, None, None));
    let public = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let claims = decode(&first, Algorithm::RS256, &public, &["a"]);
    assert_eq!(claims["aud"], json!(["a", "GET"]));
    assert!(claims.get("iss").is_none() && claims.get("sub").is_none(), "{claims}");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 120);
    let other = decode(&second, Algorithm::RS256, &public, &["a"]);
    assert_ne!(claims["jti"], other["jti"]);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
    // The token does not verify with another key.
    let wrong =
        jsonwebtoken::decode::<Value>(&first, &DecodingKey::from_secret(b"x"), &Validation::new(Algorithm::HS256));
    assert!(wrong.is_err());

    // A base64 secret (java.util.Base64, padding optional), no expiry.
    let token = forwarded_token(client.get(dp.url("/gj/b64")).send().await.unwrap()).await;
    let secret = b"I'm a valid Base64 key with at least 384 bits, yes it is!\n";
    let claims = decode(&token, Algorithm::HS384, &DecodingKey::from_secret(secret), &[]);
    assert!(claims.get("exp").is_none(), "{claims}");

    // v2 (emulation engine), HS512, EL issuer.
    let token = forwarded_token(client.get(dp.url("/gj-v2/x")).send().await.unwrap()).await;
    let claims = decode(&token, Algorithm::HS512, &DecodingKey::from_secret(SECRET.repeat(2).as_bytes()), &[]);
    assert_eq!(claims["iss"], "GET");

    for (id, expected) in [
        ("gj-bad-rsa", "configuration.content"),
        ("gj-short", "must be at least 256 bits"),
        ("gj-jks", "configuration.keyResolver"),
    ] {
        let reason = agent.rejection(id).await;
        assert!(reason.contains(expected), "{id}: {reason}");
        assert!(!reason.contains("c2VjcmV0") && !reason.contains("too-short-s3cret"), "{id} quotes its key: {reason}");
    }
}

fn callout(configuration: Value) -> Value {
    step("policy-http-callout", configuration)
}

/// A transform-headers step sending attributes upstream (request phase) or to the client (response).
fn attributes_as_headers(scope: &str, names: &[&str]) -> Value {
    let headers: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": format!("X-Attr-{n}"), "value": format!("{{#context.attributes['{n}']}}")}))
        .collect();
    step("transform-headers", json!({"scope": scope, "addHeaders": headers}))
}

/// Status and parsed error body of an answer.
async fn failure(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_callout_calls_out_sets_variables_and_fails_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let remote = Backend::start("CALLOUT").await;
    let base = remote.url();
    // Nothing listens there.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let exit_on_500 = json!({"method": "GET", "url": format!("{base}/fail?status=500"), "exitOnError": true,
        "errorStatusCode": "501", "errorContent": "Error content with status {#calloutResponse.status}"});

    let mut api = v4_api("co", "/co", &backend.url());
    api["flows"] = json!([
        flow(
            "/vars",
            json!([
                callout(json!({
                    "method": "GET", "url": format!("{base}/lookup/{{#request.headers['x-id'][0]}}"),
                    "headers": [{"name": "X-From", "value": "{#request.method}"}, {"name": "X-None", "value": null}],
                    "variables": [
                        {"name": "path", "value": "{#jsonPath(#calloutResponse.content, '$.path')}"},
                        {"name": "from", "value": "{#jsonPath(#calloutResponse.content, '$.headers.x-from')}"},
                        {"name": "status", "value": "{#calloutResponse.status}"},
                        {"name": "backend", "value": "{#calloutResponse.headers['content-type'][0]}"}
                    ]
                })),
                attributes_as_headers("REQUEST", &["path", "from", "status", "backend"])
            ]),
            json!([])
        ),
        flow(
            "/post",
            json!([
                callout(json!({
                    "method": "POST", "url": format!("{base}/echo?echo_body"),
                    "headers": [{"name": "Content-Type", "value": "application/json"}],
                    "body": "{\"user\":\"{#request.headers['x-user'][0]}\"}",
                    "variables": [{"name": "user", "value": "{#jsonPath(#calloutResponse.content, '$.user')}"}]
                })),
                attributes_as_headers("REQUEST", &["user"])
            ]),
            json!([])
        ),
        flow("/exit", json!([callout(exit_on_500.clone())]), json!([])),
        // The condition does not hold: variables are set and the request goes on.
        flow(
            "/ok",
            json!([
                callout(json!({"url": format!("{base}/fine"), "exitOnError": true,
            "variables": [{"name": "status", "value": "{#calloutResponse.status}"}]})),
                attributes_as_headers("REQUEST", &["status"])
            ]),
            json!([])
        ),
        flow(
            "/down-exit",
            json!([callout(json!({"url": format!("{down}/x"), "exitOnError": true, "errorStatusCode": 503}))]),
            json!([])
        ),
        flow("/down", json!([callout(json!({"url": format!("{down}/x")}))]), json!([])),
        flow(
            "/forget",
            json!([
                callout(json!({"url": format!("{base}/slow?sleep_ms=3000"), "fireAndForget": true,
            "exitOnError": true, "variables": [{"name": "status", "value": "{#calloutResponse.status}"}]})),
                attributes_as_headers("REQUEST", &["status"])
            ]),
            json!([])
        ),
        flow("/wait", json!([callout(json!({"url": format!("{base}/slow?sleep_ms=700")}))]), json!([])),
        flow("/resp-exit", json!([]), json!([callout(exit_on_500.clone())])),
        flow(
            "/resp-vars",
            json!([]),
            json!([
                callout(json!({"url": format!("{base}/r?status=201"),
            "variables": [{"name": "status", "value": "{#calloutResponse.status}"}]})),
                attributes_as_headers("RESPONSE", &["status"])
            ])
        ),
    ]);
    // v2 on the V3 engine: a failed call without exitOnError goes on; CALLOUT_HTTP_ERROR is a 500.
    let mut v2 = v2_api("co-v2", "/co-v2", &backend.url());
    v2["flows"] = json!([
        v2_flow(
            "/vars",
            json!([
                callout(json!({"url": format!("{base}/v2/{{#request.method}}"),
            "variables": [{"name": "path", "value": "{#jsonPath(#calloutResponse.content, '$.path')}"}]})),
                attributes_as_headers("REQUEST", &["path"])
            ]),
            json!([])
        ),
        v2_flow("/down", json!([callout(json!({"url": format!("{down}/x")}))]), json!([])),
        v2_flow(
            "/down-exit",
            json!([callout(json!({"url": format!("{down}/x"), "exitOnError": true, "errorStatusCode": 503}))]),
            json!([])
        ),
        v2_flow("/exit", json!([callout(exit_on_500.clone())]), json!([])),
        // scope RESPONSE: the V3 engine runs it in the response phase only.
        v2_flow(
            "/post",
            json!([]),
            json!([callout(json!({"scope": "RESPONSE", "url": format!("{base}/fail?status=500"),
            "exitOnError": true, "errorStatusCode": 502}))])
        ),
    ]);
    let mut refused_proxy = v4_api("co-proxy", "/co-proxy", &backend.url());
    refused_proxy["flows"] =
        json!([flow("/", json!([callout(json!({"url": format!("{base}/x"), "useSystemProxy": true}))]), json!([]))]);
    let mut refused_scheme = v4_api("co-ftp", "/co-ftp", &backend.url());
    refused_scheme["flows"] = json!([flow("/", json!([callout(json!({"url": "ftp://files.example/x"}))]), json!([]))]);
    let mut refused_path = v4_api("co-jsonpath", "/co-jsonpath", &backend.url());
    refused_path["flows"] = json!([flow(
        "/",
        json!([callout(json!({"url": format!("{base}/x"),
        "variables": [{"name": "v", "value": "{#jsonPath(#calloutResponse.content, '$..deep')}"}]}))]),
        json!([])
    )]);
    for a in [api, v2, refused_proxy, refused_scheme, refused_path] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let echo = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };

    // The callout gets the templated request; its answer feeds the variables a later step reads.
    let before = remote.requests();
    let seen = echo(client.get(dp.url("/co/vars")).header("x-id", "42").send().await.unwrap()).await;
    assert_eq!(remote.requests(), before + 1);
    assert_eq!(seen["headers"]["x-attr-path"], "/lookup/42", "{seen}");
    assert_eq!(seen["headers"]["x-attr-from"], "GET");
    assert_eq!(seen["headers"]["x-attr-status"], "200");
    assert_eq!(seen["headers"]["x-attr-backend"], "application/json");
    let seen = echo(client.get(dp.url("/co/post")).header("x-user", "ann").send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-attr-user"], "ann", "{seen}");

    // exitOnError: the condition holds on a 500 → errorStatusCode, CALLOUT_EXIT_ON_ERROR, errorContent.
    let (status, body) = failure(client.get(dp.url("/co/exit")).send().await.unwrap()).await;
    assert_eq!((status, body["message"].as_str()), (501, Some("Error content with status 500")), "{body}");
    let seen = echo(client.get(dp.url("/co/ok")).send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-attr-status"], "200");

    // The callout's host is down: CALLOUT_HTTP_ERROR with errorStatusCode on v4; without exitOnError
    // the v4 policy's error fails the request.
    let (status, body) = failure(client.get(dp.url("/co/down-exit")).send().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Connection refused"), "{body}");
    let (status, _) = failure(client.get(dp.url("/co/down")).send().await.unwrap()).await;
    assert_eq!(status, 500);

    // Fire and forget: the request does not wait for the slow callout, and sees none of its answer.
    let started = std::time::Instant::now();
    let seen = echo(client.get(dp.url("/co/forget")).send().await.unwrap()).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(2000), "{:?}", started.elapsed());
    assert!(seen["headers"].get("x-attr-status").is_none_or(|v| v == ""), "{seen}");
    // Without it the request waits for the answer.
    let started = std::time::Instant::now();
    echo(client.get(dp.url("/co/wait")).send().await.unwrap()).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(700));

    // Response phase.
    let (status, body) = failure(client.get(dp.url("/co/resp-exit")).send().await.unwrap()).await;
    assert_eq!((status, body["message"].as_str()), (501, Some("Error content with status 500")), "{body}");
    let response = client.get(dp.url("/co/resp-vars")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-attr-status"], "201");

    // v2 on the V3 engine.
    let seen = echo(client.get(dp.url("/co-v2/vars")).send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-attr-path"], "/v2/GET", "{seen}");
    echo(client.get(dp.url("/co-v2/down")).send().await.unwrap()).await;
    let (status, body) = failure(client.get(dp.url("/co-v2/down-exit")).send().await.unwrap()).await;
    assert_eq!(status, 500, "the V3 engine's CALLOUT_HTTP_ERROR is a 500: {body}");
    let (status, body) = failure(client.get(dp.url("/co-v2/exit")).send().await.unwrap()).await;
    assert_eq!((status, body["message"].as_str()), (501, Some("Error content with status 500")), "{body}");
    let (status, _) = failure(client.get(dp.url("/co-v2/post")).send().await.unwrap()).await;
    assert_eq!(status, 502);

    for (id, expected) in
        [("co-proxy", "configuration.useSystemProxy"), ("co-ftp", "only http and https"), ("co-jsonpath", "deep scan")]
    {
        let reason = agent.rejection(id).await;
        assert!(reason.contains(expected), "{id}: {reason}");
    }
}
