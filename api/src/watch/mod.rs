//! `Kv.Watch`: a stream of a key's or prefix's changes, from any node.
//!
//! On a strong keyspace ([`strong`]) the stream follows the Raft-applied change log in revision
//! order; on an eventual keyspace ([`eventual`]) it follows the answering node's own change
//! stream, in the order that node committed writes and merges, with an HLC cursor to resume
//! from. Both send the current state of the watched range first (a snapshot, in pages of about
//! 1 MiB) when the requested start is no longer in the change log, and continue after it.
//!
//! What one watch holds is bounded the same way on both: at most [`QUEUE`] messages wait for the
//! watcher (each one revision's events, one page of eventual changes, or one snapshot page). A
//! watcher that takes none of them for `--watch-stall-ms` is dropped: the messages already
//! queued reach it, then RESOURCE_EXHAUSTED naming where to resume from (metadata
//! [`RESUME_REVISION`] or [`RESUME_CURSOR`]). A watcher that goes away is noticed at once, even
//! when nothing it watches changes.

mod eventual;
mod strong;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::Status;

use ledge_crdt::Timestamp;
use ledge_proto::v1 as pb;

pub use eventual::start as start_eventual;
pub use strong::start;

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
}

/// Messages waiting for one watcher, plus one slot kept for the status that ends the stream.
const QUEUE: usize = 4;
/// About how many bytes one snapshot page carries.
const SNAPSHOT_PAGE_BYTES: usize = 1 << 20;
/// Metadata key of the revision a dropped watch on a strong keyspace resumes from.
pub const RESUME_REVISION: &str = "ledge-resume-revision";
/// Metadata key of the cursor a dropped watch on an eventual keyspace resumes after
/// (`physical.logical@node`).
pub const RESUME_CURSOR: &str = "ledge-resume-cursor";

/// Runs a watch's body on its own task and returns its stream: the body gets the stream's
/// [`Out`] and ends it with a status when it fails; a watcher that leaves messages untaken for
/// `stall` is dropped, and shutdown (`stopping`) ends the stream cleanly.
fn spawn<B, F>(
    stall: Duration,
    mut stopping: watch::Receiver<bool>,
    body: B,
) -> ReceiverStream<Result<pb::WatchResponse, Status>>
where
    B: FnOnce(Out) -> F + Send + 'static,
    F: Future<Output = Result<(), Stop>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE + 1);
    tokio::spawn(async move {
        // The last slot is kept for the status that ends the stream, so it gets through even
        // when the watcher stopped reading.
        let Ok(last) = tx.clone().reserve_owned().await else { return };
        let out = Out { tx: tx.clone(), stall };
        // On shutdown the stream ends cleanly (status OK) rather than being cut off.
        tokio::select! {
            result = body(out) => {
                if let Err(Stop::Fail(status)) = result {
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
struct Out {
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
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

/// Where a watch dropped before a message went would resume.
#[derive(Clone, Copy)]
enum Resume {
    /// A strong keyspace: from this revision.
    Revision(u64),
    /// An eventual keyspace: after this cursor, or (`None`) with a new watch.
    Cursor(Option<Timestamp>),
}

impl Out {
    /// Queues `msg`; `resume` is where a watch resumed after this message failed to go would
    /// start.
    async fn send(&self, msg: pb::WatchResponse, resume: Resume) -> Result<(), Stop> {
        match self.tx.send_timeout(Ok(msg), self.stall).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => Err(Stop::Gone),
            Err(SendTimeoutError::Timeout(_)) => {
                let dropped = format!(
                    "watch dropped: the watcher took no message for {} ms while changes waited",
                    self.stall.as_millis()
                );
                let mut status;
                match resume {
                    Resume::Revision(revision) => {
                        status = Status::resource_exhausted(format!(
                            "{dropped}; resume with a watch from revision {revision}"
                        ));
                        status.metadata_mut().insert(RESUME_REVISION, MetadataValue::from(revision));
                    }
                    Resume::Cursor(Some(cursor)) => {
                        status =
                            Status::resource_exhausted(format!("{dropped}; resume with a watch from cursor {cursor}"));
                        if let Ok(value) = cursor.to_string().parse() {
                            status.metadata_mut().insert(RESUME_CURSOR, value);
                        }
                    }
                    Resume::Cursor(None) => {
                        status = Status::resource_exhausted(format!(
                            "{dropped}; resume with a new watch (no message carried a cursor yet)"
                        ));
                    }
                }
                Err(Stop::Fail(status))
            }
        }
    }
}
