#![no_main]
//! The org.json-compatible XML ⇄ JSON converter of the xml-json and json-xml policies (dataplane):
//! whatever a client sends gives a conversion or an error, never a panic or a runaway, and what
//! one direction produces goes through the other. The converter is one self-contained file, built
//! here from its source so this project does not pull the whole dataplane into the fuzz build.

#[path = "../../../dataplane/src/policies/orgjson.rs"]
#[allow(dead_code)]
// Formatted where it lives (rustfmt would look for its `mod tests` beside this file).
#[rustfmt::skip]
mod orgjson;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(json) = orgjson::xml_to_json(&text, 100) {
        let _ = orgjson::json_to_xml(&json, "root", 100);
    }
    if let Ok(xml) = orgjson::json_to_xml(&text, "root", 100) {
        let _ = orgjson::xml_to_json(&xml, 100);
    }
    let charset = orgjson::charset_name(Some(&text));
    let _ = orgjson::decode(data, charset.as_deref());
});
