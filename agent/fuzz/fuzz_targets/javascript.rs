#![no_main]
//! The engine of the `js` and `javascript` policies (dataplane) on arbitrary scripts: whatever a
//! script does, its run ends within its time and heap limits with a state or a failure, never a panic,
//! a crash of the engine or a runaway. The engine is one file apart from the gateway, built here from
//! its source (with its prelude) so the fuzz build does not pull in the whole dataplane.

#[path = "../../../dataplane/src/policies/javascript/engine.rs"]
#[allow(dead_code)]
// Formatted where it lives (rustfmt would look for its `mod tests` beside this file).
#[rustfmt::skip]
mod engine;

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the dialect, the engine, the phase and what the script may do with the body.
    let Some((&flags, script)) = data.split_first() else {
        return;
    };
    let script = String::from_utf8_lossy(script);
    let content = flags & 2 != 0;
    let job = engine::Job {
        graal: flags & 1 != 0,
        legacy: flags & 8 != 0,
        phase: if flags & 16 != 0 { "response" } else { "request" },
        runs: Arc::new([engine::Run {
            scripts: vec![Arc::from(&*script)],
            content,
            override_content: content && flags & 4 != 0,
        }]),
        state: engine::State {
            request: engine::RequestState {
                headers: vec![("content-type".into(), "application/json".into())],
                parameters: vec![("q".into(), vec!["1".into()])],
                ..Default::default()
            },
            attributes: vec![("a".into(), "b".into())],
            content: Some(r#"{"a":[1,2,{"b":null}]}"#.into()),
            ..Default::default()
        },
        timeout: Duration::from_millis(20),
    };
    let _ = engine::execute(job);
});
