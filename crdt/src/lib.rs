//! Ledge's eventual keyspaces: a hybrid logical clock, the CRDT values stored under each key, the
//! replica that keeps them in `ledge-store`, the sync protocol between replicas, and the
//! replication engine that runs it ([`replication`]: push streams, anti-entropy rounds, write
//! levels, quorum reads). No networking of its own: [`sync`] defines the messages and the
//! session logic over a [`sync::Remote`], the engine reaches peers through an injected
//! [`replication::Transport`], and `api/` carries the messages over gRPC. Everything here is
//! deterministic given its inputs; physical time comes in through the injected [`Clock`].
//!
//! # The model
//!
//! An eventual keyspace is AP: every node accepts reads and writes for it even when it can reach
//! no other node, and replicas converge once they can talk again. That works because each key
//! holds a state-based CRDT: a value with a `merge` that is commutative, associative and
//! idempotent. Replicas that have merged the same set of states hold equal values, whatever the
//! order, duplication or batching of the deliveries, so the push stream and anti-entropy can both
//! simply send whole per-key states and merge whatever arrives, as often as they like.
//!
//! The life of an eventual write, as this crate sees it:
//!
//! 1. The coordinating node's [`Replica::apply`] issues a timestamp with [`Hlc::tick`].
//! 2. It applies the [`Op`] to the key's local [`Entry`] (or creates the entry from it); the type
//!    fixed by the key's first write is checked here, and a mismatch is [`Error::TypeMismatch`].
//! 3. The store commits the encoded entry, its digest, its tombstone-index entry and a change-log
//!    record in one transaction, and the replica waits for the group-commit flush.
//! 4. Peers receive the state (pushed, or through anti-entropy), fold its timestamp into their
//!    clocks with [`Hlc::observe`] and [`Entry::merge`] it into theirs. Anti-entropy compares
//!    digests and exchanges only the keys whose digests differ ([`sync`]).
//!
//! # Why a hybrid logical clock
//!
//! Last-writer-wins needs an order on writes from different nodes. Wall clocks alone are wrong
//! under skew: a node whose clock runs behind would lose to older writes, even to ones it had
//! already seen. Lamport clocks respect causality but have nothing to do with time, so "last"
//! would mean "written by the busiest node". An HLC [`Timestamp`] is physical milliseconds plus
//! a logical counter plus the node id: it stays within the clock skew of real time, every event
//! is ordered after everything its node had seen (ticks are strictly increasing even when the
//! wall clock steps back), and the node id makes timestamps unique, so two writes never tie.
//! One hazard remains: a peer whose clock is far in the future would drag every clock it talks
//! to along. [`Hlc::observe`] therefore refuses a remote timestamp more than `max_drift`
//! (default [`DEFAULT_MAX_DRIFT`], 60 s) ahead of the local clock, logs it and counts it in
//! [`Hlc::drift_rejections`]. Whether the state carrying it is merged anyway is the replica's
//! call: merging keeps replicas convergent, but an lww write stamped in the future wins over
//! every local write until the clocks catch up.
//!
//! # Why these types
//!
//! - [`Lww`]: bytes or a tombstone; the write with the greatest timestamp wins. Plain keys and
//!   each column of an eventual SQL table. Concurrent writes lose, by design, only to a later one.
//! - [`Counter`]: a PN-counter of `i64` deltas. Increments never conflict, so none is lost under
//!   partition (`UPDATE t SET c = c + 1`, `ledge kv incr`).
//! - [`Set`]: an add-wins observed-remove set of byte strings: a remove undoes the adds its node
//!   had seen, an add it had not seen survives.
//!
//! They are built on the `crdts` crate where it fits: `LWWReg` with the HLC timestamp as marker,
//! `VClock` as the per-node grow-only totals of the counter (not `PNCounter`, which cannot check
//! an increment for overflow and reads as a big integer), and `Orswot` for the set (serialized
//! through a canonical sorted form, because its hash maps would encode equal sets differently).
//! The type docs give the details.
//!
//! A key's type is fixed by its first write. Two partitioned nodes can still create the same key
//! with different types; [`Value::merge`] then reports [`Error::TypeMismatch`] and changes
//! nothing. An [`Entry`] therefore keeps one value per type, each with its first write's
//! timestamp, and shows the type created first: every replica converges on the same type, and
//! writes to the losing type are kept, hidden (see `entry.rs`).
//!
//! # Tombstones and when they can be collected
//!
//! Deleted data cannot simply be forgotten: a replica that missed the delete would hand the old
//! value back at the next merge and the key would come back to life. So a delete leaves state
//! behind: an lww delete is a register holding no bytes but the delete's timestamp
//! ([`Value::is_tombstone`]), and a set keeps, after its members are removed, the version vector
//! that tells a merge which missing adds were removed rather than not yet seen (`Orswot` needs no
//! per-element tombstones; the vector has one entry per node that ever wrote the set).
//!
//! That state can go once it can no longer be contradicted: when every replica that should hold
//! the key (region peers, later the cloud) has acknowledged a sync watermark `W`, meaning it has
//! merged every write with a timestamp up to `W` (how replicas learn that: `marks.rs`). Every replica then holds the same deleted state,
//! and [`Value::is_collectable`] says whether a value is a tombstone or an emptied set whose last
//! operation is at or below `W`. Counters are never collected: a counter restarted from zero would
//! lose increments to a replica that still has the old per-node totals. The replica that collects
//! must also:
//!
//! - ignore an incoming state for a key it no longer holds if the state's timestamp is at or below
//!   `W`: it can only be a delayed copy of something already merged and deleted;
//! - take acknowledgements from the same ordered link as the states, so that whatever a peer sent
//!   before acknowledging `W` has been merged before anything is collected.
//!
//! Set dots are numbered from the add's HLC timestamp rather than 1, 2, 3…, so a set that is
//! collected and later written again never reuses a dot that a lagging replica considers seen.

mod counter;
mod entry;
mod error;
pub mod hlc;
mod lww;
mod marks;
mod replica;
pub mod replication;
mod set;
mod stream;
pub mod sync;
mod value;

pub use counter::Counter;
pub use entry::Entry;
pub use error::Error;
pub use hlc::{Clock, DriftError, Hlc, ManualClock, SystemClock, Timestamp, DEFAULT_MAX_DRIFT};
pub use ledge_store::SpaceId;
pub use lww::Lww;
pub use replica::{
    Applied, DurableListener, Merged, RangePage, Replica, ReplicaStatus, ScanPage, DEFAULT_MAX_ENTRY_BYTES,
    MERGE_CHUNK, SCAN_WALK,
};
pub use replication::{QuorumRead, QuorumScan, Replication, Shortfall, SyncOptions, WriteLevel};
pub use set::Set;
pub use stream::{StreamChange, StreamPage};
pub use value::{Digest, Kind, Op, Read, Value};
