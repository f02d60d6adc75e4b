//! hgw-dataplane: an HTTP proxy configured by hgw-agent over gRPC.
//!
//! The agent pushes compiled APIs ([`agent::config_stream`]), which become an immutable
//! [`api::routes::RouteTable`] published through `ArcSwap`; the [`gateway`] reads the current snapshot
//! without locks for every request, and each request's metrics record flows to the agent through
//! [`telemetry::analytics`] and [`agent::analytics_stream`].
//!
//! The folders, each using only those after it: [`agent`] (the link to the agent), [`gateway`] (the
//! request pipeline), [`api`] (the compiled model of the deployed APIs), [`policies`], [`http`]
//! (listener, upstream clients, TLS, bodies) and [`telemetry`] (metrics, traces, logs, records).
//! `tests/layers.rs` checks it.

pub mod admin;
pub mod agent;
pub mod api;
pub mod config;
pub mod gateway;
pub mod http;
pub mod policies;
pub mod shutdown;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::agent::{analytics_stream, cache_client, config_stream, counters_client, introspect_client, join, link};
use crate::config::Config;
use crate::gateway::Shared;
use crate::http::{listen, tls_server};
use crate::policies::counters;
use crate::telemetry::metrics::Metrics;

/// Why the dataplane could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Tracing(#[from] hgw_otel::StartError),
    #[error("HTTPS certificate: {0}")]
    Certificate(#[from] tls_server::CertificateError),
}

/// The TLS side of the HTTPS listener for `https` (reads and checks the certificate files).
pub fn https_listener(https: &config::Https) -> Result<tls_server::ServerTls, tls_server::CertificateError> {
    let files =
        https.certificates.iter().map(|(cert, key)| tls_server::CertKeyFiles { cert: cert.clone(), key: key.clone() });
    let client = https.client_auth.as_ref().map(|trust| tls_server::ClientVerification {
        truststore: trust.truststore.clone(),
        required: trust.mode == config::ClientAuth::Required,
    });
    tls_server::ServerTls::load(files.collect(), https.h2, client.as_ref())
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run_until_signal(config: Config) -> Result<(), RunError> {
    let root = CancellationToken::new();
    shutdown::cancel_on_signal(root.clone());
    if config.lifeline_stdin {
        shutdown::watch_lifeline(root.clone());
    }
    run(config, root).await
}

/// Runs the dataplane until `shutdown` is cancelled, then: stop accepting, let in-flight requests
/// finish within the grace period, flush analytics within what is left of it, and return.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let link = link::AgentLink::new(config.agent.clone(), config.agent_tls.as_ref())?;
    let tracing = match &config.otel {
        Some(settings) => Some(hgw_otel::Tracing::start(settings, "hgw-dataplane", &config.id)?),
        None => None,
    };
    let tls = config.https.as_ref().map(https_listener).transpose()?;
    let listener = listen::bind(config.listen, config.reuse_port).map_err(|source| RunError::Bind {
        what: "HTTP",
        addr: config.listen,
        source,
    })?;
    let admin_listener = listen::bind(config.admin_listen, false).map_err(|source| RunError::Bind {
        what: "admin",
        addr: config.admin_listen,
        source,
    })?;
    let bound = |l: &tokio::net::TcpListener, addr| l.local_addr().unwrap_or(addr);
    let listen_addr = bound(&listener, config.listen);
    let admin_addr = bound(&admin_listener, config.admin_listen);
    if let Some(path) = &config.addr_file {
        listen::write_addr_file(path, listen_addr, admin_addr)
            .map_err(|source| RunError::AddrFile { path: path.clone(), source })?;
    }
    tracing::info!(
        listen = %listen_addr, admin = %admin_addr, agent = %config.agent, id = %config.id,
        workers = config.workers, https = tls.is_some(), version = env!("CARGO_PKG_VERSION"), "hgw-dataplane started"
    );
    let metrics = Arc::new(Metrics::default());
    if let Some(tls) = &tls {
        let acceptor = tls.acceptor.clone();
        let source = move || acceptor.certificate_expiries();
        let _ = metrics.tls_certificates.set(crate::telemetry::metrics::CertificateSource(Box::new(source)));
    }
    let acceptor = tls.map(|tls| {
        if let Some(interval) = config.https.as_ref().and_then(|https| https.reload_interval) {
            tokio::spawn(tls.reloader.run(interval, shutdown.child_token()));
        }
        tls.acceptor
    });

    let (sink, reporter) = analytics_stream::channel(
        config.analytics_queue,
        config.log_max_payload,
        config.log_masked_headers.clone(),
        metrics.clone(),
        config.id.clone(),
    );
    let counter_backend =
        counters_client::AgentBackend::start(link.connect_lazy(), config.id.clone(), config.rate_limit_timeout);
    let counters = Arc::new(counters::Counters::new(Arc::new(counter_backend)));
    if let Some(settings) = &config.otel {
        tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, service = %settings.service_name,
            sampler = ?settings.sampler, trace_apis = ?config.trace_apis, "exporting OpenTelemetry traces");
    }
    let trace_all = config.trace_apis == config::TraceApis::All;
    let shared = Arc::new(
        Shared::new(metrics, sink, counters, shutdown.clone())
            .with_introspector(Arc::new(introspect_client::AgentIntrospector::new(link.connect_lazy())))
            .with_remote_cache(Arc::new(cache_client::AgentCache::new(link.connect_lazy())))
            .with_tracing(tracing.clone(), trace_all)
            .with_limits(config.limits.clone())
            .with_trusted_proxies(config.trusted_proxies.clone())
            .with_paths(config.paths)
            .with_websocket_idle_timeout(config.websocket_idle_timeout),
    );

    let (flush_tx, flush_rx) = oneshot::channel();
    if let Some(config::AgentTls { credential: config::Credential::JoinToken { file, token }, .. }) = &config.agent_tls
    {
        let token = join::TokenFile::new(file.clone(), token.clone());
        tokio::spawn(join::run(link.clone(), token, config.id.clone(), shutdown.child_token()));
    }
    let reporter_task = tokio::spawn(reporter.run(link.clone(), flush_rx));
    let identity = config_stream::Identity {
        dataplane_id: config.id.clone(),
        tags: config.tags.clone(),
        hostname: config::hostname(),
        listen_address: listen_addr.to_string(),
    };
    let agent_task = tokio::spawn(config_stream::run(link.clone(), identity, shared.clone(), shutdown.child_token()));
    let admin_cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(admin_listener, shared.clone(), admin_cancel.clone()));
    // Probes stop with the HTTP server: no health records are made while draining.
    tokio::spawn(gateway::probes::run(shared.clone(), shutdown.child_token()));

    let deadline = gateway::serve::serve(listener, acceptor, shared.clone(), shutdown, config.shutdown_grace).await;
    let _ = agent_task.await;
    let _ = flush_tx.send(deadline);
    let _ = reporter_task.await;
    if let Some(tracing) = &tracing {
        // Spans of the last requests, within what is left of the grace period (at least a moment).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tracing.flush(left.max(std::time::Duration::from_millis(500))).await;
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    tracing::info!("hgw-dataplane stopped");
    Ok(())
}
