//! The internal `ledge.v1.Raft` gRPC service: openraft's RPCs, plus forwarding, read index,
//! membership changes and discovery between the nodes of a region.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use ledge_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use ledge_proto::v1::{HelloRequest, HelloResponse, RaftMessage};
use ledge_store::TypeConfig;

use crate::network::MAX_MESSAGE_BYTES;
use crate::peer::MembershipChange;
use crate::Node;

/// When this replica last knew it had applied everything a current leader had committed: when it
/// accepts an `AppendEntries` whose commit index it has already applied, the moment a quorum
/// last acknowledged the sender as leader (the message says how long before sending that was).
/// The age of that moment bounds how stale a local read is. A leader cut off from the majority
/// keeps sending to the followers on its side, but the age it reports keeps growing, so they do
/// not report themselves fresh.
#[derive(Clone, Default)]
pub struct Freshness(Arc<Mutex<Option<Instant>>>);

impl Freshness {
    /// Time since the replica was last known to be caught up, if ever.
    pub fn age(&self) -> Option<Duration> {
        self.0.lock().ok().and_then(|t| t.map(|t| t.elapsed()))
    }

    /// Records that the replica was caught up as of `at`; never moves backwards.
    fn mark(&self, at: Instant) {
        if let Ok(mut t) = self.0.lock() {
            if t.is_none_or(|prev| prev < at) {
                *t = Some(at);
            }
        }
    }
}

/// Serves the internal `Raft` gRPC service for one node.
#[derive(Clone)]
pub struct RaftService {
    node: Node,
}

impl RaftService {
    /// A service that delivers RPCs to `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    /// The tonic server for this service, with message limits sized for Raft batches.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn decode<T: DeserializeOwned>(&self, msg: &RaftMessage) -> Result<T, Status> {
        if msg.target != self.node.id() {
            return Err(Status::failed_precondition(format!(
                "raft message for node {} delivered to node {}",
                msg.target,
                self.node.id()
            )));
        }
        bincode::deserialize(&msg.payload).map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Response<RaftMessage>, Status> {
        let payload = bincode::serialize(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
        Ok(Response::new(RaftMessage { target: self.node.id(), payload, leader_quorum_age_ms: None }))
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.node.request_timeout()
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode(req.get_ref())?;
        let received = Instant::now();
        // A sender that does not say how recently a quorum acknowledged it is not trusted as
        // fresh: only a leader's own account dates the follower's freshness.
        let age = req.get_ref().leader_quorum_age_ms.map(Duration::from_millis);
        let commit = rpc.leader_commit.map(|id| id.index).unwrap_or(0);
        let result = self.node.raft().append_entries(rpc).await;
        if let Some(age) = age {
            if matches!(result, Ok(AppendEntriesResponse::Success)) && self.node.state().applied_index() >= commit {
                if let Some(at) = received.checked_sub(age) {
                    self.node.freshness().mark(at);
                }
            }
        }
        self.encode(&result)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req.get_ref())?;
        let result = self.node.raft().vote(rpc).await;
        self.encode(&result)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req.get_ref())?;
        let result = self.node.raft().install_snapshot(rpc).await;
        self.encode(&result)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let request: ledge_store::Request = self.decode(req.get_ref())?;
        // Only the leader proposes: a forwarded write is never forwarded again.
        let result = self.node.write_local(request, self.deadline()).await;
        self.encode(&result)
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let () = self.decode(req.get_ref())?;
        let result = self.node.read_index_local(self.deadline()).await;
        self.encode(&result)
    }

    async fn join(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let change: MembershipChange = self.decode(req.get_ref())?;
        let result = self.node.change_membership_local(change).await;
        self.encode(&result)
    }

    async fn change_membership(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let change: MembershipChange = self.decode(req.get_ref())?;
        let result = self.node.change_membership_local(change).await;
        self.encode(&result)
    }

    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let from = req.into_inner();
        tracing::debug!(node = from.node_id, address = %from.address, "hello");
        let initialized = self.node.raft().is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let (leader_id, leader_address) = self.node.leader().unwrap_or((0, String::new()));
        Ok(Response::new(HelloResponse {
            node_id: self.node.id(),
            address: self.node.address().to_string(),
            region: self.node.region().to_string(),
            initialized,
            leader_id,
            leader_address,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_dated_by_the_leader_and_never_moves_back() {
        let f = Freshness::default();
        assert!(f.age().is_none(), "never caught up: unknown");
        let now = Instant::now();
        // A leader whose quorum last acknowledged it 3 s ago: the replica is at least 3 s stale.
        f.mark(now - Duration::from_secs(3));
        assert!(f.age().unwrap() >= Duration::from_secs(3));
        f.mark(now);
        // An older account (a deposed leader's) does not make the replica look staler or fresher.
        f.mark(now - Duration::from_secs(10));
        assert!(f.age().unwrap() < Duration::from_secs(3));
    }
}
