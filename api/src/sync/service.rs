//! The server side of `ledge.v1.Sync`: decodes a peer's request, answers it from the local
//! replica ([`Replica::serve`]) and encodes the answer.

use tonic::{Request, Response, Status};

use ledge_consensus::MAX_MESSAGE_BYTES;
use ledge_crdt::Replica;
use ledge_proto::v1::sync_server::{Sync as SyncRpc, SyncServer};
use ledge_proto::v1::SyncMessage;

use crate::convert;

/// Serves the internal `Sync` service for one node.
#[derive(Clone)]
pub struct SyncService {
    replica: Replica,
}

impl SyncService {
    /// A service answering from `replica`.
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// The tonic server, with message limits sized for sync batches.
    pub fn into_server(self) -> SyncServer<Self> {
        SyncServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl SyncRpc for SyncService {
    async fn call(&self, req: Request<SyncMessage>) -> Result<Response<SyncMessage>, Status> {
        let msg = req.into_inner();
        let me = self.replica.node();
        if msg.target != me {
            return Err(Status::failed_precondition(format!(
                "sync message for node {} delivered to node {me}",
                msg.target
            )));
        }
        let request = bincode::deserialize(&msg.payload)
            .map_err(|e| Status::invalid_argument(format!("bad sync payload from node {}: {e}", msg.from)))?;
        let response = self.replica.serve(msg.from, request).await.map_err(convert::crdt_status)?;
        let payload = bincode::serialize(&response).map_err(|e| Status::internal(format!("encode sync reply: {e}")))?;
        Ok(Response::new(SyncMessage { from: me, target: msg.from, payload }))
    }
}
