//! `--data DIR`: APIs published at start from Gravitee local registry files
//! (`{"apiEvent": Event, "subscriptions": [..], "apiKeys": [..]}`) or plain API definitions, so the
//! same files can feed both the sim and an agent's `--local-apis`.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::state::{ApiSpec, Event, Lifecycle, STOP_API, Store, UNPUBLISH_API};

/// Loads every `*.json` file of `dir` (sorted by name, so event order is reproducible); answers the
/// number of APIs published. A file the sim cannot read is a mistake in the test: fail loudly.
pub fn load_dir(store: &mut Store, dir: &Path) -> anyhow::Result<usize> {
    let mut files = std::fs::read_dir(dir)
        .with_context(|| format!("reading data dir {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json") && p.is_file());
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
        load_value(store, value).with_context(|| format!("loading {}", file.display()))?;
    }
    Ok(files.len())
}

/// Loads one registry document or plain definition.
pub fn load_value(store: &mut Store, value: Value) -> anyhow::Result<()> {
    let Some(event) = value.get("apiEvent") else {
        let spec = ApiSpec::from_definition(&value).map_err(|e| anyhow!(e))?;
        store.publish_api(spec);
        return Ok(());
    };
    let event: Event = serde_json::from_value(event.clone()).context("apiEvent is not an Event")?;
    let payload: Value = serde_json::from_str(&event.payload).context("apiEvent.payload is not a JSON string")?;
    let definition = match payload.get("definition") {
        Some(Value::String(raw)) => raw.clone(),
        Some(obj @ Value::Object(_)) => obj.to_string(),
        _ => bail!("apiEvent.payload.definition is missing"),
    };
    let parsed: Option<Value> = serde_json::from_str(&definition).ok();
    let mut spec = match parsed.as_ref().map(ApiSpec::from_definition) {
        Some(Ok(spec)) => spec,
        // A malformed definition is loaded as-is (clients must reject it); the id comes from the event.
        _ => {
            let id = text(&payload, "id")
                .or_else(|| event.properties.get("api_id").cloned())
                .context("apiEvent names no API id")?;
            let mut spec = ApiSpec::from_definition(&serde_json::json!({ "id": id })).map_err(|e| anyhow!(e))?;
            spec.definition = definition.clone();
            spec
        }
    };
    if let Some(name) = text(&payload, "name") {
        spec.name = name;
    }
    if let Some(version) = text(&payload, "definitionVersion") {
        spec.definition_version = version;
    }
    if let Some(kind) = text(&payload, "type") {
        spec.api_type = kind;
    }
    if let Some(state) = text(&payload, "lifecycleState") {
        spec.lifecycle_state = state;
    }
    spec.environment_id = text(&payload, "environmentId")
        .or_else(|| event.environments.first().cloned())
        .unwrap_or_else(|| "DEFAULT".into());
    spec.organization_id = event.organizations.first().cloned().unwrap_or_else(|| "DEFAULT".into());
    let id = spec.id.clone();
    store.publish_api(spec);
    match event.kind.as_str() {
        STOP_API => {
            store.change_lifecycle(&id, Lifecycle::Stop);
        }
        UNPUBLISH_API => {
            store.change_lifecycle(&id, Lifecycle::Unpublish);
        }
        _ => {}
    }
    for (field, put) in [
        ("subscriptions", Store::put_subscription as fn(&mut Store, Value) -> Result<Value, String>),
        ("apiKeys", Store::put_key),
    ] {
        let items = match value.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => bail!("`{field}` must be an array"),
        };
        for item in items {
            put(store, item.clone()).map_err(|e| anyhow!("{field}: {e}"))?;
        }
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn registry_file_and_plain_definition_load() {
        let mut store = Store::default();
        let def = json!({"id": "r", "name": "R", "definitionVersion": "4.0.0"});
        let payload = json!({"id": "r", "name": "R", "lifecycleState": "STARTED",
            "environmentId": "env1", "definition": def.to_string()});
        let registry = json!({
            "apiEvent": {"id": "e1", "type": "PUBLISH_API", "payload": payload.to_string(),
                "parentId": null, "properties": {"api_id": "r"}, "environments": ["env1"],
                "organizations": ["org1"], "createdAt": 1, "updatedAt": 1},
            "subscriptions": [{"id": "s1", "api": "r", "status": "ACCEPTED"}],
            "apiKeys": [{"id": "k1", "key": "secret", "subscription": "s1"}]
        });
        load_value(&mut store, registry).unwrap();
        load_value(&mut store, json!({"id": "plain", "gravitee": "2.0.0"})).unwrap();
        let events: Vec<_> = store.latest_events().cloned().collect();
        assert_eq!(events.len(), 2);
        let r = events.iter().find(|e| e.properties["api_id"] == "r").unwrap();
        assert_eq!(r.environments, vec!["env1"]);
        assert_eq!(r.organizations, vec!["org1"]);
        assert_eq!(store.find_keys(&Default::default()).len(), 1);
        assert!(load_value(&mut store, json!({"name": "no id"})).is_err());
    }
}
