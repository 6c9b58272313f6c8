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
//!
//! Memory: the bytes of writes queued here or in a proposal in flight are bounded by the
//! `requests` share of the node's memory budget. A writer waits (in order of arrival) for room
//! until its deadline, then is refused with `Busy` — nothing proposed. A write larger than the
//! whole share waits until it is alone.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use ledge_store::{Command, Outcome, Part, Proposal, Request, TypeConfig, Usage};

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
    /// Room taken in the `requests` share until the write is answered.
    room: Room,
}

/// Bytes of a queued write counted against the `requests` share; given back on drop.
struct Room {
    _permit: OwnedSemaphorePermit,
    usage: Usage,
    bytes: u64,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.usage.sub(Part::Requests, self.bytes);
    }
}

/// Room is counted in KiB so that a share of many GiB fits a semaphore.
const UNIT: u64 = 1024;

/// Queues writes for the batcher task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
    room: Arc<Semaphore>,
    /// Units in `room` when nothing is queued.
    units: u32,
    usage: Usage,
}

impl Batcher {
    /// Starts the batcher task for `raft` on the current runtime, with `limit` bytes of room
    /// for queued writes.
    pub(crate) fn start(raft: Raft<TypeConfig>, limit: u64, usage: Usage) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(run(raft, rx));
        let units = u32::try_from((limit / UNIT).max(1)).unwrap_or(u32::MAX);
        Self { queue, room: Arc::new(Semaphore::new(units as usize)), units, usage }
    }

    /// Queues `request` once there is room for it (waiting no later than `deadline`); the
    /// receiver yields its outcome once applied. Refuses (nothing proposed) when there is no
    /// room by the deadline, the queue is full or the batcher has stopped.
    pub(crate) async fn submit(
        &self,
        request: Request,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<Outcome, Error>>, Error> {
        let (reply, rx) = oneshot::channel();
        let size = request.size();
        let want = u32::try_from((size as u64).div_ceil(UNIT).max(1)).unwrap_or(u32::MAX).min(self.units);
        let permit = match tokio::time::timeout_at(deadline, self.room.clone().acquire_many_owned(want)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::Unavailable("the node is stopping".into())),
            Err(_) => {
                return Err(Error::Busy(format!(
                    "a write of {size} bytes found no room: {} bytes of writes already wait for the leader (memory \
                     budget share {} bytes)",
                    self.usage.get(Part::Requests).unwrap_or(0),
                    u64::from(self.units) * UNIT
                )))
            }
        };
        self.usage.add(Part::Requests, size as u64);
        let room = Room { _permit: permit, usage: self.usage.clone(), bytes: size as u64 };
        match self.queue.try_send(Pending { request, size, reply, room }) {
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
    let mut rooms = Vec::with_capacity(batch.len());
    let (requests, replies): (Vec<Request>, Vec<Reply>) = batch
        .into_iter()
        .map(|p| {
            rooms.push(p.room);
            (p.request, p.reply)
        })
        .unzip();
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
