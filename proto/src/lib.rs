//! The Ledge gRPC API, package `ledge.v1`, generated from `proto/ledge.proto`.
//!
//! This crate holds no logic: the services are implemented in `ledge-api` (server) and used by
//! `ledge-client` and the Raft network in `ledge-consensus`.

#![allow(missing_docs, clippy::all)]

/// Generated messages and services of `ledge.v1`.
pub mod v1 {
    tonic::include_proto!("ledge.v1");
}

/// Encoded file descriptor set of `ledge.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ledge_descriptor");
