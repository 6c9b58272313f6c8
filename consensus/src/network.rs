//! The Raft network over gRPC, client side.
//!
//! openraft asks [`Network`] for a connection to each peer once and keeps it. A connection holds
//! a lazily connected tonic channel obtained from the injected [`Dialer`], so production dials
//! real TCP while the simulation dials turmoil's. A failure to connect is `Unreachable` (openraft
//! backs off), a timeout is `Timeout`, and an error returned by the peer's Raft is a
//! `RemoteError`.
//!
//! # Bounded messages
//!
//! openraft packs up to `max_payload_entries` entries into one `AppendEntries` with no byte
//! bound, and one entry can hold megabytes (a batched proposal, see `batcher.rs`). openraft 0.9's
//! replication core wraps every `AppendEntries` call in its own `timeout(heartbeat_interval)`
//! (and `Vote` in its TTL, each snapshot chunk in `install_snapshot_timeout`) and drops the
//! call when that expires, so a request too large to cross in one heartbeat would be re-sent and
//! dropped forever while followers hear nothing and stand for election. Two things keep a
//! request small enough to cross in a heartbeat on a LAN:
//!
//! - the log reader returns at most [`MAX_APPEND_BYTES`] of entries per replication read (past
//!   the first entry), see `ledge_store::LogOptions::max_read_bytes`;
//! - [`Connection::append_entries`] sends only the longest prefix of the entries that encodes
//!   within [`MAX_APPEND_BYTES`] (at least one entry) and, when the peer accepts it, answers
//!   openraft `PartialSuccess(last sent log id)`, so openraft sends the rest next.
//!
//! A single entry larger than what crosses in a heartbeat still cannot replicate: the largest
//! command a region accepts (`--max-request-bytes`) must stay well under the heartbeat's worth of
//! bandwidth (see docs/consensus.md).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, LogId, RaftMetrics};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use ledge_proto::v1::raft_client::RaftClient;
use ledge_proto::v1::RaftMessage;
use ledge_store::{NodeId, TypeConfig};

use crate::batcher::MAX_PROPOSAL_BYTES;

/// Most bytes of encoded entries one `AppendEntries` carries, past its first entry. 2 MiB
/// crosses loopback or a LAN in a few milliseconds, well inside openraft's per-call timeout of
/// one heartbeat (100 ms by default), follower's log sync included.
pub const MAX_APPEND_BYTES: usize = 2 * 1024 * 1024;

/// Largest single command a node accepts (the API's highest `--max-request-bytes`).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024 * 1024;

/// Largest single log entry: the batcher stops adding commands to a proposal once it holds
/// [`MAX_PROPOSAL_BYTES`], so the last command it adds can take it to that plus one command.
pub const MAX_ENTRY_BYTES: usize = MAX_PROPOSAL_BYTES + MAX_COMMAND_BYTES;

/// Room for what surrounds the entries: the request's vote and log ids, the bincode framing of
/// each command, the gRPC envelope; also covers a snapshot chunk's metadata.
const ENVELOPE_BYTES: usize = 1024 * 1024;

/// Largest gRPC message a Raft RPC may carry, both ways: an `AppendEntries` holds entries within
/// [`MAX_APPEND_BYTES`] or a single entry of at most [`MAX_ENTRY_BYTES`]; a forwarded write one
/// command; a snapshot chunk `snapshot_max_chunk_size` (3 MiB, see `node.rs`). 68 MiB.
pub const MAX_MESSAGE_BYTES: usize = MAX_APPEND_BYTES + MAX_ENTRY_BYTES + ENVELOPE_BYTES;

/// Time allowed for any RPC regardless of size.
const RPC_TIMEOUT_BASE: Duration = Duration::from_millis(100);
/// Payload bytes per extra millisecond allowed: 64 KiB/ms, i.e. an assumed 64 MiB/s, a slow
/// link's rate (loopback and a LAN are much faster).
const BYTES_PER_MS: usize = 64 * 1024;

/// How long one RPC carrying `bytes` may take: openraft's TTL, or more for a large payload
/// (100 ms plus 1 ms per 64 KiB). openraft 0.9 also wraps each call in its own `timeout(ttl)`
/// (heartbeat interval for `AppendEntries`, `install_snapshot_timeout` per snapshot chunk), which
/// wins when shorter: what keeps `AppendEntries` inside a heartbeat is [`MAX_APPEND_BYTES`], not
/// this allowance.
pub fn rpc_timeout(ttl: Duration, bytes: usize) -> Duration {
    ttl.max(RPC_TIMEOUT_BASE + Duration::from_millis((bytes / BYTES_PER_MS) as u64))
}

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
        let payload = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_encoded(rpc, payload, option).await
    }

    /// Sends an already encoded request.
    async fn call_encoded<Resp, E>(
        &mut self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&WireError(e.clone())))),
        };
        let ttl = rpc_timeout(option.hard_ttl(), payload.len());
        let leader_quorum_age_ms = match rpc {
            Rpc::Append => self.quorum_age.millis(),
            Rpc::Vote | Rpc::Snapshot => None,
        };
        let msg = RaftMessage { target: self.target, payload, leader_quorum_age_ms };
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
        let packed = pack_append(&rpc, MAX_APPEND_BYTES).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self.call_encoded(Rpc::Append, packed.payload, &option).await?;
        Ok(partial_reply(reply, packed.last_sent))
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

/// An `AppendEntries` request encoded for the wire, possibly with fewer entries than asked.
struct PackedAppend {
    /// bincode of an `AppendEntriesRequest` holding the sent prefix of the entries.
    payload: Vec<u8>,
    /// The log id of the last entry sent, when some entries were left out (else `None`).
    last_sent: Option<LogId<NodeId>>,
}

/// Encodes `rpc` with the longest prefix of its entries whose encoding fits in `max_bytes`, and
/// at least one entry.
///
/// The request is written field by field into one buffer, each entry encoded once and never
/// cloned: bincode (fixed-width integers, little-endian) encodes a struct as its fields in
/// declaration order and a sequence as its `u64` length followed by its items, so the entry
/// count is patched in once the prefix is known. An entry that overflows the bound is encoded
/// and cut off again; the store's replication reads are bounded by the same budget, so that is
/// rare. `packed_requests_decode_as_the_prefix` checks the layout against bincode itself.
fn pack_append(rpc: &AppendEntriesRequest<TypeConfig>, max_bytes: usize) -> bincode::Result<PackedAppend> {
    let mut buf = Vec::new();
    // Field order of `AppendEntriesRequest`: vote, prev_log_id, entries, leader_commit.
    bincode::serialize_into(&mut buf, &(&rpc.vote, &rpc.prev_log_id))?;
    let count_at = buf.len();
    buf.extend_from_slice(&0u64.to_le_bytes());
    let entries_at = buf.len();
    let mut sent = 0usize;
    for entry in &rpc.entries {
        let before = buf.len();
        bincode::serialize_into(&mut buf, entry)?;
        if sent > 0 && buf.len() - entries_at > max_bytes {
            buf.truncate(before);
            break;
        }
        sent += 1;
        if buf.len() - entries_at >= max_bytes {
            break;
        }
    }
    buf[count_at..entries_at].copy_from_slice(&(sent as u64).to_le_bytes());
    bincode::serialize_into(&mut buf, &rpc.leader_commit)?;
    let last_sent =
        if sent < rpc.entries.len() { rpc.entries.get(sent.wrapping_sub(1)).map(|e| e.log_id) } else { None };
    Ok(PackedAppend { payload: buf, last_sent })
}

/// The answer to give openraft for a request of which only the entries up to `last_sent` were
/// sent: the peer's `Success` covers only those, so it becomes `PartialSuccess(last_sent)`
/// (never below the request's `prev_log_id`: the entries follow it). `Conflict` and
/// `HigherVote` are about `prev_log_id` and the vote, so they pass through, as does everything
/// when the whole request was sent.
fn partial_reply(
    reply: AppendEntriesResponse<NodeId>,
    last_sent: Option<LogId<NodeId>>,
) -> AppendEntriesResponse<NodeId> {
    match (reply, last_sent) {
        (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
        (reply, _) => reply,
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

    fn entry(index: u64, value_bytes: usize) -> openraft::Entry<TypeConfig> {
        use ledge_store::{Command, Op, Proposal, Request};
        let cmd = Command::Batch {
            keyspace: "default".into(),
            conditions: Vec::new(),
            ops: vec![Op::Put(index.to_be_bytes().to_vec(), vec![index as u8; value_bytes])],
        };
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), index),
            payload: openraft::EntryPayload::Normal(Proposal(vec![Request::new(cmd)])),
        }
    }

    fn request(first: u64, sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: (first > 1).then(|| LogId::new(openraft::CommittedLeaderId::new(2, 1), first - 1)),
            entries: sizes.iter().enumerate().map(|(k, n)| entry(first + k as u64, *n)).collect(),
            leader_commit: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), first - 1)),
        }
    }

    fn decode(payload: &[u8]) -> AppendEntriesRequest<TypeConfig> {
        bincode::deserialize(payload).expect("a packed request decodes")
    }

    #[test]
    fn packed_requests_decode_as_the_prefix() {
        const K: usize = 1024;
        for sizes in
            [vec![], vec![10], vec![K; 5], vec![600 * K, 600 * K, 600 * K], vec![3000 * K, 10, 10], vec![10; 40]]
        {
            let rpc = request(7, &sizes);
            let packed = pack_append(&rpc, 1024 * K).unwrap();
            let got = decode(&packed.payload);
            let n = got.entries.len();
            assert_eq!((got.vote, got.prev_log_id, got.leader_commit), (rpc.vote, rpc.prev_log_id, rpc.leader_commit));
            assert_eq!(bincode::serialize(&got.entries).unwrap(), bincode::serialize(&rpc.entries[..n]).unwrap());
            if n == rpc.entries.len() {
                // Nothing left out: the same bytes as bincode's own encoding.
                assert_eq!(packed.payload, bincode::serialize(&rpc).unwrap(), "{sizes:?}");
                assert_eq!(packed.last_sent, None);
            } else {
                assert!(n >= 1, "at least one entry is sent");
                assert_eq!(packed.last_sent, Some(rpc.entries[n - 1].log_id));
                let sent: usize = rpc.entries[..n].iter().map(|e| bincode::serialized_size(e).unwrap() as usize).sum();
                let next = bincode::serialized_size(&rpc.entries[n]).unwrap() as usize;
                assert!(n == 1 || sent <= 1024 * K, "{sizes:?}: {n} entries of {sent} bytes");
                assert!(sent + next > 1024 * K, "{sizes:?}: the next entry would have fit");
            }
        }
    }

    #[test]
    fn a_cut_request_answers_partial_success() {
        let last = LogId::new(openraft::CommittedLeaderId::new(3, 1), 9);
        assert_eq!(
            partial_reply(AppendEntriesResponse::Success, Some(last)),
            AppendEntriesResponse::PartialSuccess(Some(last))
        );
        assert_eq!(partial_reply(AppendEntriesResponse::Success, None), AppendEntriesResponse::Success);
        assert_eq!(partial_reply(AppendEntriesResponse::Conflict, Some(last)), AppendEntriesResponse::Conflict);
        let higher = openraft::Vote::new(4, 2);
        assert_eq!(
            partial_reply(AppendEntriesResponse::HigherVote(higher), Some(last)),
            AppendEntriesResponse::HigherVote(higher)
        );
    }

    #[test]
    fn timeouts_grow_with_the_payload() {
        let hb = Duration::from_millis(100);
        assert_eq!(rpc_timeout(hb, 0), hb);
        assert_eq!(rpc_timeout(hb, 2 * 1024 * 1024), Duration::from_millis(132));
        assert_eq!(rpc_timeout(Duration::from_secs(10), 3 * 1024 * 1024), Duration::from_secs(10));
    }

    #[test]
    fn other_failures_may_have_been_delivered() {
        assert!(!never_sent(&tonic::Status::unavailable("leader lost")));
        assert!(!never_sent(&tonic::Status::unknown("connection reset")));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!never_sent(&tonic::Status::from_error(Box::new(reset))));
    }
}
