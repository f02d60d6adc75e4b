//! The generate-jwt policy's signing key, checked the same way on both sides of the contract: the
//! agent refuses an API whose key the dataplanes could not sign with, and a dataplane parses the key
//! it is sent with the same rules (so the two can never disagree about a key).

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Parses `key` for `algorithm` as Gravitee's signers take it — an RSA private key in PEM (PKCS#1 or
/// PKCS#8) for `RS256`, an HMAC secret at least as long as the hash for `HS256`/`HS384`/`HS512`
/// (Nimbus' `MACSigner` refuses shorter ones) — and signs an empty claims set with it, so a key that
/// cannot sign is refused once rather than on every request. The reason never quotes the key.
pub fn signing_key(algorithm: &str, key: &[u8]) -> Result<(Algorithm, EncodingKey), String> {
    let (algorithm, key) = match algorithm {
        "RS256" => {
            (Algorithm::RS256, EncodingKey::from_rsa_pem(key).map_err(|e| format!("not a PEM RSA private key ({e})"))?)
        }
        "HS256" | "HS384" | "HS512" => {
            let (algorithm, bits) = match algorithm {
                "HS256" => (Algorithm::HS256, 256),
                "HS384" => (Algorithm::HS384, 384),
                _ => (Algorithm::HS512, 512),
            };
            if key.len() * 8 < bits {
                return Err(format!("the secret length for {algorithm:?} must be at least {bits} bits"));
            }
            (algorithm, EncodingKey::from_secret(key))
        }
        other => return Err(format!("signature `{other}` is not supported")),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &(), &key)
        .map_err(|e| format!("the key cannot sign {algorithm:?} tokens ({e})"))?;
    Ok((algorithm, key))
}
