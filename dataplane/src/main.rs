//! `hgw-dataplane`: parse and validate the configuration, build the runtime, run the library, and map
//! the outcome to an exit code (64 = invalid configuration, before any port is bound).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use hgw_dataplane::config::{Cli, Config, LogFormat, hostname};
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates and frees small blocks (header maps, buffers, records); glibc's
/// malloc spent about a sixth of the dataplane's instructions on them (tests/bench/notes.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_USAGE: the command was used incorrectly.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hgw-dataplane: {}", one_line(&e.render().to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let check_only = cli.check_config;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut config = match Config::from_cli(cli, &hostname(), std::process::id(), cores) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hgw-dataplane: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Gravitee's names are read in any case (`gravitee_http_secured`, `GRAVITEE_HTTP_SECURED`).
    let env: std::collections::HashMap<String, String> =
        std::env::vars().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    config = match config.with_gravitee_env(|name| env.get(name).cloned()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hgw-dataplane: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The HTTPS certificates are read and checked here too (missing file, not PEM, wrong key).
    if let Some(https) = &config.https
        && let Err(e) = hgw_dataplane::https_listener(https)
    {
        eprintln!("hgw-dataplane: invalid configuration: HTTPS certificate: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    // PEM files of the agent link are checked here, so a bad one is a configuration error too.
    if let Err(e) = hgw_dataplane::agent::link::AgentLink::new(config.agent.clone(), config.agent_tls.as_ref()) {
        eprintln!("hgw-dataplane: invalid configuration: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    config.otel = match hgw_otel::Settings::from_env(|name| std::env::var(name).ok(), "hgw-dataplane") {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("hgw-dataplane: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if check_only {
        return ExitCode::SUCCESS;
    }
    init_logs(config.log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(hgw_dataplane::run_until_signal(config))?;
    // Connections still open after the grace period are abandoned, not awaited.
    runtime.shutdown_background();
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Clap's messages span several lines (usage, hints); the contract is one line on stderr.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}
