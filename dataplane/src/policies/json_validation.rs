//! `json-validation` (Gravitee's policy 2.1): the request (or response) body is validated against a JSON
//! Schema, compiled once when the API arrives.
//!
//! Gravitee's validator (json-schema-validator 2.2) reads every schema as draft 4 whatever its
//! `$schema` says (it knows no later draft), and so does hgw; schemas never fetch remote `$ref`s.
//! Its answers, as observed on Gravitee 4.10 with the plugin 2.1.0:
//! - v4 engines (v4 APIs, v2 on the emulation engine): an empty body is not validated; a body that does
//!   not start with a JSON value fails with the format key, trailing text after it is ignored (Jackson's
//!   `readTree`); a body the schema refuses fails with the payload key. On responses Gravitee's keys are
//!   the other way round (a refused body is `JSON_INVALID_RESPONSE_FORMAT`, a malformed one
//!   `JSON_INVALID_RESPONSE_PAYLOAD`), and `straightRespondMode` lets a refused (not a malformed)
//!   response through. The answer's body is the message itself with `Content-Type: application/json`.
//! - the V3 engine (v2 APIs): the whole body must be one JSON value (an empty body fails with the
//!   format key), the response keys are the natural ones, and without `errorMessage` the answer is
//!   Gravitee's JSON error `{"message","http_status_code"}`.
//!
//! 400 on requests, 500 on responses; the message is `errorMessage` (EL) or `Bad Request` /
//! `Internal Error`. A failed response keeps the endpoint's headers, as Gravitee's does.

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::el::ElContext;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, ResponseExchange, Value, invalid};

#[derive(Debug)]
pub struct JsonValidation {
    validator: jsonschema::Validator,
    error_message: Option<Value>,
    straight_respond: bool,
}

/// Why a body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not JSON.
    Format,
    /// JSON the schema refuses.
    Payload,
}

impl JsonValidation {
    pub fn compile(config: pb::JsonValidationPolicy) -> Result<JsonValidation, PolicyError> {
        let pb::JsonValidationPolicy {
            schema,
            error_message,
            // Both change what json-schema-validator reports, never whether a body passes: a valid
            // schema validates the same checked or unchecked, and `deepCheck` only adds the messages of
            // children whose container already failed.
            validate_unchecked: _,
            deep_check: _,
            straight_respond_mode,
        } = config;
        let validator = compile_schema(&schema).map_err(|reason| invalid("schema", reason))?;
        let error_message =
            if error_message.is_empty() { None } else { Some(Value::compile("errorMessage", error_message)?) };
        Ok(JsonValidation { validator, error_message, straight_respond: straight_respond_mode })
    }

    fn check(&self, body: &[u8], legacy_engine: bool) -> Option<Refusal> {
        let parsed = if legacy_engine {
            serde_json::from_slice::<serde_json::Value>(body).ok()
        } else {
            // Jackson's readTree: the first JSON value, whatever follows it.
            serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>().next().and_then(Result::ok)
        };
        match parsed {
            None => Some(Refusal::Format),
            Some(value) if !self.validator.is_valid(&value) => Some(Refusal::Payload),
            Some(_) => None,
        }
    }

    fn reply(&self, status: StatusCode, key: &'static str, legacy_engine: bool, el: &ElContext<'_>) -> Reply {
        let Some(message) = &self.error_message else {
            let message = if status == StatusCode::BAD_REQUEST { "Bad Request" } else { "Internal Error" };
            if legacy_engine {
                return Reply::error(status, Some(key), message);
            }
            return Reply::json_message(status, Some(key), message.to_owned());
        };
        Reply::json_message(status, Some(key), message.render(el))
    }
}

/// The schema as json-schema-validator reads it: JSON text, draft 4 (a `$schema` naming a later draft
/// is not honoured, as there), checked against the draft's meta-schema; no remote references.
pub fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let mut schema: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    if let Some(object) = schema.as_object_mut() {
        if object.get("$schema").and_then(serde_json::Value::as_str).is_some_and(|s| s.contains("draft-03")) {
            return Err("draft 3 schemas are not supported (draft 4 and the drafts read as it are)".into());
        }
        object.remove("$schema");
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("not a valid draft 4 JSON Schema: {e}"))
}

impl Policy for JsonValidation {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let legacy = exchange.legacy_engine;
        let body = exchange.body.as_deref().map_or(&[][..], |b| &b[..]);
        if body.is_empty() && !legacy {
            return Outcome::Continue;
        }
        let key = match self.check(body, legacy) {
            None => return Outcome::Continue,
            Some(Refusal::Format) => "JSON_INVALID_FORMAT",
            Some(Refusal::Payload) => "JSON_INVALID_PAYLOAD",
        };
        Outcome::Respond(self.reply(StatusCode::BAD_REQUEST, key, legacy, &exchange.el()))
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        let legacy = exchange.legacy_engine;
        let body = exchange.body.as_deref().map_or(&[][..], |b| &b[..]);
        if body.is_empty() && !legacy {
            return;
        }
        let refusal = match self.check(body, legacy) {
            None => return,
            Some(refusal) => refusal,
        };
        // Straight respond mode lets a refused response through; the V3 engine's policy also never
        // answers a malformed one then (its exchange hangs), so it goes through here too.
        if self.straight_respond && (refusal == Refusal::Payload || legacy) {
            return;
        }
        let key = match (refusal, legacy) {
            (Refusal::Format, false) | (Refusal::Payload, true) => "JSON_INVALID_RESPONSE_PAYLOAD",
            (Refusal::Payload, false) | (Refusal::Format, true) => "JSON_INVALID_RESPONSE_FORMAT",
        };
        let reply = self.reply(StatusCode::INTERNAL_SERVER_ERROR, key, legacy, &exchange.el());
        // The endpoint's headers stay on the failure (the exchange keeps them for any response failure).
        exchange.failure = Some(reply);
    }

    fn uses_el(&self) -> bool {
        self.error_message.as_ref().is_some_and(Value::is_template)
    }

    fn reads_request_body(&self) -> bool {
        true
    }

    fn reads_response_body(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::Attributes;
    use crate::policies::el::RequestInfo;
    use bytes::Bytes;
    use http::{HeaderValue, header};

    const SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "required": ["name"], "properties": {"name": {"type": "string"}, "n": {"type": "integer", "maximum": 3, "exclusiveMaximum": true}}}"#;

    fn policy(error_message: &str, straight: bool) -> JsonValidation {
        JsonValidation::compile(pb::JsonValidationPolicy {
            schema: SCHEMA.into(),
            error_message: error_message.into(),
            straight_respond_mode: straight,
            ..Default::default()
        })
        .unwrap()
    }

    fn request(policy: &JsonValidation, body: &str, legacy: bool) -> Option<Reply> {
        let (mut parts, _) = http::Request::post("/x").body(()).unwrap().into_parts();
        let mut body = Bytes::from(body.to_owned());
        super::super::with_test_body_exchange(&mut parts, &mut body, legacy, |exchange| {
            match policy.on_request(exchange) {
                Outcome::Respond(reply) => Some(reply),
                _ => None,
            }
        })
    }

    fn response(policy: &JsonValidation, body: &str, legacy: bool) -> Option<Reply> {
        let mut status = StatusCode::OK;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-echo", HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut body = Bytes::from(body.to_owned());
        let mut attributes = Attributes::new();
        let info = RequestInfo::default();
        let mut exchange = ResponseExchange {
            status: &mut status,
            headers: &mut headers,
            attributes: &mut attributes,
            info: &info,
            body: Some(&mut body),
            failure: None,
            legacy_engine: legacy,
        };
        policy.on_response(&mut exchange);
        exchange.failure
    }

    fn key_and_body(reply: Option<Reply>) -> Option<(u16, &'static str, String)> {
        reply.map(|r| (r.status.as_u16(), r.error_key.unwrap(), String::from_utf8(r.body.to_vec()).unwrap()))
    }

    #[test]
    fn requests_on_v4_engines() {
        let p = policy("", false);
        assert!(request(&p, r#"{"name": "a", "n": 2}"#, false).is_none());
        assert!(request(&p, "", false).is_none(), "an empty body is not validated");
        assert!(request(&p, r#"{"name": "a"} trailing"#, false).is_none(), "Jackson reads the first value");
        assert_eq!(
            key_and_body(request(&p, r#"{"nam": 1}"#, false)),
            Some((400, "JSON_INVALID_PAYLOAD", "Bad Request".into()))
        );
        // Draft 4 semantics whatever `$schema` says: a boolean exclusiveMaximum.
        assert_eq!(key_and_body(request(&p, r#"{"name": "a", "n": 3}"#, false)).unwrap().1, "JSON_INVALID_PAYLOAD");
        assert_eq!(key_and_body(request(&p, r#"{"name": "#, false)).unwrap().1, "JSON_INVALID_FORMAT");
        let custom = policy(r#"{"error": "{#request.content}"}"#, false);
        let reply = request(&custom, "[]", false).unwrap();
        assert_eq!(&reply.body[..], br#"{"error": "[]"}"#);
        assert_eq!(reply.headers, vec![(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]);
    }

    #[test]
    fn requests_on_the_v3_engine() {
        let p = policy("", false);
        let (status, key, body) = key_and_body(request(&p, "", true)).unwrap();
        assert_eq!((status, key), (400, "JSON_INVALID_FORMAT"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"message": "Bad Request", "http_status_code": 400})
        );
        assert_eq!(key_and_body(request(&p, r#"{"name": "a"} x"#, true)).unwrap().1, "JSON_INVALID_FORMAT");
        assert_eq!(key_and_body(request(&p, "{}", true)).unwrap().1, "JSON_INVALID_PAYLOAD");
        assert_eq!(key_and_body(request(&policy("custom", false), "{}", true)).unwrap().2, "custom");
    }

    #[test]
    fn responses_with_gravitee_keys_and_straight_mode() {
        let p = policy("", false);
        assert!(response(&p, r#"{"name": "a"}"#, false).is_none());
        assert!(response(&p, "", false).is_none());
        let refused = response(&p, "{}", false).unwrap();
        assert_eq!((refused.status.as_u16(), refused.error_key), (500, Some("JSON_INVALID_RESPONSE_FORMAT")));
        assert_eq!(&refused.body[..], b"Internal Error");
        let names: Vec<_> = refused.headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(names, vec![("content-type", "application/json")], "the exchange adds the endpoint's");
        assert_eq!(response(&p, "{", false).unwrap().error_key, Some("JSON_INVALID_RESPONSE_PAYLOAD"));
        assert_eq!(response(&p, "{}", true).unwrap().error_key, Some("JSON_INVALID_RESPONSE_PAYLOAD"));
        assert_eq!(response(&p, "", true).unwrap().error_key, Some("JSON_INVALID_RESPONSE_FORMAT"));

        let straight = policy("", true);
        assert!(response(&straight, "{}", false).is_none());
        assert_eq!(response(&straight, "{", false).unwrap().error_key, Some("JSON_INVALID_RESPONSE_PAYLOAD"));
    }

    #[test]
    fn bad_schemas_are_refused_with_the_reason() {
        for (schema, reason) in [
            ("not json", "not JSON"),
            (r#"{"type": "nope"}"#, "not a valid draft 4"),
            (r#"{"$schema": "http://json-schema.org/draft-03/schema#"}"#, "draft 3"),
            (r#"{"$ref": "https://example.com/remote.json"}"#, "not a valid draft 4"),
        ] {
            let error = compile_schema(schema).err().unwrap_or_else(|| panic!("{schema} compiled"));
            assert!(error.contains(reason), "{schema}: {error}");
        }
    }
}
