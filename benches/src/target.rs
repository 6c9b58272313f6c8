//! The systems `ledge-load` can drive, behind one small interface.
//!
//! A [`Conn`] is one pooled connection to a cluster. Clients clone it: clones share the
//! underlying gRPC channel, so N clients over M connections multiplex N in-flight puts over M
//! HTTP/2 connections for either target.

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
    /// already split).
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
    pub async fn put(&mut self, keyspace: &str, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Conn::Ledge(client) => {
                client.put(keyspace, key, value).await?;
            }
            // etcd has one flat keyspace; `--keyspace` is Ledge-only.
            #[cfg(feature = "etcd")]
            Conn::Etcd(kv) => {
                kv.put(key, value, None).await?;
            }
        }
        Ok(())
    }
}
