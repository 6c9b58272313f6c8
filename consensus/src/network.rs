//! The Raft network over gRPC, client side.
//!
//! openraft asks [`Network`] for a connection to each peer once and keeps it. A connection holds
//! a lazily connected tonic channel obtained from the injected [`Dialer`], so production dials
//! real TCP while the simulation dials turmoil's. Every RPC is bounded by openraft's TTL; a
//! failure to connect is `Unreachable` (openraft backs off), a timeout is `Timeout`, and an error
//! returned by the peer's Raft is a `RemoteError`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RaftMetrics};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use ledge_proto::v1::raft_client::RaftClient;
use ledge_proto::v1::RaftMessage;
use ledge_store::{NodeId, TypeConfig};

/// Largest gRPC message a Raft RPC may carry (entries are batched up to this size).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Opens gRPC channels to peers. Injected so that the simulation can supply its own transport.
pub trait Dialer: Send + Sync + 'static {
    /// A channel to `addr` (`host:port`). It may connect lazily; errors surface on first use.
    fn channel(&self, addr: &str) -> Result<Channel, String>;
}

/// Dials peers over real TCP.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    /// Bound on establishing a TCP connection.
    pub connect_timeout: Duration,
}

impl Default for TcpDialer {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(1) }
    }
}

impl Dialer for TcpDialer {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| format!("bad address {addr:?}: {e}"))?;
        // HTTP/2 keepalives notice a peer connection that went silent (a partition that drops
        // packets without a reset), so the channel reconnects instead of timing out forever.
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_lazy())
    }
}

/// A `Raft` service client on `channel`, with message limits sized for Raft batches.
pub(crate) fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// How long ago a quorum last acknowledged this node as leader, read from its Raft metrics once
/// the Raft instance exists (the network is created before it). Sent with every AppendEntries.
#[derive(Clone, Default)]
pub struct QuorumAge(Arc<OnceLock<watch::Receiver<RaftMetrics<NodeId, BasicNode>>>>);

impl QuorumAge {
    /// Starts reading `metrics`.
    pub fn set(&self, metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>) {
        let _ = self.0.set(metrics);
    }

    /// Milliseconds since a quorum last acknowledged this node as leader; `None` when it is not
    /// the leader or does not know.
    pub fn millis(&self) -> Option<u64> {
        let metrics = self.0.get()?;
        let m = metrics.borrow();
        if m.state != openraft::ServerState::Leader {
            return None;
        }
        if m.membership_config.membership().voter_ids().nth(1).is_none() {
            return Some(0);
        }
        m.millis_since_quorum_ack
    }
}

/// Creates connections to Raft peers.
#[derive(Clone)]
pub struct Network {
    dialer: Arc<dyn Dialer>,
    quorum_age: QuorumAge,
}

impl Network {
    /// A network that dials through `dialer` and dates AppendEntries with `quorum_age`.
    pub fn new(dialer: Arc<dyn Dialer>, quorum_age: QuorumAge) -> Self {
        Self { dialer, quorum_age }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let client = self.dialer.channel(&node.addr).map(raft_client);
        Connection { target, addr: node.addr.clone(), client, quorum_age: self.quorum_age.clone() }
    }
}

/// A connection to one peer.
pub struct Connection {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
    quorum_age: QuorumAge,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

/// Which RPC to call.
#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&WireError(e.clone())))),
        };
        let payload = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let leader_quorum_age_ms = match rpc {
            Rpc::Append => self.quorum_age.millis(),
            Rpc::Vote | Rpc::Snapshot => None,
        };
        let msg = RaftMessage { target: self.target, payload, leader_quorum_age_ms };
        let ttl = option.hard_ttl();
        let mut client = client;
        let fut = async move {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(status_to_rpc_error(&self.addr, status)),
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: match rpc {
                        Rpc::Append => openraft::network::RPCTypes::AppendEntries,
                        Rpc::Vote => openraft::network::RPCTypes::Vote,
                        Rpc::Snapshot => openraft::network::RPCTypes::InstallSnapshot,
                    },
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }))
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn status_to_rpc_error<E: std::error::Error>(
    addr: &str,
    status: tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let err = WireError(format!("{addr}: {}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&err)),
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// Whether a failed call certainly never reached the server: the connection could not be
/// established (refused, unreachable, connect timeout). tonic reports those as `Unavailable`,
/// but it also reports some connections lost mid-call as `Unavailable`, after the request may
/// have been delivered and acted on; only the error chain tells the two apart.
pub fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        let text = e.to_string();
        if ["tcp connect error", "error trying to connect", "connect timed out", "Connection refused"]
            .iter()
            .any(|t| text.contains(t))
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_was_never_sent() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let channel = TcpDialer::default().channel(&format!("127.0.0.1:{port}")).expect("channel");
        let msg = ledge_proto::v1::RaftMessage { target: 1, payload: Vec::new(), leader_quorum_age_ms: None };
        let status = raft_client(channel).propose(msg).await.expect_err("nothing listens");
        assert!(never_sent(&status), "{status:?}");
    }

    #[test]
    fn other_failures_may_have_been_delivered() {
        assert!(!never_sent(&tonic::Status::unavailable("leader lost")));
        assert!(!never_sent(&tonic::Status::unknown("connection reset")));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!never_sent(&tonic::Status::from_error(Box::new(reset))));
    }
}
