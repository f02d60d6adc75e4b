//! `policy-assign-attributes`: sets request context attributes that later policies (and EL) read.

use hgw_proto::v1 as pb;

use super::{Outcome, Policy, PolicyError, RequestExchange, Value, invalid};

#[derive(Debug)]
pub struct AssignAttributes {
    attributes: Vec<(String, Value)>,
}

impl AssignAttributes {
    pub fn compile(config: pb::AssignAttributesPolicy) -> Result<AssignAttributes, PolicyError> {
        let mut attributes = Vec::with_capacity(config.attributes.len());
        for (i, pb::Header { name, value }) in config.attributes.into_iter().enumerate() {
            if name.trim().is_empty() {
                return Err(invalid(format!("policy-assign-attributes.attributes[{i}].name"), "must not be empty"));
            }
            let value = Value::compile(&format!("policy-assign-attributes.attributes[{i}].value"), value)?;
            attributes.push((name.trim().to_owned(), value));
        }
        Ok(AssignAttributes { attributes })
    }
}

impl Policy for AssignAttributes {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        for (name, value) in &self.attributes {
            // Each value sees the attributes set before it, as in Gravitee.
            let value = value.render(&exchange.el());
            match exchange.attributes.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = value,
                None => exchange.attributes.push((name.clone(), value)),
            }
        }
        Outcome::Continue
    }

    fn uses_el(&self) -> bool {
        self.attributes.iter().any(|(_, v)| v.is_template())
    }

    fn reads_request_body(&self) -> bool {
        self.attributes.iter().any(|(_, v)| v.reads_content())
    }
}
