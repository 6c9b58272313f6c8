//! Writes and linearizable reads from any node of the region.
//!
//! On the leader, a write is proposed to openraft and awaited until applied; a read confirms
//! leadership with a quorum (`ensure_linearizable`) before reading applied state. On a follower,
//! a write is forwarded to the leader (`Raft/Propose`), and a read asks the leader for a read
//! index (`Raft/ReadIndex`), waits until the local replica has applied it, and reads locally.
//!
//! Clean refusals (`NotLeader`, `Unavailable`: nothing was proposed) are retried inside the
//! request deadline while leadership settles; a write whose fate is unknown (`Indeterminate`) is
//! never retried.

use std::time::Duration;

use openraft::error::ForwardToLeader;
use openraft::{BasicNode, ServerState};
use tokio::time::Instant;

use ledge_store::{Command, NodeId, Request, Response};

use crate::{Error, Node};

/// Pause between attempts while leadership settles.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub(crate) fn not_leader(f: ForwardToLeader<NodeId, BasicNode>) -> Error {
    Error::NotLeader { leader_id: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl Node {
    /// The error a non-leader answers with, naming the leader it knows.
    pub(crate) fn not_leader(&self) -> Error {
        match self.leader() {
            Some((id, addr)) => Error::NotLeader { leader_id: Some(id), leader_addr: Some(addr) },
            None => Error::NotLeader { leader_id: None, leader_addr: None },
        }
    }

    /// A leader that has not heard from a quorum for a while is likely on the minority side of a
    /// partition: refuse before proposing, so the refusal is clean rather than a timeout.
    fn check_quorum(&self) -> Result<(), Error> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().nth(1).is_none() {
            return Ok(());
        }
        match m.millis_since_quorum_ack {
            Some(ms) if ms > self.quorum_timeout().as_millis() as u64 => Err(Error::Unavailable(format!(
                "leader {} has not heard from a quorum for {ms} ms; the region may be partitioned",
                self.id()
            ))),
            _ => Ok(()),
        }
    }

    /// Proposes `cmd` through the leader, wherever it is, and waits until it is applied, within
    /// the node's request timeout. Returns the revision it was applied at and its result.
    pub async fn write(&self, cmd: Command) -> Result<(u64, Response), Error> {
        self.write_until(Request::new(cmd), Instant::now() + self.request_timeout()).await
    }

    /// Proposes `request` through the leader, wherever it is, and waits until it is applied or
    /// `deadline` passes. A request with an id is applied at most once however often it is
    /// retried, here or by the client.
    pub async fn write_until(&self, request: Request, deadline: Instant) -> Result<(u64, Response), Error> {
        loop {
            let result = match self.write_local(request.clone(), deadline).await {
                Err(Error::NotLeader { leader_id: Some(id), leader_addr: Some(addr) }) if id != self.id() => {
                    self.peers().propose(&addr, id, &request, remaining(deadline)).await
                }
                other => other,
            };
            match result {
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) if remaining(deadline) > RETRY_PAUSE => {
                    tracing::debug!("write refused, retrying: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes `request` if this node is the leader, through the leader's batcher.
    pub(crate) async fn write_local(&self, request: Request, deadline: Instant) -> Result<(u64, Response), Error> {
        self.check_quorum()?;
        let rx = self.batcher().submit(request, deadline).await?;
        let timeout = remaining(deadline);
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                return Err(Error::Indeterminate(format!(
                    "write not confirmed by a quorum within {timeout:?}; it may still be applied"
                )))
            }
            Ok(Err(_)) => return Err(Error::Indeterminate("the write's proposal was abandoned".into())),
            Ok(Ok(result)) => result?,
        };
        match outcome.response {
            Response::Rejected(e) => Err(Error::Rejected(e)),
            response => Ok((outcome.revision, response)),
        }
    }

    /// Makes the local replica ready for a linearizable read and returns the applied revision
    /// to read at: on the leader by confirming leadership with a quorum, on a follower by waiting
    /// for the leader's read index.
    pub async fn read_barrier(&self) -> Result<u64, Error> {
        self.read_barrier_until(Instant::now() + self.request_timeout()).await
    }

    /// [`Node::read_barrier`] with an explicit deadline.
    pub async fn read_barrier_until(&self, deadline: Instant) -> Result<u64, Error> {
        if self.unsafe_local_reads() {
            return Ok(self.state().applied_revision());
        }
        loop {
            let result = match self.read_index_local(deadline).await {
                Ok(_) => Ok(self.state().applied_revision()),
                Err(Error::NotLeader { leader_id: Some(id), leader_addr: Some(addr) }) if id != self.id() => {
                    match self.peers().read_index(&addr, id, remaining(deadline)).await {
                        Ok(index) => self.wait_applied_index(index, remaining(deadline)).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) if remaining(deadline) > RETRY_PAUSE => {
                    tracing::debug!("read barrier refused, retrying: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// On the leader: confirms leadership with a quorum (in a round shared with the other reads
    /// queued meanwhile, see `reads`) and returns the read index; the local state machine has
    /// applied it when this returns.
    pub(crate) async fn read_index_local(&self, deadline: Instant) -> Result<u64, Error> {
        self.check_quorum()?;
        let timeout = remaining(deadline);
        let rx = self.reads().submit()?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(Error::Unavailable(format!("could not confirm leadership with a quorum within {timeout:?}"))),
            Ok(Err(_)) => Err(Error::Unavailable("the read's confirmation round was abandoned".into())),
            Ok(Ok(result)) => result,
        }
    }

    /// Waits until the local state machine has applied `revision`, up to `timeout`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<u64, Error> {
        let mut applied = self.state().watch_revision();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|r| *r >= revision)).await.map(|r| r.map(|r| *r));
        match reached {
            Ok(Ok(r)) => Ok(r),
            _ => Err(Error::Unavailable(format!(
                "replica has not applied revision {revision} within {timeout:?} (applied {})",
                self.state().applied_revision()
            ))),
        }
    }

    /// Waits until the local state machine has applied the log up to `index`, up to `timeout`;
    /// returns the applied revision.
    pub(crate) async fn wait_applied_index(&self, index: u64, timeout: Duration) -> Result<u64, Error> {
        if self.state().applied_index() < index {
            self.raft().wait(Some(timeout)).applied_index_at_least(Some(index), "read index").await.map_err(|e| {
                Error::Unavailable(format!(
                    "replica has not applied log index {index} within {timeout:?} (applied {}): {e}",
                    self.state().applied_index()
                ))
            })?;
        }
        Ok(self.state().applied_revision())
    }
}
