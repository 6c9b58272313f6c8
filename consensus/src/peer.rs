//! Calls from one node of a region to another, besides openraft's own RPCs: forwarding a write or
//! a read-index request to the leader, joining, membership changes, and discovery.
//!
//! Payloads are bincode; replies carry `Result<T, Error>`, so the caller gets the leader's own
//! error (for instance `NotLeader` with a fresher hint). A failure to reach the peer is
//! `Unavailable` (nothing was delivered); a reply that does not come back in time after the
//! request may have been delivered is `Indeterminate` for a write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use ledge_proto::v1::raft_client::RaftClient;
use ledge_proto::v1::{HelloRequest, HelloResponse, RaftMessage};
use ledge_store::{NodeId, Request, Response};

use crate::network::{raft_client, Dialer};
use crate::Error;

/// A membership change requested through the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node (as a learner; promoted later when there is room among the voters).
    Join {
        /// The joining node's id.
        id: NodeId,
        /// Its advertised address.
        address: String,
        /// Its region, which must match the leader's.
        region: String,
    },
    /// Remove a node, voter or learner.
    Remove {
        /// The node to remove.
        id: NodeId,
    },
}

/// Clients to peers, by address. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    dialer: Arc<dyn Dialer>,
    clients: Arc<Mutex<HashMap<String, RaftClient<Channel>>>>,
}

#[derive(Clone, Copy)]
enum Call {
    Propose,
    ReadIndex,
    Join,
    ChangeMembership,
}

impl Peers {
    /// Peers reached through `dialer`.
    pub fn new(dialer: Arc<dyn Dialer>) -> Self {
        Self { dialer, clients: Arc::default() }
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, Error> {
        let mut clients = self.clients.lock().map_err(|_| Error::Fatal("peer client table poisoned".into()))?;
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = self.dialer.channel(addr).map_err(Error::Unavailable)?;
        let client = raft_client(channel);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        call: Call,
        addr: &str,
        target: NodeId,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        let mut client = self.client(addr)?;
        let payload = bincode::serialize(req).map_err(|e| Error::InvalidInput(format!("encode request: {e}")))?;
        let msg = RaftMessage { target, payload, leader_quorum_age_ms: None };
        let fut = async move {
            match call {
                Call::Propose => client.propose(msg).await,
                Call::ReadIndex => client.read_index(msg).await,
                Call::Join => client.join(msg).await,
                Call::ChangeMembership => client.change_membership(msg).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, fut).await {
            Err(_) => {
                return Err(Error::Indeterminate(format!("no reply from node {target} at {addr} within {timeout:?}")))
            }
            // The peer could not be reached: the request was not delivered. (A connection lost
            // mid-call is also `Unavailable` in tonic, but the request may have been applied.)
            Ok(Err(s))
                if crate::network::never_sent(&s)
                    || (s.code() == tonic::Code::Unavailable && std::error::Error::source(&s).is_none()) =>
            {
                return Err(Error::Unavailable(format!("cannot reach node {target} at {addr}: {}", s.message())))
            }
            Ok(Err(s)) => return Err(Error::Indeterminate(format!("node {target} at {addr}: {s}"))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, Error> = bincode::deserialize(&reply.payload)
            .map_err(|e| Error::Indeterminate(format!("bad reply from node {target}: {e}")))?;
        result
    }

    /// Asks the leader to propose `request`; returns the revision and result.
    pub async fn propose(
        &self,
        addr: &str,
        leader: NodeId,
        request: &Request,
        timeout: Duration,
    ) -> Result<(u64, Response), Error> {
        self.call(Call::Propose, addr, leader, request, timeout).await
    }

    /// Asks the leader for a read index: the revision a linearizable read must wait for.
    pub async fn read_index(&self, addr: &str, leader: NodeId, timeout: Duration) -> Result<u64, Error> {
        // The request may be retried freely: a read index changes nothing.
        self.call(Call::ReadIndex, addr, leader, &(), timeout).await.map_err(|e| match e {
            Error::Indeterminate(m) => Error::Unavailable(m),
            e => e,
        })
    }

    /// Asks the leader to make a membership change.
    pub async fn change_membership(
        &self,
        addr: &str,
        leader: NodeId,
        change: &MembershipChange,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let call = if matches!(change, MembershipChange::Join { .. }) { Call::Join } else { Call::ChangeMembership };
        self.call(call, addr, leader, change, timeout).await
    }

    /// Discovery: asks the node at `addr` who it is.
    pub async fn hello(&self, addr: &str, req: HelloRequest, timeout: Duration) -> Result<HelloResponse, Error> {
        let mut client = self.client(addr)?;
        match tokio::time::timeout(timeout, client.hello(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(Error::Unavailable(format!("hello {addr}: {}", s.message()))),
            Err(_) => Err(Error::Unavailable(format!("hello {addr}: no reply within {timeout:?}"))),
        }
    }
}
