//! Code generated from `proto/firma/v1/authority.proto` by `build.rs` (protox + tonic-prost-build).
//! Shared by the Authority (server), the Sidecar and the CLI (clients).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("firma.v1");

/// Encoded `FileDescriptorSet` of the contract, served through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("firma_descriptor");
