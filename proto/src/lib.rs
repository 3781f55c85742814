//! Ilo's gRPC contracts (`proto/ilo/v1`), generated at build time. The only crate with generated code.

/// `ilo.v1`: the token service relays call.
pub mod v1 {
    tonic::include_proto!("ilo.v1");
}

/// The encoded descriptors of `ilo.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ilo_descriptor");
