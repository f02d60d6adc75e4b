//! `hgw.v1.ConfigDiscovery`: pushes the deployment set to each dataplane.
//!
//! Per stream: wait for `Hello`, send the full set (filtered by the dataplane's own tags) once the agent
//! has a first config, then one delta per new version. At most one update is unacknowledged at a time;
//! the agent's view of what the dataplane holds changes only on ACK, so after a NACK the next delta is
//! computed against what the dataplane really kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hgw_proto::v1::config_discovery_server::ConfigDiscovery;
use hgw_proto::v1::{Api, StreamRequest, StreamResponse, stream_request::Kind};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::registry::{DataplaneRegistry, Session};
use crate::identity::{Caller, Peer};
use crate::store::Snapshot;
use crate::tags::ShardingTags;

/// A dataplane must say hello this quickly after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DiscoveryService {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub registry: Arc<DataplaneRegistry>,
    pub cancel: CancellationToken,
    /// Each update sent is a `push` span in the trace of the sync round that made its version.
    pub tracing: Option<hgw_otel::Tracing>,
}

#[tonic::async_trait]
impl ConfigDiscovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<StreamResponse, Status>>;

    async fn stream(&self, request: Request<Streaming<StreamRequest>>) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.extensions().get::<Peer>().map_or_else(|| "unknown".to_owned(), Peer::describe);
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(StreamRequest { kind: Some(Kind::Hello(hello)) }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument("the first message of a config stream must be Hello"));
            }
            Ok(Ok(None)) => return Err(Status::cancelled("the stream closed before Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
        };
        let tags =
            ShardingTags::parse(&hello.tags).map_err(|e| Status::invalid_argument(format!("Hello.tags: {e}")))?;
        // A certified dataplane acts under the id in its certificate only (an empty id means that one).
        let mut hello = hello;
        if let Some(certified) = caller.bound_dataplane() {
            let asked = hello.dataplane_id.trim();
            if !asked.is_empty() && asked != certified {
                tracing::warn!(%peer, asked, certified, "config stream refused: Hello names another dataplane than the certificate");
                return Err(Status::permission_denied(format!(
                    "this certificate is for dataplane `{certified}`, not `{asked}`"
                )));
            }
            hello.dataplane_id = certified.to_owned();
        }
        let session = self.registry.connect(&hello, &peer).map_err(|error| {
            tracing::warn!(%peer, dataplane = %hello.dataplane_id, "config stream refused: {error}");
            Status::already_exists(error)
        })?;
        tracing::info!(dataplane = %session.id, %peer, held_version = hello.version, "dataplane connected");
        let (tx, rx) = mpsc::channel(4);
        let stream = ConfigSession {
            session,
            tags,
            registry: self.registry.clone(),
            snapshots: self.snapshots.clone(),
            outbound: tx,
            held: HashMap::new(),
            pending: None,
            last_sent_version: None,
            tracing: self.tracing.clone(),
        };
        tokio::spawn(stream.run(inbound, self.cancel.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Pending {
    version: u64,
    nonce: String,
    held_after: HashMap<String, String>,
    /// The `push` span, ended by the dataplane's ACK or NACK.
    span: Option<(hgw_otel::Trace, hgw_otel::Span)>,
}

struct ConfigSession {
    session: Session,
    tags: ShardingTags,
    registry: Arc<DataplaneRegistry>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    outbound: mpsc::Sender<Result<StreamResponse, Status>>,
    /// api id → revision the dataplane has acknowledged.
    held: HashMap<String, String>,
    pending: Option<Pending>,
    last_sent_version: Option<u64>,
    tracing: Option<hgw_otel::Tracing>,
}

impl ConfigSession {
    async fn run(mut self, mut inbound: Streaming<StreamRequest>, cancel: CancellationToken) {
        let outcome = loop {
            if self.pending.is_none()
                && let Err(e) = self.send_if_newer().await
            {
                break e;
            }
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(StreamRequest { kind: Some(kind) })) => self.on_message(kind),
                    Ok(Some(StreamRequest { kind: None })) => {}
                    Ok(None) => break "stream closed by the dataplane".to_owned(),
                    Err(status) => break format!("stream error: {}", status.message()),
                },
                changed = self.snapshots.changed(), if self.pending.is_none() => {
                    if changed.is_err() {
                        break "agent config store closed".to_owned();
                    }
                }
                _ = cancel.cancelled() => {
                    let _ = self.outbound.send(Err(Status::unavailable("agent shutting down"))).await;
                    break "agent shutting down".to_owned();
                }
            }
        };
        self.registry.disconnect(&self.session);
        tracing::info!(dataplane = %self.session.id, reason = %outcome, "dataplane disconnected");
    }

    fn on_message(&mut self, kind: Kind) {
        match kind {
            Kind::Ack(ack) => match self.pending.take() {
                Some(pending) if pending.nonce == ack.nonce => {
                    if let Some((mut trace, mut span)) = pending.span {
                        span.event("acknowledged", Vec::new());
                        trace.end(span);
                    }
                    self.held = pending.held_after;
                    self.registry.acked(&self.session, pending.version, self.held.len());
                    tracing::debug!(dataplane = %self.session.id, version = pending.version, "update acknowledged");
                }
                other => {
                    tracing::warn!(dataplane = %self.session.id, nonce = %ack.nonce, "ACK for an update not in flight; ignored");
                    self.pending = other;
                }
            },
            Kind::Nack(nack) => match self.pending.take() {
                Some(pending) if pending.nonce == nack.nonce => {
                    if let Some((mut trace, mut span)) = pending.span {
                        span.error(nack.error.clone());
                        trace.end(span);
                    }
                    self.registry.nacked(&self.session, &nack.error);
                    tracing::error!(dataplane = %self.session.id, version = pending.version, error = %nack.error, "dataplane refused an update; it keeps its previous config");
                }
                other => self.pending = other,
            },
            Kind::Hello(_) => tracing::warn!(dataplane = %self.session.id, "second Hello on a stream; ignored"),
        }
    }

    /// Sends the next update when the store holds a version this dataplane has not been sent.
    async fn send_if_newer(&mut self) -> Result<(), String> {
        let snapshot = self.snapshots.borrow_and_update().clone();
        if !snapshot.initialized || self.last_sent_version.is_some_and(|v| v >= snapshot.version) {
            return Ok(());
        }
        let wanted: Vec<&Arc<Api>> = snapshot.apis.values().filter(|api| self.tags.matches_api(&api.tags)).collect();
        let full = self.last_sent_version.is_none();
        let upserts: Vec<Api> = wanted
            .iter()
            .filter(|api| full || self.held.get(&api.id) != Some(&api.revision))
            .map(|api| for_dataplanes(api))
            .collect();
        let wanted_ids: std::collections::HashSet<&str> = wanted.iter().map(|api| api.id.as_str()).collect();
        let removals: Vec<String> = if full {
            Vec::new()
        } else {
            self.held.keys().filter(|id| !wanted_ids.contains(id.as_str())).cloned().collect()
        };
        let held_after = wanted.iter().map(|api| (api.id.clone(), api.revision.clone())).collect();
        let nonce = uuid::Uuid::new_v4().to_string();
        let update = StreamResponse { version: snapshot.version, nonce: nonce.clone(), full, upserts, removals };
        let span = self.push_span(&snapshot, &update);
        tracing::debug!(dataplane = %self.session.id, version = snapshot.version, full, upserts = update.upserts.len(), removals = update.removals.len(), "sending update");
        self.outbound.send(Ok(update)).await.map_err(|_| "dataplane stream gone".to_owned())?;
        self.pending = Some(Pending { version: snapshot.version, nonce, held_after, span });
        self.last_sent_version = Some(snapshot.version);
        Ok(())
    }

    /// A `push` span under the sync round that made this version (a new trace for a restored set or
    /// a local-mode reload), subject to the sampler.
    fn push_span(&self, snapshot: &Snapshot, update: &StreamResponse) -> Option<(hgw_otel::Trace, hgw_otel::Span)> {
        let tracing = self.tracing.as_ref()?;
        let trace = match snapshot.origin {
            Some(origin) => match tracing.sample(Some(origin), None) {
                hgw_otel::Sampling::Sampled(trace) => trace,
                hgw_otel::Sampling::NotSampled { .. } => return None,
            },
            None => tracing.start_trace()?,
        };
        let mut span = trace.root("push", hgw_otel::SpanKind::Producer);
        span.set("hgw.dataplane.id", self.session.id.clone());
        span.set("hgw.config.version", snapshot.version as i64);
        span.set("hgw.config.full", update.full);
        span.set("hgw.config.upserts", update.upserts.len() as i64);
        span.set("hgw.config.removals", update.removals.len() as i64);
        Some((trace, span))
    }
}

/// The API as dataplanes receive it: without what only the agent uses (an OAuth2 plan's introspection
/// settings, which hold the authorization server's client secret; the `cache-redis` resources' Redis
/// addresses and passwords).
fn for_dataplanes(api: &Api) -> Api {
    let mut api = api.clone();
    api.redis_caches.clear();
    for plan in &mut api.plans {
        if let Some(oauth2) = plan.oauth2.as_mut() {
            oauth2.introspection = None;
        }
    }
    api
}

#[cfg(test)]
mod for_dataplanes_tests {
    use hgw_proto::v1 as pb;

    #[test]
    fn introspection_settings_never_leave_the_agent() {
        let api = pb::Api {
            plans: vec![pb::Plan {
                oauth2: Some(pb::OAuth2Security {
                    introspection: Some(pb::OAuth2Introspection {
                        client_secret: "s3cret".into(),
                        ..Default::default()
                    }),
                    mode_strict: true,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sent = super::for_dataplanes(&api);
        let oauth2 = sent.plans[0].oauth2.as_ref().expect("plan settings kept");
        assert!(oauth2.introspection.is_none() && oauth2.mode_strict);
    }

    #[test]
    fn redis_cache_connections_never_leave_the_agent() {
        let mut api = pb::Api::default();
        api.redis_caches.insert(
            "a/cache/0011".into(),
            pb::RedisCacheConnection { password: "s3cret".into(), ..Default::default() },
        );
        assert!(super::for_dataplanes(&api).redis_caches.is_empty());
    }
}
