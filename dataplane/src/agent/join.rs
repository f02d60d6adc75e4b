//! Getting and keeping a certificate with a join token: `hgw.v1.Identity/Join` at start (the token and
//! a signing request for a key made here, which never leaves the process), then `Identity/Renew` with
//! the current certificate at two thirds of its life. A refused join is logged with the agent's reason
//! and retried with backoff; the dataplane stays not ready until it has a certificate and a config.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hgw_proto::v1::identity_client::IdentityClient;
use hgw_proto::v1::{IssuedCertificate, JoinRequest, RenewRequest};
use tokio_util::sync::CancellationToken;

use crate::agent::backoff::Backoff;
use crate::agent::link::AgentLink;

/// Renew when this fraction of the certificate's life is left (renewing at 2/3 of its life).
const RENEW_AT_REMAINING: f64 = 1.0 / 3.0;
/// Never renew more often than this, whatever lifetime the agent grants.
const MIN_RENEW_DELAY: Duration = Duration::from_secs(1);

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot connect to the agent: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{}", .0.message())]
    Refused(tonic::Status),
    #[error("{0}")]
    Local(String),
}

/// The join token's file, re-read before every join: a Kubernetes projected ServiceAccount token is
/// rotated by the kubelet (the one read at start may have expired by the time a join is needed again).
/// An unreadable or empty file keeps the last token read, with a warning.
pub struct TokenFile {
    path: PathBuf,
    last: String,
}

impl TokenFile {
    pub fn new(path: PathBuf, first: String) -> TokenFile {
        TokenFile { path, last: first }
    }

    fn current(&mut self) -> &str {
        match std::fs::read_to_string(&self.path) {
            Ok(text) if !text.trim().is_empty() => self.last = text.trim().to_owned(),
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "the join token file is empty; using the last token read")
            }
            Err(error) => tracing::warn!(path = %self.path.display(), %error,
                "cannot read the join token file; using the last token read"),
        }
        &self.last
    }
}

/// A new key and its signing request (PEM).
fn key_and_request() -> Result<(rcgen::KeyPair, String), AttemptError> {
    let key = rcgen::KeyPair::generate().map_err(|e| AttemptError::Local(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| AttemptError::Local(e.to_string()))?;
    Ok((key, csr))
}

async fn join(link: &AgentLink, token: &str, id: &str) -> Result<(IssuedCertificate, rcgen::KeyPair), AttemptError> {
    let (key, csr_pem) = key_and_request()?;
    let channel = link.connect_anonymous().await?;
    let request = JoinRequest { token: token.to_owned(), dataplane_id: id.to_owned(), csr_pem };
    let response = IdentityClient::new(channel).join(request).await.map_err(AttemptError::Refused)?;
    let certificate =
        response.into_inner().certificate.ok_or_else(|| AttemptError::Local("no certificate in the answer".into()))?;
    Ok((certificate, key))
}

async fn renew(link: &AgentLink) -> Result<(IssuedCertificate, rcgen::KeyPair), AttemptError> {
    let (key, csr_pem) = key_and_request()?;
    let channel = link.connect().await?;
    let response = IdentityClient::new(channel).renew(RenewRequest { csr_pem }).await.map_err(AttemptError::Refused)?;
    let certificate =
        response.into_inner().certificate.ok_or_else(|| AttemptError::Local("no certificate in the answer".into()))?;
    Ok((certificate, key))
}

/// How long to wait before renewing a certificate valid until `not_after_ms`.
fn renew_delay(not_after_ms: i64, now: SystemTime) -> Duration {
    let now_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let left = Duration::from_millis(not_after_ms.saturating_sub(now_ms).max(0) as u64);
    left.mul_f64(1.0 - RENEW_AT_REMAINING).max(MIN_RENEW_DELAY)
}

/// Keeps this dataplane's certificate valid until `cancel`.
pub async fn run(link: AgentLink, mut token: TokenFile, id: String, cancel: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let attempt = if link.has_identity() {
            // Renewal first; a refused renewal (the agent's CA changed, say) falls back to the token.
            match renew(&link).await {
                Ok(done) => Ok(done),
                Err(error) => {
                    tracing::warn!(%error, "certificate renewal failed; joining again with the token");
                    join(&link, token.current(), &id).await
                }
            }
        } else {
            join(&link, token.current(), &id).await
        };
        let delay = match attempt {
            Ok((response, key)) => {
                match link.install(response.certificate_pem.as_bytes(), key.serialize_pem().as_bytes()) {
                    Ok(()) => {
                        backoff.reset();
                        let delay = renew_delay(response.not_after_ms, SystemTime::now());
                        tracing::info!(identity = %response.spiffe_id, renew_in_s = delay.as_secs(), "certificate from the agent installed");
                        delay
                    }
                    Err(problem) => {
                        let delay = backoff.next_delay();
                        tracing::error!(%problem, retry_in_ms = delay.as_millis() as u64, "the agent's certificate is unusable");
                        delay
                    }
                }
            }
            Err(error) => {
                let delay = backoff.next_delay().max(Duration::from_millis(500));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                    ready = link.has_identity(), "could not get a certificate from the agent");
                delay
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_read_again_and_a_bad_read_keeps_the_last_token() {
        let dir = std::env::temp_dir().join(format!("hgw-dp-join-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let mut token = TokenFile::new(path.clone(), "first".into());
        assert_eq!(token.current(), "first");
        std::fs::write(&path, "rotated\n").unwrap();
        assert_eq!(token.current(), "rotated");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(token.current(), "rotated");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token.current(), "rotated");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_life_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(renew_delay(1_000_000 + 90_000, now), Duration::from_secs(60));
        assert_eq!(renew_delay(0, now), MIN_RENEW_DELAY);
    }
}
