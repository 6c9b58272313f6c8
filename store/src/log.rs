//! The Raft log on sled: one tree of entries keyed by big-endian index, one tree of metadata
//! (vote, committed, last purged).
//!
//! Durability: `save_vote` flushes before it returns, and `append` reports its entries persisted
//! (openraft's `log_io_completed`) only after a flush that covers them. openraft 0.9 calls
//! `append` once per proposal, so `append` only writes the entries and hands the completion to a
//! flusher task: the flusher takes every completion queued while the previous flush ran, flushes
//! once, then completes them all in order. That is the group commit: one fsync for every write
//! that arrived while the last one was in progress.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use tokio::sync::mpsc;

use crate::command::{LogId, NodeId, StorageError, TypeConfig};
use crate::error::{decode, encode};
use crate::keycode::{decode_u64, encode_u64};
use crate::Error;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage. Cheap to clone: clones share the same sled trees.
#[derive(Clone)]
pub struct Log {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    /// Completions waiting for the flusher; `None` outside a tokio runtime (flush inline).
    flusher: Option<mpsc::UnboundedSender<LogFlushed<TypeConfig>>>,
}

/// Flushes once for every group of appends that queued up while the previous flush ran.
async fn group_commit(db: sled::Db, mut pending: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        let started = std::time::Instant::now();
        let result = crate::flush(&db).await.map(|_| ()).map_err(|e| e.to_string());
        tracing::trace!(appends = group.len(), elapsed = ?started.elapsed(), "group commit");
        for done in group {
            done.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
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
    /// Opens (or creates) the log in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        let flusher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(group_commit(db.clone(), rx));
            tx
        });
        Ok(Self { db: db.clone(), entries: db.open_tree("raft/log")?, meta: db.open_tree("raft/meta")?, flusher })
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, Error> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn meta_put<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), Error> {
        self.meta.insert(key, encode(value)?)?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, Error> {
        self.meta_get(LAST_PURGED)
    }

    /// Index of the last entry in the log, if any (for status reporting).
    pub fn last_index(&self) -> Result<Option<u64>, Error> {
        match self.entries.last()? {
            Some((k, _)) => Ok(Some(decode_u64(&k)?)),
            None => Ok(self.last_purged()?.map(|id| id.index)),
        }
    }

    /// Number of entries currently held (not yet purged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for Log {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(encode_u64(i)),
            Bound::Excluded(&i) => Bound::Excluded(encode_u64(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(encode_u64(i)),
            Bound::Excluded(&i) => Bound::Excluded(encode_u64(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.entries.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(read_err)?;
            out.push(decode(&bytes).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for Log {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged().map_err(read_err)?;
        let last_log_id = match self.entries.last().map_err(read_err)? {
            Some((_, bytes)) => Some(decode::<Entry<TypeConfig>>(&bytes).map_err(read_err)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let err = |e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
        self.meta_put(VOTE, vote).map_err(err)?;
        crate::flush(&self.db).await.map_err(|e| err(e.into()))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta_get(VOTE).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.meta_put(COMMITTED, &committed).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>(COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&encode_u64(entry.log_id.index), encode(&entry).map_err(write_err)?);
        }
        self.entries.apply_batch(batch).map_err(write_err)?;
        // Report the entries as persisted only once a flush covering them is done.
        let callback = match &self.flusher {
            Some(flusher) => match flusher.send(callback) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(callback)) => callback,
            },
            None => callback,
        };
        let flushed = crate::flush(&self.db).await.map(|_| ()).map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.entries.range(encode_u64(log_id.index)..).keys() {
            batch.remove(key.map_err(write_err)?);
        }
        self.entries.apply_batch(batch).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: sled recovers a prefix of the writes, so a crash can
        // leave entries that are already covered by `last_purged`, never a gap without it.
        self.meta_put(LAST_PURGED, &log_id).map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for key in self.entries.range(..=encode_u64(log_id.index)).keys() {
            batch.remove(key.map_err(write_err)?);
        }
        self.entries.apply_batch(batch).map_err(write_err)
    }
}
