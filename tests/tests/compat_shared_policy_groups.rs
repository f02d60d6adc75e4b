//! Gravitee shared policy groups, end to end in local mode: group files beside the API files, called
//! from request and response flows, guarded by the calling step's condition and their own, looked up
//! in the API's environment; a missing group and a nested call are skipped as Gravitee skips them; a
//! changed group file recompiles the APIs that call it.

use std::path::Path;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Reply, get};
use hgw_tests::{Backend, eventually, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

fn header_step(name: &str, condition: &str) -> Value {
    json!({"name": name, "enabled": true, "policy": "transform-headers", "condition": condition,
        "configuration": {"addHeaders": [{"name": name, "value": "yes"}]}})
}

fn call(group: &str, condition: &str) -> Value {
    json!({"name": format!("call {group}"), "enabled": true, "policy": "shared-policy-group-policy",
        "condition": condition, "configuration": {"sharedPolicyGroupId": group}})
}

fn group(id: &str, env: &str, phase: &str, policies: Value) -> Value {
    json!({"id": id, "name": id, "environmentId": env, "phase": phase, "policies": policies})
}

fn write(dir: &Path, name: &str, value: &Value) {
    // Written aside then renamed, so the agent's poll never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

async fn send(client: &reqwest::Client, url: &str, go: Option<&str>) -> Reply {
    let mut request = client.get(url);
    if let Some(go) = go {
        request = request.header("go", go);
    }
    let response = request.send().await.expect("the dataplane answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Reply { status, headers, body: response.text().await.unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_policy_groups_run_where_they_are_called() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("B").await;

    let mut api = v4_api("spg-api", "/spg", &backend.url());
    api["environmentId"] = json!("dev");
    api["flows"] = json!([{"name": "all", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [header_step("X-Req-Outside", ""), call("on-request", "{#request.headers['go'] != null}"),
                    call("not-deployed", "")],
        "response": [call("on-response", ""), header_step("X-Resp-Outside", "")]}]);
    write(&apis, "api.json", &api);
    write(
        &apis,
        "spg-request.json",
        &group(
            "on-request",
            "dev",
            "REQUEST",
            json!([
                header_step("X-Req-Inside-0", ""),
                header_step("X-Req-Inside-1", "{#request.headers['go'][0] == 'both'}"),
                call("on-response", "")
            ]),
        ),
    );
    write(
        &apis,
        "spg-response.json",
        &group("on-response", "dev", "RESPONSE", json!([header_step("X-Resp-Inside", "")])),
    );
    // The same id in another environment is not the API's group.
    write(&apis, "spg-prod.json", &group("on-request", "prod", "REQUEST", json!([header_step("X-Prod", "")])));
    // A broken group file is reported and leaves the rest deployed.
    write(&apis, "spg-broken.json", &json!({"id": "x", "phase": "PUBLISH", "policies": []}));

    let reports = dir.path().join("reports.ndjson");
    let dataplane_bin = hgw_tests::bin_path("hgw-dataplane").display().to_string();
    let agent = Agent::start_local(
        dir.path(),
        "agent",
        &apis,
        &reports,
        &["--dataplanes", "1", "--dataplane-listen", "127.0.0.1:0", "--dataplane-bin", &dataplane_bin],
    )
    .await;
    let listen = agent.supervised_dataplane(TIMEOUT).await;
    let url = format!("http://{listen}/spg/x");
    let client = reqwest::Client::new();

    // Without the header the request group's call condition is false: only the outside steps and the
    // response group run.
    let plain = send(&client, &url, None).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let sent = plain.json()["headers"].clone();
    assert_eq!(sent["x-req-outside"], "yes");
    for absent in ["x-req-inside-0", "x-req-inside-1", "x-prod"] {
        assert!(sent.get(absent).is_none(), "{absent} was sent: {sent}");
    }
    assert_eq!(plain.header("x-resp-inside"), Some("yes"));
    assert_eq!(plain.header("x-resp-outside"), Some("yes"));

    // With it the group runs, each inner step under its own condition too; the nested call inside
    // the group and the call to a group that is not deployed do nothing.
    let one = send(&client, &url, Some("one")).await;
    let sent = one.json()["headers"].clone();
    assert_eq!(sent["x-req-inside-0"], "yes", "{sent}");
    assert!(sent.get("x-req-inside-1").is_none(), "{sent}");
    assert!(sent.get("x-resp-inside").is_none(), "a nested group ran in the request: {sent}");
    let both = send(&client, &url, Some("both")).await;
    assert_eq!(both.json()["headers"]["x-req-inside-1"], "yes");

    // Changing a group file recompiles the API that calls it.
    write(
        &apis,
        "spg-response.json",
        &group("on-response", "dev", "RESPONSE", json!([header_step("X-Resp-Changed", "")])),
    );
    eventually("the changed group is served", TIMEOUT, || async {
        let reply = send(&client, &url, None).await;
        (reply.header("x-resp-changed") == Some("yes") && reply.header("x-resp-inside").is_none()).then_some(())
    })
    .await;

    // A group for the other phase rejects the API, naming the step and the group.
    write(
        &apis,
        "spg-response.json",
        &group("on-response", "dev", "REQUEST", json!([header_step("X-Resp-Changed", "")])),
    );
    let reason = eventually("the API is rejected", TIMEOUT, || async {
        let (_, body) = agent.node_get("/_node/apis").await;
        body["rejected"].as_array()?.iter().find(|r| r["id"] == "spg-api")?["reason"].as_str().map(str::to_owned)
    })
    .await;
    assert!(
        reason.contains("flows[0].response[0].configuration.sharedPolicyGroupId")
            && reason.contains("`on-response` is for the Request phase"),
        "{reason}"
    );
    let _ = get(&client, &url).await;
}
