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

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::time::Instant;

use ledge_store::{Command, NodeId, Response};

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
        let m = self.raft().metrics().borrow().clone();
        if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().count() <= 1 {
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
        self.write_until(cmd, Instant::now() + self.request_timeout()).await
    }

    /// [`Node::write`] with an explicit deadline.
    pub async fn write_until(&self, cmd: Command, deadline: Instant) -> Result<(u64, Response), Error> {
        loop {
            let result = match self.write_local(cmd.clone(), deadline).await {
                Err(Error::NotLeader { leader_id: Some(id), leader_addr: Some(addr) }) if id != self.id() => {
                    self.peers().propose(&addr, id, &cmd, remaining(deadline)).await
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

    /// Proposes `cmd` if this node is the leader.
    pub(crate) async fn write_local(&self, cmd: Command, deadline: Instant) -> Result<(u64, Response), Error> {
        self.check_quorum()?;
        let timeout = remaining(deadline);
        match tokio::time::timeout(timeout, self.raft().client_write(cmd)).await {
            Err(_) => Err(Error::Indeterminate(format!(
                "write not confirmed by a quorum within {timeout:?}; it may still be applied"
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(not_leader(f)),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(Error::Unavailable(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(e.into()),
            Ok(Ok(reply)) => match reply.data {
                Response::Rejected(e) => Err(Error::Rejected(e)),
                data => Ok((reply.log_id.index, data)),
            },
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
                        Ok(index) => self.wait_applied(index, remaining(deadline)).await,
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

    /// On the leader: confirms leadership with a quorum and returns the read index (the local
    /// state machine has applied it when this returns).
    pub(crate) async fn read_index_local(&self, deadline: Instant) -> Result<u64, Error> {
        self.check_quorum()?;
        let timeout = remaining(deadline);
        match tokio::time::timeout(timeout, self.raft().ensure_linearizable()).await {
            Err(_) => Err(Error::Unavailable(format!("could not confirm leadership with a quorum within {timeout:?}"))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => Err(not_leader(f)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(Error::Unavailable(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(e.into()),
            Ok(Ok(read_log_id)) => Ok(read_log_id.map(|id| id.index).unwrap_or(0)),
        }
    }

    /// Waits until the local state machine has applied `revision`, up to `timeout`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<u64, Error> {
        if self.state().applied_revision() >= revision {
            return Ok(self.state().applied_revision());
        }
        self.raft().wait(Some(timeout)).applied_index_at_least(Some(revision), "session read").await.map_err(|e| {
            Error::Unavailable(format!(
                "replica has not applied revision {revision} within {timeout:?} (applied {}): {e}",
                self.state().applied_revision()
            ))
        })?;
        Ok(self.state().applied_revision())
    }
}
