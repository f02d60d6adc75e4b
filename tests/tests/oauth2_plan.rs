//! Gravitee's `oauth2` plan with the generic OAuth2 resource, end to end: the real agent and dataplane
//! in local mode, and a real authorization server (Spring Authorization Server, built once from Maven
//! Central by `tests/oauth2-as/setup.sh` and cached under `~/.cache/hgw-oauth2-as/`) that issues
//! opaque tokens with the client-credentials grant and introspects them (RFC 7662) for the agent's
//! registered client. The dataplane never sees the client secret: it asks the agent
//! (`hgw.v1.OAuth2/Introspect`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane};
use hgw_tests::{Backend, Proc, eventually, free_port, step, v2_api, v4_api};
use serde_json::{Value, json};

/// The introspecting client's secret (tests/oauth2-as/src/main/resources/application.properties).
const GATEWAY_SECRET: &str = "gw-secret-7f3a9c";
const TIMEOUT: Duration = Duration::from_secs(120);

/// The test authorization server's jar: built by `setup.sh` (mvn) the first time.
fn authorization_server_jar() -> PathBuf {
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("oauth2-as/setup.sh");
    let output = std::process::Command::new("bash").arg(&setup).output().expect("running oauth2-as/setup.sh");
    assert!(
        output.status.success(),
        "building the test authorization server failed (needs mvn and a JDK >= 17):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

struct AuthorizationServer {
    proc: Proc,
    url: String,
}

impl AuthorizationServer {
    async fn start(dir: &Path) -> AuthorizationServer {
        let jar = authorization_server_jar();
        let port = free_port();
        let args = vec!["-jar".to_owned(), jar.display().to_string(), format!("--server.port={port}")];
        let proc = Proc::spawn_path(Path::new("java"), &args, &[], dir, "oauth2-as");
        let url = format!("http://127.0.0.1:{port}");
        let server = AuthorizationServer { proc, url };
        let http = reqwest::Client::new();
        let metadata = format!("{}/.well-known/oauth-authorization-server", server.url);
        eventually("the authorization server answers", TIMEOUT, || async {
            http.get(&metadata).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        server
    }

    /// An access token for `client` (client credentials grant) with `scope`.
    async fn token(&self, client: &str, secret: &str, scope: &str) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/oauth2/token", self.url))
            .basic_auth(client, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .expect("token endpoint")
            .json()
            .await
            .expect("token answer");
        answer["access_token"].as_str().unwrap_or_else(|| panic!("no token: {answer}")).to_owned()
    }
}

/// The generic OAuth2 resource, as Gravitee's console writes it, for the server at `url`.
fn resource(url: &str, kind: &str) -> Value {
    json!({
        "name": "idp", "type": kind, "enabled": true,
        "configuration": {
            "authorizationServerUrl": url,
            "introspectionEndpoint": "/oauth2/introspect",
            "introspectionEndpointMethod": "POST",
            "clientId": "hgw-gateway",
            "clientSecret": GATEWAY_SECRET,
            "useClientAuthorizationHeader": true,
            "clientAuthorizationHeaderName": "Authorization",
            "clientAuthorizationHeaderScheme": "Basic",
            "tokenIsSuppliedByQueryParam": false,
            "tokenIsSuppliedByFormUrlEncoded": true,
            "tokenFormUrlEncodedName": "token",
            "userClaim": "sub"
        }
    })
}

fn plan_configuration() -> Value {
    json!({"oauthResource": "idp", "checkRequiredScopes": true, "requiredScopes": ["read"], "modeStrict": true,
        "extractPayload": true, "propagateAuthHeader": false})
}

/// A local registry file: the API and its subscriptions.
fn registry(id: &str, definition: &Value, plan: &str) -> Value {
    json!({
        "apiEvent": {"id": format!("e-{id}"), "type": "PUBLISH_API", "properties": {"api_id": id},
            "payload": json!({"id": id, "name": id, "definition": definition.to_string()}).to_string()},
        "subscriptions": [{"id": format!("sub-{id}"), "api": id, "plan": plan, "application": "application-a",
            "clientId": "app-a", "status": "ACCEPTED"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_plan_introspects_with_a_real_authorization_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = AuthorizationServer::start(dir.path()).await;
    let backend = Backend::start("B").await;

    let apis = dir.path().join("apis");
    std::fs::create_dir_all(&apis).unwrap();
    // v4: the plan's security `oauth2`; a step shows `oauth.payload` (extractPayload) to the backend.
    let mut v4 = v4_api("o4", "/o4", &backend.url());
    v4["resources"] = json!([resource(&server.url, "oauth2")]);
    v4["plans"] = json!([{"id": "oauth-plan", "name": "OAuth2", "status": "PUBLISHED",
        "security": {"type": "oauth2", "configuration": plan_configuration()}}]);
    v4["flows"] = json!([{"name": "payload", "enabled": true, "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [step("transform-headers", json!({"scope": "REQUEST",
            "addHeaders": [{"name": "X-OAuth-Payload", "value": "{#context.attributes['oauth.payload']}"}]}))],
        "response": []}]);
    std::fs::write(apis.join("o4.json"), registry("o4", &v4, "oauth-plan").to_string()).unwrap();
    // v2: `OAUTH2` with its securityDefinition (a JSON string).
    let mut v2 = v2_api("o2", "/o2", &backend.url());
    v2["resources"] = json!([resource(&server.url, "oauth2")]);
    v2["plans"] = json!([{"id": "oauth-plan-2", "name": "OAuth2", "status": "PUBLISHED", "security": "OAUTH2",
        "securityDefinition": plan_configuration().to_string(), "paths": {}}]);
    std::fs::write(apis.join("o2.json"), registry("o2", &v2, "oauth-plan-2").to_string()).unwrap();
    // A resource hgw does not implement rejects its API, naming the field.
    let mut am = v4_api("am", "/am", &backend.url());
    am["resources"] = json!([resource(&server.url, "oauth2-am-resource")]);
    am["plans"] = json!([{"id": "am-plan", "name": "AM", "status": "PUBLISHED",
        "security": {"type": "oauth2", "configuration": {"oauthResource": "idp"}}}]);
    std::fs::write(apis.join("am.json"), registry("am", &am, "am-plan").to_string()).unwrap();

    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &[]).await;
    agent.wait_synced().await;
    let rejection = agent.rejection("am").await;
    assert!(rejection.contains("resources[0].type") && rejection.contains("oauth2-am-resource"), "{rejection}");
    let dp = Dataplane::start(dir.path(), "dp", agent.unix_target()).await;
    dp.wait_ready().await;

    let good = server.token("app-a", "app-a-secret", "read write").await;
    let unused = server.token("app-a", "app-a-secret", "read").await;
    let narrow = server.token("app-a", "app-a-secret", "write").await;
    let stranger = server.token("app-b", "app-b-secret", "read write").await;
    let http = reqwest::Client::new();
    let call = |path: &str, token: Option<&str>| {
        let mut request = http.get(dp.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // A valid token: the subscription's application; the payload reaches the flow; the
    // Authorization header is not propagated (propagateAuthHeader: false).
    let response = call("/o4/orders", Some(&good)).await.unwrap();
    let request_id = response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    let payload = echo["headers"]["x-oauth-payload"].as_str().unwrap_or_else(|| panic!("no payload: {echo}"));
    assert!(payload.contains("\"client_id\":\"app-a\"") && payload.contains("\"active\":true"), "{payload}");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    let metrics = eventually("the request's metrics document", TIMEOUT, || async {
        std::fs::read_to_string(&reports)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|d| d["type"] == "v4-metrics" && d["_id"] == request_id.as_str())
    })
    .await;
    assert_eq!(metrics["application-id"], "application-a", "{metrics}");
    assert_eq!(metrics["subscription-id"], "sub-o4", "{metrics}");
    assert_eq!(metrics["security-type"], "OAUTH2", "{metrics}");
    assert_eq!(metrics["user"], "app-a", "the resource's userClaim (sub): {metrics}");
    // The query parameter, and the v2 API.
    let by_query = http.get(dp.url(&format!("/o4/x?access_token={good}"))).send().await.unwrap();
    assert_eq!(by_query.status(), 200);
    assert_eq!(call("/o2/x", Some(&good)).await.unwrap().status(), 200);

    let refused = |response: reqwest::Response, status: u16| {
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
            Some("Bearer realm=\"gravitee.io\"")
        );
    };
    // No token: 401 (OAUTH2_MISSING_HEADER).
    refused(call("/o4/x", None).await.unwrap(), 401);
    // Inactive (unknown) tokens: 401 (OAUTH2_INVALID_ACCESS_TOKEN), in the header or the query.
    refused(call("/o4/x", Some("garbage-token")).await.unwrap(), 401);
    refused(http.get(dp.url("/o4/x?access_token=garbage")).send().await.unwrap(), 401);
    // The required scope `read` missing: Gravitee answers 401 (OAUTH2_INSUFFICIENT_SCOPE), not 403.
    refused(call("/o4/x", Some(&narrow)).await.unwrap(), 401);
    // A valid token of a client with no subscription to the plan: 401.
    refused(call("/o4/x", Some(&stranger)).await.unwrap(), 401);

    // The authorization server down: a token the agent has not cached is refused 503
    // (OAUTH2_SERVER_UNAVAILABLE, `temporarily_unavailable`), never let through.
    let AuthorizationServer { mut proc, .. } = server;
    proc.terminate(Duration::from_secs(10)).await;
    let down = call("/o4/x", Some(&unused)).await.unwrap();
    assert_eq!(down.status(), 503);
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["message"], "temporarily_unavailable", "{body}");
    refused(call("/o4/x", Some("garbage-token")).await.unwrap(), 503);

    // The client secret is in no log, and in no view of the config.
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("hgw-gateway:{GATEWAY_SECRET}"))
    };
    let config = dp.config().await.to_string();
    let apis_view = agent.node_text("/_node/apis").await;
    for (what, text) in [
        ("agent stderr", agent.proc.stderr()),
        ("agent stdout", agent.proc.stdout()),
        ("dataplane stderr", dp.proc.stderr()),
        ("dataplane stdout", dp.proc.stdout()),
        ("dataplane /config", config),
        ("agent /_node/apis", apis_view),
    ] {
        assert!(!text.contains(GATEWAY_SECRET) && !text.contains(&basic), "{what} shows the client secret");
        assert!(!text.contains(&good), "{what} shows an access token");
    }
}
