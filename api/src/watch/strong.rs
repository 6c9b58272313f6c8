//! Watches on strong keyspaces.
//!
//! The stream first catches up from the node's change log, starting at the requested revision;
//! if that revision was already compacted (or arrived at this node inside a Raft snapshot), it
//! sends the current state of the watched range as a snapshot (all pages labelled with one
//! revision) and continues after it. Then it follows changes as they are applied. The
//! subscription to applied changes is taken before the catch-up, so nothing falls between the
//! two; a revision already sent is never sent again. When the live feed falls behind (a slow
//! watcher), or left a change out to stay within the node's memory budget, the stream catches
//! up from the change log again rather than dropping anything.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use ledge_consensus::Node;
use ledge_proto::v1 as pb;
use ledge_store::{keycode, Change, Fed, StateMachine};

use super::{spawn, Filter, Out, Resume, Stop, SNAPSHOT_PAGE_BYTES};
use crate::convert;

/// Page size when reading the change log.
const CATCH_UP_PAGE: usize = 1000;

/// Starts a watch of a strong keyspace from revision `from` (0: from now) and returns its
/// stream; a watcher that leaves messages untaken for `stall` is dropped.
pub fn start(
    node: Node,
    keyspace: String,
    key: Vec<u8>,
    prefix: bool,
    from: u64,
    stall: Duration,
    stopping: watch::Receiver<bool>,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let filter = Filter { keyspace, key, prefix };
    spawn(stall, stopping, move |out| async move { follow(node.state().clone(), filter, from, &out).await })
}

/// The watched events of a change, as a stream message, if any.
fn message(filter: &Filter, change: &Change) -> Option<pb::WatchResponse> {
    if change.keyspace != filter.keyspace {
        return None;
    }
    let events: Vec<pb::WatchEvent> = change
        .events
        .iter()
        .filter(|e| filter.matches(&e.key))
        .map(|e| pb::WatchEvent {
            kind: match e.value {
                Some(_) => pb::watch_event::Kind::Put,
                None => pb::watch_event::Kind::Delete,
            } as i32,
            key: e.key.clone(),
            value: e.value.clone().unwrap_or_default(),
            revision: change.revision,
            kv: None,
        })
        .collect();
    (!events.is_empty()).then(|| pb::WatchResponse {
        snapshot: false,
        kvs: Vec::new(),
        events,
        revision: change.revision,
        more: false,
        cursor: None,
    })
}

async fn follow(sm: StateMachine, filter: Filter, from: u64, out: &Out) -> Result<(), Stop> {
    let mut live = sm.subscribe();
    let mut next = if from == 0 { sm.applied_revision() + 1 } else { from };
    catch_up(&sm, &filter, &mut next, out).await?;
    loop {
        let fed: Arc<Fed> = match live.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                catch_up(&sm, &filter, &mut next, out).await?;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        let change = fed.change();
        if change.revision < next {
            continue;
        }
        // Left out of the feed to stay within the memory budget (the change log has it), or a
        // snapshot installed under us replaced history: resume from the change log.
        if fed.elided() || sm.compacted_before().map_err(convert::store_status)? > next {
            catch_up(&sm, &filter, &mut next, out).await?;
            continue;
        }
        let resume = next;
        next = change.revision + 1;
        if let Some(msg) = message(&filter, change) {
            out.send(msg, Resume::Revision(resume)).await?;
        }
    }
}

/// Sends everything from `next` that the change log holds (after a snapshot of the range if
/// `next` was compacted), advancing `next`.
async fn catch_up(sm: &StateMachine, filter: &Filter, next: &mut u64, out: &Out) -> Result<(), Stop> {
    loop {
        let compacted = sm.compacted_before().unwrap_or(u64::MAX);
        if *next < compacted {
            *next = snapshot(sm, filter, *next, out).await? + 1;
        }
        let changes = sm.changes_since(*next, CATCH_UP_PAGE).map_err(convert::store_status)?;
        // The change log may have been compacted while we read it: look again.
        if sm.compacted_before().unwrap_or(u64::MAX) > *next {
            continue;
        }
        if changes.is_empty() {
            return Ok(());
        }
        for change in changes {
            if change.revision < *next {
                continue;
            }
            let resume = *next;
            *next = change.revision + 1;
            if let Some(msg) = message(filter, &change) {
                out.send(msg, Resume::Revision(resume)).await?;
            }
        }
    }
}

/// Sends the watched range's current state in pages and returns the revision it is labelled
/// with. Reads are not isolated from applies, so the snapshot carries the revision applied
/// before its first page: every change after it follows as an event, and a value a page saw
/// early is simply set again by its event. `resume` is where a dropped watch would start over.
async fn snapshot(sm: &StateMachine, filter: &Filter, resume: u64, out: &Out) -> Result<u64, Stop> {
    let revision = sm.applied_revision();
    let page = |kvs, more| pb::WatchResponse { snapshot: true, kvs, events: Vec::new(), revision, more, cursor: None };
    if !filter.prefix {
        let row = sm.get(&filter.keyspace, &filter.key).map_err(convert::store_status)?;
        let kvs = row.map(|v| convert::key_value(filter.key.clone(), v, false)).into_iter().collect();
        out.send(page(kvs, false), Resume::Revision(resume)).await?;
        return Ok(revision);
    }
    let end = keycode::prefix_end(&filter.key);
    let mut start = Bound::Included(filter.key.clone());
    loop {
        let mut rows = sm
            .scan_bytes(&filter.keyspace, start.clone(), end.clone(), usize::MAX, SNAPSHOT_PAGE_BYTES)
            .map_err(convert::store_status)?;
        // The scan stopped at the page bound: the row that crossed it opens the next page
        // (unless it is alone).
        let more = rows.iter().map(|(k, v)| v.row_bytes(k)).sum::<usize>() > SNAPSHOT_PAGE_BYTES;
        if more && rows.len() > 1 {
            rows.pop();
        }
        if let Some((last, _)) = rows.last() {
            start = Bound::Excluded(last.clone());
        }
        let kvs = rows.into_iter().map(|(k, v)| convert::key_value(k, v, false)).collect();
        out.send(page(kvs, more), Resume::Revision(resume)).await?;
        if !more {
            return Ok(revision);
        }
    }
}
