//! The `Kv` service on strong keyspaces: the region's Raft group.
//!
//! Life of a strong put: the key and value were checked by the service (nothing invalid reaches
//! Raft); propose a one-operation `Batch` command; once openraft has committed and applied it,
//! reply with its revision. Gets and scans first make the local state ready at the requested
//! consistency ([`read::prepare`]) and then read the state machine.

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Response, Status};

use ledge_consensus::Node;
use ledge_proto::v1 as pb;
use ledge_store::{BatchOutcome, Command, KeyspaceDef, Op};

use crate::convert;
use crate::engine::{Engine, WatchStream};
use crate::kv::ScanRange;
use crate::limits::Limits;
use crate::read;

/// Serves strong keyspaces.
pub(crate) struct StrongEngine {
    pub(crate) node: Node,
    pub(crate) limits: Limits,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl StrongEngine {
    async fn batch_command(
        &self,
        keyspace: &str,
        conditions: Vec<ledge_store::Condition>,
        ops: Vec<Op>,
        id: Option<pb::RequestId>,
        deadline: Instant,
    ) -> Result<BatchOutcome, Status> {
        let command = Command::Batch { keyspace: keyspace.to_string(), conditions, ops };
        let request = ledge_store::Request { id: convert::request_id(id)?, command };
        match self.node.write_until(request, deadline).await.map_err(convert::status)? {
            (_, ledge_store::Response::Batch(outcome)) => Ok(outcome),
            (rev, other) => Err(Status::internal(format!("unexpected result at revision {rev}: {other:?}"))),
        }
    }

    /// The reply to a strong write; a follower (which forwarded the write) names the leader in
    /// the `ledge-leader-addr` metadata so the client sends its next writes there.
    fn answered<T>(&self, reply: T) -> Response<T> {
        let mut response = Response::new(reply);
        if let Some((id, addr)) = self.node.leader().filter(|(id, _)| *id != self.node.id()) {
            response.metadata_mut().insert(convert::LEADER_ID, id.into());
            if let Ok(addr) = addr.parse() {
                response.metadata_mut().insert(convert::LEADER_ADDR, addr);
            }
        }
        response
    }

    fn check_write_level(level: i32) -> Result<(), Status> {
        match pb::WriteLevel::try_from(level) {
            Ok(pb::WriteLevel::Unspecified) => Ok(()),
            Ok(_) => Err(Status::invalid_argument(
                "write level applies to eventual keyspaces; strong writes are always committed by a majority",
            )),
            Err(_) => Err(Status::invalid_argument(format!("unknown write level {level}"))),
        }
    }

    fn eventual_only(def: &KeyspaceDef, what: &str) -> Status {
        Status::invalid_argument(format!("{what} apply to eventual keyspaces; keyspace \"{}\" is strong", def.name))
    }
}

#[tonic::async_trait]
impl Engine for StrongEngine {
    async fn put(
        &self,
        def: &KeyspaceDef,
        req: pb::PutRequest,
        deadline: Instant,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Self::check_write_level(req.level)?;
        let outcome = self
            .batch_command(&def.name, Vec::new(), vec![Op::Put(req.key, req.value)], req.request_id, deadline)
            .await?;
        Ok(self.answered(pb::PutResponse { revision: outcome.revision, hlc: None }))
    }

    async fn get(
        &self,
        def: &KeyspaceDef,
        req: pb::GetRequest,
        deadline: Instant,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let as_of = read::prepare(&self.node, req.options, deadline).await?;
        let kv = self.node.state().get(&def.name, &req.key).map_err(convert::store_status)?;
        Ok(Response::new(pb::GetResponse { kv: kv.map(|v| convert::key_value(req.key, v, false)), as_of: Some(as_of) }))
    }

    async fn delete(
        &self,
        def: &KeyspaceDef,
        req: pb::DeleteRequest,
        deadline: Instant,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Self::check_write_level(req.level)?;
        let outcome =
            self.batch_command(&def.name, Vec::new(), vec![Op::Delete(req.key)], req.request_id, deadline).await?;
        Ok(self.answered(pb::DeleteResponse { revision: outcome.revision, deleted: outcome.deleted > 0, hlc: None }))
    }

    async fn scan(
        &self,
        def: &KeyspaceDef,
        req: pb::ScanRequest,
        range: ScanRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let as_of = read::prepare(&self.node, req.options, deadline).await?;
        // One extra entry tells whether another page follows.
        let mut rows = self
            .node
            .state()
            .scan_bytes(&def.name, range.start, range.end, limit + 1, self.limits.max_request)
            .map_err(convert::store_status)?;
        let next_page_token = self.limits.page(&mut rows, limit, |(k, v)| v.row_bytes(k));
        let kvs = rows.into_iter().map(|(k, v)| convert::key_value(k, v, req.keys_only)).collect();
        Ok(Response::new(pb::ScanResponse { kvs, next_page_token, as_of: Some(as_of) }))
    }

    async fn batch(
        &self,
        def: &KeyspaceDef,
        req: pb::BatchRequest,
        deadline: Instant,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        if req.level != 0 {
            return Err(Status::invalid_argument(
                "write levels apply to eventual keyspaces; a strong batch is acknowledged once a majority applied it",
            ));
        }
        let mut conditions = Vec::with_capacity(req.conditions.len());
        for (i, c) in req.conditions.into_iter().enumerate() {
            self.limits.key(&c.key).map_err(|s| Status::new(s.code(), format!("condition {i}: {}", s.message())))?;
            conditions.push(convert::condition(c, i)?);
        }
        let mut ops = Vec::with_capacity(req.ops.len());
        for (i, o) in req.ops.into_iter().enumerate() {
            let op = convert::op(o, i)?;
            let named = |s: Status| Status::new(s.code(), format!("operation {i}: {}", s.message()));
            self.limits.key(op.key()).map_err(named)?;
            if let Op::Put(_, v) = &op {
                self.limits.value(v).map_err(named)?;
            }
            ops.push(op);
        }
        let outcome = self.batch_command(&def.name, conditions, ops, req.request_id, deadline).await?;
        Ok(self.answered(pb::BatchResponse {
            hlc: None,
            succeeded: outcome.succeeded,
            revision: outcome.revision,
            failed_conditions: outcome.failed_conditions,
        }))
    }

    fn watch(&self, def: KeyspaceDef, req: pb::WatchRequest) -> Result<WatchStream, Status> {
        if req.from_cursor.is_some() {
            return Err(Status::invalid_argument(format!(
                "keyspace \"{}\" is strong: a watch there starts from a revision (from_revision), not a cursor",
                def.name
            )));
        }
        Ok(crate::watch::start(
            self.node.clone(),
            def.name,
            req.key,
            req.prefix,
            req.from_revision,
            self.limits.watch_stall,
            self.stopping.clone(),
        ))
    }

    async fn increment(
        &self,
        def: &KeyspaceDef,
        _: pb::IncrementRequest,
        _: Instant,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        Err(Self::eventual_only(def, "counter increments"))
    }

    async fn set(
        &self,
        def: &KeyspaceDef,
        _: pb::SetRequest,
        _: bool,
        _: Instant,
    ) -> Result<Response<pb::SetResponse>, Status> {
        Err(Self::eventual_only(def, "set operations"))
    }
}
