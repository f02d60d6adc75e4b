//! The Elasticsearch form of report documents, as the Cloud Gate's `/reports` most likely takes them
//! (Gravitee's Elasticsearch reporter): one JSON object per line, kebab-case keys, `http-method` as
//! Gravitee's method code, plus `type`, `date` (`yyyy.MM.dd`, the index suffix), `_id` (the request id, so
//! a retried batch cannot count twice), `gateway` (node id) and `@timestamp`.

use std::collections::HashMap;

use hgw_proto::analytics::ApiFields;
use hgw_proto::v1::{HealthCheckRecord, LogHeader, LogRecord, LogRequest, LogResponse, MetricsRecord};
use serde_json::{Map, Value};

/// Gravitee's `io.gravitee.common.http.HttpMethod` codes; anything else is 0 (OTHER). The numbers are
/// the enum's own `code()` in gravitee-common (`io/gravitee/common/http/HttpMethod.java`:
/// `CONNECT(1), DELETE(2), GET(3), HEAD(4), OPTIONS(5), PATCH(6), POST(7), PUT(8), TRACE(9)`), which the
/// Elasticsearch reporter writes as `metrics.getHttpMethod().code()`.
pub fn http_method_code(method: &str) -> u8 {
    const CODES: [(&str, u8); 9] = [
        ("GET", 3),
        ("POST", 7),
        ("PUT", 8),
        ("DELETE", 2),
        ("PATCH", 6),
        ("HEAD", 4),
        ("OPTIONS", 5),
        ("CONNECT", 1),
        ("TRACE", 9),
    ];
    CODES.iter().find(|(name, _)| name.eq_ignore_ascii_case(method)).map_or(0, |(_, code)| *code)
}

/// `@timestamp` (RFC 3339, UTC, milliseconds) and `date` (`yyyy.MM.dd`) of an epoch-ms instant.
pub fn timestamp_fields(epoch_ms: i64) -> (String, String) {
    let instant = std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms.max(0) as u64);
    let rfc3339 = humantime::format_rfc3339_millis(instant).to_string();
    let date = rfc3339[..10].replace('-', ".");
    (rfc3339, date)
}

/// The fields every per-request document starts with: its `type`, the index `date`, `_id` = the request
/// id (so a resent batch cannot count twice), the reporting `gateway` and `@timestamp`.
fn request_document(kind: &str, request_id: &str, timestamp_ms: i64, node_id: &str) -> Map<String, Value> {
    let (timestamp, date) = timestamp_fields(timestamp_ms);
    let mut doc = Map::new();
    doc.insert("type".into(), kind.into());
    doc.insert("date".into(), date.into());
    doc.insert("_id".into(), request_id.into());
    doc.insert("gateway".into(), node_id.into());
    doc.insert("@timestamp".into(), timestamp.into());
    doc
}

/// One `v4-metrics` document as its NDJSON line, written straight from the record: a borrowed view
/// serialized in the document's key order, no JSON tree (this runs once per proxied request; building
/// the tree of ~35 owned keys and printing it was a tenth of the agent's CPU per record).
/// `api` is the record's API-level fields, from its batch's table ([`ReportRequest::api_of`]).
///
/// [`ReportRequest::api_of`]: hgw_proto::v1::ReportRequest::api_of
pub fn metrics_line(record: &MetricsRecord, api: ApiFields<'_>, node_id: &str) -> String {
    let (timestamp, date) = timestamp_fields(record.timestamp_ms);
    let document = MetricsDocument {
        kind: "v4-metrics",
        date: &date,
        id: &record.request_id,
        gateway: node_id,
        timestamp: &timestamp,
        request_id: &record.request_id,
        transaction_id: &record.transaction_id,
        api_id: api.id,
        api_name: api.name,
        api_type: api.api_type,
        plan_id: &record.plan_id,
        application_id: &record.application_id,
        subscription_id: &record.subscription_id,
        client_identifier: &record.client_identifier,
        organization_id: api.organization_id,
        environment_id: api.environment_id,
        tenant: &record.tenant,
        zone: &record.zone,
        local_address: &record.local_address,
        remote_address: &record.remote_address,
        host: &record.host,
        uri: &record.uri,
        path_info: &record.path_info,
        mapped_path: &record.mapped_path,
        user_agent: &record.user_agent,
        entrypoint_id: api.entrypoint_id,
        endpoint: &record.endpoint,
        user: &record.user,
        security_type: &record.security_type,
        error_key: &record.error_key,
        error_message: &record.error_message,
        http_method: http_method_code(&record.http_method),
        status: record.status,
        request_content_length: record.request_content_length,
        response_content_length: record.response_content_length,
        request_ended: record.request_ended,
        endpoint_response_time_ms: record.endpoint_response_time_ms,
        gateway_response_time_ms: record.gateway_response_time_ms,
        gateway_latency_ms: record.gateway_latency_ms,
        custom_metrics: &record.custom_metrics,
    };
    // Strings, numbers and a map with string keys: serializing them cannot fail.
    serde_json::to_string(&document).expect("a metrics document serializes")
}

/// The `v4-metrics` document over a record's fields; empty texts are left out, numbers are numbers.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct MetricsDocument<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    date: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    gateway: &'a str,
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    request_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    transaction_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    plan_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    application_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subscription_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    client_identifier: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    organization_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    environment_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tenant: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    zone: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    local_address: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    remote_address: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    uri: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    path_info: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mapped_path: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    user_agent: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    entrypoint_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    endpoint: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    security_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_key: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_message: &'a str,
    http_method: u8,
    status: u32,
    request_content_length: i64,
    response_content_length: i64,
    request_ended: bool,
    endpoint_response_time_ms: i64,
    gateway_response_time_ms: i64,
    gateway_latency_ms: i64,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    custom_metrics: &'a HashMap<String, String>,
}

/// One `health` document (an endpoint probe). `_id` is derived from the probe itself, so a resent
/// batch cannot count twice.
pub fn health_document(record: &HealthCheckRecord, node_id: &str) -> Value {
    let (timestamp, date) = timestamp_fields(record.timestamp_ms);
    let id = format!("health-{}-{}-{}-{}", node_id, record.api_id, record.endpoint, record.timestamp_ms);
    serde_json::json!({
        "type": "health",
        "date": date,
        "_id": id,
        "gateway": node_id,
        "@timestamp": timestamp,
        "api": record.api_id,
        "api-name": record.api_name,
        "endpoint": record.endpoint,
        "available": record.available,
        "success": record.success,
        "response-time": record.response_time_ms,
        "state": record.state,
        "transition": record.transition,
        "steps": [{
            "name": "default-step",
            "success": record.success,
            "message": record.message,
            "request": {"uri": record.uri, "method": record.method},
            "response": {"status": record.status},
        }],
    })
}

/// One `v4-log` document, the shape of Gravitee's Elasticsearch reporter's v4 `log.ftl`: `api-id`,
/// `request-id`, `client-identifier`, `request-ended`, then one object per captured phase
/// (`entrypoint-request`, `endpoint-request` with `method` and `uri`; `endpoint-response`,
/// `entrypoint-response` with `status`), each with `headers` (`{name: [values]}`) and `body` when
/// captured. A body cut at the dataplane's `--log-max-payload` carries `"body-truncated": true` (an hgw
/// addition; Gravitee truncates silently). `_id` is the request id, as for the metrics document.
pub fn log_document(record: &LogRecord, node_id: &str) -> Value {
    let mut doc = request_document("v4-log", &record.request_id, record.timestamp_ms, node_id);
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            doc.insert(key.into(), value.into());
        }
    };
    text("request-id", &record.request_id);
    text("transaction-id", &record.transaction_id);
    text("api-id", &record.api_id);
    text("api-name", &record.api_name);
    text("client-identifier", &record.client_identifier);
    text("application-id", &record.application_id);
    text("plan-id", &record.plan_id);
    text("subscription-id", &record.subscription_id);
    doc.insert("request-ended".into(), record.request_ended.into());
    if let Some(request) = &record.entrypoint_request {
        doc.insert("entrypoint-request".into(), log_request(request));
    }
    if let Some(request) = &record.endpoint_request {
        doc.insert("endpoint-request".into(), log_request(request));
    }
    if let Some(response) = &record.endpoint_response {
        doc.insert("endpoint-response".into(), log_response(response));
    }
    if let Some(response) = &record.entrypoint_response {
        doc.insert("entrypoint-response".into(), log_response(response));
    }
    Value::Object(doc)
}

fn log_request(request: &LogRequest) -> Value {
    let mut phase = Map::new();
    phase.insert("method".into(), request.method.clone().into());
    phase.insert("uri".into(), request.uri.clone().into());
    log_content(&mut phase, &request.headers, &request.body, request.body_truncated);
    Value::Object(phase)
}

fn log_response(response: &LogResponse) -> Value {
    let mut phase = Map::new();
    phase.insert("status".into(), response.status.into());
    log_content(&mut phase, &response.headers, &response.body, response.body_truncated);
    Value::Object(phase)
}

/// Headers and body of one phase; a phase without them (content not asked for) has neither key.
fn log_content(phase: &mut Map<String, Value>, headers: &[LogHeader], body: &[u8], truncated: bool) {
    if !headers.is_empty() {
        let headers: Map<String, Value> =
            headers.iter().map(|h| (h.name.clone(), Value::from(h.values.clone()))).collect();
        phase.insert("headers".into(), headers.into());
    }
    if !body.is_empty() {
        // Gravitee logs bodies as text; bytes that are not UTF-8 become U+FFFD.
        phase.insert("body".into(), String::from_utf8_lossy(body).into_owned().into());
    }
    if truncated {
        phase.insert("body-truncated".into(), true.into());
    }
}

/// What a `monitor` document reports about one node (the agent process).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMonitor {
    pub timestamp_ms: i64,
    pub hostname: String,
    /// Process CPU over the last interval, percent of one core (can exceed 100 on several cores).
    pub cpu_percent: f64,
    /// User + system CPU time since start, milliseconds.
    pub cpu_total_ms: u64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_file_descriptors: u64,
    /// Dataplanes with an open config stream to this agent.
    pub connected_dataplanes: u64,
}

/// One `monitor` document. Gravitee's node monitor (its `monitor.ftl`) writes an Elasticsearch
/// node-stats-like shape: `gateway`, `hostname`, `process{open_file_descriptors, cpu{percent,
/// total_in_millis}, mem{...}}` with snake_case keys inside (unlike the kebab-case request documents);
/// hgw keeps that shape (inferred: the Cloud Gate's mapping is not public) without the JVM part, and
/// adds `dataplanes{connected}`. `_id` is derived from node and time, so a resent batch cannot count
/// twice.
pub fn monitor_document(monitor: &NodeMonitor, node_id: &str) -> Value {
    let (timestamp, date) = timestamp_fields(monitor.timestamp_ms);
    // Two decimals are plenty for a percentage and keep the document stable to compare.
    let cpu_percent = (monitor.cpu_percent * 100.0).round() / 100.0;
    serde_json::json!({
        "type": "monitor",
        "date": date,
        "_id": format!("monitor-{node_id}-{}", monitor.timestamp_ms),
        "gateway": node_id,
        "@timestamp": timestamp,
        "hostname": monitor.hostname,
        "process": {
            "timestamp": monitor.timestamp_ms,
            "open_file_descriptors": monitor.open_file_descriptors,
            "cpu": {"percent": cpu_percent, "total_in_millis": monitor.cpu_total_ms},
            "mem": {"resident_in_bytes": monitor.resident_bytes, "total_virtual_in_bytes": monitor.virtual_bytes},
        },
        "dataplanes": {"connected": monitor.connected_dataplanes},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hgw_proto::v1::{ReportApi, ReportRequest};
    use serde_json::json;

    #[test]
    fn health_document_has_the_elasticsearch_form() {
        let record = HealthCheckRecord {
            timestamp_ms: 1_795_000_000_123,
            api_id: "api-1".into(),
            endpoint: "primary".into(),
            uri: "http://b/health".into(),
            method: "GET".into(),
            available: false,
            success: false,
            response_time_ms: 3,
            state: "DOWN".into(),
            transition: true,
            status: 500,
            message: "assertion failed".into(),
            ..HealthCheckRecord::default()
        };
        let doc = health_document(&record, "node");
        assert_eq!(doc["type"], "health");
        assert_eq!(doc["date"], "2026.11.18");
        assert_eq!(doc["_id"], "health-node-api-1-primary-1795000000123");
        assert_eq!((doc["available"].clone(), doc["transition"].clone()), (json!(false), json!(true)));
        assert_eq!(doc["steps"][0]["response"]["status"], 500);
        assert_eq!(doc["steps"][0]["request"]["uri"], "http://b/health");
    }

    #[test]
    fn method_codes_follow_gravitee() {
        let codes: Vec<u8> = ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "BREW"]
            .iter()
            .map(|m| http_method_code(m))
            .collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
        assert_eq!(http_method_code("get"), 3);
    }

    #[test]
    fn document_has_the_elasticsearch_form() {
        let record = MetricsRecord {
            timestamp_ms: 1_795_000_000_123,
            request_id: "req-1".into(),
            transaction_id: "tx-1".into(),
            api: 1,
            plan_id: "plan-1".into(),
            application_id: "1".into(),
            http_method: "POST".into(),
            uri: "/orders?x=1".into(),
            status: 201,
            gateway_response_time_ms: 12,
            endpoint_response_time_ms: 10,
            gateway_latency_ms: 2,
            request_content_length: 5,
            security_type: "KEY_LESS".into(),
            ..MetricsRecord::default()
        };
        // The API's fields come from the batch's table.
        let batch = ReportRequest {
            apis: vec![ReportApi {
                id: "api-1".into(),
                name: "Orders".into(),
                r#type: "proxy".into(),
                organization_id: "DEFAULT".into(),
                environment_id: "DEFAULT".into(),
                entrypoint_id: "http-proxy".into(),
            }],
            ..ReportRequest::default()
        };
        let api = batch.api_of(&record).expect("the record's API is in the table");
        let doc: Value = serde_json::from_str(&metrics_line(&record, api, "node-9")).expect("one JSON object");
        let expected = json!({
            "type": "v4-metrics", "date": "2026.11.18", "_id": "req-1", "gateway": "node-9",
            "@timestamp": "2026-11-18T11:06:40.123Z",
            "request-id": "req-1", "transaction-id": "tx-1", "api-id": "api-1", "api-name": "Orders",
            "api-type": "proxy", "organization-id": "DEFAULT", "environment-id": "DEFAULT",
            "entrypoint-id": "http-proxy", "plan-id": "plan-1",
            "application-id": "1", "http-method": 7, "uri": "/orders?x=1", "status": 201,
            "request-content-length": 5, "response-content-length": 0, "request-ended": false,
            "endpoint-response-time-ms": 10, "gateway-response-time-ms": 12, "gateway-latency-ms": 2,
            "security-type": "KEY_LESS"
        });
        assert_eq!(doc, expected);
    }

    /// The line of a record that carries its API's fields itself (a dataplane without the API table).
    fn own_line(record: &MetricsRecord) -> String {
        let batch = ReportRequest::default();
        metrics_line(record, batch.api_of(record).expect("its own fields"), "n")
    }

    #[test]
    fn a_metrics_line_is_one_line_with_its_custom_metrics() {
        let record = MetricsRecord {
            request_id: "r".into(),
            user_agent: "quote \" and\nnewline".into(),
            custom_metrics: [("zone".to_owned(), "eu".to_owned())].into(),
            ..MetricsRecord::default()
        };
        let line = own_line(&record);
        assert!(!line.contains('\n'), "{line}");
        let doc: Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(doc["user-agent"], "quote \" and\nnewline");
        assert_eq!(doc["custom-metrics"], json!({"zone": "eu"}));
        assert!(doc.get("api-id").is_none(), "empty texts are left out: {line}");
    }

    // The documents below are written by hand from GRAVITEE-FORMATS.md ("Reports") and Gravitee's
    // Elasticsearch reporter templates, not produced by the encoder: a renamed key fails here.

    #[test]
    fn date_is_the_utc_day_of_the_instant() {
        assert_eq!(
            timestamp_fields(1_767_225_599_999),
            ("2025-12-31T23:59:59.999Z".to_owned(), "2025.12.31".to_owned())
        );
        assert_eq!(timestamp_fields(1_767_225_600_000).1, "2026.01.01");
    }

    #[test]
    fn health_document_is_exactly_gravitees_health_form() {
        let record = HealthCheckRecord {
            timestamp_ms: 1_795_000_000_123,
            api_id: "api-1".into(),
            api_name: "Orders".into(),
            endpoint: "primary".into(),
            uri: "http://b/health".into(),
            method: "GET".into(),
            available: true,
            success: true,
            response_time_ms: 7,
            state: "UP".into(),
            transition: false,
            status: 200,
            message: String::new(),
        };
        let expected = json!({
            "type": "health", "date": "2026.11.18", "_id": "health-node-api-1-primary-1795000000123",
            "gateway": "node", "@timestamp": "2026-11-18T11:06:40.123Z",
            "api": "api-1", "api-name": "Orders", "endpoint": "primary", "available": true, "success": true,
            "response-time": 7, "state": "UP", "transition": false,
            "steps": [{"name": "default-step", "success": true, "message": "",
                "request": {"uri": "http://b/health", "method": "GET"}, "response": {"status": 200}}]
        });
        assert_eq!(health_document(&record, "node"), expected);
    }

    #[test]
    fn log_document_has_the_v4_log_form() {
        let header = |name: &str, values: &[&str]| LogHeader {
            name: name.into(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        let record = LogRecord {
            timestamp_ms: 1_795_000_000_123,
            request_id: "req-1".into(),
            transaction_id: "tx-1".into(),
            api_id: "api-1".into(),
            api_name: "Orders".into(),
            client_identifier: "127.0.0.1".into(),
            application_id: "1".into(),
            plan_id: "plan-1".into(),
            subscription_id: "127.0.0.1".into(),
            request_ended: true,
            entrypoint_request: Some(LogRequest {
                method: "POST".into(),
                uri: "/orders?x=1".into(),
                headers: vec![header("content-type", &["application/json"]), header("accept", &["a", "b"])],
                body: b"{\"n\":1}".to_vec(),
                body_truncated: false,
            }),
            endpoint_request: Some(LogRequest {
                method: "POST".into(),
                uri: "http://backend/orders?x=1".into(),
                headers: Vec::new(),
                body: Vec::new(),
                body_truncated: false,
            }),
            endpoint_response: Some(LogResponse {
                status: 201,
                headers: vec![header("content-length", &["12"])],
                body: b"created-".to_vec(),
                body_truncated: true,
            }),
            entrypoint_response: Some(LogResponse {
                status: 201,
                headers: vec![header("x-gravitee-request-id", &["req-1"])],
                body: vec![b'o', b'k', 0xff],
                body_truncated: false,
            }),
        };
        let expected = json!({
            "type": "v4-log", "date": "2026.11.18", "_id": "req-1", "gateway": "node-9",
            "@timestamp": "2026-11-18T11:06:40.123Z",
            "request-id": "req-1", "transaction-id": "tx-1", "api-id": "api-1", "api-name": "Orders",
            "client-identifier": "127.0.0.1", "application-id": "1", "plan-id": "plan-1",
            "subscription-id": "127.0.0.1", "request-ended": true,
            "entrypoint-request": {"method": "POST", "uri": "/orders?x=1",
                "headers": {"content-type": ["application/json"], "accept": ["a", "b"]}, "body": "{\"n\":1}"},
            "endpoint-request": {"method": "POST", "uri": "http://backend/orders?x=1"},
            "endpoint-response": {"status": 201, "headers": {"content-length": ["12"]}, "body": "created-",
                "body-truncated": true},
            "entrypoint-response": {"status": 201, "headers": {"x-gravitee-request-id": ["req-1"]},
                "body": "ok\u{fffd}"}
        });
        assert_eq!(log_document(&record, "node-9"), expected);

        // Phases that were not captured are absent, not empty objects.
        let bare = LogRecord { request_id: "r".into(), ..LogRecord::default() };
        let doc = log_document(&bare, "n");
        for phase in ["entrypoint-request", "endpoint-request", "endpoint-response", "entrypoint-response"] {
            assert!(doc.get(phase).is_none(), "{phase}");
        }
    }

    #[test]
    fn monitor_document_has_the_node_monitor_form() {
        let monitor = NodeMonitor {
            timestamp_ms: 1_795_000_000_123,
            hostname: "host-a".into(),
            cpu_percent: 12.345_6,
            cpu_total_ms: 4200,
            resident_bytes: 10_485_760,
            virtual_bytes: 104_857_600,
            open_file_descriptors: 42,
            connected_dataplanes: 2,
        };
        let expected = json!({
            "type": "monitor", "date": "2026.11.18", "_id": "monitor-node-9-1795000000123", "gateway": "node-9",
            "@timestamp": "2026-11-18T11:06:40.123Z", "hostname": "host-a",
            "process": {"timestamp": 1_795_000_000_123_i64, "open_file_descriptors": 42,
                "cpu": {"percent": 12.35, "total_in_millis": 4200},
                "mem": {"resident_in_bytes": 10_485_760, "total_virtual_in_bytes": 104_857_600}},
            "dataplanes": {"connected": 2}
        });
        assert_eq!(monitor_document(&monitor, "node-9"), expected);
    }

    #[test]
    fn every_http_method_of_a_metrics_document_is_a_number() {
        for (method, code) in [("GET", 3), ("DELETE", 2), ("OPTIONS", 5), ("PROPFIND", 0)] {
            let record = MetricsRecord { http_method: method.into(), ..MetricsRecord::default() };
            let doc: Value = serde_json::from_str(&own_line(&record)).expect("one JSON object");
            assert_eq!(doc["http-method"], json!(code), "{method}");
        }
    }
}
