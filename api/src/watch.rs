//! `Kv.Watch`: a stream of a key's or prefix's changes in revision order, from any node.
//!
//! The stream first catches up from the node's change log, starting at the requested revision;
//! if that revision was already compacted (or arrived at this node inside a Raft snapshot), it
//! sends the current state of the watched range as one snapshot message and continues after it.
//! Then it follows changes as they are applied. The subscription to applied changes is taken
//! before the catch-up, so nothing falls between the two; a revision already sent is never sent
//! again. When the live feed falls behind (a slow watcher), or left a change out to stay within
//! the node's memory budget, the stream catches up from the change log again rather than
//! dropping anything.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
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
        })
    }
}

/// Page size when reading the change log.
const CATCH_UP_PAGE: usize = 1000;

/// Starts a watch and returns its stream.
pub fn start(
    node: Node,
    keyspace: String,
    key: Vec<u8>,
    prefix: bool,
    from: u64,
    mut stopping: watch::Receiver<bool>,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(256);
    let filter = Filter { keyspace, key, prefix };
    tokio::spawn(async move {
        // On shutdown the stream ends cleanly (status OK) rather than being cut off.
        tokio::select! {
            result = run(node.state().clone(), filter, from, &tx) => {
                if let Err(status) = result {
                    let _ = tx.send(Err(status)).await;
                }
            }
            _ = stopped(&mut stopping) => {}
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

type Sender = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// Error meaning the watcher went away: stop quietly.
struct Gone;

async fn send(tx: &Sender, msg: pb::WatchResponse) -> Result<(), Gone> {
    tx.send(Ok(msg)).await.map_err(|_| Gone)
}

async fn run(sm: StateMachine, filter: Filter, from: u64, tx: &Sender) -> Result<(), Status> {
    let mut live = sm.subscribe();
    let mut next = if from == 0 { sm.applied_revision() + 1 } else { from };
    if catch_up(&sm, &filter, &mut next, tx).await.is_err() {
        return Ok(());
    }
    loop {
        let fed: Arc<Fed> = match live.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if catch_up(&sm, &filter, &mut next, tx).await.is_err() {
                    return Ok(());
                }
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
            if catch_up(&sm, &filter, &mut next, tx).await.is_err() {
                return Ok(());
            }
            continue;
        }
        next = change.revision + 1;
        if let Some(msg) = filter.message(change) {
            if send(tx, msg).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Sends everything from `next` that the change log holds (after a snapshot of the range if
/// `next` was compacted), advancing `next`.
async fn catch_up(sm: &StateMachine, filter: &Filter, next: &mut u64, tx: &Sender) -> Result<(), Gone> {
    loop {
        let compacted = sm.compacted_before().unwrap_or(u64::MAX);
        if *next < compacted {
            let msg = match snapshot(sm, filter) {
                Ok(msg) => msg,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return Err(Gone);
                }
            };
            *next = msg.revision + 1;
            send(tx, msg).await?;
        }
        let changes = match sm.changes_since(*next, CATCH_UP_PAGE) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(convert::store_status(e))).await;
                return Err(Gone);
            }
        };
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
            *next = change.revision + 1;
            if let Some(msg) = filter.message(&change) {
                send(tx, msg).await?;
            }
        }
    }
}

/// The watched range's current state. Reads are not isolated from applies, so the snapshot is
/// labelled with the revision applied before the scan: every change after it follows as an
/// event, and a value the scan saw early is simply set again by its event.
fn snapshot(sm: &StateMachine, filter: &Filter) -> Result<pb::WatchResponse, Status> {
    let mut attempt = 0;
    loop {
        let before = sm.applied_revision();
        let rows = if filter.prefix {
            let end = keycode::prefix_end(&filter.key);
            sm.scan(&filter.keyspace, std::ops::Bound::Included(filter.key.clone()), end, usize::MAX)
        } else {
            sm.get(&filter.keyspace, &filter.key).map(|v| v.map(|v| (filter.key.clone(), v)).into_iter().collect())
        }
        .map_err(convert::store_status)?;
        attempt += 1;
        if sm.applied_revision() == before || attempt == 3 {
            let kvs = rows.into_iter().map(|(k, v)| convert::key_value(k, v, false)).collect();
            return Ok(pb::WatchResponse { snapshot: true, kvs, events: Vec::new(), revision: before });
        }
    }
}
