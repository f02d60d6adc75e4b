//! The versioned deployment set: what every dataplane should run.
//!
//! Config sources (Cloud Gate sync, local files) hand the store the *whole* desired set of API sources;
//! the store compiles what changed (cached by fingerprint), resolves conflicts, and publishes a new
//! immutable [`Snapshot`] on a watch channel only when the compiled set really differs. Dataplane
//! streams watch that channel and compute their own deltas.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hgw_proto::v1::{self as pb, Api};
use tokio::sync::watch;

use crate::cloudgate::{ApiKey, Subscription};
use crate::definition::{self, ApiSource, Outcome, Rejection};
use crate::jwks::JwksCache;
use crate::tags::ShardingTags;

/// One immutable state of the deployment set.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every change of `apis`. Starts at the agent's start time in epoch milliseconds,
    /// so versions keep increasing across agent restarts.
    pub version: u64,
    /// False until the config source delivered its first set: dataplanes get nothing before, so they
    /// never turn ready on an empty table by accident.
    pub initialized: bool,
    pub apis: BTreeMap<String, Arc<Api>>,
    pub rejected: BTreeMap<String, Rejection>,
    /// APIs valid but not for this gateway (sharding tags, no plan): id → why.
    pub skipped: BTreeMap<String, String>,
    pub subscriptions: usize,
    pub api_keys: usize,
    /// Set while the set is a last-good snapshot restored at start, until the config source's first
    /// set replaces it.
    pub restored: Option<Arc<Restored>>,
    /// The trace of the sync round that made this version (its span is the parent of `push` spans).
    pub origin: Option<hgw_otel::TraceParent>,
}

/// Where a restored deployment set came from (see [`crate::last_good`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// `redis` or `file`.
    pub source: &'static str,
    /// The version at the agent that wrote it.
    pub version: u64,
    /// When it was written, epoch milliseconds.
    pub written_at_ms: i64,
    /// Node id of the agent that wrote it.
    pub written_by_node: String,
}

/// The outcome of one [`ConfigStore::deploy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployReport {
    pub version: u64,
    pub changed: bool,
    pub deployed: usize,
    pub rejected: usize,
}

pub struct ConfigStore {
    tags: ShardingTags,
    /// The gateway's tenant: endpoints of other tenants are left out.
    tenant: Option<String>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// api id → (source fingerprint, outcome): unchanged sources are not recompiled.
    cache: Mutex<HashMap<String, (u64, Outcome)>>,
    /// Key sets of JWT plans using a JWKS URL.
    jwks: Option<Arc<JwksCache>>,
    /// Where API-key plans read the key (header, query parameter); empty: the dataplane's defaults.
    api_key_location: (String, String),
    /// Where definitions may name files (`--definition-files-dir`).
    files: definition::DefinitionFiles,
    /// The shared policy groups APIs may call (compiled into the APIs that call them).
    shared_policy_groups: Mutex<Arc<definition::SharedPolicyGroups>>,
}

impl ConfigStore {
    pub fn new(tags: ShardingTags) -> ConfigStore {
        let start_version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let (tx, _) = watch::channel(Arc::new(Snapshot { version: start_version, ..Snapshot::default() }));
        ConfigStore {
            tags,
            tenant: None,
            tx,
            cache: Mutex::new(HashMap::new()),
            jwks: None,
            api_key_location: Default::default(),
            files: definition::DefinitionFiles::disabled(),
            shared_policy_groups: Mutex::default(),
        }
    }

    /// Replaces the shared policy groups; when they changed, every API is compiled again at the next
    /// deploy (any of them may call a changed group). Returns whether they changed.
    pub fn set_shared_policy_groups(&self, groups: definition::SharedPolicyGroups) -> bool {
        let mut current = self.shared_policy_groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if **current == groups {
            return false;
        }
        *current = Arc::new(groups);
        drop(current);
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        true
    }

    /// Lets definitions name files under `files` (`--definition-files-dir`).
    pub fn with_definition_files(mut self, files: definition::DefinitionFiles) -> ConfigStore {
        self.files = files;
        self
    }

    /// Where API-key plans read the key (the gateway's setting, as in Gravitee).
    pub fn with_api_key_location(mut self, header: String, query_param: String) -> ConfigStore {
        self.api_key_location = (header, query_param);
        self
    }

    /// Fills JWT plans that use a JWKS URL from `jwks`.
    pub fn with_jwks(mut self, jwks: Arc<JwksCache>) -> ConfigStore {
        self.jwks = Some(jwks);
        self
    }

    /// Puts the current key sets into the deployed APIs (after a JWKS change). Only the JWKS part of
    /// each API can differ, so the current snapshot is reused rather than compiling everything again.
    pub fn redeploy(&self) {
        let Some(jwks) = &self.jwks else {
            return;
        };
        let previous = self.current();
        if !previous.initialized {
            return;
        }
        let mut apis = previous.apis.clone();
        attach_jwks(&mut apis, jwks);
        self.publish(
            &previous,
            Published {
                apis,
                rejected: previous.rejected.clone(),
                skipped: previous.skipped.clone(),
                subscriptions: previous.subscriptions,
                api_keys: previous.api_keys,
                restored: previous.restored.clone(),
                origin: None,
            },
        );
    }

    /// Publishes a restored, already compiled set (a last-good snapshot) — only while the config source
    /// has delivered nothing yet: a set from the source is always newer. Answers the version it was
    /// published as, `None` when it came too late.
    ///
    /// The version is the snapshot's own unless this agent's versions are already past it, so versions
    /// seen by dataplanes keep increasing across restarts and later syncs.
    pub fn restore(&self, apis: Vec<Api>, subscriptions: usize, api_keys: usize, restored: Restored) -> Option<u64> {
        let apis: BTreeMap<String, Arc<Api>> = apis.into_iter().map(|api| (api.id.clone(), Arc::new(api))).collect();
        let restored = Arc::new(restored);
        let mut published = None;
        self.tx.send_if_modified(|current| {
            if current.initialized {
                return false;
            }
            let version = current.version.max(restored.version);
            *current = Arc::new(Snapshot {
                version,
                initialized: true,
                apis: apis.clone(),
                rejected: BTreeMap::new(),
                skipped: BTreeMap::new(),
                subscriptions,
                api_keys,
                restored: Some(restored.clone()),
                origin: None,
            });
            published = Some(version);
            true
        });
        if let (Some(jwks), Some(_)) = (&self.jwks, published) {
            // Key sets fetched by the writing agent keep JWT plans working until fetched again here.
            for jwt in apis.values().flat_map(|api| api.plans.iter().filter_map(|p| p.jwt.as_ref())) {
                if !jwt.jwks_url.is_empty() && !jwt.jwks.is_empty() {
                    jwks.seed(&jwt.jwks_url, &jwt.jwks);
                }
            }
        }
        published
    }

    /// Compiles for a gateway of `tenant` (Gravitee's endpoint `tenants` rule).
    pub fn with_tenant(mut self, tenant: Option<String>) -> ConfigStore {
        self.tenant = tenant.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        self
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Replaces the deployment set with `sources` (the complete desired set) and the subscriptions and
    /// API keys that open their plans.
    pub fn deploy(&self, sources: Vec<ApiSource>, subscriptions: &[Subscription], keys: &[ApiKey]) -> DeployReport {
        self.deploy_traced(sources, subscriptions, keys, None)
    }

    /// [`ConfigStore::deploy`], a new version remembering `origin`, the trace of the sync that made it.
    pub fn deploy_traced(
        &self,
        sources: Vec<ApiSource>,
        subscriptions: &[Subscription],
        keys: &[ApiKey],
        origin: Option<hgw_otel::TraceParent>,
    ) -> DeployReport {
        let previous = self.current();
        let mut apis: BTreeMap<String, Arc<Api>> = BTreeMap::new();
        let mut rejected = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let mut origins: HashMap<String, String> = HashMap::new();
        {
            let groups = self.shared_policy_groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            let env = definition::CompileEnv {
                tags: &self.tags,
                tenant: self.tenant.as_deref(),
                files: &self.files,
                shared_policy_groups: &groups,
            };
            let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut seen = std::collections::HashSet::new();
            let mut cache_keys = std::collections::HashSet::new();
            for source in &sources {
                let fingerprint = source.fingerprint();
                let cache_key = if source.id.is_empty() { source.origin.clone() } else { source.id.clone() };
                cache_keys.insert(cache_key.clone());
                let outcome = match cache.get(&cache_key) {
                    Some((cached, outcome)) if *cached == fingerprint => outcome.clone(),
                    _ => {
                        let outcome = definition::compile_in(source, &env);
                        cache.insert(cache_key, (fingerprint, outcome.clone()));
                        outcome
                    }
                };
                let key = outcome_id(&outcome, source);
                if !seen.insert(key.clone()) {
                    rejected.insert(
                        format!("{key}@{}", source.origin),
                        Rejection {
                            id: key.clone(),
                            name: source.name.clone(),
                            origin: source.origin.clone(),
                            reason: format!(
                                "duplicate API id: also defined by {}",
                                origins.get(&key).map_or("another source", String::as_str)
                            ),
                        },
                    );
                    continue;
                }
                origins.insert(key.clone(), source.origin.clone());
                match outcome {
                    Outcome::Deploy(api) => {
                        apis.insert(api.id.clone(), Arc::new(*api));
                    }
                    Outcome::Skipped { id, why, .. } => {
                        skipped.insert(id, why);
                    }
                    Outcome::Rejected(rejection) => {
                        rejected.insert(rejection.id.clone(), rejection);
                    }
                }
            }
            cache.retain(|key, _| cache_keys.contains(key));
        }
        reject_path_conflicts(&mut apis, &mut rejected, &origins);
        attach_credentials(&mut apis, subscriptions, keys, &self.api_key_location);
        if let Some(jwks) = &self.jwks {
            attach_jwks(&mut apis, jwks);
        }
        self.publish(
            &previous,
            Published {
                apis,
                rejected,
                skipped,
                subscriptions: subscriptions.len(),
                api_keys: keys.len(),
                restored: None,
                origin,
            },
        )
    }

    /// Publishes a new snapshot; the version moves only when some API's revision changed.
    fn publish(&self, previous: &Snapshot, next: Published) -> DeployReport {
        let Published { apis, rejected, skipped, subscriptions, api_keys, restored, origin } = next;
        for (id, rejection) in &rejected {
            if previous.rejected.get(id) != Some(rejection) {
                tracing::warn!(api = %rejection.id, name = %rejection.name, origin = %rejection.origin, reason = %rejection.reason, "API rejected");
            }
        }
        let changed = !previous.initialized
            || previous.apis.len() != apis.len()
            || previous
                .apis
                .iter()
                .zip(apis.iter())
                .any(|((a_id, a), (b_id, b))| a_id != b_id || a.revision != b.revision);
        let version = if changed && previous.initialized { previous.version + 1 } else { previous.version };
        if changed {
            for (id, api) in &apis {
                if previous.apis.get(id).is_none_or(|old| old.revision != api.revision) {
                    tracing::info!(api = %id, name = %api.name, revision = %api.revision, version, "API deployed");
                }
            }
            for id in previous.apis.keys().filter(|id| !apis.contains_key(*id)) {
                tracing::info!(api = %id, version, "API undeployed");
            }
        }
        if let (Some(old), None) = (&previous.restored, &restored) {
            tracing::info!(
                restored_version = old.version,
                from = old.source,
                version,
                changed,
                "the first sync replaced the last-good snapshot"
            );
        }
        let report = DeployReport { version, changed, deployed: apis.len(), rejected: rejected.len() };
        self.tx.send_replace(Arc::new(Snapshot {
            version,
            initialized: true,
            apis,
            rejected,
            skipped,
            subscriptions,
            api_keys,
            restored,
            // An unchanged set keeps the trace of the round that made its version.
            origin: if changed { origin } else { previous.origin },
        }));
        report
    }
}

/// The parts of a new snapshot, before its version is known.
struct Published {
    apis: BTreeMap<String, Arc<Api>>,
    rejected: BTreeMap<String, Rejection>,
    skipped: BTreeMap<String, String>,
    subscriptions: usize,
    api_keys: usize,
    restored: Option<Arc<Restored>>,
    /// The trace of the sync round making this set (see [`Snapshot::origin`]).
    origin: Option<hgw_otel::TraceParent>,
}

fn outcome_id(outcome: &Outcome, source: &ApiSource) -> String {
    let id = match outcome {
        Outcome::Deploy(api) => &api.id,
        Outcome::Skipped { id, .. } => id,
        Outcome::Rejected(r) => &r.id,
    };
    if id.is_empty() { source.origin.clone() } else { id.clone() }
}

/// Subscription states that can still authenticate (the dataplane accepts only ACCEPTED ones, and
/// needs the others to tell "paused" from "unknown").
fn subscription_status(status: &str) -> Option<pb::SubscriptionStatus> {
    match status.to_ascii_uppercase().as_str() {
        "ACCEPTED" => Some(pb::SubscriptionStatus::Accepted),
        "PENDING" => Some(pb::SubscriptionStatus::Pending),
        "PAUSED" => Some(pb::SubscriptionStatus::Paused),
        _ => None,
    }
}

/// Gives each API with API-key or JWT plans the subscriptions to those plans and their keys, hashed (the
/// plaintext key never leaves the agent). The API's revision then covers its credentials, so a
/// revoked key reaches dataplanes like any other change.
fn attach_credentials(
    apis: &mut BTreeMap<String, Arc<Api>>,
    subscriptions: &[Subscription],
    keys: &[ApiKey],
    (key_header, key_param): &(String, String),
) {
    let mut by_api: HashMap<&str, Vec<&Subscription>> = HashMap::new();
    for subscription in subscriptions {
        by_api.entry(subscription.api.as_str()).or_default().push(subscription);
    }
    let mut keys_by_subscription: HashMap<&str, Vec<&ApiKey>> = HashMap::new();
    for key in keys {
        for subscription in key.subscription.iter().chain(key.subscriptions.iter()) {
            keys_by_subscription.entry(subscription.as_str()).or_default().push(key);
        }
    }
    for api in apis.values_mut() {
        // API-key, JWT, OAuth2 and mTLS plans authenticate against subscriptions (JWT and OAuth2: by
        // client id; mTLS: by the application's certificate).
        let key_plans: Vec<&str> = api
            .plans
            .iter()
            .filter(|p| {
                p.security == pb::SecurityType::ApiKey as i32
                    || p.security == pb::SecurityType::Jwt as i32
                    || p.security == pb::SecurityType::Oauth2 as i32
                    || p.security == pb::SecurityType::Mtls as i32
            })
            .map(|p| p.id.as_str())
            .collect();
        if key_plans.is_empty() {
            // No key exists for an API without such plans; its `api-key` steps still need to know
            // where to look for the (then always invalid) key.
            let steps = api.flows.iter().chain(api.plans.iter().flat_map(|p| p.flows.iter()));
            if steps.flat_map(|f| f.request.iter()).any(|s| matches!(s.policy, Some(pb::step::Policy::ApiKey(_)))) {
                let mut updated = (**api).clone();
                fill_api_key_steps(&mut updated, key_header, key_param);
                updated.revision = definition::revision(&updated);
                *api = Arc::new(updated);
            }
            continue;
        }
        let attached: Vec<pb::Subscription> = by_api
            .get(api.id.as_str())
            .into_iter()
            .flatten()
            .filter(|s| key_plans.contains(&s.plan.as_str()))
            .filter_map(|s| {
                Some(pb::Subscription {
                    id: s.id.clone(),
                    plan: s.plan.clone(),
                    application: s.application.clone(),
                    client_id: s.client_id.clone().unwrap_or_default(),
                    application_name: s.application_name.clone().unwrap_or_default(),
                    status: subscription_status(&s.status)? as i32,
                    starting_at_ms: s.starting_at.unwrap_or(0),
                    ending_at_ms: s.ending_at.unwrap_or(0),
                    client_certificate_sha256: s
                        .client_certificate
                        .as_deref()
                        .and_then(|certificate| {
                            let fingerprint = certificate_sha256(certificate);
                            if fingerprint.is_none() {
                                tracing::warn!(
                                    subscription = %s.id,
                                    "the subscription's clientCertificate is not a PEM certificate; mTLS requests cannot match it"
                                );
                            }
                            fingerprint
                        })
                        .unwrap_or_default(),
                })
            })
            .collect();
        let mut hashed: BTreeMap<String, pb::ApiKey> = BTreeMap::new();
        for subscription in &attached {
            for key in keys_by_subscription.get(subscription.id.as_str()).into_iter().flatten() {
                let entry = hashed.entry(key.id.clone()).or_insert_with(|| pb::ApiKey {
                    key_sha256: sha256_hex(&key.key),
                    subscriptions: Vec::new(),
                    expire_at_ms: key.expire_at.unwrap_or(0),
                    revoked: key.revoked,
                    paused: key.paused,
                });
                if !entry.subscriptions.contains(&subscription.id) {
                    entry.subscriptions.push(subscription.id.clone());
                }
            }
        }
        let mut updated = (**api).clone();
        for location in updated.plans.iter_mut().filter_map(|p| p.api_key.as_mut()) {
            location.header = key_header.clone();
            location.query_param = key_param.clone();
        }
        fill_api_key_steps(&mut updated, key_header, key_param);
        updated.subscriptions = attached;
        updated.api_keys = hashed.into_values().collect();
        updated.revision = definition::revision(&updated);
        *api = Arc::new(updated);
    }
}

/// `api-key` flow steps without a header of their own read the key where the plans do.
fn fill_api_key_steps(api: &mut pb::Api, key_header: &str, key_param: &str) {
    let flows = api.flows.iter_mut().chain(api.plans.iter_mut().flat_map(|p| p.flows.iter_mut()));
    for step in flows.flat_map(|f| f.request.iter_mut()) {
        if let Some(pb::step::Policy::ApiKey(location)) = step.policy.as_mut() {
            if location.header.is_empty() {
                location.header = key_header.to_owned();
            }
            location.query_param = key_param.to_owned();
        }
    }
}

/// Puts the cached key set into every JWT plan that uses a JWKS URL (empty until fetched: tokens are
/// refused until then, never accepted unverified).
fn attach_jwks(apis: &mut BTreeMap<String, Arc<Api>>, jwks: &JwksCache) {
    for api in apis.values_mut() {
        let uses_jwks = api.plans.iter().any(|p| p.jwt.as_ref().is_some_and(|j| !j.jwks_url.is_empty()));
        if !uses_jwks {
            continue;
        }
        let mut updated = (**api).clone();
        for plan in &mut updated.plans {
            if let Some(jwt) = plan.jwt.as_mut().filter(|j| !j.jwks_url.is_empty()) {
                jwt.jwks = jwks.get(&jwt.jwks_url).unwrap_or_default();
            }
        }
        updated.revision = definition::revision(&updated);
        *api = Arc::new(updated);
    }
}

/// The lower-case hex SHA-256 of the DER of the first certificate in Gravitee's `clientCertificate`
/// (a base64-encoded PEM, as Gravitee stores it, or the PEM itself; `None` when neither holds one).
pub fn certificate_sha256(value: &str) -> Option<String> {
    use base64::Engine;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    let value = value.trim();
    let pem = if value.starts_with("-----BEGIN") {
        value.as_bytes().to_vec()
    } else {
        let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(compact).ok()?
    };
    let der = CertificateDer::from_pem_slice(&pem).ok()?;
    let digest = Sha256::digest(der.as_ref());
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Two APIs on the same host + context path would make routing ambiguous: as Gravitee does, the second
/// one (by id order, so the choice is stable) is rejected.
fn reject_path_conflicts(
    apis: &mut BTreeMap<String, Arc<Api>>,
    rejected: &mut BTreeMap<String, Rejection>,
    origins: &HashMap<String, String>,
) {
    let mut owners: HashMap<(String, String), String> = HashMap::new();
    let mut losers = Vec::new();
    for (id, api) in apis.iter() {
        for context in &api.context_paths {
            let key = (context.host.clone(), context.path.clone());
            match owners.get(&key) {
                Some(owner) if owner != id => {
                    losers.push((
                        id.clone(),
                        format!("context path {}{} is already served by API {owner}", context.host, context.path),
                    ));
                    break;
                }
                _ => {
                    owners.insert(key, id.clone());
                }
            }
        }
    }
    for (id, reason) in losers {
        if let Some(api) = apis.remove(&id) {
            rejected.insert(
                id.clone(),
                Rejection {
                    id,
                    name: api.name.clone(),
                    origin: origins.get(&api.id).cloned().unwrap_or_default(),
                    reason,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::DefinitionText;
    use serde_json::json;

    fn source(id: &str, path: &str) -> ApiSource {
        ApiSource {
            id: id.into(),
            name: id.into(),
            origin: format!("file {id}.json"),
            definition: DefinitionText::Parsed(json!({
                "id": id, "definitionVersion": "4.0.0",
                "listeners": [{"type": "http", "paths": [{"path": path}]}],
                "endpointGroups": [{"endpoints": [{"configuration": {"target": "http://127.0.0.1:1"}}]}],
                "plans": [{"id": "p", "security": {"type": "key-less"}, "status": "published"}]
            })),
            environment_id: "DEFAULT".into(),
            organization_id: "DEFAULT".into(),
        }
    }

    #[test]
    fn versions_move_only_on_real_changes() {
        let store = ConfigStore::new(ShardingTags::default());
        let first = store.deploy(vec![source("a", "/a")], &[], &[]);
        assert!(first.changed);
        let again = store.deploy(vec![source("a", "/a")], &[], &[]);
        assert!(!again.changed);
        assert_eq!(again.version, first.version);
        let moved = store.deploy(vec![source("a", "/a2")], &[], &[]);
        assert!(moved.changed);
        assert_eq!(moved.version, first.version + 1);
        let removed = store.deploy(vec![], &[], &[]);
        assert_eq!((removed.version, removed.deployed), (first.version + 2, 0));
    }

    #[test]
    fn a_bad_api_is_rejected_alone() {
        let store = ConfigStore::new(ShardingTags::default());
        let mut bad = source("bad", "/bad");
        bad.definition = DefinitionText::Json("{not json".into());
        let report = store.deploy(vec![source("good", "/good"), bad], &[], &[]);
        assert_eq!((report.deployed, report.rejected), (1, 1));
        let snapshot = store.current();
        assert!(snapshot.apis.contains_key("good"));
        assert!(snapshot.rejected["bad"].reason.contains("not valid JSON"));
    }

    #[test]
    fn mtls_subscriptions_carry_the_certificate_fingerprint_only() {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        let expected = {
            use sha2::Digest;
            sha2::Sha256::digest(cert.der()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.pem());
        assert_eq!(certificate_sha256(&encoded).as_deref(), Some(expected.as_str()), "Gravitee's base64 PEM");
        assert_eq!(certificate_sha256(&cert.pem()).as_deref(), Some(expected.as_str()), "a plain PEM");
        assert_eq!(certificate_sha256("not a certificate"), None);

        let mut api = source("m", "/m");
        let DefinitionText::Parsed(definition) = &mut api.definition else { unreachable!() };
        definition["plans"] = json!([{"id": "p", "security": {"type": "MTLS"}, "status": "published"}]);
        let subscription = |id: &str, certificate: Option<String>| Subscription {
            id: id.into(),
            api: "m".into(),
            plan: "p".into(),
            application: format!("app-{id}"),
            status: "ACCEPTED".into(),
            client_certificate: certificate,
            ..Subscription::default()
        };
        let store = ConfigStore::new(ShardingTags::default());
        let report =
            store.deploy(vec![api], &[subscription("a", Some(encoded)), subscription("b", Some("junk".into()))], &[]);
        assert_eq!(report.deployed, 1);
        let snapshot = store.current();
        let deployed = &snapshot.apis["m"];
        assert_eq!(deployed.plans[0].security, pb::SecurityType::Mtls as i32);
        let by_id: HashMap<&str, &str> =
            deployed.subscriptions.iter().map(|s| (s.id.as_str(), s.client_certificate_sha256.as_str())).collect();
        assert_eq!(by_id, HashMap::from([("a", expected.as_str()), ("b", "")]));
    }

    #[test]
    fn conflicting_paths_and_duplicate_ids_are_rejected() {
        let store = ConfigStore::new(ShardingTags::default());
        let mut dup = source("a", "/other");
        dup.origin = "file copy.json".into();
        let report = store.deploy(vec![source("a", "/x"), source("b", "/x"), dup], &[], &[]);
        assert_eq!(report.deployed, 1);
        let snapshot = store.current();
        assert!(snapshot.rejected["b"].reason.contains("already served by API a"));
        assert!(snapshot.rejected.values().any(|r| r.reason.starts_with("duplicate API id")));
    }
}
