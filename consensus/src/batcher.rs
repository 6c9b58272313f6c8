//! The leader's write batcher: concurrent writes become one Raft proposal.
//!
//! openraft 0.9 turns every `client_write` into its own log entry and waits for that entry's
//! flush before it takes the next, so one write per proposal means one disk sync per write. The
//! batcher sits in front of `client_write`: writes (local ones and those forwarded by followers)
//! queue here; a proposal task takes everything queued, up to [`MAX_COMMANDS`] commands and
//! [`MAX_PROPOSAL_BYTES`], and proposes it as one entry. At most [`MAX_IN_FLIGHT`] proposals are
//! in flight; while they are, new writes gather into the next one, so the batch size grows with
//! the load and a lone write waits for nobody.
//!
//! Each command of the entry is applied with its own revision and its own outcome, which goes
//! back to the writer that queued it. Catalog changes queue here too but are proposed on their
//! own (see `ledge_store`'s apply rules).

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use ledge_store::{Command, Outcome, Proposal, Request, TypeConfig};

use crate::request::not_leader;
use crate::Error;

/// Most commands in one proposal.
pub const MAX_COMMANDS: usize = 4096;
/// Most bytes of commands in one proposal (a single larger command travels alone). One entry
/// must cross to a follower within a heartbeat (openraft 0.9's AppendEntries timeout), so it
/// stays small; 1 MiB still holds thousands of typical writes.
pub const MAX_PROPOSAL_BYTES: usize = 1024 * 1024;
/// Most proposals in flight at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Most writes waiting for a proposal; more are refused as backpressure.
pub const MAX_QUEUED: usize = 65_536;

type Reply = oneshot::Sender<Result<Outcome, Error>>;

struct Pending {
    request: Request,
    size: usize,
    reply: Reply,
}

/// Queues writes for the batcher task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batcher task for `raft` on the current runtime.
    pub(crate) fn start(raft: Raft<TypeConfig>) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(run(raft, rx));
        Self { queue }
    }

    /// Queues `request`; the receiver yields its outcome once applied. Refuses at once (nothing
    /// proposed) when the queue is full or the batcher has stopped.
    pub(crate) fn submit(&self, request: Request) -> Result<oneshot::Receiver<Result<Outcome, Error>>, Error> {
        let (reply, rx) = oneshot::channel();
        let size = request.size();
        match self.queue.try_send(Pending { request, size, reply }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(Error::Busy(format!("{MAX_QUEUED} writes are already waiting for the leader's next proposal")))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Unavailable("the node is stopping".into())),
        }
    }
}

/// Whether a queued write may share a proposal with others: batches may, catalog changes are
/// proposed alone (the state machine rejects them in a larger proposal).
fn shares(p: &Pending) -> bool {
    matches!(p.request.command, Command::Batch { .. })
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A catalog change met while gathering a batch; it is proposed next, on its own.
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        // Waiting for a slot here is what lets the next batch grow while proposals are in flight.
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let alone = !shares(&first);
        let mut bytes = first.size;
        let mut batch = vec![first];
        while !alone && batch.len() < MAX_COMMANDS && bytes < MAX_PROPOSAL_BYTES {
            match rx.try_recv() {
                Ok(next) if !shares(&next) => {
                    held = Some(next);
                    break;
                }
                Ok(next) => {
                    bytes += next.size;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes one batch and answers every writer in it.
async fn propose(raft: &Raft<TypeConfig>, batch: Vec<Pending>) {
    let (requests, replies): (Vec<Request>, Vec<Reply>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let count = requests.len();
    tracing::trace!(commands = count, "proposing a batch");
    match raft.client_write(Proposal(requests)).await {
        Ok(reply) if reply.data.0.len() == count => {
            for (writer, outcome) in replies.into_iter().zip(reply.data.0) {
                // A writer that gave up waiting is not an error.
                let _ = writer.send(Ok(outcome));
            }
        }
        Ok(reply) => {
            let e =
                Error::Fatal(format!("a proposal of {count} commands was applied with {} results", reply.data.0.len()));
            answer_all(replies, e)
        }
        Err(e) => answer_all(replies, write_error(e)),
    }
}

fn answer_all(replies: Vec<Reply>, e: Error) {
    for writer in replies {
        let _ = writer.send(Err(e.clone()));
    }
}

/// Maps a `client_write` failure: refusals before the entry entered the log are clean
/// (`NotLeader`, `Unavailable`); a fatal error may come after it did, so the outcome is unknown.
fn write_error(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::Unavailable(e.to_string()),
        RaftError::Fatal(e) => {
            Error::Indeterminate(format!("raft stopped while the write was in flight; it may have been applied: {e}"))
        }
    }
}
