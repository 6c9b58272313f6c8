//! Replication of eventual keyspaces inside a region: the engine that keeps a node's
//! [`Replica`] in step with its peers.
//!
//! Every node of the region holds a replica of every eventual keyspace and talks to every other
//! member through a [`Transport`] it is given (over gRPC in `ledged`: `api/src/sync/`; over the
//! simulated network in the simulation). The peers are the members of the region's Raft group,
//! as a [`Membership`] reports them, looked at every half second and whenever it says they
//! changed: the catalog and the membership are Raft's, the data is not, so a partitioned node
//! keeps taking eventual writes while knowing whom to sync with once it can.
//!
//! - **Push** (`push.rs`): each write is sent to every peer as soon as it is durable; a peer's
//!   acknowledgement is its push cursor.
//! - **Write levels**: `one` returns once the write is durable here; `quorum` and `all` then wait
//!   until that many members (this one included) hold it ([`Replication::wait_acks`]). When the
//!   deadline passes first, the reply is `Unavailable` saying how many nodes store it: the write
//!   is kept and keeps spreading.
//! - **Anti-entropy** ([`crate::sync`]): every `--anti-entropy-ms` (and at once when a peer
//!   answers again after failures, or a push stream fell behind the change log) this node runs a
//!   session with each peer in turn (a replica is in one session at a time; a busy peer is
//!   skipped until the next round). Sessions repair whatever pushes missed and exchange the
//!   watermarks that let tombstones be collected, which happens after each round.
//! - **Quorum reads** ([`Replication::read_quorum`]): fetch the key from the peers, merge a
//!   majority's states (this node's included), and write the merged state back to the replicas
//!   that were behind.
//! - **Housekeeping**: the change log is trimmed up to the slowest peer's cursor, and never keeps
//!   more than `--sync-log-keep` records: a peer further behind catches up by anti-entropy. It
//!   always keeps the last `--log-keep` records (10,000 by default), the history that watches
//!   on eventual keyspaces resume from.

mod push;

use std::collections::btree_map::{BTreeMap, Entry as Slot};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::sync::{anti_entropy, Remote, Request, Response, Shipped};
use crate::{Entry, Error, Replica, SpaceId, Timestamp};
use push::Link;

/// A sync link's far end, as the engine needs it: a [`Remote`] that knows its address and can
/// be called with another deadline.
pub trait Peer: Remote + Clone + 'static {
    /// The peer's address.
    fn address(&self) -> &str;

    /// The same peer, each call bounded by `timeout`.
    fn with_timeout(&self, timeout: Duration) -> Self;
}

/// How a node reaches its peers.
pub trait Transport: Send + Sync + 'static {
    /// A link to one peer.
    type Peer: Peer;

    /// A link from node `from` to node `peer` at `address`, each call bounded by `timeout`.
    fn connect(&self, from: u64, peer: u64, address: &str, timeout: Duration) -> Result<Self::Peer, Error>;
}

/// Who the region's members are.
pub trait Membership: Send + 'static {
    /// This node's id and the members (id and address, this node included); no members while
    /// the region is not initialized.
    fn members(&self) -> (u64, Vec<(u64, String)>);

    /// Completes when the members may have changed; `false` once they never will again.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
}

/// How often the membership, the links and the change log are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// How many region members must hold an eventual write before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteLevel {
    /// This node, durably.
    One,
    /// A majority of the members.
    Quorum,
    /// Every member.
    All,
}

impl WriteLevel {
    fn needed(self, members: usize) -> usize {
        match self {
            WriteLevel::One => 1,
            WriteLevel::Quorum => members / 2 + 1,
            WriteLevel::All => members,
        }
    }

    /// The level's name, as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            WriteLevel::One => "one",
            WriteLevel::Quorum => "quorum",
            WriteLevel::All => "all",
        }
    }
}

/// Replication settings.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Pause between anti-entropy rounds.
    pub anti_entropy_interval: Duration,
    /// Deadline of one sync call to a peer.
    pub call_timeout: Duration,
    /// Most change-log records kept for peers that have not acknowledged them.
    pub log_keep: u64,
    /// Fewest change-log records kept whatever the peers acknowledged: the history that
    /// watches resume from exactly (`--log-keep`, as for strong keyspaces' watch history).
    pub watch_keep: u64,
}

/// A merged read from a majority of replicas.
#[derive(Debug, Clone)]
pub struct QuorumRead {
    /// The merged entry, if any replica holds the key.
    pub entry: Option<Entry>,
    /// How many replicas' states were merged.
    pub replicas: u32,
}

/// A merged scan page from a majority of replicas.
#[derive(Debug, Clone)]
pub struct QuorumScan {
    /// Present keys in order, each with its merged entry.
    pub rows: Vec<(Vec<u8>, Entry)>,
    /// When an answer was cut short: the last key every answer covered; a next page starts
    /// after it.
    pub complete_to: Option<Vec<u8>>,
    /// How many replicas' answers were merged.
    pub replicas: u32,
}

/// A write level not met within the deadline: the write is kept (durable here, and on
/// `stored` members in all) and keeps spreading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The level asked for.
    pub level: WriteLevel,
    /// Members it needs.
    pub needed: usize,
    /// Members of the region.
    pub members: usize,
    /// Members known to hold the write, this one included.
    pub stored: usize,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Shortfall { level, needed, members, stored } = *self;
        write!(
            f,
            "write level {} needs {needed} of {members} nodes, but within the deadline the write was stored on \
             {stored} of {members} nodes; it is kept, and the write will still spread",
            level.name()
        )
    }
}

/// One sync link, for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer's node id.
    pub node_id: u64,
    /// Its address.
    pub address: String,
    /// Change-log records the peer has not acknowledged.
    pub unsynced_entries: u64,
    /// Age in milliseconds of this node's oldest write the peer has not acknowledged (0: none).
    pub oldest_unsynced_ms: u64,
    /// Whether the last call to the peer succeeded.
    pub reachable: bool,
    /// Anti-entropy sessions completed with the peer.
    pub sessions: u64,
    /// Anti-entropy bytes sent to it.
    pub bytes_sent: u64,
    /// Anti-entropy bytes received from it.
    pub bytes_received: u64,
    /// The stable watermark it last reported.
    pub stable: Option<Timestamp>,
    /// States pushed to it.
    pub pushed_entries: u64,
    /// Bytes of the states pushed to it (keys and states).
    pub pushed_bytes: u64,
}

/// States to send a peer that a quorum read found behind.
type Repairs<P> = (Arc<Link<P>>, Vec<Shipped>);

/// A replica that answered a quorum read, with the digest of what it held.
type Answered<P> = (Arc<Link<P>>, Option<crate::Digest>);

/// The replication machinery of one node. Cheap to clone.
pub struct Replication<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Replication<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<T: Transport> {
    replica: Replica,
    transport: T,
    options: SyncOptions,
    /// Peer id → link. Held only for short, non-async sections.
    links: Mutex<BTreeMap<u64, Arc<Link<T::Peer>>>>,
    /// Wakes anti-entropy early.
    kick: Arc<Notify>,
}

impl<T: Transport> Replication<T> {
    /// Starts replicating `replica` with the other members `membership` names, through
    /// `transport`, until `stopping` turns true.
    pub fn start<M: Membership>(
        replica: Replica,
        transport: T,
        membership: M,
        options: SyncOptions,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let replication = Self {
            inner: Arc::new(Inner {
                replica,
                transport,
                options,
                links: Mutex::default(),
                kick: Arc::new(Notify::new()),
            }),
        };
        replication.sync_links(membership.members());
        tokio::spawn(replication.clone().housekeeping(membership, stopping.clone()));
        tokio::spawn(replication.clone().anti_entropy_rounds(stopping));
        replication
    }

    /// The local replica.
    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    fn lock_links(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Link<T::Peer>>>> {
        // Each update of the map is one insert or removal, so a panic elsewhere cannot leave it
        // half-changed.
        self.inner.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn links(&self) -> Vec<Arc<Link<T::Peer>>> {
        self.lock_links().values().cloned().collect()
    }

    /// The links to the region's other members, and how many members the region has (this node
    /// included): a member without an open link counts, and holds nothing this node sent.
    fn member_links(&self) -> (Vec<Arc<Link<T::Peer>>>, usize) {
        let me = self.inner.replica.node();
        let peers: Vec<u64> = self.inner.replica.members().into_iter().filter(|id| *id != me).collect();
        let links = self.lock_links();
        (peers.iter().filter_map(|id| links.get(id).cloned()).collect(), peers.len() + 1)
    }

    /// Opens links to new members and closes those to departed ones (or moved: a member whose
    /// address changed gets a new link).
    fn sync_links(&self, (me, members): (u64, Vec<(u64, String)>)) {
        if members.is_empty() {
            return; // not part of an initialized region yet: nobody to sync with
        }
        self.inner.replica.set_members(members.iter().map(|(id, _)| *id).collect());
        let mut links = self.lock_links();
        links.retain(|id, link| {
            let keep = members.iter().any(|(m, address)| m == id && address == link.remote.address());
            if !keep {
                link.stop();
            }
            keep
        });
        for (id, address) in &members {
            if *id == me || links.contains_key(id) {
                continue;
            }
            match self.inner.transport.connect(me, *id, address, self.inner.options.call_timeout) {
                Ok(remote) => {
                    tracing::info!(peer = id, %address, "opening a sync link");
                    links.insert(*id, Link::start(&self.inner.replica, remote, self.inner.kick.clone()));
                }
                Err(e) => tracing::warn!(peer = id, %address, "cannot dial a region peer: {e}"),
            }
        }
    }

    /// Trims the change log up to what every peer acknowledged, keeping at most `log_keep` and
    /// at least `watch_keep` records.
    fn trim(&self) {
        if self.inner.replica.members().is_empty() {
            return;
        }
        let store = self.inner.replica.store();
        let committed = store.committed();
        let slowest = self.links().iter().map(|link| link.cursor()).min().unwrap_or(committed);
        let options = &self.inner.options;
        let upto =
            slowest.max(committed.saturating_sub(options.log_keep)).min(committed.saturating_sub(options.watch_keep));
        if let Err(e) = store.trim_changes(upto) {
            tracing::warn!("trimming the eventual change log: {e}");
        }
    }

    async fn housekeeping<M: Membership>(self, mut membership: M, mut stopping: watch::Receiver<bool>) {
        // Membership changes open and close links at once; the rest runs on a timer.
        let mut watching = true;
        let mut next_tick = Instant::now();
        let mut ticks = 0u64;
        loop {
            let changed = async {
                match watching {
                    true => membership.changed().await,
                    false => std::future::pending().await,
                }
            };
            let (tick, changed) = tokio::select! {
                _ = tokio::time::sleep_until(next_tick) => (true, false),
                alive = changed => {
                    watching = alive; // once it never changes again, the timer alone goes on
                    (false, alive)
                }
                _ = stopping.changed() => (false, false),
            };
            if *stopping.borrow() {
                for link in self.links() {
                    link.stop();
                }
                return;
            }
            if tick {
                next_tick = Instant::now() + HOUSEKEEPING;
                ticks += 1;
                self.sync_links(membership.members());
                self.trim();
                if ticks.is_multiple_of(20) {
                    self.retain_spaces();
                }
            } else if changed {
                self.sync_links(membership.members());
            }
        }
    }

    /// Drops the storage of eventual keyspaces that were dropped from the catalog.
    fn retain_spaces(&self) {
        if let Err(e) = self.inner.replica.retain_spaces() {
            tracing::warn!("removing dropped eventual keyspaces: {e}");
        }
    }

    async fn anti_entropy_rounds(self, mut stopping: watch::Receiver<bool>) {
        let mut turn = 0usize;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.options.anti_entropy_interval) => {}
                _ = self.inner.kick.notified() => {}
                _ = stopping.changed() => {}
            }
            if *stopping.borrow() {
                return;
            }
            // A replica takes part in one session at a time, so peers go one after another,
            // starting with a different one each round.
            let links = self.links();
            for k in 0..links.len() {
                self.session(&links[(turn + k) % links.len()]).await;
            }
            turn = turn.wrapping_add(1);
            let replica = &self.inner.replica;
            match replica.spaces().and_then(|spaces| replica.collect(&spaces)) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(collected = n, "collected tombstones"),
                Err(e) => tracing::warn!("collecting tombstones: {e}"),
            }
        }
    }

    /// One anti-entropy session with the peer behind `link`.
    async fn session(&self, link: &Link<T::Peer>) {
        let peer = link.remote.peer();
        match anti_entropy(&self.inner.replica, &link.remote).await {
            Ok(report) if report.busy => {}
            Ok(report) => {
                link.sessions.fetch_add(1, Ordering::Relaxed);
                link.bytes_sent.fetch_add(report.bytes_sent, Ordering::Relaxed);
                link.bytes_received.fetch_add(report.bytes_received, Ordering::Relaxed);
                link.reached(true, &self.inner.kick);
                if report.pulled + report.pushed > 0 {
                    tracing::info!(
                        peer,
                        pulled = report.pulled,
                        pushed = report.pushed,
                        leaves = report.leaves,
                        bytes_sent = report.bytes_sent,
                        bytes_received = report.bytes_received,
                        elapsed_ms = report.elapsed_ms,
                        "anti-entropy repaired differences"
                    );
                }
            }
            Err(e) => {
                link.reached(false, &self.inner.kick);
                tracing::debug!(peer, "anti-entropy: {e}");
            }
        }
    }

    /// Waits until the write at change-log sequence `seq` is held by as many members as `level`
    /// asks for (this node holds it already), or `deadline` passes.
    ///
    /// The members are the region's, as the membership says (learners included), not the links
    /// that happen to be open; a peer holds the write once its push stream sent it and the peer
    /// stored it durably ([`push::Held`]): a record the stream passed without the peer storing it
    /// never counts.
    pub async fn wait_acks(&self, seq: u64, level: WriteLevel, deadline: Instant) -> Result<(), Shortfall> {
        self.wait_acks_all(&[seq], level, deadline).await
    }

    /// [`Replication::wait_acks`] for the writes at every sequence in `seqs` (a batch): a peer
    /// counts once it holds all of them.
    pub async fn wait_acks_all(&self, seqs: &[u64], level: WriteLevel, deadline: Instant) -> Result<(), Shortfall> {
        let seq = seqs.iter().copied().max().unwrap_or(0);
        let (links, members) = self.member_links();
        let needed = level.needed(members);
        let mut stored = 1;
        let mut acks: FuturesUnordered<_> = links
            .iter()
            .map(|link| {
                let mut acked = link.acked.subscribe();
                async move {
                    let held = acked.wait_for(|held| held.cursor() >= seq).await;
                    held.map(|held| seqs.iter().all(|s| held.holds(*s))).unwrap_or(false)
                }
            })
            .collect();
        while stored < needed {
            match tokio::time::timeout_at(deadline, acks.next()).await {
                Ok(Some(true)) => stored += 1,
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if stored >= needed {
            return Ok(());
        }
        Err(Shortfall { level, needed, members, stored })
    }

    /// Reads `key` from a majority of the members, merges their states, and writes the merged
    /// state back to every replica that answered with less.
    pub async fn read_quorum(&self, space: &SpaceId, key: &[u8], deadline: Instant) -> Result<QuorumRead, Error> {
        let replica = &self.inner.replica;
        let (links, members) = self.member_links();
        let needed = members / 2 + 1;
        let local = replica.get(space, key)?;
        let mut merged = local.clone();
        let mut answered = Vec::new();
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut fetches: FuturesUnordered<_> = links
            .into_iter()
            .map(|link| {
                let request = Request::Fetch { space: space.clone(), keys: vec![key.to_vec()] };
                async move {
                    let reply = link.remote.with_timeout(timeout).call(request).await;
                    (link, reply)
                }
            })
            .collect();
        let mut replicas = 1;
        while replicas < needed {
            let (link, reply) = match tokio::time::timeout_at(deadline, fetches.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => break,
            };
            let Ok(Response::States(states)) = reply else { continue };
            let state = states.into_iter().next().and_then(|(_, state)| state);
            let theirs = match state.as_deref().map(Entry::from_bytes) {
                Some(Ok(entry)) => Some(entry),
                Some(Err(_)) => continue,
                None => None,
            };
            if let Some(theirs) = &theirs {
                match &mut merged {
                    Some(ours) => ours.merge(theirs),
                    None => merged = Some(theirs.clone()),
                }
            }
            answered.push((link, theirs.map(|e| e.digest())));
            replicas += 1;
        }
        if replicas < needed {
            return Err(Error::Unavailable(format!(
                "quorum read reached {replicas} of {members} replicas within the deadline; {needed} are needed"
            )));
        }
        if let Some(merged) = &merged {
            self.repair(space, key, merged, local.as_ref().map(Entry::digest), answered)?;
        }
        Ok(QuorumRead { entry: merged, replicas: u32::try_from(replicas).unwrap_or(u32::MAX) })
    }

    /// Scans a key range on a majority of the members (this one included) and merges their
    /// states key by key: at most `limit` stored states per replica, so a page may hold fewer
    /// present keys than that. Returns the present keys in order and, when a replica's answer
    /// was cut short, the last key known complete on every answer (a next page starts after
    /// it), with how many replicas were merged.
    pub async fn scan_quorum(
        &self,
        space: &SpaceId,
        start: std::ops::Bound<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: usize,
        deadline: Instant,
    ) -> Result<QuorumScan, Error> {
        let replica = &self.inner.replica;
        let (links, members) = self.member_links();
        let needed = members / 2 + 1;
        let limit = limit.min(crate::SCAN_WALK);
        let (states, more) =
            replica.range_states(space, start.clone(), end.clone(), limit, crate::sync::MAX_BATCH_BYTES)?;
        // Each answer: who gave it (`None`: this node), the states, whether it was cut short.
        let mut answers = vec![(None, states, more)];
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut scans: FuturesUnordered<_> = links
            .into_iter()
            .map(|link| {
                let request = Request::Range {
                    space: space.clone(),
                    start: start.clone(),
                    end: end.clone(),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                };
                async move {
                    let reply = link.remote.with_timeout(timeout).call(request).await;
                    (link, reply)
                }
            })
            .collect();
        while answers.len() < needed {
            match tokio::time::timeout_at(deadline, scans.next()).await {
                Ok(Some((link, Ok(Response::Range { states, more })))) => answers.push((Some(link), states, more)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if answers.len() < needed {
            return Err(Error::Unavailable(format!(
                "quorum scan reached {} of {members} replicas within the deadline; {needed} are needed",
                answers.len()
            )));
        }
        // Keys up to the least last key of the answers that were cut short are complete in all.
        let complete_to = answers
            .iter()
            .filter(|(_, _, more)| *more)
            .filter_map(|(_, states, _)| states.last())
            .map(|(k, _)| k.clone())
            .min();
        let covered = |key: &Vec<u8>| complete_to.as_ref().is_none_or(|last| key <= last);
        // Each answer's digests of the covered keys, and the merge of all of them.
        let mut digests = Vec::with_capacity(answers.len());
        let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        for (_, states, _) in &answers {
            let mut theirs_by_key = BTreeMap::new();
            for (key, state) in states.iter().take_while(|(key, _)| covered(key)) {
                let Ok(theirs) = Entry::from_bytes(state) else { continue };
                theirs_by_key.insert(key.clone(), theirs.digest());
                match merged.get_mut(key) {
                    Some(ours) => ours.merge(&theirs),
                    None => {
                        merged.insert(key.clone(), theirs);
                    }
                }
            }
            digests.push(theirs_by_key);
        }
        // Read repair: every answering replica gets the merged state of each key it held
        // less of (deleted states included, so deletes spread too).
        // A key's merged state is encoded once, and only when some replica is behind on it.
        let merged_digests: Vec<(&Vec<u8>, crate::Digest)> = merged.iter().map(|(k, e)| (k, e.digest())).collect();
        let mut encoded: BTreeMap<&Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut local = Vec::new();
        let mut peers = Vec::new();
        for ((link, _, _), theirs) in answers.iter().zip(&digests) {
            let mut behind = Vec::new();
            for (key, _) in merged_digests.iter().filter(|(key, digest)| theirs.get(*key) != Some(digest)) {
                let state = match encoded.entry(key) {
                    Slot::Occupied(state) => state.get().clone(),
                    Slot::Vacant(slot) => slot.insert(merged[*key].to_bytes()?).clone(),
                };
                behind.push(Shipped { space: space.clone(), key: key.to_vec(), state });
            }
            match link {
                None => local = behind,
                Some(link) => peers.push((link.clone(), behind)),
            }
        }
        self.send_repairs(local, peers)?;
        let rows = merged.into_iter().filter(|(_, entry)| !entry.is_deleted()).collect();
        Ok(QuorumScan { rows, complete_to, replicas: u32::try_from(answers.len()).unwrap_or(u32::MAX) })
    }

    /// Writes a quorum read's merged state to the replicas that were behind (peers in the
    /// background: a failure there is repaired by anti-entropy).
    fn repair(
        &self,
        space: &SpaceId,
        key: &[u8],
        merged: &Entry,
        local: Option<crate::Digest>,
        answered: Vec<Answered<T::Peer>>,
    ) -> Result<(), Error> {
        let digest = merged.digest();
        let shipped = Shipped { space: space.clone(), key: key.to_vec(), state: merged.to_bytes()? };
        let behind = |theirs: Option<crate::Digest>| (theirs != Some(digest)).then(|| vec![shipped.clone()]);
        let peers = answered.into_iter().filter_map(|(link, theirs)| Some((link, behind(theirs)?))).collect();
        self.send_repairs(behind(local).unwrap_or_default(), peers)
    }

    /// Merges `local` here (flushed in the background) and sends each peer its states (in the
    /// background too: a failure there is repaired by anti-entropy).
    fn send_repairs(&self, local: Vec<Shipped>, peers: Vec<Repairs<T::Peer>>) -> Result<(), Error> {
        if !local.is_empty() {
            for result in self.inner.replica.merge_many(&local)? {
                result?;
            }
            // Durable soon rather than at the next write's group commit (watchers see a change
            // once it is durable).
            let replica = self.inner.replica.clone();
            tokio::spawn(async move {
                if let Err(e) = replica.flush().await {
                    tracing::warn!("flushing a read repair: {e}");
                }
            });
        }
        for (link, entries) in peers.into_iter().filter(|(_, entries)| !entries.is_empty()) {
            let request = Request::Merge { entries };
            tokio::spawn(async move {
                if let Err(e) = link.remote.call(request).await {
                    tracing::debug!(peer = link.remote.peer(), "read repair: {e}");
                }
            });
        }
        Ok(())
    }

    /// The links to this node's peers, for the status page.
    pub fn link_status(&self) -> Vec<LinkStatus> {
        let replica = &self.inner.replica;
        let store = replica.store();
        let committed = store.committed();
        let peer_stable = replica.peer_stable().unwrap_or_default();
        let now_ms = replica.hlc().now_ms();
        self.links()
            .iter()
            .map(|link| {
                let cursor = link.cursor();
                // The oldest write of this node's that the peer has not acknowledged.
                let oldest = store.changes(cursor, committed, 256, 1 << 20).ok().and_then(|records| {
                    records
                        .into_iter()
                        .find(|(_, record)| record.local)
                        .and_then(|(_, record)| Entry::from_bytes(&record.state).ok())
                        .map(|entry| now_ms.saturating_sub(entry.timestamp().physical_ms))
                });
                let peer = link.remote.peer();
                LinkStatus {
                    node_id: peer,
                    address: link.remote.address().to_string(),
                    unsynced_entries: committed.saturating_sub(cursor),
                    oldest_unsynced_ms: oldest.unwrap_or(0),
                    reachable: link.reachable.load(Ordering::SeqCst),
                    sessions: link.sessions.load(Ordering::Relaxed),
                    bytes_sent: link.bytes_sent.load(Ordering::Relaxed),
                    bytes_received: link.bytes_received.load(Ordering::Relaxed),
                    stable: peer_stable.get(&peer).copied(),
                    pushed_entries: link.pushed_entries.load(Ordering::Relaxed),
                    pushed_bytes: link.pushed_bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
