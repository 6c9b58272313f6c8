//! The Raft log: openraft's `RaftLogStorage` on a write-ahead log of our own (module `wal`).
//!
//! # What
//!
//! A directory (`DATA_DIR/raft/`) of segment files named after the index of their first entry
//! (`00000000000000000001.wal`), each a sequence of records `[len u32 LE][crc32 u32 LE][payload]`
//! whose payload is the bincode of one `openraft::Entry`, plus a `meta` file holding the vote,
//! the committed log id and the purge point. A segment is closed once it holds
//! [`LogOptions::segment_bytes`] (64 MiB by default) and a new one begins with the next entry.
//! In memory: the place (segment, offset, length) of every live entry, and the decoded recent
//! tail, up to [`LogOptions::cache_bytes`] (16 MiB), from which replication and apply are served.
//!
//! # Why
//!
//! The log used to live in sled trees. sled's flush is `sync_file_range`, which does not reach
//! past a device's write cache, and it serializes behind sled's global lock, so every Raft
//! append waited for whatever else sled was doing. A Raft log needs far less than a B-tree:
//! appends at the end, truncation of the end, removal of the beginning, reads of recent
//! entries. Append-only files give exactly that, with `fdatasync` for real durability and one
//! writer that batches (group commit).
//!
//! # The life of an append
//!
//! 1. openraft calls [`Log::append`] with a batch of entries and a `LogFlushed` callback.
//! 2. The entries are encoded into records on the calling thread. Under the log's state lock
//!    each record is given its segment and offset (a new segment when the current one is full),
//!    the index learns where each entry is and the tail cache takes the decoded entries: from
//!    this moment they are readable through [`RaftLogReader`], as openraft requires.
//! 3. The write job is handed to the one writer: with [`FlushPolicy::Background`], queued to the
//!    `ledge-wal` thread and `append` returns; with [`FlushPolicy::Inline`], run right there.
//! 4. The writer takes every job queued, writes the records of the whole group with one
//!    positioned write per segment touched, calls `fdatasync` once, and then calls each
//!    callback in order with `Ok`. A failed write or sync completes the group with the error,
//!    and every later write fails too (after a failed `fsync` the file's state is unknown).
//! 5. Once written, the entries may leave the cache (oldest first, past the byte budget); later
//!    reads go to the segment file, checking each record's checksum and index.
//!
//! # Metadata
//!
//! `save_vote` replaces the meta file atomically (write `meta.tmp`, fsync, rename, fsync the
//! directory) before it returns. `save_committed` only records the id in memory; it is written
//! with the next vote or purge, and only if every entry up to it is durable by then, so the
//! committed id read after a crash may be older but never points past the log. `purge` writes
//! the new purge point first and then removes the segments that hold nothing but purged entries
//! (oldest first, syncing the directory after each); a segment partly purged stays, and reads
//! never return its purged entries. `truncate` removes later segments (newest first), then cuts
//! the segment holding the first removed entry and syncs it.
//!
//! # Recovery
//!
//! At open every segment is read in order. In a closed segment (any but the last) an invalid
//! record (bad checksum, length past the end of the file or over the 64 MiB cap, undecodable,
//! or not the expected next index) stops the open with [`Error::Corrupt`] naming the file and
//! byte offset: those bytes were synced before the next segment began, so they are damage,
//! never a torn write. In the last segment the longest valid prefix is kept and the rest cut off
//! (with a warning): a crash can leave a partial group there, none of it acknowledged. Segments
//! must be contiguous. A purge interrupted by a crash is finished.
//!
//! Before a purge removes anything, the state machine's sled database is flushed (when the log
//! was opened by [`crate::open`]): openraft purges only entries covered by a snapshot of applied
//! state, and after a crash the state machine must not be older than the log's purge point, or
//! the entries it would re-apply would be gone.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};

use crate::command::{LogId, NodeId, StorageError, TypeConfig};
use crate::wal::Wal;
pub use crate::wal::{FlushPolicy, LogOptions};
use crate::Error;

/// Raft log storage. Cheap to clone: clones share the same WAL, and the log reader openraft asks
/// for is such a clone.
#[derive(Clone)]
pub struct Log {
    wal: Wal,
    /// The state machine's database, flushed before a purge.
    state_db: Option<crate::Disk>,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl Into<Error>) -> StorageError {
    let e: Error = e.into();
    StorageIOError::new(subject, verb, openraft::AnyError::error(e)).into()
}

fn read_err(e: impl Into<Error>) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl Into<Error>) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering what a crash left there.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Log, Error> {
        Ok(Self { wal: Wal::open(dir, opts)?, state_db: None })
    }

    /// Has every purge flush `db` (the state machine's database) first.
    pub(crate) fn flush_before_purge(mut self, db: crate::Disk) -> Self {
        self.state_db = Some(db);
        self
    }

    /// Index of the last entry in the log, if any, else of the last purged one (for status
    /// reporting).
    pub fn last_index(&self) -> Result<Option<u64>, Error> {
        Ok(self.wal.log_state().1.map(|id| id.index))
    }

    /// Number of entries currently held (not yet purged).
    pub fn len(&self) -> usize {
        self.wal.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes (as encoded) of recent entries held in memory, at most [`LogOptions::cache_bytes`].
    pub fn cache_bytes(&self) -> u64 {
        self.wal.cached_bytes() as u64
    }

    /// Number of `fdatasync` calls on segment files since the log was opened: fewer than the
    /// appends when group commit works.
    pub fn data_syncs(&self) -> u64 {
        self.wal.syncs()
    }
}

impl RaftLogReader<TypeConfig> for Log {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal.read(start, end).map_err(read_err)
    }

    /// Replication's read: stops at [`LogOptions::max_read_bytes`] (at least one entry), so a
    /// leader never loads `max_payload_entries` multi-megabyte entries to send a few of them.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.wal.read_limited(start, end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for Log {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self.wal.log_state();
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.wal.save_vote(*vote).await.map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.wal.vote())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.wal.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal.committed())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let done = Box::new(move |result: Result<(), Error>| {
            callback.log_io_completed(result.map_err(std::io::Error::other));
        });
        self.wal.append(entries.into_iter().collect(), done).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal.truncate(log_id.index).await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Some(disk) = &self.state_db {
            disk.sync().await.map_err(write_err)?;
        }
        self.wal.purge(log_id).await.map_err(write_err)
    }
}
