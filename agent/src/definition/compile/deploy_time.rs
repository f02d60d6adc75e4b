//! Values Gravitee evaluates once, when the API deploys: an http-proxy endpoint's `target` and
//! header values (its connector configuration evaluator, run with the deployment's template engine).
//! Only the API is known then (`#api.id`, `#api.name`); the request, the response and the execution
//! context are not. Gravitee then fails to create the endpoint's connector and leaves the endpoint
//! out (every call answers 503); hgw rejects the API instead, naming the field.

use std::cell::Cell;

use super::{CompileError, err};

/// What a deploy-time expression sees: the API, and nothing of a request (reading it is noted).
struct Deployment<'a> {
    id: &'a str,
    name: &'a str,
    /// Set when the expression read something that only exists per request.
    per_request: Cell<bool>,
}

impl Deployment<'_> {
    fn request<T>(&self) -> Option<T> {
        self.per_request.set(true);
        None
    }
}

impl hgw_el::Context for Deployment<'_> {
    fn request_path(&self) -> Option<&str> {
        self.request()
    }
    fn request_path_info(&self) -> Option<&str> {
        self.request()
    }
    fn request_method(&self) -> Option<&str> {
        self.request()
    }
    fn request_host(&self) -> Option<&str> {
        self.request()
    }
    fn remote_address(&self) -> Option<&str> {
        self.request()
    }
    fn local_address(&self) -> Option<&str> {
        self.request()
    }
    fn request_id(&self) -> Option<&str> {
        self.request()
    }
    fn transaction_id(&self) -> Option<&str> {
        self.request()
    }
    fn request_header(&self, _name: &str) -> Vec<&str> {
        self.per_request.set(true);
        Vec::new()
    }
    fn request_header_at(&self, _name: &str, _index: usize) -> Option<&str> {
        self.request()
    }
    fn query_param(&self, _name: &str) -> Vec<&str> {
        self.per_request.set(true);
        Vec::new()
    }
    fn query_param_at(&self, _name: &str, _index: usize) -> Option<&str> {
        self.request()
    }
    fn path_param(&self, _name: &str) -> Option<&str> {
        self.request()
    }
    fn attribute(&self, _name: &str) -> Option<&str> {
        self.request()
    }
    fn api_field(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(self.id),
            "name" => Some(self.name),
            _ => None,
        }
    }
    fn response_status(&self) -> Option<u16> {
        self.request()
    }
    fn response_header(&self, _name: &str) -> Vec<&str> {
        self.per_request.set(true);
        Vec::new()
    }
    fn response_header_at(&self, _name: &str, _index: usize) -> Option<&str> {
        self.request()
    }
}

/// `text` with its expressions evaluated for the API `id`/`name` (text without any is kept as is).
pub(super) fn evaluate(text: &str, at: &str, id: &str, name: &str) -> Result<String, CompileError> {
    let template = hgw_el::parse_template(text).map_err(|e| err(at, format!("EL {e}")))?;
    if template.is_constant() {
        return Ok(text.to_owned());
    }
    let deployment = Deployment { id, name, per_request: Cell::new(false) };
    let rendered = template.render(&deployment);
    if deployment.per_request.get() {
        return Err(err(
            at,
            "EL here is evaluated once, when the API deploys (as Gravitee does): only #api.id and #api.name \
             are known then, not #request, #response or #context",
        ));
    }
    rendered.map_err(|e| err(at, format!("EL {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_fields_are_known_and_requests_are_not() {
        let eval = |text: &str| evaluate(text, "h", "api-1", "Orders").map_err(|e| e.message);
        assert_eq!(eval("plain {not el}").unwrap(), "plain {not el}");
        assert_eq!(eval("{#api.id}").unwrap(), "api-1");
        assert_eq!(eval("{#api.name}-{#api.id}").unwrap(), "Orders-api-1");
        assert_eq!(eval("{#api.name == 'Orders'}").unwrap(), "true");
        for per_request in ["{#request.headers['x'][0]}", "{#request.method}", "{#context.attributes['a']}"] {
            assert!(eval(per_request).unwrap_err().contains("when the API deploys"), "{per_request}");
        }
        assert!(eval("{T(java.lang.Math).random()}").unwrap_err().starts_with("EL "));
    }
}
