//! `request-content-limit`: refuses a request whose `Content-Length` is above the limit (413), missing
//! (411) or not a number (400), with Gravitee's error keys.

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::{Outcome, Policy, Reply, RequestExchange};

#[derive(Debug)]
pub struct RequestContentLimit {
    limit: u64,
}

impl RequestContentLimit {
    pub fn compile(config: pb::RequestContentLimitPolicy) -> RequestContentLimit {
        RequestContentLimit { limit: config.limit }
    }
}

impl Policy for RequestContentLimit {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let Some(value) = exchange.parts.headers.get(http::header::CONTENT_LENGTH) else {
            return Outcome::Respond(Reply::error(
                StatusCode::LENGTH_REQUIRED,
                Some("REQUEST_CONTENT_LIMIT_LENGTH_REQUIRED"),
                format!(
                    "The request did not specify the length of its content, which is required by the requested resource (limit {} bytes).",
                    self.limit
                ),
            ));
        };
        match value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            None => {
                Outcome::Respond(Reply::error(StatusCode::BAD_REQUEST, None, "Content-length is not a valid integer."))
            }
            Some(length) if length > self.limit => Outcome::Respond(Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("REQUEST_CONTENT_LIMIT_TOO_LARGE"),
                format!(
                    "The request is larger than the server is willing or able to process ({length} > {} bytes).",
                    self.limit
                ),
            )),
            Some(_) => Outcome::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(limit: u64, content_length: Option<&str>) -> Option<(u16, Option<&'static str>)> {
        let mut builder = http::Request::builder();
        if let Some(length) = content_length {
            builder = builder.header("content-length", length);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        let policy = RequestContentLimit { limit };
        crate::policies::with_test_exchange(&mut parts, "127.0.0.1", |exchange| match policy.on_request(exchange) {
            Outcome::Continue => None,
            Outcome::Respond(reply) => Some((reply.status.as_u16(), reply.error_key)),
            Outcome::Wait(_) => panic!("request-content-limit decides at once"),
        })
    }

    #[test]
    fn limits() {
        assert_eq!(status(10, Some("10")), None, "exactly the limit passes");
        assert_eq!(status(10, Some("11")), Some((413, Some("REQUEST_CONTENT_LIMIT_TOO_LARGE"))));
        assert_eq!(status(10, None), Some((411, Some("REQUEST_CONTENT_LIMIT_LENGTH_REQUIRED"))));
        assert_eq!(status(10, Some("ten")), Some((400, None)));
        assert_eq!(status(0, Some("0")), None);
        assert_eq!(status(10, Some("99999999999999999999999")), Some((400, None)));
    }
}
