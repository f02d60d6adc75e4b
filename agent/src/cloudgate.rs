//! Client of the Gravitee Cloud Gate: `/sync` (the bridge protocol) and `/reports`.
//!
//! The Cloud Gate is closed source; its paths and encodings are inferred from Gravitee's public bridge
//! protocol (GRAVITEE-FORMATS.md). They are all in [`paths`] and this module's types, so adjusting to the
//! real service is a change in one place. Every call carries `Authorization: Bearer <Cloud Token>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::secret::Secret;

/// Cloud Gate paths, relative to the gate's base URL.
pub mod paths {
    pub const EVENTS_LATEST: &str = "/sync/_bridge/eventsLatest/_search";
    /// Older bridges answer 404 on [`EVENTS_LATEST`]; Gravitee then retries here.
    pub const EVENTS_LATEST_LEGACY: &str = "/sync/_bridge/events/_searchLatest";
    pub const SUBSCRIPTIONS: &str = "/sync/_bridge/subscriptions/_search";
    pub const API_KEYS: &str = "/sync/_bridge/keys/_findByCriteria";
    pub const EVENTS: &str = "/sync/_bridge/events";
    pub const REPORTS: &str = "/reports";
}

/// Per-request limit: a Cloud Gate call that takes longer is retried rather than waited on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies are quoted in logs up to this many characters.
const ERROR_BODY_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("Cloud Gate unreachable ({path}): {detail}")]
    Transport { path: String, detail: String },
    #[error("Cloud Gate answered {status} on {path}: {body}")]
    Status { path: String, status: u16, body: String },
    #[error("Cloud Gate answer on {path} is not what the bridge protocol says: {detail}")]
    Decode { path: String, detail: String },
}

impl GateError {
    /// Whether the same call may succeed later (network, overload, server errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            GateError::Transport { .. } => true,
            GateError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            GateError::Decode { .. } => true,
        }
    }

    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            GateError::Transport { .. } => "transport",
            GateError::Status { status: 401 | 403, .. } => "unauthorized",
            GateError::Status { .. } => "status",
            GateError::Decode { .. } => "decode",
        }
    }
}

/// Gravitee's Event (API deployments, gateway heartbeats).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// A JSON document encoded as a string.
    pub payload: Option<String>,
    pub parent_id: Option<String>,
    pub properties: Map<String, Value>,
    pub environments: Vec<String>,
    pub organizations: Vec<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

impl Event {
    pub fn property(&self, name: &str) -> Option<String> {
        match self.properties.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// The `payload` of an API event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiEventPayload {
    pub id: String,
    pub name: String,
    pub environment_id: Option<String>,
    pub definition_version: Option<String>,
    #[serde(rename = "type")]
    pub api_type: Option<String>,
    pub lifecycle_state: Option<String>,
    pub deployed_at: Option<Value>,
    /// The API definition: a JSON string (Gravitee's form) or, leniently, an object.
    pub definition: Option<Value>,
}

/// Gravitee's Subscription (used by API-key, JWT and mTLS plans).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub api: String,
    pub plan: String,
    pub application: String,
    pub client_id: Option<String>,
    /// The subscribing application's name, when the control plane sends it (EL `#subscription`).
    pub application_name: Option<String>,
    pub status: String,
    pub starting_at: Option<i64>,
    pub ending_at: Option<i64>,
    pub updated_at: Option<i64>,
    /// mTLS plans: the subscribing application's client certificate, as Gravitee stores it on the
    /// subscription (the PEM, base64-encoded; a plain PEM is accepted too). Public, not a secret.
    pub client_certificate: Option<String>,
}

/// Gravitee's ApiKey. `key` is a secret: `Debug` redacts it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub key: String,
    pub subscriptions: Vec<String>,
    pub subscription: Option<String>,
    pub plan: Option<String>,
    pub api: Option<String>,
    pub application: Option<String>,
    pub expire_at: Option<i64>,
    pub revoked: bool,
    pub paused: bool,
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .field("subscriptions", &self.subscriptions)
            .field("revoked", &self.revoked)
            .field("paused", &self.paused)
            .finish()
    }
}

/// Body of the events search.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCriteria {
    pub from: i64,
    pub to: i64,
    pub types: Vec<&'static str>,
    pub environments: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionCriteria {
    pub apis: Vec<String>,
    pub statuses: Vec<&'static str>,
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCriteria {
    pub subscriptions: Vec<String>,
    pub include_revoked: bool,
    pub from: i64,
    pub to: i64,
}

pub struct CloudGate {
    http: reqwest::Client,
    base: String,
    token: Secret,
    /// Set once the gate answered 404 on the new events search: use the legacy path from then on.
    legacy_search: AtomicBool,
}

impl CloudGate {
    pub fn new(base: &str, token: Secret, extra_ca_pem: Option<&[u8]>) -> Result<CloudGate, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("hgw-agent/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(CloudGate {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            legacy_search: AtomicBool::new(false),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(&self, request: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response, GateError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| GateError::Transport { path: path.to_owned(), detail: describe_reqwest(&e) })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let mut body: String = body.chars().take(ERROR_BODY_EXCERPT).collect();
        if body.is_empty() {
            body = status.canonical_reason().unwrap_or("no body").to_owned();
        }
        Err(GateError::Status { path: path.to_owned(), status: status.as_u16(), body })
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &B,
    ) -> Result<T, GateError> {
        let request = self.http.post(format!("{}{path}", self.base)).query(query).json(body);
        let response = self.send(request, path).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GateError::Transport { path: path.to_owned(), detail: describe_reqwest(&e) })?;
        serde_json::from_slice(&bytes).map_err(|e| GateError::Decode { path: path.to_owned(), detail: e.to_string() })
    }

    /// One page of the latest event per API.
    pub async fn latest_events(
        &self,
        criteria: &EventCriteria,
        page: usize,
        size: usize,
    ) -> Result<Vec<Event>, GateError> {
        let query = [("group", "API_ID".to_owned()), ("page", page.to_string()), ("size", size.to_string())];
        if !self.legacy_search.load(Ordering::Relaxed) {
            match self.post_json(paths::EVENTS_LATEST, &query, criteria).await {
                Err(GateError::Status { status: 404, .. }) => {
                    tracing::info!(
                        "the Cloud Gate has no {}; using {}",
                        paths::EVENTS_LATEST,
                        paths::EVENTS_LATEST_LEGACY
                    );
                    self.legacy_search.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.post_json(paths::EVENTS_LATEST_LEGACY, &query, criteria).await
    }

    pub async fn subscriptions(&self, criteria: &SubscriptionCriteria) -> Result<Vec<Subscription>, GateError> {
        self.post_json(paths::SUBSCRIPTIONS, &[], criteria).await
    }

    pub async fn api_keys(&self, criteria: &KeyCriteria) -> Result<Vec<ApiKey>, GateError> {
        self.post_json(paths::API_KEYS, &[], criteria).await
    }

    pub async fn create_event(&self, event: &Event) -> Result<Event, GateError> {
        self.post_json(paths::EVENTS, &[], event).await
    }

    pub async fn update_event(&self, event: &Event) -> Result<Event, GateError> {
        let path = format!("{}/{}", paths::EVENTS, event.id);
        let request = self.http.put(format!("{}{path}", self.base)).json(event);
        let response = self.send(request, paths::EVENTS).await?;
        response.json().await.map_err(|e| GateError::Decode { path, detail: e.to_string() })
    }

    /// Uploads one gzip-compressed NDJSON batch of report documents (shared bytes: a retry copies nothing).
    pub async fn post_reports(&self, gzipped_ndjson: bytes::Bytes) -> Result<(), GateError> {
        let request = self
            .http
            .post(format!("{}{}", self.base, paths::REPORTS))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(gzipped_ndjson);
        self.send(request, paths::REPORTS).await.map(|_| ())
    }
}

/// reqwest's Display hides the cause; walk the chain for a useful one-liner (it never holds the token).
fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
