//! The replicated state machine on sled.
//!
//! Trees: `sm/meta` (last applied log id, membership, snapshot bookkeeping), `sm/catalog`
//! (keyspace definitions), `sm/changes` (the change log, keyed by revision) and one data tree per
//! strong keyspace, named `ks/NAME@CREATED_REVISION` so that a dropped and re-created keyspace
//! never sees the old data.
//!
//! Applying an entry commits its data, the change-log record and the new last-applied log id
//! (and membership, for membership entries) in one sled transaction, so a crash leaves the state
//! machine exactly at some applied index and openraft replays the rest from the log.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::broadcast;

use crate::command::{
    BatchOutcome, Change, Command, Condition, Event, KeyspaceDef, LogId, Mode, Op, Response, Scope, SnapshotMeta,
    StorageError, StoredMembership, TypeConfig, Versioned, DEFAULT_KEYSPACE,
};
use crate::error::{decode, encode};
use crate::keycode::{decode_u64, encode_u64};
use crate::snapshot::{self, SnapshotBuilder};
use crate::Error;

pub(crate) const LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const MEMBERSHIP: &[u8] = b"membership";
pub(crate) const COMPACTED_BEFORE: &[u8] = b"changes_compacted_before";
const DATA_TREE_PREFIX: &str = "ks/";

type TxResult<T> = Result<T, ConflictableTransactionError<Error>>;

/// The state machine. Cheap to clone: clones share the same trees, so the API layer keeps one
/// for reads while openraft owns another for applying entries.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    pub(crate) meta: sled::Tree,
    pub(crate) catalog: sled::Tree,
    pub(crate) changes: sled::Tree,
    pub(crate) snapshot_dir: PathBuf,
    applied: AtomicU64,
    /// Revisions kept in the change log behind a snapshot.
    change_retention: AtomicU64,
    /// Keyspace definitions and their open data trees, read through from `catalog`.
    cache: RwLock<CatalogCache>,
    events: broadcast::Sender<Arc<Change>>,
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

fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_error(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn sm_error(verb: openraft::ErrorVerb, e: Error) -> StorageError {
    openraft::StorageIOError::new(openraft::ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

fn storage_error(e: Error) -> StorageError {
    sm_error(openraft::ErrorVerb::Write, e)
}

fn read_versioned(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<Versioned>> {
    match tree.get(key)? {
        Some(bytes) => match decode(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => abort(e),
        },
        None => Ok(None),
    }
}

fn put_encoded<T: serde::Serialize>(tree: &TransactionalTree, key: &[u8], value: &T) -> TxResult<()> {
    match encode(value) {
        Ok(bytes) => {
            tree.insert(key, bytes)?;
            Ok(())
        }
        Err(e) => abort(e),
    }
}

impl StateMachine {
    /// Opens the state machine in `db`, keeping snapshot files in `snapshot_dir`. Finishes a
    /// snapshot install that a crash interrupted and removes data trees of dropped keyspaces.
    pub fn open(db: &sled::Db, snapshot_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(snapshot_dir)?;
        let inner = Inner {
            db: db.clone(),
            meta: db.open_tree("sm/meta")?,
            catalog: db.open_tree("sm/catalog")?,
            changes: db.open_tree("sm/changes")?,
            snapshot_dir: snapshot_dir.to_path_buf(),
            applied: AtomicU64::new(0),
            change_retention: AtomicU64::new(5_000),
            cache: RwLock::default(),
            events: broadcast::channel(4096).0,
        };
        let sm = Self { inner: Arc::new(inner) };
        snapshot::resume_install(&sm)?;
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

    pub(crate) fn refresh_applied(&self) -> Result<(), Error> {
        let applied = self.last_applied()?.map(|id| id.index).unwrap_or(0);
        self.inner.applied.store(applied, Ordering::SeqCst);
        Ok(())
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

    /// The revision (log index) up to which this replica has applied the log.
    pub fn applied_revision(&self) -> u64 {
        self.inner.applied.load(Ordering::SeqCst)
    }

    /// Subscribes to changes as they are applied.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
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

    fn data_tree(&self, keyspace: &str) -> Result<sled::Tree, Error> {
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
        for item in tree.range::<Vec<u8>, _>((start, end)).take(limit) {
            let (k, v) = item?;
            out.push((k.to_vec(), decode(&v)?));
        }
        Ok(out)
    }

    /// Changes recorded in the change log with revision >= `from`, at most `limit` of them.
    pub fn changes_since(&self, from: u64, limit: usize) -> Result<Vec<Change>, Error> {
        let mut out = Vec::new();
        for item in self.inner.changes.range(encode_u64(from)..).take(limit) {
            let (_, v) = item?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    /// The oldest revision still held by the change log, if any.
    pub fn oldest_change(&self) -> Result<Option<u64>, Error> {
        match self.inner.changes.first()? {
            Some((k, _)) => Ok(Some(decode_u64(&k)?)),
            None => Ok(None),
        }
    }

    /// Sets how many revisions of change log are kept behind each snapshot.
    pub fn set_change_retention(&self, revisions: u64) {
        self.inner.change_retention.store(revisions, Ordering::SeqCst);
    }

    /// The first revision the change log still answers for: changes before it were compacted
    /// (or arrived in a snapshot) and a watch from an older revision starts with a snapshot.
    pub fn compacted_before(&self) -> Result<u64, Error> {
        match self.inner.meta.get(COMPACTED_BEFORE)? {
            Some(b) => decode(&b),
            None => Ok(1),
        }
    }

    /// Removes change-log records older than `before` and records the compaction point.
    pub fn trim_changes(&self, before: u64) -> Result<usize, Error> {
        if before <= self.compacted_before()? {
            return Ok(0);
        }
        // Record the compaction point first, so a reader never misses a gap.
        self.inner.meta.insert(COMPACTED_BEFORE, encode(&before)?)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in self.inner.changes.range(..encode_u64(before)).keys() {
            batch.remove(key?);
            n += 1;
        }
        self.inner.changes.apply_batch(batch)?;
        Ok(n)
    }

    /// Compacts the change log after a snapshot at `index`, keeping the configured retention.
    pub(crate) fn compact_changes(&self, index: u64) -> Result<(), Error> {
        let keep = self.inner.change_retention.load(Ordering::SeqCst);
        let before = index.saturating_sub(keep);
        if before > 1 {
            let n = self.trim_changes(before)?;
            tracing::debug!(before, removed = n, "compacted the change log");
        }
        Ok(())
    }

    /// Applies one entry; deterministic outcomes come back as `Ok(Response)`.
    fn apply_entry(&self, entry: Entry<TypeConfig>) -> Result<(Response, Option<Change>), Error> {
        let log_id = entry.log_id;
        let meta = &self.inner.meta;
        match entry.payload {
            EntryPayload::Blank => {
                meta.insert(LAST_APPLIED, encode(&Some(log_id))?)?;
                Ok((Response::Empty, None))
            }
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(log_id), m);
                let mut batch = sled::Batch::default();
                batch.insert(LAST_APPLIED, encode(&Some(log_id))?);
                batch.insert(MEMBERSHIP, encode(&stored)?);
                meta.apply_batch(batch)?;
                Ok((Response::Empty, None))
            }
            EntryPayload::Normal(cmd) => self.apply_command(log_id, cmd),
        }
    }

    fn reject(&self, log_id: LogId, e: Error) -> Result<(Response, Option<Change>), Error> {
        self.inner.meta.insert(LAST_APPLIED, encode(&Some(log_id))?)?;
        Ok((Response::Rejected(e), None))
    }

    fn apply_command(&self, log_id: LogId, cmd: Command) -> Result<(Response, Option<Change>), Error> {
        let revision = log_id.index;
        let applied = encode(&Some(log_id))?;
        match cmd {
            Command::Batch { keyspace, conditions, ops } => {
                let tree = match self.data_tree(&keyspace) {
                    Ok(tree) => tree,
                    Err(e) if e.is_deterministic() => return self.reject(log_id, e),
                    Err(e) => return Err(e),
                };
                let trees = [self.inner.meta.clone(), self.inner.changes.clone(), tree];
                let result = trees.transaction(|t| {
                    let (meta, changes, data) = (&t[0], &t[1], &t[2]);
                    let outcome = apply_batch(data, revision, &conditions, &ops)?;
                    meta.insert(LAST_APPLIED, applied.as_slice())?;
                    let (outcome, events) = outcome;
                    let change = if events.is_empty() {
                        None
                    } else {
                        let change = Change { revision, keyspace: keyspace.clone(), events };
                        put_encoded(changes, &encode_u64(revision), &change)?;
                        Some(change)
                    };
                    Ok((Response::Batch(outcome), change))
                });
                result.map_err(tx_error)
            }
            Command::CreateKeyspace { name, mode, scope, if_not_exists } => {
                let def = KeyspaceDef { name: name.clone(), mode, scope, created_revision: revision };
                let trees = [self.inner.meta.clone(), self.inner.catalog.clone()];
                let result = trees.transaction(|t| {
                    let (meta, catalog) = (&t[0], &t[1]);
                    meta.insert(LAST_APPLIED, applied.as_slice())?;
                    if let Some(bytes) = catalog.get(name.as_bytes())? {
                        let existing: KeyspaceDef = match decode(&bytes) {
                            Ok(d) => d,
                            Err(e) => return abort(e),
                        };
                        if if_not_exists && existing.mode == mode && existing.scope == scope {
                            return Ok(Response::Keyspace(existing));
                        }
                        return Ok(Response::Rejected(Error::AlreadyExists(format!(
                            "keyspace \"{name}\" already exists ({:?}, {:?})",
                            existing.mode, existing.scope
                        ))));
                    }
                    put_encoded(catalog, name.as_bytes(), &def)?;
                    Ok(Response::Keyspace(def.clone()))
                });
                let response = result.map_err(tx_error)?;
                self.invalidate_catalog();
                Ok((response, None))
            }
            Command::DropKeyspace { name } => {
                if name == DEFAULT_KEYSPACE {
                    return self.reject(log_id, Error::InvalidInput("the default keyspace cannot be dropped".into()));
                }
                let Some(def) = self.keyspace(&name)? else {
                    return self.reject(log_id, Error::NotFound(format!("keyspace \"{name}\" does not exist")));
                };
                let trees = [self.inner.meta.clone(), self.inner.catalog.clone()];
                trees
                    .transaction(|t| {
                        t[0].insert(LAST_APPLIED, applied.as_slice())?;
                        t[1].remove(name.as_bytes())?;
                        Ok(())
                    })
                    .map_err(tx_error)?;
                self.invalidate_catalog();
                // The catalog no longer names the tree; if this drop is interrupted, `open`
                // collects the orphan.
                self.inner.db.drop_tree(data_tree_name(&def).as_bytes())?;
                Ok((Response::Dropped(revision), None))
            }
        }
    }
}

/// Evaluates conditions and applies the operations of a batch inside a transaction.
fn apply_batch(
    data: &TransactionalTree,
    revision: u64,
    conditions: &[Condition],
    ops: &[Op],
) -> TxResult<(BatchOutcome, Vec<Event>)> {
    let mut failed = Vec::new();
    for (i, cond) in conditions.iter().enumerate() {
        let holds = match cond {
            Condition::RevisionEquals(k, rev) => read_versioned(data, k)?.map(|v| v.revision) == Some(*rev),
            Condition::ValueEquals(k, value) => read_versioned(data, k)?.is_some_and(|v| &v.value == value),
            Condition::Absent(k) => data.get(k)?.is_none(),
            Condition::Present(k) => data.get(k)?.is_some(),
        };
        if !holds {
            failed.push(i as u32);
        }
    }
    if !failed.is_empty() {
        let outcome = BatchOutcome { succeeded: false, revision, failed_conditions: failed, deleted: 0 };
        return Ok((outcome, Vec::new()));
    }
    // Later operations on the same key see earlier ones: track versions written in this batch.
    let mut written: BTreeMap<&[u8], Option<Versioned>> = BTreeMap::new();
    let mut events = Vec::with_capacity(ops.len());
    let mut deleted = 0;
    for op in ops {
        let key = op.key();
        let current = match written.get(key) {
            Some(v) => v.clone(),
            None => read_versioned(data, key)?,
        };
        match op {
            Op::Put(_, value) => {
                let next = match current {
                    Some(prev) => Versioned {
                        value: value.clone(),
                        revision,
                        create_revision: prev.create_revision,
                        version: prev.version + 1,
                    },
                    None => Versioned { value: value.clone(), revision, create_revision: revision, version: 1 },
                };
                put_encoded(data, key, &next)?;
                written.insert(key, Some(next));
                events.push(Event { key: key.to_vec(), value: Some(value.clone()) });
            }
            Op::Delete(_) => {
                if current.is_some() {
                    deleted += 1;
                    data.remove(key)?;
                    events.push(Event { key: key.to_vec(), value: None });
                }
                written.insert(key, None);
            }
        }
    }
    Ok((BatchOutcome { succeeded: true, revision, failed_conditions: Vec::new(), deleted }, events))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let read = |e| sm_error(openraft::ErrorVerb::Read, e);
        Ok((self.last_applied().map_err(read)?, self.membership().map_err(read)?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let (response, change) = self.apply_entry(entry).map_err(storage_error)?;
            self.inner.applied.store(index, Ordering::SeqCst);
            if let Some(change) = change {
                // No subscriber is not an error.
                let _ = self.inner.events.send(Arc::new(change));
            }
            responses.push(response);
        }
        Ok(responses)
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
