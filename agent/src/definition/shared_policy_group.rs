//! Gravitee shared policy groups: a named list of steps for one phase, kept per environment and called
//! from an API's flows by a `shared-policy-group-policy` step (`configuration.sharedPolicyGroupId`).
//!
//! hgw expands the call when it compiles the API: the group's steps take the calling step's place, each
//! guarded by the calling step's condition as well as its own, so dataplanes run ordinary steps and know
//! nothing of groups. A change of any group recompiles the APIs (the store drops its compile cache).
//!
//! Gravitee's rules, kept: a group that is not deployed in the API's environment is skipped with a
//! warning (the request goes on); a group calling another group ignores that step with a warning
//! (nesting is not supported); disabled steps are left out.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::model::Step;

/// The policy id of the step that calls a group.
pub const POLICY_ID: &str = "shared-policy-group-policy";

/// One group, as Gravitee's management API deploys it (`DEPLOY_SHARED_POLICY_GROUP` payload, or the
/// files its gateway tests use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedPolicyGroup {
    pub id: String,
    #[serde(default)]
    pub cross_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub environment_id: String,
    /// `REQUEST` or `RESPONSE` for proxy APIs (message phases exist too; hgw runs none).
    pub phase: String,
    /// Read with the same lenient model as API flow steps.
    #[serde(default)]
    pub policies: Vec<Step>,
}

impl SharedPolicyGroup {
    /// Reads a group definition; the reason names the field when it is not one.
    pub fn from_value(value: &Value) -> Result<SharedPolicyGroup, String> {
        let group: SharedPolicyGroup =
            serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        if group.id.trim().is_empty() {
            return Err("id: the shared policy group has no id".into());
        }
        match group.phase.trim().to_ascii_uppercase().as_str() {
            "REQUEST" | "RESPONSE" => Ok(group),
            other => {
                Err(format!("phase: `{other}` is a phase of message APIs (hgw runs proxy APIs: REQUEST or RESPONSE)"))
            }
        }
    }

    /// Whether a JSON document looks like a shared policy group rather than an API definition.
    pub fn looks_like(value: &Value) -> bool {
        value.get("policies").is_some_and(Value::is_array)
            && value.get("phase").is_some_and(Value::is_string)
            && value.get("listeners").is_none()
            && value.get("proxy").is_none()
            && value.get("endpointGroups").is_none()
    }

    pub fn is_request_phase(&self) -> bool {
        self.phase.trim().eq_ignore_ascii_case("REQUEST")
    }
}

/// The deployed groups, by environment and id (Gravitee looks a group up with both), matched by `id`
/// or `crossId`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedPolicyGroups {
    groups: BTreeMap<(String, String), SharedPolicyGroup>,
}

impl SharedPolicyGroups {
    /// Adds `group` for its environment (`default_environment` when it names none); a later group with
    /// the same environment and id replaces an earlier one.
    pub fn insert(&mut self, group: SharedPolicyGroup, default_environment: &str) {
        let environment = match group.environment_id.trim() {
            "" => default_environment.to_owned(),
            env => env.to_owned(),
        };
        self.groups.insert((environment, group.id.trim().to_owned()), group);
    }

    pub fn get(&self, environment: &str, id: &str) -> Option<&SharedPolicyGroup> {
        let id = id.trim();
        self.groups.get(&(environment.to_owned(), id.to_owned())).or_else(|| {
            self.groups
                .iter()
                .find(|((env, _), g)| env == environment && !g.cross_id.is_empty() && g.cross_id == id)
                .map(|(_, g)| g)
        })
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The group id a calling step names.
pub fn called_group(configuration: &Value) -> Option<&str> {
    configuration.get("sharedPolicyGroupId").and_then(Value::as_str).map(str::trim).filter(|id| !id.is_empty())
}

/// The condition of a group step guarded by the calling step's: one EL template that holds only when
/// both do. Conditions are `{...}` templates; the calling one is evaluated first (`&&` short-circuits),
/// as Gravitee only enters the group when its step's condition holds.
pub fn guarded_condition(outer: &str, inner: &str) -> Result<String, String> {
    let (outer, inner) = (outer.trim(), inner.trim());
    if outer.is_empty() {
        return Ok(inner.to_owned());
    }
    if inner.is_empty() {
        return Ok(outer.to_owned());
    }
    let body = |text: &str| -> Result<String, String> {
        text.strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .map(str::to_owned)
            .ok_or_else(|| format!("`{text}` is not one `{{...}}` expression, so it cannot be combined with another"))
    };
    let combined = format!("{{({}) && ({})}}", body(outer)?, body(inner)?);
    hgw_el::parse(&combined).map(|_| combined).map_err(|e| format!("the combined condition does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_by_environment_and_cross_id() {
        let mut groups = SharedPolicyGroups::default();
        let group = |env: &str| {
            SharedPolicyGroup::from_value(&json!({
                "id": "spg", "crossId": "cross", "environmentId": env, "phase": "REQUEST",
                "policies": [{"policy": "latency", "configuration": {"time": 1}}]
            }))
            .unwrap()
        };
        groups.insert(group("dev"), "DEFAULT");
        groups.insert(group(""), "DEFAULT");
        assert!(groups.get("dev", "spg").is_some());
        assert!(groups.get("DEFAULT", "cross").is_some());
        assert!(groups.get("prod", "spg").is_none());
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn message_phases_and_missing_ids_are_refused() {
        let publish = json!({"id": "x", "phase": "PUBLISH", "policies": []});
        assert!(SharedPolicyGroup::from_value(&publish).unwrap_err().contains("message APIs"));
        let no_id = json!({"id": " ", "phase": "REQUEST", "policies": []});
        assert!(SharedPolicyGroup::from_value(&no_id).unwrap_err().starts_with("id:"));
        assert!(SharedPolicyGroup::looks_like(&json!({"phase": "REQUEST", "policies": []})));
        assert!(!SharedPolicyGroup::looks_like(&json!({"phase": "REQUEST", "policies": [], "listeners": []})));
    }

    #[test]
    fn conditions_combine_into_one_template() {
        assert_eq!(guarded_condition("", "{#a}").unwrap(), "{#a}");
        assert_eq!(guarded_condition("{#a}", "").unwrap(), "{#a}");
        assert_eq!(
            guarded_condition("{#request.headers['x'][0] == 'y'}", "{#context.attributes['a'] != null}").unwrap(),
            "{(#request.headers['x'][0] == 'y') && (#context.attributes['a'] != null)}"
        );
        assert!(guarded_condition("true", "{#a}").is_err());
    }
}
