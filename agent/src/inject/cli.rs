//! The `inject` and `webhook` subcommands of `hgw-agent`: flags, then the library does the work.
//!
//! They are separate command lines rather than clap subcommands of the agent's own, so the agent's flags
//! (and their environment variables) stay exactly as they are for `hgw-agent` with no subcommand.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};
use tokio_util::sync::CancellationToken;

use crate::config::EXIT_CONFIG;

use super::{DefaultPolicy, Outcome, SidecarConfig, check_quantity, check_tags, inject_object, webhook, yaml};

/// BSD's EX_DATAERR: the YAML given to `inject` cannot be read or a workload's overrides are wrong.
const EXIT_DATA: u8 = 65;

/// The sidecar the injector adds (defaults; pods override with `hgw.io/*` annotations).
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// Image of the injected `hgw-dataplane` container (per pod: `hgw.io/proxy-image`).
    #[arg(long, env = "HGW_INJECT_IMAGE", default_value = "hgw:latest", help_heading = "Sidecar")]
    pub image: String,
    /// Pull policy of the injected container.
    #[arg(long, env = "HGW_INJECT_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"], help_heading = "Sidecar")]
    pub image_pull_policy: String,
    /// How the sidecar reaches its node agent: `unix:/path` (the agent DaemonSet's socket, on a hostPath)
    /// or `http(s)://host:port`.
    #[arg(long, env = "HGW_INJECT_AGENT", default_value = "unix:/var/run/hgw/agent.sock", help_heading = "Sidecar")]
    pub agent_address: String,
    /// Node folder with the agent's socket (the DaemonSet's hostPath), mounted read-only in the sidecar.
    #[arg(long, env = "HGW_INJECT_SOCKET_HOST_PATH", default_value = "/var/run/hgw", help_heading = "Sidecar")]
    pub socket_host_path: String,
    /// Port the sidecar proxies on (a Service's targetPort; per pod: `hgw.io/proxy-port`).
    #[arg(long, env = "HGW_INJECT_PROXY_PORT", default_value_t = 8082, help_heading = "Sidecar")]
    pub proxy_port: u16,
    /// Port of the sidecar's admin API (`/ready`, `/live`, `/metrics`: the probes).
    #[arg(long, env = "HGW_INJECT_ADMIN_PORT", default_value_t = 18083, help_heading = "Sidecar")]
    pub admin_port: u16,
    /// Sharding tags of injected dataplanes (per pod: `hgw.io/tags`).
    #[arg(long, env = "HGW_INJECT_TAGS", default_value = "", help_heading = "Sidecar")]
    pub tags: String,
    /// Resources of the sidecar ("" for none; per pod: `hgw.io/proxy-{cpu,memory}-{request,limit}`).
    #[arg(long, env = "HGW_INJECT_CPU_REQUEST", default_value = "50m", help_heading = "Sidecar")]
    pub cpu_request: String,
    #[arg(long, env = "HGW_INJECT_CPU_LIMIT", default_value = "", help_heading = "Sidecar")]
    pub cpu_limit: String,
    #[arg(long, env = "HGW_INJECT_MEMORY_REQUEST", default_value = "32Mi", help_heading = "Sidecar")]
    pub memory_request: String,
    #[arg(long, env = "HGW_INJECT_MEMORY_LIMIT", default_value = "256Mi", help_heading = "Sidecar")]
    pub memory_limit: String,
    /// Audience of the sidecar's projected ServiceAccount token (its identity for the agent's TokenReview).
    #[arg(long, env = "HGW_INJECT_TOKEN_AUDIENCE", default_value = "hgw", help_heading = "Sidecar")]
    pub token_audience: String,
    /// User and group id of the sidecar (non-root; the group that may open the agent's socket folder).
    #[arg(long, env = "HGW_INJECT_USER_ID", default_value_t = 65532, help_heading = "Sidecar")]
    pub user_id: u32,
    /// OpenTelemetry collector endpoint given to sidecars as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[arg(long, env = "HGW_INJECT_OTLP_ENDPOINT", help_heading = "Sidecar")]
    pub otlp_endpoint: Option<String>,
    /// ConfigMap (in each pod's namespace, key `ca.pem`) with the agent's CA: needed with an `https://`
    /// --agent-address, whose sidecars pin it and join with their projected ServiceAccount token (the agent
    /// runs with --join-kubernetes).
    #[arg(long, env = "HGW_INJECT_AGENT_CA_CONFIGMAP", help_heading = "Sidecar")]
    pub agent_ca_configmap: Option<String>,
}

impl SidecarArgs {
    /// Checked sidecar settings; the message names the flag.
    pub fn config(&self) -> Result<SidecarConfig, String> {
        let optional = |flag: &str, value: &str| -> Result<Option<String>, String> {
            let value = value.trim();
            if value.is_empty() {
                return Ok(None);
            }
            check_quantity(value).map_err(|problem| format!("--{flag}: {problem}"))?;
            Ok(Some(value.to_owned()))
        };
        check_tags(&self.tags).map_err(|problem| format!("--tags: {problem}"))?;
        let agent = self.agent_address.trim();
        let valid_agent = agent.strip_prefix("unix:").is_some_and(|p| p.starts_with('/') && p.len() > 1)
            || agent.starts_with("http://")
            || agent.starts_with("https://");
        if !valid_agent {
            return Err(format!("--agent-address: {agent:?} is neither unix:/absolute/path nor http(s)://host:port"));
        }
        let agent_ca_configmap = self.agent_ca_configmap.as_deref().map(str::trim).filter(|c| !c.is_empty());
        if agent.starts_with("https://") && agent_ca_configmap.is_none() {
            return Err(format!(
                "--agent-address {agent}: an https:// agent needs --agent-ca-configmap (the sidecar pins the agent's CA)"
            ));
        }
        if !self.socket_host_path.starts_with('/') {
            return Err("--socket-host-path: must be an absolute path".into());
        }
        if self.proxy_port == 0 || self.admin_port == 0 || self.proxy_port == self.admin_port {
            return Err("--proxy-port and --admin-port: two different ports (1-65535)".into());
        }
        if self.image.trim().is_empty() || self.token_audience.trim().is_empty() {
            return Err("--image and --token-audience cannot be empty".into());
        }
        if self.user_id == 0 {
            return Err("--user-id: the sidecar never runs as root (0)".into());
        }
        Ok(SidecarConfig {
            image: self.image.trim().to_owned(),
            image_pull_policy: self.image_pull_policy.clone(),
            agent: agent.to_owned(),
            socket_host_path: self.socket_host_path.clone(),
            proxy_port: self.proxy_port,
            admin_port: self.admin_port,
            tags: self.tags.trim().to_owned(),
            cpu_request: optional("cpu-request", &self.cpu_request)?,
            cpu_limit: optional("cpu-limit", &self.cpu_limit)?,
            memory_request: optional("memory-request", &self.memory_request)?,
            memory_limit: optional("memory-limit", &self.memory_limit)?,
            token_audience: self.token_audience.trim().to_owned(),
            user_id: self.user_id,
            otlp_endpoint: self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            agent_ca_configmap: agent_ca_configmap.map(str::to_owned),
        })
    }
}

/// hgw-agent inject: adds the hgw-dataplane sidecar to Kubernetes YAML (Pods, Deployments, StatefulSets,
/// DaemonSets, ReplicaSets, Jobs, CronJobs; other objects pass through), like `linkerd inject`.
/// Workloads annotated `hgw.io/inject: disabled` and those already injected are left as they are.
#[derive(Debug, Parser)]
#[command(name = "hgw-agent inject", version)]
pub struct InjectCli {
    /// YAML to read, `-` for standard input.
    #[arg(short = 'f', long = "filename", env = "HGW_INJECT_FILE", default_value = "-")]
    pub file: PathBuf,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// hgw-agent webhook: the mutating admission webhook that injects the hgw-dataplane sidecar (HTTPS;
/// `POST /inject/namespace` for labelled namespaces, `POST /inject` for opt-in pods; `GET /healthz`).
#[derive(Debug, Parser)]
#[command(name = "hgw-agent webhook", version)]
pub struct WebhookCli {
    /// Address to serve AdmissionReviews on (TLS).
    #[arg(long, env = "HGW_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM), valid for the webhook Service's DNS name.
    #[arg(long, env = "HGW_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long, env = "HGW_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Write the bound address as JSON (`{"webhook": "ip:port"}`): tests and supervisors.
    #[arg(long, env = "HGW_WEBHOOK_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// `text` or `json` logs (level: `RUST_LOG`).
    #[arg(long, env = "HGW_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Runs `inject` or `webhook` when the first argument names one; `None` lets the agent run.
pub fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    let command = args.get(1)?.to_str()?;
    let rest = args[1..].iter().cloned();
    match command {
        "inject" => Some(match parse::<InjectCli>(rest) {
            Ok(cli) => run_inject(cli),
            Err(code) => code,
        }),
        "webhook" => Some(match parse::<WebhookCli>(rest) {
            Ok(cli) => run_webhook(cli),
            Err(code) => code,
        }),
        "prepare-socket-dir" => Some(match parse::<super::socket_dir::SocketDirCli>(rest) {
            Ok(cli) => super::socket_dir::run(cli),
            Err(code) => code,
        }),
        _ => None,
    }
}

fn parse<T: Parser>(args: impl Iterator<Item = OsString>) -> Result<T, ExitCode> {
    crate::config::parse_command_line(args, "hgw-agent")
}

fn run_inject(cli: InjectCli) -> ExitCode {
    let config = match cli.sidecar.config() {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("hgw-agent: invalid configuration: {problem}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut text = String::new();
    let read = if cli.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&cli.file).map(|t| text = t)
    };
    if let Err(error) = read {
        eprintln!("hgw-agent inject: {}: {error}", cli.file.display());
        return ExitCode::from(EXIT_DATA);
    }
    match inject_text(&text, &config) {
        Ok((out, summary)) => {
            for line in summary {
                eprintln!("{line}");
            }
            if let Err(error) = std::io::stdout().write_all(out.as_bytes()) {
                eprintln!("hgw-agent inject: writing the result: {error}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("hgw-agent inject: {problem}");
            ExitCode::from(EXIT_DATA)
        }
    }
}

/// Injects every document of a YAML stream; returns the new stream and one summary line per template.
pub fn inject_text(text: &str, config: &SidecarConfig) -> Result<(String, Vec<String>), String> {
    let mut documents = yaml::read_documents(text).map_err(|e| e.to_string())?;
    let mut summary = Vec::new();
    for document in &mut documents {
        let kind = document.get("kind").and_then(|k| k.as_str()).unwrap_or("(no kind)").to_lowercase();
        let name = document.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or("(unnamed)").to_owned();
        let outcomes = inject_object(document, config, DefaultPolicy::Inject).map_err(|e| e.to_string())?;
        for outcome in outcomes {
            summary.push(match outcome {
                Outcome::Injected => format!("{kind} \"{name}\" injected"),
                Outcome::Skipped(why) => format!("{kind} \"{name}\" skipped: {why}"),
            });
        }
    }
    Ok((yaml::write_documents(&documents).map_err(|e| e.to_string())?, summary))
}

fn run_webhook(cli: WebhookCli) -> ExitCode {
    let config = match cli.sidecar.config() {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("hgw-agent: invalid configuration: {problem}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let tls = match webhook::tls_config(&cli.tls_cert, &cli.tls_key) {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("hgw-agent: invalid configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hgw-agent webhook: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            signal.cancel();
        });
        webhook::serve(cli.listen, tls, config, cli.addr_file.as_deref(), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hgw-agent webhook: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> SidecarArgs {
        let mut argv = vec!["hgw-agent inject"];
        argv.extend_from_slice(extra);
        InjectCli::try_parse_from(argv).unwrap().sidecar
    }

    #[test]
    fn sidecar_flags_are_checked() {
        assert!(args(&[]).config().is_ok());
        assert!(args(&["--cpu-limit", ""]).config().unwrap().cpu_limit.is_none());
        for bad in [
            vec!["--memory-limit", "lots"],
            vec!["--agent-address", "agent:18090"],
            vec!["--proxy-port", "18083"],
            vec!["--user-id", "0"],
            vec!["--tags", "a b"],
            vec!["--agent-address", "https://agent:18090"],
        ] {
            assert!(args(&bad).config().is_err(), "{bad:?}");
        }
        let tcp = args(&["--agent-address", "https://agent:18090", "--agent-ca-configmap", "hgw-agent-ca"]);
        assert_eq!(tcp.config().unwrap().agent_ca_configmap.as_deref(), Some("hgw-agent-ca"));
    }

    #[test]
    fn inject_text_handles_a_stream() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: nginx}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n";
        let (out, summary) = inject_text(text, &SidecarConfig::default()).unwrap();
        assert_eq!(summary, vec!["deployment \"web\" injected".to_owned()]);
        let (again, summary) = inject_text(&out, &SidecarConfig::default()).unwrap();
        assert_eq!(again, out);
        assert_eq!(summary, vec!["deployment \"web\" skipped: already injected".to_owned()]);
        assert!(inject_text("kind: [", &SidecarConfig::default()).is_err());
    }
}
