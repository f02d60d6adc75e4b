//! Feeds arbitrary UTF-8 to the FreeMarker subset's parser; whatever parses is rendered against a
//! small fixed data model (with JSON content for `?eval`). Any panic, stack overflow or runaway
//! allocation or loop is a bug: renders are bounded by design.
#![no_main]

use hgw_el::freemarker::{Hash, Value, parse};
use libfuzzer_sys::fuzz_target;

fn model() -> Hash {
    let headers = Hash {
        entries: vec![("X-Foo".into(), Value::Seq(vec![Value::Str("bar".into()), Value::Str("baz".into())]))],
        case_insensitive: true,
    };
    Hash::new(vec![
        (
            "request".into(),
            Value::Hash(Hash::new(vec![
                ("headers".into(), Value::Hash(headers)),
                ("content".into(), Value::Str(r#"{"a":[1,2,{"b":"c"}],"n":1234.5,"t":true}"#.into())),
                ("method".into(), Value::Str("POST".into())),
            ])),
        ),
        ("context".into(), Value::Hash(Hash::new(vec![("attributes".into(), Value::Hash(Hash::default()))]))),
    ])
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = parse(text) {
        let _ = template.render(&model());
    }
});
