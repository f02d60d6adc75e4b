//! Local mode: API definitions from a folder, no cloud.
//!
//! Reads every `*.json` file: Gravitee's local registry files (`{"apiEvent", "subscriptions", "apiKeys"}`,
//! as DB-less Gravitee gateways use), plain API definitions (v4 or v2), or shared policy groups
//! (`{"id", "environmentId", "phase", "policies"}`, as Gravitee's management API deploys them). The folder is polled; any
//! change (file added, removed, modified) reloads the whole set, and an unreadable or broken file is
//! rejected alone, like a broken API from the cloud. So is a file larger than `--max-definition-bytes`,
//! or one that is not a regular file (a symlink to a device): neither is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cloudgate::{ApiKey, Event, Subscription};
use crate::definition::{ApiSource, DefinitionText, SharedPolicyGroup, SharedPolicyGroups};
use crate::metrics::Metrics;
use crate::store::ConfigStore;
use crate::sync::{ApiChange, SyncStatus, decode_api_event, now_ms};

/// How often the folder is checked for changes: quick enough for editing by hand.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Environment and organization of local APIs (Gravitee's defaults).
const LOCAL_ENVIRONMENT: &str = "DEFAULT";
const LOCAL_ORGANIZATION: &str = "DEFAULT";

pub struct LocalSource {
    pub dir: PathBuf,
    pub store: Arc<ConfigStore>,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    /// `--max-definition-bytes`: larger files are rejected unread.
    pub max_definition_bytes: u64,
}

/// Name, modification time and size of every candidate file: a change in any reloads the folder.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

impl LocalSource {
    pub async fn run(self, cancel: CancellationToken) {
        let mut last: Option<Fingerprint> = None;
        loop {
            match fingerprint(&self.dir) {
                Ok(current) => {
                    if last.as_ref() != Some(&current) {
                        let loaded = load_dir(&self.dir, &current, self.max_definition_bytes);
                        if self.store.set_shared_policy_groups(loaded.shared_policy_groups) {
                            tracing::info!(dir = %self.dir.display(), "shared policy groups changed: every API is compiled again");
                        }
                        let report = self.store.deploy(loaded.sources, &loaded.subscriptions, &loaded.keys);
                        tracing::info!(dir = %self.dir.display(), version = report.version, deployed = report.deployed, rejected = report.rejected, "local API definitions loaded");
                        self.metrics.sync_ok.inc();
                        last = Some(current);
                    }
                    self.status.succeeded(now_ms() + POLL_INTERVAL.as_millis() as i64);
                }
                Err(e) => {
                    self.metrics.sync_errors.inc();
                    let message = format!("cannot read {}: {e}", self.dir.display());
                    tracing::warn!(error = %message, "local API folder unreadable; serving the last good config");
                    self.status.failed(message, now_ms() + POLL_INTERVAL.as_millis() as i64);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let meta = std::fs::metadata(&path).ok();
        files.push((path, meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len())));
    }
    files.sort();
    Ok(files)
}

#[derive(Default)]
pub struct Loaded {
    pub sources: Vec<ApiSource>,
    pub subscriptions: Vec<Subscription>,
    pub keys: Vec<ApiKey>,
    pub shared_policy_groups: SharedPolicyGroups,
}

fn load_dir(_dir: &Path, files: &Fingerprint, max_bytes: u64) -> Loaded {
    let mut loaded = Loaded::default();
    for (path, _, _) in files {
        load_file(path, &mut loaded, max_bytes);
    }
    loaded
}

/// Reads a definition file of at most `max_bytes`, refusing anything else before reading it: opened
/// without blocking (a FIFO), checked with fstat on the opened file, read with a bound (a file growing
/// meanwhile).
fn read_definition(path: &Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let too_large = |bytes: u64| format!("the file is {bytes} bytes, more than --max-definition-bytes ({max_bytes})");
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "cannot read the file: not UTF-8 text".into())
}

/// Reads one file into `loaded`; problems become rejected sources named after the file.
pub fn load_file(path: &Path, loaded: &mut Loaded, max_bytes: u64) {
    let origin = format!("file {}", path.display());
    let file_id = || path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let invalid = |reason: String| ApiSource {
        id: file_id(),
        name: String::new(),
        origin: origin.clone(),
        definition: DefinitionText::Invalid(reason),
        environment_id: LOCAL_ENVIRONMENT.into(),
        organization_id: LOCAL_ORGANIZATION.into(),
    };
    let text = match read_definition(path, max_bytes) {
        Ok(text) => text,
        Err(reason) => return loaded.sources.push(invalid(reason)),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => return loaded.sources.push(invalid(format!("the file is not valid JSON: {e}"))),
    };
    if let Some(event) = value.get("apiEvent") {
        let event: Event = match serde_json::from_value(event.clone()) {
            Ok(event) => event,
            Err(e) => return loaded.sources.push(invalid(format!("`apiEvent` is not a Gravitee event: {e}"))),
        };
        match decode_api_event(&event, &origin, LOCAL_ENVIRONMENT, LOCAL_ORGANIZATION, max_bytes).1 {
            ApiChange::Deploy(source) => loaded.sources.push(source),
            ApiChange::Undeploy { api_id } => {
                tracing::debug!(api = %api_id, %origin, "registry file holds a stopped API")
            }
            ApiChange::Ignore => {
                loaded.sources.push(invalid(format!("`apiEvent` has type `{}`, not an API event", event.event_type)))
            }
        }
        read_list(&value, "subscriptions", &origin, &mut loaded.subscriptions);
        read_list(&value, "apiKeys", &origin, &mut loaded.keys);
        return;
    }
    if SharedPolicyGroup::looks_like(&value) {
        // A broken group has no API to be rejected with: it is reported, and calls to it are skipped
        // (as calls to a group that is not deployed are).
        match SharedPolicyGroup::from_value(&value) {
            Ok(group) => loaded.shared_policy_groups.insert(group, LOCAL_ENVIRONMENT),
            Err(reason) => tracing::warn!(%origin, %reason, "shared policy group ignored"),
        }
        return;
    }
    let id = value.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    loaded.sources.push(ApiSource {
        id,
        name: value.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
        origin,
        definition: DefinitionText::Parsed(value),
        environment_id: LOCAL_ENVIRONMENT.into(),
        organization_id: LOCAL_ORGANIZATION.into(),
    });
}

fn read_list<T: serde::de::DeserializeOwned>(value: &Value, field: &str, origin: &str, into: &mut Vec<T>) {
    for (i, item) in value.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
        match serde_json::from_value(item.clone()) {
            Ok(parsed) => into.push(parsed),
            Err(e) => tracing::warn!(%origin, "{field}[{i}] ignored: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_files_plain_files_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let definition = json!({"id": "reg", "definitionVersion": "4.0.0"});
        let registry = json!({
            "apiEvent": {"id": "e1", "type": "PUBLISH_API", "properties": {"api_id": "reg"},
                "payload": json!({"id": "reg", "name": "Reg", "definition": definition.to_string()}).to_string()},
            "subscriptions": [{"id": "s1", "api": "reg", "plan": "p", "status": "ACCEPTED"}],
            "apiKeys": [{"id": "k1", "key": "secret", "subscriptions": ["s1"]}]
        });
        std::fs::write(dir.path().join("reg.json"), registry.to_string()).unwrap();
        std::fs::write(dir.path().join("plain.json"), json!({"id": "plain", "definitionVersion": "4.0.0"}).to_string())
            .unwrap();
        std::fs::write(dir.path().join("broken.json"), "{oops").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let files = fingerprint(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let loaded = load_dir(dir.path(), &files, u64::MAX);
        let ids: Vec<&str> = loaded.sources.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["broken", "plain", "reg"]);
        assert!(
            matches!(&loaded.sources[0].definition, DefinitionText::Invalid(r) if r.starts_with("the file is not valid JSON"))
        );
        assert_eq!((loaded.subscriptions.len(), loaded.keys.len()), (1, 1));
    }

    #[test]
    fn oversized_and_non_regular_files_are_rejected_alone_and_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small.json"), json!({"id": "small", "definitionVersion": "4.0.0"}).to_string())
            .unwrap();
        std::fs::write(dir.path().join("big.json"), format!("{{\"id\": \"big\", \"x\": \"{}\"}}", "x".repeat(4096)))
            .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.json")).unwrap();
        let files = fingerprint(dir.path()).unwrap();
        let loaded = load_dir(dir.path(), &files, 1024);
        let outcome: Vec<(&str, String)> = loaded
            .sources
            .iter()
            .map(|s| match &s.definition {
                DefinitionText::Invalid(reason) => (s.id.as_str(), reason.clone()),
                _ => (s.id.as_str(), "parsed".to_owned()),
            })
            .collect();
        assert_eq!(outcome[0].0, "big");
        assert!(outcome[0].1.contains("more than --max-definition-bytes (1024)"), "{}", outcome[0].1);
        assert_eq!(outcome[1], ("small", "parsed".to_owned()));
        assert_eq!(outcome[2], ("zero", "not a regular file".to_owned()));
    }
}
