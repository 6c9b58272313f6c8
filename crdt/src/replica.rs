//! A node's replica of the region's eventual keyspaces: CRDT operations and merges over the
//! byte-level storage of `ledge-store`.
//!
//! The life of a local write ([`Replica::apply`]):
//!
//! 1. Under the pending lock, the HLC issues a timestamp and records it as in flight, so the own
//!    floor (see `marks.rs`) never claims a write that has not committed.
//! 2. In one store transaction the key's [`Entry`] is decoded, the operation applied (or the entry
//!    created by it), and the new state, its digest, tombstone index entry and change-log record
//!    written.
//! 3. The replica flushes (group commit) and only then returns: a write at level `one` is durable.
//!
//! A remote state ([`Replica::merge`]) first moves the HLC forward (a timestamp further ahead than
//! the drift bound is counted and not adopted, but its state is still merged: refusing it would
//! keep replicas apart for good), then is merged into the local entry in one transaction; an
//! unchanged entry writes nothing. A state for a key this node no longer holds, at or below the
//! collected watermark, is ignored (see `marks.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use ledge_store::eventual::{Item, Put, Space, Updated, Write};
use ledge_store::{Eventual, Mode, SpaceId, StateMachine};

use crate::marks::Marks;
use crate::sync::Shipped;
use crate::{Clock, Entry, Error, Hlc, Kind, Op, Timestamp};

/// The outcome of a local operation.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The timestamp the operation was issued at.
    pub ts: Timestamp,
    /// Its change-log sequence (what push acknowledgements are compared against).
    pub seq: u64,
    /// The key's entry after the operation.
    pub entry: Entry,
    /// Whether the key read as present before the operation.
    pub existed: bool,
}

/// The outcome of merging a remote state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// The local entry changed.
    Changed,
    /// The local entry already held everything the state did.
    Unchanged,
    /// The key was collected here and the state is older than the collection: dropped.
    Ignored,
}

/// Counters and watermarks for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Keys stored over all eventual keyspaces, tombstones included.
    pub keys: u64,
    /// Deleted states waiting to be collected.
    pub tombstones: u64,
    /// The greatest timestamp issued or observed.
    pub hlc: Timestamp,
    /// Every write in the region up to this has been merged here.
    pub stable: Timestamp,
    /// Tombstones up to this have been collected.
    pub collected: Timestamp,
    /// Remote timestamps refused for being too far ahead.
    pub drift_rejections: u64,
}

/// One node's replica of its region's eventual keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

struct Inner {
    node: u64,
    hlc: Hlc,
    store: Eventual,
    catalog: StateMachine,
    /// Timestamps issued to operations that have not committed yet.
    pending: Mutex<BTreeSet<Timestamp>>,
    /// Lock order: never held while taking `pending`.
    marks: Mutex<Marks>,
    members: RwLock<Vec<u64>>,
    /// The anti-entropy session this replica takes part in, if any.
    session: Mutex<Option<Session>>,
    /// Test-only fault: see [`Replica::set_unsafe_drop_first_merge`].
    drop_first_merge: AtomicBool,
    /// Largest encoded entry a local write may leave (see [`Replica::set_max_entry_bytes`]).
    max_entry_bytes: AtomicUsize,
    /// Told of states once they are durable here (see [`Replica::on_durable`]).
    listener: OnceLock<DurableListener>,
}

/// Told, with this node's id, of states that just became durable on it: a local operation's
/// new entry once flushed, and the states a peer pushed once merged and flushed (before the
/// peer is answered). The simulation's checkers learn from it what each node held when.
pub type DurableListener = Arc<dyn Fn(u64, &[Shipped]) + Send + Sync>;

/// An anti-entropy session a replica takes part in.
#[derive(Clone, Copy, Debug)]
struct Session {
    /// The other side.
    peer: u64,
    /// When (on the replica's clock, in ms) the peer was last heard from; the session lapses
    /// [`SESSION_LEASE_MS`] later, or at once if the clock is found to have stepped back.
    renewed: u64,
    /// Whether this replica started it.
    initiator: bool,
}

/// The default bound on a key's encoded entry after a local write: 4 MiB, the default request
/// limit.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 4 << 20;

/// A scan page: the keys that read as present, and the key a next page continues after when
/// the walk stopped early.
pub type ScanPage = (Vec<(Vec<u8>, Entry)>, Option<Vec<u8>>);

/// Stored states of a key range in key order, and whether the range holds more after them.
pub type RangePage = (Vec<(Vec<u8>, Vec<u8>)>, bool);

/// Most peers' states merged in one transaction.
pub const MERGE_CHUNK: usize = 64;

/// Most stored entries a scan page walks (tombstones included) before it ends the page early.
pub const SCAN_WALK: usize = 10_000;

/// How long a session stays claimed without a request from its peer.
const SESSION_LEASE_MS: u64 = 5_000;

impl Session {
    /// Whether the claim has lapsed at `now`: the lease ran out, or the wall clock went back
    /// past the last renewal (a lease measured on a clock that stepped back would hold the slot
    /// for as long as the step).
    fn lapsed(&self, now: u64) -> bool {
        now < self.renewed || now >= self.renewed.saturating_add(SESSION_LEASE_MS)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, Error> {
    mutex.lock().map_err(|_| Error::Storage("replica lock poisoned".into()))
}

/// Removes an operation's timestamp from the in-flight set when the operation is over.
struct InFlight<'a> {
    replica: &'a Replica,
    ts: Timestamp,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.replica.inner.pending.lock() {
            pending.remove(&self.ts);
        }
    }
}

/// The write of `entry` at stream position `seen` (see `stream.rs`): a local tick issued under
/// the commit lock, after the operation's own timestamp and after whatever the clock adopted
/// from a merged state. It is also what the write folds into the durable HLC high-water mark:
/// above every timestamp this node issued before, so a restart resumes above them, and never a
/// peer's timestamp refused for drift.
fn put(entry: &Entry, seen: Timestamp) -> Result<Write, Error> {
    put_within(entry, seen, usize::MAX)
}

/// [`put`], refusing an entry whose encoding is over `limit` bytes.
fn put_within(entry: &Entry, seen: Timestamp, limit: usize) -> Result<Write, Error> {
    let state = entry.to_bytes()?;
    if state.len() > limit {
        return Err(Error::TooLarge(format!(
            "the write would make the key's {} entry {} bytes, more than the limit of {limit} bytes \
             (--max-request-bytes); nothing was written{}",
            entry.kind(),
            state.len(),
            if entry.kind() == Kind::Set { ": remove members first" } else { "" }
        )));
    }
    Ok(Write::Put(Put {
        state,
        digest: entry.digest().0,
        collectable: entry.collectable().map(|ts| ts.to_bytes().to_vec()),
        mark: Some(seen.to_bytes().to_vec()),
        seen: seen.to_bytes().to_vec(),
    }))
}

/// A local operation on a key's stored state (`None`: the key is new), as a store write.
fn apply_op(
    old: Option<&[u8]>,
    op: &Op,
    ts: Timestamp,
    hlc: &Hlc,
    limit: usize,
) -> Result<(Write, (Entry, bool)), Error> {
    let (entry, existed) = match old {
        Some(bytes) => {
            let mut entry = Entry::from_bytes(bytes)?;
            let existed = !entry.is_deleted();
            entry.apply(op.clone(), ts)?;
            (entry, existed)
        }
        None => (Entry::from_op(op.clone(), ts), false),
    };
    Ok((put_within(&entry, hlc.tick(), limit)?, (entry, existed)))
}

/// A key's entry as a shipped state (for the durable listener); `None` if it cannot be encoded.
fn shipped(space: &SpaceId, key: &[u8], entry: &Entry) -> Option<Shipped> {
    Some(Shipped { space: space.clone(), key: key.to_vec(), state: entry.to_bytes().ok()? })
}

/// What a committed local operation did.
fn applied(ts: Timestamp, updated: Updated<(Entry, bool)>) -> Result<Applied, Error> {
    let (entry, existed) = updated.value;
    let seq = updated.seq.ok_or_else(|| Error::Storage("a write produced no change-log record".into()))?;
    Ok(Applied { ts, seq, entry, existed })
}

impl Replica {
    /// Opens the replica of node `node` over `store`, with `catalog` naming the keyspaces. The
    /// HLC reads `clock`, refuses remote timestamps more than `max_drift` ahead, and resumes
    /// above every timestamp this node persisted, so it never reissues one after a restart.
    pub fn open(
        store: Eventual,
        catalog: StateMachine,
        node: u64,
        clock: Arc<dyn Clock>,
        max_drift: Duration,
    ) -> Result<Self, Error> {
        let hlc = Hlc::new(node, clock, max_drift);
        let marks = Marks::load(&store)?;
        if let Some(mark) = store.mark()? {
            hlc.restore(Timestamp::from_bytes(&mark)?);
        }
        hlc.restore(marks.own());
        let resumed = hlc.latest();
        if resumed.physical_ms > hlc.now_ms().saturating_add(u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX)) {
            tracing::warn!(node, %resumed, now_ms = hlc.now_ms(), "the wall clock is far behind the timestamps this node issued before; the clock stays ahead of it until wall time catches up");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                hlc,
                store,
                catalog,
                pending: Mutex::default(),
                marks: Mutex::new(marks),
                members: RwLock::default(),
                session: Mutex::default(),
                drop_first_merge: AtomicBool::new(false),
                max_entry_bytes: AtomicUsize::new(DEFAULT_MAX_ENTRY_BYTES),
                listener: OnceLock::new(),
            }),
        })
    }

    /// Tells `listener` of every state once it is durable here ([`DurableListener`]). Set
    /// once, when the node starts; a second listener is ignored.
    pub fn on_durable(&self, listener: DurableListener) {
        if self.inner.listener.set(listener).is_err() {
            tracing::warn!(node = self.inner.node, "a durable listener was already set; the new one is ignored");
        }
    }

    /// Tells the listener, if any, that the states `states` yields are durable here.
    pub(crate) fn durable(&self, states: impl FnOnce() -> Vec<Shipped>) {
        if let Some(listener) = self.inner.listener.get() {
            listener(self.inner.node, &states());
        }
    }

    /// Bounds the encoded size of a key's entry after a local write ([`DEFAULT_MAX_ENTRY_BYTES`]
    /// until set): a write that would pass it is refused with [`Error::TooLarge`] and writes
    /// nothing. Every state is pushed whole, so this also bounds what one push carries. Merges of
    /// peers' states are never refused: that would keep replicas apart.
    pub fn set_max_entry_bytes(&self, limit: usize) {
        self.inner.max_entry_bytes.store(limit, Ordering::Relaxed);
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// The node's hybrid logical clock.
    pub fn hlc(&self) -> &Hlc {
        &self.inner.hlc
    }

    /// The underlying storage.
    pub fn store(&self) -> &Eventual {
        &self.inner.store
    }

    /// Sets the region's members (node ids, this one included), as the membership says.
    pub fn set_members(&self, mut members: Vec<u64>) {
        members.sort_unstable();
        members.dedup();
        if let Ok(mut current) = self.inner.members.write() {
            *current = members;
        }
    }

    /// The region's members as last set.
    pub fn members(&self) -> Vec<u64> {
        self.inner.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The eventual keyspaces of the catalog.
    pub fn spaces(&self) -> Result<Vec<SpaceId>, Error> {
        let defs = self.inner.catalog.keyspaces()?;
        Ok(defs.iter().filter(|def| def.mode == Mode::Eventual).map(SpaceId::from).collect())
    }

    /// Drops the storage of eventual keyspaces that the catalog dropped; returns how many. A
    /// keyspace the catalog does not name yet (its creation not applied here, as after a restart
    /// before the log tail is replayed) keeps its storage.
    pub fn retain_spaces(&self) -> Result<usize, Error> {
        let dropped = |id: &SpaceId| match self.accepts(id) {
            Ok(live) => Ok(!live),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(ledge_store::Error::Io(e.to_string())),
        };
        Ok(self.inner.store.retain_spaces(dropped)?)
    }

    /// Whether this node can take states of `space` from a peer: `Ok(true)` when it is a live
    /// keyspace here, `Ok(false)` when it was dropped here (the states are obsolete), and
    /// `NotFound` when its creation has not been applied here yet (try again later).
    pub fn accepts(&self, space: &SpaceId) -> Result<bool, Error> {
        match self.inner.catalog.keyspace(&space.name)? {
            Some(def) if def.mode == Mode::Eventual && def.created_revision == space.created_revision => Ok(true),
            _ if self.inner.catalog.applied_revision() >= space.created_revision => Ok(false),
            _ => Err(Error::NotFound(format!("eventual keyspace {space} has not been created on this node yet"))),
        }
    }

    /// Claims this replica's anti-entropy slot for a session with `peer`, as its initiator or
    /// its responder: false while another session is under way. One session at a time keeps a
    /// lagging replica from being sent the same differences by several peers at once. When two
    /// replicas start sessions with each other at the same moment, the one started by the lower
    /// node id goes on and the other is refused.
    pub(crate) fn claim_session(&self, peer: u64, initiator: bool) -> Result<bool, Error> {
        let now = self.inner.hlc.now_ms();
        let mut slot = lock(&self.inner.session)?;
        let free = match *slot {
            None => true,
            Some(s) if s.lapsed(now) => true,
            Some(s) if s.peer != peer => false,
            Some(s) if s.initiator == initiator => true,
            // Both sides started a session with each other: the lower id's wins.
            Some(_) => !initiator && peer < self.inner.node,
        };
        if free {
            *slot = Some(Session { peer, renewed: now, initiator });
        }
        Ok(free)
    }

    /// The peer this replica is in a session with, if any.
    pub(crate) fn session_peer(&self) -> Option<u64> {
        self.inner.session.lock().ok().and_then(|s| s.map(|s| s.peer))
    }

    /// Extends the session with `peer`, if there is one.
    pub(crate) fn renew_session(&self, peer: u64) -> Result<(), Error> {
        let now = self.inner.hlc.now_ms();
        if let Some(session) = lock(&self.inner.session)?.as_mut() {
            if session.peer == peer {
                session.renewed = now;
            }
        }
        Ok(())
    }

    /// Ends the session with `peer` in that role, if it is the one under way.
    pub(crate) fn release_session(&self, peer: u64, initiator: bool) {
        if let Ok(mut slot) = self.inner.session.lock() {
            if slot.is_some_and(|s| s.peer == peer && s.initiator == initiator) {
                *slot = None;
            }
        }
    }

    pub(crate) fn space(&self, space: &SpaceId) -> Result<Arc<Space>, Error> {
        Ok(self.inner.store.space(space)?)
    }

    fn begin(&self) -> Result<InFlight<'_>, Error> {
        let mut pending = lock(&self.inner.pending)?;
        let ts = self.inner.hlc.tick();
        pending.insert(ts);
        Ok(InFlight { replica: self, ts })
    }

    /// Every operation this node originated with a timestamp at or below the result has
    /// committed. Own timestamps carry this node's (non-zero) id, so `(physical, logical, 0)`
    /// sits just below the oldest one in flight.
    fn own_floor(&self) -> Result<Timestamp, Error> {
        let pending = lock(&self.inner.pending)?;
        Ok(match pending.first() {
            Some(oldest) => Timestamp::new(oldest.physical_ms, oldest.logical, 0),
            None => self.inner.hlc.latest(),
        })
    }

    /// Applies a local operation to `key` and waits until it is durable. An operation of
    /// another type than the key's is [`Error::TypeMismatch`]; nothing is written then.
    pub async fn apply(&self, space: &SpaceId, key: &[u8], op: Op) -> Result<Applied, Error> {
        let space = self.space(space)?;
        let in_flight = self.begin()?;
        let ts = in_flight.ts;
        let limit = self.inner.max_entry_bytes.load(Ordering::Relaxed);
        let updated =
            self.inner.store.update(&space, key, true, |old| apply_op(old, &op, ts, &self.inner.hlc, limit))?;
        drop(in_flight);
        self.flush().await?;
        let applied = applied(ts, updated)?;
        self.durable(|| shipped(space.id(), key, &applied.entry).into_iter().collect());
        Ok(applied)
    }

    /// Applies local operations to keys of `space` atomically — all commit, or none does: the
    /// first that fails (a type mismatch, an entry past the size limit) refuses the whole batch
    /// with its error, naming its index — and waits until they are durable. Each operation gets
    /// its own timestamp, in order; a key named twice sees the earlier operation.
    pub async fn apply_all(&self, space: &SpaceId, ops: &[(Vec<u8>, Op)]) -> Result<Vec<Applied>, Error> {
        let space = self.space(space)?;
        let in_flight = ops.iter().map(|_| self.begin()).collect::<Result<Vec<_>, _>>()?;
        let limit = self.inner.max_entry_bytes.load(Ordering::Relaxed);
        let items: Vec<Item<'_>> = ops.iter().map(|(key, _)| Item { space: &space, key, local: true }).collect();
        let updated = self.inner.store.update_all(&items, |i, old| {
            apply_op(old, &ops[i].1, in_flight[i].ts, &self.inner.hlc, limit).map_err(|e| (i, e))
        })?;
        let updated = updated.map_err(|(i, e)| e.in_operation(i))?;
        let stamps: Vec<Timestamp> = in_flight.iter().map(|f| f.ts).collect();
        drop(in_flight);
        self.flush().await?;
        let applied: Vec<Applied> =
            stamps.into_iter().zip(updated).map(|(ts, updated)| applied(ts, updated)).collect::<Result<_, _>>()?;
        self.durable(|| {
            ops.iter().zip(&applied).filter_map(|((key, _), a)| shipped(space.id(), key, &a.entry)).collect()
        });
        Ok(applied)
    }

    /// Merges a peer's encoded entry of `key` (not yet durable: call [`Replica::flush`]).
    pub fn merge(&self, space: &SpaceId, key: &[u8], state: &[u8]) -> Result<Merged, Error> {
        let shipped = Shipped { space: space.clone(), key: key.to_vec(), state: state.to_vec() };
        match self.merge_many(std::slice::from_ref(&shipped))?.pop() {
            Some(result) => result,
            None => Err(Error::Storage("a one-state merge returned nothing".into())),
        }
    }

    /// Test-only fault: when on, every merge of peers' states (pushes and anti-entropy alike)
    /// silently drops its first state while reporting it merged. The simulation harness turns it
    /// on to prove that its convergence checker catches a replica that loses repairs.
    pub fn set_unsafe_drop_first_merge(&self, on: bool) {
        self.inner.drop_first_merge.store(on, Ordering::SeqCst);
    }

    /// Merges peers' states (not yet durable: call [`Replica::flush`]), [`MERGE_CHUNK`] states
    /// per transaction, so local writes get the commit lock between chunks. A state that cannot
    /// be decoded gets its error in its place; the others are merged.
    pub fn merge_many(&self, shipped: &[Shipped]) -> Result<Vec<Result<Merged, Error>>, Error> {
        let mut results = Vec::with_capacity(shipped.len());
        let mut rest = shipped;
        if let Some((_, after)) = shipped.split_first().filter(|_| self.inner.drop_first_merge.load(Ordering::SeqCst)) {
            results.push(Ok(Merged::Unchanged));
            rest = after;
        }
        for chunk in rest.chunks(MERGE_CHUNK) {
            results.extend(self.merge_all(chunk)?);
        }
        Ok(results)
    }

    fn merge_all(&self, shipped: &[Shipped]) -> Result<Vec<Result<Merged, Error>>, Error> {
        let decoded: Vec<Result<Entry, Error>> = shipped
            .iter()
            .map(|s| {
                let entry = Entry::from_bytes(&s.state)?;
                // A refused timestamp is logged and counted by the HLC; the state is merged anyway.
                let _ = self.inner.hlc.observe(entry.timestamp());
                Ok(entry)
            })
            .collect();
        let mut spaces: Vec<(&SpaceId, Arc<Space>)> = Vec::new();
        for s in shipped {
            if !spaces.iter().any(|(id, _)| *id == &s.space) {
                spaces.push((&s.space, self.space(&s.space)?));
            }
        }
        let mut items = Vec::with_capacity(shipped.len());
        for s in shipped {
            let space = spaces.iter().find(|(id, _)| *id == &s.space).map(|(_, space)| space.as_ref());
            let space = space.ok_or_else(|| Error::Storage("keyspace vanished during a merge".into()))?;
            items.push(Item { space, key: &s.key, local: false });
        }
        let collected = spaces.iter().map(|(_, space)| space.collected()).collect::<Result<Vec<_>, _>>()?;
        let hlc = &self.inner.hlc;
        let results = self.inner.store.update_batch(&items, |i, old| {
            let remote = decoded[i].as_ref().map_err(Clone::clone)?;
            let space = spaces.iter().position(|(id, _)| *id == &shipped[i].space);
            let collected = space.map_or(&[][..], |s| collected[s].as_slice());
            match old {
                None if remote.timestamp().to_bytes().as_slice() <= collected => Ok((Write::Keep, Merged::Ignored)),
                None => Ok((put(remote, hlc.tick())?, Merged::Changed)),
                Some(bytes) => {
                    let mut local = Entry::from_bytes(bytes)?;
                    let before = local.digest();
                    local.merge(remote);
                    if local.digest() == before {
                        Ok((Write::Keep, Merged::Unchanged))
                    } else {
                        Ok((put(&local, hlc.tick())?, Merged::Changed))
                    }
                }
            }
        })?;
        Ok(results.into_iter().map(|r| r.map(|updated| updated.value)).collect())
    }

    /// Makes every earlier write and merge durable (group commit), and with them the own floor.
    pub async fn flush(&self) -> Result<(), Error> {
        let floor = self.own_floor()?;
        lock(&self.inner.marks)?.write_own(&self.inner.store, floor)?;
        self.inner.store.flush().await?;
        lock(&self.inner.marks)?.flushed_own(floor);
        Ok(())
    }

    /// A key's entry, deleted ones included; `None` when the key is not stored.
    pub fn get(&self, space: &SpaceId, key: &[u8]) -> Result<Option<Entry>, Error> {
        match self.space(space)?.get(key)? {
            Some(bytes) => Ok(Some(Entry::from_bytes(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A key's stored bytes, as sent to peers.
    pub fn get_bytes(&self, space: &SpaceId, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.space(space)?.get(key)?)
    }

    /// Up to `limit` keys that read as present, in key order, from `start` up to `end`
    /// (exclusive; `None`: no bound).
    pub fn scan(
        &self,
        space: &SpaceId,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Entry)>, Error> {
        Ok(self.scan_page(space, start, end, limit, usize::MAX)?.0)
    }

    /// [`Replica::scan`] that walks at most `walk` stored entries (deleted ones included):
    /// when it stops for that reason, the second result is the last key walked, after which a
    /// next page continues (a range full of tombstones costs a bounded walk per page).
    pub fn scan_page(
        &self,
        space: &SpaceId,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
        walk: usize,
    ) -> Result<ScanPage, Error> {
        let mut out = Vec::new();
        let mut walked = 0;
        for item in self.space(space)?.range(start, end) {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            walked += 1;
            let entry = Entry::from_bytes(&bytes)?;
            if !entry.is_deleted() {
                out.push((key, entry));
            } else if walked >= walk {
                return Ok((out, Some(key)));
            }
        }
        Ok((out, None))
    }

    /// The stored states (deleted ones included) of a key range, in key order: at most `limit`,
    /// stopping once they hold `max_bytes`; `true` when the range holds more after them.
    pub fn range_states(
        &self,
        space: &SpaceId,
        start: Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<RangePage, Error> {
        let (mut out, mut bytes) = (Vec::new(), 0);
        for item in self.space(space)?.range(start, end) {
            if out.len() >= limit || bytes >= max_bytes {
                return Ok((out, true));
            }
            let (key, state) = item?;
            bytes += key.len() + state.len();
            out.push((key, state));
        }
        Ok((out, false))
    }

    /// Every write in the region up to the result has been merged here.
    pub fn stable(&self) -> Result<Timestamp, Error> {
        Ok(lock(&self.inner.marks)?.stable(self.inner.node, &self.members()))
    }

    /// This node's floors (durable), as a peer may adopt them after a complete session.
    pub fn floors(&self) -> Result<BTreeMap<u64, Timestamp>, Error> {
        Ok(lock(&self.inner.marks)?.floors(self.inner.node))
    }

    /// Adopts a peer's floors; call only once what they promise is merged and flushed here.
    pub fn raise_floors(&self, floors: &BTreeMap<u64, Timestamp>) -> Result<(), Error> {
        lock(&self.inner.marks)?.raise_floors(&self.inner.store, self.inner.node, floors)
    }

    /// Records the stable watermark a peer reported.
    pub fn record_peer_stable(&self, peer: u64, stable: Timestamp) -> Result<(), Error> {
        if peer == self.inner.node {
            return Ok(());
        }
        lock(&self.inner.marks)?.record_peer_stable(&self.inner.store, peer, stable)
    }

    /// The stable watermarks peers last reported.
    pub fn peer_stable(&self) -> Result<BTreeMap<u64, Timestamp>, Error> {
        Ok(lock(&self.inner.marks)?.peer_stable().clone())
    }

    /// Collects every tombstone that every member has merged (see `marks.rs`) from `spaces`.
    /// Returns how many were removed.
    pub fn collect(&self, spaces: &[SpaceId]) -> Result<usize, Error> {
        let watermark = {
            let mut marks = lock(&self.inner.marks)?;
            let Some(watermark) = marks.collection_watermark(self.inner.node, &self.members()) else {
                return Ok(0);
            };
            marks.raise_collected(&self.inner.store, watermark)?;
            watermark
        };
        let mut removed = 0;
        for id in spaces {
            let space = self.space(id)?;
            if space.tombstones() > 0 {
                removed += self.inner.store.collect(&space, &watermark.to_bytes())?;
            }
        }
        if removed > 0 {
            tracing::debug!(removed, %watermark, "collected tombstones");
        }
        Ok(removed)
    }

    /// Counters and watermarks over `spaces`.
    pub fn status(&self, spaces: &[SpaceId]) -> Result<ReplicaStatus, Error> {
        let mut status = ReplicaStatus {
            hlc: self.inner.hlc.latest(),
            stable: self.stable()?,
            collected: lock(&self.inner.marks)?.collected(),
            drift_rejections: self.inner.hlc.drift_rejections(),
            ..ReplicaStatus::default()
        };
        for id in spaces {
            let space = self.space(id)?;
            status.keys += space.len();
            status.tombstones += space.tombstones();
        }
        Ok(status)
    }
}

#[cfg(test)]
pub(crate) mod tests;
