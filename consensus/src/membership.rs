//! Forming a region, joining it, and changing its membership.
//!
//! **Forming** (`--join SEEDS --bootstrap-expect N`, identical on every node): a node that has never
//! been part of a group asks every seed who it is (`Hello`). When it sees that some seed already
//! belongs to an initialized group, it asks that group's leader to add it. Otherwise, once it sees
//! `N` uninitialized nodes of its region (itself included), the node with the smallest id among
//! the `N` smallest ids initializes the group with those `N` as voters; the others are brought in
//! by the new leader's replication. Seeds must therefore name the region's first `N` nodes, as a
//! StatefulSet's stable names do. A node with state on disk skips all this and rejoins by itself.
//!
//! **Joining**: the leader adds a joining node as a learner. A reconciler on the leader promotes a
//! learner to voter once it has caught up, while the region has fewer voters than the maximum
//! (default 5), and finishes a joint configuration left behind by a leader that crashed mid-change.
//! Membership changes are serialized on the leader, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};

use ledge_proto::v1::HelloRequest;
use ledge_store::NodeId;

use crate::peer::MembershipChange;
use crate::{Error, Node};

/// How often discovery and the reconciler look again.
const TICK: Duration = Duration::from_millis(300);
/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_SLACK: u64 = 100;

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Error::NotLeader { leader_id: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::Unavailable(e.to_string()),
        RaftError::Fatal(e) => e.into(),
    }
}

impl Node {
    /// Discovery: finds or forms the region, and runs until this node is in a committed
    /// (applied) membership.
    ///
    /// Receiving log entries is not enough: the leader that added this node as a learner may
    /// lose leadership before the change commits, and the next leader's log does not have it.
    /// Such a node would wait forever for a leader that never contacts it, so until this node
    /// has applied a membership that names it, it keeps asking the leader its seeds know to add
    /// it. A node that was a member once never asks again: `cluster remove` is final.
    pub(crate) async fn discover(self, seeds: Vec<String>, expect: usize) {
        let me =
            HelloRequest { node_id: self.id(), address: self.address().to_string(), region: self.region().to_string() };
        let mut warned = BTreeSet::new();
        loop {
            if self.is_stopping() {
                return;
            }
            let member = self.state().membership().is_ok_and(|m| m.membership().get_node(&self.id()).is_some());
            if member {
                tracing::info!(node = self.id(), "member of the region");
                return;
            }
            let initialized = match self.raft().is_initialized().await {
                Ok(initialized) => initialized,
                Err(_) => return,
            };
            let replies = futures::future::join_all(
                seeds.iter().map(|seed| self.peers().hello(seed, me.clone(), Duration::from_secs(1))),
            )
            .await;
            let mut uninitialized = BTreeMap::from([(self.id(), self.address().to_string())]);
            let mut leader = None;
            for (seed, reply) in seeds.iter().zip(replies) {
                let Ok(h) = reply else { continue };
                if h.region != self.region() {
                    if warned.insert(seed.clone()) {
                        tracing::warn!(%seed, region = %h.region, "seed belongs to another region; ignoring it");
                    }
                    continue;
                }
                if h.initialized {
                    if h.leader_id != 0 {
                        leader = Some((h.leader_id, h.leader_address));
                    }
                } else {
                    uninitialized.insert(h.node_id, h.address);
                }
            }
            if let Some((leader_id, leader_addr)) = leader {
                let change = MembershipChange::Join {
                    id: self.id(),
                    address: self.address().to_string(),
                    region: self.region().to_string(),
                };
                match self.peers().change_membership(&leader_addr, leader_id, &change, self.request_timeout()).await {
                    Ok(_) => tracing::info!(node = self.id(), leader = leader_id, "asked the leader to add this node"),
                    Err(e) => tracing::info!(node = self.id(), "join not accepted yet: {e}"),
                }
            } else if !initialized && expect > 0 && uninitialized.len() >= expect {
                let chosen: BTreeMap<NodeId, BasicNode> =
                    uninitialized.into_iter().take(expect).map(|(id, addr)| (id, BasicNode::new(addr))).collect();
                if chosen.keys().next() == Some(&self.id()) {
                    match self.initialize(chosen).await {
                        Ok(()) => return,
                        Err(e) => tracing::warn!("initialize: {e}"),
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// For a member that starts at a new address (a rescheduled pod, a changed `--advertise`):
    /// until the membership names this node at its address, asks the leader (the one it knows,
    /// or one its seeds name) to update it. The leader keeps dialling the old address until then.
    /// The address the applied membership names this node at, when that is not its own.
    pub(crate) fn moved_from(&self) -> Option<String> {
        let known = self.state().membership().ok().and_then(|m| m.membership().get_node(&self.id()).cloned());
        known.map(|node| node.addr).filter(|addr| addr != self.address())
    }

    pub(crate) async fn readdress(self, seeds: Vec<String>) {
        let me =
            HelloRequest { node_id: self.id(), address: self.address().to_string(), region: self.region().to_string() };
        let change = MembershipChange::Join {
            id: self.id(),
            address: self.address().to_string(),
            region: self.region().to_string(),
        };
        if let Some(old) = self.moved_from() {
            tracing::info!(%old, new = %self.address(), "this node's address changed; asking the leader to update it");
        }
        // Until the membership names this node here (or no longer names it at all: joining is
        // `discover`'s job).
        while !self.is_stopping() && self.moved_from().is_some() {
            let result = match self.change_membership(change.clone()).await {
                Err(Error::NotLeader { leader_id: None, .. }) => {
                    let replies = futures::future::join_all(
                        seeds.iter().map(|seed| self.peers().hello(seed, me.clone(), Duration::from_secs(1))),
                    )
                    .await;
                    match replies.into_iter().flatten().find(|h| h.region == self.region() && h.leader_id != 0) {
                        Some(h) => {
                            let timeout = self.request_timeout();
                            self.peers().change_membership(&h.leader_address, h.leader_id, &change, timeout).await
                        }
                        None => Err(Error::Unavailable("no leader known yet".into())),
                    }
                }
                other => other,
            };
            if let Err(e) = result {
                tracing::debug!("address update not accepted yet: {e}");
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Applies a membership change on the leader, or forwards it there. Returns the revision of
    /// the membership entry (or the applied revision when nothing needed to change).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<u64, Error> {
        match self.change_membership_local(change.clone()).await {
            Err(Error::NotLeader { leader_id: Some(id), leader_addr: Some(addr) }) if id != self.id() => {
                self.peers().change_membership(&addr, id, &change, self.request_timeout()).await
            }
            other => other,
        }
    }

    /// Applies a membership change if this node is the leader, within the request deadline: a
    /// change that cannot get the membership lock in time is `Unavailable` (nothing proposed);
    /// one proposed but not committed in time is `Indeterminate` (it may still take effect), and
    /// either way the lock is released.
    pub(crate) async fn change_membership_local(&self, change: MembershipChange) -> Result<u64, Error> {
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        let Ok(one_at_a_time) = tokio::time::timeout_at(deadline, self.membership_lock().lock()).await else {
            return Err(Error::Unavailable("another membership change is still under way; try again".into()));
        };
        let result = tokio::time::timeout_at(deadline, self.change_membership_locked(change)).await;
        drop(one_at_a_time);
        result.unwrap_or_else(|_| {
            Err(Error::Indeterminate(
                "the membership change was not committed within the deadline; it may still take effect".into(),
            ))
        })
    }

    async fn change_membership_locked(&self, change: MembershipChange) -> Result<u64, Error> {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let raft = self.raft();
        let reply = match change {
            MembershipChange::Join { id, address, region } => {
                if region != self.region() {
                    return Err(Error::InvalidInput(format!(
                        "node {id} is in region {region:?}, this region is {:?}",
                        self.region()
                    )));
                }
                if membership.get_node(&id).is_some_and(|n| n.addr == address) {
                    if metrics.state != ServerState::Leader {
                        return Err(self.not_leader());
                    }
                    return Ok(self.state().applied_revision());
                }
                if let Some(known) = membership.get_node(&id) {
                    // A member that comes back at a new address (a rescheduled pod): its peers
                    // must dial the new one.
                    tracing::info!(node = id, old = %known.addr, new = %address, "updating a member's address");
                    let nodes = BTreeMap::from([(id, BasicNode::new(address))]);
                    raft.change_membership(ChangeMembers::SetNodes(nodes), true).await.map_err(membership_error)?
                } else {
                    tracing::info!(node = id, %address, "adding a learner");
                    raft.add_learner(id, BasicNode::new(address), false).await.map_err(membership_error)?
                }
            }
            MembershipChange::Remove { id } => {
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(Error::InvalidInput(format!("node {id} is the region's only voter")));
                    }
                    tracing::info!(node = id, "removing a voter");
                    raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(membership_error)?
                } else if membership.get_node(&id).is_some() {
                    tracing::info!(node = id, "removing a learner");
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(membership_error)?
                } else {
                    return Err(Error::Rejected(ledge_store::Error::NotFound(format!("node {id} is not a member"))));
                }
            }
        };
        Ok(reply.log_id.index)
    }

    /// On the leader: finishes a joint configuration and promotes caught-up learners while
    /// there is room among the voters. Runs until the node stops.
    pub(crate) async fn reconcile(self, max_voters: usize) {
        loop {
            tokio::time::sleep(TICK).await;
            if self.is_stopping() {
                return;
            }
            let m = self.raft().metrics().borrow().clone();
            if m.running_state.is_err() {
                return;
            }
            if m.state != ServerState::Leader {
                continue;
            }
            let membership = m.membership_config.membership().clone();
            let configs = membership.get_joint_config();
            let result = if configs.len() > 1 {
                let target = configs.last().cloned().unwrap_or_default();
                tracing::info!(?target, "finishing an interrupted membership change");
                let _one_at_a_time = self.membership_lock().lock().await;
                self.raft().change_membership(ChangeMembers::ReplaceAllVoters(target), true).await.map(drop)
            } else {
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let last = m.last_log_index.unwrap_or(0);
                let caught_up = membership.learner_ids().find(|id| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id))
                        .and_then(|l| l.as_ref())
                        .is_some_and(|l| l.index + CAUGHT_UP_SLACK >= last)
                });
                match caught_up {
                    Some(id) if voters.len() < max_voters => {
                        tracing::info!(node = id, "promoting a caught-up learner to voter");
                        let _one_at_a_time = self.membership_lock().lock().await;
                        self.raft()
                            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                            .await
                            .map(drop)
                    }
                    _ => Ok(()),
                }
            };
            if let Err(e) = result {
                tracing::info!("membership reconcile: {e}");
            }
        }
    }
}
