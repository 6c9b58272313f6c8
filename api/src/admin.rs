//! The `Admin` gRPC service: keyspaces and node status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use ledge_consensus::{Dialer, MembershipChange, Node};
use ledge_proto::v1 as pb;
use ledge_proto::v1::admin_client::AdminClient;
use ledge_proto::v1::admin_server::Admin;
use ledge_store::budget::DIGEST_TREE_BYTES;
use ledge_store::{Command, Mode, Part, Scope};

use crate::convert;
use crate::deadline;
use crate::limits;
use crate::sync::Replication;

/// Serves `ledge.v1.Admin`.
#[derive(Clone)]
pub struct AdminService {
    node: Node,
    replication: Replication,
    region: String,
    role: &'static str,
    dialer: Arc<dyn Dialer>,
    /// Channels to members (the leader, or every member for their applied revisions), kept
    /// between calls; only current members' addresses stay.
    channels: Arc<Mutex<HashMap<String, tonic::transport::Channel>>>,
}

/// How long a member list waits for each member to report its applied revision.
const MEMBER_REVISION_WAIT: Duration = Duration::from_millis(500);

/// Request metadata marking a call one node made to another on a client's behalf.
const FORWARDED: &str = "ledge-forwarded";

impl AdminService {
    /// Each part of the memory budget: its share and, where it is counted, what it holds.
    fn memory(&self) -> Vec<pb::MemoryPart> {
        let budget = self.node.memory();
        Part::ALL
            .iter()
            .map(|part| pb::MemoryPart {
                name: part.name().to_string(),
                limit_bytes: budget.share(*part),
                used_bytes: match part {
                    Part::LogCache => Some(self.node.log_cache_bytes()),
                    _ => self.node.usage().get(*part),
                },
            })
            .collect()
    }

    /// Refuses a new eventual keyspace when its hash tree, grown to its largest, would not fit
    /// the `digests` share of this node's memory budget beside what the others hold now.
    fn room_for_eventual(&self, name: &str) -> Result<(), Status> {
        let keyspaces = self.node.state().keyspaces().map_err(convert::store_status)?;
        if keyspaces.iter().any(|k| k.name == name) {
            return Ok(()); // an existing keyspace: the write answers AlreadyExists or is a no-op
        }
        let held = self.node.usage().get(Part::Digests).unwrap_or(0);
        let share = self.node.memory().share(Part::Digests);
        if held + DIGEST_TREE_BYTES > share {
            return Err(Status::resource_exhausted(format!(
                "eventual keyspace {name:?} does not fit the memory budget: the hash trees of eventual keyspaces \
                 already hold {held} of the {share} bytes set aside for them, and one can grow to \
                 {DIGEST_TREE_BYTES}; raise --memory-mb"
            )));
        }
        Ok(())
    }

    fn disk(&self) -> pb::DiskUsage {
        let disk = self.node.disk_usage();
        pb::DiskUsage { log_bytes: disk.log, db_bytes: disk.db, snapshot_bytes: disk.snapshots }
    }

    /// A service over `node` and its eventual replicas, which belongs to `region` and has
    /// `role`; `dialer` reaches the leader for requests only it can answer fully.
    pub fn new(
        node: Node,
        replication: Replication,
        region: String,
        role: &'static str,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        Self { node, replication, region, role, dialer, channels: Arc::default() }
    }

    /// A channel to `addr`, reused across calls.
    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let members: Vec<String> = self.node.status().members.into_iter().map(|m| m.1).collect();
        channels.retain(|known, _| members.contains(known));
        let channel = self.dialer.channel(addr).map_err(Status::unavailable)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The members as the wire shows them; only this node's own applied revision is filled in.
    fn members(&self, members: Vec<(u64, String, &'static str, Option<u64>)>) -> Vec<pb::Member> {
        let me = self.node.id();
        let applied = self.node.state().applied_revision();
        let revisions = members.iter().map(|(id, ..)| (*id == me).then_some(applied)).collect();
        Self::wire(members, revisions)
    }

    /// [`AdminService::members`] with each member's applied revision as it reports it (asked of
    /// all at once, for at most [`MEMBER_REVISION_WAIT`]).
    async fn members_asked(&self, members: Vec<(u64, String, &'static str, Option<u64>)>) -> Vec<pb::Member> {
        let me = self.node.id();
        let revisions = futures::future::join_all(members.iter().map(|(id, address, ..)| async move {
            if *id == me {
                return Some(self.node.state().applied_revision());
            }
            let mut client = AdminClient::new(self.channel(address).ok()?);
            let mut req = Request::new(pb::StatusRequest {});
            req.set_timeout(MEMBER_REVISION_WAIT);
            let reply = tokio::time::timeout(MEMBER_REVISION_WAIT, client.status(req)).await.ok()?.ok()?;
            Some(reply.into_inner().applied_revision)
        }))
        .await;
        Self::wire(members, revisions)
    }

    fn wire(members: Vec<(u64, String, &'static str, Option<u64>)>, revisions: Vec<Option<u64>>) -> Vec<pb::Member> {
        members
            .into_iter()
            .zip(revisions)
            .map(|((id, address, role, last_applied), applied_revision)| pb::Member {
                id,
                address,
                role: role.to_string(),
                last_applied: last_applied.unwrap_or(0),
                applied_revision,
            })
            .collect()
    }

    /// Asks the leader for the member list (it alone knows how far each member has applied).
    async fn members_from_leader(&self, addr: &str) -> Result<pb::ListMembersResponse, Status> {
        let channel = self.channel(addr)?;
        let mut req = Request::new(pb::ListMembersRequest {});
        req.metadata_mut().insert(FORWARDED, MetadataValue::from_static("1"));
        req.set_timeout(self.node.request_timeout());
        Ok(AdminClient::new(channel).list_members(req).await?.into_inner())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_keyspace(
        &self,
        req: Request<pb::CreateKeyspaceRequest>,
    ) -> Result<Response<pb::CreateKeyspaceResponse>, Status> {
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("keyspace name is empty"));
        }
        let name = limits::keyspace_name(&req.name)?.to_string();
        let mode = convert::mode(req.mode)?;
        let scope = convert::scope(req.scope)?;
        if mode == Mode::Strong && scope == Scope::Global {
            return Err(Status::invalid_argument("scope global is for eventual keyspaces only"));
        }
        if mode == Mode::Eventual {
            self.room_for_eventual(&name)?;
        }
        let cmd = Command::CreateKeyspace { name, mode, scope, if_not_exists: req.if_not_exists };
        match self.node.write_until(ledge_store::Request::new(cmd), deadline).await.map_err(convert::status)? {
            (revision, ledge_store::Response::Keyspace(def)) => {
                Ok(Response::new(pb::CreateKeyspaceResponse { keyspace: Some(convert::keyspace(def)), revision }))
            }
            (rev, other) => Err(Status::internal(format!("unexpected result at revision {rev}: {other:?}"))),
        }
    }

    async fn list_keyspaces(
        &self,
        req: Request<pb::ListKeyspacesRequest>,
    ) -> Result<Response<pb::ListKeyspacesResponse>, Status> {
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let revision = self.node.read_barrier_until(deadline).await.map_err(convert::status)?;
        let keyspaces = self.node.state().keyspaces().map_err(convert::store_status)?;
        Ok(Response::new(pb::ListKeyspacesResponse {
            keyspaces: keyspaces.into_iter().map(convert::keyspace).collect(),
            as_of: Some(pb::AsOf {
                revision,
                stale: false,
                staleness_ms: 0,
                node_id: self.node.id(),
                ..Default::default()
            }),
        }))
    }

    async fn drop_keyspace(
        &self,
        req: Request<pb::DropKeyspaceRequest>,
    ) -> Result<Response<pb::DropKeyspaceResponse>, Status> {
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("keyspace name is empty"));
        }
        let name = limits::keyspace_name(&req.name)?.to_string();
        let (revision, _) = self
            .node
            .write_until(ledge_store::Request::new(Command::DropKeyspace { name }), deadline)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DropKeyspaceResponse { revision }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status();
        let keyspaces = self.node.state().keyspaces().map_err(convert::store_status)?.len() as u64;
        let replica = self.replication.replica();
        let spaces = replica.spaces().map_err(convert::crdt_status)?;
        let eventual = replica.status(&spaces).map_err(convert::crdt_status)?;
        let (leader_id, leader_address) = s.leader.unwrap_or((0, String::new()));
        Ok(Response::new(pb::StatusResponse {
            node_id: s.id,
            region: self.region.clone(),
            role: self.role.to_string(),
            address: s.address,
            raft_state: s.state.to_string(),
            leader_id,
            leader_address,
            term: s.term,
            last_log_index: s.last_log_index,
            applied_revision: s.applied,
            members: self.members(s.members),
            version: env!("CARGO_PKG_VERSION").to_string(),
            keyspaces,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            eventual_keys: eventual.keys,
            tombstones: eventual.tombstones,
            hlc: convert::hlc_opt(eventual.hlc),
            stable_hlc: convert::hlc_opt(eventual.stable),
            clock_drift_rejections: eventual.drift_rejections,
            sync_links: self.replication.link_status().into_iter().map(crate::sync::link_status).collect(),
            memory_budget_bytes: self.node.memory().total(),
            memory: self.memory(),
            rss_bytes: ledge_store::rss_bytes(),
            disk: Some(self.disk()),
        }))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let status = self.node.status();
        if status.state != "leader" && req.metadata().get(FORWARDED).is_none() {
            if let Some((_, addr)) = status.leader.as_ref().filter(|(id, _)| *id != status.id) {
                match self.members_from_leader(addr).await {
                    Ok(reply) => return Ok(Response::new(reply)),
                    Err(e) => tracing::debug!("member list from the leader: {e}; answering locally"),
                }
            }
        }
        let leader_id = status.leader.as_ref().map(|(id, _)| *id).unwrap_or(0);
        Ok(Response::new(pb::ListMembersResponse { members: self.members_asked(status.members).await, leader_id }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let id = req.into_inner().id;
        if id == 0 {
            return Err(Status::invalid_argument("node id is required"));
        }
        let revision = self.node.change_membership(MembershipChange::Remove { id }).await.map_err(convert::status)?;
        Ok(Response::new(pb::RemoveMemberResponse { revision }))
    }
}
