//! Sidecar injection end to end, with the real `hgw-agent` binary: the admission webhook over TLS
//! (AdmissionReview v1 in, JSONPatch out) and `hgw-agent inject` on a multi-document YAML file; both give
//! the same pod. The API-server side (registration, stored objects, golden test) is tests/deploy/k8s.sh.

use std::time::Duration;

use base64::Engine;
use hgw_tests::gateway::Injector;
use hgw_tests::run_to_exit;
use serde_json::{Value, json};

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]}})
}

fn admission(object: Value, operation: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": "7e1c", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                       "operation": operation, "namespace": "shop", "name": "web", "object": object}})
}

/// Applies add/replace/remove operations on object members (what the webhook's patches use).
fn apply(mut target: Value, operations: &[Value]) -> Value {
    for operation in operations {
        let path = operation["path"].as_str().unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        let key = key.replace("~1", "/").replace("~0", "~");
        let parent = target.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent exists");
        match operation["op"].as_str().unwrap() {
            "add" | "replace" => {
                parent.insert(key, operation["value"].clone());
            }
            "remove" => {
                parent.remove(&key);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    target
}

#[tokio::test]
async fn webhook_and_inject_give_the_same_pod() {
    let dir = tempfile::tempdir().unwrap();
    let injector = Injector::start(dir.path(), &["--tags", "eu"]).await;

    let (status, answer) = injector.review("/inject/namespace", &admission(pod(), "CREATE")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["uid"], "7e1c");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch =
        base64::engine::general_purpose::STANDARD.decode(answer["response"]["patch"].as_str().unwrap()).unwrap();
    let operations: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    let from_webhook = apply(pod(), &operations);
    let sidecar = &from_webhook["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "hgw-dataplane");
    assert!(sidecar["args"].as_array().unwrap().contains(&json!("eu")));

    // The same pod through `hgw-agent inject -f` (in a stream with a Service, which passes through).
    let file = dir.path().join("app.yaml");
    let service =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, targetPort: hgw-http}]\n";
    std::fs::write(&file, format!("{}\n---\n{service}", serde_json::to_string(&pod()).unwrap())).unwrap();
    let file = file.display().to_string();
    let (code, stdout, stderr) =
        run_to_exit("hgw-agent", &["inject", "-f", &file, "--tags", "eu"], &[], Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("pod \"web\" injected"), "{stderr}");
    let documents: Vec<Value> = serde_yaml_documents(&stdout);
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0], from_webhook);
    assert_eq!(documents[1]["kind"], "Service");

    // Opt-in path: a pod that does not ask is left alone; an injected pod coming back is not re-injected.
    let (_, answer) = injector.review("/inject", &admission(pod(), "CREATE")).await;
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    let (_, answer) = injector.review("/inject/namespace", &admission(from_webhook, "CREATE")).await;
    assert!(answer["response"].get("patch").is_none(), "{answer}");

    // A bad override is refused with its name; garbage is a 400, never a crash.
    let mut bad = pod();
    bad["metadata"]["annotations"] = json!({"hgw.io/proxy-memory-limit": "lots"});
    let (_, answer) = injector.review("/inject/namespace", &admission(bad, "CREATE")).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert!(answer["response"]["status"]["message"].as_str().unwrap().contains("hgw.io/proxy-memory-limit"));
    let (status, _) = injector.review("/inject/namespace", &json!({"kind": "Something"})).await;
    assert_eq!(status, 400);
    let health = injector.client.get(format!("https://{}/healthz", injector.addr)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn bad_configuration_and_input_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        run_to_exit("hgw-agent", &["inject", "--memory-limit", "lots"], &[], Duration::from_secs(30)).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let (code, _, stderr) = run_to_exit(
        "hgw-agent",
        &["webhook", "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key", "--listen", "127.0.0.1:0"],
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: Pod\n---\nkind: [unclosed\n").unwrap();
    let broken = broken.display().to_string();
    let (code, _, stderr) = run_to_exit("hgw-agent", &["inject", "-f", &broken], &[], Duration::from_secs(30)).await;
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("document 2"), "{stderr}");
}

/// Parses the YAML stream `inject` prints (any YAML reader must accept it).
fn serde_yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("inject prints valid YAML"))
        .collect()
}
