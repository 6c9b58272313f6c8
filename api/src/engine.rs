//! One trait for the two sides of CAP: every `Kv` operation on one keyspace, served by the
//! strong engine (the Raft group: [`crate::strong`]) or the eventual one (the local CRDT replica
//! and the replication engine: [`crate::eventual`]). The `Kv` service checks what every request
//! shares (size, keyspace, key) and hands it to the engine of the keyspace's mode; an operation
//! one side does not have is refused there, with a message naming the side that has it.

use tokio::time::Instant;
use tonic::{Response, Status};

use ledge_proto::v1 as pb;
use ledge_store::KeyspaceDef;

use crate::kv::ScanRange;

/// A stream of watch messages.
pub(crate) type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchResponse, Status>>;

/// The operations of the `Kv` service on one keyspace `def`, each within `deadline`.
#[tonic::async_trait]
pub(crate) trait Engine: Send + Sync {
    /// Writes a key.
    async fn put(
        &self,
        def: &KeyspaceDef,
        req: pb::PutRequest,
        deadline: Instant,
    ) -> Result<Response<pb::PutResponse>, Status>;

    /// Reads a key at the requested consistency.
    async fn get(
        &self,
        def: &KeyspaceDef,
        req: pb::GetRequest,
        deadline: Instant,
    ) -> Result<Response<pb::GetResponse>, Status>;

    /// Deletes a key.
    async fn delete(
        &self,
        def: &KeyspaceDef,
        req: pb::DeleteRequest,
        deadline: Instant,
    ) -> Result<Response<pb::DeleteResponse>, Status>;

    /// Reads a page of `range`, at most `limit` keys.
    async fn scan(
        &self,
        def: &KeyspaceDef,
        req: pb::ScanRequest,
        range: ScanRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Response<pb::ScanResponse>, Status>;

    /// Applies a batch of operations atomically.
    async fn batch(
        &self,
        def: &KeyspaceDef,
        req: pb::BatchRequest,
        deadline: Instant,
    ) -> Result<Response<pb::BatchResponse>, Status>;

    /// Starts a watch of a key or a prefix.
    fn watch(&self, def: KeyspaceDef, req: pb::WatchRequest) -> Result<WatchStream, Status>;

    /// Adds a delta to a counter.
    async fn increment(
        &self,
        def: &KeyspaceDef,
        req: pb::IncrementRequest,
        deadline: Instant,
    ) -> Result<Response<pb::IncrementResponse>, Status>;

    /// Adds (`add`) or removes a set member.
    async fn set(
        &self,
        def: &KeyspaceDef,
        req: pb::SetRequest,
        add: bool,
        deadline: Instant,
    ) -> Result<Response<pb::SetResponse>, Status>;
}
