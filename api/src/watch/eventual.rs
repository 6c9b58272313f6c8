//! Watches on eventual keyspaces.
//!
//! An eventual keyspace has no region-wide order of writes, so a watch follows the answering
//! node's own change stream (crdt/src/stream.rs): every change that node committed, whether a
//! client wrote it there or it arrived from a peer, in commit order, each carrying the key's
//! whole merged state. Only durable changes are sent, so a watcher never sees a write that a
//! crash of the node could take back. Each change is one message and carries a cursor (an HLC
//! timestamp issued by the node); a watch from that cursor on the same node continues right
//! after it, with nothing missed and nothing repeated. Started elsewhere, or after the node trimmed that part of
//! its change log, the watch first sends the current state of the watched range (a snapshot,
//! labelled with a cursor of its own) and the changes after it.

use std::ops::Bound;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use ledge_crdt::{Entry, Replica, SpaceId, StreamChange, StreamPage, Timestamp};
use ledge_proto::v1 as pb;
use ledge_store::keycode;

use super::{spawn, Filter, Out, Resume, Stop, SNAPSHOT_PAGE_BYTES};
use crate::convert;

/// Most change-log records, and about how many bytes of states, read for one message.
const PAGE: (usize, usize) = (1000, SNAPSHOT_PAGE_BYTES);
/// Most stored entries one snapshot page reads.
const SNAPSHOT_PAGE_KEYS: usize = 1000;

/// Starts a watch of eventual keyspace `space` after cursor `from` (`None`: from now) and
/// returns its stream; a watcher that leaves messages untaken for `stall` is dropped.
pub fn start(
    replica: Replica,
    space: SpaceId,
    key: Vec<u8>,
    prefix: bool,
    from: Option<Timestamp>,
    stall: Duration,
    stopping: watch::Receiver<bool>,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let filter = Filter { keyspace: space.name.clone(), key, prefix };
    spawn(stall, stopping, move |out| async move { follow(&replica, &space, &filter, from, &out).await })
}

fn failed(e: ledge_crdt::Error) -> Stop {
    Stop::Fail(convert::crdt_status(e))
}

async fn follow(
    replica: &Replica,
    space: &SpaceId,
    filter: &Filter,
    from: Option<Timestamp>,
    out: &Out,
) -> Result<(), Stop> {
    // Follows the durable end of the node's change stream; taken before the start is fixed,
    // so a change committed after it wakes the loop.
    let mut durable = replica.store().durable();
    // The cursor a dropped watch would resume after: that of the last message queued.
    let mut resume = from;
    let mut after = match from {
        None => replica.stream_mark().map_err(failed)?.0,
        Some(cursor) => match replica.stream_after(cursor).map_err(failed)? {
            Some(seq) => seq,
            None => snapshot(replica, space, filter, &mut resume, out).await?,
        },
    };
    loop {
        let upto = *durable.borrow_and_update();
        if after >= upto {
            if durable.changed().await.is_err() {
                return Ok(());
            }
            continue;
        }
        match replica.stream_changes(space, after, upto, PAGE, |key| filter.matches(key)).map_err(failed)? {
            StreamPage::Trimmed => after = snapshot(replica, space, filter, &mut resume, out).await?,
            StreamPage::Changes(changes, last) => {
                after = last;
                // One message per change, so that each carries its own cursor.
                for change in changes {
                    let cursor = change.cursor;
                    let msg = pb::WatchResponse {
                        events: vec![event(change)],
                        cursor: Some(convert::hlc(cursor)),
                        ..Default::default()
                    };
                    out.send(msg, Resume::Cursor(resume)).await?;
                    resume = Some(cursor);
                }
            }
        }
    }
}

/// A change as a watch event: the key's value, and its whole state in `kv` (without the value,
/// which is in the event already).
fn event(change: StreamChange) -> pb::WatchEvent {
    let deleted = change.entry.is_deleted();
    let mut kv = convert::eventual_kv(change.key.clone(), &change.entry, false);
    let value = std::mem::take(&mut kv.value);
    pb::WatchEvent {
        kind: if deleted { pb::watch_event::Kind::Delete } else { pb::watch_event::Kind::Put } as i32,
        key: change.key,
        value,
        revision: 0,
        kv: Some(kv),
    }
}

/// Sends the watched range's current state in pages, all labelled with one cursor, and returns
/// the change-log sequence the stream continues after. Reads are not isolated from writes: a
/// value a page saw early is simply sent again by its change.
async fn snapshot(
    replica: &Replica,
    space: &SpaceId,
    filter: &Filter,
    resume: &mut Option<Timestamp>,
    out: &Out,
) -> Result<u64, Stop> {
    let (seq, mark) = replica.stream_mark().map_err(failed)?;
    // What the pages show may include writes not yet durable: made durable first, so the
    // watcher never sees one that a crash could take back.
    replica.flush().await.map_err(failed)?;
    let cursor = Some(convert::hlc(mark));
    let page = |kvs, more| pb::WatchResponse { snapshot: true, kvs, more, cursor, ..Default::default() };
    let present = |key: Vec<u8>, entry: &Entry| (!entry.is_deleted()).then(|| convert::eventual_kv(key, entry, false));
    if !filter.prefix {
        let entry = replica.get(space, &filter.key).map_err(failed)?;
        let kvs = entry.and_then(|e| present(filter.key.clone(), &e)).into_iter().collect();
        out.send(page(kvs, false), Resume::Cursor(*resume)).await?;
    } else {
        let end = keycode::prefix_end(&filter.key);
        let mut start = Bound::Included(filter.key.clone());
        loop {
            let (states, more) = replica
                .range_states(space, start.clone(), end.clone(), SNAPSHOT_PAGE_KEYS, SNAPSHOT_PAGE_BYTES)
                .map_err(failed)?;
            if let Some((last, _)) = states.last() {
                start = Bound::Excluded(last.clone());
            }
            let mut kvs = Vec::with_capacity(states.len());
            for (key, state) in states {
                let entry = Entry::from_bytes(&state).map_err(failed)?;
                kvs.extend(present(key, &entry));
            }
            // A stretch of deleted keys makes no page of its own.
            if more && kvs.is_empty() {
                continue;
            }
            out.send(page(kvs, more), Resume::Cursor(*resume)).await?;
            if !more {
                break;
            }
        }
    }
    *resume = Some(mark);
    Ok(seq)
}
