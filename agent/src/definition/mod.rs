//! Gravitee API definitions: parsed leniently (v4 and v2), validated, filtered by sharding tags and
//! compiled into the typed [`hgw_proto::v1::Api`] the dataplanes run.
//!
//! An API is all or nothing: anything hgw cannot honour yet rejects that API alone, with a reason that
//! names the field, and the rest of the set deploys. Nothing is ever half-applied.

mod compile;
pub mod model;
pub mod shared_policy_group;
mod v2;

use std::hash::{Hash, Hasher};

use hgw_proto::v1::Api;
use serde_json::Value;

use crate::tags::ShardingTags;

pub use compile::{CompileEnv, CompileError, DefinitionFiles};
pub use shared_policy_group::{SharedPolicyGroup, SharedPolicyGroups};

/// One API definition as it arrived, before parsing.
#[derive(Debug, Clone)]
pub struct ApiSource {
    /// The API id known before parsing (event property, payload id or file name).
    pub id: String,
    /// Its name when known before parsing.
    pub name: String,
    /// Where it came from (event id, file path), shown with rejections.
    pub origin: String,
    /// The definition: Gravitee sends it as a JSON string inside the event payload.
    pub definition: DefinitionText,
    pub environment_id: String,
    pub organization_id: String,
}

#[derive(Debug, Clone)]
pub enum DefinitionText {
    Json(String),
    Parsed(Value),
    /// The definition could not even be extracted (broken event payload, unreadable file): the reason.
    Invalid(String),
}

impl ApiSource {
    /// A fingerprint of everything compilation depends on, to skip recompiling unchanged APIs.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.id.hash(&mut hasher);
        self.environment_id.hash(&mut hasher);
        self.organization_id.hash(&mut hasher);
        match &self.definition {
            DefinitionText::Json(text) => text.hash(&mut hasher),
            DefinitionText::Parsed(value) => value.to_string().hash(&mut hasher),
            DefinitionText::Invalid(reason) => reason.hash(&mut hasher),
        }
        hasher.finish()
    }
}

/// What became of one API.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Deployed as this compiled API.
    Deploy(Box<Api>),
    /// Valid but not for this gateway (sharding tags, no plan left): not an error.
    Skipped { id: String, name: String, why: String },
    /// Invalid or not supported: not deployed; the reason is shown to the user.
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub id: String,
    pub name: String,
    pub origin: String,
    pub reason: String,
}

/// Parses, validates and compiles one API for a gateway with `tags` and no tenant.
pub fn compile(source: &ApiSource, tags: &ShardingTags) -> Outcome {
    compile_for_tenant(source, tags, None)
}

/// Parses, validates and compiles one API for a gateway with `tags` and `tenant` (endpoints whose
/// `tenants` do not include it are left out).
pub fn compile_for_tenant(source: &ApiSource, tags: &ShardingTags, tenant: Option<&str>) -> Outcome {
    compile_with_files(source, tags, tenant, &DefinitionFiles::disabled())
}

/// [`compile_for_tenant`], reading the files definitions name (TLS stores) only under `files`.
pub fn compile_with_files(
    source: &ApiSource,
    tags: &ShardingTags,
    tenant: Option<&str>,
    files: &DefinitionFiles,
) -> Outcome {
    compile_in(source, &CompileEnv { tags, tenant, files, shared_policy_groups: &SharedPolicyGroups::default() })
}

/// Parses, validates and compiles one API in `env` (tags, tenant, files, shared policy groups).
pub fn compile_in(source: &ApiSource, env: &CompileEnv) -> Outcome {
    let reject = |name: &str, reason: String| {
        Outcome::Rejected(Rejection {
            id: source.id.clone(),
            name: if name.is_empty() { source.name.clone() } else { name.to_owned() },
            origin: source.origin.clone(),
            reason,
        })
    };
    let mut value = match &source.definition {
        DefinitionText::Json(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) => value,
            Err(e) => return reject("", format!("the definition is not valid JSON: {e}")),
        },
        DefinitionText::Parsed(value) => value.clone(),
        DefinitionText::Invalid(reason) => return reject("", reason.clone()),
    };
    model::strip_nulls(&mut value);
    match compile::compile_value(value, source, env) {
        Ok(compile::Compiled::Deploy(mut api)) => {
            api.revision = revision(&api);
            Outcome::Deploy(api)
        }
        Ok(compile::Compiled::Skipped { name, why }) => Outcome::Skipped { id: source.id.clone(), name, why },
        Err((name, err)) => reject(&name, err.to_string()),
    }
}

/// A content hash of the compiled API (revision field empty): equal revisions mean equal behaviour, so
/// re-reading an unchanged definition never pushes an update.
pub fn revision(api: &Api) -> String {
    let mut copy = api.clone();
    copy.revision.clear();
    let bytes = prost::Message::encode_to_vec(&copy);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
