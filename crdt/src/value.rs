//! The value stored under one key of an eventual keyspace, its operations and its digest.

use std::collections::BTreeMap;
use std::fmt;

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{Counter, Error, Lww, Set, Timestamp};

/// The type of a key's value, fixed by the key's first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Last-writer-wins bytes ([`Lww`]).
    Lww,
    /// PN-counter ([`Counter`]).
    Counter,
    /// Observed-remove set of byte strings ([`Set`]).
    Set,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Lww => "lww",
            Kind::Counter => "counter",
            Kind::Set => "set",
        })
    }
}

/// A write to one key. It is applied with the HLC timestamp the coordinating node issued for
/// it; the timestamp's node id is the writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets an lww key to the bytes.
    Put(Vec<u8>),
    /// Deletes an lww key (writes a tombstone).
    Delete,
    /// Adds a delta (negative to decrement) to a counter key.
    Add(i64),
    /// Adds a member to a set key.
    SetAdd(Vec<u8>),
    /// Removes a member, as observed by the writer, from a set key.
    SetRemove(Vec<u8>),
}

impl Op {
    /// The type of value this operation applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Op::Put(_) | Op::Delete => Kind::Lww,
            Op::Add(_) => Kind::Counter,
            Op::SetAdd(_) | Op::SetRemove(_) => Kind::Set,
        }
    }
}

/// What a read of a key returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Read {
    /// An lww key's bytes.
    Bytes(Vec<u8>),
    /// An lww key that was deleted (or the caller's answer for a key that does not exist).
    Absent,
    /// A counter's value.
    Counter(i64),
    /// A set's members, in byte order.
    Set(Vec<Vec<u8>>),
}

/// A 16-byte digest of a value's state, for anti-entropy: replicas compare digests and exchange
/// only the keys whose digests differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 16]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The CRDT state of one key: one of the three types, fixed at the key's first write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Last-writer-wins bytes or tombstone.
    Lww(Lww),
    /// PN-counter.
    Counter(Counter),
    /// Observed-remove set.
    Set(Set),
}

impl Value {
    /// The value a key gets from its first write, `op` at `ts`. Only for a key the writing node
    /// holds no state of: once it does, its writes must go through [`Value::apply`] on that
    /// state, because a set's merge relies on each node's state including all its earlier adds.
    pub fn from_op(op: Op, ts: Timestamp) -> Value {
        match op {
            Op::Put(bytes) => Value::Lww(Lww::new(Some(bytes), ts)),
            Op::Delete => Value::Lww(Lww::new(None, ts)),
            Op::Add(delta) => Value::Counter(Counter::from_delta(delta, ts)),
            Op::SetAdd(member) => {
                let mut set = Set::new();
                set.add(member, ts);
                Value::Set(set)
            }
            Op::SetRemove(member) => {
                let mut set = Set::new();
                set.remove(&member, ts);
                Value::Set(set)
            }
        }
    }

    /// Applies `op`, issued at `ts` by node `ts.node`. An operation for another type is
    /// [`Error::TypeMismatch`] and an overflowing counter delta [`Error::InvalidInput`]; on error
    /// the value is unchanged.
    pub fn apply(&mut self, op: Op, ts: Timestamp) -> Result<(), Error> {
        match (&mut *self, op) {
            (Value::Lww(lww), Op::Put(bytes)) => lww.write(Some(bytes), ts),
            (Value::Lww(lww), Op::Delete) => lww.write(None, ts),
            (Value::Counter(counter), Op::Add(delta)) => counter.add(delta, ts)?,
            (Value::Set(set), Op::SetAdd(member)) => set.add(member, ts),
            (Value::Set(set), Op::SetRemove(member)) => set.remove(&member, ts),
            (value, op) => return Err(Error::TypeMismatch { held: value.kind(), given: op.kind() }),
        }
        Ok(())
    }

    /// Merges another replica's state of the same key. Merge is commutative, associative and
    /// idempotent, so replicas that have merged the same states hold equal values whatever the
    /// order. A state of another type is [`Error::TypeMismatch`] and leaves the value unchanged;
    /// that happens only when two partitioned nodes both created the key with different types,
    /// and resolving it is the replica's decision, not the value's.
    pub fn merge(&mut self, other: &Value) -> Result<(), Error> {
        match (&mut *self, other) {
            (Value::Lww(ours), Value::Lww(theirs)) => ours.merge(theirs),
            (Value::Counter(ours), Value::Counter(theirs)) => ours.merge(theirs),
            (Value::Set(ours), Value::Set(theirs)) => ours.merge(theirs),
            (ours, theirs) => return Err(Error::TypeMismatch { held: ours.kind(), given: theirs.kind() }),
        }
        Ok(())
    }

    /// The value's type.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Lww(_) => Kind::Lww,
            Value::Counter(_) => Kind::Counter,
            Value::Set(_) => Kind::Set,
        }
    }

    /// What a client reads.
    pub fn read(&self) -> Read {
        match self {
            Value::Lww(lww) => lww.get().map_or(Read::Absent, |bytes| Read::Bytes(bytes.to_vec())),
            Value::Counter(counter) => Read::Counter(counter.value()),
            Value::Set(set) => Read::Set(set.members()),
        }
    }

    /// The latest HLC timestamp reflected in the value: the winning write of an lww register,
    /// the latest operation merged into a counter or set. Reads report it as their as-of time.
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Value::Lww(lww) => lww.timestamp(),
            Value::Counter(counter) => counter.timestamp(),
            Value::Set(set) => set.timestamp(),
        }
    }

    /// Whether this is an lww tombstone (the key was deleted).
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Value::Lww(lww) if lww.is_tombstone())
    }

    /// Whether the key may be dropped from storage, given a `watermark` that every replica of
    /// the keyspace has acknowledged (each has merged every write with a timestamp up to it).
    ///
    /// True for an lww tombstone and for an emptied set whose latest operation is at or below
    /// the watermark: every replica then holds the same deleted state, so forgetting it loses
    /// nothing. A counter is never collectable: its per-node totals must keep growing from where
    /// they are, and a counter recreated from zero would lose increments to a replica that still
    /// has the old totals.
    pub fn is_collectable(&self, watermark: Timestamp) -> bool {
        let deleted = match self {
            Value::Lww(lww) => lww.is_tombstone(),
            Value::Counter(_) => false,
            Value::Set(set) => set.is_empty(),
        };
        deleted && self.timestamp() <= watermark
    }

    /// A digest of the value's state, equal for equal states however they were reached.
    pub fn digest(&self) -> Digest {
        let mut out = Canonical(Sha256::new());
        match self {
            Value::Lww(lww) => {
                out.u8(1);
                lww.feed(&mut out);
            }
            Value::Counter(counter) => {
                out.u8(2);
                counter.feed(&mut out);
            }
            Value::Set(set) => {
                out.u8(3);
                set.feed(&mut out);
            }
        }
        let hash = out.0.finalize();
        let mut digest = [0; 16];
        digest.copy_from_slice(&hash[..16]);
        Digest(digest)
    }

    /// Encodes the value for storage or the wire (bincode; equal values encode equally).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        Ok(codec().serialize(self)?)
    }

    /// Decodes [`Value::to_bytes`]. Malformed input is [`Error::InvalidData`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Value, Error> {
        Ok(codec().deserialize(bytes)?)
    }
}

/// bincode with fixed-width integers (the format of `bincode::serialize`), rejecting trailing
/// bytes on decode.
pub(crate) fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes()
}

/// Feeds a value's state to the digest hash in a canonical byte form: integers big-endian,
/// byte strings and maps length-prefixed, maps in key order. Written out by hand rather than
/// through serde so that the digest, which replicas on different builds compare, depends on
/// nothing but this function.
pub(crate) struct Canonical(Sha256);

impl Canonical {
    pub(crate) fn u8(&mut self, value: u8) {
        self.0.update([value]);
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.0.update(value.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.update(bytes);
    }

    pub(crate) fn timestamp(&mut self, ts: Timestamp) {
        self.0.update(ts.to_bytes());
    }

    pub(crate) fn clock(&mut self, clock: &BTreeMap<u64, u64>) {
        self.u64(clock.len() as u64);
        for (node, counter) in clock {
            self.u64(*node);
            self.u64(*counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical_ms: u64, node: u64) -> Timestamp {
        Timestamp::new(physical_ms, 0, node)
    }

    #[test]
    fn mismatched_operation_names_both_types() {
        let mut value = Value::from_op(Op::Put(b"v".to_vec()), ts(1, 1));
        let before = value.clone();
        let err = value.apply(Op::Add(1), ts(2, 1)).unwrap_err();
        assert_eq!(err, Error::TypeMismatch { held: Kind::Lww, given: Kind::Counter });
        assert_eq!(err.to_string(), "type mismatch: key holds a lww value, not counter");
        assert_eq!(value, before);

        let counter = Value::from_op(Op::Add(3), ts(1, 2));
        let err = value.merge(&counter).unwrap_err();
        assert_eq!(err, Error::TypeMismatch { held: Kind::Lww, given: Kind::Counter });
        let mut set = Value::from_op(Op::SetAdd(b"m".to_vec()), ts(1, 3));
        assert_eq!(set.apply(Op::Delete, ts(2, 3)), Err(Error::TypeMismatch { held: Kind::Set, given: Kind::Lww }));
    }

    #[test]
    fn reads() {
        let mut lww = Value::from_op(Op::Put(b"v".to_vec()), ts(1, 1));
        assert_eq!(lww.read(), Read::Bytes(b"v".to_vec()));
        lww.apply(Op::Delete, ts(2, 1)).unwrap();
        assert_eq!(lww.read(), Read::Absent);
        assert!(lww.is_tombstone());

        let mut counter = Value::from_op(Op::Add(5), ts(1, 1));
        counter.apply(Op::Add(-7), ts(2, 2)).unwrap();
        assert_eq!(counter.read(), Read::Counter(-2));
        assert!(!counter.is_tombstone());

        let mut set = Value::from_op(Op::SetAdd(b"b".to_vec()), ts(1, 1));
        set.apply(Op::SetAdd(b"a".to_vec()), ts(2, 1)).unwrap();
        set.apply(Op::SetRemove(b"b".to_vec()), ts(3, 1)).unwrap();
        assert_eq!(set.read(), Read::Set(vec![b"a".to_vec()]));
        assert_eq!(set.timestamp(), ts(3, 1));
    }

    #[test]
    fn collectable_only_when_deleted_and_below_the_watermark() {
        let mut lww = Value::from_op(Op::Put(b"v".to_vec()), ts(1, 1));
        assert!(!lww.is_collectable(ts(100, 0)));
        lww.apply(Op::Delete, ts(10, 1)).unwrap();
        assert!(!lww.is_collectable(ts(9, 9)));
        assert!(lww.is_collectable(ts(10, 1)));

        let mut set = Value::from_op(Op::SetAdd(b"m".to_vec()), ts(1, 1));
        assert!(!set.is_collectable(ts(100, 0)));
        set.apply(Op::SetRemove(b"m".to_vec()), ts(10, 1)).unwrap();
        assert!(set.is_collectable(ts(11, 0)));

        let counter = Value::from_op(Op::Add(0), ts(1, 1));
        assert!(!counter.is_collectable(ts(100, 0)));
    }

    #[test]
    fn bytes_roundtrip_and_garbage_is_an_error() {
        let mut set = Value::from_op(Op::SetAdd(b"a".to_vec()), ts(1, 1));
        set.apply(Op::SetAdd(b"b".to_vec()), ts(2, 2)).unwrap();
        set.apply(Op::SetRemove(b"a".to_vec()), ts(3, 2)).unwrap();
        let values = [Value::from_op(Op::Put(b"v".to_vec()), ts(1, 1)), Value::from_op(Op::Add(-4), ts(1, 1)), set];
        for value in values {
            let bytes = value.to_bytes().unwrap();
            let decoded = Value::from_bytes(&bytes).unwrap();
            assert_eq!(decoded, value);
            assert_eq!(decoded.digest(), value.digest());
            for cut in 0..bytes.len() {
                assert!(matches!(Value::from_bytes(&bytes[..cut]), Err(Error::InvalidData(_))));
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(Value::from_bytes(&longer), Err(Error::InvalidData(_))));
        }
        // A huge length prefix must fail cleanly rather than allocate.
        // Variant 0 (lww), `Some`, then a byte string claiming u64::MAX bytes.
        let mut huge = vec![0, 0, 0, 0, 1];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Value::from_bytes(&huge), Err(Error::InvalidData(_))));
    }

    #[test]
    fn digests_differ_between_types_and_states() {
        let a = Value::from_op(Op::Put(vec![]), ts(1, 1));
        let b = Value::from_op(Op::Delete, ts(1, 1));
        let c = Value::from_op(Op::Add(0), ts(1, 1));
        let d = Value::from_op(Op::SetRemove(vec![]), ts(1, 1));
        let digests = [a.digest(), b.digest(), c.digest(), d.digest()];
        for (i, x) in digests.iter().enumerate() {
            for y in &digests[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(a.digest().to_string().len(), 32);
    }
}
