//! `dynamic-routing` (Gravitee's policy, request phase): the first rule whose regular expression
//! matches the path below the context path, as sent or percent-decoded, chooses where the request goes:
//! its URL template (reading the match as `#group[i]`/`#groupName['name']`) is rendered and left for
//! the endpoint call ([`RequestExchange::endpoint_target`]), which reads it as Gravitee's invoker does.
//! No rule matching answers 400, as Gravitee's policy does.

use hgw_proto::v1 as pb;
use http::StatusCode;
use regex::Regex;

use super::el::RegexCaptures;
use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, Value, invalid};

#[derive(Debug)]
pub struct DynamicRouting {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// Anchored at both ends: Java's `Matcher.matches()`.
    pattern: Regex,
    url: Value,
}

impl DynamicRouting {
    pub fn compile(config: pb::DynamicRoutingPolicy) -> Result<DynamicRouting, PolicyError> {
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let pattern = Regex::new(&format!("^(?:{})$", rule.pattern))
                    .map_err(|e| invalid(format!("rules[{i}].pattern"), e.to_string()))?;
                Ok(Rule { pattern, url: Value::compile(&format!("rules[{i}].url"), rule.url)? })
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(DynamicRouting { rules })
    }
}

impl Policy for DynamicRouting {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        if self.rules.is_empty() {
            return Outcome::Continue;
        }
        let original = exchange.info.path_info.as_str();
        let decoded = percent_encoding::percent_decode_str(original).decode_utf8_lossy();
        for rule in &self.rules {
            // The groups come from the path as sent when it matches, else from the decoded path.
            let Some(captures) = rule.pattern.captures(original).or_else(|| rule.pattern.captures(&decoded)) else {
                continue;
            };
            let groups = RegexCaptures::of(&rule.pattern, &captures);
            let url = rule.url.render(&exchange.el().with_captures(&groups));
            *exchange.endpoint_target = Some(url);
            return Outcome::Continue;
        }
        Outcome::Respond(Reply::error(StatusCode::BAD_REQUEST, None, "No routing rule is matching path"))
    }

    fn uses_el(&self) -> bool {
        // The path below the context path is read from the EL request info.
        true
    }
}
