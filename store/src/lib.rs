//! Ledge storage: a write-ahead log for Raft, sled for everything else.
//!
//! Every node persists under its data directory:
//!
//! - `raft/`: [`Log`], the Raft log and Raft metadata (vote, committed, last purged) in a
//!   write-ahead log of our own (module `wal`): segment files of checksummed records, one
//!   writer with group commit and `fdatasync`, an in-memory index of every entry and a cache of
//!   the recent tail. It implements openraft's `RaftLogStorage`. See the `log` module docs.
//! - `db/`: one sled database with everything else, each concern in its own tree:
//!   - [`StateMachine`]: the catalog of keyspaces, one data tree per strong keyspace, and the
//!     applied state (its change log, the watch history, is in memory). It implements openraft's
//!     `RaftStateMachine`; its snapshots are checkpoints, exported to a file under `snapshots/`
//!     only for a peer that needs one (see [`snapshot`]).
//!   - [`Eventual`] (module [`eventual`]): the replicas of eventual keyspaces, outside Raft: per
//!     keyspace a data tree, a digest index with its in-memory hash tree for anti-entropy, and a
//!     tombstone index; a shared change log and sync bookkeeping. Opaque bytes only: the CRDT
//!     semantics live in `ledge-crdt`.
//! - [`keycode`]: the one module that defines how composite keys are encoded so that byte order
//!   and logical order agree.
//!
//! The life of a strong write, as this crate sees it: openraft hands [`Log::append`] a batch of
//! entries; they are readable at once, and the WAL writer writes them with the other appends
//! queued meanwhile, syncs once (group commit) and only then tells openraft they are durable.
//! Each entry carries a [`Proposal`]: the writes the leader batched. Once a majority has them,
//! openraft calls [`StateMachine`]'s `apply`, which gives each [`Command`] the next revision,
//! answers a retried request from the session table instead of applying it again, and commits a
//! whole run of entries (data, session results, the last-applied log id and revision) in one
//! sled transaction, then announces the changes to watchers.
//!
//! The state machine is not flushed with the log: after a crash it may be behind its last
//! applied entry, and openraft re-applies the difference from the log. That is why the log
//! flushes the state machine's database before it purges entries: the state machine never comes
//! back older than the purge point.
//!
//! [`Log::append`]: openraft::storage::RaftLogStorage::append

mod apply;
pub mod budget;
mod command;
mod durable;
mod error;
pub mod eventual;
mod feed;
mod footprint;
mod history;
pub mod keycode;
mod log;
mod session;
pub mod snapshot;
mod state;
mod wal;

use std::path::Path;

pub use budget::{MemoryBudget, Part, Usage};
pub use command::{
    Applied, BatchOutcome, Change, Command, Condition, Event, KeyspaceDef, LogId, Mode, NodeId, Op, Outcome, Proposal,
    Request, RequestId, Response, Scope, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Versioned,
    DEFAULT_KEYSPACE,
};
pub use durable::Disk;
pub use error::Error;
pub use eventual::{Eventual, SpaceId};
pub use feed::Fed;
pub use footprint::{rss_bytes, DiskUsage};
pub use log::{FlushPolicy, Log, LogOptions};
pub use session::{MAX_RESULTS, MAX_RESULTS_PER_CLIENT};
pub use state::StateMachine;

/// How a node's store is opened.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// The Raft log's options.
    pub log: LogOptions,
    /// sled's page cache, in bytes (0: sled's default of 1 GiB).
    pub cache_bytes: u64,
}

impl StoreOptions {
    /// Options that take their caches from `budget`, with `log`'s other settings.
    pub fn within(budget: &MemoryBudget, log: LogOptions) -> Self {
        let log = LogOptions { cache_bytes: budget.share(Part::LogCache) as usize, ..log };
        Self { log, cache_bytes: budget.share(Part::SledCache) }
    }
}

/// Opens the node's store in `dir`: the Raft log in `dir/raft` (with [`LogOptions::default`]),
/// the sled database in `dir/db` and the state machine in it, with caches sized for the
/// default [`MemoryBudget`].
pub fn open(dir: &Path) -> Result<(sled::Db, Log, StateMachine), Error> {
    open_with(dir, StoreOptions::within(&MemoryBudget::default(), LogOptions::default()))
}

/// [`open`] with the options given (a simulation wants [`FlushPolicy::Inline`]).
pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<(sled::Db, Log, StateMachine), Error> {
    let StoreOptions { log, cache_bytes } = opts;
    std::fs::create_dir_all(dir)?;
    let mut config = sled::Config::new().path(dir.join("db"));
    if cache_bytes > 0 {
        config = config.cache_capacity(cache_bytes);
    }
    let db = config.open()?;
    let disk = Disk::open(db.clone(), &dir.join("db"), log.flush)?;
    let log = Log::open(&dir.join("raft"), log)?.flush_before_purge(disk.clone());
    let sm = StateMachine::open_on(&disk, &dir.join("snapshots"))?;
    Ok((db, log, sm))
}
