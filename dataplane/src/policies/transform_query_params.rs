//! `transform-queryparams` (Gravitee's policy 1.9, request phase): clear all, add or replace, then
//! remove query parameters of the request sent to the endpoint.
//!
//! As Gravitee's gateway keeps them, parameters are a map from name to values in order of first
//! appearance, holding the text as the client sent it (not decoded). An added name or value is used as
//! configured (or rendered), with spaces written `%20`; a removed name is compared with the names as
//! sent. Characters a URI query cannot carry (controls, non-ASCII, `"#<>\^`{|}`) are percent-encoded
//! so the request can be sent at all.

use hgw_proto::v1 as pb;
use http::Uri;

use super::{Outcome, Policy, PolicyError, RequestExchange, Value};

#[derive(Debug)]
pub struct TransformQueryParams {
    clear_all: bool,
    add: Vec<Addition>,
    remove: Vec<String>,
}

#[derive(Debug)]
struct Addition {
    name: String,
    value: Value,
    append: bool,
}

/// A query string as Gravitee's parameter map: names in order of first appearance, each with its values
/// (`None`: the name was sent without `=`).
type Parameters = Vec<(String, Vec<Option<String>>)>;

impl TransformQueryParams {
    pub fn compile(config: pb::TransformQueryParamsPolicy) -> Result<TransformQueryParams, PolicyError> {
        let pb::TransformQueryParamsPolicy { clear_all, add, remove } = config;
        let add = add
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.name.trim().is_empty())
            .map(|(i, pb::transform_query_params_policy::Parameter { name, value, append_to_existing })| {
                Ok(Addition {
                    name: name.replace(' ', "%20"),
                    value: Value::compile(&format!("addQueryParameters[{i}].value"), value)?,
                    append: append_to_existing,
                })
            })
            .collect::<Result<_, PolicyError>>()?;
        let remove = remove.into_iter().filter(|n| !n.trim().is_empty()).collect();
        Ok(TransformQueryParams { clear_all, add, remove })
    }

    /// Applies the step to a query string (`None`: no `?`); `render` gives an addition's value, or
    /// `None` when Gravitee adds nothing (the value is null or its EL fails).
    fn apply(&self, query: Option<&str>, render: impl Fn(&Value) -> Option<String>) -> Option<String> {
        let mut parameters = if self.clear_all { Parameters::new() } else { parse(query.unwrap_or_default()) };
        for addition in &self.add {
            let Some(value) = render(&addition.value) else {
                continue;
            };
            let value = Some(value.replace(' ', "%20"));
            match parameters.iter_mut().find(|(name, _)| *name == addition.name) {
                Some((_, values)) if addition.append => values.push(value),
                Some((_, values)) => *values = vec![value],
                None => parameters.push((addition.name.clone(), vec![value])),
            }
        }
        if !self.clear_all {
            parameters.retain(|(name, _)| !self.remove.contains(name));
        }
        let mut out = String::new();
        for (name, values) in &parameters {
            for value in values {
                if !out.is_empty() {
                    out.push('&');
                }
                push_encoded(&mut out, name);
                if let Some(value) = value {
                    out.push('=');
                    push_encoded(&mut out, value);
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

fn parse(query: &str) -> Parameters {
    let mut parameters = Parameters::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match piece.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (piece, None),
        };
        match parameters.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value),
            None => parameters.push((name.to_owned(), vec![value])),
        }
    }
    parameters
}

/// `text` with the bytes a URI query cannot hold percent-encoded; everything else as it is.
fn push_encoded(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '!'..='~' if !matches!(c, '"' | '#' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}') => out.push(c),
            _ => {
                let mut buffer = [0u8; 4];
                for byte in c.encode_utf8(&mut buffer).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
}

impl Policy for TransformQueryParams {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let query = {
            let el = exchange.el();
            let render = |value: &Value| match value {
                Value::Constant(text) => Some(text.clone()),
                // Gravitee's policy skips a parameter whose value is null or whose EL fails.
                Value::Template(template) => template.render_nullable(&el).ok().flatten(),
            };
            self.apply(exchange.parts.uri.query(), render)
        };
        let path_and_query = match query {
            Some(query) => format!("{}?{query}", exchange.parts.uri.path()),
            None => exchange.parts.uri.path().to_owned(),
        };
        let mut builder = Uri::builder();
        if let Some(scheme) = exchange.parts.uri.scheme() {
            builder = builder.scheme(scheme.clone());
        }
        if let Some(authority) = exchange.parts.uri.authority() {
            builder = builder.authority(authority.clone());
        }
        // The query is made of valid characters only (see `push_encoded`), so this always builds.
        if let Ok(uri) = builder.path_and_query(path_and_query).build() {
            exchange.parts.uri = uri;
        }
        Outcome::Continue
    }

    fn uses_el(&self) -> bool {
        self.add.iter().any(|a| a.value.is_template())
    }

    fn reads_request_body(&self) -> bool {
        self.add.iter().any(|a| a.value.reads_content())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(clear_all: bool, add: &[(&str, &str, bool)], remove: &[&str]) -> TransformQueryParams {
        TransformQueryParams::compile(pb::TransformQueryParamsPolicy {
            clear_all,
            add: add
                .iter()
                .map(|(n, v, a)| pb::transform_query_params_policy::Parameter {
                    name: n.to_string(),
                    value: v.to_string(),
                    append_to_existing: *a,
                })
                .collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn constant(value: &Value) -> Option<String> {
        match value {
            Value::Constant(text) => Some(text.clone()),
            Value::Template(_) => None,
        }
    }

    #[test]
    fn add_replace_append_then_remove_in_gravitee_order() {
        let p = policy(false, &[("a", "new", false), ("b", "2", true), ("c", "x y", false)], &["d", "c"]);
        assert_eq!(p.apply(Some("a=1&b=1&d=4&a=2&keep"), constant).as_deref(), Some("a=new&b=1&b=2&keep"));
        // Added then removed by the same step: removals come last.
        assert_eq!(p.apply(None, constant).as_deref(), Some("a=new&b=2"));
        // Names with spaces are sent as %20; values too; other text is kept as sent.
        let p = policy(false, &[("my key", "a b", false)], &[]);
        assert_eq!(p.apply(Some("q=%2Fx+y"), constant).as_deref(), Some("q=%2Fx+y&my%20key=a%20b"));
    }

    #[test]
    fn clear_all_drops_every_parameter_and_ignores_removals() {
        let p = policy(true, &[("x", "1", true)], &["x"]);
        assert_eq!(p.apply(Some("x=0&y=1"), constant).as_deref(), Some("x=1"));
        assert_eq!(policy(true, &[], &[]).apply(Some("x=0"), constant), None);
    }

    #[test]
    fn blank_names_and_null_values_add_nothing_and_bad_characters_are_encoded() {
        let p = policy(false, &[(" ", "v", false), ("n", "{#request.headers['none'][0]}", false)], &[" "]);
        assert_eq!(p.apply(Some("a=1"), constant).as_deref(), Some("a=1"));
        let p = policy(false, &[("k", "é\"#{}", false)], &[]);
        assert_eq!(p.apply(None, constant).as_deref(), Some("k=%C3%A9%22%23%7B%7D"));
    }

    #[test]
    fn templates_render_and_the_uri_is_rewritten() {
        let p = policy(
            false,
            &[("from", "{#request.headers['x-a'][0]}", false), ("none", "{#request.headers['x-none'][0]}", false)],
            &["drop"],
        );
        let (mut parts, _) =
            http::Request::get("/path?drop=1&keep=2").header("x-a", "v w").body(()).unwrap().into_parts();
        super::super::with_test_exchange(&mut parts, "127.0.0.1", |exchange| {
            assert!(matches!(p.on_request(exchange), Outcome::Continue));
        });
        assert_eq!(parts.uri.to_string(), "/path?keep=2&from=v%20w");
        assert!(p.uses_el());
    }
}
