//! `hgw-cloudgate-sim`: parses the command line, starts the Cloud Gate emulator (see
//! `hgw_tests::cloudgate`), and maps failure to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hgw_tests::cloudgate::{self, Config};

/// A stand-in for Gravitee Cloud's Cloud Gate, for tests. Prints one JSON line on stdout once ready:
/// {"url":..,"ca":..,"token_key":..}; logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "hgw-cloudgate-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (reported in the ready line).
    #[arg(long, env = "HGW_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory where `ca.pem` and `token-key.pem` are written.
    #[arg(long, env = "HGW_SIM_STATE_DIR")]
    state_dir: PathBuf,
    /// Directory of Gravitee local registry files or API definitions (*.json) to publish at start.
    #[arg(long, env = "HGW_SIM_DATA")]
    data: Option<PathBuf>,
    /// Answer 404 on /sync/_bridge/eventsLatest/_search so clients must fall back to
    /// /sync/_bridge/events/_searchLatest.
    #[arg(long)]
    legacy_search: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // stderr ends up in log files read by people and tests: no colour codes.
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hgw-cloudgate-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        listen: args.listen,
        state_dir: args.state_dir,
        data_dir: args.data,
        legacy_search: args.legacy_search,
    };
    match runtime.block_on(cloudgate::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hgw-cloudgate-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM so tests can stop the sim cleanly.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
