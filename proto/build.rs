//! Compiles the contracts with protox (pure Rust, so no `protoc` is needed) and keeps the
//! encoded descriptor set for gRPC reflection. The set also describes `google.rpc`'s rich
//! error details (ErrorInfo, BadRequest, …), which `tonic-types` already provides in Rust,
//! so that a reflection client such as grpcurl prints them as fields.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "consent/platform/v1/common.proto",
    "consent/platform/v1/messaging.proto",
    "consent/platform/v1/consent.proto",
    "consent/platform/v1/account.proto",
    "consent/platform/v1/admin.proto",
    "consent/partner/v1/partner.proto",
];

/// Served by reflection only: its Rust types come from `tonic-types`.
const ERROR_DETAILS: &str = "google/rpc/error_details.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=consent");
    println!("cargo:rerun-if-changed={ERROR_DETAILS}");
    let reflected = protox::compile(PROTOS.iter().chain([&ERROR_DETAILS]), ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptor_set.bin"),
        prost::Message::encode_to_vec(&reflected),
    )?;
    let mut contracts = reflected;
    contracts.file.retain(|file| file.name() != ERROR_DETAILS);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(contracts)?;
    Ok(())
}
