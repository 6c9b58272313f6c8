//! Node wiring: open the store, start Raft, serve the gRPC services, shut down cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use ledge_consensus::{Dialer, Node, NodeOptions, RaftTuning, TcpDialer};
use ledge_crdt::{Clock, Replica, SystemClock};
use ledge_proto::v1::admin_server::AdminServer;
use ledge_proto::v1::kv_server::KvServer;

use crate::admin::AdminService;
use crate::config::{Config, Role};
use crate::kv::KvService;
use crate::limits::Limits;
use crate::sync::{GrpcTransport, NodeMembership, Replication, SyncService};
use ledge_crdt::SyncOptions;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most concurrent calls (watch streams included) on one HTTP/2 connection; a client opening
/// more waits for one to end.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// What a simulation replaces: the transport to peers and the source of new node ids (and,
/// through [`serve_with_clock`], the clock of eventual keyspaces' hybrid logical clock).
pub struct Environment {
    /// Opens channels to peers.
    pub dialer: Arc<dyn Dialer>,
    /// Produces a node id at first start when none is configured.
    pub new_node_id: Box<dyn FnOnce() -> u64 + Send>,
    /// When the Raft log syncs its writes: `Background` (its own writer thread) in a server;
    /// `Inline` in a simulation, where a sync on another thread would end after a real-time delay
    /// that lands on a different simulated tick in every run.
    pub flush: ledge_store::FlushPolicy,
    /// Test-only fault: serve linearizable reads from local state without confirming
    /// leadership. The simulation harness sets it to prove its checker catches stale reads.
    pub unsafe_local_reads: bool,
    /// Test-only fault: every merge of peers' eventual states drops its first state. The
    /// simulation harness sets it to prove its convergence checker catches lost repairs.
    pub unsafe_drop_first_merge: bool,
    /// Told of every eventual state once it is durable on this node (none in a server): the
    /// simulation's checkers learn from it which nodes held a write when it was acknowledged.
    pub durable: Option<ledge_crdt::DurableListener>,
}

impl Environment {
    /// Real TCP and an OS-random node id.
    pub fn production() -> Self {
        Self {
            dialer: Arc::new(TcpDialer::default()),
            new_node_id: Box::new(|| loop {
                let id = u64::from(rand::random::<u32>());
                if id != 0 {
                    return id;
                }
            }),
            flush: ledge_store::FlushPolicy::Background,
            unsafe_local_reads: false,
            unsafe_drop_first_merge: false,
            durable: None,
        }
    }
}

/// Checks for settings this version cannot honour yet, so they fail loudly instead of being
/// ignored.
fn refuse_unsupported(config: &Config) -> anyhow::Result<()> {
    if config.role == Role::Cloud {
        anyhow::bail!("--role cloud: the cloud tier is not available in this version");
    }
    if config.cloud.is_some() {
        anyhow::bail!("--cloud: syncing to a cloud tier is not available in this version");
    }
    if config.http.is_some() {
        anyhow::bail!("--http: the HTTP status endpoint is not available in this version");
    }
    Ok(())
}

/// Starts the node described by `config` and serves it on a real TCP listener until `shutdown`
/// completes.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    if config.advertise == config.listen && config.listen.ends_with(":0") {
        config.advertise = bound.to_string();
    }
    tracing::info!(address = %bound, "listening");
    // Replies are small and latency-bound: disable Nagle's algorithm on every connection.
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        })
    });
    serve(config, Environment::production(), incoming, shutdown).await
}

/// Starts the node and serves it on `incoming` connections until `shutdown` completes.
pub async fn serve<I, IO, IE>(
    config: Config,
    env: Environment,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with_clock(config, env, Arc::new(SystemClock), incoming, shutdown).await
}

/// [`serve`] with the physical clock that eventual keyspaces' hybrid logical clock reads (a
/// simulation skews it).
pub async fn serve_with_clock<I, IO, IE>(
    config: Config,
    env: Environment,
    clock: Arc<dyn Clock>,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    refuse_unsupported(&config)?;
    let id = ledge_consensus::resolve_node_id(&config.data_dir, config.node_id, env.new_node_id)?;
    let opts = NodeOptions {
        node_id: Some(id),
        data_dir: config.data_dir.clone(),
        advertise: config.advertise.clone(),
        region: config.region.clone(),
        seeds: config.join.clone(),
        bootstrap_expect: config.bootstrap_expect,
        max_voters: config.max_voters,
        unsafe_local_reads: env.unsafe_local_reads,
        flush: env.flush,
        memory: config.memory,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        raft: RaftTuning {
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            election_min: Duration::from_millis(config.election_timeout_ms.0),
            election_max: Duration::from_millis(config.election_timeout_ms.1),
            snapshot_after: config.snapshot_after,
            keep_after_snapshot: config.log_keep.unwrap_or(RaftTuning::default().keep_after_snapshot),
            change_retention: config.log_keep.unwrap_or(RaftTuning::default().change_retention),
            ..RaftTuning::default()
        },
    };
    let node = Node::start(opts, id, env.dialer.clone()).await?;
    tracing::info!(node = id, region = %config.region, data_dir = %config.data_dir.display(), "node started");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let store = ledge_store::Eventual::open_counted(node.state().disk(), node.usage().clone())?;
    let max_drift = Duration::from_millis(config.max_clock_drift_ms);
    let replica = Replica::open(store, node.state().clone(), id, clock, max_drift)?;
    replica.set_max_entry_bytes(config.max_request_bytes);
    replica.set_unsafe_drop_first_merge(env.unsafe_drop_first_merge);
    if let Some(listener) = env.durable.clone() {
        replica.on_durable(listener);
    }
    let sync = SyncOptions {
        anti_entropy_interval: Duration::from_millis(config.anti_entropy_ms),
        call_timeout: Duration::from_millis(config.request_timeout_ms.min(3_000)),
        log_keep: config.sync_log_keep,
        watch_keep: config.log_keep.unwrap_or(RaftTuning::default().change_retention),
    };
    let transport = GrpcTransport::new(env.dialer.clone());
    let membership = NodeMembership::new(node.clone());
    let replication = Replication::start(replica.clone(), transport, membership, sync, stop.subscribe());

    let (mut health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledge_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let role = match config.role {
        Role::Edge => "edge",
        Role::Cloud => "cloud",
    };
    let limits = Limits {
        max_request: config.max_request_bytes,
        watch_stall: Duration::from_millis(config.watch_stall_ms),
        ..Limits::default()
    };
    let kv = KvServer::new(KvService::new(node.clone(), replication.clone(), limits, stop.subscribe()))
        .max_decoding_message_size(limits.decoding_limit())
        .max_encoding_message_size(limits.decoding_limit());
    let admin_service = AdminService::new(node.clone(), replication, config.region.clone(), role, env.dialer.clone());
    let admin = AdminServer::new(admin_service).max_decoding_message_size(limits.max_request);

    // On shutdown the server stops accepting, lets in-flight requests finish for a grace
    // period, then closes whatever connections clients keep open.
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(kv)
        .add_service(admin)
        .add_service(node.raft_service().into_server())
        .add_service(SyncService::new(replica).into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
    tokio::pin!(server, shutdown);
    let served = tokio::select! {
        r = &mut server => r,
        _ = &mut shutdown => {
            tracing::info!(node = id, "shutting down");
            let _ = stop.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!("closing connections still open after {SHUTDOWN_GRACE:?}");
                    Ok(())
                }
            }
        }
    };
    node.shutdown().await?;
    tracing::info!(node = id, "stopped");
    served?;
    Ok(())
}
