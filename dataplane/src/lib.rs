//! hgw-dataplane: an HTTP proxy configured by hgw-agent over gRPC.
//!
//! The agent pushes compiled APIs ([`agent_client`]), which become an immutable [`routes::RouteTable`]
//! published through `ArcSwap`; the [`proxy`] reads the current snapshot without locks for every
//! request, and each request's metrics record flows to the agent through [`analytics`].

pub mod admin;
pub mod agent_client;
pub mod agent_link;
pub mod analytics;
pub mod backoff;
pub mod body;
pub mod config;
pub mod cors;
pub mod counters;
pub mod el;
pub mod endpoints;
pub mod flows;
pub mod health;
pub mod invoke;
pub mod join;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod policies;
pub mod proxy;
pub mod redact;
pub mod routes;
pub mod security;
pub mod shutdown;
pub mod templates;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::analytics::AnalyticsSink;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// State shared by the proxy, the agent client and the admin listener.
#[derive(Debug)]
pub struct Shared {
    /// The current route table; replaced whole on every applied update.
    pub routes: ArcSwap<RouteTable>,
    /// Set once, after the first applied update.
    ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub analytics: Arc<AnalyticsSink>,
    /// Rate-limit / quota / spike-arrest counters, held by the agent (they outlive route-table updates).
    pub counters: Arc<counters::Counters>,
    /// The root shutdown token: cancelled means draining.
    shutdown: CancellationToken,
    /// OpenTelemetry export; `None` (no OTLP endpoint) means requests are never traced.
    pub tracing: Option<hgw_otel::Tracing>,
    /// `--trace-apis all`: trace every API, not only those whose definition enables tracing.
    pub trace_all: bool,
}

impl Shared {
    pub fn new(
        metrics: Arc<Metrics>,
        analytics: Arc<AnalyticsSink>,
        counters: Arc<counters::Counters>,
        shutdown: CancellationToken,
    ) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            ready: AtomicBool::new(false),
            metrics,
            analytics,
            counters,
            shutdown,
            tracing: None,
            trace_all: false,
        }
    }

    /// Traces requests through `tracing` (all APIs, or those whose definition asks, per `trace_all`).
    pub fn with_tracing(mut self, tracing: Option<hgw_otel::Tracing>, trace_all: bool) -> Shared {
        self.tracing = tracing;
        self.trace_all = trace_all;
        self
    }

    /// Whether a configuration has been applied (the route table is the agent's, not the empty one).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Called after the table is stored, so a reader that sees `ready` also sees the table.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// Why the dataplane could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Link(#[from] agent_link::LinkError),
    #[error(transparent)]
    Tracing(#[from] hgw_otel::StartError),
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run_until_signal(config: Config) -> Result<(), RunError> {
    let root = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(root.clone()));
    if config.lifeline_stdin {
        shutdown::watch_lifeline(root.clone());
    }
    run(config, root).await
}

/// Runs the dataplane until `shutdown` is cancelled, then: stop accepting, let in-flight requests
/// finish within the grace period, flush analytics within what is left of it, and return.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let link = agent_link::AgentLink::new(config.agent.clone(), config.agent_tls.as_ref())?;
    let tracing = match &config.otel {
        Some(settings) => Some(hgw_otel::Tracing::start(settings, "hgw-dataplane", &config.id)?),
        None => None,
    };
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
        workers = config.workers, version = env!("CARGO_PKG_VERSION"), "hgw-dataplane started"
    );

    let metrics = Arc::new(Metrics::default());
    let (sink, reporter) = analytics::channel(
        config.analytics_queue,
        config.log_max_payload,
        config.log_masked_headers.clone(),
        metrics.clone(),
        config.id.clone(),
    );
    let counter_backend =
        counters::AgentBackend::start(link.connect_lazy(), config.id.clone(), config.rate_limit_timeout);
    let counters = Arc::new(counters::Counters::new(Arc::new(counter_backend)));
    if let Some(settings) = &config.otel {
        tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, service = %settings.service_name,
            sampler = ?settings.sampler, trace_apis = ?config.trace_apis, "exporting OpenTelemetry traces");
    }
    let trace_all = config.trace_apis == config::TraceApis::All;
    let shared =
        Arc::new(Shared::new(metrics, sink, counters, shutdown.clone()).with_tracing(tracing.clone(), trace_all));

    let (flush_tx, flush_rx) = oneshot::channel();
    if let Some(config::AgentTls { credential: config::Credential::JoinToken { file, token }, .. }) = &config.agent_tls
    {
        let token = join::TokenFile::new(file.clone(), token.clone());
        tokio::spawn(join::run(link.clone(), token, config.id.clone(), shutdown.child_token()));
    }
    let reporter_task = tokio::spawn(reporter.run(link.clone(), flush_rx));
    let identity = agent_client::Identity {
        dataplane_id: config.id.clone(),
        tags: config.tags.clone(),
        hostname: config::hostname(),
        listen_address: listen_addr.to_string(),
    };
    let agent_task = tokio::spawn(agent_client::run(link.clone(), identity, shared.clone(), shutdown.child_token()));
    let admin_cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(admin_listener, shared.clone(), admin_cancel.clone()));
    // Probes stop with the HTTP server: no health records are made while draining.
    tokio::spawn(health::run(shared.clone(), shutdown.child_token()));

    let deadline = proxy::serve(listener, shared.clone(), shutdown, config.shutdown_grace).await;
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
