//! The change log of strong keyspaces: the recent applied changes, in revision order, kept in
//! memory for watchers that catch up.
//!
//! The history holds the changes of at most `retention` revisions (10,000 by default, see
//! `--log-keep`) and at most its share of the memory budget, dropping the oldest first; what it
//! dropped is *compacted*, and a watcher asking for a compacted revision gets the current state
//! instead (see the `Watch` RPC). It is not persisted: after a restart it starts at the revision
//! the state machine opened at, and the entries openraft re-applies fill it from there. Keeping
//! it out of sled keeps each value stored once on disk, and keeps sled from rewriting pages for
//! records that live seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::budget::{Part, Usage};
use crate::command::Change;
use crate::feed::size;

/// Recent changes by revision.
pub(crate) struct History {
    ring: Mutex<Ring>,
    usage: Usage,
}

struct Ring {
    changes: VecDeque<(Arc<Change>, u64)>,
    bytes: u64,
    limit: u64,
    retention: u64,
    /// The first revision the history answers for.
    compacted_before: u64,
}

impl History {
    /// An empty history that answers from revision `first` on.
    pub(crate) fn new(first: u64, usage: Usage) -> Self {
        let ring = Ring {
            changes: VecDeque::new(),
            bytes: 0,
            limit: u64::MAX,
            retention: 10_000,
            compacted_before: first.max(1),
        };
        Self { ring: Mutex::new(ring), usage }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how many revisions are kept.
    pub(crate) fn set_retention(&self, retention: u64) {
        let mut ring = self.lock();
        ring.retention = retention;
        self.evict(&mut ring, 0);
    }

    /// Sets how many bytes of changes are held.
    pub(crate) fn set_limit(&self, limit: u64) {
        let mut ring = self.lock();
        ring.limit = limit;
        self.evict(&mut ring, 0);
    }

    /// Appends an applied change (revisions only grow).
    pub(crate) fn push(&self, change: Arc<Change>) {
        let bytes = size(&change);
        let mut ring = self.lock();
        let revision = change.revision;
        ring.changes.push_back((change, bytes));
        ring.bytes += bytes;
        self.usage.add(Part::Changes, bytes);
        self.evict(&mut ring, revision);
    }

    /// Drops the oldest changes past the bounds, given the newest revision applied.
    fn evict(&self, ring: &mut Ring, newest: u64) {
        let newest = newest.max(ring.changes.back().map_or(0, |(c, _)| c.revision));
        while let Some((front, bytes)) = ring.changes.front() {
            let too_old = newest.saturating_sub(front.revision) >= ring.retention;
            if !too_old && ring.bytes <= ring.limit {
                break;
            }
            let (revision, bytes) = (front.revision, *bytes);
            ring.changes.pop_front();
            ring.bytes -= bytes;
            self.usage.sub(Part::Changes, bytes);
            ring.compacted_before = ring.compacted_before.max(revision + 1);
        }
    }

    /// Up to `limit` changes from revision `from` on.
    pub(crate) fn since(&self, from: u64, limit: usize) -> Vec<Arc<Change>> {
        let ring = self.lock();
        let start = ring.changes.partition_point(|(c, _)| c.revision < from);
        ring.changes.iter().skip(start).take(limit).map(|(c, _)| c.clone()).collect()
    }

    /// The first revision the history answers for.
    pub(crate) fn compacted_before(&self) -> u64 {
        self.lock().compacted_before
    }

    /// Forgets everything: the history answers from revision `first` on (after a snapshot
    /// replaced the state).
    pub(crate) fn reset(&self, first: u64) {
        let mut ring = self.lock();
        self.usage.sub(Part::Changes, ring.bytes);
        ring.changes.clear();
        ring.bytes = 0;
        ring.compacted_before = first.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::tests::change;

    fn revisions(changes: &[Arc<Change>]) -> Vec<u64> {
        changes.iter().map(|c| c.revision).collect()
    }

    #[test]
    fn answers_from_a_revision_and_compacts_past_the_retention() {
        let history = History::new(5, Usage::default());
        history.set_retention(3);
        assert_eq!(history.compacted_before(), 5);
        for r in [5, 6, 8, 9] {
            history.push(change(r, 10));
        }
        // Retention 3 at revision 9 keeps 7..=9; 5 and 6 went.
        assert_eq!(history.compacted_before(), 7);
        assert_eq!(revisions(&history.since(1, 10)), vec![8, 9]);
        assert_eq!(revisions(&history.since(9, 10)), vec![9]);
        assert_eq!(revisions(&history.since(10, 10)), Vec::<u64>::new());
    }

    #[test]
    fn bytes_stay_within_the_share_and_are_counted() {
        let usage = Usage::default();
        let history = History::new(1, usage.clone());
        history.set_limit(3_000);
        for r in 1..=10 {
            history.push(change(r, 1_000));
        }
        let held = usage.get(Part::Changes).unwrap();
        assert!(held <= 3_000, "{held}");
        assert_eq!(history.compacted_before(), history.since(0, 100)[0].revision);
        history.reset(42);
        assert_eq!(usage.get(Part::Changes), Some(0));
        assert_eq!(history.compacted_before(), 42);
        assert!(history.since(0, 10).is_empty());
    }
}
