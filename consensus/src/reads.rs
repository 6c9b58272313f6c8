//! Coalesced leadership confirmations for linearizable reads.
//!
//! A linearizable read on the leader needs a confirmation, started after the read arrived, that
//! the node still leads (a heartbeat round to a quorum, openraft's `ensure_linearizable`). One
//! round per read makes reads cost a quorum round each and queue behind each other. Instead,
//! reads queue here; one task takes every read queued so far, runs one confirmation and answers
//! them all with its read index. A read that arrives while a round is in flight waits for the
//! next round, so the round that answers it always started after it arrived: a write
//! acknowledged before the read began is always covered by the read index.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use ledge_store::TypeConfig;

use crate::request::not_leader;
use crate::Error;

/// Most reads waiting for a confirmation round; more are refused as backpressure.
pub const MAX_QUEUED_READS: usize = 65_536;

type Waiter = oneshot::Sender<Result<u64, Error>>;

/// Queues reads for the confirmation task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reads {
    queue: mpsc::Sender<Waiter>,
}

impl Reads {
    /// Starts the confirmation task for `raft`; each round is bounded by `round_timeout`.
    pub(crate) fn start(raft: Raft<TypeConfig>, round_timeout: Duration) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED_READS);
        tokio::spawn(run(raft, rx, round_timeout));
        Self { queue }
    }

    /// Queues a read; the receiver yields the read index once a round that started after this
    /// call confirmed leadership (and the local state machine applied up to it).
    pub(crate) fn submit(&self) -> Result<oneshot::Receiver<Result<u64, Error>>, Error> {
        let (waiter, rx) = oneshot::channel();
        match self.queue.try_send(waiter) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(Error::Busy(format!("{MAX_QUEUED_READS} reads are already waiting for the leader")))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Unavailable("the node is stopping".into())),
        }
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::Receiver<Waiter>, round_timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut round = vec![first];
        while let Ok(next) = rx.try_recv() {
            round.push(next);
        }
        let result = match tokio::time::timeout(round_timeout, raft.ensure_linearizable()).await {
            Err(_) => {
                Err(Error::Unavailable(format!("could not confirm leadership with a quorum within {round_timeout:?}")))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => Err(not_leader(f)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(Error::Unavailable(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(e.into()),
            Ok(Ok(read_log_id)) => Ok(read_log_id.map(|id| id.index).unwrap_or(0)),
        };
        tracing::trace!(reads = round.len(), "leadership confirmed for a round of reads");
        for waiter in round {
            // A reader that gave up waiting is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
