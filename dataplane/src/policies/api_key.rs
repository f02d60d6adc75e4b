//! Gravitee's `api-key` policy as a flow step (its V3 and V4 forms): the request must carry a key of
//! this API, valid now (not revoked, paused or expired, its subscription accepted and current): else
//! `401 API_KEY_MISSING` or `API_KEY_INVALID`, message `Unauthorized`. The key is read from the header
//! (the step's own, else the gateway's), then the query parameter, and removed unless
//! `propagateApiKey`. Plans are not involved: the plan already admitted the call.

use hgw_proto::v1 as pb;
use http::{HeaderName, StatusCode};

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, invalid};
use crate::http::query::query_pairs;

/// Gravitee's default header and query parameter for API keys (plans use them too).
pub const DEFAULT_API_KEY_HEADER: &str = "x-gravitee-api-key";
pub const DEFAULT_API_KEY_QUERY_PARAM: &str = "api-key";

/// Who knows the API's keys (the API's security tables).
pub trait ApiKeys: Send + Sync {
    /// Whether `key` is a key of this API that admits a request at `now_ms`.
    fn admits(&self, key: &str, now_ms: i64) -> bool;
}

#[derive(Debug)]
pub struct ApiKeyStep {
    header: HeaderName,
    query_param: String,
    propagate: bool,
}

impl ApiKeyStep {
    pub fn compile(config: pb::ApiKeySecurity) -> Result<ApiKeyStep, PolicyError> {
        let header_text = match config.header.trim() {
            "" => DEFAULT_API_KEY_HEADER,
            header => header,
        };
        let header = HeaderName::from_bytes(header_text.as_bytes())
            .map_err(|_| invalid("api-key.apiKeyHeader", format!("`{header_text}` is not a header name")))?;
        let query_param = match config.query_param.trim() {
            "" => DEFAULT_API_KEY_QUERY_PARAM.to_owned(),
            param => param.to_owned(),
        };
        Ok(ApiKeyStep { header, query_param, propagate: config.propagate_api_key })
    }

    fn find(&self, parts: &http::request::Parts) -> Option<String> {
        if let Some(value) = parts.headers.get(&self.header).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
            return Some(value.to_owned());
        }
        query_pairs(parts.uri.query()?)
            .find(|(name, value)| *name == self.query_param && !value.is_empty())
            .map(|(_, v)| v)
    }
}

fn unauthorized(key: &'static str) -> Outcome {
    Outcome::Respond(Reply::error(StatusCode::UNAUTHORIZED, Some(key), "Unauthorized"))
}

impl Policy for ApiKeyStep {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let Some(key) = self.find(exchange.parts) else {
            return unauthorized("API_KEY_MISSING");
        };
        if !exchange.api_keys.is_some_and(|keys| keys.admits(&key, exchange.now_ms)) {
            return unauthorized("API_KEY_INVALID");
        }
        if !self.propagate {
            exchange.parts.headers.remove(&self.header);
            crate::http::query::strip_query_param(exchange.parts, &self.query_param);
        }
        Outcome::Continue
    }
}
