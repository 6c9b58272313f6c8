//! Ledge consensus: a region's strong keyspaces replicated by openraft.
//!
//! - [`Node`] starts a node's Raft instance on the sled store of `ledge-store`, initializes a
//!   one-node group on first start when asked, and offers the operations the API layer needs:
//!   [`Node::write`] (propose a command, wait until applied), [`Node::read_barrier`] (confirm
//!   leadership with a quorum, then read applied state: a linearizable read),
//!   [`Node::wait_applied`] (a session read's wait for a revision) and [`Node::status`].
//! - [`Network`] and [`RaftService`] carry openraft's RPCs over gRPC (`ledge.v1.Raft`), with the
//!   transport injected through a [`Dialer`] so a simulation can replace TCP.
//!
//! The openraft type configuration ([`TypeConfig`]) is defined next to the storage that
//! implements it, in `ledge-store`, and re-exported here.

mod batcher;
mod error;
mod membership;
mod network;
mod node;
mod peer;
mod reads;
mod request;
mod service;

pub use batcher::{MAX_COMMANDS, MAX_IN_FLIGHT, MAX_PROPOSAL_BYTES, MAX_QUEUED};
pub use error::Error;
pub use ledge_store::{Command, NodeId, Request, RequestId, Response, TypeConfig};
pub use network::{
    never_sent, rpc_timeout, Connection, Dialer, Network, QuorumAge, TcpDialer, MAX_APPEND_BYTES, MAX_COMMAND_BYTES,
    MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES,
};
pub use node::{resolve_node_id, Node, NodeOptions, RaftTuning, Status};
pub use peer::{MembershipChange, Peers};
pub use reads::MAX_QUEUED_READS;
pub use service::{Freshness, RaftService};
