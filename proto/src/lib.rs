//! The agent <-> dataplane contract (`hgw.v1`): generated messages, clients and servers.

#![allow(clippy::all, missing_docs)]

/// Package `hgw.v1`.
pub mod v1 {
    tonic::include_proto!("hgw.v1");
}

/// Encoded `FileDescriptorSet` of every hgw proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hgw_descriptor.bin"));

pub mod counters;
pub mod redact;
