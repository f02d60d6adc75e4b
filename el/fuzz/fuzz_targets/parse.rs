//! Feeds arbitrary UTF-8 to `parse` and `parse_template`; whatever parses is evaluated against a
//! small fixed request. Any panic, stack overflow or runaway allocation is a bug.
#![no_main]

use hgw_el::{Context, EmptyContext, parse, parse_template};
use libfuzzer_sys::fuzz_target;

struct Fixed;

impl Context for Fixed {
    fn request_path(&self) -> Option<&str> {
        Some("/v1/orders/42")
    }
    fn request_path_info(&self) -> Option<&str> {
        Some("/orders/42")
    }
    fn request_method(&self) -> Option<&str> {
        Some("POST")
    }
    fn request_header(&self, name: &str) -> Vec<&str> {
        match name.to_ascii_lowercase().as_str() {
            "x-foo" => vec!["bar"],
            "accept" => vec!["a", "b"],
            "x-unicode" => vec!["héllo ✓ 😀"],
            _ => Vec::new(),
        }
    }
    fn callout_status(&self) -> Option<u16> {
        Some(502)
    }
    fn callout_content(&self) -> Option<&str> {
        Some(r#"{"a":{"b":[1,"x",null,{"c":true}]},"n":1.5}"#)
    }
    fn callout_header(&self, name: &str) -> Vec<&str> {
        if name.eq_ignore_ascii_case("x-id") { vec!["7"] } else { Vec::new() }
    }
    fn query_param(&self, name: &str) -> Vec<&str> {
        if name == "q" { vec!["rust", ""] } else { Vec::new() }
    }
    fn path_param(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("42")
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        match name {
            "user" => Some("x"),
            "flag" => Some("true"),
            _ => None,
        }
    }
    fn api_field(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("api-1")
    }
    fn response_status(&self) -> Option<u16> {
        Some(404)
    }
    fn request_context_path(&self) -> Option<&str> {
        Some("/v1/")
    }
    fn regex_group(&self, index: usize) -> Option<&str> {
        ["42", ""].get(index).copied()
    }
    fn regex_named_group(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("42")
    }
    fn subscription_field(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("sub-1")
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(expr) = parse(&text) {
        let _ = expr.eval(&Fixed);
        let _ = expr.eval_bool(&Fixed);
        let _ = expr.eval_bool(&EmptyContext);
    }
    if let Ok(template) = parse_template(&text) {
        let _ = template.render(&Fixed);
        let _ = template.render(&EmptyContext);
        let _ = template.render_nullable(&Fixed);
    }
});
