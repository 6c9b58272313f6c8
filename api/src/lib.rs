//! The Ledge node: gRPC services over the consensus and storage layers, node wiring, and the
//! `ledged` binary's configuration.
//!
//! - [`config`]: flags, `LEDGE_*` environment variables and TOML file, resolved into a [`Config`].
//! - [`server`]: opens the store, starts the Raft node and serves `ledge.v1.Kv`, `ledge.v1.Admin`,
//!   the internal `ledge.v1.Raft`, `grpc.health.v1` and server reflection; on shutdown it stops
//!   accepting requests, then stops Raft and flushes the store.
//! - [`kv`], [`admin`], [`watch`]: the services. `Kv` hands each request to the engine of its
//!   keyspace's mode (`engine.rs`): `strong.rs` over the Raft group, with [`read`] serving each
//!   read consistency, and [`eventual`] over the local replica and its replication engine;
//!   [`limits`] validates input before anything reaches Raft or a replica; [`convert`] maps
//!   between protobuf and domain types and maps every error to a gRPC status in one place.
//! - [`sync`]: the gRPC side of eventual replication (the engine itself is
//!   `ledge_crdt::replication`): the internal `ledge.v1.Sync` service, and the transport and
//!   membership the engine is started with.

pub mod admin;
pub mod config;
pub mod convert;
pub mod deadline;
mod engine;
pub mod eventual;
pub mod kv;
pub mod limits;
pub mod read;
pub mod server;
mod strong;
pub mod sync;
pub mod watch;

pub use config::{Args, Config};
pub use server::{run, serve, serve_with_clock, Environment};
