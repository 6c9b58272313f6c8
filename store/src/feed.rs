//! The feed of applied changes to live watchers, bounded in bytes.
//!
//! Every applied [`Change`] is offered to the feed after its transaction committed (so it is in
//! the change log too). The feed holds a change until every subscriber has taken it; the bytes
//! it holds count against the `changes` share of the memory budget. A change that would pass the
//! share is not held: subscribers get an [`Fed::elided`] marker in its place and read the change
//! back from the change log, as they do when they lag behind the channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::budget::{Part, Usage};
use crate::command::Change;

/// Most changes the channel holds whatever their size.
const CAPACITY: usize = 4096;
/// Bytes counted for an event besides its key and value.
const EVENT_OVERHEAD: u64 = 64;

/// One item of the feed: an applied change, or the marker of one left in the change log.
pub struct Fed {
    change: Arc<Change>,
    elided: bool,
    bytes: u64,
    /// The feed's own count (its half of the share) and the node's, both given back on drop.
    held: Usage,
    usage: Usage,
}

impl Fed {
    /// The change (with no events when [`Fed::elided`]).
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// Whether the change was left out to stay within the memory budget: read the change log
    /// from [`Change::revision`].
    pub fn elided(&self) -> bool {
        self.elided
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        self.held.sub(Part::Changes, self.bytes);
        self.usage.sub(Part::Changes, self.bytes);
    }
}

/// Bytes a change is counted for in the memory budget.
pub(crate) fn size(change: &Change) -> u64 {
    let events: u64 = change
        .events
        .iter()
        .map(|e| e.key.len() as u64 + e.value.as_ref().map_or(0, |v| v.len() as u64) + EVENT_OVERHEAD)
        .sum();
    events + change.keyspace.len() as u64 + EVENT_OVERHEAD
}

/// The sending side; subscribers take [`Feed::subscribe`].
pub(crate) struct Feed {
    tx: broadcast::Sender<Arc<Fed>>,
    limit: AtomicU64,
    /// Bytes the feed holds, checked against `limit`; the change log counts its own in `usage`,
    /// which reports both.
    held: Usage,
    usage: Usage,
}

impl Feed {
    pub(crate) fn new(usage: Usage) -> Self {
        Self { tx: broadcast::channel(CAPACITY).0, limit: AtomicU64::new(u64::MAX), held: Usage::default(), usage }
    }

    pub(crate) fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Fed>> {
        self.tx.subscribe()
    }

    /// Offers `change` to subscribers (dropped at once when there are none).
    pub(crate) fn send(&self, change: Arc<Change>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let bytes = size(&change);
        let (held, usage) = (self.held.clone(), self.usage.clone());
        let fed = if held.try_add(Part::Changes, bytes, self.limit.load(Ordering::Relaxed)) {
            usage.add(Part::Changes, bytes);
            Fed { change, elided: false, bytes, held, usage }
        } else {
            let marker = Change { revision: change.revision, keyspace: change.keyspace.clone(), events: Vec::new() };
            Fed { change: Arc::new(marker), elided: true, bytes: 0, held, usage }
        };
        // A subscriber that left meanwhile is not an error.
        let _ = self.tx.send(Arc::new(fed));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::Event;

    /// A change of one key to a value of `value` bytes, at `revision` (for the tests of the
    /// feed and the change log).
    pub(crate) fn change(revision: u64, value: usize) -> Arc<Change> {
        Arc::new(Change {
            revision,
            keyspace: "k".into(),
            events: vec![Event { key: b"a".to_vec(), value: Some(vec![0; value]) }],
        })
    }

    #[tokio::test]
    async fn changes_past_the_share_are_elided_and_room_comes_back_once_read() {
        let usage = Usage::default();
        let feed = Feed::new(usage.clone());
        feed.set_limit(3000);
        let mut rx = feed.subscribe();
        feed.send(change(1, 1000));
        feed.send(change(2, 1000));
        feed.send(change(3, 1000));
        let held = usage.get(Part::Changes).unwrap();
        assert!(held <= 3000 && held > 2000, "{held}");
        let got: Vec<(u64, bool)> = (0..3)
            .map(|_| {
                let fed = rx.try_recv().unwrap();
                (fed.change().revision, fed.elided())
            })
            .collect();
        assert_eq!(got, vec![(1, false), (2, false), (3, true)]);
        assert_eq!(usage.get(Part::Changes), Some(0), "read items give their room back");
        feed.send(change(4, 1000));
        assert!(!rx.try_recv().unwrap().elided());
    }

    #[test]
    fn what_the_change_log_holds_does_not_crowd_the_feed_out() {
        let usage = Usage::default();
        let feed = Feed::new(usage.clone());
        feed.set_limit(3000);
        // The change log's half of the share, full.
        usage.add(Part::Changes, 3000);
        let mut rx = feed.subscribe();
        feed.send(change(1, 1000));
        assert!(!rx.try_recv().unwrap().elided());
        assert_eq!(usage.get(Part::Changes), Some(3000), "read items give their room back");
    }

    #[test]
    fn without_subscribers_nothing_is_held() {
        let usage = Usage::default();
        let feed = Feed::new(usage.clone());
        feed.send(change(1, 1000));
        assert_eq!(usage.get(Part::Changes), Some(0));
    }
}
