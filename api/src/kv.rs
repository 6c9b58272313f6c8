//! The `Kv` gRPC service.
//!
//! Every request first names its keyspace; the catalog says whether it is strong or eventual,
//! and the request is served by that side. Options of the other side are refused with
//! `InvalidArgument` rather than ignored.
//!
//! Life of a strong put: validate the keyspace name, key and value (nothing invalid reaches
//! Raft); propose a one-operation `Batch` command; once openraft has committed and applied it,
//! reply with its revision. Gets and scans first make the local state ready at the requested
//! consistency ([`read::prepare`]) and then read the state machine. Eventual keyspaces are served
//! by [`crate::eventual`].

use std::ops::Bound;

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use ledge_consensus::Node;
use ledge_proto::v1 as pb;
use ledge_proto::v1::kv_server::Kv;
use ledge_store::{keycode, BatchOutcome, Command, KeyspaceDef, Mode, Op};

use crate::convert;
use crate::deadline;
use crate::limits::{self, Limits};
use crate::read;
use crate::sync::Replication;

/// Serves `ledge.v1.Kv`.
#[derive(Clone)]
pub struct KvService {
    pub(crate) node: Node,
    pub(crate) replication: Replication,
    pub(crate) limits: Limits,
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// A scan's key range: where it starts and where it ends (exclusive, `None`: no bound).
pub(crate) struct ScanRange {
    pub(crate) start: Bound<Vec<u8>>,
    pub(crate) end: Option<Vec<u8>>,
}

impl KvService {
    /// A service over `node` and its eventual replicas, enforcing `limits`; watch streams end
    /// cleanly once `stopping` turns true.
    pub fn new(
        node: Node,
        replication: Replication,
        limits: Limits,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self { node, replication, limits, stopping }
    }

    /// The definition of the keyspace a request names.
    fn keyspace(&self, name: &str) -> Result<KeyspaceDef, Status> {
        let name = limits::keyspace_name(name)?;
        match self.node.state().keyspace(name).map_err(convert::store_status)? {
            Some(def) => Ok(def),
            None => Err(Status::not_found(format!("keyspace \"{name}\" does not exist"))),
        }
    }

    /// The range a scan request covers, checked against the limits.
    pub(crate) fn scan_range(&self, req: &pb::ScanRequest) -> Result<ScanRange, Status> {
        for (what, bytes) in [("prefix", &req.prefix), ("start", &req.start), ("end", &req.end)] {
            if bytes.len() > self.limits.max_key {
                return Err(Status::resource_exhausted(format!("scan {what} is longer than the key limit")));
            }
        }
        // The range is the intersection of [start, end) and the prefix's range.
        let lower = std::cmp::max(req.start.clone(), req.prefix.clone());
        let mut upper = if req.end.is_empty() { None } else { Some(req.end.clone()) };
        if !req.prefix.is_empty() {
            if let Some(prefix_end) = keycode::prefix_end(&req.prefix) {
                upper = Some(match upper {
                    Some(u) => std::cmp::min(u, prefix_end),
                    None => prefix_end,
                });
            }
        }
        let start = if req.page_token.is_empty() {
            Bound::Included(lower)
        } else {
            let after = limits::parse_page_token(&req.page_token)?;
            if after < lower {
                return Err(Status::invalid_argument("page_token does not belong to this scan's range"));
            }
            Bound::Excluded(after)
        };
        Ok(ScanRange { start, end: upper })
    }

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

    fn eventual_only(def: &KeyspaceDef, what: &str) -> Result<(), Status> {
        match def.mode {
            Mode::Eventual => Ok(()),
            Mode::Strong => Err(Status::invalid_argument(format!(
                "{what} apply to eventual keyspaces; keyspace \"{}\" is strong",
                def.name
            ))),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.limits.request("watch", prost::Message::encoded_len(req.get_ref()))?;
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        if !req.prefix {
            self.limits.key(&req.key)?;
        } else if req.key.len() > self.limits.max_key {
            return Err(Status::resource_exhausted("watch prefix is longer than the key limit"));
        }
        let stream = if def.mode == Mode::Eventual {
            if req.from_revision > 0 {
                return Err(Status::invalid_argument(format!(
                    "keyspace \"{}\" is eventual: a watch there resumes from a cursor (from_cursor), \
                     not a revision",
                    def.name
                )));
            }
            crate::watch::start_eventual(
                self.replication.replica().clone(),
                Self::space(&def),
                req.key,
                req.prefix,
                req.from_cursor.map(convert::timestamp),
                self.limits.watch_stall,
                self.stopping.clone(),
            )
        } else {
            if req.from_cursor.is_some() {
                return Err(Status::invalid_argument(format!(
                    "keyspace \"{}\" is strong: a watch there starts from a revision (from_revision), \
                     not a cursor",
                    def.name
                )));
            }
            crate::watch::start(
                self.node.clone(),
                def.name,
                req.key,
                req.prefix,
                req.from_revision,
                self.limits.watch_stall,
                self.stopping.clone(),
            )
        };
        Ok(Response::new(stream))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.limits.request("put", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        self.limits.value(&req.value)?;
        if def.mode == Mode::Eventual {
            return Ok(Response::new(self.eventual_put(&def, req, deadline).await?));
        }
        Self::check_write_level(req.level)?;
        let outcome = self
            .batch_command(&def.name, Vec::new(), vec![Op::Put(req.key, req.value)], req.request_id, deadline)
            .await?;
        Ok(self.answered(pb::PutResponse { revision: outcome.revision, hlc: None }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.limits.request("get", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        if def.mode == Mode::Eventual {
            return Ok(Response::new(self.eventual_get(&def, req, deadline).await?));
        }
        let as_of = read::prepare(&self.node, req.options, deadline).await?;
        let kv = self.node.state().get(&def.name, &req.key).map_err(convert::store_status)?;
        Ok(Response::new(pb::GetResponse { kv: kv.map(|v| convert::key_value(req.key, v, false)), as_of: Some(as_of) }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.limits.request("delete", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        if def.mode == Mode::Eventual {
            return Ok(Response::new(self.eventual_delete(&def, req, deadline).await?));
        }
        Self::check_write_level(req.level)?;
        let outcome =
            self.batch_command(&def.name, Vec::new(), vec![Op::Delete(req.key)], req.request_id, deadline).await?;
        Ok(self.answered(pb::DeleteResponse { revision: outcome.revision, deleted: outcome.deleted > 0, hlc: None }))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        self.limits.request("scan", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        let limit = self.limits.scan_limit(req.limit)?;
        let range = self.scan_range(&req)?;
        if def.mode == Mode::Eventual {
            return Ok(Response::new(self.eventual_scan(&def, req, range, limit, deadline).await?));
        }
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

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        self.limits.request("batch", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.batch(req.ops.len(), req.conditions.len())?;
        if def.mode == Mode::Eventual {
            return Ok(Response::new(self.eventual_batch(&def, req, deadline).await?));
        }
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

    async fn increment(&self, req: Request<pb::IncrementRequest>) -> Result<Response<pb::IncrementResponse>, Status> {
        self.limits.request("increment", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        Self::eventual_only(&def, "counter increments")?;
        self.limits.key(&req.key)?;
        Ok(Response::new(self.eventual_increment(&def, req, deadline).await?))
    }

    async fn set_add(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        self.limits.request("set add", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        Self::eventual_only(&def, "set operations")?;
        Ok(Response::new(self.eventual_set(&def, req, true, deadline).await?))
    }

    async fn set_remove(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        self.limits.request("set remove", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        Self::eventual_only(&def, "set operations")?;
        Ok(Response::new(self.eventual_set(&def, req, false, deadline).await?))
    }
}
