//! `xml-json` and `json-xml`: Gravitee's body converters (gravitee-policy-xml-json 2.0.1,
//! gravitee-policy-json-xml 3.0.3), converting as their bundled org.json does ([`super::orgjson`]).
//!
//! What Gravitee does, kept here:
//! - Any Content-Type is converted: the policies never look at it except for its `charset=`.
//! - On v4 engines an empty body is no body (`onBody` sees none) and stays as it is; the V3 engine
//!   converts it too (an empty XML document is `{}`, an empty JSON one a failure).
//! - Converted: Content-Type `application/json;charset=UTF-8` (xml-json) or
//!   `application/xml;charset=UTF-8` (json-xml); Content-Length follows the new body.
//! - Failed: v4 engines interrupt with 400 on requests, 500 on responses, key `XML_INVALID_PAYLOAD` /
//!   `JSON_INVALID_PAYLOAD` and a fixed message; the V3 engine's transformable stream fails the chain
//!   with a 500 whose message is the policy's prefix and org.json's reason.
//! - A v2 step's `scope` (the V3-era phase: RESPONSE when left out) is applied by the agent.

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE};

use super::orgjson::{self, DEFAULT_MAX_DEPTH};
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, ResponseExchange};

/// Which way a step converts.
#[derive(Debug)]
enum Direction {
    XmlToJson,
    JsonToXml { root_element: String },
}

#[derive(Debug)]
pub struct XmlJson {
    direction: Direction,
}

impl XmlJson {
    pub fn xml_to_json(_config: pb::XmlToJsonPolicy) -> Result<XmlJson, PolicyError> {
        Ok(XmlJson { direction: Direction::XmlToJson })
    }

    pub fn json_to_xml(config: pb::JsonToXmlPolicy) -> Result<XmlJson, PolicyError> {
        Ok(XmlJson { direction: Direction::JsonToXml { root_element: config.root_element } })
    }

    /// The converted body, or org.json's reason.
    fn convert(&self, body: &[u8], headers: &HeaderMap) -> Result<Bytes, String> {
        let charset = orgjson::charset_name(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()));
        let charset = match (&self.direction, charset) {
            // json-xml's CharsetHelper lets Java's refusal of a malformed name through (the step
            // fails); xml-json's reads the body as UTF-8 then.
            (Direction::JsonToXml { .. }, Some(name)) if !orgjson::legal_charset_name(&name) => return Err(name),
            (_, Some(name)) if !orgjson::legal_charset_name(&name) => None,
            (_, charset) => charset,
        };
        let text = orgjson::decode(body, charset.as_deref());
        let converted = match &self.direction {
            Direction::XmlToJson => orgjson::xml_to_json(&text, DEFAULT_MAX_DEPTH),
            Direction::JsonToXml { root_element } => orgjson::json_to_xml(&text, root_element, DEFAULT_MAX_DEPTH),
        };
        converted.map(Bytes::from).map_err(|e| e.to_string())
    }

    fn content_type(&self) -> HeaderValue {
        match self.direction {
            Direction::XmlToJson => HeaderValue::from_static("application/json;charset=UTF-8"),
            Direction::JsonToXml { .. } => HeaderValue::from_static("application/xml;charset=UTF-8"),
        }
    }

    /// Gravitee's answer when the body does not convert.
    fn failure(&self, reason: &str, status: StatusCode, legacy_engine: bool) -> Reply {
        let (key, message, prefix) = match self.direction {
            Direction::XmlToJson => (
                "XML_INVALID_PAYLOAD",
                "Unable to transform invalid XML to Json",
                "Unable to transform XML into JSON: ",
            ),
            Direction::JsonToXml { .. } => (
                "JSON_INVALID_PAYLOAD",
                "Unable to transform invalid JSON payload to XML",
                "Unable to transform JSON into XML: ",
            ),
        };
        tracing::debug!(reason, "{}: the body does not convert", self.name());
        if legacy_engine {
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, format!("{prefix}{reason}"))
        } else {
            Reply::error(status, Some(key), message)
        }
    }

    fn name(&self) -> &'static str {
        match self.direction {
            Direction::XmlToJson => "xml-json",
            Direction::JsonToXml { .. } => "json-xml",
        }
    }

    /// Converts the body in place (and sets Content-Type), or says what to answer.
    fn apply(
        &self,
        body: Option<&mut Bytes>,
        headers: &mut HeaderMap,
        status: StatusCode,
        legacy_engine: bool,
    ) -> Result<(), Reply> {
        let Some(body) = body else {
            return Ok(());
        };
        if body.is_empty() && !legacy_engine {
            return Ok(());
        }
        match self.convert(body, headers) {
            Ok(converted) => {
                *body = converted;
                headers.insert(CONTENT_TYPE, self.content_type());
                Ok(())
            }
            Err(reason) => Err(self.failure(&reason, status, legacy_engine)),
        }
    }
}

impl Policy for XmlJson {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let legacy = exchange.legacy_engine;
        match self.apply(exchange.body.as_deref_mut(), &mut exchange.parts.headers, StatusCode::BAD_REQUEST, legacy) {
            Ok(()) => Outcome::Continue,
            Err(reply) => Outcome::Respond(reply),
        }
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        let legacy = exchange.legacy_engine;
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        if let Err(reply) = self.apply(exchange.body.as_deref_mut(), exchange.headers, status, legacy) {
            exchange.failure = Some(reply);
        }
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

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn converts_sets_content_type_and_fails_as_gravitee() {
        let p = XmlJson::xml_to_json(pb::XmlToJsonPolicy {}).unwrap();
        let mut body = Bytes::from_static(b"<a x=\"1\">t</a>");
        let mut h = headers("text/plain");
        p.apply(Some(&mut body), &mut h, StatusCode::BAD_REQUEST, false).unwrap();
        assert_eq!(&body[..], br#"{"a":{"x":1,"content":"t"}}"#);
        assert_eq!(h[CONTENT_TYPE], "application/json;charset=UTF-8");

        // v4: an empty body stays; V3: it becomes `{}`.
        let mut empty = Bytes::new();
        p.apply(Some(&mut empty), &mut headers("text/xml"), StatusCode::BAD_REQUEST, false).unwrap();
        assert!(empty.is_empty());
        p.apply(Some(&mut empty), &mut headers("text/xml"), StatusCode::BAD_REQUEST, true).unwrap();
        assert_eq!(&empty[..], b"{}");

        let mut bad = Bytes::from_static(b"<a>");
        let reply = p.apply(Some(&mut bad), &mut headers("text/xml"), StatusCode::BAD_REQUEST, false).unwrap_err();
        assert_eq!(
            (reply.status, reply.error_key, reply.error_message.as_deref()),
            (StatusCode::BAD_REQUEST, Some("XML_INVALID_PAYLOAD"), Some("Unable to transform invalid XML to Json"))
        );
        let reply = p.apply(Some(&mut bad), &mut headers("text/xml"), StatusCode::BAD_REQUEST, true).unwrap_err();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            reply.error_message.as_deref(),
            Some("Unable to transform XML into JSON: Unclosed tag a at 4 [character 5 line 1]")
        );

        // Latin-1 bodies are read as such.
        let mut latin = Bytes::from_static(b"<a>\xe9</a>");
        p.apply(Some(&mut latin), &mut headers("text/xml; charset=ISO-8859-1"), StatusCode::OK, false).unwrap();
        assert_eq!(std::str::from_utf8(&latin).unwrap(), r#"{"a":"é"}"#);
    }

    #[test]
    fn json_to_xml_root_and_failures() {
        let p = XmlJson::json_to_xml(pb::JsonToXmlPolicy { root_element: "doc".into() }).unwrap();
        let mut body = Bytes::from_static(br#"{"a":[1,2],"b":{}}"#);
        let mut h = headers("application/json");
        p.apply(Some(&mut body), &mut h, StatusCode::OK, false).unwrap();
        assert_eq!(&body[..], b"<doc><a>1</a><a>2</a><b></b></doc>");
        assert_eq!(h[CONTENT_TYPE], "application/xml;charset=UTF-8");

        let mut bad = Bytes::from_static(b"[1]");
        let reply = p.apply(Some(&mut bad), &mut headers("application/json"), StatusCode::INTERNAL_SERVER_ERROR, false);
        let reply = reply.unwrap_err();
        assert_eq!(
            (reply.status, reply.error_key, reply.error_message.as_deref()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("JSON_INVALID_PAYLOAD"),
                Some("Unable to transform invalid JSON payload to XML")
            )
        );
        let mut empty = Bytes::new();
        let reply = p.apply(Some(&mut empty), &mut headers("application/json"), StatusCode::OK, true).unwrap_err();
        assert_eq!(
            reply.error_message.as_deref(),
            Some("Unable to transform JSON into XML: A JSONObject text must begin with '{' at 1 [character 2 line 1]")
        );
    }
}
