//! `json-to-json`: transforms a JSON body with a JOLT specification (shift, default, remove), as
//! Gravitee's policy does with Bazaarvoice JOLT. The specification is an EL template: rendered and
//! parsed per request when it holds EL, once at deploy otherwise. On v4 engines only a body whose
//! Content-Type names JSON is transformed (others pass untouched); the V3 engine transforms any
//! body. Content-Type becomes `application/json` unless `overrideContentType` is false. Any failure
//! (specification, body that is not JSON, transformation) answers Gravitee's 500
//! `JSON_INVALID_SPECIFICATION`.

use bytes::Bytes;
use harmony_jolt::TransformSpec;
use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE};

use super::el::ElContext;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, ResponseExchange, Value};

const KEY: &str = "JSON_INVALID_SPECIFICATION";

#[derive(Debug)]
pub struct JsonToJson {
    specification: Value,
    /// Parsed once when the specification has no EL (`Err`: Gravitee's 500 on every request).
    constant: Option<Result<TransformSpec, String>>,
    override_content_type: bool,
}

impl JsonToJson {
    pub fn compile(config: pb::JsonToJsonPolicy) -> Result<JsonToJson, PolicyError> {
        let specification = Value::compile("json-to-json.specification", config.specification)?;
        let constant = match &specification {
            Value::Constant(text) => Some(parse_spec(text)),
            Value::Template(_) => None,
        };
        Ok(JsonToJson { specification, constant, override_content_type: config.override_content_type })
    }

    /// The transformed body, or why it could not be.
    fn transform(&self, body: &[u8], el: &ElContext<'_>) -> Result<Bytes, String> {
        let rendered;
        let spec = match &self.constant {
            Some(Ok(spec)) => spec,
            Some(Err(error)) => return Err(error.clone()),
            None => {
                rendered = parse_spec(&self.specification.render(el))?;
                &rendered
            }
        };
        // JOLT's own words for a body that is not JSON (the V3 engine's answer quotes them).
        let input: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "Unable to unmarshal JSON to an Object.".to_owned())?;
        // A specification and a body are both outside input: whatever the library does with them
        // must not take the dataplane down.
        let output = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harmony_jolt::transform(input, spec)))
            .map_err(|_| "the transformation failed".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(Bytes::from(serde_json::to_vec(&output).map_err(|e| e.to_string())?))
    }

    /// Whether this body is transformed: on v4 engines a non-empty JSON one; on the V3 engine any,
    /// even an empty one (which then fails, as there).
    fn applies(body: Option<&Bytes>, headers: &HeaderMap, legacy_engine: bool) -> bool {
        let is_json = || {
            headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
        };
        match body {
            None => false,
            Some(_) if legacy_engine => true,
            Some(body) => !body.is_empty() && is_json(),
        }
    }

    /// Puts the outcome in place: the new body (and Content-Type), or the failure to answer.
    fn finish(
        &self,
        result: Result<Bytes, String>,
        body: Option<&mut Bytes>,
        headers: &mut HeaderMap,
        legacy_engine: bool,
    ) -> Result<(), Reply> {
        match result {
            Ok(transformed) => {
                if let Some(body) = body {
                    *body = transformed;
                }
                if self.override_content_type {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, "json-to-json: the transformation failed");
                let message = if legacy_engine {
                    format!("Unable to apply JSON to JSON transformation: {error}")
                } else {
                    "Unable to apply JOLT transformation to payload".to_owned()
                };
                Err(Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(KEY), message))
            }
        }
    }
}

impl Policy for JsonToJson {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        if !JsonToJson::applies(exchange.body.as_deref(), &exchange.parts.headers, exchange.legacy_engine) {
            return Outcome::Continue;
        }
        let result = self.transform(exchange.body.as_deref().map_or(&[][..], |b| &b[..]), &exchange.el());
        match self.finish(result, exchange.body.as_deref_mut(), &mut exchange.parts.headers, exchange.legacy_engine) {
            Ok(()) => Outcome::Continue,
            Err(reply) => Outcome::Respond(reply),
        }
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        if !JsonToJson::applies(exchange.body.as_deref(), exchange.headers, exchange.legacy_engine) {
            return;
        }
        let result = self.transform(exchange.body.as_deref().map_or(&[][..], |b| &b[..]), &exchange.el());
        if let Err(reply) = self.finish(result, exchange.body.as_deref_mut(), exchange.headers, exchange.legacy_engine)
        {
            exchange.failure = Some(reply);
        }
    }

    fn uses_el(&self) -> bool {
        self.specification.is_template()
    }

    fn reads_request_body(&self) -> bool {
        true
    }

    fn reads_response_body(&self) -> bool {
        true
    }
}

/// A JOLT chain: JOLT's own words when the text is not a JSON list, ours when it is one hgw cannot
/// run as a chain.
fn parse_spec(text: &str) -> Result<TransformSpec, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|_| "Unable to unmarshal JSON to a List.".to_owned())?;
    serde_json::from_value(serde_json::Value::Array(list)).map_err(|e| format!("not a JOLT chain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::el::RequestInfo;

    fn policy(spec: &str) -> JsonToJson {
        JsonToJson::compile(pb::JsonToJsonPolicy { specification: spec.into(), override_content_type: true }).unwrap()
    }

    #[test]
    fn shift_default_remove_and_failures() {
        // Gravitee's own test specification.
        let p = policy(
            r#"[{"operation":"shift","spec":{"_id":"id","*":{"$":"&1"}}},{"operation":"remove","spec":{"__v":""}}]"#,
        );
        let info = RequestInfo::default();
        let headers = HeaderMap::new();
        let el = ElContext::request(&info, &headers, &[], &[]);
        let out = p.transform(br#"{"_id":"57","name":"x","__v":0}"#, &el).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"id":"57","name":"name"})
        );
        assert_eq!(p.transform(b"not json", &el).unwrap_err(), "Unable to unmarshal JSON to an Object.");
        assert_eq!(p.transform(b"", &el).unwrap_err(), "Unable to unmarshal JSON to an Object.");
        assert_eq!(
            policy("[invalid, json, file]").transform(b"{}", &el).unwrap_err(),
            "Unable to unmarshal JSON to a List."
        );

        // Only JSON bodies on v4; any body on the V3 engine; failures are Gravitee's 500.
        let mut body = Bytes::from_static(b"<xml/>");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
        assert!(!JsonToJson::applies(Some(&body), &h, false));
        assert!(JsonToJson::applies(Some(&body), &h, true));
        assert!(JsonToJson::applies(Some(&Bytes::new()), &h, true), "the V3 engine transforms an empty body");
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.api+JSON"));
        assert!(JsonToJson::applies(Some(&body), &h, false));
        let reply = p.finish(Err("x".into()), Some(&mut body), &mut h, false).unwrap_err();
        assert_eq!(
            (reply.error_key, reply.error_message.as_deref()),
            (Some(KEY), Some("Unable to apply JOLT transformation to payload"))
        );
        p.finish(Ok(Bytes::from_static(b"{}")), Some(&mut body), &mut h, false).unwrap();
        assert_eq!((&body[..], h[CONTENT_TYPE].to_str().unwrap()), (&b"{}"[..], "application/json"));
    }
}
