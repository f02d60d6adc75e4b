//! JSON Schemas as the json-validation policy reads them (draft 4, formats checked, `$schema` ignored,
//! no remote references: the options of `dataplane/src/policies/json_validation.rs::compile_schema`),
//! then a document validated against the schema. The input is the schema, a NUL byte, then the document.
//! Any panic, stack overflow (a schema referring to itself) or runaway allocation is a bug: a hostile
//! schema must be refused when the API is deployed, and a hostile body must only fail validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (schema, document) = text.split_once('\0').unwrap_or((text, "{}"));
    let Ok(mut schema) = serde_json::from_str::<serde_json::Value>(schema) else {
        return;
    };
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    let Ok(validator) =
        jsonschema::options().with_draft(jsonschema::Draft::Draft4).should_validate_formats(true).build(&schema)
    else {
        return;
    };
    let Ok(document) = serde_json::from_str::<serde_json::Value>(document) else {
        return;
    };
    let _ = validator.is_valid(&document);
    for error in validator.iter_errors(&document).take(64) {
        let _ = error.to_string();
    }
});
