//! The request pipeline, one file per phase: [`serve`] accepts connections, [`route`] matches a
//! request to an API (and starts its [`trace`]), [`exchange`] runs plan and security, the request
//! flows, the endpoint call ([`invoke`]) and the response flows, [`record`] makes its metrics record,
//! [`respond`] makes the gateway's own answers, and [`websocket`] turns an upgrade handshake into a
//! tunnel. [`probes`] checks the endpoints' health beside it.
//! They read the [`Shared`] state: the current route table and the process's telemetry.

pub mod context;
pub mod exchange;
pub mod invoke;
pub mod probes;
pub mod record;
pub mod respond;
pub mod route;
pub mod serve;
pub mod trace;
pub mod websocket;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::api::routes::RouteTable;
use crate::policies::counters::Counters;
use crate::telemetry::analytics::AnalyticsSink;
use crate::telemetry::metrics::Metrics;

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
    pub counters: Arc<Counters>,
    /// Who introspects OAuth2 tokens (the agent).
    pub introspector: Arc<dyn crate::api::security::Introspector>,
    /// Who keeps the entries of `cache-redis` resources (the agent).
    pub remote_cache: Arc<dyn crate::policies::cache::RemoteCache>,
    /// The root shutdown token: cancelled means draining.
    shutdown: CancellationToken,
    /// OpenTelemetry export; `None` (no OTLP endpoint) means requests are never traced.
    pub tracing: Option<hgw_otel::Tracing>,
    /// `--trace-apis all`: trace every API, not only those whose definition enables tracing.
    pub trace_all: bool,
    /// The listener's connection, header and body limits.
    pub limits: crate::http::limits::Limits,
    /// Whose `X-Forwarded-For` entries name the client (ip-filtering, records, EL).
    pub trusted_proxies: crate::http::forwarded::TrustedProxies,
    /// How request paths are normalised (escaped slashes, merging).
    pub paths: crate::http::path::PathOptions,
    /// `--websocket-idle-timeout`: a WebSocket tunnel quiet this long is closed (`None`: never).
    pub websocket_idle_timeout: Option<std::time::Duration>,
    /// Client connections and the WebSocket tunnels they became: draining waits for them, up to the
    /// grace period.
    pub tasks: tokio_util::task::TaskTracker,
}

impl Shared {
    pub fn new(
        metrics: Arc<Metrics>,
        analytics: Arc<AnalyticsSink>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            ready: AtomicBool::new(false),
            metrics,
            analytics,
            counters,
            introspector: Arc::new(crate::api::security::NoIntrospector),
            remote_cache: Arc::new(crate::policies::cache::NoRemoteCache),
            shutdown,
            tracing: None,
            trace_all: false,
            limits: crate::http::limits::Limits::default(),
            trusted_proxies: crate::http::forwarded::TrustedProxies::default(),
            paths: crate::http::path::PathOptions::default(),
            websocket_idle_timeout: None,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Serves with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: crate::http::limits::Limits) -> Shared {
        self.limits = limits;
        self
    }

    /// Reads `X-Forwarded-For` as far as `trusted` proxies vouch for it.
    pub fn with_trusted_proxies(mut self, trusted: crate::http::forwarded::TrustedProxies) -> Shared {
        self.trusted_proxies = trusted;
        self
    }

    /// Normalises request paths with `paths`.
    pub fn with_paths(mut self, paths: crate::http::path::PathOptions) -> Shared {
        self.paths = paths;
        self
    }

    /// Traces requests through `tracing` (all APIs, or those whose definition asks, per `trace_all`).
    pub fn with_tracing(mut self, tracing: Option<hgw_otel::Tracing>, trace_all: bool) -> Shared {
        self.tracing = tracing;
        self.trace_all = trace_all;
        self
    }

    /// Introspects OAuth2 tokens with `introspector` (the agent; the default refuses every token).
    pub fn with_introspector(mut self, introspector: Arc<dyn crate::api::security::Introspector>) -> Shared {
        self.introspector = introspector;
        self
    }

    /// Reads and writes `cache-redis` entries through `remote` (the agent; the default misses).
    pub fn with_remote_cache(mut self, remote: Arc<dyn crate::policies::cache::RemoteCache>) -> Shared {
        self.remote_cache = remote;
        self
    }

    /// Closes WebSocket tunnels that carry nothing for `idle` (`None`: never).
    pub fn with_websocket_idle_timeout(mut self, idle: Option<std::time::Duration>) -> Shared {
        self.websocket_idle_timeout = idle;
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
