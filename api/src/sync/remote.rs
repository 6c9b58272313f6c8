//! The client side of `ledge.v1.Sync`: a [`Remote`] that carries `ledge_crdt::sync` messages to a
//! peer over gRPC, bincode-encoded, each call bounded by a deadline.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use ledge_consensus::MAX_MESSAGE_BYTES;
use ledge_crdt::replication::Peer;
use ledge_crdt::sync::{Remote, Request, Response};
use ledge_crdt::Error;
use ledge_proto::v1::sync_client::SyncClient;
use ledge_proto::v1::SyncMessage;

/// A peer's `Sync` service. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct GrpcRemote {
    from: u64,
    target: u64,
    address: String,
    client: SyncClient<Channel>,
    timeout: Duration,
}

impl GrpcRemote {
    /// Calls node `target` at `address` over `channel` on behalf of node `from`, each call
    /// bounded by `timeout`.
    pub fn new(from: u64, target: u64, address: String, channel: Channel, timeout: Duration) -> Self {
        let client = SyncClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self { from, target, address, client, timeout }
    }

    /// The peer's node id.
    pub fn target(&self) -> u64 {
        self.target
    }
}

impl Peer for GrpcRemote {
    fn address(&self) -> &str {
        &self.address
    }

    fn with_timeout(&self, timeout: Duration) -> Self {
        Self { timeout, ..self.clone() }
    }
}

impl Remote for GrpcRemote {
    fn peer(&self) -> u64 {
        self.target
    }

    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        let mut client = self.client.clone();
        let (from, target, timeout) = (self.from, self.target, self.timeout);
        let address = self.address.clone();
        async move {
            let payload = bincode::serialize(&request).map_err(|e| Error::InvalidData(format!("encode: {e}")))?;
            let mut call = tonic::Request::new(SyncMessage { from, target, payload });
            call.set_timeout(timeout);
            let reply = match tokio::time::timeout(timeout, client.call(call)).await {
                Err(_) => {
                    return Err(Error::Unavailable(format!("node {target} at {address}: no reply within {timeout:?}")))
                }
                Ok(Err(status)) => {
                    let message = format!("node {target} at {address}: {}", status.message());
                    return Err(match status.code() {
                        Code::NotFound => Error::NotFound(message),
                        Code::InvalidArgument => Error::InvalidData(message),
                        _ => Error::Unavailable(message),
                    });
                }
                Ok(Ok(reply)) => reply.into_inner(),
            };
            bincode::deserialize(&reply.payload)
                .map_err(|e| Error::InvalidData(format!("bad sync reply from node {target}: {e}")))
        }
    }
}
