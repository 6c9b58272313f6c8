//! The gRPC side of eventual replication: the `Sync` service that hands peers' messages to the
//! local replica ([`SyncService`]), and the transport and membership the replication engine
//! (`crdt/src/replication/`) is started with: links over gRPC channels from the node's dialer
//! ([`GrpcTransport`]), and the region's members as the Raft group knows them
//! ([`NodeMembership`]).

mod remote;
mod service;

use std::sync::Arc;
use std::time::Duration;

use openraft::LogId;
use tokio::sync::watch;
use tonic::Status;

use ledge_consensus::{Dialer, Node, TypeConfig};
use ledge_crdt::replication::{LinkStatus, Membership, Transport};
use ledge_crdt::Shortfall;
use ledge_proto::v1 as pb;

use crate::convert;
pub use remote::GrpcRemote;
pub use service::SyncService;

/// A node's replication engine, over gRPC.
pub type Replication = ledge_crdt::Replication<GrpcTransport>;

/// Links to peers over gRPC channels from the node's dialer.
pub struct GrpcTransport {
    dialer: Arc<dyn Dialer>,
}

impl GrpcTransport {
    /// A transport dialing through `dialer`.
    pub fn new(dialer: Arc<dyn Dialer>) -> Self {
        Self { dialer }
    }
}

impl Transport for GrpcTransport {
    type Peer = GrpcRemote;

    fn connect(&self, from: u64, peer: u64, address: &str, timeout: Duration) -> Result<GrpcRemote, ledge_crdt::Error> {
        let channel = self.dialer.channel(address).map_err(|e| ledge_crdt::Error::Unavailable(e.to_string()))?;
        Ok(GrpcRemote::new(from, peer, address.to_string(), channel, timeout))
    }
}

/// The region's members, as this node's Raft group knows them.
pub struct NodeMembership {
    node: Node,
    metrics: watch::Receiver<openraft::RaftMetrics<u64, <TypeConfig as openraft::RaftTypeConfig>::Node>>,
    seen: Option<Option<LogId<u64>>>,
}

impl NodeMembership {
    /// The members of `node`'s region.
    pub fn new(node: Node) -> Self {
        let metrics = node.raft().metrics();
        Self { node, metrics, seen: None }
    }
}

impl Membership for NodeMembership {
    fn members(&self) -> (u64, Vec<(u64, String)>) {
        let status = self.node.status();
        (status.id, status.members.into_iter().map(|(id, address, ..)| (id, address)).collect())
    }

    async fn changed(&mut self) -> bool {
        loop {
            let current = *self.metrics.borrow_and_update().membership_config.log_id();
            if self.seen != Some(current) {
                self.seen = Some(current);
                return true;
            }
            if self.metrics.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// A write level not met in time, as a status: `Unavailable`, with the `ledge-write-kept`
/// metadata that tells clients not to retry (the write was applied).
pub fn shortfall_status(shortfall: Shortfall) -> Status {
    let mut status = Status::unavailable(shortfall.to_string());
    status.metadata_mut().insert(convert::WRITE_KEPT, tonic::metadata::MetadataValue::from(shortfall.stored as u64));
    status
}

/// A sync link on the status page.
pub fn link_status(link: LinkStatus) -> pb::SyncLink {
    pb::SyncLink {
        node_id: link.node_id,
        address: link.address,
        unsynced_entries: link.unsynced_entries,
        oldest_unsynced_ms: link.oldest_unsynced_ms,
        reachable: link.reachable,
        sessions: link.sessions,
        bytes_sent: link.bytes_sent,
        bytes_received: link.bytes_received,
        stable_hlc: link.stable.and_then(convert::hlc_opt),
        pushed_entries: link.pushed_entries,
        pushed_bytes: link.pushed_bytes,
    }
}
