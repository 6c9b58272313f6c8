//! Ledge storage on sled.
//!
//! One sled database per node holds everything the node persists, each concern in its own
//! tree:
//!
//! - [`Log`]: the Raft log (`raft/log`, entries keyed by big-endian index) and Raft metadata
//!   (`raft/meta`: vote, committed, last purged). It implements openraft's `RaftLogStorage`.
//! - [`StateMachine`]: the catalog of keyspaces, one data tree per strong keyspace, the change
//!   log, and the applied state. It implements openraft's `RaftStateMachine`, with snapshots
//!   streamed through files (see [`snapshot`]).
//! - [`Eventual`] (module [`eventual`]): the replicas of eventual keyspaces, outside Raft: per
//!   keyspace a data tree, a digest index with its in-memory hash tree for anti-entropy, and a
//!   tombstone index; a shared change log and sync bookkeeping. Opaque bytes only: the CRDT
//!   semantics live in `ledge-crdt`.
//! - [`keycode`]: the one module that defines how composite keys are encoded so that byte order
//!   and logical order agree.
//!
//! The life of a strong write, as this crate sees it: openraft hands [`Log::append`] a batch of
//! entries; they are written and the database flushed (group commit) before openraft is told
//! they are durable. Once a majority has them, openraft calls [`StateMachine`]'s `apply`, which
//! evaluates each [`Command`] and commits its data, its change-log record and the new
//! last-applied log id in one transaction, then announces the change to watchers.
//!
//! The log and the state machine share one sled database, and sled recovers a prefix of the
//! writes made to it, so a flush of the log also makes every earlier state-machine write
//! durable.
//!
//! [`Log::append`]: openraft::storage::RaftLogStorage::append

mod apply;
mod command;
mod durable;
mod error;
pub mod eventual;
pub mod keycode;
mod log;
mod session;
pub mod snapshot;
mod state;

use std::path::Path;

pub use command::{
    Applied, BatchOutcome, Change, Command, Condition, Event, KeyspaceDef, LogId, Mode, NodeId, Op, Outcome, Proposal,
    Request, RequestId, Response, Scope, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Versioned,
    DEFAULT_KEYSPACE,
};
pub use durable::{flush, set_inline_flush};
pub use error::Error;
pub use eventual::{Eventual, SpaceId};
pub use log::Log;
pub use session::{MAX_RESULTS, MAX_RESULTS_PER_CLIENT};
pub use state::StateMachine;

/// Opens the node's sled database in `dir` and the log and state machine inside it.
pub fn open(dir: &Path) -> Result<(sled::Db, Log, StateMachine), Error> {
    std::fs::create_dir_all(dir)?;
    let db = sled::Config::new().path(dir.join("db")).open()?;
    let log = Log::open(&db)?;
    let sm = StateMachine::open(&db, &dir.join("snapshots"))?;
    Ok((db, log, sm))
}
