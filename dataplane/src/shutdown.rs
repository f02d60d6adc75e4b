//! Turns SIGTERM / SIGINT into the cancellation of the root token that every task watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Waits for the first SIGTERM or SIGINT and cancels `root` (graceful drain). A second signal ends
/// the process at once, for an operator who does not want to wait for the grace period.
pub async fn cancel_on_signal(root: CancellationToken) {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT will stop the dataplane");
            let _ = tokio::signal::ctrl_c().await;
            root.cancel();
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: draining"),
    }
    root.cancel();
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::warn!("second signal: exiting without waiting for the drain");
    std::process::exit(1);
}
