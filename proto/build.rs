//! Compiles the contracts with protox (pure Rust, so no `protoc` is needed) and keeps the
//! encoded descriptor set for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "consent/platform/v1/common.proto",
    "consent/platform/v1/messaging.proto",
    "consent/platform/v1/consent.proto",
    "consent/platform/v1/account.proto",
    "consent/platform/v1/admin.proto",
    "consent/partner/v1/partner.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=consent");
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptor_set.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
