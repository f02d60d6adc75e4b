//! JOLT specifications (json-to-json) as hgw reads them: arbitrary text parsed as a chain and, when it
//! is one, run over a fixed JSON document. Any panic, stack overflow or runaway allocation is a bug
//! (the dataplane also guards each transformation, but a specification must not need that).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = serde_json::from_str::<harmony_jolt::TransformSpec>(text) else {
        return;
    };
    let input = serde_json::json!({
        "id": 7, "name": "n", "tags": ["a", "b", {"c": [1, 2]}], "nested": {"x": {"y": null, "z": true}}, "n": 1.5
    });
    let _ = harmony_jolt::transform(input, &spec);
});
