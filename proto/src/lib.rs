//! Gyre's gRPC API (`gyre.v1`): the protocol buffers and their generated Rust code.
//!
//! Empty until the service is built: this crate will hold nothing but the `.proto` files and the
//! code generated from them, so that the engine never sees a transport type.
