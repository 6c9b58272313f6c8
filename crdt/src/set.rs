//! Observed-remove set of byte strings (add wins over a concurrent remove).

use std::collections::BTreeMap;

use crdts::orswot::{self, Orswot};
use crdts::{CmRDT, CvRDT, Dot};
use serde::{Deserialize, Serialize, Serializer};

use crate::value::Canonical;
use crate::Timestamp;

/// An add-wins observed-remove set of byte strings, on `crdts::Orswot` (node id as actor).
///
/// Every add is tagged with a unique dot `(node, counter)`; a remove deletes the dots its node
/// has observed for that element, so an add concurrent with the remove (a dot the remover had
/// not seen) survives. Orswot keeps no per-element tombstone: the set's version vector (one
/// counter per node that ever wrote it) tells a merge which missing dots were removed rather
/// than not yet seen.
///
/// Dot counters come from the add's HLC timestamp (`physical_ms · 2^20 + logical`, or one past
/// the node's previous dot if that is larger) instead of counting 1, 2, 3…. Merge only needs a
/// node's counters to increase, which they still do; in exchange a set that was emptied,
/// collected and written again never reuses a dot that a lagging replica's version vector
/// already covers, which would silently drop the new add there. (`crdts`' op-delivery check,
/// `validate_op`, expects gapless counters; states are merged here, never ops, so it is not
/// used.)
///
/// Orswot keeps its members in hash maps, so it is serialized through a canonical form (sorted
/// maps) and rebuilt on decode: equal sets encode to equal bytes, whatever their history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "State")]
pub struct Set {
    members: Orswot<Vec<u8>, u64>,
    /// The latest timestamp of any add or remove merged in.
    updated: Timestamp,
}

/// Bits of the logical counter kept in a dot counter (a million events per millisecond).
const LOGICAL_BITS: u32 = 20;

impl Set {
    /// An empty set no node has touched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `member` on behalf of node `ts.node` at `ts`.
    pub fn add(&mut self, member: Vec<u8>, ts: Timestamp) {
        let from_time = ts
            .physical_ms
            .saturating_mul(1 << LOGICAL_BITS)
            .saturating_add(u64::from(ts.logical.min((1 << LOGICAL_BITS) - 1)));
        let next = self.members.clock().get(&ts.node).saturating_add(1);
        let dot = Dot::new(ts.node, next.max(from_time));
        self.members.apply(orswot::Op::Add { dot, members: vec![member] });
        self.updated = self.updated.max(ts);
    }

    /// Removes `member` as observed here: every add of it this replica has seen is undone, an
    /// add this replica has not seen yet survives. Removing an absent member changes nothing but
    /// the set's timestamp.
    pub fn remove(&mut self, member: &[u8], ts: Timestamp) {
        let member = member.to_vec();
        let ctx = self.members.contains(&member).derive_rm_ctx();
        let op = self.members.rm(member, ctx);
        self.members.apply(op);
        self.updated = self.updated.max(ts);
    }

    /// Merges another replica's set.
    pub fn merge(&mut self, other: &Set) {
        self.members.merge(other.members.clone());
        self.updated = self.updated.max(other.updated);
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.members.contains(&member.to_vec()).val
    }

    /// The members, in byte order.
    pub fn members(&self) -> Vec<Vec<u8>> {
        let mut members: Vec<_> = self.members.read().val.into_iter().collect();
        members.sort_unstable();
        members
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.iter().count()
    }

    /// Whether the set has no members (it may still carry causal metadata).
    pub fn is_empty(&self) -> bool {
        self.members.iter().next().is_none()
    }

    /// The latest timestamp of any add or remove merged in.
    pub fn timestamp(&self) -> Timestamp {
        self.updated
    }

    /// The canonical form: what is serialized and digested.
    fn state(&self) -> StateRef<'_> {
        StateRef {
            clock: self.members.clock().dots,
            entries: self.members.iter().map(|entry| (entry.val.as_slice(), entry.rm_clock.dots)).collect(),
            updated: self.updated,
        }
    }

    pub(crate) fn feed(&self, out: &mut Canonical) {
        let state = self.state();
        out.clock(&state.clock);
        out.u64(state.entries.len() as u64);
        for (member, dots) in &state.entries {
            out.bytes(member);
            out.clock(dots);
        }
        out.timestamp(state.updated);
    }
}

impl Serialize for Set {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state().serialize(serializer)
    }
}

/// The serialized form of a [`Set`]: the version vector, each member with the dots that
/// support it, and the set's timestamp, all in sorted maps.
#[derive(Serialize)]
struct StateRef<'a> {
    clock: BTreeMap<u64, u64>,
    entries: BTreeMap<&'a [u8], BTreeMap<u64, u64>>,
    updated: Timestamp,
}

/// The owned twin of [`StateRef`], for decoding.
#[derive(Deserialize)]
struct State {
    clock: BTreeMap<u64, u64>,
    entries: BTreeMap<Vec<u8>, BTreeMap<u64, u64>>,
    updated: Timestamp,
}

impl From<State> for Set {
    /// Rebuilds the Orswot (whose fields are private) by replaying one add per dot, in
    /// increasing counter order so that no add is skipped as already seen; members that share a
    /// dot are added together. Version-vector entries that no member carries any more (dots of
    /// removed adds) are replayed as adds of nothing. Any decoded state yields a valid set:
    /// inconsistent input (a member dot the version vector does not cover) is normalised.
    fn from(state: State) -> Self {
        let mut by_dot: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
        for (member, dots) in state.entries {
            for (node, counter) in dots {
                by_dot.entry((counter, node)).or_default().push(member.clone());
            }
        }
        for (node, counter) in state.clock {
            by_dot.entry((counter, node)).or_default();
        }
        let mut members = Orswot::new();
        for ((counter, node), added) in by_dot {
            members.apply(orswot::Op::Add { dot: Dot::new(node, counter), members: added });
        }
        Set { members, updated: state.updated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical_ms: u64, node: u64) -> Timestamp {
        Timestamp::new(physical_ms, 0, node)
    }

    fn set_of(members: &[&[u8]], node: u64) -> Set {
        let mut set = Set::new();
        for (i, member) in members.iter().enumerate() {
            set.add(member.to_vec(), ts(i as u64 + 1, node));
        }
        set
    }

    #[test]
    fn add_and_remove() {
        let mut set = set_of(&[b"b", b"a", b"c"], 1);
        assert_eq!(set.members(), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        set.remove(b"b", ts(10, 1));
        assert!(!set.contains(b"b") && set.contains(b"a"));
        assert_eq!(set.len(), 2);
        set.remove(b"zzz", ts(11, 1));
        assert_eq!(set.len(), 2);
        assert_eq!(set.timestamp(), ts(11, 1));
    }

    #[test]
    fn concurrent_add_wins_over_remove() {
        let base = set_of(&[b"x"], 1);
        let (mut a, mut b) = (base.clone(), base);
        a.remove(b"x", ts(10, 1));
        b.add(b"x".to_vec(), ts(5, 2)); // concurrent: a had not seen it
        let mut ab = a.clone();
        ab.merge(&b);
        b.merge(&a);
        assert_eq!(ab, b);
        assert!(ab.contains(b"x"));
    }

    #[test]
    fn observed_remove_wins_after_sync() {
        let mut a = set_of(&[b"x"], 1);
        let mut b = Set::new();
        b.merge(&a);
        b.remove(b"x", ts(10, 2));
        a.merge(&b);
        assert!(a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn re_add_after_collection_is_not_lost_on_a_lagging_replica() {
        // Both replicas saw x added and removed; `a` then collects the empty set, `b` keeps it.
        let mut a = set_of(&[b"x"], 1);
        a.remove(b"x", ts(2, 1));
        let lagging = a.clone();
        // With counters 1, 2, 3… the fresh add would reuse dot (1, 1), which `lagging` has seen.
        let mut fresh = Set::new();
        fresh.add(b"y".to_vec(), ts(3, 1));
        let mut b = lagging;
        b.merge(&fresh);
        assert!(b.contains(b"y"), "the new add must survive a replica that still has the old clock");
    }

    #[test]
    fn serialization_is_canonical_and_roundtrips() {
        let single = |member: &[u8]| {
            let mut set = Set::new();
            set.add(member.to_vec(), ts(u64::from(member[0]), u64::from(member[0])));
            set
        };
        let (mut a, mut b) = (Set::new(), Set::new());
        for member in [b"a", b"b", b"c", b"d"] {
            a.merge(&single(member));
        }
        for member in [b"d", b"c", b"b", b"a"] {
            b.merge(&single(member));
        }
        a.remove(b"c", ts(200, 1));
        b.remove(b"c", ts(200, 1));
        assert_eq!(a, b);
        let encoded = bincode::serialize(&a).unwrap();
        assert_eq!(encoded, bincode::serialize(&b).unwrap(), "equal sets encode to equal bytes");
        let decoded: Set = bincode::deserialize(&encoded).unwrap();
        assert_eq!(decoded, a);
        assert_eq!(decoded.members(), vec![b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
    }
}
