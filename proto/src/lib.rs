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

pub mod counters;
pub mod redact;
pub mod signing;
