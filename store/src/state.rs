//! The replicated state machine on sled.
//!
//! Trees: `sm/meta` (last applied log id, membership, snapshot bookkeeping), `sm/catalog`
//! (keyspace definitions) and one data tree per strong keyspace, named
//! `ks/NAME@CREATED_REVISION` so that a dropped and re-created keyspace never sees the old data.
//!
//! `sm/sessions` holds the results of recent writes per client (see `session`), and `sm/meta`
//! also the revision counter.
//!
//! Applying (see `apply`) commits a run of entries' data, session results and the new
//! last-applied log id and revision in one sled transaction, then appends the changes to the
//! in-memory change log (see `history`). A crash leaves the state machine exactly at some applied
//! index and openraft replays the rest from the log. Nothing here
//! flushes: the Raft log is the durability point, and the applied state is made durable at
//! checkpoints ([`StateMachine::checkpoint`]) before the log behind it is purged.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{Entry, OptionalSend, RaftSnapshotBuilder, Snapshot};
use tokio::sync::{broadcast, watch};

use crate::budget::Usage;
use crate::command::{
    Applied, Change, KeyspaceDef, LogId, Mode, Scope, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    Versioned, DEFAULT_KEYSPACE,
};
use crate::error::{decode, encode};
use crate::feed::{Fed, Feed};
use crate::history::History;
use crate::session::Sessions;
use crate::snapshot::{self, SnapshotBuilder};
use crate::Error;

pub(crate) const LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const MEMBERSHIP: &[u8] = b"membership";
/// Keys and trees of the change log when it was kept in sled, removed at open.
const OLD_COMPACTED_BEFORE: &[u8] = b"changes_compacted_before";
const OLD_CHANGES_TREE: &str = "sm/changes";
pub(crate) const REVISION: &[u8] = b"revision";
const DATA_TREE_PREFIX: &str = "ks/";

/// The state machine. Cheap to clone: clones share the same trees, so the API layer keeps one
/// for reads while openraft owns another for applying entries.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    /// The same database, for syncs that reach the device.
    pub(crate) disk: crate::Disk,
    pub(crate) meta: sled::Tree,
    pub(crate) catalog: sled::Tree,
    /// Recent changes for watchers, in memory.
    pub(crate) history: History,
    pub(crate) sessions_tree: sled::Tree,
    pub(crate) snapshot_dir: PathBuf,
    /// The snapshot export kept for peers (see [`snapshot`]).
    pub(crate) exports: snapshot::Exports,
    /// Log index of the last applied entry.
    applied_index: AtomicU64,
    /// Bytes of commands applied since the node started (approximate; drives snapshots).
    pub(crate) applied_bytes: AtomicU64,
    /// The revision counter: the revision of the last applied command.
    revision: watch::Sender<u64>,
    /// Recent results per client, mirrored in `sessions_tree`; changed only by apply and
    /// snapshot install.
    pub(crate) sessions: std::sync::Mutex<Sessions>,
    /// Keyspace definitions and their open data trees, read through from `catalog`.
    cache: RwLock<CatalogCache>,
    pub(crate) events: Feed,
    usage: Usage,
}

/// Cached catalog entries. `generation` changes whenever the catalog does, so a reader that
/// looked the catalog up before a change cannot put a stale entry back.
#[derive(Default)]
pub(crate) struct CatalogCache {
    generation: u64,
    keyspaces: HashMap<String, (KeyspaceDef, Option<sled::Tree>)>,
}

/// Name of the sled tree that holds a keyspace's data.
pub(crate) fn data_tree_name(def: &KeyspaceDef) -> String {
    format!("{DATA_TREE_PREFIX}{}@{}", def.name, def.created_revision)
}

fn default_keyspace() -> KeyspaceDef {
    KeyspaceDef { name: DEFAULT_KEYSPACE.into(), mode: Mode::Strong, scope: Scope::Region, created_revision: 0 }
}

fn sm_error(verb: openraft::ErrorVerb, e: Error) -> StorageError {
    openraft::StorageIOError::new(openraft::ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

fn storage_error(e: Error) -> StorageError {
    sm_error(openraft::ErrorVerb::Write, e)
}

impl StateMachine {
    /// Opens the state machine in `db`, keeping snapshot files in `snapshot_dir`. Finishes a
    /// snapshot install that a crash interrupted and removes data trees of dropped keyspaces.
    pub fn open(db: &sled::Db, snapshot_dir: &Path) -> Result<Self, Error> {
        Self::open_on(&crate::Disk::unsynced(db.clone()), snapshot_dir)
    }

    /// [`StateMachine::open`] on a [`crate::Disk`], whose checkpoints end with `fdatasync`.
    pub fn open_on(disk: &crate::Disk, snapshot_dir: &Path) -> Result<Self, Error> {
        let db = disk.db();
        std::fs::create_dir_all(snapshot_dir)?;
        let usage = Usage::default();
        let inner = Inner {
            db: db.clone(),
            disk: disk.clone(),
            meta: db.open_tree("sm/meta")?,
            catalog: db.open_tree("sm/catalog")?,
            history: History::new(1, usage.clone()),
            sessions_tree: db.open_tree("sm/sessions")?,
            snapshot_dir: snapshot_dir.to_path_buf(),
            exports: snapshot::Exports::default(),
            applied_index: AtomicU64::new(0),
            applied_bytes: AtomicU64::new(0),
            revision: watch::channel(0).0,
            sessions: std::sync::Mutex::default(),
            cache: RwLock::default(),
            events: Feed::new(usage.clone()),
            usage,
        };
        let sm = Self { inner: Arc::new(inner) };
        snapshot::resume_install(&sm)?;
        snapshot::clear_leftovers(&sm)?;
        sm.inner.db.drop_tree(OLD_CHANGES_TREE)?;
        sm.inner.meta.remove(OLD_COMPACTED_BEFORE)?;
        sm.ensure_default_keyspace()?;
        sm.collect_orphan_trees()?;
        sm.refresh_applied()?;
        Ok(sm)
    }

    /// Forgets cached catalog entries; called after every catalog change.
    pub(crate) fn invalidate_catalog(&self) {
        if let Ok(mut cache) = self.inner.cache.write() {
            cache.generation += 1;
            cache.keyspaces.clear();
        }
    }

    /// The definition and (for strong keyspaces) data tree of a keyspace, through the cache.
    fn cached(&self, name: &str) -> Result<Option<(KeyspaceDef, Option<sled::Tree>)>, Error> {
        let generation = match self.inner.cache.read() {
            Ok(cache) => {
                if let Some(hit) = cache.keyspaces.get(name) {
                    return Ok(Some(hit.clone()));
                }
                cache.generation
            }
            Err(_) => return Err(Error::Io("catalog cache poisoned".into())),
        };
        let Some(def) = self.keyspace(name)? else { return Ok(None) };
        let tree = match def.mode {
            Mode::Strong => Some(self.inner.db.open_tree(data_tree_name(&def))?),
            Mode::Eventual => None,
        };
        if let Ok(mut cache) = self.inner.cache.write() {
            if cache.generation == generation {
                cache.keyspaces.insert(name.to_string(), (def.clone(), tree.clone()));
            }
        }
        Ok(Some((def, tree)))
    }

    pub(crate) fn ensure_default_keyspace(&self) -> Result<(), Error> {
        if self.inner.catalog.get(DEFAULT_KEYSPACE)?.is_none() {
            self.inner.catalog.insert(DEFAULT_KEYSPACE, encode(&default_keyspace())?)?;
        }
        Ok(())
    }

    fn collect_orphan_trees(&self) -> Result<(), Error> {
        let live: Vec<String> = self.keyspaces()?.iter().map(data_tree_name).collect();
        for name in self.inner.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(DATA_TREE_PREFIX) && !live.contains(&name) {
                self.inner.db.drop_tree(name.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Reloads the applied position and the session table from the trees.
    pub(crate) fn refresh_applied(&self) -> Result<(), Error> {
        let index = self.last_applied()?.map(|id| id.index).unwrap_or(0);
        let revision = match self.inner.meta.get(REVISION)? {
            Some(bytes) => decode(&bytes)?,
            None => 0,
        };
        *self.sessions()? = Sessions::load(&self.inner.sessions_tree)?;
        self.set_applied(index, revision);
        // The change log is kept in memory: it answers from here on.
        self.inner.history.reset(revision + 1);
        Ok(())
    }

    pub(crate) fn set_applied(&self, index: u64, revision: u64) {
        self.inner.applied_index.store(index, Ordering::SeqCst);
        self.inner.revision.send_replace(revision);
    }

    pub(crate) fn sessions(&self) -> Result<std::sync::MutexGuard<'_, Sessions>, Error> {
        self.inner.sessions.lock().map_err(|_| Error::Io("session table poisoned".into()))
    }

    /// Makes everything applied so far durable (sled flushed and its file synced to the device).
    /// Called before the log behind the applied state may be purged.
    pub async fn checkpoint(&self) -> Result<(), Error> {
        self.inner.disk.sync().await
    }

    /// The node's database, for syncs that reach the device (eventual keyspaces share it).
    pub fn disk(&self) -> &crate::Disk {
        &self.inner.disk
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Result<Option<LogId>, Error> {
        match self.inner.meta.get(LAST_APPLIED)? {
            Some(bytes) => decode(&bytes),
            None => Ok(None),
        }
    }

    /// The membership applied with the state.
    pub fn membership(&self) -> Result<StoredMembership, Error> {
        match self.inner.meta.get(MEMBERSHIP)? {
            Some(bytes) => decode(&bytes),
            None => Ok(StoredMembership::default()),
        }
    }

    /// The revision of the last command this replica applied.
    pub fn applied_revision(&self) -> u64 {
        *self.inner.revision.borrow()
    }

    /// Bytes of commands this replica applied since it started (approximate).
    pub fn applied_bytes(&self) -> u64 {
        self.inner.applied_bytes.load(Ordering::Relaxed)
    }

    /// The log index of the last entry this replica applied.
    pub fn applied_index(&self) -> u64 {
        self.inner.applied_index.load(Ordering::SeqCst)
    }

    /// Follows the applied revision (for waiting until a revision is applied).
    pub fn watch_revision(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    /// Lets `get_current_snapshot` export the state for peers that need a snapshot. Until then
    /// (while openraft starts up and reads only the snapshot's metadata) the current snapshot is
    /// described without data; see the `snapshot` module.
    pub fn serve_snapshots(&self) {
        snapshot::serve(self);
    }

    /// Live memory figures of the node's budgeted parts (shared with the rest of the node).
    pub fn usage(&self) -> &Usage {
        &self.inner.usage
    }

    /// Bounds the bytes of applied changes held for watchers (the `changes` share of the
    /// memory budget): half for the change log, half for the live feed; unbounded until called.
    pub fn set_feed_limit(&self, bytes: u64) {
        self.inner.history.set_limit(bytes / 2);
        self.inner.events.set_limit(bytes / 2);
    }

    /// Subscribes to changes as they are applied. An item may be [`Fed::elided`]: the change
    /// did not fit the feed's memory share and is read from the change log instead.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Fed>> {
        self.inner.events.subscribe()
    }

    /// The definition of a keyspace, if it exists.
    pub fn keyspace(&self, name: &str) -> Result<Option<KeyspaceDef>, Error> {
        match self.inner.catalog.get(name)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// All keyspaces, by name.
    pub fn keyspaces(&self) -> Result<Vec<KeyspaceDef>, Error> {
        self.inner.catalog.iter().values().map(|v| decode(&v?)).collect()
    }

    pub(crate) fn data_tree(&self, keyspace: &str) -> Result<sled::Tree, Error> {
        match self.cached(keyspace)? {
            Some((_, Some(tree))) => Ok(tree),
            Some(_) => Err(Error::InvalidInput(format!("keyspace \"{keyspace}\" is not a strong keyspace"))),
            None => Err(Error::NotFound(format!("keyspace \"{keyspace}\" does not exist"))),
        }
    }

    /// Reads one key of a strong keyspace from local applied state.
    pub fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Versioned>, Error> {
        match self.data_tree(keyspace)?.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Reads up to `limit` entries of a strong keyspace in key order, from `start` up to `end`
    /// (exclusive, `None` for no bound).
    pub fn scan(
        &self,
        keyspace: &str,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, Error> {
        self.scan_bytes(keyspace, start, end, limit, usize::MAX)
    }

    /// [`StateMachine::scan`] that also stops once the rows read hold more than `max_bytes`
    /// (keys, values and 32 bytes each): the row that crosses the bound is the last returned,
    /// so a caller cutting at `max_bytes` knows another page follows.
    pub fn scan_bytes(
        &self,
        keyspace: &str,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, Error> {
        let tree = self.data_tree(keyspace)?;
        let end = match end {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) = (&start, &end) {
            if s >= e {
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in tree.range::<Vec<u8>, _>((start, end)).take(limit) {
            if bytes > max_bytes {
                break;
            }
            let (k, v) = item?;
            let row: Versioned = decode(&v)?;
            bytes += row.row_bytes(&k);
            out.push((k.to_vec(), row));
        }
        Ok(out)
    }

    /// Changes in the change log (see the `history` module) with revision >= `from`, at most
    /// `limit` of them.
    pub fn changes_since(&self, from: u64, limit: usize) -> Result<Vec<Arc<Change>>, Error> {
        Ok(self.inner.history.since(from, limit))
    }

    /// Sets how many revisions of change log (watch history) are kept.
    pub fn set_change_retention(&self, revisions: u64) {
        self.inner.history.set_retention(revisions);
    }

    /// The first revision the change log still answers for: changes before it were compacted
    /// (or arrived in a snapshot, or were applied before the node last started) and a watch from
    /// an older revision starts with a snapshot.
    pub fn compacted_before(&self) -> Result<u64, Error> {
        Ok(self.inner.history.compacted_before())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let read = |e| sm_error(openraft::ErrorVerb::Read, e);
        Ok((self.last_applied().map_err(read)?, self.membership().map_err(read)?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries.into_iter().collect()).map_err(storage_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::stage(self.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        snapshot::begin_receiving(self).await.map_err(storage_error)
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Box<tokio::fs::File>) -> Result<(), StorageError> {
        snapshot::install(self, meta, data).await.map_err(storage_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        snapshot::current(self).await.map_err(storage_error)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.finish().await.map_err(storage_error)
    }
}
