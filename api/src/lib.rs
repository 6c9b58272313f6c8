//! The Ledge node: gRPC services over the consensus and storage layers, node wiring, and the
//! `ledged` binary's configuration.
//!
//! - [`config`]: flags, `LEDGE_*` environment variables and TOML file, resolved into a [`Config`].
//! - [`server`]: opens the store, starts the Raft node and serves `ledge.v1.Kv`, `ledge.v1.Admin`,
//!   the internal `ledge.v1.Raft`, `grpc.health.v1` and server reflection; on shutdown it stops
//!   accepting requests, then stops Raft and flushes the store.
//! - [`kv`], [`admin`], [`watch`]: the services; [`read`] serves each read consistency of strong
//!   keyspaces and [`eventual`] the eventual ones; [`limits`] validates input before anything
//!   reaches Raft or a replica; [`convert`] maps between protobuf and domain types and maps every
//!   error to a gRPC status in one place.
//! - [`sync`]: replication of eventual keyspaces between the region's nodes (push streams,
//!   anti-entropy, write levels, quorum reads) and the internal `ledge.v1.Sync` service.

pub mod admin;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod eventual;
pub mod kv;
pub mod limits;
pub mod read;
pub mod server;
pub mod sync;
pub mod watch;

pub use config::{Args, Config};
pub use server::{run, serve, serve_with_clock, Environment};
