//! Turns SIGTERM / SIGINT, and the loss of the supervisor's lifeline, into the cancellation of the
//! root token that every task watches.

use std::io::Read;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Listens for SIGTERM and SIGINT from this call on, and cancels `root` at the first (graceful drain);
/// a second signal ends the process at once, for an operator who does not want to wait for the grace
/// period. The handlers are installed here, not in the task: a task runs when a worker gets to it, and
/// a signal that came before (right after the address file appeared, on a busy machine) took the
/// default action, death without a drain.
pub fn cancel_on_signal(root: CancellationToken) {
    let mut terminate = signal(SignalKind::terminate())
        .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT will stop the dataplane"))
        .ok();
    let mut interrupt =
        signal(SignalKind::interrupt()).inspect_err(|error| tracing::error!(%error, "cannot listen for SIGINT")).ok();
    tokio::spawn(async move {
        let first = next_signal(&mut terminate, &mut interrupt).await;
        tracing::info!("{first} received: draining");
        root.cancel();
        next_signal(&mut terminate, &mut interrupt).await;
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
}

/// The name of the next signal either stream delivers (a stream that could not be set up never does).
async fn next_signal(terminate: &mut Option<Signal>, interrupt: &mut Option<Signal>) -> &'static str {
    async fn next(stream: &mut Option<Signal>) {
        match stream {
            Some(stream) => {
                stream.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        () = next(terminate) => "SIGTERM",
        () = next(interrupt) => "SIGINT",
    }
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
