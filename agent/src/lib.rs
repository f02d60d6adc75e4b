//! hgw-agent: the control agent of the hgw hybrid gateway.
//!
//! It owns the Cloud Token and license, syncs API definitions from the Cloud Gate (or a local folder),
//! compiles them into typed config, pushes that config to dataplanes over gRPC, receives their
//! analytics and uploads them to `/reports`. See ARCHITECTURE.md for the whole picture.

pub mod cache;
pub mod cloudgate;
pub mod config;
pub mod definition;
pub mod grpc;
pub mod heartbeat;
pub mod identity;
pub mod inject;
pub mod jwks;
pub mod last_good;
pub mod license;
pub mod local;
pub mod metrics;
pub mod monitor;
pub mod node_api;
pub mod oauth2;
pub mod ratelimit;
pub mod redis;
pub mod reports;
pub mod secret;
pub mod store;
pub mod supervisor;
pub mod sync;
pub mod tags;
pub mod token;
pub mod tokenreview;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Config, Source};

/// A failure after configuration was accepted (binding, files): the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("HTTP client: {0}")]
    GateClient(String),
    #[error("--addr-file {path}: {source}")]
    AddrFile { path: String, source: std::io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    Redis(#[from] crate::redis::RedisError),
    #[error("{0}")]
    Spool(#[from] reports::spool::SpoolError),
    /// The CA or the socket folder cannot be used: a configuration problem (exit 64).
    #[error("{0}")]
    Trust(String),
    #[error(transparent)]
    Tracing(#[from] hgw_otel::StartError),
    #[error("cannot listen for SIGTERM/SIGINT: {0}")]
    Signal(std::io::Error),
}

impl StartError {
    /// Whether the operator must change the configuration (exit 64) rather than retry.
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::Trust(_))
    }
}

/// Runs the agent until SIGINT/SIGTERM, then shuts down within the grace period.
pub async fn run(config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = CancellationToken::new();
    // Installed before anything is bound, not in the task below: a signal that came before a worker ran
    // the task would take the default action (death, with dataplanes and the spool left as they were).
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
        cancel.cancel();
    });
    run_until(config, shutdown).await
}

/// Runs the agent until `shutdown` is cancelled.
///
/// Shutdown order matters: supervised dataplanes stop first (they finish requests and flush analytics
/// into this agent), then the config sources, gRPC and node API stop, the spool seals its last segment,
/// and the reports uploader delivers what it can within the grace period (the rest stays spooled).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let tracing = match &config.otel {
        Some(settings) => Some(hgw_otel::Tracing::start(settings, "hgw-agent", &config.node_id)?),
        None => None,
    };
    let jwks = Arc::new(jwks::JwksCache::new(config.jwks_refresh_interval).map_err(StartError::GateClient)?);
    let store = Arc::new(
        store::ConfigStore::new(config.tags.clone())
            .with_tenant(config.tenant.clone())
            .with_jwks(jwks.clone())
            .with_api_key_location(config.api_key_header.clone(), config.api_key_query_param.clone())
            .with_definition_files(config.definition_files.clone()),
    );
    let status = Arc::new(sync::SyncStatus::default());
    let registry = Arc::new(grpc::registry::DataplaneRegistry::default());
    let mode = config.mode_name();
    // No I/O here: the pool connects on first use, so Redis may be down at start.
    let redis = config.redis.as_ref().map(crate::redis::Redis::new).transpose()?;

    // Trust material before any port: a CA or socket folder that cannot be used is a config error.
    let trust = &config.trust;
    let socket_path = config.grpc_socket.clone();
    if let Some(path) = &socket_path {
        identity::socket::prepare_dir(path, trust.socket_group).map_err(|e| StartError::Trust(e.to_string()))?;
    }
    let ca = match config.grpc_listen {
        Some(_) => {
            let dir = trust
                .pki_dir
                .as_deref()
                .ok_or_else(|| StartError::Trust("the TCP listener needs a CA: set --pki-dir or --state-dir".into()))?;
            let ca = identity::pki::CertificateAuthority::open(dir, trust.pki_create)
                .map_err(|e| StartError::Trust(format!("CA: {e}")))?;
            Some(Arc::new(ca))
        }
        None => None,
    };
    let grpc_tls = match &ca {
        Some(ca) => Some(ca.server_config(&trust.server_names).map_err(|e| StartError::Trust(format!("CA: {e}")))?),
        None => None,
    };

    // Bind everything first: a port conflict fails start-up before any background work begins.
    let node_listener = bind_tcp("node API", config.node_listen).await?;
    let grpc_tcp = match config.grpc_listen {
        Some(addr) => Some(bind_tcp("gRPC", addr).await?),
        None => None,
    };
    let grpc_uds = match &socket_path {
        Some(path) => {
            let listener = bind_unix(path)?;
            identity::socket::secure_socket(path, trust.socket_group).map_err(|source| StartError::Bind {
                what: "gRPC socket",
                addr: path.display().to_string(),
                source,
            })?;
            Some(listener)
        }
        None => None,
    };
    let node_addr = node_listener.local_addr().ok();
    let grpc_addr = grpc_tcp.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(path) = &config.addr_file {
        let pki = ca.as_ref().map(|ca| ca.dir());
        write_addr_file(path, node_addr, grpc_addr, socket_path.as_deref(), pki)?;
    }

    let gate = match &config.source {
        Source::Cloud(cloud) => Some(Arc::new(
            cloudgate::CloudGate::new(&cloud.gate_url, cloud.token.bearer().clone(), cloud.gate_ca_pem.as_deref())
                .map_err(StartError::GateClient)?,
        )),
        Source::Local(_) => None,
    };
    let sink = match (&config.source, &gate) {
        (Source::Cloud(_), Some(gate)) => reports::ReportsSink::CloudGate(gate.clone()),
        (Source::Local(local), _) => reports::ReportsSink::File(local.reports_file.clone()),
        (Source::Cloud(_), None) => unreachable!("cloud mode always has a gate client"),
    };
    let (spool, spool_writer, spool_reader) = {
        let (options, metrics) = (config.spool.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || reports::spool::open(options, metrics))
            .await
            .expect("spool recovery does not panic")?
    };
    tracing::info!(dir = %config.spool.dir.display(), max_bytes = config.spool.max_bytes, fsync = ?config.spool.fsync,
        "reports spool open");
    let uploader = reports::Uploader {
        reader: spool_reader,
        sink,
        batch_size: config.reports_batch,
        in_flight: config.reports_uploads,
        gzip_level: config.reports_gzip_level,
        metrics: metrics.clone(),
        grace: config.shutdown_grace,
        tracing: tracing.clone(),
    };

    log_start(&config, node_addr, grpc_addr, socket_path.as_deref());
    if let Some(settings) = &config.otel {
        tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, service = %settings.service_name,
            sampler = ?settings.sampler, "exporting OpenTelemetry traces (sync, compile, push, upload)");
    }
    match &redis {
        Some(redis) => {
            tracing::info!("Redis: {} — rate-limit counters and last-good snapshot are shared there", redis.describe())
        }
        None => tracing::info!(
            "no Redis configured: rate-limit counters are kept in this agent's memory (shared by its own \
             dataplanes, not with other hosts: single-host use); the last-good snapshot is kept on disk only"
        ),
    }

    let tasks = TaskTracker::new();
    let services = CancellationToken::new();
    let uploads = CancellationToken::new();
    let spool_writes = CancellationToken::new();

    match &config.source {
        Source::Cloud(cloud) => {
            let gate = gate.clone().expect("cloud mode has a gate client");
            let sync = sync::CloudSync {
                gate: gate.clone(),
                store: store.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
                environments: cloud.token.claims.envs.clone(),
                organization: cloud.token.claims.org.clone(),
                interval: config.sync_interval,
                max_definition_bytes: config.max_definition_bytes,
                tracing: tracing.clone(),
            };
            // The last-good snapshot is served before the first sync answers (the same task, so a sync
            // result always lands after it), and each new synced set is written in the background.
            let identity = last_good::Identity::new(
                config.cluster_id.as_deref(),
                &cloud.token.claims.org,
                &cloud.token.claims.envs,
                &config.tags,
                config.tenant.as_deref(),
                (&config.api_key_header, &config.api_key_query_param),
            );
            // The MAC key: from --snapshot-key-file, else from the Cloud Token, which every agent of the
            // cluster holds and a Redis or state-file writer does not.
            let key_source = if config.snapshot_key.is_some() { "--snapshot-key-file" } else { "the Cloud Token" };
            let key_material =
                config.snapshot_key.as_ref().map_or(cloud.token.bearer().expose().as_bytes(), |k| k.expose());
            let snapshot_key = last_good::SnapshotKey::derive(key_material, &identity.cluster_id);
            let last_good = last_good::LastGood::new(
                identity,
                config.node_id.clone(),
                redis.clone(),
                config.state_dir.as_deref(),
                metrics.clone(),
                snapshot_key,
                config.max_snapshot_bytes,
            );
            tracing::info!(
                key = key_source,
                max_bytes = config.max_snapshot_bytes,
                "last-good snapshots are authenticated (HMAC-SHA256)"
            );
            tracing::info!(locations = ?last_good.describe(), "last-good snapshot locations");
            tasks.spawn(last_good.clone().run(store.subscribe(), services.clone()));
            let restore_into = store.clone();
            let sync_stop = services.clone();
            tasks.spawn(async move {
                last_good.restore(&restore_into).await;
                sync.run(sync_stop).await;
            });
            let heartbeat = heartbeat::Heartbeat {
                gate,
                metrics: metrics.clone(),
                node_id: config.node_id.clone(),
                tags: config.tags.to_list(),
                tenant: config.tenant.clone(),
                cluster_id: config.cluster_id.clone(),
                environments: cloud.token.claims.envs.clone(),
                organization: cloud.token.claims.org.clone(),
                port: config.dataplane_listen.port(),
            };
            tasks.spawn(heartbeat.run(services.clone()));
        }
        Source::Local(local) => {
            let source = local::LocalSource {
                dir: local.dir.clone(),
                store: store.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
                max_definition_bytes: config.max_definition_bytes,
            };
            tasks.spawn(source.run(services.clone()));
        }
    }
    let spool_task = tokio::spawn(spool_writer.run(spool_writes.clone()));
    let upload_task = tokio::spawn(uploader.run(uploads.clone()));
    let monitor = monitor::Monitor {
        spool: spool.clone(),
        registry: registry.clone(),
        node_id: config.node_id.clone(),
        interval: config.monitor_interval,
    };
    tasks.spawn(monitor.run(services.clone()));
    let redeploy = {
        let store = store.clone();
        move || store.redeploy()
    };
    tasks.spawn(jwks.run(redeploy, services.clone()));
    if let Some(redis) = &redis {
        tasks.spawn(redis.clone().monitor(metrics.clone(), crate::redis::PING_INTERVAL, services.clone()));
    }

    // Without Redis the counters are this agent's own: exact for every dataplane it serves, not shared
    // with other hosts.
    let counters = Arc::new(match &redis {
        Some(redis) => ratelimit::CounterStore::Redis(ratelimit::RedisCounters::new(redis.clone())),
        None => ratelimit::CounterStore::Memory(ratelimit::MemoryCounters::new(config.rate_limit_max_keys)),
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    grpc::set_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let grpc_state = grpc::GrpcState {
        store: store.clone(),
        registry: registry.clone(),
        reports: spool.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        counters: counters.clone(),
        oauth2: Arc::new(oauth2::Introspector::new().map_err(StartError::GateClient)?),
        caches: Arc::new(cache::RedisCaches::new()),
        mode,
        node_id: config.node_id.clone(),
        cancel: services.clone(),
        redis: redis.clone(),
        identity: ca.as_ref().map(|ca| grpc::IdentityState {
            ca: ca.clone(),
            authenticator: match &trust.join {
                Some(join) => join.authenticator(),
                None => Arc::new(identity::join::NoJoin),
            },
            trust_domain: trust.trust_domain.clone(),
            dataplane_cert_ttl: trust.dataplane_cert_ttl,
        }),
        tracing: tracing.clone(),
    };
    if let (Some(listener), Some(tls)) = (grpc_tcp, grpc_tls) {
        let router = grpc::router(&grpc_state, &health_service).map_err(|e| StartError::Reflection(e.to_string()))?;
        let stop = services.clone();
        let domain = trust.trust_domain.clone();
        tasks.spawn(async move {
            let incoming = grpc::listen::tls_incoming(listener, tls, domain, stop.clone());
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await {
                tracing::error!(%error, "gRPC (TCP) server failed");
            }
        });
    }
    if let Some(listener) = grpc_uds {
        let router = grpc::router(&grpc_state, &health_service).map_err(|e| StartError::Reflection(e.to_string()))?;
        let stop = services.clone();
        let allowed = trust.socket_allow_uids.clone();
        tasks.spawn(async move {
            let incoming = grpc::listen::unix_incoming(listener, allowed, stop.clone());
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await {
                tracing::error!(%error, "gRPC (Unix socket) server failed");
            }
        });
    }

    let node_state = Arc::new(node_api::NodeState {
        store: store.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        registry: registry.clone(),
        reports: spool.stats.clone(),
        mode,
        draining: shutdown.clone(),
        redis,
        token_sha256: config.node_api_token.as_ref().map(|t| node_api::token_sha256(t.expose())),
        tracing: tracing.clone(),
    });
    let node_stop = services.clone();
    tasks.spawn(async move {
        let app = node_api::router(node_state);
        if let Err(error) = axum::serve(node_listener, app).with_graceful_shutdown(node_stop.cancelled_owned()).await {
            tracing::error!(%error, "node API failed");
        }
    });

    let children = CancellationToken::new();
    let supervisor_task = if config.dataplanes > 0 {
        // Config validation gives a supervising agent a socket: its dataplanes never need certificates.
        let agent_target = match &socket_path {
            Some(path) => format!("unix:{}", path.display()),
            None => unreachable!("a supervising agent always has a gRPC socket"),
        };
        let supervisor = supervisor::Supervisor {
            bin: config.dataplane_bin.clone(),
            count: config.dataplanes,
            agent: agent_target,
            listen: config.dataplane_listen,
            node_id: config.node_id.clone(),
            log_json: config.log_json,
            grace: config.shutdown_grace,
            log_masked_headers: config.log_masked_headers.clone(),
        };
        Some(tokio::spawn(supervisor.run(children.clone())))
    } else {
        None
    };
    tasks.close();

    shutdown.cancelled().await;
    grpc::set_health(&health_reporter, tonic_health::ServingStatus::NotServing).await;
    children.cancel();
    if let Some(task) = supervisor_task {
        let _ = task.await;
    }
    services.cancel();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within the grace period");
    }
    // The writer seals what it holds, then the uploader delivers within the grace period; the rest
    // stays in the spool for the next start.
    spool_writes.cancel();
    let _ = spool_task.await;
    drop(spool);
    uploads.cancel();
    let _ = upload_task.await;
    if let Some(tracing) = &tracing {
        tracing.flush(std::time::Duration::from_secs(2)).await;
    }
    if let Some(path) = &socket_path {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("agent stopped");
    Ok(())
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr: addr.to_string(), source })
}

/// Binds the Unix socket, replacing a stale socket file left by a killed agent (never another file).
fn bind_unix(path: &Path) -> Result<UnixListener, StartError> {
    let err =
        |source: std::io::Error| StartError::Bind { what: "gRPC socket", addr: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is serving this socket",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        } else {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
    }
    UnixListener::bind(path).map_err(err)
}

fn write_addr_file(
    path: &Path,
    node: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    socket: Option<&Path>,
    pki: Option<&Path>,
) -> Result<(), StartError> {
    let body = serde_json::json!({
        "node": node.map(|a| a.to_string()),
        "grpc": grpc.map(|a| a.to_string()),
        "grpc_socket": socket.map(|p| p.display().to_string()),
        "pki_dir": pki.map(|p| p.display().to_string()),
        "pid": std::process::id(),
    });
    let tmp: PathBuf = path.with_extension("tmp");
    let err = |source| StartError::AddrFile { path: path.display().to_string(), source };
    std::fs::write(&tmp, body.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn log_start(config: &Config, node: Option<SocketAddr>, grpc: Option<SocketAddr>, socket: Option<&Path>) {
    let node = node.map(|a| a.to_string()).unwrap_or_default();
    let grpc = grpc.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let socket = socket.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
    match &config.source {
        Source::Cloud(cloud) => {
            let claims = &cloud.token.claims;
            tracing::info!(
                mode = "cloud", org = %claims.org, envs = ?claims.envs, cpg = %claims.cpg, gate = %cloud.gate_url,
                token_signature = if cloud.token.verified { "verified" } else { "not verified (no --cloud-token-key)" },
                license_bytes = cloud.license.len, license = %cloud.license.fingerprint(),
                node_id = %config.node_id, %node, %grpc, %socket, tags = ?config.tags.to_list(),
                "hgw-agent starting"
            );
        }
        Source::Local(local) => {
            let reports =
                local.reports_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into());
            tracing::info!(
                mode = "local", dir = %local.dir.display(), %reports, node_id = %config.node_id, %node, %grpc, %socket,
                tags = ?config.tags.to_list(), license = local.license.is_some(),
                "hgw-agent starting"
            );
        }
    }
}
