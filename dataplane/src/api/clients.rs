//! The upstream clients the endpoints of an API use, chosen when a route table is built.
//!
//! Clients are cached by the options that shape their connection pool, and the cache outlives route
//! tables: a config update that does not change an endpoint's options keeps its warm connections.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::routes::Api;
use crate::http::upstream::{ClientKey, UpstreamClient};

/// Clients by pool options, kept across route table updates.
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: HashMap<ClientKey, UpstreamClient>,
}

impl ClientCache {
    /// The clients `apis` need: existing ones are reused, missing ones created, and clients no API
    /// uses any more are forgotten (in-flight requests keep theirs through the old table).
    pub fn select(&mut self, apis: &BTreeMap<String, Arc<Api>>) -> HashMap<ClientKey, UpstreamClient> {
        let mut selected = HashMap::new();
        for api in apis.values() {
            for key in api.groups().flat_map(|g| g.endpoints()).flat_map(|e| e.client_keys()) {
                if selected.contains_key(key) {
                    continue;
                }
                let client = self.clients.entry(key.clone()).or_insert_with(|| key.build()).clone();
                selected.insert(key.clone(), client);
            }
        }
        self.clients.retain(|key, _| selected.contains_key(key));
        selected
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::tests::api;

    #[test]
    fn cache_reuses_clients_across_tables_and_forgets_unused() {
        let mut cache = ClientCache::default();
        let mut apis = BTreeMap::new();
        let a = Arc::new(Api::try_from(api("a", &[("", "/a")], "http://b")).unwrap());
        apis.insert("a".to_owned(), a.clone());
        let first = cache.select(&apis);
        assert_eq!(first.len(), 1);
        let second = cache.select(&apis);
        assert_eq!(second.len(), 1);
        assert_eq!(cache.len(), 1);

        let mut other = api("b", &[("", "/b")], "http://b");
        other.endpoint_groups[0].endpoints[0].http = Some(hgw_proto::v1::HttpClientOptions {
            connect_timeout_ms: 10,
            read_timeout_ms: 10,
            idle_timeout_ms: 10,
            keep_alive: false,
            ..Default::default()
        });
        let b = Arc::new(Api::try_from(other).unwrap());
        let mut only_b = BTreeMap::new();
        only_b.insert("b".to_owned(), b);
        cache.select(&only_b);
        assert_eq!(cache.len(), 1);
        cache.select(&BTreeMap::new());
        assert!(cache.is_empty());
    }
}
