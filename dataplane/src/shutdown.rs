//! Turns SIGTERM / SIGINT, and the loss of the supervisor's lifeline, into the cancellation of the
//! root token that every task watches.

use std::io::Read;
use std::time::Duration;

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

/// How long an orphaned dataplane drains before it exits: in-flight requests get this long, but not
/// the whole grace period, since its agent (config, analytics, counters) is gone.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// `--lifeline-stdin`: watches stdin on a thread of its own (a blocking read costs nothing while the
/// agent lives). End-of-file means the process holding the pipe's write end is gone: cancel `root`
/// (drain), and exit after [`ORPHAN_GRACE`] if the drain has not finished by then.
pub fn watch_lifeline(root: CancellationToken) {
    let spawned = std::thread::Builder::new().name("lifeline".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        let reason = loop {
            match stdin.read(&mut buf) {
                Ok(0) => break "end of file".to_owned(),
                // Nothing is ever written on purpose; anything read is ignored.
                Ok(_) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => break error.to_string(),
            }
        };
        tracing::warn!(
            reason,
            grace_ms = ORPHAN_GRACE.as_millis() as u64,
            "lifeline to the supervising agent lost (the agent is gone): draining, then exiting"
        );
        root.cancel();
        std::thread::sleep(ORPHAN_GRACE);
        tracing::warn!("orphaned dataplane exiting now");
        std::process::exit(1);
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot watch the lifeline; this dataplane will not notice its agent's death");
    }
}
