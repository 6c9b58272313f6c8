//! The systems `ledge-load` can drive, behind one small interface.
//!
//! A [`Conn`] is one pooled connection to a cluster. Clients clone it: clones share the
//! underlying gRPC channel, so N clients over M connections multiplex N in-flight requests over
//! M HTTP/2 connections for either target.

use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

/// The per-request deadline for both targets (the Ledge client's default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Which system a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A Ledge region, through `ledge_client` (a put is acknowledged once committed and
    /// applied by a quorum of the region's Raft group).
    Ledge,
    /// An etcd cluster, through the `etcd-client` crate (a put is acknowledged once committed
    /// by a quorum of etcd's Raft group and applied by the member that serves it).
    Etcd,
}

impl Target {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Target::Ledge => "ledge",
            Target::Etcd => "etcd",
        }
    }
}

/// What each request of a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// Write a fresh random key. Ledge: the keyspace's default write level (a Raft commit on a
    /// strong keyspace, `one` on an eventual one); etcd: a put.
    Put,
    /// Read a preloaded key with a linearizable read. Ledge: `ReadOptions::linearizable()`
    /// (served by the leader after it confirms leadership with a quorum); etcd: a default
    /// (linearizable) range request.
    Get,
    /// Read a preloaded key from whichever replica the connection is pinned to, from its local
    /// state. Ledge: `ReadOptions::stale()`; etcd: a serializable range request.
    StaleGet,
}

impl Op {
    /// The name used on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::StaleGet => "stale-get",
        }
    }

    /// Whether this op reads (and so needs preloaded keys).
    pub fn is_read(self) -> bool {
        matches!(self, Op::Get | Op::StaleGet)
    }
}

/// One connection to the target cluster.
#[derive(Clone)]
pub enum Conn {
    /// A Ledge client: it sends to the endpoint that last answered and follows leader hints.
    Ledge(ledge_client::Client),
    /// An etcd KV client over a channel balanced across every given endpoint, as etcd's own
    /// clients do; members forward puts to their leader.
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::KvClient),
}

impl Conn {
    /// Opens one connection to `target` at `endpoints` (`host:port`, comma-separated list
    /// already split). Given a single endpoint, the connection is pinned to that member.
    pub async fn connect(target: Target, endpoints: &[String]) -> anyhow::Result<Conn> {
        match target {
            Target::Ledge => {
                let client = ledge_client::Client::builder()
                    .endpoints(endpoints.iter().cloned())
                    .timeout(REQUEST_TIMEOUT)
                    .connect()
                    .await
                    .context("connect to Ledge")?;
                Ok(Conn::Ledge(client))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd => {
                let urls: Vec<String> = endpoints
                    .iter()
                    .map(|e| if e.contains("://") { e.clone() } else { format!("http://{e}") })
                    .collect();
                let options = etcd_client::ConnectOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(REQUEST_TIMEOUT);
                let client = etcd_client::Client::connect(urls, Some(options)).await.context("connect to etcd")?;
                Ok(Conn::Etcd(client.kv_client()))
            }
            #[cfg(not(feature = "etcd"))]
            Target::Etcd => anyhow::bail!(
                "this ledge-load was built without etcd support: rebuild with `--features etcd` \
                 (needs protoc; benches/scripts/build.sh installs it)"
            ),
        }
    }

    /// Writes `value` to `key` and waits for the target's acknowledgement.
    /// Writes `key`; on Ledge at write `level` when one is given (eventual keyspaces).
    pub async fn put(
        &mut self,
        keyspace: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        level: Option<ledge_client::WriteLevel>,
    ) -> anyhow::Result<()> {
        match self {
            Conn::Ledge(client) => match level {
                Some(level) => {
                    client.put_with(keyspace, key, value, level).await?;
                }
                None => {
                    client.put(keyspace, key, value).await?;
                }
            },
            // etcd has one flat keyspace; `--keyspace` is Ledge-only.
            #[cfg(feature = "etcd")]
            Conn::Etcd(kv) => {
                kv.put(key, value, None).await?;
            }
        }
        Ok(())
    }

    /// Reads `key` the way `op` says (`Get` or `StaleGet`) and returns whether it exists.
    pub async fn get(&mut self, keyspace: &str, key: Vec<u8>, op: Op) -> anyhow::Result<bool> {
        match self {
            Conn::Ledge(client) => {
                let options = match op {
                    Op::StaleGet => ledge_client::ReadOptions::stale(),
                    _ => ledge_client::ReadOptions::linearizable(),
                };
                Ok(client.get(keyspace, key, options).await?.kv.is_some())
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(kv) => {
                let options = match op {
                    Op::StaleGet => Some(etcd_client::GetOptions::new().with_serializable()),
                    _ => None,
                };
                Ok(!kv.get(key, options).await?.kvs().is_empty())
            }
        }
    }
}
