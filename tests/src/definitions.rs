//! Gravitee API definitions for tests, in the shapes GRAVITEE-FORMATS.md describes, so scenarios
//! start from what the Cloud Gate would really send and tweak only what they test.

use serde_json::{Value, json};

/// A v4 HTTP proxy API: one listener path, one endpoint group with one `http-proxy` endpoint
/// targeting `target`, one published key-less plan (`{id}-keyless`), no flows, analytics on.
pub fn v4_api(id: &str, context_path: &str, target: &str) -> Value {
    json!({
        "id": id,
        "name": id,
        "apiVersion": "1.0",
        "definitionVersion": "4.0.0",
        "type": "proxy",
        "tags": [],
        "properties": [],
        "resources": [],
        "listeners": [{
            "type": "http",
            "paths": [{"path": context_path}],
            "entrypoints": [{"type": "http-proxy"}]
        }],
        "endpointGroups": [{
            "name": "default-group",
            "type": "http-proxy",
            "loadBalancer": {"type": "round-robin"},
            "endpoints": [{
                "name": "default",
                "type": "http-proxy",
                "weight": 1,
                "inheritConfiguration": true,
                "configuration": {"target": target}
            }]
        }],
        "plans": [{
            "id": format!("{id}-keyless"),
            "name": "Default keyless plan",
            "security": {"type": "key-less"},
            "status": "published",
            "mode": "standard"
        }],
        "flows": [],
        "analytics": {"enabled": true}
    })
}

/// The same API in v2 format (`gravitee: "2.0.0"`): `proxy.virtual_hosts`, one endpoint group, one
/// published `KEY_LESS` plan (`{id}-keyless`).
pub fn v2_api(id: &str, context_path: &str, target: &str) -> Value {
    json!({
        "id": id,
        "name": id,
        "version": "1.0",
        "gravitee": "2.0.0",
        "flow_mode": "DEFAULT",
        "proxy": {
            "virtual_hosts": [{"path": context_path}],
            "strip_context_path": false,
            "preserve_host": false,
            "groups": [{
                "name": "default-group",
                "endpoints": [{
                    "name": "default",
                    "target": target,
                    "weight": 1,
                    "backup": false,
                    "type": "http",
                    "inherit": true
                }],
                "load_balancing": {"type": "ROUND_ROBIN"}
            }]
        },
        "flows": [],
        "plans": [{
            "id": format!("{id}-keyless"),
            "name": "Default keyless plan",
            "security": "KEY_LESS",
            "securityDefinition": "{}",
            "status": "PUBLISHED",
            "tags": [],
            "flows": []
        }],
        "properties": [],
        "resources": [],
        "tags": []
    })
}

/// A flow step running `policy` with `configuration` (v4 and v2 alike).
pub fn step(policy: &str, configuration: Value) -> Value {
    json!({"name": policy, "policy": policy, "enabled": true, "configuration": configuration})
}

/// A v4 flow on requests whose path starts with `path`, with its request and response steps.
pub fn flow(path: &str, request: Value, response: Value) -> Value {
    json!({"name": path, "enabled": true, "selectors": [{"type": "http", "path": path, "pathOperator": "STARTS_WITH"}],
           "request": request, "response": response})
}

/// A v2 flow (`pre`/`post`) on requests whose path starts with `path`.
pub fn v2_flow(path: &str, pre: Value, post: Value) -> Value {
    json!({"name": path, "enabled": true, "path-operator": {"path": path, "operator": "STARTS_WITH"},
           "methods": [], "pre": pre, "post": post})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let v4 = v4_api("a", "/a", "http://127.0.0.1:1");
        assert_eq!(v4["listeners"][0]["paths"][0]["path"], "/a");
        assert_eq!(v4["endpointGroups"][0]["endpoints"][0]["configuration"]["target"], "http://127.0.0.1:1");
        assert_eq!(v4["plans"][0]["id"], "a-keyless");
        let v2 = v2_api("b", "/b", "http://127.0.0.1:2");
        assert_eq!(v2["gravitee"], "2.0.0");
        assert_eq!(v2["proxy"]["virtual_hosts"][0]["path"], "/b");
        assert_eq!(v2["proxy"]["groups"][0]["endpoints"][0]["target"], "http://127.0.0.1:2");
    }
}
