//! A node's change stream of its eventual keyspaces, which watches follow.
//!
//! Every change a replica commits (a local write or a merged peer state that changed the key)
//! gets a change-log record, and with it a *stream position*: an HLC timestamp the replica ticks
//! inside the commit, under the store's commit lock. Positions therefore grow with the change
//! log's sequence, and they survive restarts (each one is folded into the HLC's durable
//! high-water mark, so the clock resumes above them). A position is the cursor a watcher
//! resumes from: it names the node that issued it and a point in that node's stream.
//!
//! Resuming after a cursor is exact on the node that issued it, as long as its change log still
//! holds what followed ([`Replica::stream_after`]). Anywhere else, or once that part of the log
//! was trimmed, the watcher gets the current state of its range first ([`Replica::stream_mark`]
//! labels such a snapshot with a position of its own) and the changes after it: every key's
//! value is whole in each change, so a snapshot followed by the stream misses nothing, though
//! it may repeat a value the watcher already had.

use ledge_store::SpaceId;

use crate::{Entry, Error, Replica, Timestamp};

/// One change of a watched keyspace, as the stream delivers it.
#[derive(Clone, Debug)]
pub struct StreamChange {
    /// Its change-log sequence on this node.
    pub seq: u64,
    /// Its stream position: the cursor to resume after it.
    pub cursor: Timestamp,
    /// The key.
    pub key: Vec<u8>,
    /// The key's whole entry after the change.
    pub entry: Entry,
}

/// A read of the change stream ([`Replica::stream_changes`]).
#[derive(Clone, Debug)]
pub enum StreamPage {
    /// The matching changes after the sequence asked for, and the last sequence read (the next
    /// read goes on after it).
    Changes(Vec<StreamChange>, u64),
    /// The change log no longer holds the changes right after the sequence asked for (they
    /// were trimmed, or were written before changes had positions): the watcher needs a
    /// snapshot.
    Trimmed,
}

impl Replica {
    /// The change-log sequence after which a stream resuming after `cursor` continues: every
    /// change after it has a position above the cursor and every change up to it one at or
    /// below. `None` when this node cannot tell (another node issued the cursor, or the part of
    /// the change log that would decide it was trimmed): the watcher then needs a snapshot.
    pub fn stream_after(&self, cursor: Timestamp) -> Result<Option<u64>, Error> {
        if cursor.node != self.node() {
            return Ok(None);
        }
        Ok(self.store().locate(&cursor.to_bytes())?)
    }

    /// The stream's current end: the last committed sequence, and a fresh position issued
    /// under the commit lock, above every change up to that sequence and below every change
    /// after it. A snapshot read after this call, labelled with the position, is followed by
    /// the changes after the sequence.
    pub fn stream_mark(&self) -> Result<(u64, Timestamp), Error> {
        let hlc = self.hlc();
        let (seq, stamp) = self.store().position(|| hlc.tick().to_bytes().to_vec())?;
        Ok((seq, Timestamp::from_bytes(&stamp)?))
    }

    /// The changes of `space` to keys `wanted` accepts, with sequence in `(after, upto]`:
    /// reads at most `max` records and about `max_bytes` of states.
    pub fn stream_changes(
        &self,
        space: &SpaceId,
        after: u64,
        upto: u64,
        (max, max_bytes): (usize, usize),
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<StreamPage, Error> {
        let store = self.store();
        if after < store.trimmed()? {
            return Ok(StreamPage::Trimmed);
        }
        let records = store.changes(after, upto, max, max_bytes)?;
        // Trimmed between the two reads.
        if records.first().is_some_and(|(seq, _)| *seq != after + 1) {
            return Ok(StreamPage::Trimmed);
        }
        let last = records.last().map_or(after, |(seq, _)| *seq);
        let mut changes = Vec::new();
        for (seq, record) in records {
            if record.space != *space || !wanted(&record.key) {
                continue;
            }
            let Ok(cursor) = Timestamp::from_bytes(&record.seen) else {
                return Ok(StreamPage::Trimmed);
            };
            changes.push(StreamChange { seq, cursor, key: record.key, entry: Entry::from_bytes(&record.state)? });
        }
        Ok(StreamPage::Changes(changes, last))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::Arc;

    use super::*;
    use crate::{ManualClock, Op, DEFAULT_MAX_DRIFT};

    fn replica(node: u64) -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let store = ledge_store::Eventual::open(&db).unwrap();
        let catalog = ledge_store::StateMachine::open(&db, &dir.path().join("snapshots")).unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let replica = Replica::open(store, catalog, node, clock, DEFAULT_MAX_DRIFT).unwrap();
        (dir, replica)
    }

    fn all(replica: &Replica, space: &SpaceId, after: u64) -> Vec<(u64, Vec<u8>)> {
        match replica.stream_changes(space, after, replica.store().committed(), (100, usize::MAX), |_| true).unwrap() {
            StreamPage::Changes(changes, _) => changes.into_iter().map(|c| (c.seq, c.key)).collect(),
            StreamPage::Trimmed => panic!("trimmed"),
        }
    }

    #[tokio::test]
    async fn a_cursor_resumes_exactly_after_its_change_and_only_on_its_node() {
        let (_dir, a) = replica(1);
        let space = SpaceId::new("ev", 1);
        let other = SpaceId::new("other", 2);
        a.apply(&space, b"k1", Op::Put(b"1".to_vec())).await.unwrap();
        a.apply(&other, b"x", Op::Put(b"1".to_vec())).await.unwrap();
        let (mark_seq, mark) = a.stream_mark().unwrap();
        assert_eq!(mark_seq, 2);
        a.apply(&space, b"k2", Op::Add(3)).await.unwrap();
        a.apply(&space, b"k3", Op::Delete).await.unwrap();
        // Everything after the mark, of this keyspace only.
        let after = a.stream_after(mark).unwrap().unwrap();
        assert_eq!(after, 2);
        assert_eq!(all(&a, &space, after), [(3, b"k2".to_vec()), (4, b"k3".to_vec())]);
        // A change's own cursor resumes right after it.
        let StreamPage::Changes(changes, last) =
            a.stream_changes(&space, 0, 4, (100, usize::MAX), |k| k != b"k2").unwrap()
        else {
            panic!("trimmed")
        };
        assert_eq!(last, 4);
        assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 4]);
        assert!(changes[1].entry.is_deleted());
        assert_eq!(a.stream_after(changes[0].cursor).unwrap(), Some(1));
        // Another node's cursor, or one before the trimmed log, means a snapshot.
        assert_eq!(a.stream_after(Timestamp::new(mark.physical_ms, mark.logical, 9)).unwrap(), None);
        a.store().trim_changes(3).unwrap();
        assert_eq!(a.stream_after(changes[0].cursor).unwrap(), None);
        assert!(matches!(a.stream_changes(&space, 1, 4, (100, usize::MAX), |_| true).unwrap(), StreamPage::Trimmed));
        assert_eq!(all(&a, &space, 3), [(4, b"k3".to_vec())]);
        // Merged changes are in the stream too, with positions above the earlier ones.
        let (_dir2, b) = replica(2);
        b.apply(&space, b"k9", Op::Put(b"9".to_vec())).await.unwrap();
        let state = b.get_bytes(&space, b"k9").unwrap().unwrap();
        a.merge(&space, b"k9", &state).unwrap();
        let StreamPage::Changes(merged, _) = a.stream_changes(&space, 4, 5, (100, usize::MAX), |_| true).unwrap()
        else {
            panic!("trimmed")
        };
        assert_eq!(merged[0].key, b"k9");
        assert!(merged[0].cursor > changes[1].cursor);
        assert_eq!(a.scan(&space, Bound::Unbounded, None, 10).unwrap().len(), 3);
    }
}
