//! hgw-agent: parse and validate configuration, build the runtime, run, map failures to exit codes.

use std::process::ExitCode;

use hgw_agent::config::{Cli, Config, EXIT_CONFIG, parse_command_line};

/// mimalloc: every analytics record is decoded, written as a JSON line, spooled and read back in
/// batches; glibc's malloc/free were about a sixth of the agent's CPU per record (tests/bench/notes.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "pki") {
        return pki();
    }
    // `hgw-agent inject` and `hgw-agent webhook` (sidecar injection) have their own command lines.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = hgw_agent::inject::cli::dispatch(&args) {
        return code;
    }
    let cli = match parse_command_line::<Cli>(std::env::args_os(), "hgw-agent") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Before validation: it builds TLS clients (TokenReview).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let config = match Config::from_cli(cli, &env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hgw-agent: invalid configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Settings the supervised dataplanes would refuse (HTTPS certificates, masked headers) are the
    // agent's configuration errors too: checked by the dataplane binary itself, before anything starts.
    if config.dataplanes > 0 {
        let socket = config.grpc_socket.clone().unwrap_or_else(|| "/run/hgw/agent.sock".into());
        let dataplanes = hgw_agent::supervisor::Supervisor {
            bin: config.dataplane_bin.clone(),
            count: config.dataplanes,
            agent: format!("unix:{}", socket.display()),
            listen: config.dataplane_listen,
            node_id: config.node_id.clone(),
            log_json: config.log_json,
            grace: config.shutdown_grace,
            log_masked_headers: config.log_masked_headers.clone(),
        };
        if let Err(reason) = dataplanes.check_config() {
            eprintln!("hgw-agent: invalid configuration: the dataplanes refuse their settings: {reason}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // Before anything starts: a `--dataplane-listen` port served by someone else is a configuration
    // error, and the claim is held until the agent exits (see `supervisor`).
    let _dataplane_port = if config.dataplanes > 0 && config.dataplane_listen.port() != 0 {
        match hgw_agent::supervisor::PortClaim::take_waiting(
            config.dataplane_listen,
            hgw_agent::supervisor::CLAIM_PATIENCE,
        ) {
            Ok(claim) => Some(claim),
            Err(error) => {
                eprintln!("hgw-agent: invalid configuration: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        None
    };
    init_logging(config.log_json);

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("hgw-agent");
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hgw-agent: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hgw_agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_config() => {
            eprintln!("hgw-agent: invalid configuration: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("hgw-agent: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `hgw-agent pki ...`: certificate authority chores, no runtime needed.
fn pki() -> ExitCode {
    use hgw_agent::identity::issue::{PkiCli, PkiCommand, issue};
    let cli = match parse_command_line::<PkiCli>(std::env::args_os().skip(1), "hgw-agent pki") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    match cli.command {
        PkiCommand::Issue(args) => match issue(args, &env) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hgw-agent pki issue: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
