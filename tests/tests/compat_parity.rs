//! Gravitee compatibility measured against Gravitee APIM 4.10.9 itself (tests/compat/gravitee-gw):
//! the client identifier on answers, the endpoint's compression, answers to an endpoint that refuses
//! connections. Each check is what Gravitee's gateway answered to the same definition and request.

use hgw_tests::gateway::cloud_gateway;
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::{Value, json};

fn header<'a>(reply: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    reply.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_compression_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    // Default: useCompression on.
    sim.put_api(v4_api("zip", "/zip", &backend.url())).await;
    let mut plain = v4_api("plain", "/plain", &backend.url());
    plain["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"useCompression": false}});
    sim.put_api(plain).await;
    let mut propagate = v4_api("propagate", "/propagate", &backend.url());
    propagate["endpointGroups"][0]["sharedConfiguration"] =
        json!({"http": {"useCompression": false, "propagateClientAcceptEncoding": true}});
    sim.put_api(propagate).await;
    // propagateClientAcceptEncoding has no effect while compression is on.
    let mut both = v4_api("both", "/both", &backend.url());
    both["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"propagateClientAcceptEncoding": true}});
    sim.put_api(both).await;
    let mut v2 = v2_api("legacy-zip", "/legacy-zip", &backend.url());
    v2["proxy"]["groups"][0]["endpoints"][0]["http"] = json!({"useCompression": true});
    sim.put_api(v2).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    // reqwest is built without decompression here: the test sees the gateway's answer as sent.
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(dp.url(path)).header("Accept-Encoding", "br").send();

    // The endpoint is offered `deflate, gzip` (the client's Accept-Encoding is not sent), and its gzip
    // or deflate answer is decoded: no Content-Encoding, no Content-Length.
    for path in ["/zip/x", "/both/x", "/legacy-zip/x"] {
        for encoding in ["gzip", "deflate"] {
            let reply = get(&format!("{path}?encoding={encoding}&pad=100000")).await.unwrap();
            assert_eq!(reply.status(), 200);
            assert!(header(&reply, "content-encoding").is_none(), "{path} {encoding}");
            assert!(header(&reply, "content-length").is_none(), "{path} {encoding}");
            let text = reply.text().await.unwrap();
            assert_eq!(text.len() - text.trim_end().len(), 100_000, "{path} {encoding}: the whole body, decoded");
            let echo: Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(echo["headers"]["accept-encoding"], "deflate, gzip", "{path}");
        }
        // An answer in another coding passes untouched.
        let br = get(&format!("{path}?encoding=br")).await.unwrap();
        assert_eq!(header(&br, "content-encoding"), Some("br"));
    }

    // Without compression: nothing is offered and nothing decoded; the client's value only with
    // propagateClientAcceptEncoding.
    let reply = get("/plain/x?encoding=gzip").await.unwrap();
    assert_eq!(header(&reply, "content-encoding"), Some("gzip"));
    let reply = get("/plain/x").await.unwrap();
    assert!(reply.json::<Value>().await.unwrap()["headers"].get("accept-encoding").is_none());
    let reply = get("/propagate/x").await.unwrap();
    assert_eq!(reply.json::<Value>().await.unwrap()["headers"]["accept-encoding"], "br");
}
