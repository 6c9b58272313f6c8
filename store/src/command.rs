//! The replicated command set: what a Raft log entry carries, what applying it returns, and the
//! openraft type configuration built from them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

openraft::declare_raft_types!(
    /// Ledge's openraft type configuration: `u64` node ids, `BasicNode` addresses, entries that
    /// carry a [`Proposal`] (a batch of commands) and apply to [`Applied`] (one result per
    /// command), and snapshots streamed through a file.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id.
pub type NodeId = u64;
/// A Raft log id of this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// Membership as stored with the applied state.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<NodeId>;

/// The name of the keyspace that exists from bootstrap.
pub const DEFAULT_KEYSPACE: &str = "default";

/// Consistency mode of a keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Linearizable, replicated through the region's Raft group.
    Strong,
    /// CRDT replicas on every node, writable on every side of a partition.
    Eventual,
}

/// Where a keyspace's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Within one region (synced to the cloud as `REGION/KEYSPACE`).
    Region,
    /// Every region (eventual keyspaces only).
    Global,
}

/// A keyspace as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    /// Name, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// Consistency mode.
    pub mode: Mode,
    /// Scope.
    pub scope: Scope,
    /// Revision of the command that created it (0 for `default`).
    pub created_revision: u64,
}

/// A test on one key, evaluated against the state at the moment of apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key's last-write revision equals this.
    RevisionEquals(Vec<u8>, u64),
    /// The key exists and holds exactly this value.
    ValueEquals(Vec<u8>, Vec<u8>),
    /// The key does not exist.
    Absent(Vec<u8>),
    /// The key exists.
    Present(Vec<u8>),
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set a key to a value.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

/// The application data of a Raft log entry. Inputs are validated before they are proposed;
/// applying a command is deterministic on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Atomic conditional multi-key write to one strong keyspace.
    Batch {
        /// Target keyspace.
        keyspace: String,
        /// All must hold, or nothing is written.
        conditions: Vec<Condition>,
        /// Applied in order.
        ops: Vec<Op>,
    },
    /// Add a keyspace to the catalog.
    CreateKeyspace {
        /// Name.
        name: String,
        /// Mode.
        mode: Mode,
        /// Scope.
        scope: Scope,
        /// Succeed when an identical keyspace exists.
        if_not_exists: bool,
    },
    /// Remove a keyspace and its data.
    DropKeyspace {
        /// Name.
        name: String,
    },
}

impl Command {
    /// Approximate encoded size in bytes, for bounding batches and messages.
    pub fn size(&self) -> usize {
        match self {
            Command::Batch { keyspace, conditions, ops } => {
                let conds: usize = conditions
                    .iter()
                    .map(|c| match c {
                        Condition::RevisionEquals(k, _) => k.len() + 16,
                        Condition::ValueEquals(k, v) => k.len() + v.len() + 16,
                        Condition::Absent(k) | Condition::Present(k) => k.len() + 8,
                    })
                    .sum();
                let ops: usize = ops
                    .iter()
                    .map(|o| match o {
                        Op::Put(k, v) => k.len() + v.len() + 20,
                        Op::Delete(k) => k.len() + 12,
                    })
                    .sum();
                keyspace.len() + conds + ops + 32
            }
            Command::CreateKeyspace { name, .. } | Command::DropKeyspace { name } => name.len() + 32,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Batch { keyspace, conditions, ops } => {
                write!(f, "batch({keyspace}: {} conditions, {} ops)", conditions.len(), ops.len())
            }
            Command::CreateKeyspace { name, mode, .. } => write!(f, "create-keyspace({name}, {mode:?})"),
            Command::DropKeyspace { name } => write!(f, "drop-keyspace({name})"),
        }
    }
}

/// Identifies one write of one client, so that a retried write is applied at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Random id the client library chose when it was created; never 0.
    pub client: u64,
    /// Sequence number of the write within that client, starting at 1; a retry reuses it.
    pub seq: u64,
}

/// One command of a proposal, with the id its client gave it (`None` from clients that do not
/// send ids: such a write is applied once per delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Deduplication id.
    pub id: Option<RequestId>,
    /// The command.
    pub command: Command,
}

impl Request {
    /// A request without a deduplication id.
    pub fn new(command: Command) -> Self {
        Self { id: None, command }
    }

    /// Approximate encoded size, for bounding batches by bytes.
    pub fn size(&self) -> usize {
        self.command.size() + 24
    }
}

/// What one Raft log entry carries: every write the leader gathered while its previous proposal
/// was in flight. Each command gets its own revision when applied, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Proposal(pub Vec<Request>);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{}", one.command),
            many => write!(f, "proposal({} commands)", many.len()),
        }
    }
}

/// The result of one command: the revision it was applied at and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's revision (a retried command reports its first application's).
    pub revision: u64,
    /// What it produced.
    pub response: Response,
}

/// What applying one log entry produced: one outcome per request of its [`Proposal`], in order
/// (none for blank and membership entries).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied(pub Vec<Outcome>);

/// Result of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// False when a condition failed; nothing was written then.
    pub succeeded: bool,
    /// Revision (log index) the batch was applied or evaluated at.
    pub revision: u64,
    /// Indexes of the failed conditions.
    pub failed_conditions: Vec<u32>,
    /// How many delete operations removed an existing key.
    pub deleted: u32,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A batch was evaluated.
    Batch(BatchOutcome),
    /// A keyspace was created (or already existed, identical, with `if_not_exists`).
    Keyspace(KeyspaceDef),
    /// A keyspace was dropped at this revision.
    Dropped(u64),
    /// The command was refused for a reason every replica agrees on.
    Rejected(Error),
}

/// A stored key's value and version information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the last write.
    pub revision: u64,
    /// Revision at which the key was created.
    pub create_revision: u64,
    /// Writes since creation.
    pub version: u64,
}

impl Versioned {
    /// What a scan counts this row of `key` as, in bytes (key, value and 32 for the rest), when
    /// it bounds a page by bytes.
    pub fn row_bytes(&self, key: &[u8]) -> usize {
        key.len() + self.value.len() + 32
    }
}

/// One key change, as recorded in the change log and sent to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The key.
    pub key: Vec<u8>,
    /// The new value, `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// All changes made by one applied command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Revision of the command.
    pub revision: u64,
    /// Keyspace it changed.
    pub keyspace: String,
    /// Key changes, in operation order.
    pub events: Vec<Event>,
}
