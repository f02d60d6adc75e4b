//! The JSONPatch (RFC 6902) an admission webhook answers with: the difference between the object the API
//! server sent and the injected one.
//!
//! Objects are walked key by key; a changed array or scalar is written whole with `add` (which replaces an
//! existing member), so the patch never depends on list indexes the API server might see differently.

use serde_json::{Value, json};

/// Operations turning `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut operations = Vec::new();
    walk(before, after, &mut String::new(), &mut operations);
    operations
}

fn walk(before: &Value, after: &Value, path: &mut String, operations: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                if !new.contains_key(key) {
                    operations.push(json!({"op": "remove", "path": format!("{path}/{}", escape(key))}));
                } else if let Some(new_value) = new.get(key)
                    && new_value != old_value
                {
                    let length = path.len();
                    path.push('/');
                    path.push_str(&escape(key));
                    walk(old_value, new_value, path, operations);
                    path.truncate(length);
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    operations
                        .push(json!({"op": "add", "path": format!("{path}/{}", escape(key)), "value": new_value}));
                }
            }
        }
        _ if before == after => {}
        _ => operations.push(json!({"op": "replace", "path": path.clone(), "value": after})),
    }
}

/// JSON Pointer escaping (RFC 6901): annotation keys such as `hgw.io/inject` contain `/`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Applies operations produced by [`diff`] (add, replace, remove on object members): used by tests to
/// check that the patch reproduces the injected object.
pub fn apply(target: &mut Value, operations: &[Value]) -> Result<(), String> {
    for operation in operations {
        let op = operation["op"].as_str().ok_or("op missing")?;
        let path = operation["path"].as_str().ok_or("path missing")?;
        if path.is_empty() {
            *target = operation["value"].clone();
            continue;
        }
        let (parent, key) = path.rsplit_once('/').ok_or("path without '/'")?;
        let key = key.replace("~1", "/").replace("~0", "~");
        let parent =
            target.pointer_mut(parent).and_then(Value::as_object_mut).ok_or(format!("no object at {parent}"))?;
        match op {
            "add" | "replace" => {
                parent.insert(key, operation["value"].clone());
            }
            "remove" => {
                parent.remove(&key).ok_or(format!("nothing to remove at {path}"))?;
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_reproduces_the_change() {
        let before = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "x": 1}});
        let after = json!({
            "metadata": {"name": "p", "annotations": {"hgw.io/injected": "1"}},
            "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "b"}]},
        });
        let operations = diff(&before, &after);
        assert!(operations.iter().any(|o| o["path"] == "/metadata/annotations"));
        assert!(operations.iter().any(|o| o["op"] == "remove" && o["path"] == "/spec/x"));
        let mut patched = before.clone();
        apply(&mut patched, &operations).unwrap();
        assert_eq!(patched, after);
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn keys_with_slashes_are_escaped() {
        let before = json!({"metadata": {"annotations": {"a": "1"}}});
        let after = json!({"metadata": {"annotations": {"a": "1", "hgw.io/injected": "0.1.0"}}});
        let operations = diff(&before, &after);
        assert_eq!(
            operations,
            vec![json!({"op": "add", "path": "/metadata/annotations/hgw.io~1injected", "value": "0.1.0"})]
        );
    }
}
