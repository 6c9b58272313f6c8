//! The [`Client`] handle, its builder, and one typed method per `Kv` and `Admin` RPC.
//!
//! Each method builds the `ledge.v1` request from domain types (see `convert.rs`), hands it to
//! the router with whether it is a read or a write (which decides what may be retried), and
//! converts the reply back.

use std::{sync::Arc, time::Duration};

use ledge_proto::v1::{self as pb, admin_client::AdminClient, kv_client::KvClient};
use tonic::transport::Channel;

use crate::{
    convert,
    router::{normalize_endpoint, Kind, Router},
    BatchResult, Condition, DeleteResult, Error, GetResult, IncrementResult, KeyValue, Keyspace, Member, Mode,
    NodeStatus, Op, PutResult, ReadOptions, Result, ScanOptions, ScanPage, Scope, SetResult, WatchOptions, WatchStream,
    WriteLevel,
};

/// How long a request may take, retries included, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long establishing one connection may take, unless configured otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest reply accepted by default, in bytes: a full scan page of large values fits.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Tunables of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The deadline of one call, retries included.
    pub timeout: Duration,
    /// The deadline of establishing one connection.
    pub connect_timeout: Duration,
    /// The largest reply a call accepts, in bytes.
    pub max_reply_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// Builds a [`Client`]: `Client::builder().endpoints(["127.0.0.1:7700"]).timeout(d).connect()`.
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    options: ClientOptions,
}

impl ClientBuilder {
    /// Adds endpoints, each `host:port` or a `http://` URI.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Adds one endpoint, `host:port` or a `http://` URI.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Sets the deadline of one call, retries included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Sets the deadline of establishing one connection (default 2 s).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.options.connect_timeout = connect_timeout;
        self
    }

    /// Replaces all tunables at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Creates the client. No connection is made yet: each endpoint is dialled on first use,
    /// so this fails only on unusable input (no endpoints, or an address that is not a URI).
    /// Must be called within a Tokio runtime.
    pub async fn connect(self) -> Result<Client> {
        let endpoints = self.endpoints.iter().map(|e| normalize_endpoint(e)).collect::<Result<Vec<_>>>()?;
        let router =
            Router::new(endpoints, self.options.timeout, self.options.connect_timeout, self.options.max_reply_bytes)?;
        Ok(Client { router: Arc::new(router), writes: Arc::new(WriteIds::new()) })
    }
}

/// A handle to a Ledge region. Cheap to clone; clones share connections and the remembered
/// leader.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
    writes: Arc<WriteIds>,
}

/// Request ids for writes: a random client id, chosen once per client (clones share it), and a
/// sequence number per write. A retry of a write reuses its id, so the region applies it at most
/// once (see `ledge.v1.RequestId`).
struct WriteIds {
    client: u64,
    next: std::sync::atomic::AtomicU64,
}

impl WriteIds {
    fn new() -> Self {
        let client = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        };
        Self { client, next: std::sync::atomic::AtomicU64::new(1) }
    }

    fn next(&self) -> Option<pb::RequestId> {
        let sequence = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(pb::RequestId { client_id: self.client, sequence })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.router.endpoints()).finish()
    }
}

impl Client {
    /// A client over `endpoints` (each `host:port` or a `http://` URI) with default options.
    pub async fn connect(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        Client::builder().endpoints(endpoints).connect().await
    }

    /// A builder for a client with non-default options.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The URIs of every endpoint the client knows, including leaders learnt from hints; the
    /// one that answered last comes first.
    pub fn endpoints(&self) -> Vec<String> {
        self.router.endpoints()
    }

    fn kv(&self, channel: Channel) -> KvClient<Channel> {
        KvClient::new(channel).max_decoding_message_size(self.router.max_reply_bytes())
    }

    fn admin(&self, channel: Channel) -> AdminClient<Channel> {
        AdminClient::new(channel).max_decoding_message_size(self.router.max_reply_bytes())
    }

    /// Writes `value` to `key` in `keyspace` ("" means `default`) at the keyspace's default
    /// write level.
    pub async fn put(&self, keyspace: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResult> {
        self.put_at(keyspace, key.into(), value.into(), None).await
    }

    /// Writes `value` to `key`, waiting for `level` replicas (eventual keyspaces).
    pub async fn put_with(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        level: WriteLevel,
    ) -> Result<PutResult> {
        self.put_at(keyspace, key.into(), value.into(), Some(level)).await
    }

    async fn put_at(
        &self,
        keyspace: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        level: Option<WriteLevel>,
    ) -> Result<PutResult> {
        let request = pb::PutRequest {
            keyspace: keyspace.to_owned(),
            key,
            value,
            level: convert::write_level(level),
            request_id: self.writes.next(),
        };
        let reply = self
            .router
            .call(Kind::IdempotentWrite, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.put(request).await }
            })
            .await?;
        Ok(convert::put_result(reply))
    }

    /// Reads `key` from `keyspace`; the result's `kv` is `None` when the key does not exist.
    pub async fn get(&self, keyspace: &str, key: impl Into<Vec<u8>>, options: ReadOptions) -> Result<GetResult> {
        let request = pb::GetRequest {
            keyspace: keyspace.to_owned(),
            key: key.into(),
            options: Some(convert::read_options(&options)),
        };
        let reply = self
            .router
            .call(Kind::Read, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.get(request).await }
            })
            .await?;
        Ok(convert::get_result(reply))
    }

    /// Deletes `key` from `keyspace`; deleting an absent key succeeds with `deleted == false`.
    pub async fn delete(&self, keyspace: &str, key: impl Into<Vec<u8>>) -> Result<DeleteResult> {
        self.delete_at(keyspace, key.into(), None).await
    }

    /// Deletes `key`, waiting for `level` replicas (eventual keyspaces).
    pub async fn delete_with(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        level: WriteLevel,
    ) -> Result<DeleteResult> {
        self.delete_at(keyspace, key.into(), Some(level)).await
    }

    async fn delete_at(&self, keyspace: &str, key: Vec<u8>, level: Option<WriteLevel>) -> Result<DeleteResult> {
        let request = pb::DeleteRequest {
            keyspace: keyspace.to_owned(),
            key,
            level: convert::write_level(level),
            request_id: self.writes.next(),
        };
        let reply = self
            .router
            .call(Kind::IdempotentWrite, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.delete(request).await }
            })
            .await?;
        Ok(convert::delete_result(reply))
    }

    /// Adds `delta` (negative to decrement) to the counter `key` of an eventual keyspace; the
    /// first increment creates the key as a counter.
    pub async fn increment(&self, keyspace: &str, key: impl Into<Vec<u8>>, delta: i64) -> Result<IncrementResult> {
        self.increment_at(keyspace, key.into(), delta, None).await
    }

    /// [`Client::increment`], waiting for `level` replicas.
    pub async fn increment_with(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        delta: i64,
        level: WriteLevel,
    ) -> Result<IncrementResult> {
        self.increment_at(keyspace, key.into(), delta, Some(level)).await
    }

    async fn increment_at(
        &self,
        keyspace: &str,
        key: Vec<u8>,
        delta: i64,
        level: Option<WriteLevel>,
    ) -> Result<IncrementResult> {
        let request =
            pb::IncrementRequest { keyspace: keyspace.to_owned(), key, delta, level: convert::write_level(level) };
        let reply = self
            .router
            .call(Kind::Write, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.increment(request).await }
            })
            .await?;
        convert::increment_result(reply)
    }

    /// Adds `member` to the set `key` of an eventual keyspace; the first add creates the key as
    /// a set.
    pub async fn set_add(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        member: impl Into<Vec<u8>>,
    ) -> Result<SetResult> {
        self.set_at(keyspace, key.into(), member.into(), true, None).await
    }

    /// [`Client::set_add`], waiting for `level` replicas.
    pub async fn set_add_with(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        member: impl Into<Vec<u8>>,
        level: WriteLevel,
    ) -> Result<SetResult> {
        self.set_at(keyspace, key.into(), member.into(), true, Some(level)).await
    }

    /// Removes `member` from the set `key`: every add of it the answering node has seen. An add
    /// made concurrently elsewhere survives.
    pub async fn set_remove(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        member: impl Into<Vec<u8>>,
    ) -> Result<SetResult> {
        self.set_at(keyspace, key.into(), member.into(), false, None).await
    }

    /// [`Client::set_remove`], waiting for `level` replicas.
    pub async fn set_remove_with(
        &self,
        keyspace: &str,
        key: impl Into<Vec<u8>>,
        member: impl Into<Vec<u8>>,
        level: WriteLevel,
    ) -> Result<SetResult> {
        self.set_at(keyspace, key.into(), member.into(), false, Some(level)).await
    }

    async fn set_at(
        &self,
        keyspace: &str,
        key: Vec<u8>,
        member: Vec<u8>,
        add: bool,
        level: Option<WriteLevel>,
    ) -> Result<SetResult> {
        let request = pb::SetRequest { keyspace: keyspace.to_owned(), key, member, level: convert::write_level(level) };
        let reply = self
            .router
            .call(Kind::Write, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move {
                    if add {
                        kv.set_add(request).await
                    } else {
                        kv.set_remove(request).await
                    }
                }
            })
            .await?;
        convert::set_result(reply)
    }

    /// Reads one page of keys, in key order. Pass the page's `next_page_token` in
    /// [`ScanOptions::page_token`] to read the next one.
    pub async fn scan(&self, options: ScanOptions) -> Result<ScanPage> {
        let request = convert::scan_request(&options);
        let reply = self
            .router
            .call(Kind::Read, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.scan(request).await }
            })
            .await?;
        Ok(convert::scan_page(reply))
    }

    /// Reads every key the scan covers, following page tokens until the scan is complete.
    /// `options.limit` sets the page size. Each page is a separate read, so a scan that spans
    /// pages is not one snapshot.
    pub async fn scan_all(&self, mut options: ScanOptions) -> Result<Vec<KeyValue>> {
        let mut kvs = Vec::new();
        loop {
            let page = self.scan(options.clone()).await?;
            kvs.extend(page.kvs);
            match page.next_page_token {
                None => return Ok(kvs),
                Some(token) if token == options.page_token => {
                    return Err(Error::invalid_response(format!("scan returned page token {token:?} twice")))
                }
                Some(token) => options.page_token = token,
            }
        }
    }

    /// Applies `ops` to `keyspace` atomically if every condition holds. A failed condition is
    /// not an error: the result has `succeeded == false` and lists the failed conditions.
    pub async fn batch(
        &self,
        keyspace: &str,
        conditions: impl IntoIterator<Item = Condition>,
        ops: impl IntoIterator<Item = Op>,
    ) -> Result<BatchResult> {
        self.batch_at(keyspace, conditions, ops, None).await
    }

    /// [`Client::batch`] with a write level, for an eventual keyspace: there the batch takes no
    /// conditions, may hold increments, applies atomically on the node that takes it, and
    /// replies once `level` members hold it. A batch with increments is resent only when it
    /// was certainly not applied (an eventual keyspace does not deduplicate retries).
    pub async fn batch_with(
        &self,
        keyspace: &str,
        conditions: impl IntoIterator<Item = Condition>,
        ops: impl IntoIterator<Item = Op>,
        level: WriteLevel,
    ) -> Result<BatchResult> {
        self.batch_at(keyspace, conditions, ops, Some(level)).await
    }

    async fn batch_at(
        &self,
        keyspace: &str,
        conditions: impl IntoIterator<Item = Condition>,
        ops: impl IntoIterator<Item = Op>,
        level: Option<WriteLevel>,
    ) -> Result<BatchResult> {
        let ops: Vec<Op> = ops.into_iter().collect();
        let counts = ops.iter().any(|op| matches!(op, Op::Increment { .. }));
        let request = pb::BatchRequest {
            keyspace: keyspace.to_owned(),
            conditions: conditions.into_iter().map(convert::condition).collect(),
            ops: ops.into_iter().map(convert::op).collect(),
            request_id: self.writes.next(),
            level: convert::write_level(level),
        };
        let kind = if counts { Kind::Write } else { Kind::IdempotentWrite };
        let reply = self
            .router
            .call(kind, request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.batch(request).await }
            })
            .await?;
        Ok(convert::batch_result(reply))
    }

    /// Watches a key or a prefix: the returned stream yields its changes in revision order,
    /// starting at [`WatchOptions::from_revision`] (with a snapshot of the watched range first
    /// if that revision is older than the server keeps), until the server ends it or it is
    /// dropped.
    ///
    /// The client's timeout bounds opening the stream only (leader hints and retries included);
    /// once open, the stream has no deadline. Any node can serve a watch.
    pub async fn watch(&self, options: WatchOptions) -> Result<WatchStream> {
        let request = convert::watch_request(&options);
        let wire = self
            .router
            .open(request, |channel, request| {
                let mut kv = self.kv(channel);
                async move { kv.watch(request).await }
            })
            .await?;
        Ok(WatchStream::new(wire))
    }

    /// Creates a keyspace; fails with `AlreadyExists` if it exists.
    pub async fn create_keyspace(&self, name: &str, mode: Mode, scope: Scope) -> Result<Keyspace> {
        self.create_keyspace_at(name, mode, scope, false).await
    }

    /// Creates a keyspace, or succeeds without change when an identical one already exists.
    pub async fn create_keyspace_if_not_exists(&self, name: &str, mode: Mode, scope: Scope) -> Result<Keyspace> {
        self.create_keyspace_at(name, mode, scope, true).await
    }

    async fn create_keyspace_at(&self, name: &str, mode: Mode, scope: Scope, if_not_exists: bool) -> Result<Keyspace> {
        let request = pb::CreateKeyspaceRequest {
            name: name.to_owned(),
            mode: convert::mode(mode),
            scope: convert::scope(scope),
            if_not_exists,
        };
        let reply = self
            .router
            .call(Kind::Write, request, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.create_keyspace(request).await }
            })
            .await?;
        match reply.keyspace {
            Some(keyspace) => convert::keyspace(keyspace),
            // Older servers may leave the keyspace out; what was asked for is what was made.
            None => Ok(Keyspace { name: name.to_owned(), mode, scope, created_revision: reply.revision }),
        }
    }

    /// Lists every keyspace.
    pub async fn list_keyspaces(&self) -> Result<Vec<Keyspace>> {
        let reply = self
            .router
            .call(Kind::Read, pb::ListKeyspacesRequest {}, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.list_keyspaces(request).await }
            })
            .await?;
        reply.keyspaces.into_iter().map(convert::keyspace).collect()
    }

    /// Drops a keyspace and its data; returns the revision of the drop.
    pub async fn drop_keyspace(&self, name: &str) -> Result<u64> {
        let request = pb::DropKeyspaceRequest { name: name.to_owned() };
        let reply = self
            .router
            .call(Kind::Write, request, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.drop_keyspace(request).await }
            })
            .await?;
        Ok(reply.revision)
    }

    /// The members of the region's Raft group, as the leader sees them (the node that answers
    /// asks the leader, so `last_applied` is known for every member).
    pub async fn members(&self) -> Result<Vec<Member>> {
        let reply = self
            .router
            .call(Kind::Read, pb::ListMembersRequest {}, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.list_members(request).await }
            })
            .await?;
        Ok(convert::members(reply))
    }

    /// Removes node `id` (a voter or a learner) from the region; returns the revision of the
    /// membership change.
    pub async fn remove_member(&self, id: u64) -> Result<u64> {
        let request = pb::RemoveMemberRequest { id };
        let reply = self
            .router
            .call(Kind::Write, request, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.remove_member(request).await }
            })
            .await?;
        Ok(reply.revision)
    }

    /// The status of whichever node answers (the last one that worked, normally).
    pub async fn status(&self) -> Result<NodeStatus> {
        let reply = self
            .router
            .call(Kind::Read, pb::StatusRequest {}, |channel, request| {
                let mut admin = self.admin(channel);
                async move { admin.status(request).await }
            })
            .await?;
        Ok(convert::node_status(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn calls_are_send_and_clients_are_sync() {
        fn assert_sync<T: Send + Sync + Clone>() {}
        assert_sync::<Client>();
        let client = Client::connect(["127.0.0.1:1"]).await.unwrap();
        assert_send(&client.put("", "k", "v"));
        assert_send(&client.scan_all(ScanOptions::new("")));
        assert_send(&client.status());
        assert_send(&client.watch(WatchOptions::prefix("", "")));
        assert_send(&client.members());
    }

    #[tokio::test]
    async fn connect_validates_endpoints_without_dialling() {
        let err = Client::connect(Vec::<String>::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "InvalidArgument: no endpoints given");
        let err = Client::connect(["ftp://x:1"]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let client = Client::connect(["10.255.255.1:7700", "http://b:1/"]).await.unwrap();
        assert_eq!(client.endpoints(), vec!["http://10.255.255.1:7700", "http://b:1"]);
    }

    /// Port 1 on loopback refuses connections at once, so this needs no server and no timing.
    #[tokio::test]
    async fn an_unreachable_region_is_unavailable_after_retrying() {
        let client = Client::builder()
            .endpoints(["127.0.0.1:1", "127.0.0.1:2"])
            .timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let err = client.get("", "k", ReadOptions::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().starts_with("http://127.0.0.1:"), "{err}");
        assert!(err.message().contains("Connection refused"), "{err}");
        let err = client.put("", "k", "v").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    }
}
