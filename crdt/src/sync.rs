//! Replica-to-replica sync: the messages, the answering side ([`Replica::serve`]) and the
//! anti-entropy session ([`anti_entropy`]). The transport is the caller's: anything that
//! implements [`Remote`] (gRPC between nodes; a direct call in tests).
//!
//! # Push
//!
//! Each write is pushed to every reachable peer as a [`Request::Merge`] carrying its whole new
//! state; the peer merges and replies once the states are durable. States are idempotent to merge,
//! so a batch that is resent after a lost reply does no harm.
//!
//! # An anti-entropy session, step by step
//!
//! The initiator `A` reconciles with a peer `B`. A replica takes part in one session at a time,
//! as either side (a claim with a lease on its clock, renewed by every request of the session):
//! a replica that missed many writes is then repaired by one peer, not sent the same differences
//! by every peer at once.
//!
//! 1. `Summary`: `A` sends its keyspaces' root hashes, its stable watermark and its floors; `B`
//!    records `A`'s stable watermark and answers with the same about itself, or `Busy` when it is
//!    in a session with someone else (`A` tries again next round).
//! 2. For each keyspace both know whose roots differ: `Mids` (256 hashes), then `Leaves` for the
//!    differing middle buckets (256 hashes each), then `Keys` (key and digest) for the differing
//!    leaves, a chunk at a time.
//! 3. For the keys whose digests differ, `A` fetches `B`'s states (`Fetch`) and merges them, then
//!    sends back (`Merge`) its own state of every key where it now differs from `B` or `B` lacks
//!    the key, and flushes. Only differing entries travel.
//! 4. `Finish` ends the session. If both sides listed the same keyspaces, the session is
//!    complete: `A` holds everything `B` held at step 1 and the other way round, so `Finish`
//!    carries `A`'s floors from step 1 for `B` to adopt, and `A` adopts `B`'s. These floors are
//!    what lets tombstones be collected (see `marks.rs`).
//!
//! Traffic for `d` differing keys is the summary, 4 KiB of middle hashes, 4 KiB per differing
//! middle bucket, the key lists of the differing leaves, and the `d` entries.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Instant;

use ledge_store::eventual::merkle::Hash;
use ledge_store::SpaceId;
use serde::{Deserialize, Serialize};

use crate::replica::Merged;
use crate::{Error, Replica, Timestamp};

/// Most middle buckets asked for in one `Leaves` request.
const MIDS_PER_REQUEST: usize = 16;
/// Most leaf buckets asked for in one `Keys` request.
const LEAVES_PER_REQUEST: usize = 256;
/// Most keys asked for in one `Fetch` request.
const KEYS_PER_FETCH: usize = 512;
/// About how many bytes of states one reply or `Merge` request carries.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A replica's view at the start of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The sender's eventual keyspaces and their root hashes.
    pub spaces: Vec<(SpaceId, Hash)>,
    /// Every write in the region up to this has been merged at the sender.
    pub stable: Timestamp,
    /// The sender's floors (see `marks.rs`).
    pub floors: BTreeMap<u64, Timestamp>,
}

/// A key's state on its way to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    /// The keyspace.
    pub space: SpaceId,
    /// The key.
    pub key: Vec<u8>,
    /// The encoded [`crate::Entry`].
    pub state: Vec<u8>,
}

/// What one replica asks another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a session: the sender's summary; answered with the receiver's.
    Summary(Summary),
    /// The 256 middle-bucket hashes of a keyspace.
    Mids {
        /// The keyspace.
        space: SpaceId,
    },
    /// The 256 leaf hashes under each of these middle buckets, in order.
    Leaves {
        /// The keyspace.
        space: SpaceId,
        /// Middle buckets.
        mids: Vec<u8>,
    },
    /// The keys and digests of these leaf buckets.
    Keys {
        /// The keyspace.
        space: SpaceId,
        /// Leaf buckets.
        leaves: Vec<u16>,
    },
    /// The states of these keys; the reply may cover only a prefix of them (size-bounded).
    Fetch {
        /// The keyspace.
        space: SpaceId,
        /// Keys.
        keys: Vec<Vec<u8>>,
    },
    /// The stored states (deleted ones included) of a key range, in key order: at most `limit`
    /// and about [`MAX_BATCH_BYTES`] of them (a quorum scan's page).
    Range {
        /// The keyspace.
        space: SpaceId,
        /// Where the range starts.
        start: std::ops::Bound<Vec<u8>>,
        /// Where it ends (exclusive; `None`: no bound).
        end: Option<Vec<u8>>,
        /// Most states.
        limit: u32,
    },
    /// Merge these states, then reply once they are durable.
    Merge {
        /// States to merge.
        entries: Vec<Shipped>,
    },
    /// Ends the sender's session; for a complete one, carries its floors at the start to adopt.
    Finish {
        /// The initiator's floors at the start of a complete session.
        floors: Option<BTreeMap<u64, Timestamp>>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to `Summary`.
    Summary(Summary),
    /// The answer to `Summary` from a replica in a session with another peer.
    Busy {
        /// That peer.
        with: u64,
    },
    /// The answer to `Mids` and `Leaves`.
    Hashes(Vec<Hash>),
    /// The answer to `Keys` (size-bounded): key and digest of the first `covered` leaves asked
    /// for, leaf by leaf, each leaf in key order; the sender asks again for the rest.
    Keys {
        /// Keys and digests.
        keys: Vec<(Vec<u8>, Hash)>,
        /// How many of the requested leaves they cover (at least one).
        covered: u32,
    },
    /// The answer to `Fetch`: a prefix of the requested keys with their states (`None`: absent).
    States(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    /// The answer to `Range`: the first states of the range; `more` when it was cut short,
    /// so that only keys up to the last one here are known complete.
    Range {
        /// Keys and states, in key order.
        states: Vec<(Vec<u8>, Vec<u8>)>,
        /// Whether the range holds more after them.
        more: bool,
    },
    /// The answer to `Merge`, once what was stored is durable: how many states were merged and
    /// which were not (their keyspace was dropped here, they did not decode, or they were late
    /// copies of states collected here).
    Merged {
        /// States merged.
        stored: usize,
        /// States not merged.
        skipped: usize,
        /// Indices (in the request) of the states not merged, so the sender knows this replica
        /// does not hold them.
        refused: Vec<u32>,
    },
    /// The answer to `Finish`.
    Finished,
}

/// The other end of a sync link.
pub trait Remote: Send + Sync {
    /// The peer's node id.
    fn peer(&self) -> u64;

    /// Sends one request and waits for its answer (within a deadline the implementation sets).
    /// The peer learns this node's id with it.
    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send;
}

/// What an anti-entropy session did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Bytes of requests sent (encoded payloads).
    pub bytes_sent: u64,
    /// Bytes of answers received.
    pub bytes_received: u64,
    /// States fetched from the peer that changed the local replica.
    pub pulled: u64,
    /// States sent to the peer.
    pub pushed: u64,
    /// Leaf buckets that differed.
    pub leaves: u64,
    /// Whether both sides now hold everything the other held at the start (floors exchanged).
    pub complete: bool,
    /// Whether the session did not run because either side was in another one.
    pub busy: bool,
    /// How long the session took, in milliseconds.
    pub elapsed_ms: u64,
}

fn size<T: Serialize>(value: &T) -> u64 {
    bincode::serialized_size(value).unwrap_or(0)
}

/// Refuses a request that asks for more than a session ever does (its answer could be huge).
fn limit(what: &str, asked: usize, most: usize) -> Result<(), Error> {
    if asked > most {
        return Err(Error::InvalidInput(format!("asked for {asked} {what} in one request, more than {most}")));
    }
    Ok(())
}

fn unexpected(what: &str) -> Error {
    Error::InvalidData(format!("unexpected answer to {what}"))
}

impl Replica {
    /// This replica's summary for a session.
    pub fn summary(&self) -> Result<Summary, Error> {
        let floors = self.floors()?;
        let mut spaces = Vec::new();
        for id in self.spaces()? {
            let root = self.space(&id)?.root()?;
            spaces.push((id, root));
        }
        Ok(Summary { spaces, stable: self.stable()?, floors })
    }

    /// Answers a request from peer `from` out of the local replica.
    pub async fn serve(&self, from: u64, request: Request) -> Result<Response, Error> {
        self.renew_session(from)?;
        match request {
            Request::Summary(theirs) => {
                if !self.claim_session(from, false)? {
                    let with = self.session_peer().unwrap_or_default();
                    return Ok(Response::Busy { with });
                }
                self.record_peer_stable(from, theirs.stable)?;
                Ok(Response::Summary(self.summary()?))
            }
            Request::Mids { space } => Ok(Response::Hashes(self.known(&space)?.mids()?)),
            Request::Leaves { space, mids } => {
                limit("middle buckets", mids.len(), 256)?;
                let space = self.known(&space)?;
                let mut out = Vec::with_capacity(mids.len() * 256);
                for mid in mids {
                    out.extend(space.leaves(mid)?);
                }
                Ok(Response::Hashes(out))
            }
            Request::Keys { space, leaves } => {
                limit("leaf buckets", leaves.len(), 4 * LEAVES_PER_REQUEST)?;
                let space = self.known(&space)?;
                let (mut keys, mut bytes, mut covered) = (Vec::new(), 0, 0u32);
                for leaf in leaves {
                    if bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                    let more = space.keys(leaf)?;
                    bytes += more.iter().map(|(key, _)| key.len() + 16).sum::<usize>();
                    keys.extend(more);
                    covered += 1;
                }
                Ok(Response::Keys { keys, covered })
            }
            Request::Range { space, start, end, limit } => {
                let limit = limit.min(crate::replica::SCAN_WALK as u32) as usize;
                self.known(&space)?;
                let (states, more) = self.range_states(&space, start, end, limit, MAX_BATCH_BYTES)?;
                Ok(Response::Range { states, more })
            }
            Request::Fetch { space, keys } => {
                limit("keys", keys.len(), 4 * KEYS_PER_FETCH)?;
                let space = self.known(&space)?;
                let (mut out, mut bytes) = (Vec::new(), 0);
                for key in keys {
                    if bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                    let state = space.get(&key)?;
                    bytes += key.len() + state.as_ref().map_or(0, Vec::len);
                    out.push((key, state));
                }
                Ok(Response::States(out))
            }
            Request::Merge { entries } => {
                let mut verdicts: Vec<(SpaceId, bool)> = Vec::new();
                let mut accepted = Vec::with_capacity(entries.len());
                let mut positions = Vec::with_capacity(entries.len());
                let mut refused = Vec::new();
                for (index, shipped) in (0u32..).zip(entries) {
                    let verdict = match verdicts.iter().find(|(id, _)| *id == shipped.space) {
                        Some((_, verdict)) => *verdict,
                        None => {
                            let verdict = self.accepts(&shipped.space)?;
                            verdicts.push((shipped.space.clone(), verdict));
                            verdict
                        }
                    };
                    if verdict {
                        accepted.push(shipped);
                        positions.push(index);
                    } else {
                        refused.push(index);
                    }
                }
                let mut held = Vec::with_capacity(accepted.len());
                let results = self.merge_many(&accepted)?;
                for ((result, shipped), index) in results.into_iter().zip(&accepted).zip(positions) {
                    match result {
                        Ok(Merged::Ignored) => refused.push(index),
                        Ok(_) => held.push(shipped),
                        Err(e) => {
                            tracing::warn!(peer = from, space = %shipped.space, "dropped a state that does not decode: {e}");
                            refused.push(index);
                        }
                    }
                }
                self.flush().await?;
                let stored = held.len();
                self.durable(|| held.into_iter().cloned().collect());
                refused.sort_unstable();
                Ok(Response::Merged { stored, skipped: refused.len(), refused })
            }
            Request::Finish { floors } => {
                // Every state of the session was flushed when its `Merge` was answered.
                if let Some(floors) = floors.filter(|_| from != self.node()) {
                    self.raise_floors(&floors)?;
                }
                self.release_session(from, false);
                Ok(Response::Finished)
            }
        }
    }

    /// The storage of a keyspace a peer asks about, if it is live here.
    fn known(&self, space: &SpaceId) -> Result<std::sync::Arc<ledge_store::eventual::Space>, Error> {
        if self.accepts(space)? {
            self.space(space)
        } else {
            Err(Error::NotFound(format!("eventual keyspace {space} was dropped on this node")))
        }
    }
}

/// Counts the bytes of one call both ways.
async fn call<R: Remote>(remote: &R, request: Request, report: &mut Report) -> Result<Response, Error> {
    report.bytes_sent += size(&request);
    let response = remote.call(request).await?;
    report.bytes_received += size(&response);
    Ok(response)
}

/// Holds the local session slot for the length of a session.
struct Claim<'a> {
    local: &'a Replica,
    peer: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.local.release_session(self.peer, true);
    }
}

/// Runs one anti-entropy session from `local` with the peer behind `remote` (see the module
/// docs). An error leaves both replicas valid: whatever was merged stays merged. When either
/// side is in another session, nothing runs and the report says `busy`.
pub async fn anti_entropy<R: Remote>(local: &Replica, remote: &R) -> Result<Report, Error> {
    let started = Instant::now();
    let mut report = Report::default();
    let peer = remote.peer();
    if !local.claim_session(peer, true)? {
        report.busy = true;
        return Ok(report);
    }
    let _claim = Claim { local, peer };
    let ours = local.summary()?;
    let theirs = match call(remote, Request::Summary(ours.clone()), &mut report).await? {
        Response::Summary(summary) => summary,
        Response::Busy { .. } => {
            report.busy = true;
            return Ok(report);
        }
        _ => return Err(unexpected("Summary")),
    };
    local.record_peer_stable(peer, theirs.stable)?;
    let our_spaces: BTreeMap<&SpaceId, &Hash> = ours.spaces.iter().map(|(id, root)| (id, root)).collect();
    let their_spaces: BTreeMap<&SpaceId, &Hash> = theirs.spaces.iter().map(|(id, root)| (id, root)).collect();
    let same_spaces = our_spaces.keys().eq(their_spaces.keys());
    for (space, root) in &our_spaces {
        if their_spaces.get(space).is_some_and(|theirs| theirs != root) {
            reconcile(local, remote, space, &mut report).await?;
        }
    }
    let finish = Request::Finish { floors: same_spaces.then_some(ours.floors) };
    match call(remote, finish, &mut report).await? {
        Response::Finished => {}
        _ => return Err(unexpected("Finish")),
    }
    if same_spaces {
        local.flush().await?;
        local.raise_floors(&theirs.floors)?;
        report.complete = true;
    }
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

fn differing(ours: &[Hash], theirs: &[Hash]) -> Result<Vec<usize>, Error> {
    if ours.len() != theirs.len() {
        return Err(Error::InvalidData(format!("peer sent {} hashes, expected {}", theirs.len(), ours.len())));
    }
    Ok((0..ours.len()).filter(|&i| ours[i] != theirs[i]).collect())
}

async fn reconcile<R: Remote>(local: &Replica, remote: &R, id: &SpaceId, report: &mut Report) -> Result<(), Error> {
    let space = local.space(id)?;
    let theirs = match call(remote, Request::Mids { space: id.clone() }, report).await? {
        Response::Hashes(hashes) => hashes,
        _ => return Err(unexpected("Mids")),
    };
    let mids: Vec<u8> = differing(&space.mids()?, &theirs)?.into_iter().filter_map(|i| u8::try_from(i).ok()).collect();
    for chunk in mids.chunks(MIDS_PER_REQUEST) {
        let theirs = match call(remote, Request::Leaves { space: id.clone(), mids: chunk.to_vec() }, report).await? {
            Response::Hashes(hashes) => hashes,
            _ => return Err(unexpected("Leaves")),
        };
        let mut ours = Vec::with_capacity(chunk.len() * 256);
        for mid in chunk {
            ours.extend(space.leaves(*mid)?);
        }
        let leaves: Vec<u16> = differing(&ours, &theirs)?
            .into_iter()
            .filter_map(|i| u16::try_from((usize::from(chunk[i / 256]) << 8) | (i % 256)).ok())
            .collect();
        report.leaves += leaves.len() as u64;
        for mut leaves in leaves.chunks(LEAVES_PER_REQUEST) {
            while !leaves.is_empty() {
                let covered = reconcile_leaves(local, remote, id, leaves, report).await?;
                leaves = &leaves[covered..];
            }
        }
    }
    Ok(())
}

/// Reconciles the first leaves of `leaves` that the peer's size-bounded `Keys` answer covers;
/// returns how many that was.
async fn reconcile_leaves<R: Remote>(
    local: &Replica,
    remote: &R,
    id: &SpaceId,
    leaves: &[u16],
    report: &mut Report,
) -> Result<usize, Error> {
    let space = local.space(id)?;
    let (theirs, covered): (BTreeMap<Vec<u8>, Hash>, usize) =
        match call(remote, Request::Keys { space: id.clone(), leaves: leaves.to_vec() }, report).await? {
            Response::Keys { keys, covered } if covered > 0 && covered as usize <= leaves.len() => {
                (keys.into_iter().collect(), covered as usize)
            }
            Response::Keys { .. } => return Err(Error::InvalidData("peer answered Keys covering no leaf".into())),
            _ => return Err(unexpected("Keys")),
        };
    let leaves = &leaves[..covered];
    let mut ours = BTreeMap::new();
    for leaf in leaves {
        ours.extend(space.keys(*leaf)?);
    }
    // Pull every key whose digest differs from ours, then send back whatever still differs.
    let mut pull: Vec<Vec<u8>> =
        theirs.iter().filter(|(key, digest)| ours.get(*key) != Some(*digest)).map(|(key, _)| key.clone()).collect();
    let mut candidates: BTreeSet<Vec<u8>> = pull.iter().cloned().collect();
    candidates.extend(ours.iter().filter(|(key, digest)| theirs.get(*key) != Some(*digest)).map(|(k, _)| k.clone()));
    while !pull.is_empty() {
        let asked: Vec<Vec<u8>> = pull.iter().take(KEYS_PER_FETCH).cloned().collect();
        let states = match call(remote, Request::Fetch { space: id.clone(), keys: asked }, report).await? {
            Response::States(states) => states,
            _ => return Err(unexpected("Fetch")),
        };
        if states.is_empty() {
            return Err(Error::InvalidData("peer answered a fetch with no states".into()));
        }
        pull.drain(..states.len().min(pull.len()));
        let shipped: Vec<Shipped> = states
            .into_iter()
            .filter_map(|(key, state)| state.map(|state| Shipped { space: id.clone(), key, state }))
            .collect();
        for result in local.merge_many(&shipped)? {
            if result? == Merged::Changed {
                report.pulled += 1;
            }
        }
    }
    local.flush().await?;
    let mut batch = Vec::new();
    let mut bytes = 0;
    for key in candidates {
        let Some(state) = space.get(&key)? else { continue };
        if space.digest(&key)?.as_ref() == theirs.get(&key) {
            continue;
        }
        bytes += key.len() + state.len();
        batch.push(Shipped { space: id.clone(), key, state });
        if bytes >= MAX_BATCH_BYTES {
            send(remote, std::mem::take(&mut batch), report).await?;
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        send(remote, batch, report).await?;
    }
    Ok(covered)
}

async fn send<R: Remote>(remote: &R, entries: Vec<Shipped>, report: &mut Report) -> Result<(), Error> {
    let n = entries.len() as u64;
    match call(remote, Request::Merge { entries }, report).await? {
        Response::Merged { .. } => {
            report.pushed += n;
            Ok(())
        }
        _ => Err(unexpected("Merge")),
    }
}
