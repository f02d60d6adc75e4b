//! The config stream to the agent (`hgw.v1.ConfigDiscovery/Stream`): hello, then apply each update
//! atomically and answer ACK, or NACK and keep the previous table. The stream is re-opened with
//! jittered backoff whenever it breaks; the last table keeps serving meanwhile.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hgw_proto::v1 as pb;
use hgw_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::agent::backoff::Backoff;
use crate::agent::link::AgentLink;
use crate::api::clients::ClientCache;
use crate::api::conversion::ConversionError;
use crate::api::routes::{Api, RouteTable};
use crate::gateway::Shared;
use crate::http::upstream::error_chain;

/// A full update of 10,000 APIs is several MiB; the gRPC default of 4 MiB is too small.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("agent rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the agent closed the stream")]
    Closed,
}

/// Why an update was NACKed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Conversion(#[from] ConversionError),
}

/// The API set the dataplane serves, as the agent last described it.
#[derive(Debug, Default)]
pub struct ConfigState {
    version: u64,
    apis: BTreeMap<String, Arc<Api>>,
    clients: ClientCache,
}

impl ConfigState {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies an update to a copy of the set: all of it, or (on error) none of it.
    pub fn apply(&mut self, update: pb::StreamResponse) -> Result<Arc<RouteTable>, ApplyError> {
        let pb::StreamResponse { version, nonce: _, full, upserts, removals } = update;
        let mut next = if full { BTreeMap::new() } else { self.apis.clone() };
        for api in upserts {
            // Equal revisions mean equal behaviour: keep the running API (and its round-robin
            // position) rather than recompiling it, which also makes a full resync cheap.
            if !api.revision.is_empty()
                && let Some(current) = self.apis.get(&api.id)
                && current.revision == api.revision
            {
                next.insert(api.id, current.clone());
                continue;
            }
            let api = Api::try_from(api)?;
            next.insert(api.id.clone(), Arc::new(api));
        }
        if !full {
            for id in &removals {
                next.remove(id);
            }
        }
        let clients = self.clients.select(&next);
        let table = Arc::new(RouteTable::new(version, next.clone(), clients));
        self.version = version;
        self.apis = next;
        Ok(table)
    }
}

/// What the dataplane tells the agent about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub dataplane_id: String,
    pub tags: Vec<String>,
    pub hostname: String,
    pub listen_address: String,
}

/// Keeps the config stream open until `cancel`; never returns early.
pub async fn run(agent: AgentLink, identity: Identity, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut state = ConfigState::default();
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            result = stream_once(&agent, &identity, &shared, &mut state, &mut backoff) => result,
        };
        shared.metrics.agent_connected.store(0, Ordering::Relaxed);
        let delay = backoff.next_delay();
        let Err(error) = result;
        tracing::warn!(
            error = %error_chain(&error), retry_in_ms = delay.as_millis() as u64,
            "config stream to the agent lost; serving the last configuration"
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn stream_once(
    agent: &AgentLink,
    identity: &Identity,
    shared: &Shared,
    state: &mut ConfigState,
    backoff: &mut Backoff,
) -> Result<Infallible, AgentError> {
    let channel = agent.connect().await?;
    let (tx, rx) = mpsc::channel(4);
    let hello = pb::Hello {
        dataplane_id: identity.dataplane_id.clone(),
        tags: identity.tags.clone(),
        version: state.version(),
        hostname: identity.hostname.clone(),
        pid: std::process::id(),
        build_version: env!("CARGO_PKG_VERSION").to_owned(),
        listen_address: identity.listen_address.clone(),
    };
    // Queued before the call so it is the first message whatever the agent waits for.
    tx.send(request(pb::stream_request::Kind::Hello(hello))).await.map_err(|_| AgentError::Closed)?;
    let mut inbound = ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.metrics.agent_connected.store(1, Ordering::Relaxed);
    tracing::info!(version = state.version(), "config stream to the agent open");

    while let Some(update) = inbound.message().await? {
        // A stream that delivered an update is healthy: the next failure retries quickly.
        backoff.reset();
        let version = update.version;
        let nonce = update.nonce.clone();
        let (full, upserts, removals) = (update.full, update.upserts.len(), update.removals.len());
        let answer = match state.apply(update) {
            Ok(table) => {
                let apis = table.apis().len();
                shared.routes.store(table);
                shared.mark_ready();
                let m = &shared.metrics;
                m.config_version.store(version, Ordering::Relaxed);
                m.apis.store(apis as u64, Ordering::Relaxed);
                m.config_acks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(version, full, upserts, removals, apis, "configuration applied");
                pb::stream_request::Kind::Ack(pb::Ack { version, nonce })
            }
            Err(error) => {
                shared.metrics.config_nacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(version, %error, "configuration rejected; keeping the previous one");
                pb::stream_request::Kind::Nack(pb::Nack { version, nonce, error: error.to_string() })
            }
        };
        tx.send(request(answer)).await.map_err(|_| AgentError::Closed)?;
    }
    Err(AgentError::Closed)
}

fn request(kind: pb::stream_request::Kind) -> pb::StreamRequest {
    pb::StreamRequest { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::tests::api;

    fn update(version: u64, full: bool, upserts: Vec<pb::Api>, removals: &[&str]) -> pb::StreamResponse {
        pb::StreamResponse {
            version,
            nonce: format!("n{version}"),
            full,
            upserts,
            removals: removals.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ids(table: &RouteTable) -> Vec<&str> {
        table.apis().keys().map(String::as_str).collect()
    }

    #[test]
    fn full_then_deltas() {
        let mut state = ConfigState::default();
        let t = state
            .apply(update(1, true, vec![api("a", &[("", "/a")], "http://b"), api("b", &[("", "/b")], "http://b")], &[]))
            .unwrap();
        assert_eq!((t.version(), ids(&t)), (1, vec!["a", "b"]));

        let t = state.apply(update(2, false, vec![api("c", &[("", "/c")], "http://b")], &["a"])).unwrap();
        assert_eq!((t.version(), ids(&t)), (2, vec!["b", "c"]));
        assert!(t.lookup("", "/a").is_none());
        assert_eq!(t.lookup("", "/c/x").unwrap().api.id, "c");

        let t = state.apply(update(3, true, vec![api("d", &[("", "/d")], "http://b")], &[])).unwrap();
        assert_eq!((t.version(), ids(&t)), (3, vec!["d"]));
        assert_eq!(state.version(), 3);
    }

    #[test]
    fn a_bad_update_changes_nothing() {
        let mut state = ConfigState::default();
        state.apply(update(1, true, vec![api("a", &[("", "/a")], "http://b")], &[])).unwrap();
        let err = state
            .apply(update(
                2,
                false,
                vec![api("b", &[("", "/b")], "http://b"), api("bad", &[("", "/bad")], "ftp://x")],
                &["a"],
            ))
            .unwrap_err();
        assert!(err.to_string().contains("\"bad\""));
        assert_eq!(state.version(), 1);
        let t = state.apply(update(3, false, vec![], &[])).unwrap();
        assert_eq!(ids(&t), vec!["a"]);
    }

    #[test]
    fn equal_revisions_keep_the_running_api() {
        let mut state = ConfigState::default();
        state.apply(update(1, true, vec![api("a", &[("", "/a")], "http://b")], &[])).unwrap();
        let before = state.apis["a"].clone();
        state.apply(update(2, true, vec![api("a", &[("", "/a")], "http://b")], &[])).unwrap();
        assert!(Arc::ptr_eq(&before, &state.apis["a"]));
        let mut changed = api("a", &[("", "/a2")], "http://b");
        changed.revision = "r2".into();
        state.apply(update(3, true, vec![changed], &[])).unwrap();
        assert!(!Arc::ptr_eq(&before, &state.apis["a"]));
    }
}
