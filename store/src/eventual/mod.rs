//! Storage of eventual keyspaces: byte-level replica state, digest index, change log and sync
//! bookkeeping, outside Raft.
//!
//! This module knows nothing of CRDTs: a key's state is opaque bytes with a 16-byte digest that
//! the layer above (`ledge-crdt`) computes. What it guarantees is the one-transaction rule of
//! docs/eventual.md: a write's new state, its digest-index entry, its tombstone-index entry and its
//! change-log record commit together, so a crash never leaves the digest index (and with it
//! anti-entropy) or the change log (and with it the push streams) out of step with the data.
//!
//! Trees, per eventual keyspace `NAME` created at revision `REV`:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `ev/NAME@REV/data` | user key | encoded state |
//! | `ev/NAME@REV/digests` | leaf bucket (2 bytes) ++ user key | 16-byte digest of the state |
//! | `ev/NAME@REV/tombs` | user key | ordered timestamp bytes of a deleted state |
//!
//! and shared by all of them: `ev/changes` (sequence number, big-endian → [`Record`]) and
//! `ev/meta` (the HLC high-water mark, sync watermarks, push cursors: whatever the layer above
//! stores with [`Eventual::put_meta`]).
//!
//! The life of a write, as this module sees it: the caller passes [`Eventual::update`] a closure
//! that turns the key's current state into a [`Write`]. Under the commit lock the closure runs
//! inside a sled transaction, the results are written, and the change log gets the next sequence
//! number, so sequence order is commit order. After the commit the keyspace's in-memory hash tree
//! ([`merkle`]) is updated and the committed sequence published. The caller then awaits
//! [`Eventual::flush`] (group commit) before acknowledging; the flush publishes the durable
//! sequence that push streams read up to.
//!
//! Tombstones: a state the layer above marks collectable (an lww delete, an emptied set) is
//! indexed in `tombs` with its timestamp. [`Eventual::collect`] removes the entries at or below a
//! watermark, state and digest included, without a change-log record: collection is not a write.

mod changes;
mod flusher;
pub mod merkle;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::watch;

use crate::budget::{Part, Usage};
use crate::error::encode;
use crate::keycode::{decode_u64, encode_u64};
use crate::{Error, KeyspaceDef};
pub use changes::Record;
use changes::RecordRef;
use flusher::Flusher;
use merkle::{digest_key, Hash, Merkle, HASH_LEN};

const PREFIX: &str = "ev/";
const CHANGES: &str = "ev/changes";
const META: &str = "ev/meta";
/// The highest change-log sequence ever trimmed, so numbering survives an empty log.
const TRIMMED: &[u8] = b"changes_trimmed_upto";
/// The stream position ([`Record::seen`]) of the record at [`TRIMMED`].
const TRIMMED_SEEN: &[u8] = b"changes_trimmed_seen";
/// The greatest mark (HLC timestamp) of any committed write.
const MARK: &[u8] = b"mark";
const PARTS: [&str; 3] = ["data", "digests", "tombs"];
/// Marks the abort of an atomic commit that one of its items refused.
const REFUSED: &str = "an item of an atomic batch was refused";
/// Prefix of each keyspace's collected watermark in `ev/meta`.
const COLLECTED: &str = "collected/";

/// Identifies an eventual keyspace's storage: its name and the revision that created it, so a
/// dropped and re-created keyspace never sees the old data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpaceId {
    /// Keyspace name.
    pub name: String,
    /// Revision of the `CreateKeyspace` command.
    pub created_revision: u64,
}

impl SpaceId {
    /// The storage of keyspace `name` created at `created_revision`.
    pub fn new(name: impl Into<String>, created_revision: u64) -> Self {
        Self { name: name.into(), created_revision }
    }

    fn tree(&self, part: &str) -> String {
        format!("{PREFIX}{}@{}/{part}", self.name, self.created_revision)
    }

    fn collected_key(&self) -> String {
        format!("{COLLECTED}{self}")
    }

    /// The keyspace a tree name belongs to, for trees of [`Space`]s.
    fn of_tree(tree: &str) -> Option<SpaceId> {
        let rest = tree.strip_prefix(PREFIX)?;
        let (space, part) = rest.rsplit_once('/')?;
        if !PARTS.contains(&part) {
            return None;
        }
        let (name, revision) = space.rsplit_once('@')?;
        Some(SpaceId::new(name, revision.parse().ok()?))
    }
}

impl From<&KeyspaceDef> for SpaceId {
    fn from(def: &KeyspaceDef) -> Self {
        SpaceId::new(def.name.clone(), def.created_revision)
    }
}

impl std::fmt::Display for SpaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.created_revision)
    }
}

/// A key's new state, as computed by the caller of [`Eventual::update`].
#[derive(Clone, Debug)]
pub struct Put {
    /// The encoded state.
    pub state: Vec<u8>,
    /// Its digest, for the digest index.
    pub digest: Hash,
    /// For a deleted state that may be collected later: its timestamp, as bytes whose order is
    /// the timestamps' order.
    pub collectable: Option<Vec<u8>>,
    /// An ordered timestamp to fold into the durable high-water mark ([`Eventual::mark`]).
    pub mark: Option<Vec<u8>>,
    /// The change's position in this node's change stream, kept in its record: bytes whose
    /// order follows the change log's, which holds when the caller issues them inside the
    /// closure (it runs under the commit lock). Watches resume from these; empty for none.
    pub seen: Vec<u8>,
}

/// What [`Eventual::update`]'s closure decided.
#[derive(Clone, Debug)]
pub enum Write {
    /// Nothing changes (no change-log record).
    Keep,
    /// Store this state.
    Put(Put),
}

/// One key of an [`Eventual::update_batch`].
#[derive(Clone, Copy)]
pub struct Item<'a> {
    /// Its keyspace.
    pub space: &'a Space,
    /// The key.
    pub key: &'a [u8],
    /// Whether this node originates the change (see [`Record::local`]).
    pub local: bool,
}

/// The result of [`Eventual::update`].
#[derive(Clone, Debug)]
pub struct Updated<T> {
    /// What the closure returned.
    pub value: T,
    /// The change-log sequence of the write, `None` when nothing changed.
    pub seq: Option<u64>,
}

/// What a committed write changed, for the in-memory summaries.
struct Changed {
    existed: bool,
    old_digest: Option<sled::IVec>,
    new_digest: Hash,
    was_tomb: bool,
    is_tomb: bool,
}

/// The trees of one eventual keyspace and its in-memory hash tree.
pub struct Space {
    id: SpaceId,
    data: sled::Tree,
    digests: sled::Tree,
    tombs: sled::Tree,
    /// Lock order: taken after [`Eventual`]'s commit lock, never before.
    merkle: Mutex<Merkle>,
    keys: AtomicU64,
    tombstones: AtomicU64,
    /// Counts the hash tree against the `digests` share of the memory budget while open.
    usage: Usage,
    /// Ordered timestamp bytes: tombstones at or below were collected from this keyspace here
    /// (empty: none yet). Persisted in `ev/meta`, and gone with the keyspace's storage.
    collected: Mutex<Vec<u8>>,
}

impl Drop for Space {
    fn drop(&mut self) {
        let bytes = match self.merkle.get_mut() {
            Ok(merkle) => merkle.bytes(),
            Err(poisoned) => poisoned.into_inner().bytes(),
        };
        self.usage.sub(Part::Digests, bytes as u64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, Error> {
    mutex.lock().map_err(|_| Error::Io("eventual store lock poisoned".into()))
}

impl Space {
    fn open(db: &sled::Db, meta: &sled::Tree, id: &SpaceId, usage: &Usage) -> Result<Self, Error> {
        let digests = db.open_tree(id.tree("digests"))?;
        let mut merkle = Merkle::new();
        let mut keys = 0;
        for item in digests.iter() {
            let (dkey, digest) = item?;
            let key = dkey.get(2..).ok_or_else(|| Error::Corrupt("digest index key without bucket".into()))?;
            let _ = merkle.update(key, None, Some(&digest));
            keys += 1;
        }
        let tombs = db.open_tree(id.tree("tombs"))?;
        let tombstones = tombs.len() as u64;
        // Counted from here on; given back when the space is dropped.
        usage.add(Part::Digests, merkle.bytes() as u64);
        Ok(Space {
            id: id.clone(),
            data: db.open_tree(id.tree("data"))?,
            digests,
            tombs,
            merkle: Mutex::new(merkle),
            keys: AtomicU64::new(keys),
            tombstones: AtomicU64::new(tombstones),
            usage: usage.clone(),
            collected: Mutex::new(meta.get(id.collected_key())?.map(|v| v.to_vec()).unwrap_or_default()),
        })
    }

    /// The keyspace this is.
    pub fn id(&self) -> &SpaceId {
        &self.id
    }

    /// A key's stored state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.data.get(key)?.map(|v| v.to_vec()))
    }

    /// Stored states in key order from `start` up to `end` (exclusive; `None`: no bound).
    pub fn range(
        &self,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>> {
        let end = match end {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let empty = match (&start, &end) {
            (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        let iter = if empty { None } else { Some(self.data.range::<Vec<u8>, _>((start, end))) };
        iter.into_iter().flatten().map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from))
    }

    /// Number of keys stored, tombstones included.
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::SeqCst)
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ordered timestamp bytes up to which tombstones were collected from this keyspace (empty
    /// when none were). A state at or below it for a key not stored here is a late copy of one
    /// that was deleted and collected.
    pub fn collected(&self) -> Result<Vec<u8>, Error> {
        Ok(lock(&self.collected)?.clone())
    }

    /// Number of collectable (deleted) states stored.
    pub fn tombstones(&self) -> u64 {
        self.tombstones.load(Ordering::SeqCst)
    }

    /// The hash of all entries.
    pub fn root(&self) -> Result<Hash, Error> {
        Ok(lock(&self.merkle)?.root())
    }

    /// The 256 middle-bucket hashes.
    pub fn mids(&self) -> Result<Vec<Hash>, Error> {
        Ok(lock(&self.merkle)?.mids())
    }

    /// The 256 leaf hashes under middle bucket `mid`.
    pub fn leaves(&self, mid: u8) -> Result<Vec<Hash>, Error> {
        Ok(lock(&self.merkle)?.leaves(mid))
    }

    /// A key's digest, if the key is stored.
    pub fn digest(&self, key: &[u8]) -> Result<Option<Hash>, Error> {
        match self.digests.get(digest_key(key))? {
            Some(d) => Ok(Some(d.as_ref().try_into().map_err(|_| Error::Corrupt("digest is not 16 bytes".into()))?)),
            None => Ok(None),
        }
    }

    /// The keys of leaf bucket `leaf` with their digests, in key order.
    pub fn keys(&self, leaf: u16) -> Result<Vec<(Vec<u8>, Hash)>, Error> {
        let mut out = Vec::new();
        for item in self.digests.scan_prefix(leaf.to_be_bytes()) {
            let (dkey, digest) = item?;
            let digest: Hash =
                digest.as_ref().try_into().map_err(|_| Error::Corrupt("digest is not 16 bytes".into()))?;
            out.push((dkey[2..].to_vec(), digest));
        }
        Ok(out)
    }

    fn note(&self, key: &[u8], changed: &Changed) -> Result<(), Error> {
        let grown = lock(&self.merkle)?.update(key, changed.old_digest.as_deref(), Some(&changed.new_digest));
        self.usage.add(Part::Digests, grown as u64);
        if !changed.existed {
            self.keys.fetch_add(1, Ordering::SeqCst);
        }
        match (changed.was_tomb, changed.is_tomb) {
            (false, true) => self.tombstones.fetch_add(1, Ordering::SeqCst),
            (true, false) => self.tombstones.fetch_sub(1, Ordering::SeqCst),
            _ => 0,
        };
        Ok(())
    }
}

/// The eventual keyspaces of one node. Cheap to clone.
#[derive(Clone)]
pub struct Eventual {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    changes: sled::Tree,
    meta: sled::Tree,
    /// The last committed change-log sequence. Held for the length of a write transaction.
    commit: Mutex<u64>,
    spaces: RwLock<HashMap<SpaceId, Arc<Space>>>,
    committed: Arc<watch::Sender<u64>>,
    durable: Arc<watch::Sender<u64>>,
    flusher: Flusher,
    usage: Usage,
}

fn tx_error<E: From<Error>>(e: TransactionError<E>) -> E {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => E::from(e.into()),
    }
}

impl Eventual {
    /// Opens the eventual storage in `db`, with flushes that stop at sled's own. Keyspaces are
    /// opened on first use.
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Self::open_on(&crate::Disk::unsynced(db.clone()))
    }

    /// Opens the eventual storage on `disk`: a write is acknowledged after a group commit that
    /// ends with `fdatasync` of the database file.
    pub fn open_on(disk: &crate::Disk) -> Result<Self, Error> {
        Self::open_counted(disk, Usage::default())
    }

    /// [`Eventual::open_on`], counting each open keyspace's hash tree in `usage`.
    pub fn open_counted(disk: &crate::Disk, usage: Usage) -> Result<Self, Error> {
        let db = disk.db();
        let changes = db.open_tree(CHANGES)?;
        let meta = db.open_tree(META)?;
        let trimmed = match meta.get(TRIMMED)? {
            Some(b) => decode_u64(&b)?,
            None => 0,
        };
        let last = match changes.last()? {
            Some((k, _)) => decode_u64(&k)?,
            None => 0,
        };
        let last = last.max(trimmed);
        let committed = Arc::new(watch::Sender::new(last));
        // Everything on disk at open is durable as far as this process can tell.
        let durable = Arc::new(watch::Sender::new(last));
        let flusher = Flusher::new(disk.clone(), committed.clone(), durable.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                changes,
                meta,
                commit: Mutex::new(last),
                spaces: RwLock::default(),
                committed,
                durable,
                flusher,
                usage,
            }),
        })
    }

    /// The storage of keyspace `id`, created on first use.
    pub fn space(&self, id: &SpaceId) -> Result<Arc<Space>, Error> {
        let poisoned = || Error::Io("eventual keyspace table poisoned".into());
        if let Some(space) = self.inner.spaces.read().map_err(|_| poisoned())?.get(id) {
            return Ok(space.clone());
        }
        let opened = Arc::new(Space::open(&self.inner.db, &self.inner.meta, id, &self.inner.usage)?);
        let mut spaces = self.inner.spaces.write().map_err(|_| poisoned())?;
        Ok(spaces.entry(id.clone()).or_insert(opened).clone())
    }

    /// Every keyspace with storage on disk.
    pub fn stored_spaces(&self) -> Vec<SpaceId> {
        let mut ids: Vec<SpaceId> = self
            .inner
            .db
            .tree_names()
            .iter()
            .filter_map(|name| SpaceId::of_tree(&String::from_utf8_lossy(name)))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Drops the storage of every stored keyspace for which `dropped` says so (asked per
    /// keyspace, after the stored trees are listed). A keyspace's collected watermark goes
    /// first, so storage made again under the same id starts with nothing collected.
    pub fn retain_spaces(&self, dropped: impl Fn(&SpaceId) -> Result<bool, Error>) -> Result<usize, Error> {
        let mut count = 0;
        for id in self.stored_spaces() {
            if !dropped(&id)? {
                continue;
            }
            if let Ok(mut spaces) = self.inner.spaces.write() {
                spaces.remove(&id);
            }
            self.inner.meta.remove(id.collected_key())?;
            for part in PARTS {
                self.inner.db.drop_tree(id.tree(part).as_bytes())?;
            }
            tracing::info!(keyspace = %id, "dropped the storage of a dropped eventual keyspace");
            count += 1;
        }
        Ok(count)
    }

    /// Runs `decide` on `key`'s current state inside a transaction and commits what it returns:
    /// the state, its digest and tombstone entries and a change-log record (marked `local` or
    /// not) together. Errors from `decide` abort the transaction and are returned as they are.
    /// The write is not durable until a later [`Eventual::flush`] returns.
    pub fn update<T, E, F>(&self, space: &Space, key: &[u8], local: bool, decide: F) -> Result<Updated<T>, E>
    where
        E: From<Error>,
        F: Fn(Option<&[u8]>) -> Result<(Write, T), E>,
    {
        let item = Item { space, key, local };
        let mut results = self.update_batch(&[item], |_, old| decide(old))?;
        match results.pop() {
            Some(result) => result,
            None => Err(E::from(Error::Io("a one-item update returned nothing".into()))),
        }
    }

    /// [`Eventual::update`] for many keys (of any keyspaces) in one transaction: `decide` gets
    /// each item's index and current state (a key that occurs twice sees the first write). An
    /// item whose `decide` fails writes nothing and gets the error in its place; the others
    /// commit. Only a storage failure fails the whole batch.
    pub fn update_batch<T, E, F>(&self, items: &[Item<'_>], decide: F) -> Result<Vec<Result<Updated<T>, E>>, Error>
    where
        F: Fn(usize, Option<&[u8]>) -> Result<(Write, T), E>,
    {
        self.commit(items, decide, false)
    }

    /// [`Eventual::update_batch`] where the items commit all together or not at all: the first
    /// `decide` that fails aborts the transaction, and its error is returned (as `Ok(Err(e))`).
    pub fn update_all<T, E, F>(&self, items: &[Item<'_>], decide: F) -> Result<Result<Vec<Updated<T>>, E>, Error>
    where
        F: Fn(usize, Option<&[u8]>) -> Result<(Write, T), E>,
    {
        Ok(self.commit(items, decide, true)?.into_iter().collect())
    }

    fn commit<T, E, F>(&self, items: &[Item<'_>], decide: F, atomic: bool) -> Result<Vec<Result<Updated<T>, E>>, Error>
    where
        F: Fn(usize, Option<&[u8]>) -> Result<(Write, T), E>,
    {
        let mut last = lock(&self.inner.commit)?;
        // Trees: the change log, the meta tree, then data, digests and tombs of each keyspace.
        let mut trees = vec![self.inner.changes.clone(), self.inner.meta.clone()];
        let mut spaces: Vec<&Space> = Vec::new();
        let mut base = Vec::with_capacity(items.len());
        for item in items {
            let index = match spaces.iter().position(|s| std::ptr::eq(*s, item.space)) {
                Some(index) => index,
                None => {
                    spaces.push(item.space);
                    trees.extend([item.space.data.clone(), item.space.digests.clone(), item.space.tombs.clone()]);
                    spaces.len() - 1
                }
            };
            base.push(2 + 3 * index);
        }
        let dkeys: Vec<Vec<u8>> = items.iter().map(|item| digest_key(item.key)).collect();
        // Atomic commits: the error that aborted the transaction.
        let refused = std::cell::RefCell::new(None);
        let outcomes = trees
            .transaction(|t| {
                refused.replace(None); // a retried attempt starts over
                let (changes, meta) = (&t[0], &t[1]);
                let mut seq = *last;
                let mut outcomes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let (data, digests, tombs) = (&t[base[i]], &t[base[i] + 1], &t[base[i] + 2]);
                    let old = data.get(item.key)?;
                    let (put, value) = match decide(i, old.as_deref()) {
                        Err(e) if atomic => {
                            refused.replace(Some(e));
                            return Err(ConflictableTransactionError::Abort(Error::Io(REFUSED.into())));
                        }
                        Err(e) => {
                            outcomes.push(Err(e));
                            continue;
                        }
                        Ok((Write::Keep, value)) => {
                            outcomes.push(Ok((value, None)));
                            continue;
                        }
                        Ok((Write::Put(put), value)) => (put, value),
                    };
                    seq += 1;
                    let record = RecordRef {
                        space: &item.space.id,
                        key: item.key,
                        state: &put.state,
                        local: item.local,
                        seen: &put.seen,
                    };
                    let record = encode(&record).map_err(ConflictableTransactionError::Abort)?;
                    let old_digest = digests.insert(dkeys[i].as_slice(), &put.digest[..])?;
                    let was_tomb = match &put.collectable {
                        Some(ts) => tombs.insert(item.key, ts.as_slice())?,
                        None => tombs.remove(item.key)?,
                    }
                    .is_some();
                    if let Some(mark) = &put.mark {
                        if meta.get(MARK)?.is_none_or(|current| current.as_ref() < mark.as_slice()) {
                            meta.insert(MARK, mark.as_slice())?;
                        }
                    }
                    changes.insert(&encode_u64(seq), record)?;
                    data.insert(item.key, put.state.as_slice())?;
                    let changed = Changed {
                        existed: old.is_some(),
                        old_digest,
                        new_digest: put.digest,
                        was_tomb,
                        is_tomb: put.collectable.is_some(),
                    };
                    outcomes.push(Ok((value, Some((seq, changed)))));
                }
                Ok(outcomes)
            })
            .map_err(tx_error::<Error>);
        if let Some(e) = refused.into_inner() {
            return Ok(vec![Err(e)]);
        }
        let outcomes = outcomes?;
        let mut results = Vec::with_capacity(outcomes.len());
        for (item, outcome) in items.iter().zip(outcomes) {
            results.push(match outcome {
                Err(e) => Err(e),
                Ok((value, None)) => Ok(Updated { value, seq: None }),
                Ok((value, Some((seq, changed)))) => {
                    *last = seq;
                    item.space.note(item.key, &changed)?;
                    Ok(Updated { value, seq: Some(seq) })
                }
            });
        }
        self.inner.committed.send_replace(*last);
        Ok(results)
    }

    /// Removes every tombstone of `space` whose timestamp bytes are at or below `watermark`,
    /// with its state and digest. Returns how many were removed.
    pub fn collect(&self, space: &Space, watermark: &[u8]) -> Result<usize, Error> {
        {
            let mut collected = lock(&space.collected)?;
            if watermark > collected.as_slice() {
                // Recorded before anything under it goes.
                self.inner.meta.insert(space.id.collected_key(), watermark)?;
                *collected = watermark.to_vec();
            }
        }
        let mut candidates = Vec::new();
        for item in space.tombs.iter() {
            let (key, ts) = item?;
            if ts.as_ref() <= watermark {
                candidates.push((key, ts));
            }
        }
        let mut removed = 0;
        for (key, ts) in candidates {
            let _last = lock(&self.inner.commit)?;
            let dkey = digest_key(&key);
            let trees = [space.data.clone(), space.digests.clone(), space.tombs.clone()];
            let old_digest = trees
                .transaction(|t| {
                    // Only if the key still holds the same deleted state.
                    if t[2].get(&key)?.as_ref() != Some(&ts) {
                        return Ok(None);
                    }
                    t[0].remove(&key)?;
                    t[2].remove(&key)?;
                    Ok(t[1].remove(dkey.as_slice())?)
                })
                .map_err(tx_error::<Error>)?;
            if let Some(old) = old_digest {
                let grown = lock(&space.merkle)?.update(&key, Some(&old), None);
                space.usage.add(Part::Digests, grown as u64);
                space.keys.fetch_sub(1, Ordering::SeqCst);
                space.tombstones.fetch_sub(1, Ordering::SeqCst);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Waits until everything committed before the call is durable (group commit).
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.flusher.flush().await
    }

    /// The last committed change-log sequence.
    pub fn committed(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// Follows the durable change-log sequence: every record up to it survives a crash.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// The greatest mark folded in by any committed write (see [`Put::mark`]).
    pub fn mark(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.meta.get(MARK)?.map(|v| v.to_vec()))
    }

    /// Reads a bookkeeping value stored by the layer above.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Stores a bookkeeping value (durable with the next flush).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.inner.meta.insert(key, value)?;
        Ok(())
    }

    /// Bookkeeping values whose keys start with `prefix`.
    pub fn meta_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, Error> {
        let mut out = Vec::new();
        for item in self.inner.meta.scan_prefix(prefix) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// A bookkeeping key and its value.
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// The hash of an empty keyspace.
pub const EMPTY_ROOT: Hash = [0; HASH_LEN];

#[cfg(test)]
mod tests;
