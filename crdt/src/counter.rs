//! PN-counter: increments and decrements from any node, none ever lost.

use crdts::{CmRDT, CvRDT, Dot, VClock};
use serde::{Deserialize, Serialize};

use crate::value::Canonical;
use crate::{Error, Timestamp};

/// A PN-counter with `i64` deltas.
///
/// Each node owns two grow-only totals, `p` (sum of its positive deltas) and `n` (sum of the
/// magnitudes of its negative deltas); the value is `Σp − Σn`. Merge takes the per-node maximum,
/// so replaying or reordering states never double-counts.
///
/// The totals are `crdts::VClock<u64>` maps (node → total, merged by per-node max), which is
/// exactly what `crdts::GCounter` wraps. `crdts::PNCounter` itself is not used: it hides the
/// per-node totals, so an increment cannot be checked for `u64` overflow before it is applied
/// (its `inc_many` adds unchecked), and it reads as a `num::BigInt`, which would pull the `num`
/// crates in for one subtraction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    p: VClock<u64>,
    n: VClock<u64>,
    /// The latest timestamp of any delta merged in.
    updated: Timestamp,
}

impl Counter {
    /// A counter at zero that no node has touched.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter holding a single delta, applied by `ts.node` at `ts`.
    pub fn from_delta(delta: i64, ts: Timestamp) -> Self {
        let mut counter = Self::new();
        // A first delta always fits: |i64| <= 2^63 < u64::MAX.
        counter.total_mut(delta).apply(Dot::new(ts.node, delta.unsigned_abs()));
        counter.updated = ts;
        counter
    }

    /// Adds `delta` on behalf of node `ts.node`. Fails with [`Error::InvalidInput`], changing
    /// nothing, if that node's running total of positive or negative deltas would overflow `u64`.
    pub fn add(&mut self, delta: i64, ts: Timestamp) -> Result<(), Error> {
        let total = self.total_mut(delta);
        let sum = total.get(&ts.node).checked_add(delta.unsigned_abs()).ok_or_else(|| {
            Error::InvalidInput(format!("counter increment {delta} overflows node {}'s total", ts.node))
        })?;
        total.apply(Dot::new(ts.node, sum));
        self.updated = self.updated.max(ts);
        Ok(())
    }

    /// Merges another replica's counter.
    pub fn merge(&mut self, other: &Counter) {
        self.p.merge(other.p.clone());
        self.n.merge(other.n.clone());
        self.updated = self.updated.max(other.updated);
    }

    /// The counter's value. The exact sum is computed in `i128`; one that leaves the `i64`
    /// range (only possible after more than 2^63 of net increments) saturates.
    pub fn value(&self) -> i64 {
        let sum = |clock: &VClock<u64>| clock.dots.values().map(|&total| i128::from(total)).sum::<i128>();
        let exact = sum(&self.p) - sum(&self.n);
        i64::try_from(exact).unwrap_or(if exact < 0 { i64::MIN } else { i64::MAX })
    }

    /// The latest timestamp of any delta merged in.
    pub fn timestamp(&self) -> Timestamp {
        self.updated
    }

    fn total_mut(&mut self, delta: i64) -> &mut VClock<u64> {
        if delta < 0 {
            &mut self.n
        } else {
            &mut self.p
        }
    }

    pub(crate) fn feed(&self, out: &mut Canonical) {
        out.clock(&self.p.dots);
        out.clock(&self.n.dots);
        out.timestamp(self.updated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical_ms: u64, node: u64) -> Timestamp {
        Timestamp::new(physical_ms, 0, node)
    }

    #[test]
    fn sums_deltas_from_every_node() {
        let mut a = Counter::from_delta(5, ts(1, 1));
        a.add(-2, ts(2, 1)).unwrap();
        let mut b = Counter::from_delta(10, ts(1, 2));
        b.add(-20, ts(3, 2)).unwrap();
        a.merge(&b);
        assert_eq!(a.value(), 5 - 2 + 10 - 20);
        assert_eq!(a.timestamp(), ts(3, 2));
        // Merging the same state again counts nothing twice.
        a.merge(&b);
        assert_eq!(a.value(), -7);
    }

    #[test]
    fn extreme_deltas() {
        let mut c = Counter::from_delta(i64::MIN, ts(1, 1));
        assert_eq!(c.value(), i64::MIN);
        c.add(-1, ts(2, 1)).unwrap();
        assert_eq!(c.value(), i64::MIN, "saturates below i64::MIN");
        let before = c.clone();
        let err = c.add(i64::MIN, ts(3, 1)).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert_eq!(c, before, "a failed add changes nothing");
        c.add(i64::MAX, ts(4, 2)).unwrap();
        assert_eq!(c.value(), -2, "the exact sum is kept beyond the i64 range");
    }
}
