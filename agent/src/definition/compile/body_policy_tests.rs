//! Compiling the body and request-rewriting policies: transform-queryparams, json-validation,
//! resource-filtering, xml-json, json-xml.

use serde_json::{Value, json};

use super::super::{ApiSource, DefinitionText, Outcome, compile};
use crate::tags::ShardingTags;
use hgw_proto::v1 as pb;

fn v4_with(request: Value, response: Value) -> Value {
    json!({
        "id": "a", "name": "API a", "definitionVersion": "4.0.0", "type": "proxy",
        "listeners": [{"type": "http", "paths": [{"path": "/a"}], "entrypoints": [{"type": "http-proxy"}]}],
        "endpointGroups": [{"name": "default-group", "type": "http-proxy",
            "endpoints": [{"name": "e1", "type": "http-proxy", "configuration": {"target": "http://b:1"}}]}],
        "plans": [{"id": "p1", "name": "Keyless", "security": {"type": "KEY_LESS"}, "status": "PUBLISHED"}],
        "flows": [{"name": "all", "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
            "request": request, "response": response}]
    })
}

fn compiled(definition: Value) -> Result<pb::Api, String> {
    let source = ApiSource {
        id: "a".into(),
        name: String::new(),
        origin: "test".into(),
        definition: DefinitionText::Json(definition.to_string()),
        environment_id: "DEFAULT".into(),
        organization_id: "DEFAULT".into(),
    };
    match compile(&source, &ShardingTags::default()) {
        Outcome::Deploy(api) => Ok(*api),
        Outcome::Rejected(r) => Err(r.reason),
        other => panic!("unexpected {other:?}"),
    }
}

fn step(policy: &str, configuration: Value) -> Value {
    json!({"policy": policy, "configuration": configuration})
}

#[test]
fn transform_queryparams_reads_gravitee_configuration() {
    let api = compiled(v4_with(
        json!([step(
            "transform-queryparams",
            json!({
            "clearAll": false,
            "addQueryParameters": [
                {"name": "a", "value": "{#request.headers['x'][0]}", "appendToExistingArray": true},
                {"name": " ", "value": "blank name: skipped"},
                {"name": "no-value"},
                {"name": "b", "value": "2"}],
            "removeQueryParameters": ["c", ""]})
        )]),
        json!([]),
    ))
    .unwrap();
    let Some(pb::step::Policy::TransformQueryParams(p)) = &api.flows[0].request[0].policy else { panic!() };
    assert_eq!(p.add.len(), 2);
    assert!(p.add[0].append_to_existing);
    assert_eq!((p.add[1].name.as_str(), p.add[1].value.as_str()), ("b", "2"));
    assert_eq!(p.remove, vec!["c"]);

    let bad = |configuration: Value| {
        compiled(v4_with(json!([step("transform-queryparams", configuration)]), json!([]))).unwrap_err()
    };
    assert!(bad(json!({"clearAll": "yes"})).starts_with("flows[0].request[0].configuration.clearAll"));
    assert!(
        bad(json!({"addQueryParameters": [{"name": "a", "value": "{#nope("}]}))
            .starts_with("flows[0].request[0].configuration.addQueryParameters[0].value: EL")
    );
    assert!(bad(json!({"removeQueryParameters": [1]})).contains("removeQueryParameters[0]"));
    let response_phase = compiled(v4_with(json!([]), json!([step("transform-queryparams", json!({}))]))).unwrap_err();
    assert!(response_phase.contains("runs in the request phase only"), "{response_phase}");
}

#[test]
fn json_validation_checks_the_schema_and_skips_a_step_without_one() {
    let schema = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#;
    let api = compiled(v4_with(
        json!([
            step("json-validation", json!({"schema": schema, "errorMessage": "{#request.method}"})),
            step("json-validation", json!({"errorMessage": "no schema: skipped"}))
        ]),
        json!([step(
            "json-validation",
            json!({"scope": "REQUEST_CONTENT", "schema": "{}", "straightRespondMode": true})
        )]),
    ))
    .unwrap();
    assert_eq!(api.flows[0].request.len(), 1);
    let Some(pb::step::Policy::JsonValidation(p)) = &api.flows[0].response[0].policy else { panic!() };
    assert!(p.straight_respond_mode, "v4 ignores scope");

    for (schema, reason) in [("{", "not JSON"), (r#"{"minLength": -1}"#, "draft 4")] {
        let error =
            compiled(v4_with(json!([step("json-validation", json!({"schema": schema}))]), json!([]))).unwrap_err();
        assert!(error.starts_with("flows[0].request[0].configuration.schema: ") && error.contains(reason), "{error}");
    }
}

#[test]
fn json_validation_on_v2_runs_in_its_content_scope() {
    let step_with =
        |scope: Value| json!({"policy": "json-validation", "configuration": {"schema": "{}", "scope": scope}});
    let v2 = json!({
        "id": "a", "name": "a", "gravitee": "2.0.0",
        "proxy": {"virtual_hosts": [{"path": "/a"}], "groups": [{"name": "g", "endpoints": [{"name": "e", "target": "http://b:1"}]}]},
        "plans": [{"id": "p", "name": "k", "security": "KEY_LESS", "status": "PUBLISHED"}],
        "flows": [{"path-operator": {"path": "/", "operator": "STARTS_WITH"},
            "pre": [step_with(Value::Null), step_with(json!("RESPONSE_CONTENT"))],
            "post": [step_with(Value::Null), step_with(json!("RESPONSE_CONTENT")), step_with(json!("REQUEST_CONTENT"))]}]
    });
    let api = compiled(v2).unwrap();
    assert_eq!((api.flows[0].request.len(), api.flows[0].response.len()), (1, 1));
}

#[test]
fn resource_filtering_reads_lists_and_refuses_unknown_methods() {
    let api = compiled(v4_with(
        json!([step(
            "resource-filtering",
            json!({
            "whitelist": [{"pattern": "/api/**", "methods": ["get", "POST"]}, {"methods": ["PUT"]}],
            "blacklist": [{"pattern": "**/admin/**"}]})
        )]),
        json!([]),
    ))
    .unwrap();
    let Some(pb::step::Policy::ResourceFiltering(p)) = &api.flows[0].request[0].policy else { panic!() };
    assert_eq!(p.whitelist[0].methods, vec!["GET", "POST"]);
    assert_eq!(p.whitelist[1].pattern, "");
    assert_eq!(p.blacklist[0].pattern, "**/admin/**");
    let error = compiled(v4_with(
        json!([step("resource-filtering", json!({"blacklist": [{"pattern": "/", "methods": ["FETCH"]}]}))]),
        json!([]),
    ))
    .unwrap_err();
    assert!(error.starts_with("flows[0].request[0].configuration.blacklist[0].methods[0]"), "{error}");
}
