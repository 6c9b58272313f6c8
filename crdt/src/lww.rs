//! Last-writer-wins register: bytes or a tombstone, ordered by HLC timestamp.

use crdts::LWWReg;
use serde::{Deserialize, Serialize};

use crate::value::Canonical;
use crate::Timestamp;

/// A last-writer-wins register holding bytes, or a tombstone after a delete.
///
/// The write with the greatest [`Timestamp`] wins; timestamps include the issuing node, so two
/// nodes never tie. Built on `crdts::LWWReg` with the HLC timestamp as its marker. `LWWReg`
/// keeps the current value when markers are equal; a state carrying the same timestamp with a
/// different value can only come from a faulty node, and for merge to stay commutative even
/// then, equal timestamps are broken by the value (a tombstone sorts first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww {
    reg: LWWReg<Option<Vec<u8>>, Timestamp>,
}

impl Lww {
    /// A register written at `ts`: `Some(bytes)` for a put, `None` for a delete (a tombstone).
    pub fn new(value: Option<Vec<u8>>, ts: Timestamp) -> Self {
        Self { reg: LWWReg { val: value, marker: ts } }
    }

    /// Applies a put (`Some`) or delete (`None`) issued at `ts`; it takes effect only if it is
    /// later than the current write.
    pub fn write(&mut self, value: Option<Vec<u8>>, ts: Timestamp) {
        if (ts, &value) > (self.reg.marker, &self.reg.val) {
            self.reg = LWWReg { val: value, marker: ts };
        }
    }

    /// Merges another replica's register: the later write wins.
    pub fn merge(&mut self, other: &Lww) {
        self.write(other.reg.val.clone(), other.reg.marker);
    }

    /// The current bytes, or `None` if the register holds a tombstone.
    pub fn get(&self) -> Option<&[u8]> {
        self.reg.val.as_deref()
    }

    /// The timestamp of the winning write.
    pub fn timestamp(&self) -> Timestamp {
        self.reg.marker
    }

    /// Whether the winning write was a delete.
    pub fn is_tombstone(&self) -> bool {
        self.reg.val.is_none()
    }

    pub(crate) fn feed(&self, out: &mut Canonical) {
        out.timestamp(self.reg.marker);
        match &self.reg.val {
            None => out.u8(0),
            Some(bytes) => {
                out.u8(1);
                out.bytes(bytes);
            }
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
    fn later_write_wins_in_either_order() {
        let mut a = Lww::new(Some(b"old".to_vec()), ts(1, 1));
        a.write(Some(b"new".to_vec()), ts(2, 2));
        a.write(Some(b"stale".to_vec()), ts(1, 3));
        assert_eq!(a.get(), Some(&b"new"[..]));
        assert_eq!(a.timestamp(), ts(2, 2));
    }

    #[test]
    fn node_id_breaks_ties_on_equal_time() {
        let mut a = Lww::new(Some(b"from 1".to_vec()), ts(5, 1));
        let b = Lww::new(Some(b"from 2".to_vec()), ts(5, 2));
        let mut b2 = b.clone();
        a.merge(&b);
        b2.merge(&Lww::new(Some(b"from 1".to_vec()), ts(5, 1)));
        assert_eq!(a, b2);
        assert_eq!(a.get(), Some(&b"from 2"[..]));
    }

    #[test]
    fn delete_is_a_tombstone_a_later_put_supersedes() {
        let mut a = Lww::new(Some(b"x".to_vec()), ts(1, 1));
        a.write(None, ts(2, 1));
        assert!(a.is_tombstone());
        assert_eq!(a.get(), None);
        a.write(Some(b"y".to_vec()), ts(3, 2));
        assert!(!a.is_tombstone());
    }

    #[test]
    fn equal_timestamps_with_different_values_merge_commutatively() {
        let x = Lww::new(Some(b"x".to_vec()), ts(1, 1));
        let y = Lww::new(Some(b"y".to_vec()), ts(1, 1));
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y);
        yx.merge(&x);
        assert_eq!(xy, yx);
    }
}
