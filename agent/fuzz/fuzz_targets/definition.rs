//! Feeds arbitrary text to the Gravitee definition compiler, directly (a definition file) and
//! wrapped the way the Cloud Gate sends it (an event whose payload holds the definition as a JSON
//! string). Any panic, stack overflow or runaway allocation is a bug: bad input must become a
//! rejection with a reason.
#![no_main]

use hgw_agent::cloudgate::Event;
use hgw_agent::definition::{ApiSource, DefinitionText, compile};
use hgw_agent::sync::{ApiChange, decode_api_event};
use hgw_agent::tags::ShardingTags;
use libfuzzer_sys::fuzz_target;

/// The agent's default `--max-definition-bytes` (8 MiB).
const MAX_DEFINITION_BYTES: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tags = ShardingTags::parse(&["internal".to_owned(), "!private".to_owned()]).expect("valid tags");
    let source = ApiSource {
        id: String::new(),
        name: String::new(),
        origin: "fuzz".into(),
        definition: DefinitionText::Json(text.to_owned()),
        environment_id: "DEFAULT".into(),
        organization_id: "DEFAULT".into(),
    };
    let _ = compile(&source, &ShardingTags::default());
    let _ = compile(&source, &tags);

    let payload =
        serde_json::json!({"id": "fuzz", "name": "fuzz", "lifecycleState": "STARTED", "definition": text}).to_string();
    let event = Event { id: "e".into(), event_type: "PUBLISH_API".into(), payload: Some(payload), ..Event::default() };
    if let (_, ApiChange::Deploy(source)) = decode_api_event(&event, "fuzz", "DEFAULT", "DEFAULT", MAX_DEFINITION_BYTES)
    {
        let _ = compile(&source, &ShardingTags::default());
    }
    let raw =
        Event { id: "e".into(), event_type: "PUBLISH_API".into(), payload: Some(text.to_owned()), ..Event::default() };
    if let (_, ApiChange::Deploy(source)) = decode_api_event(&raw, "fuzz", "DEFAULT", "DEFAULT", MAX_DEFINITION_BYTES) {
        let _ = compile(&source, &ShardingTags::default());
    }
});
