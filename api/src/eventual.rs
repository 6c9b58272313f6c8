//! The `Kv` service on eventual keyspaces.
//!
//! Life of an eventual put, at any node, whatever the state of the region's Raft group:
//!
//! 1. Validate the key and value ([`crate::limits`]) and the write level; strong-only options
//!    are refused.
//! 2. [`Replica::apply`](ledge_crdt::Replica::apply) ticks the HLC, applies the operation to the
//!    key's CRDT entry (checking its type) and commits it with its digest and change-log record in
//!    one transaction, then waits for the group-commit flush: the write is durable here.
//! 3. The push streams send it to every peer; for `quorum` and `all` the reply waits for their
//!    acknowledgements ([`Replication::wait_acks`](ledge_crdt::Replication::wait_acks)).
//! 4. The reply carries the HLC timestamp the write was made at.
//!
//! Reads at `one` answer from the local replica; at `quorum` they merge a majority's states and
//! repair the replicas that were behind. Every read carries the node's HLC and stable watermark
//! as its as-of metadata. Scans at `one` read the local replica; at `quorum` they merge the
//! pages of a majority of replicas key by key and repair the replicas that were behind.

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Response, Status};

use ledge_crdt::{Op, Read, SpaceId, WriteLevel};
use ledge_proto::v1 as pb;
use ledge_store::KeyspaceDef;

use crate::convert;
use crate::engine::{Engine, WatchStream};
use crate::kv::ScanRange;
use crate::limits::Limits;
use crate::sync::{shortfall_status, Replication};

/// The write level a request asks for on an eventual keyspace (unspecified means `one`).
fn write_level(raw: i32) -> Result<WriteLevel, Status> {
    match pb::WriteLevel::try_from(raw) {
        Ok(pb::WriteLevel::Unspecified | pb::WriteLevel::One) => Ok(WriteLevel::One),
        Ok(pb::WriteLevel::Quorum) => Ok(WriteLevel::Quorum),
        Ok(pb::WriteLevel::All) => Ok(WriteLevel::All),
        Err(_) => Err(Status::invalid_argument(format!("unknown write level {raw}"))),
    }
}

/// Whether a read asks for `quorum` (else `one`); strong-only options are refused.
fn quorum_read(options: Option<pb::ReadOptions>) -> Result<bool, Status> {
    let options = options.unwrap_or_default();
    if options.max_staleness_ms > 0 || options.min_revision > 0 {
        return Err(Status::invalid_argument(
            "max_staleness and min_revision apply to strong keyspaces; eventual reads take consistency one or quorum",
        ));
    }
    match pb::ReadConsistency::try_from(options.consistency) {
        Ok(pb::ReadConsistency::Unspecified | pb::ReadConsistency::One) => Ok(false),
        Ok(pb::ReadConsistency::Quorum) => Ok(true),
        Ok(c @ (pb::ReadConsistency::Linearizable | pb::ReadConsistency::Stale)) => {
            Err(Status::invalid_argument(format!(
                "read consistency {} applies to strong keyspaces; eventual keyspaces take one or quorum",
                c.as_str_name().trim_start_matches("READ_CONSISTENCY_").to_lowercase()
            )))
        }
        Err(_) => Err(Status::invalid_argument(format!("unknown read consistency {}", options.consistency))),
    }
}

/// Serves eventual keyspaces.
pub(crate) struct EventualEngine {
    pub(crate) node_id: u64,
    pub(crate) replication: Replication,
    pub(crate) limits: Limits,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl EventualEngine {
    fn space(def: &KeyspaceDef) -> SpaceId {
        SpaceId::from(def)
    }

    /// As-of metadata of an eventual read merged from `replicas` replicas.
    fn eventual_as_of(&self, replicas: u32) -> Result<pb::AsOf, Status> {
        let replica = self.replication.replica();
        Ok(pb::AsOf {
            node_id: self.node_id,
            hlc: Some(convert::hlc(replica.hlc().latest())),
            stable_hlc: convert::hlc_opt(replica.stable().map_err(convert::crdt_status)?),
            replicas,
            ..Default::default()
        })
    }

    async fn eventual_write(
        &self,
        def: &KeyspaceDef,
        key: &[u8],
        op: Op,
        level: i32,
        deadline: Instant,
    ) -> Result<ledge_crdt::Applied, Status> {
        let level = write_level(level)?;
        let applied =
            self.replication.replica().apply(&Self::space(def), key, op).await.map_err(convert::crdt_status)?;
        self.replication.wait_acks(applied.seq, level, deadline).await.map_err(shortfall_status)?;
        Ok(applied)
    }
}

#[tonic::async_trait]
impl Engine for EventualEngine {
    async fn put(
        &self,
        def: &KeyspaceDef,
        req: pb::PutRequest,
        deadline: Instant,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let applied = self.eventual_write(def, &req.key, Op::Put(req.value), req.level, deadline).await?;
        Ok(Response::new(pb::PutResponse { revision: 0, hlc: Some(convert::hlc(applied.ts)) }))
    }

    async fn delete(
        &self,
        def: &KeyspaceDef,
        req: pb::DeleteRequest,
        deadline: Instant,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let applied = self.eventual_write(def, &req.key, Op::Delete, req.level, deadline).await?;
        Ok(Response::new(pb::DeleteResponse {
            revision: 0,
            deleted: applied.existed,
            hlc: Some(convert::hlc(applied.ts)),
        }))
    }

    async fn increment(
        &self,
        def: &KeyspaceDef,
        req: pb::IncrementRequest,
        deadline: Instant,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        let applied = self.eventual_write(def, &req.key, Op::Add(req.delta), req.level, deadline).await?;
        let value = match applied.entry.read() {
            Read::Counter(n) => n,
            _ => 0,
        };
        Ok(Response::new(pb::IncrementResponse { hlc: Some(convert::hlc(applied.ts)), value }))
    }

    async fn set(
        &self,
        def: &KeyspaceDef,
        req: pb::SetRequest,
        add: bool,
        deadline: Instant,
    ) -> Result<Response<pb::SetResponse>, Status> {
        self.limits.key(&req.key)?;
        self.limits.value(&req.member).map_err(|s| Status::new(s.code(), s.message().replace("value", "member")))?;
        let op = if add { Op::SetAdd(req.member) } else { Op::SetRemove(req.member) };
        let applied = self.eventual_write(def, &req.key, op, req.level, deadline).await?;
        let size = match applied.entry.read() {
            Read::Set(members) => members.len() as u64,
            _ => 0,
        };
        Ok(Response::new(pb::SetResponse { hlc: Some(convert::hlc(applied.ts)), size }))
    }

    /// A batch of puts, deletes and increments, applied atomically on this node (all or none)
    /// and spread like any eventual write. Conditions need a single order of writes, which an
    /// eventual keyspace does not have: a batch with any is refused.
    async fn batch(
        &self,
        def: &KeyspaceDef,
        req: pb::BatchRequest,
        deadline: Instant,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        if !req.conditions.is_empty() {
            return Err(Status::invalid_argument(format!(
                "keyspace \"{}\" is eventual: a batch there applies its operations without conditions \
                 (conditions need the single order of writes of a strong keyspace)",
                def.name
            )));
        }
        let level = write_level(req.level)?;
        let mut ops = Vec::with_capacity(req.ops.len());
        for (i, o) in req.ops.into_iter().enumerate() {
            let named = |s: Status| Status::new(s.code(), format!("operation {i}: {}", s.message()));
            let (key, op) = match o.op {
                Some(pb::op::Op::Put(p)) => {
                    self.limits.value(&p.value).map_err(named)?;
                    (p.key, Op::Put(p.value))
                }
                Some(pb::op::Op::Delete(d)) => (d.key, Op::Delete),
                Some(pb::op::Op::Increment(n)) => (n.key, Op::Add(n.delta)),
                None => return Err(Status::invalid_argument(format!("operation {i} is empty"))),
            };
            self.limits.key(&key).map_err(named)?;
            ops.push((key, op));
        }
        let applied =
            self.replication.replica().apply_all(&Self::space(def), &ops).await.map_err(convert::crdt_status)?;
        let Some(last) = applied.last() else {
            return Err(Status::invalid_argument("batch has no operations"));
        };
        let seqs: Vec<u64> = applied.iter().map(|a| a.seq).collect();
        self.replication.wait_acks_all(&seqs, level, deadline).await.map_err(shortfall_status)?;
        Ok(Response::new(pb::BatchResponse {
            succeeded: true,
            revision: 0,
            failed_conditions: Vec::new(),
            hlc: Some(convert::hlc(last.ts)),
        }))
    }

    async fn get(
        &self,
        def: &KeyspaceDef,
        req: pb::GetRequest,
        deadline: Instant,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let space = Self::space(def);
        let (entry, replicas) = if quorum_read(req.options)? {
            let read = self.replication.read_quorum(&space, &req.key, deadline).await.map_err(convert::crdt_status)?;
            (read.entry, read.replicas)
        } else {
            (self.replication.replica().get(&space, &req.key).map_err(convert::crdt_status)?, 1)
        };
        let kv = entry.filter(|e| !e.is_deleted()).map(|e| convert::eventual_kv(req.key, &e, false));
        Ok(Response::new(pb::GetResponse { kv, as_of: Some(self.eventual_as_of(replicas)?) }))
    }

    async fn scan(
        &self,
        def: &KeyspaceDef,
        req: pb::ScanRequest,
        range: ScanRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        // The present keys, where a cut-short page goes on (the last key walked, or the last
        // one every replica's answer covered), and how many replicas were merged.
        let (rows, resume_after, replicas) = if quorum_read(req.options)? {
            let scan = self
                .replication
                .scan_quorum(&Self::space(def), range.start, range.end, limit + 1, deadline)
                .await
                .map_err(convert::crdt_status)?;
            (scan.rows, scan.complete_to, scan.replicas)
        } else {
            let (rows, walked_to) = self
                .replication
                .replica()
                .scan_page(&Self::space(def), range.start, range.end, limit + 1, ledge_crdt::SCAN_WALK)
                .map_err(convert::crdt_status)?;
            (rows, walked_to, 1)
        };
        let mut rows: Vec<_> =
            rows.into_iter().map(|(k, e)| (k.clone(), convert::eventual_kv(k, &e, req.keys_only))).collect();
        let mut next_page_token = self.limits.page(&mut rows, limit, |(_, kv)| prost::Message::encoded_len(kv));
        // Cut short before the range ended (tombstones, a replica's bounded answer): the next page
        // goes on from there, so a page may hold fewer keys than asked for, or none.
        if let (true, Some(after)) = (next_page_token.is_empty(), resume_after) {
            next_page_token = crate::limits::page_token(&after);
        }
        let kvs = rows.into_iter().map(|(_, kv)| kv).collect();
        Ok(Response::new(pb::ScanResponse { kvs, next_page_token, as_of: Some(self.eventual_as_of(replicas)?) }))
    }

    fn watch(&self, def: KeyspaceDef, req: pb::WatchRequest) -> Result<WatchStream, Status> {
        if req.from_revision > 0 {
            return Err(Status::invalid_argument(format!(
                "keyspace \"{}\" is eventual: a watch there resumes from a cursor (from_cursor, the \
                 physical.logical@node printed with each change), not a revision",
                def.name
            )));
        }
        Ok(crate::watch::start_eventual(
            self.replication.replica().clone(),
            Self::space(&def),
            req.key,
            req.prefix,
            req.from_cursor.map(convert::timestamp),
            self.limits.watch_stall,
            self.stopping.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn levels_and_consistencies() {
        assert_eq!(write_level(0).unwrap(), WriteLevel::One);
        assert_eq!(write_level(2).unwrap(), WriteLevel::Quorum);
        assert_eq!(write_level(9).unwrap_err().code(), Code::InvalidArgument);
        assert!(!quorum_read(None).unwrap());
        let quorum = pb::ReadOptions { consistency: pb::ReadConsistency::Quorum as i32, ..Default::default() };
        assert!(quorum_read(Some(quorum)).unwrap());
        let strong = pb::ReadOptions { consistency: pb::ReadConsistency::Stale as i32, ..Default::default() };
        let err = quorum_read(Some(strong)).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("read consistency stale applies to strong keyspaces"), "{}", err.message());
        let session = pb::ReadOptions { min_revision: 4, ..Default::default() };
        assert_eq!(quorum_read(Some(session)).unwrap_err().code(), Code::InvalidArgument);
    }
}
