//! `hgw.v1.Analytics`: receives record batches from dataplanes and acknowledges each once the reports
//! spool holds it durably (so a dataplane keeps records the agent could not take yet, and resends them
//! after a reconnect). A full spool makes the acknowledgement wait: that is the backpressure.

use std::sync::Arc;

use hgw_proto::v1::analytics_server::Analytics;
use hgw_proto::v1::{ReportRequest, ReportResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::reports::es;
use crate::reports::spool::{AppendError, SpoolHandle};

pub struct AnalyticsService {
    pub spool: SpoolHandle,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    pub cancel: CancellationToken,
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    type ReportStream = ReceiverStream<Result<ReportResponse, Status>>;

    async fn report(&self, request: Request<Streaming<ReportRequest>>) -> Result<Response<Self::ReportStream>, Status> {
        // Batches are attributed to the certificate's dataplane, never to the id a message claims.
        let certified = request.extensions().get::<Caller>().and_then(|c| c.bound_dataplane().map(str::to_owned));
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let spool = self.spool.clone();
        let metrics = self.metrics.clone();
        let node_id = self.node_id.clone();
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            loop {
                let mut batch = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(batch)) => batch,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(error = %status.message(), "analytics stream ended");
                            break;
                        }
                    },
                    _ = cancel.cancelled() => break,
                };
                if let Some(id) = &certified {
                    batch.dataplane_id.clone_from(id);
                }
                metrics.analytics_records_received.add(batch.records.len() as u64);
                let lines: Vec<String> = batch
                    .records
                    .iter()
                    .map(|r| es::metrics_line(r, &node_id))
                    .chain(batch.health_checks.iter().map(|h| es::health_document(h, &node_id).to_string()))
                    .chain(batch.logs.iter().map(|l| es::log_document(l, &node_id).to_string()))
                    .collect();
                let appended = tokio::select! {
                    appended = spool.append(&lines) => appended,
                    // Not acknowledged: the dataplane keeps the batch and resends it.
                    _ = cancel.cancelled() => Err(AppendError::Closed),
                };
                if let Err(error) = appended {
                    let status = match &error {
                        AppendError::TooLarge { .. } => {
                            metrics.reports_batches_too_large.inc();
                            tracing::warn!(dataplane = %batch.dataplane_id, %error, "analytics batch refused");
                            Status::invalid_argument(error.to_string())
                        }
                        _ => Status::unavailable(error.to_string()),
                    };
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                // Counted once the batch is ours, so a resent batch does not count its drops twice.
                if batch.dropped > 0 {
                    metrics.analytics_records_dropped_by_dataplanes.add(batch.dropped);
                    tracing::warn!(dataplane = %batch.dataplane_id, dropped = batch.dropped, "dataplane reports dropped analytics records");
                }
                if tx.send(Ok(ReportResponse { sequence: batch.sequence })).await.is_err() {
                    break;
                }
                metrics.reports_records_acknowledged.add(lines.len() as u64);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
