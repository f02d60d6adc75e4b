//! The HTTPS server: TLS (h2 and HTTP/1.1 via ALPN) in front of the axum router, with the layer
//! that counts Cloud Gate calls and injects faults. Faults sit below axum because dropping a
//! connection without an answer is something only the connection owner can do.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::state::FaultTarget;
use super::{ApiError, Config, SimState, bridge, control, data, reports, tls, token};

/// A client that connects and never finishes the handshake must not hold a task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body accepted: a full reports batch (1000 documents) gzip-compressed is far
/// smaller; anything above is a client bug.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The line printed on stdout once the sim listens; field order is part of the contract.
#[derive(Debug, Clone, Serialize)]
pub struct Announce {
    pub url: String,
    pub ca: PathBuf,
    pub token_key: PathBuf,
}

/// A bound, not yet serving, sim.
pub struct Sim {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<SimState>,
    announce: Announce,
}

impl Sim {
    /// Generates the CA, server certificate and token key, writes `ca.pem` and `token-key.pem`,
    /// loads `--data`, and binds the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
        let state_dir = std::fs::canonicalize(&config.state_dir)?;
        let tls = tls::generate().context("generating the TLS certificates")?;
        let tokens = token::TokenAuthority::generate().context("generating the token key")?;
        let ca = state_dir.join("ca.pem");
        let token_key = state_dir.join("token-key.pem");
        std::fs::write(&ca, &tls.ca_pem).with_context(|| format!("writing {}", ca.display()))?;
        std::fs::write(&token_key, tokens.public_key_pem())
            .with_context(|| format!("writing {}", token_key.display()))?;

        let state = Arc::new(SimState::new(tokens, config.legacy_search));
        if let Some(dir) = &config.data_dir {
            let loaded = data::load_dir(&mut state.store(), dir)?;
            tracing::info!(dir = %dir.display(), apis = loaded, "loaded data");
        }

        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local = listener.local_addr()?;
        let host = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls.server_config),
            state,
            announce: Announce { url: format!("https://{}", SocketAddr::new(host, local.port())), ca, token_key },
        })
    }

    pub fn announce(&self) -> &Announce {
        &self.announce
    }

    pub fn state(&self) -> Arc<SimState> {
        self.state.clone()
    }

    /// Accepts connections until `shutdown` resolves. Open connections are not drained: the sim
    /// plays a remote service that may vanish at any time.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
        let router = router(self.state.clone());
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually EMFILE: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| handle(state.clone(), router.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

/// Every route of the sim; unknown routes and methods answer JSON errors too.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .merge(bridge::routes())
        .merge(reports::routes())
        .merge(control::routes())
        .fallback(super::unknown_route)
        .method_not_allowed_fallback(super::wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Returned to hyper to make it close the connection without answering (the `drop` fault).
#[derive(Debug)]
struct DroppedByFault;

impl fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Which fault target a path belongs to; `None` for the control API, which faults never touch.
fn fault_target(path: &str) -> Option<FaultTarget> {
    if path == "/sync" || path.starts_with("/sync/") {
        Some(FaultTarget::Sync)
    } else if path == "/reports" || path.starts_with("/reports/") {
        Some(FaultTarget::Reports)
    } else {
        None
    }
}

/// The label a call is counted under in `/_sim/stats`: method and route, ids replaced by `{id}`,
/// unknown routes folded into one label so a misbehaving client cannot grow the map without bound.
pub fn route_label(method: &Method, path: &str) -> String {
    const KNOWN: &[&str] = &[
        bridge::EVENTS_LATEST_SEARCH,
        bridge::EVENTS_SEARCH_LATEST,
        bridge::SUBSCRIPTIONS_SEARCH,
        bridge::KEYS_FIND,
        bridge::EVENTS,
        reports::REPORTS,
    ];
    if let Some(known) = KNOWN.iter().find(|k| **k == path) {
        return format!("{method} {known}");
    }
    match path.strip_prefix(bridge::EVENTS).and_then(|rest| rest.strip_prefix('/')) {
        Some(id) if !id.is_empty() && !id.contains('/') => {
            format!("{method} {}/{{id}}", bridge::EVENTS)
        }
        _ => format!("{method} (unknown route)"),
    }
}

async fn handle(
    state: Arc<SimState>,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, DroppedByFault> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(target) = fault_target(&path) {
        let fault = {
            let mut store = state.store();
            *store.stats.calls.entry(route_label(&method, &path)).or_default() += 1;
            store.take_fault(target)
        };
        if let Some(fault) = fault {
            tracing::info!(%method, %path, ?fault, "injecting fault");
            if fault.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            }
            if fault.drop {
                return Err(DroppedByFault);
            }
            if let Some(status) = fault.status {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(ApiError::new(status, "fault injected by hgw-cloudgate-sim").into_response());
            }
        }
    }
    let response = match router.oneshot(req.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "call");
    Ok(response)
}
