//! The Gravitee license the Cloud console generates with the Cloud Token.
//!
//! The license file is signed by Gravitee with a key we do not have, so hgw checks only what it can:
//! present, decodable, non-empty. Its bytes are never logged; a short fingerprint identifies it instead.

use std::hash::{Hash, Hasher};
use std::path::Path;

use base64::Engine;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    #[error(
        "license missing: cloud mode needs the license generated with the Cloud Token (--license-key BASE64, GRAVITEE_LICENSE_KEY, or --license-file PATH)"
    )]
    Missing,
    #[error("license: give either --license-key or --license-file, not both")]
    Both,
    #[error("license key is not valid base64 ({0}); it must be the base64 of the license file")]
    NotBase64(String),
    #[error("license key decodes to nothing")]
    EmptyKey,
    #[error("--license-file {path}: {problem}")]
    File { path: String, problem: String },
}

/// Where the license came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseSource {
    Key,
    File,
}

#[derive(Debug, Clone)]
pub struct License {
    /// The license file's bytes, kept as base64 text so they live in a redacting wrapper.
    content: Secret,
    pub source: LicenseSource,
    pub len: usize,
}

impl License {
    /// Reads the license from a base64 key or a file; `Ok(None)` when neither is given.
    pub fn from_options(key: Option<&str>, file: Option<&Path>) -> Result<Option<License>, LicenseError> {
        match (key, file) {
            (Some(_), Some(_)) => Err(LicenseError::Both),
            (None, None) => Ok(None),
            (Some(key), None) => {
                let compact: String = key.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|e| LicenseError::NotBase64(e.to_string()))?;
                if bytes.is_empty() {
                    return Err(LicenseError::EmptyKey);
                }
                Ok(Some(License { len: bytes.len(), content: Secret::new(compact), source: LicenseSource::Key }))
            }
            (None, Some(path)) => {
                let err = |problem: String| LicenseError::File { path: path.display().to_string(), problem };
                let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                if bytes.is_empty() {
                    return Err(err("the file is empty".into()));
                }
                let content = base64::engine::general_purpose::STANDARD.encode(&bytes);
                Ok(Some(License { len: bytes.len(), content: Secret::new(content), source: LicenseSource::File }))
            }
        }
    }

    /// A short, non-reversible fingerprint to tell licenses apart in logs.
    pub fn fingerprint(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.content.expose().hash(&mut hasher);
        format!("{:08x}", hasher.finish() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_must_be_base64() {
        assert!(matches!(License::from_options(Some("%%%"), None), Err(LicenseError::NotBase64(_))));
        let ok = License::from_options(Some("bGljZW5zZQ==\n"), None).unwrap().unwrap();
        assert_eq!(ok.len, 7);
        assert_eq!(ok.source, LicenseSource::Key);
        assert!(!format!("{ok:?}").contains("bGljZW5zZQ"));
    }

    #[test]
    fn file_must_exist_and_not_be_empty() {
        let err = License::from_options(None, Some(Path::new("/nope/license.key"))).unwrap_err();
        assert!(err.to_string().starts_with("--license-file /nope/license.key:"));
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = License::from_options(None, Some(file.path())).unwrap_err();
        assert!(err.to_string().ends_with("the file is empty"));
        std::fs::write(file.path(), b"signed license").unwrap();
        assert_eq!(License::from_options(None, Some(file.path())).unwrap().unwrap().len, 14);
    }

    #[test]
    fn not_both() {
        assert!(matches!(License::from_options(Some("eA=="), Some(Path::new("/x"))), Err(LicenseError::Both)));
    }
}
