//! The Cloud Gate emulator as a child process (the real `hgw-cloudgate-sim` binary, so its
//! start-up and command line are tested too), with a typed client for its `/_sim` control API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::process::Proc;

/// How long the sim may take to generate its keys and print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `hgw-cloudgate-sim` and a client for its control API. Every control method panics
/// with the sim's answer when the call fails: a test cannot go on without its fixture.
pub struct CloudGateSim {
    pub proc: Proc,
    /// `https://127.0.0.1:PORT`, the Cloud Gate URL to give clients.
    pub url: String,
    /// The CA that signed the sim's server certificate (`--cloud-gate-ca`).
    pub ca_path: PathBuf,
    /// The public key verifying the sim's Cloud Tokens (`--cloud-token-key`).
    pub token_key_path: PathBuf,
    client: reqwest::Client,
}

impl CloudGateSim {
    /// Starts the sim with `dir` as its state dir (`ca.pem`, `token-key.pem`) and log dir, and waits
    /// for its ready line. `extra_args` go to the command line (`--legacy-search`, `--data DIR`).
    ///
    /// # Panics
    /// When the sim exits or stays silent for 20 s (its stderr is in the message).
    pub async fn start(dir: &Path, extra_args: &[&str]) -> CloudGateSim {
        let state_dir = dir.to_string_lossy().into_owned();
        let mut args = vec!["--state-dir", state_dir.as_str()];
        args.extend_from_slice(extra_args);
        let mut proc = Proc::spawn("hgw-cloudgate-sim", &args, &[], dir);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let announce: Value = loop {
            let stdout = proc.stdout();
            if let Some((line, _)) = stdout.split_once('\n') {
                break serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("hgw-cloudgate-sim printed a bad ready line {line:?}: {e}"));
            }
            assert!(proc.is_running(), "hgw-cloudgate-sim exited before it was ready; stderr:\n{}", proc.stderr());
            assert!(
                tokio::time::Instant::now() < deadline,
                "hgw-cloudgate-sim not ready after {START_TIMEOUT:?}; stderr:\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let field = |name: &str| {
            announce[name].as_str().unwrap_or_else(|| panic!("ready line lacks `{name}`: {announce}")).to_owned()
        };
        let ca_path = PathBuf::from(field("ca"));
        let ca_pem = std::fs::read(&ca_path).unwrap_or_else(|e| panic!("reading {}: {e}", ca_path.display()));
        CloudGateSim {
            url: field("url"),
            token_key_path: PathBuf::from(field("token_key")),
            client: client_trusting(&ca_pem),
            ca_path,
            proc,
        }
    }

    /// An HTTPS client trusting the sim's CA (cheap to clone; shares connections).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// A valid default Cloud Token (`org` DEFAULT, `envs` [DEFAULT], `cpg` eu, one hour).
    pub async fn token(&self) -> String {
        self.mint_token(json!({})).await
    }

    /// A token from `POST /_sim/tokens` (`{"claims":{..},"remove":[..],"ttl_secs":N}`).
    pub async fn mint_token(&self, body: Value) -> String {
        let answer = self.control(Method::POST, "/_sim/tokens", Some(body)).await;
        answer["token"].as_str().unwrap_or_else(|| panic!("no token in {answer}")).to_owned()
    }

    /// Publishes an API definition (id from `definition.id`); answers the `PUBLISH_API` event.
    pub async fn put_api(&self, definition: Value) -> Value {
        self.put_api_with(json!({ "definition": definition })).await
    }

    /// `PUT /_sim/apis` with a full body (`environmentId`, `organizationId`, `lifecycleState`).
    pub async fn put_api_with(&self, body: Value) -> Value {
        self.control(Method::PUT, "/_sim/apis", Some(body)).await
    }

    /// Publishes `raw` verbatim as the definition string of API `id`, to test rejection.
    pub async fn put_raw_api(&self, id: &str, raw: &str) -> Value {
        let body = json!({"id": id, "name": id, "definitionRaw": raw});
        self.control(Method::PUT, "/_sim/apis", Some(body)).await
    }

    /// Emits `STOP_API` for a published API.
    pub async fn stop_api(&self, id: &str) {
        self.control(Method::POST, &format!("/_sim/apis/{id}/stop"), None).await;
    }

    /// Emits `START_API` for a published API.
    pub async fn start_api(&self, id: &str) {
        self.control(Method::POST, &format!("/_sim/apis/{id}/start"), None).await;
    }

    /// Emits `UNPUBLISH_API` for a published API.
    pub async fn undeploy_api(&self, id: &str) {
        self.control(Method::DELETE, &format!("/_sim/apis/{id}"), None).await;
    }

    /// Latest event of every API the sim holds (unscoped).
    pub async fn events(&self) -> Vec<Value> {
        array(self.control(Method::GET, "/_sim/events", None).await)
    }

    /// Stores a Subscription (`updatedAt` defaults to now).
    pub async fn put_subscription(&self, s: Value) {
        self.control(Method::PUT, "/_sim/subscriptions", Some(s)).await;
    }

    /// Stores an ApiKey (`updatedAt` defaults to now).
    pub async fn put_key(&self, k: Value) {
        self.control(Method::PUT, "/_sim/keys", Some(k)).await;
    }

    /// Adds a fault: `{"target":"sync"|"reports"|"all","status":503,"count":N,"delay_ms":ms,"drop":bool}`.
    pub async fn set_fault(&self, fault: Value) {
        self.control(Method::POST, "/_sim/faults", Some(fault)).await;
    }

    pub async fn clear_faults(&self) {
        self.control(Method::DELETE, "/_sim/faults", None).await;
    }

    /// `{"requests":N,"documents":[..],"rejected":N,"bytes":N}`.
    pub async fn reports(&self) -> Value {
        self.control(Method::GET, "/_sim/reports", None).await
    }

    /// `{"requests":N,"rejected":N,"bytes":N,"all_documents":N,"documents":N,"unique_ids":N}` without the
    /// documents; `documents` and `unique_ids` count `v4-metrics` documents only (one per request).
    pub async fn reports_summary(&self) -> Value {
        self.control(Method::GET, "/_sim/reports/summary?type=v4-metrics", None).await
    }

    /// Distinct `_id`s of the `v4-metrics` documents received so far (what Elasticsearch would hold).
    pub async fn report_ids(&self) -> Vec<String> {
        let ids = self.control(Method::GET, "/_sim/reports/ids?type=v4-metrics", None).await;
        serde_json::from_value(ids).expect("a list of ids")
    }

    /// Every report document received so far.
    pub async fn report_documents(&self) -> Vec<Value> {
        array(self.reports().await["documents"].take())
    }

    /// Forgets the stored report documents (counters stay).
    pub async fn clear_reports(&self) {
        self.control(Method::DELETE, "/_sim/reports", None).await;
    }

    /// `{"events":[every heartbeat version received],"puts":N}`.
    pub async fn heartbeats(&self) -> Value {
        self.control(Method::GET, "/_sim/heartbeats", None).await
    }

    /// `{"calls":{"POST /sync/_bridge/...":N},"unauthorized":N,"forbidden":N,"faulted":N}`.
    pub async fn stats(&self) -> Value {
        self.control(Method::GET, "/_sim/stats", None).await
    }

    /// Calls the control API and answers its JSON; panics on a transport error or non-2xx.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path} on the sim: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path} on the sim answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path} answered non-JSON ({e}): {text}"))
    }
}

/// An HTTPS client trusting `ca_pem` (plus the system roots).
///
/// # Panics
/// When the PEM is not a certificate.
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    crate::cloudgate::tls::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("the sim CA is a PEM certificate");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTPS client")
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exercises the binary through this client. The binary is built by `cargo build`, not by a
    /// `--lib` test run, so the test skips (saying so) when it is missing.
    #[tokio::test]
    async fn binary_starts_and_answers_the_control_api() {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        if std::env::var_os("HGW_BIN_DIR").is_none() && !dir.join("hgw-cloudgate-sim").is_file() {
            eprintln!("skipped: hgw-cloudgate-sim is not built");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let api = crate::v2_api("from-file", "/f", "http://127.0.0.1:1");
        std::fs::write(data.join("api.json"), api.to_string()).unwrap();
        let data_arg = data.to_string_lossy().into_owned();
        let mut sim = CloudGateSim::start(tmp.path(), &["--data", &data_arg]).await;
        assert!(sim.url.starts_with("https://127.0.0.1:"));
        assert!(sim.token_key_path.is_file());

        sim.put_api(crate::v4_api("a", "/a", "http://127.0.0.1:1")).await;
        sim.stop_api("a").await;
        sim.start_api("a").await;
        sim.undeploy_api("a").await;
        let raw = sim.put_raw_api("broken", "{not json").await;
        assert_eq!(raw["properties"]["api_id"], "broken");
        assert_eq!(sim.events().await.len(), 3);

        let token = sim.token().await;
        let found: Vec<Value> = sim
            .client()
            .post(format!("{}/sync/_bridge/eventsLatest/_search?group=API_ID", sim.url))
            .bearer_auth(&token)
            .json(&json!({"from": -1, "types": ["PUBLISH_API", "START_API"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&Value> = found.iter().map(|e| &e["properties"]["api_id"]).collect();
        assert_eq!(ids, vec![&json!("from-file"), &json!("broken")]);

        sim.put_subscription(json!({"id": "s", "api": "a", "status": "ACCEPTED"})).await;
        sim.put_key(json!({"id": "k", "key": "secret", "subscription": "s"})).await;
        sim.set_fault(json!({"target": "reports", "status": 500})).await;
        sim.clear_faults().await;
        assert_eq!(sim.reports().await["requests"], 0);
        assert!(sim.report_documents().await.is_empty());
        assert_eq!(sim.heartbeats().await["puts"], 0);
        assert_eq!(sim.stats().await["calls"]["POST /sync/_bridge/eventsLatest/_search"], 1);

        let status = sim.proc.terminate(Duration::from_secs(5)).await.unwrap();
        assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    }
}
