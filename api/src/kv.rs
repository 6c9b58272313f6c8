//! The `Kv` gRPC service.
//!
//! Every request first names its keyspace; the service checks what all requests share (the
//! request's size, the keyspace name, the key and value limits) and hands the request to the
//! engine of the keyspace's mode ([`Engine`]): [`crate::strong`] for strong keyspaces (the Raft
//! group), [`crate::eventual`] for eventual ones (the local replica and its replication).
//! Options of the other side are refused there with `InvalidArgument` rather than ignored.

use std::ops::Bound;

use tonic::{Request, Response, Status};

use ledge_consensus::Node;
use ledge_proto::v1 as pb;
use ledge_proto::v1::kv_server::Kv;
use ledge_store::{keycode, KeyspaceDef, Mode};

use crate::convert;
use crate::deadline;
use crate::engine::Engine;
use crate::eventual::EventualEngine;
use crate::limits::{self, Limits};
use crate::strong::StrongEngine;
use crate::sync::Replication;

/// Serves `ledge.v1.Kv`.
pub struct KvService {
    node: Node,
    limits: Limits,
    strong: StrongEngine,
    eventual: EventualEngine,
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
        let strong = StrongEngine { node: node.clone(), limits, stopping: stopping.clone() };
        let eventual = EventualEngine { node_id: node.id(), replication, limits, stopping };
        Self { node, limits, strong, eventual }
    }

    /// The engine serving keyspace `def`.
    fn engine(&self, def: &KeyspaceDef) -> &dyn Engine {
        match def.mode {
            Mode::Strong => &self.strong,
            Mode::Eventual => &self.eventual,
        }
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
}

#[tonic::async_trait]
impl Kv for KvService {
    type WatchStream = crate::engine::WatchStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.limits.request("watch", prost::Message::encoded_len(req.get_ref()))?;
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        if !req.prefix {
            self.limits.key(&req.key)?;
        } else if req.key.len() > self.limits.max_key {
            return Err(Status::resource_exhausted("watch prefix is longer than the key limit"));
        }
        Ok(Response::new(self.engine(&def).watch(def, req)?))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.limits.request("put", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        self.limits.value(&req.value)?;
        self.engine(&def).put(&def, req, deadline).await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.limits.request("get", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        self.engine(&def).get(&def, req, deadline).await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.limits.request("delete", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        self.engine(&def).delete(&def, req, deadline).await
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        self.limits.request("scan", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        let limit = self.limits.scan_limit(req.limit)?;
        let range = self.scan_range(&req)?;
        self.engine(&def).scan(&def, req, range, limit, deadline).await
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        self.limits.request("batch", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.batch(req.ops.len(), req.conditions.len())?;
        self.engine(&def).batch(&def, req, deadline).await
    }

    async fn increment(&self, req: Request<pb::IncrementRequest>) -> Result<Response<pb::IncrementResponse>, Status> {
        self.limits.request("increment", prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.limits.key(&req.key)?;
        self.engine(&def).increment(&def, req, deadline).await
    }

    async fn set_add(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        self.set(req, true).await
    }

    async fn set_remove(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        self.set(req, false).await
    }
}

impl KvService {
    async fn set(&self, req: Request<pb::SetRequest>, add: bool) -> Result<Response<pb::SetResponse>, Status> {
        let what = if add { "set add" } else { "set remove" };
        self.limits.request(what, prost::Message::encoded_len(req.get_ref()))?;
        let deadline = deadline::for_request(req.metadata(), self.node.request_timeout());
        let req = req.into_inner();
        let def = self.keyspace(&req.keyspace)?;
        self.engine(&def).set(&def, req, add, deadline).await
    }
}
