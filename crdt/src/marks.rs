//! Sync watermarks: how far this node knows it has merged the region's writes, what its peers
//! say of themselves, and how far tombstones were collected.
//!
//! - A **floor** per origin node `O`: every write `O` originated with a timestamp at or below it
//!   has been merged here. The own floor comes from the HLC (every timestamp below the oldest
//!   operation still in flight has committed) and is taken at a flush, so it covers only durable
//!   writes. A peer's floors are adopted at the end of a complete anti-entropy session with it:
//!   this node then holds everything the peer held when the session started, so it also has
//!   everything the peer's floors at that moment promised.
//! - The **stable** watermark is the least floor over the region's members: this node has merged
//!   every write in the region up to it. Peers exchange it at the start of each session.
//! - The **collection** watermark `W` is the least stable watermark over all members, as last
//!   reported: every replica has merged every write up to `W`, so a deleted state at or below it
//!   can no longer be contradicted and is collected. Afterwards an incoming state at or below the
//!   collected watermark for a key this node no longer holds can only be a late copy of something
//!   already merged and deleted, and is ignored; that is what keeps deleted keys deleted.
//!
//! Every watermark only grows. All are persisted in the store's meta tree, floors only after the
//! data they promise was flushed, the collected watermark before any state is collected.

use std::collections::BTreeMap;

use ledge_store::Eventual;

use crate::{Error, Timestamp};

const FLOOR: &[u8] = b"floor/";
const STABLE: &[u8] = b"stable/";
const OWN: &[u8] = b"own_floor";
const COLLECTED: &[u8] = b"collected";

/// The watermarks of one replica. Guarded by the replica's marks lock.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Origin node → floor, durable.
    floors: BTreeMap<u64, Timestamp>,
    /// This node's own floor, flushed.
    own: Timestamp,
    /// The own floor written to the meta tree (flushed or not).
    own_written: Timestamp,
    /// Peer → the stable watermark it last reported.
    peer_stable: BTreeMap<u64, Timestamp>,
    /// Tombstones at or below this have been collected here.
    collected: Timestamp,
}

fn key(prefix: &[u8], node: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&node.to_be_bytes());
    key
}

fn node_of(prefix: &[u8], key: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = key[prefix.len()..].try_into().map_err(|_| Error::InvalidData("bad watermark key".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn load_map(store: &Eventual, prefix: &[u8]) -> Result<BTreeMap<u64, Timestamp>, Error> {
    let mut out = BTreeMap::new();
    for (k, v) in store.meta_prefix(prefix)? {
        out.insert(node_of(prefix, &k)?, Timestamp::from_bytes(&v)?);
    }
    Ok(out)
}

fn load_one(store: &Eventual, key: &[u8]) -> Result<Timestamp, Error> {
    store.meta(key)?.map_or(Ok(Timestamp::default()), |bytes| Timestamp::from_bytes(&bytes))
}

impl Marks {
    /// Reads the persisted watermarks.
    pub(crate) fn load(store: &Eventual) -> Result<Self, Error> {
        let own = load_one(store, OWN)?;
        Ok(Self {
            floors: load_map(store, FLOOR)?,
            own,
            own_written: own,
            peer_stable: load_map(store, STABLE)?,
            collected: load_one(store, COLLECTED)?,
        })
    }

    /// The own floor as persisted: a restarted node must issue timestamps above it.
    pub(crate) fn own(&self) -> Timestamp {
        self.own
    }

    /// Writes `floor` as the own floor ahead of a flush (never lowering what is written).
    pub(crate) fn write_own(&mut self, store: &Eventual, floor: Timestamp) -> Result<(), Error> {
        if floor > self.own_written {
            store.put_meta(OWN, &floor.to_bytes())?;
            self.own_written = floor;
        }
        Ok(())
    }

    /// Records that a flush made `floor` durable.
    pub(crate) fn flushed_own(&mut self, floor: Timestamp) {
        self.own = self.own.max(floor);
    }

    /// This node's floors, its own included, as a peer may adopt them.
    pub(crate) fn floors(&self, node: u64) -> BTreeMap<u64, Timestamp> {
        let mut floors = self.floors.clone();
        floors.insert(node, self.own);
        floors
    }

    /// Adopts a peer's floors (never lowering one; this node's own floor is not taken from
    /// anyone). The data they promise must already be durable here.
    pub(crate) fn raise_floors(
        &mut self,
        store: &Eventual,
        node: u64,
        floors: &BTreeMap<u64, Timestamp>,
    ) -> Result<(), Error> {
        for (&origin, &floor) in floors.iter().filter(|(origin, _)| **origin != node) {
            let current = self.floors.entry(origin).or_default();
            if floor > *current {
                *current = floor;
                store.put_meta(&key(FLOOR, origin), &floor.to_bytes())?;
            }
        }
        Ok(())
    }

    /// Every write in the region up to the returned timestamp has been merged here; zero when
    /// the membership is unknown (`members` must include `node`).
    pub(crate) fn stable(&self, node: u64, members: &[u64]) -> Timestamp {
        if !members.contains(&node) {
            return Timestamp::default();
        }
        members
            .iter()
            .map(|m| if *m == node { self.own } else { self.floors.get(m).copied().unwrap_or_default() })
            .min()
            .unwrap_or_default()
    }

    /// Records the stable watermark a peer reported.
    pub(crate) fn record_peer_stable(&mut self, store: &Eventual, peer: u64, stable: Timestamp) -> Result<(), Error> {
        let current = self.peer_stable.entry(peer).or_default();
        if stable > *current {
            *current = stable;
            store.put_meta(&key(STABLE, peer), &stable.to_bytes())?;
        }
        Ok(())
    }

    /// The watermark up to which tombstones may be collected: the least stable watermark of
    /// all members, this one included. `None` while any member has not reported one.
    pub(crate) fn collection_watermark(&self, node: u64, members: &[u64]) -> Option<Timestamp> {
        if !members.contains(&node) {
            return None;
        }
        let mut watermark = self.stable(node, members);
        for peer in members.iter().filter(|m| **m != node) {
            watermark = watermark.min(*self.peer_stable.get(peer)?);
        }
        (watermark > Timestamp::default()).then_some(watermark)
    }

    /// Raises the collected watermark (persisted before anything is collected).
    pub(crate) fn raise_collected(&mut self, store: &Eventual, watermark: Timestamp) -> Result<(), Error> {
        if watermark > self.collected {
            store.put_meta(COLLECTED, &watermark.to_bytes())?;
            self.collected = watermark;
        }
        Ok(())
    }

    /// Tombstones at or below this have been collected.
    pub(crate) fn collected(&self) -> Timestamp {
        self.collected
    }

    /// The stable watermarks peers last reported.
    pub(crate) fn peer_stable(&self) -> &BTreeMap<u64, Timestamp> {
        &self.peer_stable
    }
}
