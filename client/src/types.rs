//! The domain types of the client API: stored entries, read metadata, batch conditions and
//! operations, watch messages, keyspaces, members, node status, and the result of each call.
//!
//! They mirror the `ledge.v1` messages but use Rust types (`Option` for what may be absent,
//! `Duration` for times, enums for modes), so callers never touch generated code. Keys and
//! values are raw bytes.

use std::{fmt, str::FromStr, time::Duration};

/// A hybrid logical clock timestamp: the order of writes to eventual keyspaces. Displayed (and
/// parsed) as `physical.logical@node`, e.g. `1700000000000.3@42`; ordered by physical
/// milliseconds, then the logical counter, then the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch on the issuing node's clock.
    pub physical_ms: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
    /// The node that issued it.
    pub node_id: u64,
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node_id)
    }
}

impl FromStr for Hlc {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Hlc, crate::Error> {
        let invalid = || crate::Error::invalid_input(format!("HLC {text:?} is not of the form physical.logical@node"));
        let (time, node) = text.split_once('@').ok_or_else(invalid)?;
        let (physical, logical) = time.split_once('.').ok_or_else(invalid)?;
        Ok(Hlc {
            physical_ms: physical.parse().map_err(|_| invalid())?,
            logical: logical.parse().map_err(|_| invalid())?,
            node_id: node.parse().map_err(|_| invalid())?,
        })
    }
}

/// The type of an eventual key's value, fixed by its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Last-writer-wins bytes: put and delete.
    Lww,
    /// A counter: increment.
    Counter,
    /// A set of byte strings: set add and remove.
    Set,
}

/// One stored entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty in a keys-only scan. For an eventual counter its decimal text; empty
    /// for a set (see `members`).
    pub value: Vec<u8>,
    /// Revision of the last write to this key (strong keyspaces; 0 for eventual ones).
    pub revision: u64,
    /// Revision at which the key was created (since its last deletion).
    pub create_revision: u64,
    /// Number of writes to the key since it was created.
    pub version: u64,
    /// Eventual keyspaces: the timestamp of the latest write reflected.
    pub hlc: Option<Hlc>,
    /// Eventual keyspaces: the value's type.
    pub kind: Option<ValueKind>,
    /// An eventual counter's value.
    pub counter: Option<i64>,
    /// An eventual set's members, in byte order.
    pub members: Vec<Vec<u8>>,
}

/// What state a read reflects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsOf {
    /// The applied revision of the replica that answered.
    pub revision: u64,
    /// True when the replica answered from local state without confirming leadership.
    pub stale: bool,
    /// For stale reads, the replica's measured staleness.
    pub staleness: Duration,
    /// The node that answered.
    pub node_id: u64,
    /// Eventual reads: the greatest HLC timestamp the answering node had issued or observed.
    pub hlc: Option<Hlc>,
    /// Eventual reads: every write in the region up to this timestamp is reflected.
    pub stable_hlc: Option<Hlc>,
    /// Eventual reads: how many replicas were merged into the answer.
    pub replicas: u32,
}

/// The result of a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The revision the write was applied at (strong keyspaces; 0 for eventual ones).
    pub revision: u64,
    /// The timestamp the write was made at (eventual keyspaces).
    pub hlc: Option<Hlc>,
}

/// The result of a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// The entry, or `None` when the key does not exist.
    pub kv: Option<KeyValue>,
    /// What state the answer reflects.
    pub as_of: AsOf,
}

/// The result of a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResult {
    /// The revision of the delete (strong keyspaces; 0 for eventual ones).
    pub revision: u64,
    /// Whether the key existed (eventual keyspaces: on the node that took the delete).
    pub deleted: bool,
    /// The timestamp the delete was made at (eventual keyspaces).
    pub hlc: Option<Hlc>,
}

/// The result of an increment of an eventual counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementResult {
    /// The timestamp the increment was made at.
    pub hlc: Hlc,
    /// The counter's value on the node that took the increment, just after it.
    pub value: i64,
}

/// The result of adding to or removing from an eventual set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetResult {
    /// The timestamp the operation was made at.
    pub hlc: Hlc,
    /// The set's size on the node that took the operation, just after it.
    pub size: u64,
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// The entries, in key order.
    pub kvs: Vec<KeyValue>,
    /// The token for the next page, or `None` when the scan is complete.
    pub next_page_token: Option<String>,
    /// What state the page reflects.
    pub as_of: AsOf,
}

/// A test on one key's current state; a batch applies only when all its conditions hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key's last-write revision equals `revision` (0 never matches an existing key).
    RevisionEquals {
        /// The key tested.
        key: Vec<u8>,
        /// The expected revision.
        revision: u64,
    },
    /// The key exists and its value equals `value`.
    ValueEquals {
        /// The key tested.
        key: Vec<u8>,
        /// The expected value.
        value: Vec<u8>,
    },
    /// The key does not exist.
    Absent {
        /// The key tested.
        key: Vec<u8>,
    },
    /// The key exists.
    Present {
        /// The key tested.
        key: Vec<u8>,
    },
}

impl Condition {
    /// The key's last-write revision equals `revision`.
    pub fn revision_equals(key: impl Into<Vec<u8>>, revision: u64) -> Condition {
        Condition::RevisionEquals { key: key.into(), revision }
    }

    /// The key exists and its value equals `value`.
    pub fn value_equals(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Condition {
        Condition::ValueEquals { key: key.into(), value: value.into() }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<Vec<u8>>) -> Condition {
        Condition::Absent { key: key.into() }
    }

    /// The key exists.
    pub fn present(key: impl Into<Vec<u8>>) -> Condition {
        Condition::Present { key: key.into() }
    }
}

/// One write in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `value` to `key`.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Delete {
        /// The key deleted.
        key: Vec<u8>,
    },
    /// Add `delta` to the counter `key` (eventual keyspaces only).
    Increment {
        /// The counter.
        key: Vec<u8>,
        /// What is added (negative subtracts).
        delta: i64,
    },
}

impl Op {
    /// Write `value` to `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// Add `delta` to the counter `key` (eventual keyspaces only).
    pub fn increment(key: impl Into<Vec<u8>>, delta: i64) -> Op {
        Op::Increment { key: key.into(), delta }
    }
}

/// The result of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchResult {
    /// False when a condition failed; then nothing was written.
    pub succeeded: bool,
    /// The revision the batch was applied at, or the revision it was evaluated at.
    pub revision: u64,
    /// Indexes into the batch's conditions of those that failed.
    pub failed_conditions: Vec<u32>,
    /// On an eventual keyspace: the timestamp of the batch's last operation.
    pub hlc: Option<Hlc>,
}

/// A keyspace's side of CAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// CP: replicated by Raft, linearizable.
    Strong,
    /// AP: CRDT replicas on every node, always writable.
    Eventual,
}

/// Where a keyspace's data lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The nodes of one region (and the cloud's copy of it).
    #[default]
    Region,
    /// Every region (eventual keyspaces only).
    Global,
}

/// A named set of keys with a mode and a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    /// The keyspace's name.
    pub name: String,
    /// Its mode.
    pub mode: Mode,
    /// Its scope.
    pub scope: Scope,
    /// Revision at which it was created.
    pub created_revision: u64,
}

/// A member of a region's Raft group, as seen by the node that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// gRPC address.
    pub address: String,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub role: String,
    /// Last Raft log index the member is known to hold, from the leader's view (zero when not
    /// known). A log entry carries a batch of writes, so this is not a revision.
    pub last_applied: u64,
    /// The revision the member reported having applied when the list was made; `None` when it
    /// did not answer in time.
    pub applied_revision: Option<u64>,
}

/// The status of the node that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// Its region.
    pub region: String,
    /// `edge` or `cloud`.
    pub role: String,
    /// Its gRPC address.
    pub address: String,
    /// Its Raft state: `leader`, `follower`, `learner`, `candidate` or `shutdown`.
    pub raft_state: String,
    /// The leader's id, if one is known.
    pub leader_id: Option<u64>,
    /// The leader's address, if one is known.
    pub leader_address: Option<String>,
    /// The current Raft term.
    pub term: u64,
    /// The index of the last Raft log entry.
    pub last_log_index: u64,
    /// The last applied revision.
    pub applied_revision: u64,
    /// The region's Raft members.
    pub members: Vec<Member>,
    /// The server's version.
    pub version: String,
    /// Number of keyspaces.
    pub keyspaces: u64,
    /// Eventual keys stored on the node, tombstones included.
    pub eventual_keys: u64,
    /// Deleted eventual states waiting until every peer has merged them.
    pub tombstones: u64,
    /// The greatest HLC timestamp the node has issued or observed.
    pub hlc: Option<Hlc>,
    /// Every eventual write in the region up to this timestamp has been merged on the node.
    pub stable_hlc: Option<Hlc>,
    /// The node's memory budget (`--memory-mb`), in bytes.
    pub memory_budget: u64,
    /// Each part of the memory budget: its share and what it holds.
    pub memory: Vec<MemoryPart>,
    /// Resident set size of the node's process, in bytes (0: unknown).
    pub rss: u64,
    /// Bytes the node's data directory takes on disk.
    pub disk: DiskUsage,
}

/// A part of a node's memory budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPart {
    /// `sled_cache`, `log_cache`, `requests`, `changes` or `digests`.
    pub name: String,
    /// The part's share of the budget, in bytes.
    pub limit: u64,
    /// What the part holds now, where it reports it.
    pub used: Option<u64>,
}

/// Bytes on disk under a node's data directory, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The Raft write-ahead log.
    pub log: u64,
    /// sled: state machine, change log and eventual keyspaces.
    pub db: u64,
    /// Snapshot files being sent or installed.
    pub snapshots: u64,
}

/// What a watch event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written; the event carries the new value.
    Put,
    /// The key was deleted; the event's value is empty.
    Delete,
}

/// One change to a watched key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Whether the key was written or deleted.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; empty for a delete.
    pub value: Vec<u8>,
    /// The revision of the change (strong keyspaces; 0 on eventual ones).
    pub revision: u64,
    /// Eventual keyspaces: the key's whole state after the change, as a get returns it (its
    /// value type, a counter's number or a set's members, and the timestamp of the latest
    /// write reflected).
    pub state: Option<KeyValue>,
}

/// One message of a watch stream (see [`crate::Client::watch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// The whole watched range as of `revision`, sent first when the requested starting
    /// revision is older than the server keeps. Events continue from `revision + 1`; a key
    /// absent here did not exist at `revision`.
    Snapshot {
        /// The revision the snapshot reflects (strong keyspaces; 0 on eventual ones).
        revision: u64,
        /// Every watched key that existed at `revision`, in key order.
        kvs: Vec<KeyValue>,
        /// Eventual keyspaces: the position in the answering node's change stream the
        /// snapshot reflects; changes after it follow.
        cursor: Option<Hlc>,
    },
    /// The watched changes of one revision, in operation order; on an eventual keyspace, one
    /// change of the answering node's change stream.
    Events {
        /// The revision of the changes (strong keyspaces; 0 on eventual ones).
        revision: u64,
        /// The changes.
        events: Vec<WatchEvent>,
        /// Eventual keyspaces: the position of this change in the answering node's change
        /// stream; a watch from it ([`crate::WatchOptions::from_cursor`]) continues after it.
        cursor: Option<Hlc>,
    },
}

impl WatchMessage {
    /// The revision of the snapshot or of the events.
    pub fn revision(&self) -> u64 {
        match self {
            WatchMessage::Snapshot { revision, .. } | WatchMessage::Events { revision, .. } => *revision,
        }
    }

    /// The cursor of the snapshot or of the events (eventual keyspaces).
    pub fn cursor(&self) -> Option<Hlc> {
        match self {
            WatchMessage::Snapshot { cursor, .. } | WatchMessage::Events { cursor, .. } => *cursor,
        }
    }
}

macro_rules! named_enum {
    ($type:ident, $what:literal, $($variant:ident => $name:literal),+) => {
        impl $type {
            /// The lower-case name, as used on the command line and in JSON output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = crate::Error;

            fn from_str(text: &str) -> Result<$type, crate::Error> {
                match text {
                    $($name => Ok($type::$variant),)+
                    other => Err(crate::Error::invalid_input(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other,
                        [$($name),+].join(", "),
                    ))),
                }
            }
        }
    };
}

named_enum!(Mode, "mode", Strong => "strong", Eventual => "eventual");
named_enum!(Scope, "scope", Region => "region", Global => "global");
named_enum!(EventKind, "event kind", Put => "put", Delete => "delete");
named_enum!(ValueKind, "value kind", Lww => "lww", Counter => "counter", Set => "set");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_scopes_round_trip_through_names() {
        for mode in [Mode::Strong, Mode::Eventual] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        for scope in [Scope::Region, Scope::Global] {
            assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
        }
        let err = "weak".parse::<Mode>().map(|_| ()).unwrap_err();
        assert_eq!(err.to_string(), "InvalidArgument: unknown mode \"weak\"; expected one of: strong, eventual");
    }

    #[test]
    fn event_kinds_are_named_as_in_json_output() {
        assert_eq!((EventKind::Put.as_str(), EventKind::Delete.as_str()), ("put", "delete"));
        assert_eq!("delete".parse::<EventKind>(), Ok(EventKind::Delete));
    }

    #[test]
    fn hlcs_print_and_parse() {
        let hlc = Hlc { physical_ms: 1_700_000_000_000, logical: 3, node_id: 42 };
        assert_eq!(hlc.to_string(), "1700000000000.3@42");
        assert_eq!("1700000000000.3@42".parse::<Hlc>(), Ok(hlc));
        assert!("17@3".parse::<Hlc>().is_err());
        assert!(hlc < Hlc { logical: 4, node_id: 1, ..hlc });
    }

    #[test]
    fn watch_messages_know_their_revision() {
        assert_eq!(WatchMessage::Snapshot { revision: 4, kvs: Vec::new(), cursor: None }.revision(), 4);
        let cursor = Hlc { physical_ms: 5, logical: 1, node_id: 2 };
        let events = WatchMessage::Events { revision: 0, events: Vec::new(), cursor: Some(cursor) };
        assert_eq!(events.cursor(), Some(cursor));
    }
}
