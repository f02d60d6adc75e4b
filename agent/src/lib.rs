//! hgw-agent: the control agent of the hgw hybrid gateway.
//!
//! It owns the Cloud Token and license, syncs API definitions from the Cloud Gate (or a local folder),
//! compiles them into typed config, pushes that config to dataplanes over gRPC, receives their
//! analytics and uploads them to `/reports`. See ARCHITECTURE.md for the whole picture.

pub mod cloudgate;
pub mod config;
pub mod definition;
pub mod grpc;
pub mod heartbeat;
pub mod inject;
pub mod jwks;
pub mod last_good;
pub mod license;
pub mod local;
pub mod metrics;
pub mod monitor;
pub mod node_api;
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
}

/// Runs the agent until SIGINT/SIGTERM, then shuts down within the grace period.
pub async fn run(config: Config) -> Result<(), StartError> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    run_until(config, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Runs the agent until `shutdown` is cancelled.
///
/// Shutdown order matters: supervised dataplanes stop first (they finish requests and flush analytics
/// into this agent), then the config sources, gRPC and node API stop, the spool seals its last segment,
/// and the reports uploader delivers what it can within the grace period (the rest stays spooled).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let jwks = Arc::new(jwks::JwksCache::new(config.jwks_refresh_interval).map_err(StartError::GateClient)?);
    let store = Arc::new(
        store::ConfigStore::new(config.tags.clone())
            .with_tenant(config.tenant.clone())
            .with_jwks(jwks.clone())
            .with_api_key_location(config.api_key_header.clone(), config.api_key_query_param.clone()),
    );
    let status = Arc::new(sync::SyncStatus::default());
    let registry = Arc::new(grpc::registry::DataplaneRegistry::default());
    let mode = config.mode_name();
    // No I/O here: the pool connects on first use, so Redis may be down at start.
    let redis = config.redis.as_ref().map(crate::redis::Redis::new).transpose()?;

    // Bind everything first: a port conflict fails start-up before any background work begins.
    let node_listener = bind_tcp("node API", config.node_listen).await?;
    let grpc_tcp = match config.grpc_listen {
        Some(addr) => Some(bind_tcp("gRPC", addr).await?),
        None => None,
    };
    let socket_path = match (&config.grpc_socket, config.dataplanes) {
        (Some(path), _) => Some(path.clone()),
        (None, n) if n > 0 => {
            Some(std::env::temp_dir().join(format!("hgw-agent-{}", std::process::id())).join("agent.sock"))
        }
        (None, _) => None,
    };
    let grpc_uds = match &socket_path {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let node_addr = node_listener.local_addr().ok();
    let grpc_addr = grpc_tcp.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(path) = &config.addr_file {
        write_addr_file(path, node_addr, grpc_addr, socket_path.as_deref())?;
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
        metrics: metrics.clone(),
        grace: config.shutdown_grace,
    };

    log_start(&config, node_addr, grpc_addr, socket_path.as_deref());
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
            let last_good = last_good::LastGood::new(
                identity,
                config.node_id.clone(),
                redis.clone(),
                config.state_dir.as_deref(),
                metrics.clone(),
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
    tasks.spawn(jwks.run(store.clone(), services.clone()));
    if let Some(redis) = &redis {
        tasks.spawn(redis.clone().monitor(metrics.clone(), crate::redis::PING_INTERVAL, services.clone()));
    }

    // Without Redis the counters are this agent's own: exact for every dataplane it serves, not shared
    // with other hosts.
    let counters = Arc::new(match &redis {
        Some(redis) => ratelimit::CounterStore::Redis(ratelimit::RedisCounters::new(redis.clone())),
        None => ratelimit::CounterStore::Memory(ratelimit::MemoryCounters::default()),
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
        mode,
        node_id: config.node_id.clone(),
        cancel: services.clone(),
        redis: redis.clone(),
    };
    if let Some(listener) = grpc_tcp {
        let router = grpc::router(&grpc_state, &health_service).map_err(|e| StartError::Reflection(e.to_string()))?;
        let stop = services.clone();
        tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await {
                tracing::error!(%error, "gRPC (TCP) server failed");
            }
        });
    }
    if let Some(listener) = grpc_uds {
        let router = grpc::router(&grpc_state, &health_service).map_err(|e| StartError::Reflection(e.to_string()))?;
        let stop = services.clone();
        tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
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
        let agent_target = match (&socket_path, grpc_addr) {
            (Some(path), _) => format!("unix:{}", path.display()),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => unreachable!("a gRPC listener exists when dataplanes are supervised"),
        };
        let supervisor = supervisor::Supervisor {
            bin: config.dataplane_bin.clone(),
            count: config.dataplanes,
            agent: agent_target,
            listen: config.dataplane_listen,
            node_id: config.node_id.clone(),
            log_json: config.log_json,
            grace: config.shutdown_grace,
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
) -> Result<(), StartError> {
    let body = serde_json::json!({
        "node": node.map(|a| a.to_string()),
        "grpc": grpc.map(|a| a.to_string()),
        "grpc_socket": socket.map(|p| p.display().to_string()),
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
