//! The contracts of the consented partner messaging system: generated protobuf types,
//! tonic clients and servers, and the encoded descriptor set that reflection serves.

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
