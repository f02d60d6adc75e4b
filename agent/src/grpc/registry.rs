//! Which dataplanes are connected and which config version each one runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hgw_proto::v1::{DataplaneStatus, Hello};

use crate::sync::now_ms;

/// Disconnected dataplanes stay listed this long, so an operator can see what went away.
const KEEP_DISCONNECTED: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct DataplaneRegistry {
    dataplanes: Mutex<BTreeMap<String, Entry>>,
    next_session: AtomicU64,
}

struct Entry {
    status: DataplaneStatus,
    /// The stream currently owning this id (a reconnect replaces it; the old stream's end must not
    /// mark the new one disconnected).
    session: u64,
}

/// Handle of one config stream.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    number: u64,
}

impl DataplaneRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.dataplanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new config stream. A second stream for an id whose stream is live is refused (the
    /// first keeps running): an impostor cannot take over a dataplane's id, and the real dataplane
    /// reconnects once its old stream is gone.
    pub fn connect(&self, hello: &Hello, peer: &str) -> Result<Session, String> {
        let number = self.next_session.fetch_add(1, Ordering::Relaxed);
        let id = if hello.dataplane_id.trim().is_empty() {
            format!("{peer}#{number}")
        } else {
            hello.dataplane_id.trim().to_owned()
        };
        let now = now_ms();
        let status = DataplaneStatus {
            dataplane_id: id.clone(),
            hostname: hello.hostname.clone(),
            pid: hello.pid,
            tags: hello.tags.clone(),
            build_version: hello.build_version.clone(),
            listen_address: hello.listen_address.clone(),
            connected: true,
            acked_version: hello.version,
            last_nack_error: String::new(),
            connected_at_ms: now,
            last_seen_ms: now,
            api_count: 0,
        };
        let mut dataplanes = self.lock();
        if dataplanes.get(&id).is_some_and(|entry| entry.status.connected) {
            return Err(format!("dataplane id `{id}` already has a live config stream"));
        }
        dataplanes.insert(id.clone(), Entry { status, session: number });
        Ok(Session { id, number })
    }

    fn update(&self, session: &Session, change: impl FnOnce(&mut DataplaneStatus)) {
        if let Some(entry) = self.lock().get_mut(&session.id)
            && entry.session == session.number
        {
            entry.status.last_seen_ms = now_ms();
            change(&mut entry.status);
        }
    }

    pub fn acked(&self, session: &Session, version: u64, api_count: usize) {
        self.update(session, |s| {
            s.acked_version = version;
            s.api_count = api_count as u32;
            s.last_nack_error.clear();
        });
    }

    pub fn nacked(&self, session: &Session, error: &str) {
        self.update(session, |s| s.last_nack_error = error.to_owned());
    }

    pub fn disconnect(&self, session: &Session) {
        self.update(session, |s| s.connected = false);
    }

    /// Every known dataplane; disconnected ones older than [`KEEP_DISCONNECTED`] are forgotten.
    pub fn list(&self) -> Vec<DataplaneStatus> {
        let cutoff = now_ms() - KEEP_DISCONNECTED.as_millis() as i64;
        let mut dataplanes = self.lock();
        dataplanes.retain(|_, e| e.status.connected || e.status.last_seen_ms >= cutoff);
        dataplanes.values().map(|e| e.status.clone()).collect()
    }

    pub fn connected(&self) -> usize {
        self.lock().values().filter(|e| e.status.connected).count()
    }
}
