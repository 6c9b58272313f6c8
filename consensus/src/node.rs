//! A Ledge node's membership in its region's Raft group: start-up, bootstrap, writes, read
//! barriers and status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use openraft::error::RaftError;
use openraft::{BasicNode, Raft, RaftMetrics, ServerState, SnapshotPolicy};

use ledge_store::{self as store, Log, NodeId, StateMachine, TypeConfig};

use crate::batcher::Batcher;
use crate::network::{Dialer, Network, QuorumAge, MAX_APPEND_BYTES};
use crate::peer::Peers;
use crate::reads::Reads;
use crate::service::{Freshness, RaftService};
use crate::Error;

/// Most entries in one `AppendEntries` (openraft's default, set here to be explicit).
pub const MAX_PAYLOAD_ENTRIES: u64 = 300;
/// Bytes of snapshot data per `InstallSnapshot` chunk (openraft's default, 3 MiB).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 3 * 1024 * 1024;
/// Deadline for sending one snapshot chunk, and for sending the last chunk and installing the
/// snapshot.
pub const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(
    SNAPSHOT_CHUNK_BYTES as usize + 64 * 1024 <= crate::network::MAX_MESSAGE_BYTES,
    "a snapshot chunk must fit a Raft message"
);

/// Raft timing and log-retention settings.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after: u64,
    /// Build a snapshot after this many bytes of commands applied since the last one.
    pub snapshot_bytes: u64,
    /// Build a snapshot when this long has passed since the last one and anything was applied.
    pub snapshot_interval: Duration,
    /// Entries kept in the log behind a snapshot (for slow followers) before purging.
    pub keep_after_snapshot: u64,
    /// Revisions of change log (watch history) kept behind a snapshot.
    pub change_retention: u64,
    /// Build a snapshot once nothing has been applied for this long and anything was applied
    /// since the last one, so that an idle node's log is purged down to `keep_after_snapshot`.
    pub checkpoint_idle: Duration,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(250),
            election_max: Duration::from_millis(500),
            snapshot_after: 20_000,
            snapshot_bytes: 16 * 1024 * 1024,
            snapshot_interval: Duration::from_secs(60),
            keep_after_snapshot: 1_000,
            change_retention: 10_000,
            checkpoint_idle: Duration::from_secs(5),
        }
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Node id; when `None`, the id stored in the data dir is used, or a new one generated.
    pub node_id: Option<NodeId>,
    /// Where the node keeps its files.
    pub data_dir: PathBuf,
    /// The address peers and clients reach this node at.
    pub advertise: String,
    /// The region this node belongs to.
    pub region: String,
    /// Seed peers (`host:port`) used to form or join the region; may include this node.
    pub seeds: Vec<String>,
    /// How many nodes form the region at first start. With no other seeds, 1 initializes a
    /// one-node region at once; 0 never initializes (the node only joins an existing region).
    pub bootstrap_expect: usize,
    /// Most voters the region grows to by promoting learners.
    pub max_voters: usize,
    /// Test-only fault: answer read barriers from local state without confirming leadership.
    pub unsafe_local_reads: bool,
    /// Deadline for a write or read barrier.
    pub request_timeout: Duration,
    /// Raft settings.
    pub raft: RaftTuning,
    /// When the Raft log's writes are synced: on the log's own writer thread in a server,
    /// inline on the caller in a deterministic simulation.
    pub flush: store::FlushPolicy,
    /// The node's memory budget: sled's cache, the log's tail, queued writes and the change
    /// feed take their shares of it.
    pub memory: store::MemoryBudget,
}

/// Returns the node id kept in `data_dir`, storing `requested` or `generate()` on first start.
pub fn resolve_node_id(
    data_dir: &Path,
    requested: Option<NodeId>,
    generate: impl FnOnce() -> NodeId,
) -> Result<NodeId, Error> {
    let path = data_dir.join("node_id");
    let io = |e: std::io::Error| Error::Store(store::Error::Io(format!("{}: {e}", path.display())));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: NodeId = text.trim().parse().map_err(|_| {
                Error::Store(store::Error::Corrupt(format!("{} does not hold a node id", path.display())))
            })?;
            match requested {
                Some(id) if id != stored => Err(Error::InvalidInput(format!(
                    "--node-id {id} does not match node id {stored} stored in {}",
                    data_dir.display()
                ))),
                _ => Ok(stored),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A database without its id file belongs to a node whose id is unknown here: a new
            // id would make it a stranger to its own region (and its log a forgery).
            let existing: Vec<&str> = ["db", "raft"].into_iter().filter(|d| data_dir.join(d).exists()).collect();
            if requested.is_none() && !existing.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{} is missing, but {} holds this node's data ({}/): restore the file, or start with \
                     --node-id set to the id this node had",
                    path.display(),
                    data_dir.display(),
                    existing.join("/, ")
                )));
            }
            let id = requested.unwrap_or_else(generate);
            if id == 0 {
                return Err(Error::InvalidInput("node id 0 is reserved".into()));
            }
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let tmp = data_dir.join("node_id.tmp");
            std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            // The rename is durable once the directory is.
            std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// A running node: its Raft handle, state machine and log. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    advertise: String,
    region: String,
    peers: Peers,
    /// Serializes membership changes on the leader.
    membership_lock: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
    quorum_timeout: Duration,
    unsafe_local_reads: bool,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    log: Log,
    db: sled::Db,
    request_timeout: Duration,
    freshness: Freshness,
    batcher: Batcher,
    reads: Reads,
    memory: store::MemoryBudget,
    usage: store::Usage,
    data_dir: PathBuf,
}

/// A snapshot of what a node knows about itself and its region.
#[derive(Debug, Clone)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// This node's advertised address.
    pub address: String,
    /// `leader`, `follower`, `learner`, `candidate` or `shutdown`.
    pub state: &'static str,
    /// Current leader, if known.
    pub leader: Option<(NodeId, String)>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Applied revision.
    pub applied: u64,
    /// Members: id, address, role, last applied log index (as known to the leader; else only
    /// self).
    pub members: Vec<(NodeId, String, &'static str, Option<u64>)>,
    /// Last index covered by the latest snapshot.
    pub snapshot_index: u64,
    /// Last purged log index.
    pub purged_index: u64,
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

impl Node {
    /// Opens the node's store and starts its Raft instance. A node that was never part of a
    /// group initializes a one-member group at once when it has no other seeds and
    /// `bootstrap_expect` is 1; otherwise it forms or joins the region through its seeds in the
    /// background. A restarted node needs no call.
    pub async fn start(opts: NodeOptions, id: NodeId, dialer: Arc<dyn Dialer>) -> Result<Self, Error> {
        // Replication reads stop at the same byte budget as an `AppendEntries` (see network.rs).
        let log_options =
            store::LogOptions { flush: opts.flush, max_read_bytes: MAX_APPEND_BYTES as u64, ..Default::default() };
        let (db, log, sm) = store::open_with(&opts.data_dir, store::StoreOptions::within(&opts.memory, log_options))?;
        let usage = sm.usage().clone();
        sm.set_feed_limit(opts.memory.share(store::Part::Changes));
        let config = openraft::Config {
            cluster_name: "ledge".into(),
            heartbeat_interval: opts.raft.heartbeat.as_millis() as u64,
            election_timeout_min: opts.raft.election_min.as_millis() as u64,
            election_timeout_max: opts.raft.election_max.as_millis() as u64,
            // Snapshots are triggered by `snapshots` below, by entries, bytes and time.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: opts.raft.keep_after_snapshot,
            // Entries per AppendEntries; the log reader and the network also cut a request at
            // MAX_APPEND_BYTES, so this only bounds requests of many small entries.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // Snapshot chunks: well inside MAX_MESSAGE_BYTES, and quick to cross.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Per snapshot chunk, and for the last one also the follower's install of the whole
            // snapshot, which takes seconds for a state of hundreds of MiB (openraft's default is
            // 200 ms).
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| Error::InvalidInput(format!("raft config: {e}")))?);
        sm.set_change_retention(opts.raft.change_retention);
        let quorum_age = QuorumAge::default();
        let raft = Raft::new(id, config, Network::new(dialer.clone(), quorum_age.clone()), log.clone(), sm.clone())
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?;
        quorum_age.set(raft.metrics());
        sm.serve_snapshots();
        let node = Self {
            inner: Arc::new(Inner {
                id,
                advertise: opts.advertise.clone(),
                region: opts.region.clone(),
                peers: Peers::new(dialer),
                membership_lock: tokio::sync::Mutex::new(()),
                stopping: AtomicBool::new(false),
                quorum_timeout: opts.raft.election_max * 2,
                unsafe_local_reads: opts.unsafe_local_reads,
                sm,
                log,
                db,
                request_timeout: opts.request_timeout,
                freshness: Freshness::default(),
                batcher: Batcher::start(raft.clone(), opts.memory.share(store::Part::Requests), usage.clone()),
                memory: opts.memory,
                usage,
                data_dir: opts.data_dir.clone(),
                reads: Reads::start(raft.clone(), opts.request_timeout),
                raft,
            }),
        };
        let others: Vec<String> = opts.seeds.iter().filter(|s| **s != opts.advertise).cloned().collect();
        if !node.inner.raft.is_initialized().await? {
            if others.is_empty() && opts.bootstrap_expect == 1 {
                let members = BTreeMap::from([(id, BasicNode::new(opts.advertise))]);
                node.initialize(members).await?;
            } else {
                tokio::spawn(node.clone().discover(opts.seeds.clone(), opts.bootstrap_expect));
            }
        } else if node.moved_from().is_some() {
            tokio::spawn(node.clone().readdress(others));
        }
        tokio::spawn(node.clone().reconcile(opts.max_voters));
        tokio::spawn(node.clone().snapshots(opts.raft.clone()));
        Ok(node)
    }

    /// Triggers a snapshot (a checkpoint, see `ledge_store::snapshot`) once `snapshot_after`
    /// entries or `snapshot_bytes` bytes of commands were applied since the last one, or
    /// `snapshot_interval` passed with anything applied, or the node went idle for
    /// `checkpoint_idle` with anything applied. An entry carries a batch of writes, so a count of
    /// entries alone says little about how much log a snapshot would let the node purge.
    async fn snapshots(self, tuning: RaftTuning) {
        let mut since = tokio::time::Instant::now();
        let mut last_seen = (0, tokio::time::Instant::now());
        let mut bytes_at_last = self.inner.sm.applied_bytes();
        let mut index_at_last = self.inner.sm.applied_index();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.is_stopping() {
                return;
            }
            let (snapshot, applied) = {
                let metrics = self.inner.raft.metrics();
                let m = metrics.borrow();
                (m.snapshot.map(|l| l.index).unwrap_or(0), m.last_applied.map(|l| l.index).unwrap_or(0))
            };
            let base = snapshot.max(index_at_last);
            let entries = applied.saturating_sub(base);
            let bytes = self.inner.sm.applied_bytes().saturating_sub(bytes_at_last);
            if applied != last_seen.0 {
                last_seen = (applied, tokio::time::Instant::now());
            }
            let idle = last_seen.1.elapsed() >= tuning.checkpoint_idle;
            let due = entries >= tuning.snapshot_after
                || bytes >= tuning.snapshot_bytes
                || (entries > 0 && since.elapsed() >= tuning.snapshot_interval)
                || (entries > 0 && idle);
            if !due {
                continue;
            }
            tracing::debug!(entries, bytes, "building a snapshot");
            if let Err(e) = self.inner.raft.trigger().snapshot().await {
                tracing::warn!("snapshot trigger: {e}");
                continue;
            }
            since = tokio::time::Instant::now();
            bytes_at_last = self.inner.sm.applied_bytes();
            index_at_last = applied;
        }
    }

    /// Initializes the group with `members` as voters (once per region, on one node).
    pub async fn initialize(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), Error> {
        tracing::info!(node = self.inner.id, ?members, "initializing the region's raft group");
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => Err(Error::Unavailable(format!("initialize: {e}"))),
            Err(RaftError::Fatal(e)) => Err(e.into()),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's advertised address.
    pub fn address(&self) -> &str {
        &self.inner.advertise
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The local state machine (for reads).
    pub fn state(&self) -> &StateMachine {
        &self.inner.sm
    }

    /// The node's sled database (eventual keyspaces keep their trees beside the Raft state).
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The deadline applied to writes and read barriers.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The region this node belongs to.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub(crate) fn membership_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.membership_lock
    }

    /// The node's memory budget.
    pub fn memory(&self) -> &store::MemoryBudget {
        &self.inner.memory
    }

    /// Live memory figures of the parts that count what they hold.
    pub fn usage(&self) -> &store::Usage {
        &self.inner.usage
    }

    /// Bytes the node's data directory takes on disk, by part.
    pub fn disk_usage(&self) -> store::DiskUsage {
        store::DiskUsage::of(&self.inner.data_dir)
    }

    /// Bytes of recent Raft log entries held in memory.
    pub fn log_cache_bytes(&self) -> u64 {
        self.inner.log.cache_bytes()
    }

    pub(crate) fn batcher(&self) -> &Batcher {
        &self.inner.batcher
    }

    pub(crate) fn reads(&self) -> &Reads {
        &self.inner.reads
    }

    pub(crate) fn freshness(&self) -> &Freshness {
        &self.inner.freshness
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Whether the test-only stale-read fault is on.
    pub(crate) fn unsafe_local_reads(&self) -> bool {
        self.inner.unsafe_local_reads
    }

    /// How long a leader may go without hearing from a quorum before it refuses requests.
    pub(crate) fn quorum_timeout(&self) -> Duration {
        self.inner.quorum_timeout
    }

    /// The gRPC service that peers send Raft RPCs to.
    pub fn raft_service(&self) -> RaftService {
        RaftService::new(self.clone())
    }

    /// How far behind its leader this replica may be, as an upper bound; `None` when unknown
    /// (no leader heard from yet). A leader measures the time since a quorum last acknowledged
    /// it; a one-voter leader is never behind.
    pub fn staleness(&self) -> Option<Duration> {
        let m = self.metrics();
        if m.state == ServerState::Leader {
            if m.membership_config.membership().voter_ids().count() <= 1 {
                return Some(Duration::ZERO);
            }
            return m.millis_since_quorum_ack.map(Duration::from_millis);
        }
        self.inner.freshness.age()
    }

    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The current leader, if known: id and address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        Some((id, addr))
    }

    /// What this node knows about itself and its region.
    pub fn status(&self) -> Status {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let leader =
            m.current_leader.map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()));
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut members = Vec::new();
        for (id, node) in membership.nodes() {
            let role = if Some(*id) == m.current_leader {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            let applied = if *id == self.inner.id {
                Some(self.inner.sm.applied_index())
            } else {
                m.replication.as_ref().and_then(|r| r.get(id)).and_then(|l| l.as_ref()).map(|l| l.index)
            };
            members.push((*id, node.addr.clone(), role, applied));
        }
        Status {
            id: self.inner.id,
            address: self.inner.advertise.clone(),
            state: state_name(m.state),
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied: self.inner.sm.applied_revision(),
            members,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Number of entries held in the Raft log.
    pub fn log_len(&self) -> usize {
        self.inner.log.len()
    }

    /// Stops Raft and flushes the store.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.inner.sm.checkpoint().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_kept_and_a_missing_one_beside_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(resolve_node_id(&data, None, || 7).unwrap(), 7);
        assert_eq!(resolve_node_id(&data, None, || 8).unwrap(), 7, "kept across starts");
        assert!(matches!(resolve_node_id(&data, Some(9), || 8), Err(Error::InvalidInput(_))));
        std::fs::create_dir_all(data.join("db")).unwrap();
        std::fs::remove_file(data.join("node_id")).unwrap();
        match resolve_node_id(&data, None, || 8) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains("node_id is missing") && message.contains("--node-id"), "{message}");
            }
            other => panic!("a new id beside an existing database: {other:?}"),
        }
        assert_eq!(resolve_node_id(&data, Some(7), || 8).unwrap(), 7, "an explicit id restores the file");
        assert_eq!(std::fs::read_to_string(data.join("node_id")).unwrap(), "7\n");
    }
}
