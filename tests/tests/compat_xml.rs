//! Gravitee compatibility: xml-json and json-xml (gravitee-policy-xml-json 2.0.1,
//! gravitee-policy-json-xml 3.0.3), end to end through a real agent and dataplane to the echo
//! backend, on v4 and v2 APIs, request and response phases (Gravitee's answers for its own test
//! definitions are compared in tests/compat).

use hgw_tests::gateway::{cloud_gateway, get};
use hgw_tests::{Backend, CloudGateSim, flow, step, v2_api, v2_flow, v4_api};
use serde_json::{Value, json};

/// Status, Content-Type and body of an answer.
async fn answer(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

const ORDER: &str = r#"<?xml version="1.0"?>
<order id="7" rush='TRUE'>
  <item>a</item><item>b</item>
  <empty/><blank></blank>
  <n>1.50</n><big>12345678901</big><code>007</code>
  <nested><x y="z">t</x></nested>
  <note><![CDATA[<kept>]]></note>
</order>"#;

const ORDER_JSON: &str = r#"{"order":{"id":7,"rush":true,"item":["a","b"],"empty":"","blank":"","n":1.5,"big":12345678901,"code":"007","nested":{"x":{"y":"z","content":"t"}},"note":"<kept>"}}"#;

/// A billion laughs with an external entity: org.json (so Gravitee, so hgw) skips the DOCTYPE and
/// never expands an entity.
const HOSTILE: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>
<lolz>&lol2;&xxe;</lolz>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_json_converts_requests_and_responses_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("xj", "/xj", &backend.url());
    api["flows"] = json!([
        flow("/req", json!([step("xml-json", json!({}))]), json!([])),
        // v4 ignores `scope`: the step runs in the phase it is in.
        flow("/resp", json!([]), json!([step("xml-json", json!({"scope": "REQUEST"}))])),
    ]);
    let mut v2 = v2_api("xj-v2", "/xj-v2", &backend.url());
    v2["flows"] = json!([
        v2_flow("/pre", json!([step("xml-json", json!({"scope": "REQUEST"}))]), json!([])),
        v2_flow("/post", json!([]), json!([step("xml-json", json!({}))])),
        // On the V3 engine a request step runs only with scope REQUEST (RESPONSE when left out).
        v2_flow("/skipped", json!([step("xml-json", json!({}))]), json!([])),
    ]);
    for a in [api, v2] {
        sim.put_api(a).await;
    }
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: &'static str| {
        client.post(dp.url(path)).header("Content-Type", content_type).body(body).send()
    };
    const JSON_UTF8: &str = "application/json;charset=UTF-8";

    // v4 request: attributes, arrays, empty elements, numbers, booleans, CDATA; any Content-Type.
    let converted = answer(post("/xj/req?echo_body", "text/xml", ORDER).await.unwrap()).await;
    assert_eq!(converted, (200, JSON_UTF8.into(), ORDER_JSON.into()));
    let plain = answer(post("/xj/req?echo_body", "text/plain", "<a>1</a>").await.unwrap()).await;
    assert_eq!(plain, (200, JSON_UTF8.into(), r#"{"a":1}"#.into()), "the Content-Type is not looked at");
    let not_xml = answer(post("/xj/req?echo_body", "application/json", r#"{"a":1}"#).await.unwrap()).await;
    assert_eq!(not_xml, (200, JSON_UTF8.into(), "{}".into()), "text before any element is skipped");
    // No body: nothing to convert, the request goes as it is.
    let empty = get(&client, &dp.url("/xj/req?echo_body")).await.unwrap();
    assert_eq!((empty.status, empty.body.as_str(), empty.header("content-type")), (200, "", None));
    // Invalid XML: 400 XML_INVALID_PAYLOAD with Gravitee's message.
    let invalid = answer(post("/xj/req?echo_body", "text/xml", "<a><b></a>").await.unwrap()).await;
    assert_eq!((invalid.0, invalid.1.as_str()), (400, "application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&invalid.2).unwrap(),
        json!({"message": "Unable to transform invalid XML to Json", "http_status_code": 400})
    );
    // A DOCTYPE with entities is skipped, no entity expanded or read.
    let hostile = answer(post("/xj/req?echo_body", "application/xml", HOSTILE).await.unwrap()).await;
    assert_eq!(hostile, (200, JSON_UTF8.into(), r#"{"lolz":"&lol2;&xxe;"}"#.into()));

    // v4 response: the endpoint's body converted; a broken one is a 500.
    let response = answer(post("/xj/resp?echo_body", "text/xml; charset=ISO-8859-1", ORDER).await.unwrap()).await;
    assert_eq!(response, (200, JSON_UTF8.into(), ORDER_JSON.into()));
    let broken = answer(post("/xj/resp?echo_body", "text/xml", "<a>").await.unwrap()).await;
    assert_eq!(
        (broken.0, serde_json::from_str::<Value>(&broken.2).unwrap()),
        (500, json!({"message": "Unable to transform invalid XML to Json", "http_status_code": 500}))
    );

    // The V3 engine (v2): request with scope REQUEST, response by default; failures are 500s quoting
    // org.json's reason; an empty body is an empty document.
    let pre = answer(post("/xj-v2/pre?echo_body", "text/xml", "<a b=\"x\"/>").await.unwrap()).await;
    assert_eq!(pre, (200, JSON_UTF8.into(), r#"{"a":{"b":"x"}}"#.into()));
    let empty = get(&client, &dp.url("/xj-v2/pre?echo_body")).await.unwrap();
    assert_eq!((empty.status, empty.body.as_str()), (200, "{}"));
    let invalid = get_json(post("/xj-v2/pre?echo_body", "text/xml", "<a>").await.unwrap()).await;
    assert_eq!(
        invalid,
        (
            500,
            json!({"message": "Unable to transform XML into JSON: Unclosed tag a at 4 [character 5 line 1]",
                   "http_status_code": 500})
        )
    );
    let post_phase = answer(post("/xj-v2/post?echo_body", "text/xml", "<a>1</a><a>2</a>").await.unwrap()).await;
    assert_eq!(post_phase, (200, JSON_UTF8.into(), r#"{"a":[1,2]}"#.into()));
    let skipped = answer(post("/xj-v2/skipped?echo_body", "text/xml", "<a>1</a>").await.unwrap()).await;
    assert_eq!(skipped, (200, "text/xml".into(), "<a>1</a>".into()));
}

async fn get_json(response: reqwest::Response) -> (u16, Value) {
    let (status, _, body) = answer(response).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_xml_converts_requests_and_responses_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("jx", "/jx", &backend.url());
    api["flows"] = json!([
        flow("/req", json!([step("json-xml", json!({"rootElement": "doc"}))]), json!([])),
        flow("/resp", json!([]), json!([step("json-xml", json!({}))])),
    ]);
    let mut v2 = v2_api("jx-v2", "/jx-v2", &backend.url());
    v2["flows"] = json!([
        v2_flow("/pre", json!([step("json-xml", json!({"scope": "REQUEST"}))]), json!([])),
        v2_flow("/post", json!([]), json!([step("json-xml", json!({"rootElement": "r"}))])),
    ]);
    let mut bad = v4_api("jx-bad", "/jx-bad", &backend.url());
    bad["flows"] = json!([flow("/", json!([step("json-xml", json!({"rootElement": {"a": 1}}))]), json!([]))]);
    for a in [api, v2, bad] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: &'static str| {
        client.post(dp.url(path)).header("Content-Type", content_type).body(body).send()
    };
    const XML_UTF8: &str = "application/xml;charset=UTF-8";

    // v4 request: arrays as repeated elements, nested objects, empty string, null, escapes, the root.
    let body = r#"{"a":[1,2.0,"x"],"b":{"c":"x<y&z","d":true},"e":"","n":null,"o":{},"l":[[1,2]]}"#;
    let converted = answer(post("/jx/req?echo_body", "application/json", body).await.unwrap()).await;
    let xml = "<doc><a>1</a><a>2.0</a><a>x</a><b><c>x&lt;y&amp;z</c><d>true</d></b><e/><n>null</n><o></o>\
               <l><array>1</array><array>2</array></l></doc>";
    assert_eq!(converted, (200, XML_UTF8.into(), xml.into()));
    let lenient = answer(post("/jx/req?echo_body", "text/plain", "{a: b c; 'd':1,}").await.unwrap()).await;
    assert_eq!(lenient, (200, XML_UTF8.into(), "<doc><a>b c</a><d>1</d></doc>".into()));
    let empty = get(&client, &dp.url("/jx/req?echo_body")).await.unwrap();
    assert_eq!((empty.status, empty.body.as_str(), empty.header("content-type")), (200, "", None));
    for invalid in ["[1,2]", "not json", r#"{"a":1,"a":2}"#] {
        let refused = get_json(post("/jx/req?echo_body", "application/json", invalid).await.unwrap()).await;
        assert_eq!(
            refused,
            (400, json!({"message": "Unable to transform invalid JSON payload to XML", "http_status_code": 400})),
            "{invalid}"
        );
    }

    // v4 response: the echo's JSON as XML under `root`; a body that is not a JSON object is a 500.
    let echoed = get(&client, &dp.url("/jx/resp/path")).await.unwrap();
    assert_eq!((echoed.status, echoed.header("content-type")), (200, Some(XML_UTF8)));
    assert!(echoed.body.starts_with("<root>") && echoed.body.ends_with("</root>"), "{}", echoed.body);
    assert!(echoed.body.contains("<method>GET</method><path>/resp/path</path>"), "{}", echoed.body);
    let broken = get_json(post("/jx/resp?echo_body", "application/json", "[]").await.unwrap()).await;
    assert_eq!(
        broken,
        (500, json!({"message": "Unable to transform invalid JSON payload to XML", "http_status_code": 500}))
    );

    // The V3 engine (v2): scope REQUEST converts the request, the default the response; an empty
    // body fails with org.json's reason.
    let pre = answer(post("/jx-v2/pre?echo_body", "application/json", r#"{"a":{"b":[true]}}"#).await.unwrap()).await;
    assert_eq!(pre, (200, XML_UTF8.into(), "<root><a><b>true</b></a></root>".into()));
    let empty = get_json(client.get(dp.url("/jx-v2/pre?echo_body")).send().await.unwrap()).await;
    assert_eq!(
        empty,
        (
            500,
            json!({"message": "Unable to transform JSON into XML: A JSONObject text must begin with '{' at 1 [character 2 line 1]",
                   "http_status_code": 500})
        )
    );
    let post_phase = answer(post("/jx-v2/post?echo_body", "application/json", r#"{"k":"v"}"#).await.unwrap()).await;
    assert_eq!(post_phase, (200, XML_UTF8.into(), "<r><k>v</k></r>".into()));

    // A root element that is not text rejects the API, naming the field.
    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason = apis["rejected"].as_array().unwrap().iter().find(|r| r["id"] == "jx-bad").unwrap()["reason"].clone();
    assert!(reason.as_str().unwrap().contains("flows[0].request[0].configuration.rootElement"), "{reason}");
}
