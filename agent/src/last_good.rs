//! The last-good snapshot: the deployment set of the last successful sync, kept outside the process so
//! that a restarted agent serves before the Cloud Gate answers (ARCHITECTURE.md, data path 1).
//!
//! After each sync that changed the deployed version, a background task encodes the set in its compiled
//! form (the `hgw.v1.Api` messages dataplanes receive, API keys as SHA-256 only) into an
//! `hgw.v1.LastGoodEnvelope` (`proto/hgw/v1/snapshot.proto`: format version, SHA-256 of the payload,
//! payload) and writes it to Redis under `hgw:{cluster_id}:last-good` (one prefix per cluster id, so
//! the agents of a cluster share it) and atomically to `{state_dir}/last-good-{cluster_id}.pb`. A
//! failed write is a warning and a metric, retried later; sync never waits for it. The Redis write is
//! one `SET`, bounded by `--redis-timeout` like every Redis command: a very large set over a slow link
//! needs a longer one.
//!
//! At start in cloud mode, before the first sync, the agent reads both, keeps the newest snapshot that
//! is intact, authentic and was made for this agent (cluster, organization, environments, sharding tags,
//! tenant, API-key location, config schema), and publishes it to the store: dataplanes serve it at once.
//! The first successful sync replaces it. Anything else — unreadable, too large, not a regular file,
//! corrupt, without a valid MAC, another format, another cluster or organization — is logged with the
//! reason, counted, and never served. Local mode neither writes nor restores: its files are already on
//! disk.
//!
//! **Authenticity.** The SHA-256 checksum only detects corruption: anyone able to write the Redis key or
//! the file could recompute it. So the envelope also carries an HMAC-SHA256 of the payload, keyed with
//! [`SnapshotKey`]: derived with HKDF-SHA256 (salt: the cluster id) from secret material every agent of
//! the cluster holds and a Redis or file writer does not — the Cloud Token the cluster's agents share,
//! or `--snapshot-key-file`. Reads are bounded (`--max-snapshot-bytes`): a file is opened without
//! blocking, checked to be a regular file of acceptable size before a byte is read, and read with a
//! bound; a Redis value is read with `GETRANGE` up to the bound.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hgw_proto::v1 as pb;
use hmac::Hmac;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::redis::Redis;
use crate::store::{ConfigStore, Restored, Snapshot};
use crate::tags::ShardingTags;

/// Version of the stored format: bump it when the envelope or snapshot changes incompatibly (2: the
/// envelope carries a MAC).
pub const FORMAT: u32 = 2;
/// HKDF `info` of the snapshot MAC key: a key derived from the same material for another purpose differs.
const KEY_INFO: &[u8] = b"hgw last-good snapshot hmac-sha256 v1";
/// `LastGoodEnvelope.magic`: tells an hgw snapshot from any other bytes under the same name.
pub const MAGIC: &str = "hgw.last-good";
/// The cluster name used in keys and file names when `--cluster-id` is not given.
pub const DEFAULT_CLUSTER: &str = "default";
/// Longest wait for Redis at start: a blackholed Redis delays serving the file copy by at most this.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for one write (Redis round trip, or file write and fsync).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed write is tried again after this, until it succeeds or a newer set replaces it.
const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// The Redis key of a cluster's snapshot.
pub fn redis_key(cluster_id: &str) -> String {
    format!("hgw:{cluster_id}:last-good")
}

/// The snapshot file of a cluster in `state_dir`. Characters other than `[A-Za-z0-9._-]` in the cluster
/// id become `_`, so the id can never leave the directory.
pub fn file_path(state_dir: &Path, cluster_id: &str) -> PathBuf {
    let safe: String =
        cluster_id.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    state_dir.join(format!("last-good-{safe}.pb"))
}

/// What a snapshot must have been made for to be served by this agent. A set compiled for other
/// sharding tags, tenant or API-key location would serve the wrong APIs or read keys in the wrong place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    pub organization_id: String,
    /// Sorted.
    pub environment_ids: Vec<String>,
    /// Sorted, `!tag` for exclusions.
    pub sharding_tags: Vec<String>,
    /// Empty: none.
    pub tenant: String,
    pub api_key_header: String,
    pub api_key_query_param: String,
}

impl Identity {
    pub fn new(
        cluster_id: Option<&str>,
        organization_id: &str,
        environment_ids: &[String],
        tags: &ShardingTags,
        tenant: Option<&str>,
        api_key_location: (&str, &str),
    ) -> Identity {
        let mut environment_ids = environment_ids.to_vec();
        environment_ids.sort();
        let mut sharding_tags = tags.to_list();
        sharding_tags.sort();
        Identity {
            cluster_id: cluster_id.map(str::trim).filter(|c| !c.is_empty()).unwrap_or(DEFAULT_CLUSTER).to_owned(),
            organization_id: organization_id.to_owned(),
            environment_ids,
            sharding_tags,
            tenant: tenant.map(str::trim).unwrap_or_default().to_owned(),
            api_key_header: api_key_location.0.to_owned(),
            api_key_query_param: api_key_location.1.to_owned(),
        }
    }
}

/// The key of the snapshot MAC. `Debug` never prints it.
#[derive(Clone)]
pub struct SnapshotKey([u8; 32]);

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey([redacted])")
    }
}

impl SnapshotKey {
    /// Derives the key from secret material (the Cloud Token, or `--snapshot-key-file`'s bytes) with
    /// HKDF-SHA256, salted with the cluster id: clusters sharing the material still get distinct keys.
    pub fn derive(material: &[u8], cluster_id: &str) -> SnapshotKey {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(cluster_id.as_bytes()), material)
            .expand(KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SnapshotKey(key)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// HMAC-SHA256 of `payload`.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        hmac::Mac::update(&mut mac, payload);
        hmac::Mac::finalize(mac).into_bytes().to_vec()
    }

    /// Whether `tag` is `payload`'s MAC (compared in constant time).
    fn verify(&self, payload: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        hmac::Mac::update(&mut mac, payload);
        hmac::Mac::verify_slice(mac, tag).is_ok()
    }
}

/// Why a stored snapshot is not served. Each has a fixed [`label`](SnapshotError::label) for metrics.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{bytes} bytes, more than --max-snapshot-bytes ({max})")]
    TooLarge { bytes: u64, max: u64 },
    #[error("not a regular file ({0})")]
    NotAFile(String),
    #[error(
        "no valid MAC: not written by an agent holding this cluster's snapshot key (the Cloud Token or --snapshot-key-file)"
    )]
    Mac,
    #[error("not an hgw last-good snapshot: {0}")]
    NotASnapshot(String),
    #[error("snapshot format {found}, this agent reads format {FORMAT}")]
    Format { found: u32 },
    #[error("checksum mismatch: the snapshot is corrupt")]
    Checksum,
    #[error("the snapshot passed its checksum but does not decode: {0}")]
    Payload(prost::DecodeError),
    #[error("written by hgw-agent {version} with another config schema")]
    Schema { version: String },
    #[error("written for {what} {found}, this agent has {expected}")]
    Foreign { what: &'static str, found: String, expected: String },
}

impl SnapshotError {
    pub fn label(&self) -> &'static str {
        match self {
            SnapshotError::TooLarge { .. } => "too_large",
            SnapshotError::NotAFile(_) => "not_a_file",
            SnapshotError::Mac => "mac",
            SnapshotError::NotASnapshot(_) => "not_a_snapshot",
            SnapshotError::Format { .. } => "format",
            SnapshotError::Checksum => "checksum",
            SnapshotError::Payload(_) => "payload",
            SnapshotError::Schema { .. } => "schema",
            SnapshotError::Foreign { .. } => "foreign",
        }
    }
}

/// SHA-256 (hex) of `hgw/v1/config.proto`'s descriptor without comments: two agents agree on it exactly
/// when they encode and decode `Api` the same way.
pub fn schema_sha256() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let set = prost_types::FileDescriptorSet::decode(hgw_proto::FILE_DESCRIPTOR_SET)
            .expect("hgw-proto embeds a valid descriptor set");
        let mut file = set
            .file
            .into_iter()
            .find(|f| f.name() == "hgw/v1/config.proto")
            .expect("hgw-proto's descriptor set holds hgw/v1/config.proto");
        file.source_code_info = None;
        hex(&Sha256::digest(file.encode_to_vec()))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes `snapshot` as a stored envelope, authenticated with `key`.
pub fn encode(
    snapshot: &Snapshot,
    identity: &Identity,
    node_id: &str,
    written_at_ms: i64,
    key: &SnapshotKey,
) -> Vec<u8> {
    let Identity {
        cluster_id,
        organization_id,
        environment_ids,
        sharding_tags,
        tenant,
        api_key_header,
        api_key_query_param,
    } = identity.clone();
    let payload = pb::LastGoodSnapshot {
        cluster_id,
        organization_id,
        environment_ids,
        sharding_tags,
        tenant,
        api_key_header,
        api_key_query_param,
        schema_sha256: schema_sha256().to_owned(),
        config_version: snapshot.version,
        written_at_ms,
        written_by_node: node_id.to_owned(),
        written_by_version: env!("CARGO_PKG_VERSION").to_owned(),
        subscriptions: u32::try_from(snapshot.subscriptions).unwrap_or(u32::MAX),
        api_keys: u32::try_from(snapshot.api_keys).unwrap_or(u32::MAX),
        apis: snapshot.apis.values().map(|api| (**api).clone()).collect(),
    }
    .encode_to_vec();
    pb::LastGoodEnvelope {
        magic: MAGIC.to_owned(),
        format: FORMAT,
        payload_sha256: Sha256::digest(&payload).to_vec(),
        payload_hmac_sha256: key.sign(&payload),
        payload,
    }
    .encode_to_vec()
}

/// Decodes a stored envelope and checks that it is intact, authenticated by `key` and made for
/// `identity`. The MAC is checked before the payload is decoded: nothing a forger wrote is parsed.
pub fn decode(bytes: &[u8], identity: &Identity, key: &SnapshotKey) -> Result<pb::LastGoodSnapshot, SnapshotError> {
    let envelope =
        pb::LastGoodEnvelope::decode(bytes).map_err(|e| SnapshotError::NotASnapshot(format!("undecodable ({e})")))?;
    if envelope.magic != MAGIC {
        return Err(SnapshotError::NotASnapshot(format!("{} bytes without the hgw marker", bytes.len())));
    }
    if envelope.format != FORMAT {
        return Err(SnapshotError::Format { found: envelope.format });
    }
    if envelope.payload_sha256[..] != Sha256::digest(&envelope.payload)[..] {
        return Err(SnapshotError::Checksum);
    }
    if !key.verify(&envelope.payload, &envelope.payload_hmac_sha256) {
        return Err(SnapshotError::Mac);
    }
    let snapshot = pb::LastGoodSnapshot::decode(envelope.payload.as_slice()).map_err(SnapshotError::Payload)?;
    if snapshot.schema_sha256 != schema_sha256() {
        return Err(SnapshotError::Schema { version: snapshot.written_by_version });
    }
    check_identity(&snapshot, identity)?;
    Ok(snapshot)
}

fn check_identity(snapshot: &pb::LastGoodSnapshot, identity: &Identity) -> Result<(), SnapshotError> {
    let mut environment_ids = snapshot.environment_ids.clone();
    environment_ids.sort();
    let mut sharding_tags = snapshot.sharding_tags.clone();
    sharding_tags.sort();
    let checks: [(&'static str, String, String); 7] = [
        ("cluster", snapshot.cluster_id.clone(), identity.cluster_id.clone()),
        ("organization", snapshot.organization_id.clone(), identity.organization_id.clone()),
        ("environments", environment_ids.join(","), identity.environment_ids.join(",")),
        ("sharding tags", sharding_tags.join(","), identity.sharding_tags.join(",")),
        ("tenant", snapshot.tenant.clone(), identity.tenant.clone()),
        ("API-key header", snapshot.api_key_header.clone(), identity.api_key_header.clone()),
        ("API-key query parameter", snapshot.api_key_query_param.clone(), identity.api_key_query_param.clone()),
    ];
    for (what, found, expected) in checks {
        if found != expected {
            let quote = |s: String| if s.is_empty() { "(none)".to_owned() } else { format!("`{s}`") };
            return Err(SnapshotError::Foreign { what, found: quote(found), expected: quote(expected) });
        }
    }
    Ok(())
}

/// Where snapshots are kept.
#[derive(Clone)]
enum Location {
    Redis { redis: Redis, key: String },
    File(PathBuf),
}

impl Location {
    /// `redis` or `file`, as logs and `/_node/sync` say it.
    fn kind(&self) -> &'static str {
        match self {
            Location::Redis { .. } => "redis",
            Location::File(_) => "file",
        }
    }

    fn describe(&self) -> String {
        match self {
            Location::Redis { redis, key } => format!("{key} on {}", redis.describe()),
            Location::File(path) => path.display().to_string(),
        }
    }

    /// Reads the stored bytes, at most `max` of them.
    async fn load(&self, max: u64) -> Result<Option<Vec<u8>>, LoadError> {
        match self {
            Location::Redis { redis, key } => {
                let bytes = redis.get_bytes_bounded(key, max).await.map_err(|e| LoadError::Io(e.to_string()))?;
                match bytes {
                    Some(bytes) if bytes.len() as u64 > max => {
                        Err(LoadError::Refused(SnapshotError::TooLarge { bytes: bytes.len() as u64, max }))
                    }
                    other => Ok(other),
                }
            }
            Location::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_bounded(&path, max))
                    .await
                    .map_err(|e| LoadError::Io(e.to_string()))?
            }
        }
    }

    async fn save(&self, bytes: Arc<Vec<u8>>) -> Result<(), String> {
        match self {
            Location::Redis { redis, key } => redis.set_bytes(key, &bytes).await.map_err(|e| e.to_string()),
            Location::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Why a location gave no snapshot bytes.
#[derive(Debug)]
enum LoadError {
    /// Something is there, but it is refused unread (too large, not a regular file).
    Refused(SnapshotError),
    /// It could not be read (I/O error, Redis down).
    Io(String),
}

/// Reads the snapshot file, refusing what is not a regular file or is larger than `max` before reading
/// a byte of it: opened without blocking (a FIFO would otherwise hang the agent), checked with fstat on
/// the opened file (the file read is the file checked), read with a bound (a file growing meanwhile is
/// cut, and then fails its checks).
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        match std::fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits()).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LoadError::Io(e.to_string())),
        };
    let meta = file.metadata().map_err(|e| LoadError::Io(e.to_string()))?;
    if !meta.is_file() {
        let kind = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(LoadError::Refused(SnapshotError::NotAFile(what.into())));
    }
    if meta.len() > max {
        return Err(LoadError::Refused(SnapshotError::TooLarge { bytes: meta.len(), max }));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| LoadError::Io(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(LoadError::Refused(SnapshotError::TooLarge { bytes: bytes.len() as u64, max }));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part: a
/// temporary file in the same directory (mode 0600: JWT HMAC secrets of GIVEN_KEY plans are in the
/// snapshot), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable once the directory is; a failure here only weakens crash safety.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Creates the state directory (mode 0700) if missing; `None`, after one warning, when it cannot be.
fn prepare_state_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Some(dir.to_path_buf()),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the state directory; the last-good snapshot is not kept on disk (set --state-dir)");
            None
        }
    }
}

/// The last-good snapshot of one agent: where it is kept, and what it must match.
#[derive(Clone)]
pub struct LastGood {
    identity: Arc<Identity>,
    node_id: String,
    locations: Vec<Location>,
    metrics: Arc<Metrics>,
    key: Arc<SnapshotKey>,
    /// Largest snapshot written or read (`--max-snapshot-bytes`).
    max_bytes: u64,
}

impl LastGood {
    /// Prepares the locations: `redis` when configured (no I/O: it may be down now and up later), and
    /// the file in `state_dir` (created if missing; left out, with a warning, when it cannot be).
    pub fn new(
        identity: Identity,
        node_id: String,
        redis: Option<Redis>,
        state_dir: Option<&Path>,
        metrics: Arc<Metrics>,
        key: SnapshotKey,
        max_bytes: u64,
    ) -> LastGood {
        let mut locations = Vec::new();
        if let Some(redis) = redis {
            locations.push(Location::Redis { redis, key: redis_key(&identity.cluster_id) });
        }
        match state_dir {
            Some(dir) => {
                if let Some(dir) = prepare_state_dir(dir) {
                    locations.push(Location::File(file_path(&dir, &identity.cluster_id)));
                }
            }
            None => tracing::warn!(
                "no state directory (no --state-dir, $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME); the last-good snapshot is not kept on disk"
            ),
        }
        LastGood { identity: Arc::new(identity), node_id, locations, metrics, key: Arc::new(key), max_bytes }
    }

    /// Where snapshots are read and written, for the start-up log (`file:/path`, `redis:key`).
    pub fn describe(&self) -> Vec<String> {
        self.locations.iter().map(|l| format!("{}:{}", l.kind(), l.describe())).collect()
    }

    /// Reads every location and publishes the newest snapshot made for this agent, unless the store
    /// already holds a set. Answers the version published.
    pub async fn restore(&self, store: &ConfigStore) -> Option<u64> {
        let max = self.max_bytes;
        let reads = self.locations.iter().map(|location| async move {
            let loaded = tokio::time::timeout(RESTORE_TIMEOUT, location.load(max)).await;
            (location, loaded)
        });
        let mut best: Option<(&'static str, pb::LastGoodSnapshot)> = None;
        for (location, loaded) in futures::future::join_all(reads).await {
            let (from, at) = (location.kind(), location.describe());
            let bytes = match loaded {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => {
                    tracing::debug!(from, %at, "no last-good snapshot");
                    continue;
                }
                Ok(Err(LoadError::Io(error))) => {
                    tracing::warn!(from, %at, %error, "cannot read the last-good snapshot");
                    continue;
                }
                Ok(Err(LoadError::Refused(error))) => {
                    self.metrics.last_good_ignored.inc();
                    tracing::warn!(from, %at, reason = %error, kind = error.label(), "last-good snapshot ignored unread; it is not served");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(from, %at, timeout_ms = RESTORE_TIMEOUT.as_millis() as u64, "reading the last-good snapshot timed out");
                    continue;
                }
            };
            match decode(&bytes, &self.identity, &self.key) {
                Ok(snapshot) => {
                    let newer = best.as_ref().is_none_or(|(_, b)| {
                        (snapshot.written_at_ms, snapshot.config_version) > (b.written_at_ms, b.config_version)
                    });
                    if newer {
                        best = Some((from, snapshot));
                    }
                }
                Err(error) => {
                    self.metrics.last_good_ignored.inc();
                    tracing::warn!(from, %at, reason = %error, kind = error.label(), "last-good snapshot ignored; it is not served");
                }
            }
        }
        let (from, snapshot) = best?;
        let (version, written_at_ms, apis) = (snapshot.config_version, snapshot.written_at_ms, snapshot.apis.len());
        let restored =
            Restored { source: from, version, written_at_ms, written_by_node: snapshot.written_by_node.clone() };
        let published =
            store.restore(snapshot.apis, snapshot.subscriptions as usize, snapshot.api_keys as usize, restored)?;
        self.metrics.last_good_restored.inc();
        tracing::info!(
            "serving last-good snapshot version {version} written at {} from {from} ({apis} APIs, published as version {published}, written by {}); the first successful sync replaces it",
            format_ms(written_at_ms),
            snapshot.written_by_node,
        );
        Some(published)
    }

    /// Writes each new version of the store's set that came from the config source (not a restored
    /// one) until `cancel`. Runs beside sync, so a slow Redis or disk never delays it: when writes fall
    /// behind, intermediate versions are skipped and the newest is written.
    pub async fn run(self, mut snapshots: watch::Receiver<Arc<Snapshot>>, cancel: CancellationToken) {
        let mut written: Option<u64> = None;
        // A write that failed: the bytes and the locations still to be written.
        let mut retry: Option<(Arc<Vec<u8>>, Vec<Location>)> = None;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if snapshot.initialized && snapshot.restored.is_none() && written != Some(snapshot.version) {
                written = Some(snapshot.version);
                let identity = self.identity.clone();
                let node_id = self.node_id.clone();
                let key = self.key.clone();
                let encoded = tokio::task::spawn_blocking(move || {
                    encode(&snapshot, &identity, &node_id, crate::sync::now_ms(), &key)
                })
                .await;
                match encoded {
                    Ok(bytes) if bytes.len() as u64 > self.max_bytes => {
                        // Every agent would refuse to read it: writing it would only replace a usable one.
                        for location in &self.locations {
                            self.metrics.last_good_write(location.kind(), false);
                        }
                        tracing::warn!(
                            bytes = bytes.len(),
                            max = self.max_bytes,
                            "the last-good snapshot is larger than --max-snapshot-bytes; not written"
                        );
                        retry = None;
                    }
                    Ok(bytes) => {
                        let failed = self.write(Arc::new(bytes), written.unwrap_or_default(), &self.locations).await;
                        retry = failed;
                    }
                    Err(error) => tracing::error!(%error, "encoding the last-good snapshot failed"),
                }
            }
            let retry_wait = tokio::time::sleep(RETRY_INTERVAL);
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = retry_wait, if retry.is_some() => {
                    if let Some((bytes, locations)) = retry.take() {
                        retry = self.write(bytes, written.unwrap_or_default(), &locations).await;
                    }
                }
            }
        }
    }

    /// Writes `bytes` to `locations` at once; answers what failed, to be tried again.
    async fn write(
        &self,
        bytes: Arc<Vec<u8>>,
        version: u64,
        locations: &[Location],
    ) -> Option<(Arc<Vec<u8>>, Vec<Location>)> {
        let writes = locations.iter().map(|location| {
            let bytes = bytes.clone();
            async move {
                let result = match tokio::time::timeout(WRITE_TIMEOUT, location.save(bytes)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
                };
                (location, result)
            }
        });
        let mut failed = Vec::new();
        for (location, result) in futures::future::join_all(writes).await {
            let (to, at) = (location.kind(), location.describe());
            match result {
                Ok(()) => {
                    self.metrics.last_good_write(to, true);
                    tracing::info!(version, to, %at, bytes = bytes.len(), "last-good snapshot written");
                }
                Err(error) => {
                    self.metrics.last_good_write(to, false);
                    tracing::warn!(version, to, %at, %error, retry_in_s = RETRY_INTERVAL.as_secs(), "writing the last-good snapshot failed; serving goes on");
                    failed.push(location.clone());
                }
            }
        }
        (!failed.is_empty()).then_some((bytes, failed))
    }
}

/// `ms` (epoch milliseconds) as RFC 3339 UTC, for logs.
fn format_ms(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn identity() -> Identity {
        Identity::new(
            Some("eu-1"),
            "org",
            &["env-b".to_owned(), "env-a".to_owned()],
            &ShardingTags::default(),
            None,
            ("X-Gravitee-Api-Key", "api-key"),
        )
    }

    fn key() -> SnapshotKey {
        SnapshotKey::derive(b"the cluster's cloud token", "eu-1")
    }

    fn snapshot(version: u64) -> Snapshot {
        let api = pb::Api { id: "orders".into(), name: "Orders".into(), revision: "r1".into(), ..Default::default() };
        Snapshot {
            version,
            initialized: true,
            apis: BTreeMap::from([("orders".to_owned(), Arc::new(api))]),
            subscriptions: 2,
            api_keys: 3,
            ..Snapshot::default()
        }
    }

    fn envelope(bytes: &[u8]) -> pb::LastGoodEnvelope {
        pb::LastGoodEnvelope::decode(bytes).unwrap()
    }

    #[test]
    fn a_snapshot_round_trips_with_its_metadata() {
        let bytes = encode(&snapshot(42), &identity(), "node-1", 1_700_000_000_000, &key());
        let decoded = decode(&bytes, &identity(), &key()).unwrap();
        assert_eq!(decoded.config_version, 42);
        assert_eq!(decoded.written_at_ms, 1_700_000_000_000);
        assert_eq!(decoded.written_by_node, "node-1");
        assert_eq!((decoded.subscriptions, decoded.api_keys), (2, 3));
        assert_eq!(decoded.environment_ids, ["env-a", "env-b"]);
        assert_eq!(decoded.cluster_id, "eu-1");
        assert_eq!(decoded.apis.len(), 1);
        assert_eq!(decoded.apis[0].id, "orders");
        assert_eq!(envelope(&bytes).format, FORMAT);
    }

    #[test]
    fn any_changed_byte_of_the_payload_is_detected() {
        let bytes = encode(&snapshot(1), &identity(), "n", 1, &key());
        let payload = envelope(&bytes).payload;
        let start = bytes.windows(payload.len()).position(|w| w == payload).expect("the payload is in the envelope");
        // Flipping any byte of the payload must fail the checksum (checked before the MAC).
        for offset in start..start + payload.len() {
            let mut corrupt = bytes.clone();
            corrupt[offset] ^= 0x40;
            assert!(matches!(decode(&corrupt, &identity(), &key()), Err(SnapshotError::Checksum)), "byte {offset}");
        }
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 1);
        assert!(decode(&truncated, &identity(), &key()).is_err());
    }

    #[test]
    fn garbage_and_other_formats_are_refused_with_their_reason() {
        let garbage = decode(b"garbage", &identity(), &key()).unwrap_err();
        assert_eq!(garbage.label(), "not_a_snapshot", "{garbage}");
        assert_eq!(decode(b"", &identity(), &key()).unwrap_err().label(), "not_a_snapshot");

        let mut other = envelope(&encode(&snapshot(1), &identity(), "n", 1, &key()));
        other.format = FORMAT + 1;
        let err = decode(&other.encode_to_vec(), &identity(), &key()).unwrap_err();
        assert_eq!(err.to_string(), format!("snapshot format {}, this agent reads format {FORMAT}", FORMAT + 1));

        // A payload with the right checksum that is not a snapshot.
        let payload = b"\xff\xff\xff".to_vec();
        let forged = pb::LastGoodEnvelope {
            magic: MAGIC.into(),
            format: FORMAT,
            payload_sha256: Sha256::digest(&payload).to_vec(),
            payload_hmac_sha256: key().sign(&payload),
            payload,
        };
        assert_eq!(decode(&forged.encode_to_vec(), &identity(), &key()).unwrap_err().label(), "payload");
    }

    #[test]
    fn a_forged_snapshot_with_a_correct_checksum_is_refused_for_its_mac() {
        // What a writer of the Redis key or the file can do: change the payload, fix the checksum.
        let mut forged = envelope(&encode(&snapshot(1), &identity(), "n", 1, &key()));
        let mut payload = pb::LastGoodSnapshot::decode(forged.payload.as_slice()).unwrap();
        payload.apis[0].name = "Redirected".into();
        forged.payload = payload.encode_to_vec();
        forged.payload_sha256 = Sha256::digest(&forged.payload).to_vec();
        let err = decode(&forged.encode_to_vec(), &identity(), &key()).unwrap_err();
        assert_eq!(err.label(), "mac", "{err}");
        forged.payload_hmac_sha256.clear();
        assert_eq!(decode(&forged.encode_to_vec(), &identity(), &key()).unwrap_err().label(), "mac");

        // Signed with another cluster's key, or another token: refused too.
        let bytes = encode(&snapshot(1), &identity(), "n", 1, &key());
        let other_token = SnapshotKey::derive(b"another cloud token", "eu-1");
        assert_eq!(decode(&bytes, &identity(), &other_token).unwrap_err().label(), "mac");
        let other_cluster = SnapshotKey::derive(b"the cluster's cloud token", "us-1");
        assert_eq!(decode(&bytes, &identity(), &other_cluster).unwrap_err().label(), "mac");
        assert_eq!(format!("{:?}", key()), "SnapshotKey([redacted])");
    }

    #[test]
    fn reads_are_bounded_and_only_of_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(read_bounded(&missing, 1024), Ok(None)));
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
        match read_bounded(&big, 1024) {
            Err(LoadError::Refused(e)) => assert_eq!(e.label(), "too_large", "{e}"),
            other => panic!("{other:?}"),
        }
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        match read_bounded(&zero, 1024) {
            Err(LoadError::Refused(e)) => assert_eq!(e.to_string(), "not a regular file (a character device)"),
            other => panic!("{other:?}"),
        }
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(read_bounded(&fifo, 1024), Err(LoadError::Refused(_))), "a FIFO never blocks the read");
        let small = dir.path().join("small");
        std::fs::write(&small, b"12345").unwrap();
        assert_eq!(read_bounded(&small, 5).unwrap().unwrap(), b"12345");
    }

    #[test]
    fn foreign_snapshots_name_what_differs() {
        let bytes = encode(&snapshot(1), &identity(), "n", 1, &key());
        let cases: [(Identity, &str); 5] = [
            (Identity { cluster_id: "us-1".into(), ..identity() }, "written for cluster `eu-1`, this agent has `us-1`"),
            (Identity { organization_id: "other".into(), ..identity() }, "written for organization `org`"),
            (
                Identity { environment_ids: vec!["env-a".into()], ..identity() },
                "written for environments `env-a,env-b`",
            ),
            (
                Identity { sharding_tags: vec!["internal".into()], ..identity() },
                "sharding tags (none), this agent has `internal`",
            ),
            (Identity { tenant: "t".into(), ..identity() }, "tenant (none)"),
        ];
        for (other, expected) in cases {
            let err = decode(&bytes, &other, &key()).unwrap_err();
            assert_eq!(err.label(), "foreign");
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        // The order of environments does not matter.
        let reordered = Identity { environment_ids: vec!["env-a".into(), "env-b".into()], ..identity() };
        assert!(decode(&bytes, &reordered, &key()).is_ok());
    }

    #[test]
    fn another_config_schema_is_refused() {
        let mut env = envelope(&encode(&snapshot(1), &identity(), "n", 1, &key()));
        let mut payload = pb::LastGoodSnapshot::decode(env.payload.as_slice()).unwrap();
        payload.schema_sha256 = "0".repeat(64);
        payload.written_by_version = "9.9.9".into();
        env.payload = payload.encode_to_vec();
        env.payload_sha256 = Sha256::digest(&env.payload).to_vec();
        env.payload_hmac_sha256 = key().sign(&env.payload);
        let err = decode(&env.encode_to_vec(), &identity(), &key()).unwrap_err();
        assert_eq!(err.to_string(), "written by hgw-agent 9.9.9 with another config schema");
        assert_eq!(schema_sha256().len(), 64);
    }

    #[test]
    fn file_names_keep_the_cluster_inside_the_state_dir() {
        assert_eq!(file_path(Path::new("/s"), "eu-1"), PathBuf::from("/s/last-good-eu-1.pb"));
        assert_eq!(file_path(Path::new("/s"), "../x/y"), PathBuf::from("/s/last-good-.._x_y.pb"));
        assert_eq!(redis_key("eu-1"), "hgw:eu-1:last-good");
        assert_eq!(Identity::new(None, "o", &[], &ShardingTags::default(), None, ("h", "q")).cluster_id, "default");
    }

    #[test]
    fn atomic_writes_replace_the_file_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-good-x.pb");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn the_writer_skips_unchanged_and_restored_sets_and_restore_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let last_good = LastGood::new(
            identity(),
            "node-a".into(),
            None,
            Some(&dir.path().join("state")),
            metrics.clone(),
            key(),
            1 << 20,
        );
        let path = file_path(&dir.path().join("state"), "eu-1");
        let store = ConfigStore::new(ShardingTags::default());
        let cancel = CancellationToken::new();
        let writer = tokio::spawn(last_good.clone().run(store.subscribe(), cancel.clone()));

        let source = crate::definition::ApiSource {
            id: "a".into(),
            name: "a".into(),
            origin: "test".into(),
            definition: crate::definition::DefinitionText::Parsed(serde_json::json!({
                "id": "a", "definitionVersion": "4.0.0",
                "listeners": [{"type": "http", "paths": [{"path": "/a"}]}],
                "endpointGroups": [{"endpoints": [{"configuration": {"target": "http://127.0.0.1:1"}}]}],
                "plans": [{"id": "p", "security": {"type": "key-less"}, "status": "published"}]
            })),
            environment_id: "env-a".into(),
            organization_id: "org".into(),
        };
        let report = store.deploy(vec![source.clone()], &[], &[]);
        let written = wait_for(|| metrics.last_good_writes_file.get() == 1).await;
        assert!(written, "the first set is written");
        store.deploy(vec![source], &[], &[]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(metrics.last_good_writes_file.get(), 1, "an unchanged set is not written again");
        cancel.cancel();
        writer.await.unwrap();

        // A fresh store restores it, marked as restored, with a version not below its own.
        let fresh = ConfigStore::new(ShardingTags::default());
        let published = last_good.restore(&fresh).await.expect("restored");
        let current = fresh.current();
        assert!(current.initialized);
        assert!(current.apis.contains_key("a"));
        assert!(published >= report.version);
        let restored = current.restored.as_ref().expect("marked as restored");
        assert_eq!((restored.source, restored.version), ("file", report.version));
        assert!(std::fs::read(&path).is_ok());

        // Once the source delivered, a restore changes nothing.
        assert_eq!(last_good.restore(&fresh).await, None);

        // Corrupt: ignored, counted, nothing served.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let empty = ConfigStore::new(ShardingTags::default());
        assert_eq!(last_good.restore(&empty).await, None);
        assert!(!empty.current().initialized);
        assert_eq!(metrics.last_good_ignored.get(), 1);
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn an_uncreatable_state_dir_only_disables_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let last_good = LastGood::new(
            identity(),
            "n".into(),
            None,
            Some(&blocker.join("state")),
            Arc::new(Metrics::default()),
            key(),
            1 << 20,
        );
        assert!(last_good.describe().is_empty());
    }
}
