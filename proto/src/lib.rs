//! The agent <-> dataplane contract (`hgw.v1`): generated messages, clients and servers.

#![allow(clippy::all, missing_docs)]

/// Package `hgw.v1`.
pub mod v1 {
    tonic::include_proto!("hgw.v1");
}

/// Encoded `FileDescriptorSet` of every hgw proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hgw_descriptor.bin"));

/// Key material stays out of debug output (and so out of logs): only its length is shown.
impl std::fmt::Debug for v1::GenerateJwtPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateJwtPolicy")
            .field("algorithm", &self.algorithm)
            .field("key", &format_args!("[{} bytes]", self.key.len()))
            .field("kid", &self.kid)
            .field("audiences", &self.audiences)
            .field("expires_in_seconds", &self.expires_in_seconds)
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("custom_claims", &self.custom_claims)
            .finish()
    }
}

/// The client secret stays out of debug output (and so out of logs): only whether one is set is shown.
impl std::fmt::Debug for v1::OAuth2Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Introspection")
            .field("resource", &self.resource)
            .field("url", &self.url)
            .field("method", &self.method)
            .field("client_id", &self.client_id)
            .field("client_secret", &if self.client_secret.is_empty() { "" } else { redact::REDACTED })
            .field("use_client_authorization_header", &self.use_client_authorization_header)
            .field("client_authorization_header_name", &self.client_authorization_header_name)
            .field("token_query_param", &self.token_query_param)
            .field("token_header", &self.token_header)
            .field("token_form_param", &self.token_form_param)
            .field("scope_separator", &self.scope_separator)
            .field("user_claim", &self.user_claim)
            .field("trust_all", &self.trust_all)
            .finish()
    }
}

/// The Redis password stays out of debug output (and so out of logs): only whether one is set is shown.
impl std::fmt::Debug for v1::RedisCacheConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCacheConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &if self.password.is_empty() { "" } else { redact::REDACTED })
            .field("use_ssl", &self.use_ssl)
            .field("trust_all", &self.trust_all)
            .field("sentinel_master", &self.sentinel_master)
            .field("sentinel_nodes", &self.sentinel_nodes)
            .field("timeout_ms", &self.timeout_ms)
            .field("release_cache", &self.release_cache)
            .field("deployed_at", &self.deployed_at)
            .field("time_to_live_seconds", &self.time_to_live_seconds)
            .finish()
    }
}

pub mod analytics;
pub mod counters;
pub mod redact;
pub mod signing;
