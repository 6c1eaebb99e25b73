//! The contracts of the consented partner messaging system: generated protobuf types,
//! tonic clients and servers, the encoded descriptor set that reflection serves, and the
//! reflection each listener serves ([`reflection`]).

// The generated docs are the .proto comments, written for protobuf readers: they show
// placeholders such as `<token>` and bare URIs that rustdoc would take for HTML or links.
#![allow(
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]

/// The platform's surfaces: messaging and consent (partners), account (users),
/// partner admin (operators).
pub mod platform {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("consent.platform.v1");
    }
}

/// The partner service's own API for its front ends.
pub mod partner {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("consent.partner.v1");
    }
}

/// Encoded `FileDescriptorSet` of every contract and of `google.rpc`'s error details, for
/// `grpc.reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

/// What every listener lists besides its own services: health, and reflection itself.
const ALWAYS_LISTED: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection for one listener. It lists the listener's own `services` with health and
/// reflection, not the services of the other listeners, so that what a client lists is
/// what it can call there; and it describes every symbol of the contracts, of `google.rpc`'s
/// error details, of health and of both versions of reflection, so that every listed
/// service resolves.
pub fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    services.iter().chain(&ALWAYS_LISTED).fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |builder, service| builder.with_service_name(*service),
    )
}
