//! Compiles `hgw/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building hgw needs no system
//! `protoc`. The encoded descriptor set is written beside the generated code: the agent serves it through
//! gRPC reflection, which is how `grpcurl` works with no `.proto` files at hand.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "hgw/v1/config.proto",
    "hgw/v1/analytics.proto",
    "hgw/v1/admin.proto",
    "hgw/v1/ratelimit.proto",
    "hgw/v1/snapshot.proto",
    "hgw/v1/identity.proto",
    "hgw/v1/oauth2.proto",
    "hgw/v1/cache.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("hgw_descriptor.bin"), encoded)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Messages carrying key material get a hand-written Debug (proto/src/lib.rs) that leaves it out.
        .skip_debug(["hgw.v1.GenerateJwtPolicy", "hgw.v1.OAuth2Introspection", "hgw.v1.RedisCacheConnection"])
        .compile_fds(descriptors)?;
    Ok(())
}
