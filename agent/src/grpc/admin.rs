//! `hgw.v1.Admin`: read-only views for operators (`grpcurl ... hgw.v1.Admin/ListDataplanes`).

use std::sync::Arc;

use hgw_proto::v1::admin_server::Admin;
use hgw_proto::v1::{
    DumpConfigRequest, DumpConfigResponse, GetSyncStatusRequest, GetSyncStatusResponse, ListDataplanesRequest,
    ListDataplanesResponse, RejectedApi, RestoredSnapshot,
};
use tonic::{Request, Response, Status};

use super::registry::DataplaneRegistry;
use crate::store::ConfigStore;
use crate::sync::SyncStatus;

pub struct AdminService {
    pub store: Arc<ConfigStore>,
    pub registry: Arc<DataplaneRegistry>,
    pub status: Arc<SyncStatus>,
    pub mode: &'static str,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_dataplanes(
        &self,
        _: Request<ListDataplanesRequest>,
    ) -> Result<Response<ListDataplanesResponse>, Status> {
        Ok(Response::new(ListDataplanesResponse {
            current_version: self.store.current().version,
            dataplanes: self.registry.list(),
        }))
    }

    async fn get_sync_status(
        &self,
        _: Request<GetSyncStatusRequest>,
    ) -> Result<Response<GetSyncStatusResponse>, Status> {
        let sync = self.status.snapshot();
        let snapshot = self.store.current();
        Ok(Response::new(GetSyncStatusResponse {
            mode: self.mode.to_owned(),
            initial_done: sync.initial_done,
            counter: sync.counter,
            next_sync_time_ms: sync.next_sync_time,
            last_on_error: sync.last_on_error,
            last_error_message: sync.last_error_message.unwrap_or_default(),
            total_on_errors: sync.total_on_errors,
            current_version: snapshot.version,
            deployed_apis: snapshot.apis.len() as u32,
            rejected_apis: snapshot.rejected.len() as u32,
            subscriptions: snapshot.subscriptions as u32,
            api_keys: snapshot.api_keys as u32,
            restored_snapshot: snapshot.restored.as_ref().map(|r| RestoredSnapshot {
                source: r.source.to_owned(),
                version: r.version,
                written_at_ms: r.written_at_ms,
                written_by_node: r.written_by_node.clone(),
            }),
        }))
    }

    async fn dump_config(&self, _: Request<DumpConfigRequest>) -> Result<Response<DumpConfigResponse>, Status> {
        let snapshot = self.store.current();
        Ok(Response::new(DumpConfigResponse {
            version: snapshot.version,
            apis: snapshot.apis.values().map(|api| redacted(api)).collect(),
            rejected: snapshot
                .rejected
                .values()
                .map(|r| RejectedApi {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    source: r.origin.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
        }))
    }
}

/// The API as dumped for operators: every secret replaced, by the one redaction function.
fn redacted(api: &hgw_proto::v1::Api) -> hgw_proto::v1::Api {
    hgw_proto::redact::api(api)
}
