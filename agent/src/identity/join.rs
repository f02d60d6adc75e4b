//! Join tokens: how a dataplane without a certificate proves it may have one (`hgw.v1.Identity/Join`).
//!
//! [`JoinAuthenticator`] is the seam: [`TokenFile`] checks tokens listed in `--join-tokens FILE`;
//! in Kubernetes, [`crate::tokenreview::TokenReviewer`] (`--join-kubernetes`) checks ServiceAccount
//! tokens with the API server's TokenReview.
//!
//! The file (reloaded when it changes) has one token per line, `#` comments and blank lines ignored:
//!
//! ```text
//! # token (or sha256:HEX of it)      optional id pattern   optional expiry (RFC 3339)
//! sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  id=edge-*  expires=2030-01-01T00:00:00Z
//! s3cr3t-bootstrap-token
//! ```
//!
//! Tokens are compared as SHA-256 hashes in constant time, so the file may hold hashes only.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::check_name;

/// What a valid token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The dataplane id the certificate will carry.
    pub dataplane_id: String,
}

/// Why a join was refused. The message is sent to the dataplane (which logs it) and never contains the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("unknown join token")]
    Unknown,
    #[error("join token expired at {0}")]
    Expired(String),
    #[error("this join token does not allow dataplane id `{id}` (allowed: `{pattern}`)")]
    IdNotAllowed { id: String, pattern: String },
    #[error("dataplane id: {0}")]
    BadId(String),
    #[error("the ServiceAccount token was refused: {0}")]
    Refused(String),
    #[error("this agent accepts no join tokens (start it with --join-tokens FILE or --join-kubernetes)")]
    Disabled,
    #[error("join tokens unavailable: {0}")]
    Unavailable(String),
}

/// Decides whether a join token lets a dataplane have an identity.
#[tonic::async_trait]
pub trait JoinAuthenticator: Send + Sync {
    async fn authenticate(&self, token: &str, requested_id: &str) -> Result<Grant, JoinError>;
}

/// No token source configured: every join is refused (certificates are provisioned by the operator).
pub struct NoJoin;

#[tonic::async_trait]
impl JoinAuthenticator for NoJoin {
    async fn authenticate(&self, _: &str, _: &str) -> Result<Grant, JoinError> {
        Err(JoinError::Disabled)
    }
}

/// Why the token file cannot be used (at start: exit 64).
#[derive(Debug, thiserror::Error)]
#[error("--join-tokens {path}: {problem}")]
pub struct TokenFileError {
    pub path: String,
    pub problem: String,
}

#[derive(Debug, Clone)]
struct Entry {
    sha256: [u8; 32],
    /// `*` matches any run of characters; `None`: any id.
    id_pattern: Option<String>,
    expires: Option<SystemTime>,
}

/// Tokens from a file, re-read when its inode, size or modification time changes.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

struct Loaded {
    stamp: Option<(u64, u64, i64, i64)>,
    /// `Err`: the current file is invalid; joins fail closed until it is fixed.
    entries: Result<Vec<Entry>, String>,
}

impl TokenFile {
    /// Loads the file once; an invalid file is a configuration error.
    pub fn open(path: &Path) -> Result<TokenFile, TokenFileError> {
        let err = |problem: String| TokenFileError { path: path.display().to_string(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let entries = parse(&text).map_err(err)?;
        let stamp = stamp(path);
        Ok(TokenFile { path: path.to_owned(), state: Mutex::new(Loaded { stamp, entries: Ok(entries) }) })
    }

    fn current(&self) -> Result<Vec<Entry>, JoinError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now_stamp = stamp(&self.path);
        if now_stamp != state.stamp {
            state.stamp = now_stamp;
            state.entries = std::fs::read_to_string(&self.path).map_err(|e| e.to_string()).and_then(|t| parse(&t));
            match &state.entries {
                Ok(entries) => {
                    tracing::info!(path = %self.path.display(), tokens = entries.len(), "join tokens reloaded")
                }
                Err(problem) => tracing::error!(path = %self.path.display(), %problem,
                    "join token file is invalid; every join is refused until it is fixed"),
            }
        }
        state.entries.clone().map_err(JoinError::Unavailable)
    }
}

#[tonic::async_trait]
impl JoinAuthenticator for TokenFile {
    async fn authenticate(&self, token: &str, requested_id: &str) -> Result<Grant, JoinError> {
        check_name(requested_id).map_err(|e| JoinError::BadId(e.to_string()))?;
        let entries = self.current()?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whatever matched, so timing does not tell which one did.
        let mut found: Option<&Entry> = None;
        for entry in &entries {
            if constant_time_eq(&entry.sha256, &presented) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(JoinError::Unknown)?;
        if let Some(expires) = entry.expires
            && SystemTime::now() >= expires
        {
            return Err(JoinError::Expired(humantime::format_rfc3339_seconds(expires).to_string()));
        }
        if let Some(pattern) = &entry.id_pattern
            && !glob_match(pattern, requested_id)
        {
            return Err(JoinError::IdNotAllowed { id: requested_id.to_owned(), pattern: pattern.clone() });
        }
        Ok(Grant { dataplane_id: requested_id.to_owned() })
    }
}

fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `*` matches any run of characters (possibly empty); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |problem: String| format!("line {}: {problem}", number + 1);
        let mut fields = line.split_whitespace();
        let token = fields.next().unwrap_or_default();
        let sha256 = match token.strip_prefix("sha256:") {
            Some(hex) => decode_hex(hex).ok_or_else(|| at("sha256: needs 64 hex digits".into()))?,
            None if token.len() < 16 => return Err(at("a token must be at least 16 characters".into())),
            None => Sha256::digest(token.as_bytes()).into(),
        };
        let mut entry = Entry { sha256, id_pattern: None, expires: None };
        for field in fields {
            if let Some(pattern) = field.strip_prefix("id=") {
                let literal = pattern.replace('*', "a");
                check_name(&literal)
                    .map_err(|_| at(format!("id pattern `{pattern}`: letters, digits, `.-_` and `*`")))?;
                entry.id_pattern = Some(pattern.to_owned());
            } else if let Some(when) = field.strip_prefix("expires=") {
                let time = humantime::parse_rfc3339_weak(when)
                    .map_err(|e| at(format!("expires `{when}`: {e} (RFC 3339, e.g. 2030-01-01T00:00:00Z)")))?;
                entry.expires = Some(time);
            } else {
                return Err(at(format!(
                    "unknown field `{}` (id=PATTERN or expires=TIME)",
                    field.split('=').next().unwrap_or(field)
                )));
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, TokenFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let tokens = TokenFile::open(&path).unwrap();
        (dir, tokens)
    }

    #[tokio::test]
    async fn plain_and_hashed_tokens_with_patterns_and_expiry() {
        let hash: String = Sha256::digest(b"hashed-token-0123456").iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "# comment\nplain-token-0123456789\nsha256:{hash} id=edge-*\nold-token-0123456789 expires=2001-01-01T00:00:00Z\n"
        );
        let (_dir, tokens) = file(&text);
        assert_eq!(tokens.authenticate("plain-token-0123456789", "dp-1").await.unwrap().dataplane_id, "dp-1");
        assert!(tokens.authenticate("hashed-token-0123456", "edge-7").await.is_ok());
        assert_eq!(
            tokens.authenticate("hashed-token-0123456", "core-1").await.unwrap_err().to_string(),
            "this join token does not allow dataplane id `core-1` (allowed: `edge-*`)"
        );
        assert!(matches!(tokens.authenticate("old-token-0123456789", "a").await, Err(JoinError::Expired(_))));
        assert_eq!(tokens.authenticate("wrong-token-012345678", "a").await, Err(JoinError::Unknown));
        assert!(matches!(tokens.authenticate("plain-token-0123456789", "../x").await, Err(JoinError::BadId(_))));
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_fails_closed() {
        let (dir, tokens) = file("first-token-0123456789\n");
        assert!(tokens.authenticate("first-token-0123456789", "a").await.is_ok());
        let path = dir.path().join("tokens");
        std::fs::write(&path, "second-token-0123456789 id=b\n").unwrap();
        // A new inode would do too; make sure the size differs for coarse mtime file systems.
        assert_eq!(tokens.authenticate("first-token-0123456789", "a").await, Err(JoinError::Unknown));
        assert!(tokens.authenticate("second-token-0123456789", "b").await.is_ok());
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(tokens.authenticate("second-token-0123456789", "b").await, Err(JoinError::Unavailable(_))));
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        assert!(parse("x").unwrap_err().starts_with("line 1: a token must be at least 16"));
        assert!(parse("\nsha256:abc").unwrap_err().starts_with("line 2: sha256:"));
        assert!(parse("0123456789abcdef0 expires=tomorrow").unwrap_err().contains("RFC 3339"));
        assert!(parse("0123456789abcdef0 role=admin").unwrap_err().contains("unknown field `role`"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("edge-*", "edge-1"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXcYYb"));
        assert!(!glob_match("edge-*", "core-1"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
