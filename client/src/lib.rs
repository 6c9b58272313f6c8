//! The Ledge Rust client.
//!
//! A [`Client`] talks to one Ledge region over gRPC (`ledge.v1`). It is given a few node
//! addresses, finds the leader on its own, and exposes one typed async method per RPC, taking
//! and returning the domain types of this crate rather than generated protobuf messages:
//!
//! ```no_run
//! use ledge_client::{Client, ReadOptions};
//!
//! # async fn demo() -> Result<(), ledge_client::Error> {
//! let client = Client::connect(["127.0.0.1:7711", "127.0.0.1:7712", "127.0.0.1:7713"]).await?;
//! let written = client.put("default", "user/1", "alice").await?;
//! // Read our own write on whichever replica answers, without a leader round trip.
//! let read = client.get("default", "user/1", ReadOptions::session(written.revision)).await?;
//! assert_eq!(read.kv.map(|kv| kv.value), Some(b"alice".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! # The life of a call
//!
//! 1. The typed method builds the request from domain types (`convert.rs` holds every
//!    conversion) and marks it a read or a write.
//! 2. The router (`router.rs`) fixes the call's deadline (5 s by default) and sends the request
//!    to the endpoint that last answered. Channels connect lazily, on first use.
//! 3. A node that cannot serve the request (minority side of a partition, no leader) answers
//!    `Unavailable`, naming the leader in response metadata when it knows one. The router
//!    retries once on the named leader, adding it to its endpoint set if it is new, or else on
//!    the next endpoint, backing off between rounds, until the deadline.
//! 4. `Unavailable` guarantees that the request was not applied, so writes are retried on it
//!    as safely as reads. Any other failure of a write (a connection that broke mid-flight, a
//!    timeout) leaves its outcome unknown and is returned to the caller. Errors about the
//!    request itself (`InvalidArgument`, `NotFound`, `FailedPrecondition`,
//!    `ResourceExhausted`, `AlreadyExists`) are never retried.
//! 5. The reply is converted back; read replies carry [`AsOf`] metadata saying which revision,
//!    node and staleness they reflect.
//!
//! # Consistency
//!
//! Reads take [`ReadOptions`]: [`ReadOptions::linearizable`] (strong keyspaces' default),
//! [`ReadOptions::stale`] optionally bounded by [`ReadOptions::max_staleness`], and
//! [`ReadOptions::session`] to read one's own writes on any replica; eventual keyspaces take
//! [`ReadOptions::one`] or [`ReadOptions::quorum`]. Writes to eventual keyspaces take a
//! [`WriteLevel`] through the `*_with` methods. See docs/api.md ("Kv") and docs/eventual.md ("Write and read levels").
//!
//! # Eventual keyspaces
//!
//! Every node takes reads and writes of an eventual keyspace, even cut off from the rest of its
//! region. Keys hold one of three types, fixed by their first write: bytes ([`Client::put`],
//! [`Client::delete`]; the latest write by [`Hlc`] wins), counters ([`Client::increment`]) and
//! sets ([`Client::set_add`], [`Client::set_remove`]). Writes reply with the [`Hlc`] they were
//! made at; reads return the merged value with its kind, and [`AsOf`] carries the answering
//! node's HLC watermarks.
//!
//! # Watches
//!
//! [`Client::watch`] follows a key or a prefix ([`WatchOptions`]) and returns a
//! [`WatchStream`] of [`WatchMessage`]s in revision order: read it with
//! [`WatchStream::next`] or as a `tokio_stream::Stream`. Only opening the stream is subject to
//! the request deadline and retries; the open stream lives until the server ends it, it fails,
//! or it is dropped. It does not reconnect on its own: resume from
//! [`WatchStream::revision`] + 1. When the starting revision has been compacted, the server
//! first sends a [`WatchMessage::Snapshot`] of the watched range. On an eventual keyspace the
//! stream is the answering node's changes in its commit order, one per message, each with the
//! key's whole state ([`WatchEvent::state`]) and a cursor: resume with
//! [`WatchOptions::from_cursor`] at [`WatchStream::cursor`] (exact on the node that issued it;
//! elsewhere a snapshot comes first).
//!
//! # Errors
//!
//! Every method returns the crate's one [`Error`], which keeps the gRPC code, the message and
//! any leader hint, and displays as `Unavailable: no leader (leader hint: 127.0.0.1:7712)`.
//!
//! The crate also builds the `ledge` command-line tool (`src/main.rs`).

#![warn(missing_docs)]

mod client;
mod convert;
mod error;
mod options;
mod router;
mod types;
mod watch;

pub use client::{
    Client, ClientBuilder, ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_REPLY_BYTES, DEFAULT_TIMEOUT,
};
pub use error::{Error, LeaderHint, Result, LEADER_ADDR_METADATA, LEADER_ID_METADATA, WRITE_KEPT_METADATA};
pub use options::{Consistency, ReadOptions, ScanOptions, WatchOptions, WriteLevel};
pub use router::normalize_endpoint;
pub use tonic::Code;
pub use types::{
    AsOf, BatchResult, Condition, DeleteResult, DiskUsage, EventKind, GetResult, Hlc, IncrementResult, KeyValue,
    Keyspace, Member, MemoryPart, Mode, NodeStatus, Op, PutResult, ScanPage, Scope, SetResult, ValueKind, WatchEvent,
    WatchMessage,
};
pub use watch::WatchStream;
