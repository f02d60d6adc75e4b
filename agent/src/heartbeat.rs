//! The gateway heartbeat: how the node appears in the control plane's list of gateways.
//!
//! Gravitee's form: a `GATEWAY_STARTED` Event created once (`POST /_bridge/events`), its
//! `last_heartbeat_at` property refreshed every 5 s (`PUT /_bridge/events/{id}`), and turned into
//! `GATEWAY_STOPPED` on a clean shutdown.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::cloudgate::{CloudGate, Event, GateError};
use crate::metrics::Metrics;
use crate::sync::now_ms;

/// Gravitee's heartbeat period.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The stop event gets this long at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Heartbeat {
    pub gate: Arc<CloudGate>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    pub tags: Vec<String>,
    pub tenant: Option<String>,
    pub cluster_id: Option<String>,
    pub environments: Vec<String>,
    pub organization: String,
    /// Port of the dataplanes' HTTP listener, shown in the control plane.
    pub port: u16,
}

impl Heartbeat {
    fn event(&self, started_at: i64) -> Event {
        let hostname = hostname();
        let payload = json!({
            "id": self.node_id,
            "version": env!("CARGO_PKG_VERSION"),
            "tags": self.tags,
            "hostname": hostname,
            "ip": local_ip(),
            "port": self.port.to_string(),
            "tenant": self.tenant,
            "clusterId": self.cluster_id,
        });
        let mut properties = Map::new();
        properties.insert("id".into(), Value::String(self.node_id.clone()));
        properties.insert("started_at".into(), Value::String(started_at.to_string()));
        properties.insert("last_heartbeat_at".into(), Value::String(started_at.to_string()));
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: "GATEWAY_STARTED".into(),
            payload: Some(payload.to_string()),
            parent_id: None,
            properties,
            environments: self.environments.clone(),
            organizations: vec![self.organization.clone()],
            created_at: Some(started_at),
            updated_at: Some(started_at),
        }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut event = self.event(now_ms());
        let mut created = false;
        loop {
            let now = now_ms();
            event.updated_at = Some(now);
            event.properties.insert("last_heartbeat_at".into(), Value::String(now.to_string()));
            let result =
                if created { self.gate.update_event(&event).await } else { self.gate.create_event(&event).await };
            match result {
                Ok(_) => {
                    created = true;
                    self.metrics.heartbeats_ok.inc();
                }
                Err(GateError::Status { status: 404, .. }) if created => {
                    tracing::warn!("the Cloud Gate no longer knows this gateway's heartbeat event; creating it again");
                    created = false;
                    self.metrics.heartbeat_errors.inc();
                }
                Err(error) => {
                    tracing::warn!(error = %error, "heartbeat failed");
                    self.metrics.heartbeat_errors.inc();
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            }
        }
        if created {
            event.event_type = "GATEWAY_STOPPED".into();
            event.updated_at = Some(now_ms());
            match tokio::time::timeout(STOP_TIMEOUT, self.gate.update_event(&event)).await {
                Ok(Ok(_)) => tracing::info!("gateway stop reported to the Cloud Gate"),
                Ok(Err(error)) => tracing::warn!(error = %error, "could not report the gateway stop"),
                Err(_) => tracing::warn!("reporting the gateway stop timed out"),
            }
        }
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The first non-loopback IPv4 address of this host (what the control plane shows), else loopback.
fn local_ip() -> String {
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|addrs| {
            addrs
                .filter_map(|iface| iface.address.and_then(|a| a.as_sockaddr_in().map(|sin| sin.ip())))
                .find(|ip| !ip.is_loopback())
        })
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}
