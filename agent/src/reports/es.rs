//! The Elasticsearch form of report documents, as the Cloud Gate's `/reports` most likely takes them
//! (Gravitee's Elasticsearch reporter): one JSON object per line, kebab-case keys, `http-method` as
//! Gravitee's method code, plus `type`, `date` (`yyyy.MM.dd`, the index suffix), `_id` (the request id, so
//! a retried batch cannot count twice), `gateway` (node id) and `@timestamp`.

use hgw_proto::v1::{HealthCheckRecord, MetricsRecord};
use serde_json::{Map, Value};

/// Gravitee's `io.gravitee.common.http.HttpMethod` codes; anything else is 0 (OTHER).
pub fn http_method_code(method: &str) -> u8 {
    match method.to_ascii_uppercase().as_str() {
        "CONNECT" => 1,
        "DELETE" => 2,
        "GET" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "PATCH" => 6,
        "POST" => 7,
        "PUT" => 8,
        "TRACE" => 9,
        _ => 0,
    }
}

/// `@timestamp` (RFC 3339, UTC, milliseconds) and `date` (`yyyy.MM.dd`) of an epoch-ms instant.
pub fn timestamp_fields(epoch_ms: i64) -> (String, String) {
    let instant = std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms.max(0) as u64);
    let rfc3339 = humantime::format_rfc3339_millis(instant).to_string();
    let date = rfc3339[..10].replace('-', ".");
    (rfc3339, date)
}

/// One `v4-metrics` document.
pub fn metrics_document(record: &MetricsRecord, node_id: &str) -> Value {
    let (timestamp, date) = timestamp_fields(record.timestamp_ms);
    let mut doc = Map::new();
    doc.insert("type".into(), "v4-metrics".into());
    doc.insert("date".into(), date.into());
    doc.insert("_id".into(), record.request_id.clone().into());
    doc.insert("gateway".into(), node_id.into());
    doc.insert("@timestamp".into(), timestamp.into());
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            doc.insert(key.into(), value.into());
        }
    };
    text("request-id", &record.request_id);
    text("transaction-id", &record.transaction_id);
    text("api-id", &record.api_id);
    text("api-name", &record.api_name);
    text("api-type", &record.api_type);
    text("plan-id", &record.plan_id);
    text("application-id", &record.application_id);
    text("subscription-id", &record.subscription_id);
    text("client-identifier", &record.client_identifier);
    text("organization-id", &record.organization_id);
    text("environment-id", &record.environment_id);
    text("tenant", &record.tenant);
    text("zone", &record.zone);
    text("local-address", &record.local_address);
    text("remote-address", &record.remote_address);
    text("host", &record.host);
    text("uri", &record.uri);
    text("path-info", &record.path_info);
    text("mapped-path", &record.mapped_path);
    text("user-agent", &record.user_agent);
    text("entrypoint-id", &record.entrypoint_id);
    text("endpoint", &record.endpoint);
    text("user", &record.user);
    text("security-type", &record.security_type);
    text("error-key", &record.error_key);
    text("error-message", &record.error_message);
    doc.insert("http-method".into(), http_method_code(&record.http_method).into());
    doc.insert("status".into(), record.status.into());
    doc.insert("request-content-length".into(), record.request_content_length.into());
    doc.insert("response-content-length".into(), record.response_content_length.into());
    doc.insert("request-ended".into(), record.request_ended.into());
    doc.insert("endpoint-response-time-ms".into(), record.endpoint_response_time_ms.into());
    doc.insert("gateway-response-time-ms".into(), record.gateway_response_time_ms.into());
    doc.insert("gateway-latency-ms".into(), record.gateway_latency_ms.into());
    if !record.custom_metrics.is_empty() {
        let custom: Map<String, Value> =
            record.custom_metrics.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        doc.insert("custom-metrics".into(), custom.into());
    }
    Value::Object(doc)
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

#[cfg(test)]
mod tests {
    use super::*;
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
            api_id: "api-1".into(),
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
        let doc = metrics_document(&record, "node-9");
        let expected = json!({
            "type": "v4-metrics", "date": "2026.11.18", "_id": "req-1", "gateway": "node-9",
            "@timestamp": "2026-11-18T11:06:40.123Z",
            "request-id": "req-1", "transaction-id": "tx-1", "api-id": "api-1", "plan-id": "plan-1",
            "application-id": "1", "http-method": 7, "uri": "/orders?x=1", "status": 201,
            "request-content-length": 5, "response-content-length": 0, "request-ended": false,
            "endpoint-response-time-ms": 10, "gateway-response-time-ms": 12, "gateway-latency-ms": 2,
            "security-type": "KEY_LESS"
        });
        assert_eq!(doc, expected);
    }
}
