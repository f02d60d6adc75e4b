//! `hgw-agent pki issue --dataplane ID | --admin NAME --out DIR`: a certificate from the agent's CA for
//! static provisioning (a dataplane on another host) or for an operator's grpcurl. Writes `cert.pem`,
//! `key.pem` (0600) and `ca.pem` into DIR (created 0700).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::pki::{CertificateAuthority, create_private_dir, write_new};
use super::{DEFAULT_TRUST_DOMAIN, SpiffeId, check_name, check_trust_domain};

/// The agent's certificate authority.
#[derive(Debug, Parser)]
#[command(name = "hgw-agent pki", about = "The certificate authority of this agent's dataplanes")]
pub struct PkiCli {
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Issue a dataplane or admin certificate (cert.pem, key.pem, ca.pem in --out).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// A dataplane certificate: spiffe://{trust domain}/dataplane/{ID}.
    #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
    pub dataplane: Option<String>,
    /// An operator certificate for hgw.v1.Admin: spiffe://{trust domain}/admin/{NAME}.
    #[arg(long)]
    pub admin: Option<String>,
    /// Folder to write cert.pem, key.pem and ca.pem into (created 0700).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity of the certificate (e.g. 30d, 8760h).
    #[arg(long, env = "HGW_PKI_ISSUE_TTL", default_value = "365d", value_parser = crate::config::parse_duration)]
    pub ttl: Duration,
    /// The agent's state directory (the CA is in its pki/ folder) [default: as the agent's].
    #[arg(long, env = "HGW_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// An operator's CA folder, as given to the agent.
    #[arg(long, env = "HGW_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// The agent's --trust-domain.
    #[arg(long, env = "HGW_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
}

/// Issues the certificate; the error is one line for the operator.
pub fn issue(args: IssueArgs, env: &HashMap<String, String>) -> Result<String, String> {
    check_trust_domain(&args.trust_domain).map_err(|e| format!("--trust-domain: {e}"))?;
    let id = match (&args.dataplane, &args.admin) {
        (Some(id), None) => {
            check_name(id).map_err(|e| format!("--dataplane: {e}"))?;
            SpiffeId::dataplane(&args.trust_domain, id)
        }
        (None, Some(name)) => {
            check_name(name).map_err(|e| format!("--admin: {e}"))?;
            SpiffeId::admin(&args.trust_domain, name)
        }
        _ => return Err("give one of --dataplane ID or --admin NAME".into()),
    };
    let (dir, create) = match (args.pki_dir, args.state_dir.or_else(|| crate::config::default_state_dir(env))) {
        (Some(dir), _) => (dir, false),
        (None, Some(state)) => (state.join("pki"), true),
        (None, None) => return Err("no CA: give --state-dir or --pki-dir".into()),
    };
    let ca = CertificateAuthority::open(&dir, create).map_err(|e| e.to_string())?;
    let issued = ca.issue_with_key(&id, args.ttl).map_err(|e| e.to_string())?;
    create_private_dir(&args.out).map_err(|e| e.to_string())?;
    write_new(&args.out.join("key.pem"), issued.key_pem.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    write_new(&args.out.join("cert.pem"), issued.cert_pem.as_bytes(), 0o644).map_err(|e| e.to_string())?;
    write_new(&args.out.join("ca.pem"), ca.ca_pem().as_bytes(), 0o644).map_err(|e| e.to_string())?;
    Ok(format!(
        "{id}: {} (key.pem, cert.pem, ca.pem), valid until {}",
        args.out.display(),
        humantime::format_rfc3339_seconds(issued.not_after)
    ))
}
