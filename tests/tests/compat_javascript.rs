//! Gravitee's JavaScript policies end to end, through a real agent, dataplane and backend: `js`
//! (GraalJS bindings) and `javascript` (Nashorn bindings) on v4 APIs and on the V3 engine (v2 API),
//! in both phases; bodies read and replaced with their lengths; the scripts' failures with their
//! statuses, keys and messages; a script that never ends stops at its time limit while the dataplane
//! goes on serving.

use hgw_tests::definitions::{flow, v2_flow};
use hgw_tests::gateway::cloud_gateway;
use hgw_tests::{Backend, CloudGateSim, step, v2_api, v4_api};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_policies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    // `js`: headers from the request's facts and a property, an attribute read by a later step's EL,
    // the JSON body rewritten; in the response phase a header and the status.
    let mut graal = v4_api("graal", "/graal", &backend.url());
    graal["properties"] = json!([{"key": "env", "value": "prod"}]);
    graal["flows"] = json!([flow(
        "/",
        json!([
            step(
                "js",
                json!({"readContent": true, "overrideContent": true, "script":
                "if (request.header('X-Break')) { result.fail(403, 'Stopped by script', 'SCRIPT_STOP'); }\n\
                 request.headers().set('X-Path', request.pathInfo()).set('X-Env', context.properties()['env']);\n\
                 request.headers().remove('X-Drop');\n\
                 context.set('who', request.parameter('user'));\n\
                 const body = JSON.parse(request.content() || '{}');\n\
                 body.seen = true;\n\
                 request.content(JSON.stringify(body));"})
            ),
            step(
                "transform-headers",
                json!({"addHeaders": [{"name": "X-Who", "value": "{#context.attributes['who']}"}]})
            )
        ]),
        json!([step(
            "js",
            json!({"script": "response.headers().set('X-Upstream-Status', String(response.status())); response.status(202);"})
        )]),
    )]);
    let mut endless = v4_api("endless", "/endless", &backend.url());
    endless["flows"] = json!([flow("/", json!([step("js", json!({"script": "while (true) {}"}))]), json!([]))]);
    let mut thrower = v4_api("thrower", "/thrower", &backend.url());
    thrower["flows"] =
        json!([flow("/", json!([step("js", json!({"script": "throw new Error('secret detail')"}))]), json!([]))]);

    // `javascript` on a v4 API (the policy's own test API): the header script and the body script run
    // on the body in one context; the last value is the new body. In the response phase, Nashorn's
    // `response.status` both reads and sets, and a failure with a JSON content type is sent as is.
    let mut nashorn = v4_api("nashorn", "/nashorn", &backend.url());
    nashorn["flows"] = json!([flow(
        "/",
        json!([step(
            "javascript",
            json!({"overrideContent": true, "readContent": true,
            "script": "var content = request.content\nrequest.headers.set('X-Phase', 'on-request')\n\
                       context.attributes.count = 100;\nJSON.stringify({ message: 'Hello Universe!', was: content.length })"})
        )]),
        json!([step(
            "javascript",
            json!({"script": "if (request.headers.containsKey('X-Refuse')) {\n\
                result.state = State.FAILURE; result.code = 409; result.key = 'REFUSED_BY_SCRIPT';\n\
                result.error = '{\"error\":\"refused\"}'; result.contentType = 'application/json';\n\
              } else { response.headers.set('X-Status-Was', '' + response.status); response.status(201); }"})
        )]),
    )]);
    let mut strict = v4_api("strict", "/strict", &backend.url());
    strict["flows"] = json!([flow("/", json!([step("javascript", json!({"script": "undeclared = 1"}))]), json!([]))]);

    // `javascript` on the V3 engine: the head script and the content script.
    let mut legacy = v2_api("legacy-js", "/legacy-js", &backend.url());
    legacy["flows"] = json!([v2_flow(
        "/",
        json!([step(
            "javascript",
            json!({
            "onRequestScript": "if (request.headers.containsKey('X-Gravitee-Break')) {\n result.state = State.FAILURE\n result.code = 500\n result.error = 'Stop request processing due to X-Gravitee-Break header'\n} else {\n request.headers.set('X-Javascript-Policy', 'ok');\n}",
            "onRequestContentScript": "var content = JSON.parse(request.content)\ncontent[0].firstname = 'Hacked ' + content[0].firstname\ncontent[0].country = 'US';\nJSON.stringify(content);"})
        )]),
        json!([]),
    )]);

    for api in [graal, endless, thrower, nashorn, strict, legacy] {
        sim.put_api(api).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let reply =
        client.post(dp.url("/graal/items?user=ada")).header("x-drop", "1").body(r#"{"a": 1}"#).send().await.unwrap();
    assert_eq!(reply.status(), 202);
    assert_eq!(reply.headers()["x-upstream-status"], "200");
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["x-path"], "/items");
    assert_eq!(echo["headers"]["x-env"], "prod");
    assert_eq!(echo["headers"]["x-who"], "ada");
    assert!(echo["headers"].get("x-drop").is_none(), "{echo}");
    assert_eq!(echo["body_len"], json!(r#"{"a":1,"seen":true}"#.len()));

    let reply = client.get(dp.url("/graal/x")).header("x-break", "1").send().await.unwrap();
    assert_eq!(reply.status(), 403);
    assert_eq!(reply.json::<Value>().await.unwrap(), json!({"message": "Stopped by script", "http_status_code": 403}));

    // A script that never ends is stopped; meanwhile the dataplane serves others.
    let looping = tokio::spawn({
        let (client, url) = (client.clone(), dp.url("/endless/x"));
        async move { client.get(url).send().await.unwrap() }
    });
    assert_eq!(client.get(dp.url("/graal/x")).send().await.unwrap().status(), 202);
    let reply = looping.await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(reply.json::<Value>().await.unwrap(), json!({"message": "Timeout", "http_status_code": 500}));

    // What a script throws stays out of the answer.
    let reply = client.get(dp.url("/thrower/x")).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "JavaScript execution failed", "http_status_code": 500})
    );

    let reply = client.post(dp.url("/nashorn/x")).body("twelve bytes").send().await.unwrap();
    assert_eq!(reply.status(), 201);
    assert_eq!(reply.headers()["x-status-was"], "200");
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["x-phase"], "on-request");
    assert_eq!(echo["body_len"], json!(r#"{"message":"Hello Universe!","was":12}"#.len()));
    let reply = client.get(dp.url("/nashorn/x")).header("x-refuse", "1").send().await.unwrap();
    assert_eq!(reply.status(), 409);
    assert_eq!(reply.headers()["content-type"], "application/json");
    assert_eq!(reply.text().await.unwrap(), r#"{"error":"refused"}"#);

    let reply = client.get(dp.url("/strict/x")).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "Internal Server Error", "http_status_code": 500})
    );

    let reply = client
        .post(dp.url("/legacy-js/x"))
        .header("content-type", "application/json")
        .body(r#"[{"age": 32, "firstname": "John"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["x-javascript-policy"], "ok");
    assert_eq!(echo["body_len"], json!(r#"[{"age":32,"firstname":"Hacked John","country":"US"}]"#.len()));
    let reply = client.post(dp.url("/legacy-js/x")).header("x-gravitee-break", "1").body("[]").send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "Stop request processing due to X-Gravitee-Break header", "http_status_code": 500})
    );

    let (_, apis) = agent.node_get("/_node/apis").await;
    assert!(apis["rejected"].as_array().unwrap().is_empty(), "{apis}");
}
