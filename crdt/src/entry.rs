//! What a replica stores under one key: a [`Value`] per type the key was ever created with, each
//! with the timestamp of its first write. This is how type conflicts across partitions resolve.
//!
//! A key's type is fixed by its first write, but two nodes on opposite sides of a partition can
//! both create the same key, with different types. Merging a counter into an lww register has no
//! meaning, and dropping either side's state would break the merge laws (whether the dropped
//! state came back would depend on the order states met). So an entry keeps each type's state
//! side by side, merged per type (the first-write timestamp merges by `min`), which is a product
//! of semilattices and therefore itself a CRDT. The *visible* type, the one reads return and
//! operations must match, is the type whose first write has the lowest timestamp (then the lower
//! [`Kind`], for a total order). Every replica that has seen the same states picks the same type.
//!
//! The cost: acknowledged writes to the losing type are kept but hidden. A client learns of it
//! when its next operation of that type is refused with a type mismatch naming the winner.

use std::collections::BTreeMap;

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::value::codec;
use crate::{Digest, Error, Kind, Op, Read, Timestamp, Value};

/// One type's state under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Typed {
    /// The earliest first write of this type that this state reflects.
    born: Timestamp,
    value: Value,
}

/// The CRDT state of one key of an eventual keyspace (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Never empty; each value's kind equals its map key.
    types: BTreeMap<Kind, Typed>,
}

impl Entry {
    /// The entry a key gets from its first write on this node: `op` at `ts`.
    pub fn from_op(op: Op, ts: Timestamp) -> Entry {
        let kind = op.kind();
        Entry { types: BTreeMap::from([(kind, Typed { born: ts, value: Value::from_op(op, ts) })]) }
    }

    /// Applies a local operation to the visible value. An operation of another type is
    /// [`Error::TypeMismatch`] naming both types; on any error the entry is unchanged.
    pub fn apply(&mut self, op: Op, ts: Timestamp) -> Result<(), Error> {
        let held = self.kind();
        if op.kind() != held {
            return Err(Error::TypeMismatch { held, given: op.kind() });
        }
        match self.types.get_mut(&held) {
            Some(typed) => typed.value.apply(op, ts),
            None => Err(Error::InvalidData("entry without a value".into())),
        }
    }

    /// Merges another replica's entry of the same key. Commutative, associative, idempotent.
    pub fn merge(&mut self, other: &Entry) {
        for (kind, theirs) in &other.types {
            match self.types.get_mut(kind) {
                Some(ours) => {
                    ours.born = ours.born.min(theirs.born);
                    // Same kind on both sides, so the merge cannot mismatch.
                    let _ = ours.value.merge(&theirs.value);
                }
                None => {
                    self.types.insert(*kind, theirs.clone());
                }
            }
        }
    }

    fn visible(&self) -> Option<&Typed> {
        self.types.iter().min_by_key(|(kind, typed)| (typed.born, **kind)).map(|(_, typed)| typed)
    }

    /// The key's type: the one whose first write is the earliest.
    pub fn kind(&self) -> Kind {
        self.visible().map_or(Kind::Lww, |typed| typed.value.kind())
    }

    /// The visible value.
    pub fn value(&self) -> Option<&Value> {
        self.visible().map(|typed| &typed.value)
    }

    /// What a read returns.
    pub fn read(&self) -> Read {
        self.value().map_or(Read::Absent, Value::read)
    }

    /// Whether the key reads as absent: its visible value is an lww tombstone or a set with no
    /// members.
    pub fn is_deleted(&self) -> bool {
        self.value().is_none_or(deleted)
    }

    /// The latest timestamp of any operation reflected in the entry, hidden types included.
    pub fn timestamp(&self) -> Timestamp {
        self.types.values().map(|typed| typed.value.timestamp()).max().unwrap_or_default()
    }

    /// For an entry that may be collected once every replica has merged everything up to its
    /// timestamp (every type deleted; counters never are): that timestamp.
    pub fn collectable(&self) -> Option<Timestamp> {
        self.types.values().all(|typed| deleted(&typed.value)).then(|| self.timestamp())
    }

    /// Whether the entry holds states of more than one type (a cross-partition type conflict).
    pub fn is_conflicted(&self) -> bool {
        self.types.len() > 1
    }

    /// A digest of the whole entry, equal for equal entries.
    pub fn digest(&self) -> Digest {
        let mut hash = Sha256::new();
        hash.update((self.types.len() as u64).to_be_bytes());
        for (kind, typed) in &self.types {
            hash.update([*kind as u8]);
            hash.update(typed.born.to_bytes());
            hash.update(typed.value.digest().0);
        }
        let full = hash.finalize();
        let mut digest = [0; 16];
        digest.copy_from_slice(&full[..16]);
        Digest(digest)
    }

    /// Encodes the entry for storage and the wire (equal entries encode equally).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        Ok(codec().serialize(self)?)
    }

    /// Decodes [`Entry::to_bytes`]; malformed or inconsistent input is [`Error::InvalidData`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, Error> {
        let entry: Entry = codec().deserialize(bytes)?;
        if entry.types.is_empty() {
            return Err(Error::InvalidData("entry holds no value".into()));
        }
        if let Some((kind, typed)) = entry.types.iter().find(|(kind, typed)| typed.value.kind() != **kind) {
            return Err(Error::InvalidData(format!("entry lists a {} value as {kind}", typed.value.kind())));
        }
        Ok(entry)
    }
}

fn deleted(value: &Value) -> bool {
    match value {
        Value::Lww(lww) => lww.is_tombstone(),
        Value::Counter(_) => false,
        Value::Set(set) => set.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical_ms: u64, node: u64) -> Timestamp {
        Timestamp::new(physical_ms, 0, node)
    }

    #[test]
    fn first_write_fixes_the_type() {
        let mut entry = Entry::from_op(Op::Add(2), ts(1, 1));
        entry.apply(Op::Add(3), ts(2, 1)).unwrap();
        assert_eq!(entry.read(), Read::Counter(5));
        let err = entry.apply(Op::Put(b"x".to_vec()), ts(3, 1)).unwrap_err();
        assert_eq!(err.to_string(), "type mismatch: key holds a counter value, not lww");
        assert_eq!(entry.read(), Read::Counter(5));
    }

    #[test]
    fn earliest_created_type_wins_on_every_replica() {
        let counter = Entry::from_op(Op::Add(7), ts(10, 1));
        let mut register = Entry::from_op(Op::Put(b"v".to_vec()), ts(20, 2));
        register.apply(Op::Put(b"w".to_vec()), ts(5_000, 2)).unwrap();
        let (mut a, mut b) = (counter.clone(), register.clone());
        a.merge(&register);
        b.merge(&counter);
        assert_eq!(a, b);
        assert_eq!(a.kind(), Kind::Counter);
        assert_eq!(a.read(), Read::Counter(7));
        assert!(a.is_conflicted());
        // The register's writes are kept, hidden, and its timestamp still counts.
        assert_eq!(a.timestamp(), ts(5_000, 2));
        assert!(matches!(a.apply(Op::Delete, ts(6_000, 2)), Err(Error::TypeMismatch { held: Kind::Counter, .. })));
        assert_eq!(a.collectable(), None);
    }

    #[test]
    fn deleted_states_are_collectable_unless_a_counter_hides_behind() {
        let mut entry = Entry::from_op(Op::Put(b"v".to_vec()), ts(1, 1));
        assert!(!entry.is_deleted());
        entry.apply(Op::Delete, ts(2, 1)).unwrap();
        assert!(entry.is_deleted());
        assert_eq!(entry.collectable(), Some(ts(2, 1)));
        let mut set = Entry::from_op(Op::SetAdd(b"m".to_vec()), ts(3, 1));
        assert_eq!(set.collectable(), None);
        set.apply(Op::SetRemove(b"m".to_vec()), ts(4, 1)).unwrap();
        assert_eq!(set.collectable(), Some(ts(4, 1)));
        entry.merge(&Entry::from_op(Op::Add(1), ts(9, 3)));
        assert!(entry.is_deleted(), "the tombstone was created first and stays visible");
        assert_eq!(entry.collectable(), None);
    }

    #[test]
    fn bytes_roundtrip_and_inconsistent_input_is_rejected() {
        let mut entry = Entry::from_op(Op::SetAdd(b"a".to_vec()), ts(1, 1));
        entry.merge(&Entry::from_op(Op::Add(-3), ts(2, 2)));
        let bytes = entry.to_bytes().unwrap();
        assert_eq!(Entry::from_bytes(&bytes).unwrap(), entry);
        assert_eq!(Entry::from_bytes(&bytes).unwrap().digest(), entry.digest());
        for cut in 0..bytes.len() {
            assert!(Entry::from_bytes(&bytes[..cut]).is_err());
        }
        let empty = codec().serialize(&Entry { types: BTreeMap::new() }).unwrap();
        assert!(matches!(Entry::from_bytes(&empty), Err(Error::InvalidData(_))));
        let lying = Entry {
            types: BTreeMap::from([(Kind::Set, Typed { born: ts(1, 1), value: Value::from_op(Op::Add(1), ts(1, 1)) })]),
        };
        let lying = codec().serialize(&lying).unwrap();
        assert!(matches!(Entry::from_bytes(&lying), Err(Error::InvalidData(_))));
    }
}
