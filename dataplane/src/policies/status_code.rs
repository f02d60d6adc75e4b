//! `status-code` (Gravitee's transform-status-code, response phase): the client gets another status
//! than the backend's; when several mappings name the same input, the last one wins, as in Gravitee.

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::{Policy, PolicyError, ResponseExchange, invalid};

#[derive(Debug)]
pub struct StatusCodeMap {
    /// (input, output), in the definition's order.
    mappings: Vec<(u16, StatusCode)>,
}

impl StatusCodeMap {
    pub fn compile(config: pb::StatusCodePolicy) -> Result<StatusCodeMap, PolicyError> {
        let mappings = config
            .mappings
            .into_iter()
            .map(|m| {
                let output = u16::try_from(m.output)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| invalid("statusMappings", format!("{} is not an HTTP status", m.output)))?;
                Ok((u16::try_from(m.input).unwrap_or(0), output))
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(StatusCodeMap { mappings })
    }

    fn map(&self, status: StatusCode) -> StatusCode {
        self.mappings.iter().rev().find(|(input, _)| *input == status.as_u16()).map_or(status, |(_, output)| *output)
    }
}

impl Policy for StatusCodeMap {
    fn on_response(&self, exchange: &mut ResponseExchange<'_>) {
        *exchange.status = self.map(*exchange.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_mapping_wins_and_others_pass() {
        let map = |pairs: &[(u32, u32)]| {
            StatusCodeMap::compile(pb::StatusCodePolicy {
                mappings: pairs
                    .iter()
                    .map(|&(input, output)| pb::status_code_policy::Mapping { input, output })
                    .collect(),
            })
            .unwrap()
        };
        let policy = map(&[(201, 200), (404, 200), (201, 202)]);
        assert_eq!(policy.map(StatusCode::CREATED), StatusCode::ACCEPTED);
        assert_eq!(policy.map(StatusCode::NOT_FOUND), StatusCode::OK);
        assert_eq!(policy.map(StatusCode::BAD_GATEWAY), StatusCode::BAD_GATEWAY);
        assert!(
            StatusCodeMap::compile(pb::StatusCodePolicy {
                mappings: vec![pb::status_code_policy::Mapping { input: 200, output: 1000 }]
            })
            .is_err()
        );
    }
}
