//! Push streams: every write a node takes is sent to each region peer as soon as it is durable.
//!
//! One task per peer tails the change log from the peer's cursor up to the durable sequence,
//! sends the records this node originated in batches (`Merge`, one in flight at a time), and
//! advances the cursor when the peer replies, which it does only once the states are durable
//! there. The cursor is persisted, so a restarted node resumes where it stopped.
//!
//! What the peer holds ([`Held`]) is what `quorum` and `all` writes wait for: a write at sequence
//! `s` is held once the cursor passed `s` *and* the state was sent and stored. The stream passes
//! some records without the peer storing them — a gap skipped after a trim, a state the peer
//! refused (its keyspace dropped there, a late copy of something it collected), a record of a
//! keyspace no longer live here — and remembers those as missing, so they never count.
//!
//! Nothing is dropped: a peer that cannot be reached is retried with backoff while the change log
//! keeps its records. If the log is trimmed past the cursor (the peer was gone for longer than the
//! log's retention), the stream skips ahead and anti-entropy, woken at once, repairs the gap. A
//! peer that answers again after failures also wakes anti-entropy (a reconnect).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::Peer;
use crate::sync::{Request, Response, Shipped, MAX_BATCH_BYTES};
use crate::Replica;

/// Most records in one push.
const BATCH: usize = 1024;
/// The longest pause between attempts to reach a peer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Most ranges of missing records remembered per peer; past it the oldest are forgotten and
/// writes below them count as not held.
const MAX_MISSING: usize = 1024;

/// What a peer holds of this node's change log, as its push stream learned it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// Every record up to here was dealt with: sent and stored, or remembered as missing.
    cursor: u64,
    /// Records at or below `cursor` the peer does not hold: disjoint ranges, oldest first.
    missing: VecDeque<(u64, u64)>,
    /// Below this nothing is known (records passed before this process started, or ranges
    /// forgotten past [`MAX_MISSING`]).
    known_from: u64,
}

impl Held {
    /// Starts at a persisted cursor: what came before it is not known.
    pub(crate) fn resume(cursor: u64) -> Self {
        Held { cursor, missing: VecDeque::new(), known_from: cursor + 1 }
    }

    /// Whether the peer durably holds the record at `seq`.
    pub(crate) fn holds(&self, seq: u64) -> bool {
        seq <= self.cursor && seq >= self.known_from && !self.missing.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    /// Moves the cursor to `to`; the records in `missing` (ascending, above the old cursor, up
    /// to `to`) are remembered as not held.
    pub(crate) fn advance(&mut self, to: u64, missing: impl IntoIterator<Item = u64>) {
        for seq in missing {
            self.remember(seq, seq);
        }
        self.cursor = self.cursor.max(to);
    }

    /// Moves the cursor to `to` over records that were never sent.
    pub(crate) fn skip(&mut self, to: u64) {
        if to > self.cursor {
            self.remember(self.cursor + 1, to);
            self.cursor = to;
        }
    }

    fn remember(&mut self, from: u64, to: u64) {
        match self.missing.back_mut() {
            Some((_, end)) if *end + 1 >= from => *end = (*end).max(to),
            _ => self.missing.push_back((from, to)),
        }
        while self.missing.len() > MAX_MISSING {
            if let Some((_, end)) = self.missing.pop_front() {
                self.known_from = self.known_from.max(end + 1);
            }
        }
    }

    /// The cursor.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }
}

/// This node's link to one region peer.
pub(crate) struct Link<P> {
    pub(crate) remote: P,
    /// What the peer durably holds of this node's writes.
    pub(crate) acked: watch::Sender<Held>,
    /// Whether the last call to the peer succeeded.
    pub(crate) reachable: AtomicBool,
    /// Anti-entropy sessions completed with the peer, and their traffic.
    pub(crate) sessions: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// States pushed, and their bytes (keys and states).
    pub(crate) pushed_entries: AtomicU64,
    pub(crate) pushed_bytes: AtomicU64,
    stop: watch::Sender<bool>,
}

fn cursor_key(peer: u64) -> Vec<u8> {
    let mut key = b"push/".to_vec();
    key.extend_from_slice(&peer.to_be_bytes());
    key
}

impl<P: Peer> Link<P> {
    /// Opens the link to the peer behind `remote` and starts its push stream; `kick` wakes
    /// anti-entropy.
    pub(crate) fn start(replica: &Replica, remote: P, kick: Arc<Notify>) -> Arc<Link<P>> {
        let peer = remote.peer();
        let cursor = match replica.store().meta(&cursor_key(peer)) {
            Ok(Some(bytes)) => bytes.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            _ => 0,
        };
        let link = Arc::new(Link {
            remote,
            acked: watch::Sender::new(Held::resume(cursor)),
            reachable: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            pushed_entries: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
            stop: watch::Sender::new(false),
        });
        tokio::spawn(push(link.clone(), replica.clone(), kick));
        link
    }

    /// Stops the push stream (the peer left the region).
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The peer's push cursor.
    pub(crate) fn cursor(&self) -> u64 {
        self.acked.borrow().cursor()
    }

    /// Records the outcome of a call; a peer answering again after failures wakes anti-entropy.
    pub(crate) fn reached(&self, ok: bool, kick: &Notify) {
        let was = self.reachable.swap(ok, Ordering::SeqCst);
        if ok && !was {
            kick.notify_one();
        }
    }
}

async fn push<P: Peer>(link: Arc<Link<P>>, replica: Replica, kick: Arc<Notify>) {
    let peer = link.remote.peer();
    let mut durable = replica.store().durable();
    let mut stop = link.stop.subscribe();
    let mut backoff = Duration::from_millis(50);
    let mut cursor = link.cursor();
    loop {
        if *stop.borrow() {
            return;
        }
        let upto = *durable.borrow_and_update();
        if cursor >= upto {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            continue;
        }
        match replica.store().first_change() {
            Ok(Some(first)) if first > cursor + 1 => {
                tracing::info!(peer, cursor, first, "push stream fell behind the change log; anti-entropy repairs");
                cursor = first - 1;
                link.acked.send_modify(|held| held.skip(cursor));
                kick.notify_one();
            }
            Ok(None) => {
                cursor = upto;
                link.acked.send_modify(|held| held.skip(cursor));
                kick.notify_one();
            }
            _ => {}
        }
        let batch = match replica.store().changes(cursor, upto, BATCH, MAX_BATCH_BYTES) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(peer, "reading the change log: {e}");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            cursor = upto;
            link.acked.send_modify(|held| held.skip(cursor));
            continue;
        };
        let live = match replica.spaces() {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(peer, "reading the catalog: {e}");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        // Merged states are the peers' own writes, not sent; records of a keyspace no longer
        // live here are not sent either, and are not held by the peer.
        let mut missing = Vec::new();
        let mut seqs = Vec::new();
        let mut entries = Vec::new();
        for (seq, record) in batch.into_iter().filter(|(_, record)| record.local) {
            if live.contains(&record.space) {
                seqs.push(seq);
                entries.push(Shipped { space: record.space, key: record.key, state: record.state });
            } else {
                missing.push(seq);
            }
        }
        if !entries.is_empty() {
            let (count, bytes) =
                (entries.len() as u64, entries.iter().map(|e| e.key.len() + e.state.len()).sum::<usize>());
            let request = Request::Merge { entries };
            match link.remote.call(request).await {
                Ok(Response::Merged { refused, .. }) => {
                    missing.extend(refused.iter().filter_map(|&i| seqs.get(i as usize).copied()));
                    missing.sort_unstable();
                    backoff = Duration::from_millis(50);
                    link.pushed_entries.fetch_add(count, Ordering::Relaxed);
                    link.pushed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                    link.reached(true, &kick);
                }
                other => {
                    if let Err(e) = other {
                        tracing::debug!(peer, "push: {e}");
                    }
                    link.reached(false, &kick);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        cursor = last;
        link.acked.send_modify(|held| held.advance(cursor, missing));
        if let Err(e) = replica.store().put_meta(&cursor_key(peer), &cursor.to_be_bytes()) {
            tracing::warn!(peer, "saving the push cursor: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_only_what_it_was_sent_and_stored() {
        let mut held = Held::resume(10);
        assert!(!held.holds(10), "what came before this process is not known");
        assert!(!held.holds(11));
        held.advance(20, [13, 14, 17]);
        assert!(held.holds(11) && held.holds(12) && held.holds(15) && held.holds(20));
        assert!(!held.holds(13) && !held.holds(14) && !held.holds(17) && !held.holds(21));
        // A gap skipped after a trim: passed, never sent.
        held.skip(30);
        assert!((21..=30).all(|seq| !held.holds(seq)));
        assert_eq!(held.cursor(), 30);
        held.advance(31, []);
        assert!(held.holds(31));
        assert_eq!(held.missing, VecDeque::from([(13, 14), (17, 17), (21, 30)]));
    }

    #[test]
    fn forgotten_ranges_count_as_not_held() {
        let mut held = Held::default();
        let mut seq = 0;
        for _ in 0..MAX_MISSING + 5 {
            held.advance(seq + 2, [seq + 1]);
            seq += 2;
        }
        assert_eq!(held.missing.len(), MAX_MISSING);
        assert!(!held.holds(2), "below the remembered ranges nothing is known");
        assert!(held.holds(seq));
        assert!(!held.holds(seq - 1));
    }
}
