//! `mock`: the gateway answers with a fixed status, headers and content; no endpoint is called.

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, header, invalid};

#[derive(Debug)]
pub struct Mock {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Constant content is kept as bytes, shared by every response.
    content: Bytes,
    template: Option<Value>,
}

impl Mock {
    pub fn compile(config: pb::MockPolicy) -> Result<Mock, PolicyError> {
        let pb::MockPolicy { status, headers, content } = config;
        // proto3 zero is "unset": Gravitee's mock answers 200 by default.
        let status = if status == 0 {
            StatusCode::OK
        } else {
            u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| invalid("mock.status", format!("{status} is not an HTTP status")))?
        };
        let headers = headers
            .into_iter()
            .enumerate()
            .map(|(i, h)| header(&format!("mock.headers[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()?;
        let value = Value::compile("mock.content", content.clone())?;
        let template = value.is_template().then_some(value);
        Ok(Mock { status, headers, content: Bytes::from(content), template })
    }
}

impl Policy for Mock {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let body = match &self.template {
            Some(template) => Bytes::from(template.render(&exchange.el())),
            None => self.content.clone(),
        };
        Outcome::Respond(Reply {
            status: self.status,
            headers: self.headers.clone(),
            body,
            error_key: None,
            error_message: None,
        })
    }

    fn uses_el(&self) -> bool {
        self.template.is_some()
    }
}
