//! Group commit for eventual writes: one flush for every write that asked for one while
//! the previous flush ran, and the change-log sequence that each flush made durable.
//!
//! A caller commits its transaction, then awaits [`Flusher::flush`]. The flusher task takes every
//! request queued so far, notes the last committed change-log sequence, flushes once and then
//! answers them all. Because sled recovers a prefix of the writes made to it, everything committed
//! before the flush started is durable when it returns: the noted sequence is published as the
//! durable sequence, which the push streams read up to (a peer is never sent a write its origin
//! could still lose).

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};

use crate::Error;

type Waiter = oneshot::Sender<Result<(), Error>>;

/// Flushes the database on behalf of many writers at once. The task starts on first use, inside
/// the caller's tokio runtime.
pub(crate) struct Flusher {
    disk: crate::Disk,
    committed: Arc<watch::Sender<u64>>,
    durable: Arc<watch::Sender<u64>>,
    queue: OnceLock<mpsc::UnboundedSender<Waiter>>,
}

impl Flusher {
    /// A flusher for `disk` that publishes `committed`'s value into `durable` after each flush.
    pub(crate) fn new(disk: crate::Disk, committed: Arc<watch::Sender<u64>>, durable: Arc<watch::Sender<u64>>) -> Self {
        Self { disk, committed, durable, queue: OnceLock::new() }
    }

    /// Returns once a flush that started after this call has completed.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.disk.clone(), rx, self.committed.clone(), self.durable.clone()));
            tx
        });
        let (done, wait) = oneshot::channel();
        if queue.send(done).is_err() {
            return Err(Error::Io("the flusher has stopped".into()));
        }
        wait.await.map_err(|_| Error::Io("the flusher has stopped".into()))?
    }
}

async fn run(
    disk: crate::Disk,
    mut queue: mpsc::UnboundedReceiver<Waiter>,
    committed: Arc<watch::Sender<u64>>,
    durable: Arc<watch::Sender<u64>>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while let Ok(next) = queue.try_recv() {
            group.push(next);
        }
        let covered = *committed.borrow();
        let result = disk.sync().await;
        if result.is_ok() {
            durable.send_if_modified(|seq| {
                let raised = covered > *seq;
                *seq = (*seq).max(covered);
                raised
            });
        }
        tracing::trace!(writes = group.len(), "eventual group commit");
        for waiter in group {
            // A writer that gave up waiting is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
