//! Push streams: every write a node takes is sent to each region peer as soon as it is durable.
//!
//! One task per peer tails the change log from the peer's cursor up to the durable sequence,
//! sends the records this node originated in batches (`Merge`, one in flight at a time), and
//! advances the cursor when the peer replies, which it does only once the states are durable
//! there. The cursor is the peer's acknowledgement: a write at sequence `s` is held by the peer
//! once the cursor reaches `s`, which is what `quorum` and `all` writes wait for. It is persisted,
//! so a restarted node resumes where it stopped.
//!
//! Nothing is dropped: a peer that cannot be reached is retried with backoff while the change log
//! keeps its records. If the log is trimmed past the cursor (the peer was gone for longer than the
//! log's retention), the stream skips ahead and anti-entropy, woken at once, repairs the gap. A
//! peer that answers again after failures also wakes anti-entropy (a reconnect).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use ledge_crdt::sync::{Remote, Request, Response, Shipped, MAX_BATCH_BYTES};
use ledge_crdt::Replica;

use super::remote::GrpcRemote;

/// Most records in one push.
const BATCH: usize = 1024;
/// The longest pause between attempts to reach a peer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// This node's link to one region peer.
pub(crate) struct Link {
    pub(crate) remote: GrpcRemote,
    /// The peer's push cursor: every record up to it that this node originated is durable there.
    pub(crate) acked: watch::Sender<u64>,
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

impl Link {
    /// Opens the link to the peer behind `remote` and starts its push stream; `kick` wakes
    /// anti-entropy.
    pub(crate) fn start(replica: &Replica, remote: GrpcRemote, kick: Arc<Notify>) -> Arc<Link> {
        let peer = remote.target();
        let cursor = match replica.store().meta(&cursor_key(peer)) {
            Ok(Some(bytes)) => bytes.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            _ => 0,
        };
        let link = Arc::new(Link {
            remote,
            acked: watch::Sender::new(cursor),
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
        *self.acked.borrow()
    }

    /// Records the outcome of a call; a peer answering again after failures wakes anti-entropy.
    pub(crate) fn reached(&self, ok: bool, kick: &Notify) {
        let was = self.reachable.swap(ok, Ordering::SeqCst);
        if ok && !was {
            kick.notify_one();
        }
    }
}

async fn push(link: Arc<Link>, replica: Replica, kick: Arc<Notify>) {
    let peer = link.remote.target();
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
                kick.notify_one();
            }
            Ok(None) => {
                cursor = upto;
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
            continue;
        };
        let live = replica.spaces().unwrap_or_default();
        let entries: Vec<Shipped> = batch
            .into_iter()
            .filter(|(_, record)| record.local && live.contains(&record.space))
            .map(|(_, record)| Shipped { space: record.space, key: record.key, state: record.state })
            .collect();
        if !entries.is_empty() {
            let (count, bytes) =
                (entries.len() as u64, entries.iter().map(|e| e.key.len() + e.state.len()).sum::<usize>());
            let request = Request::Merge { entries };
            match link.remote.call(request).await {
                Ok(Response::Merged { .. }) => {
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
        link.acked.send_replace(cursor);
        if let Err(e) = replica.store().put_meta(&cursor_key(peer), &cursor.to_be_bytes()) {
            tracing::warn!(peer, "saving the push cursor: {e}");
        }
    }
}
