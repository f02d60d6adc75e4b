//! `hgw-cloudgate-sim`: a stand-in for Gravitee Cloud's Cloud Gate, as strict as the real service is
//! expected to be (see GRAVITEE-FORMATS.md, `/sync` and Reports), plus a `/_sim` control API through
//! which tests publish APIs, mint Cloud Tokens, inject faults and read what clients sent.
//!
//! Cloud Gate paths, encodings and status codes live in [`bridge`] and [`reports`] only, because the
//! real Cloud Gate is closed source and its inferred behaviour must stay easy to adjust.

pub mod bridge;
pub mod control;
pub mod data;
pub mod reports;
pub mod server;
pub mod state;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use server::{Announce, Sim};
use state::Store;
use token::{CloudClaims, TokenAuthority};

/// Everything the sim needs to start; the binary fills it from its command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`127.0.0.1:0` picks a free port, reported in the announce line).
    pub listen: SocketAddr,
    /// Where `ca.pem` and `token-key.pem` are written.
    pub state_dir: PathBuf,
    /// Optional Gravitee local registry files or plain definitions to publish at start.
    pub data_dir: Option<PathBuf>,
    /// Answer 404 on `eventsLatest/_search`, like older bridges, so clients must fall back.
    pub legacy_search: bool,
}

/// State shared by every connection.
pub struct SimState {
    store: Mutex<Store>,
    tokens: TokenAuthority,
    legacy_search: bool,
}

impl SimState {
    pub fn new(tokens: TokenAuthority, legacy_search: bool) -> Self {
        Self { store: Mutex::new(Store::default()), tokens, legacy_search }
    }

    /// Locks the store. A handler that panicked mid-update cannot leave it half-written (every
    /// update is a single insert), so a poisoned lock is still safe to use.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn tokens(&self) -> &TokenAuthority {
        &self.tokens
    }

    /// Authenticates a Cloud Gate call; refusals are counted and logged without the token.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<CloudClaims, ApiError> {
        let header = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
        self.tokens.verify_header(header).map_err(|e| {
            self.store().stats.unauthorized += 1;
            tracing::warn!(reason = %e, "unauthorized Cloud Gate call");
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        })
    }

    /// Refuses (403, counted) a call naming an environment its token does not grant.
    pub fn check_environments(&self, claims: &CloudClaims, named: Option<&[String]>) -> Result<(), ApiError> {
        let Some(denied) = named.unwrap_or_default().iter().find(|env| !claims.envs.contains(env)) else {
            return Ok(());
        };
        self.store().stats.forbidden += 1;
        tracing::warn!(environment = %denied, "forbidden environment");
        Err(ApiError::new(StatusCode::FORBIDDEN, format!("the token does not grant environment `{denied}`")))
    }
}

/// An error answer: `{"message": ..., "http_status_code": N}`, the shape Gravitee's APIs use.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"message": self.message, "http_status_code": self.status.as_u16()});
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON request body; an empty or malformed body is a 400 naming the problem.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed body: {e}")))
}

/// Answers any route the sim does not know with a JSON 404, like the rest of its errors.
pub async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// Answers a known route called with the wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

/// Starts the sim, prints the announce line on stdout, and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
    use std::io::Write;

    let sim = Sim::bind(config).await?;
    let line = serde_json::to_string(sim.announce())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(url = %sim.announce().url, "cloud gate sim ready");
    sim.serve(shutdown).await
}

#[cfg(test)]
mod tests;
