//! JWKS for JWT plans using the `JWKS_URL` resolver.
//!
//! The agent fetches each key set and puts it into the compiled plan, so dataplanes verify tokens
//! without ever calling the identity provider. Key sets are refreshed every `--jwks-refresh-interval`
//! (and fetched at once when a new URL appears); a change re-deploys the affected APIs like any other
//! change. A failed fetch keeps the last good key set; until a first fetch succeeds the plan refuses
//! every token (fail closed) and the reason is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Default refresh period: key rotations reach dataplanes within this.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger documents are refused: a JWKS is a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Default)]
struct Entry {
    /// The last good key set (JWKS JSON).
    jwks: Option<String>,
    last_error: Option<String>,
}

pub struct JwksCache {
    http: reqwest::Client,
    entries: Mutex<HashMap<String, Entry>>,
    wake: Notify,
    refresh: Duration,
}

impl JwksCache {
    pub fn new(refresh: Duration) -> Result<JwksCache, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hgw-agent/", env!("CARGO_PKG_VERSION")))
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(JwksCache { http, entries: Mutex::new(HashMap::new()), wake: Notify::new(), refresh })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached key set of `url`; a URL seen for the first time is fetched right away.
    pub fn get(&self, url: &str) -> Option<String> {
        let mut entries = self.lock();
        match entries.get(url) {
            Some(entry) => entry.jwks.clone(),
            None => {
                entries.insert(url.to_owned(), Entry::default());
                self.wake.notify_one();
                None
            }
        }
    }

    /// Starts `url` with a key set fetched earlier (a restored last-good snapshot) unless one is known
    /// already, and asks for a fetch: the seed serves until the identity provider answers.
    pub fn seed(&self, url: &str, jwks: &str) {
        let mut entries = self.lock();
        let entry = entries.entry(url.to_owned()).or_default();
        if entry.jwks.is_none() {
            entry.jwks = Some(jwks.to_owned());
        }
        self.wake.notify_one();
    }

    /// Fetches every known URL now and then every refresh period; calls `changed` (the store's
    /// re-deploy) when a key set changed. A callback, so this module does not depend on the store that
    /// reads it.
    pub async fn run(self: Arc<Self>, changed: impl Fn() + Send + 'static, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.refresh) => {}
            }
            let urls: Vec<String> = self.lock().keys().cloned().collect();
            let mut any_changed = false;
            for url in urls {
                let fetched = self.fetch(&url).await;
                let mut entries = self.lock();
                let entry = entries.entry(url.clone()).or_default();
                match fetched {
                    Ok(jwks) => {
                        if entry.jwks.as_deref() != Some(jwks.as_str()) {
                            tracing::info!(%url, "JWKS fetched");
                            entry.jwks = Some(jwks);
                            any_changed = true;
                        }
                        entry.last_error = None;
                    }
                    Err(error) => {
                        tracing::warn!(%url, %error, kept_previous = entry.jwks.is_some(), "JWKS fetch failed");
                        entry.last_error = Some(error);
                    }
                }
            }
            if any_changed {
                changed();
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let bytes = response.bytes().await.map_err(|e| format!("reading the body: {e}"))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("the document is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        if set.keys.is_empty() {
            return Err("the JWKS has no keys".into());
        }
        serde_json::to_string(&set).map_err(|e| e.to_string())
    }
}
