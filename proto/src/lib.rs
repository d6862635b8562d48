//! Gyre's gRPC API (`gyre.v1`): the protocol buffers in `proto/gyre/v1/` and the client and
//! server code generated from them at build time (with a vendored `protoc`). The engine never
//! sees these types; the server maps them.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The `gyre.v1` package.
pub mod v1 {
    tonic::include_proto!("gyre.v1");

    /// The encoded file descriptor set of `gyre.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("gyre_v1_descriptor");
}
