//! `hgw.v1.Analytics`: receives record batches from dataplanes and acknowledges each once the reports
//! spool holds it durably (so a dataplane keeps records the agent could not take yet, and resends them
//! after a reconnect). A full spool makes the acknowledgement wait: that is the backpressure.

use std::sync::Arc;

use hgw_proto::analytics::{API_TABLE_METADATA, UnknownApi};
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
                let lines = match batch_lines(&batch, &node_id) {
                    Ok(lines) => lines,
                    Err(error) => {
                        // Malformed: resending it cannot help, and no part of it is taken.
                        tracing::warn!(dataplane = %batch.dataplane_id, %error, "analytics batch refused");
                        let _ = tx.send(Err(Status::invalid_argument(error.to_string()))).await;
                        break;
                    }
                };
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
        let mut response = Response::new(ReceiverStream::new(rx));
        response.metadata_mut().insert(API_TABLE_METADATA, tonic::metadata::MetadataValue::from_static("1"));
        Ok(response)
    }
}

/// A batch's report documents as NDJSON lines: metrics (with their API's fields from the batch's
/// table), health checks, logs.
fn batch_lines(batch: &ReportRequest, node_id: &str) -> Result<Vec<String>, UnknownApi> {
    let mut lines = Vec::with_capacity(batch.records.len() + batch.health_checks.len() + batch.logs.len());
    for record in &batch.records {
        lines.push(es::metrics_line(record, batch.api_of(record)?, node_id));
    }
    lines.extend(batch.health_checks.iter().map(|h| es::health_document(h, node_id).to_string()));
    lines.extend(batch.logs.iter().map(|l| es::log_document(l, node_id).to_string()));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use hgw_proto::v1::{MetricsRecord, ReportApi};

    use super::*;

    #[test]
    fn a_batch_becomes_documents_with_its_apis_and_a_record_pointing_nowhere_refuses_it() {
        let mut batch = ReportRequest {
            apis: vec![ReportApi { id: "a1".into(), name: "Orders".into(), ..ReportApi::default() }],
            records: vec![
                MetricsRecord { request_id: "r1".into(), api: 1, ..MetricsRecord::default() },
                MetricsRecord { request_id: "r2".into(), api_id: "own".into(), ..MetricsRecord::default() },
            ],
            ..ReportRequest::default()
        };
        let lines = batch_lines(&batch, "n").expect("a well-formed batch");
        let docs: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((docs[0]["api-id"].as_str(), docs[0]["api-name"].as_str()), (Some("a1"), Some("Orders")));
        assert_eq!(docs[1]["api-id"], "own");
        batch.records.push(MetricsRecord { request_id: "r3".into(), api: 2, ..MetricsRecord::default() });
        let error = batch_lines(&batch, "n").expect_err("API 2 is not in the table");
        assert_eq!(error.to_string(), "a metrics record points at API 2 of a batch that carries 1");
    }
}
