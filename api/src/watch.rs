//! `Kv.Watch`: a stream of a key's or prefix's changes in revision order, from any node.
//!
//! The stream first catches up from the node's change log, starting at the requested revision;
//! if that revision was already compacted (or arrived at this node inside a Raft snapshot), it
//! sends the current state of the watched range as a snapshot (in pages of about 1 MiB, all
//! labelled with one revision) and continues after it. Then it follows changes as they are
//! applied. The subscription to applied changes is taken before the catch-up, so nothing falls
//! between the two; a revision already sent is never sent again. When the live feed falls
//! behind (a slow watcher), or left a change out to stay within the node's memory budget, the
//! stream catches up from the change log again rather than dropping anything.
//!
//! What one watch holds is bounded: at most [`QUEUE`] messages wait for the watcher (each one
//! revision's events or one snapshot page). A watcher that takes none of them for
//! `--watch-stall-ms` is dropped: the messages already queued reach it, then RESOURCE_EXHAUSTED
//! naming the revision to resume from. A watcher that goes away is noticed at once, even when
//! nothing it watches changes.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::Status;

use ledge_consensus::Node;
use ledge_proto::v1 as pb;
use ledge_store::{keycode, Change, Fed, StateMachine};

use crate::convert;

/// What a watch follows.
#[derive(Clone)]
struct Filter {
    keyspace: String,
    key: Vec<u8>,
    prefix: bool,
}

impl Filter {
    fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key.as_slice()
        }
    }

    /// The watched events of a change, as a stream message, if any.
    fn message(&self, change: &Change) -> Option<pb::WatchResponse> {
        if change.keyspace != self.keyspace {
            return None;
        }
        let events: Vec<pb::WatchEvent> = change
            .events
            .iter()
            .filter(|e| self.matches(&e.key))
            .map(|e| pb::WatchEvent {
                kind: match e.value {
                    Some(_) => pb::watch_event::Kind::Put,
                    None => pb::watch_event::Kind::Delete,
                } as i32,
                key: e.key.clone(),
                value: e.value.clone().unwrap_or_default(),
                revision: change.revision,
            })
            .collect();
        (!events.is_empty()).then(|| pb::WatchResponse {
            snapshot: false,
            kvs: Vec::new(),
            events,
            revision: change.revision,
            more: false,
        })
    }
}

/// Page size when reading the change log.
const CATCH_UP_PAGE: usize = 1000;
/// Messages waiting for one watcher, plus one slot kept for the status that ends the stream.
const QUEUE: usize = 4;
/// About how many bytes one snapshot page carries.
const SNAPSHOT_PAGE_BYTES: usize = 1 << 20;
/// Metadata key of the revision a dropped watch resumes from.
pub const RESUME_REVISION: &str = "ledge-resume-revision";

/// Starts a watch and returns its stream; a watcher that leaves messages untaken for `stall`
/// is dropped.
pub fn start(
    node: Node,
    keyspace: String,
    key: Vec<u8>,
    prefix: bool,
    from: u64,
    stall: Duration,
    mut stopping: watch::Receiver<bool>,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(QUEUE + 1);
    let filter = Filter { keyspace, key, prefix };
    tokio::spawn(async move {
        // The last slot is kept for the status that ends the stream, so it gets through even
        // when the watcher stopped reading.
        let Ok(last) = tx.clone().reserve_owned().await else { return };
        let out = Out { tx: &tx, stall };
        // On shutdown the stream ends cleanly (status OK) rather than being cut off.
        tokio::select! {
            result = run(node.state().clone(), filter, from, &out) => {
                if let Err(status) = result {
                    last.send(Err(status));
                }
            }
            _ = stopped(&mut stopping) => {}
            // The watcher went away: stop now, not at the next change it would have been sent.
            _ = tx.closed() => {}
        }
    });
    ReceiverStream::new(rx)
}

/// Completes once `stopping` turns true (never, if its sender is gone without doing so).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        if stopping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Where a watch's messages go.
struct Out<'a> {
    tx: &'a mpsc::Sender<Result<pb::WatchResponse, Status>>,
    stall: Duration,
}

/// Why a watch stopped sending.
enum Stop {
    /// The watcher went away: stop quietly.
    Gone,
    /// End the stream with this status.
    Fail(Status),
}

impl From<Status> for Stop {
    fn from(status: Status) -> Self {
        Stop::Fail(status)
    }
}

impl Out<'_> {
    /// Queues `msg`; `resume` is the revision a watch resumed after this message failed to go
    /// would start from.
    async fn send(&self, msg: pb::WatchResponse, resume: u64) -> Result<(), Stop> {
        match self.tx.send_timeout(Ok(msg), self.stall).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => Err(Stop::Gone),
            Err(SendTimeoutError::Timeout(_)) => {
                let mut status = Status::resource_exhausted(format!(
                    "watch dropped: the watcher took no message for {} ms while changes waited; \
                     resume with a watch from revision {resume}",
                    self.stall.as_millis()
                ));
                status.metadata_mut().insert(RESUME_REVISION, MetadataValue::from(resume));
                Err(Stop::Fail(status))
            }
        }
    }
}

async fn run(sm: StateMachine, filter: Filter, from: u64, out: &Out<'_>) -> Result<(), Status> {
    match follow(sm, filter, from, out).await {
        Ok(()) | Err(Stop::Gone) => Ok(()),
        Err(Stop::Fail(status)) => Err(status),
    }
}

async fn follow(sm: StateMachine, filter: Filter, from: u64, out: &Out<'_>) -> Result<(), Stop> {
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
        if let Some(msg) = filter.message(change) {
            out.send(msg, resume).await?;
        }
    }
}

/// Sends everything from `next` that the change log holds (after a snapshot of the range if
/// `next` was compacted), advancing `next`.
async fn catch_up(sm: &StateMachine, filter: &Filter, next: &mut u64, out: &Out<'_>) -> Result<(), Stop> {
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
            if let Some(msg) = filter.message(&change) {
                out.send(msg, resume).await?;
            }
        }
    }
}

/// Sends the watched range's current state in pages and returns the revision it is labelled
/// with. Reads are not isolated from applies, so the snapshot carries the revision applied
/// before its first page: every change after it follows as an event, and a value a page saw
/// early is simply set again by its event. `resume` is where a dropped watch would start over.
async fn snapshot(sm: &StateMachine, filter: &Filter, resume: u64, out: &Out<'_>) -> Result<u64, Stop> {
    let revision = sm.applied_revision();
    let page = |kvs, more| pb::WatchResponse { snapshot: true, kvs, events: Vec::new(), revision, more };
    if !filter.prefix {
        let row = sm.get(&filter.keyspace, &filter.key).map_err(convert::store_status)?;
        let kvs = row.map(|v| convert::key_value(filter.key.clone(), v, false)).into_iter().collect();
        out.send(page(kvs, false), resume).await?;
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
        out.send(page(kvs, more), resume).await?;
        if !more {
            return Ok(revision);
        }
    }
}
