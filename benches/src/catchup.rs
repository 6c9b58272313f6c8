//! `ledge-catchup`: how long, and how many bytes, a node that missed writes to an eventual
//! keyspace takes to catch up through anti-entropy.
//!
//! It starts a 3-node region of real `ledged` processes on loopback (`--sync-log-keep` small, so
//! the push streams give up on the missing node and anti-entropy has to repair it), creates an
//! eventual keyspace, SIGSTOPs node 3, writes `--keys` fresh keys through node 1 (64 clients,
//! level `one`), waits until node 2 holds them all, then SIGCONTs node 3 and measures the time
//! until it holds them all too. Traffic is read from every node's `Status.sync_links`:
//! anti-entropy session bytes (both directions, counted by the initiator) and pushed bytes,
//! summed over all links, as a delta across the catch-up. The size of the missed data is the
//! keys and values written.
//!
//! ```text
//! ledge-catchup                                  # 100,000 keys of 16 + 256 bytes
//! ledge-catchup --keys 10000 --json --ledged target/release/ledged
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ledge_client::{Client, Mode, ReadOptions, Scope};
use ledge_proto::v1::admin_client::AdminClient;
use ledge_proto::v1::{StatusRequest, StatusResponse};

const KEYSPACE: &str = "catchup";
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(name = "ledge-catchup", about = "Anti-entropy catch-up of a node that missed eventual writes")]
struct Args {
    /// The `ledged` binary [default: `ledged` next to this executable].
    #[arg(long)]
    ledged: Option<PathBuf>,
    /// Keys written while the node is stopped.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes (keys are 16 bytes).
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// The nodes' `--anti-entropy-ms`.
    #[arg(long, default_value_t = 1000)]
    anti_entropy_ms: u64,
    /// The nodes' `--sync-log-keep` (small: the stopped node must catch up by anti-entropy).
    #[arg(long, default_value_t = 1000)]
    sync_log_keep: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Keep the nodes' data and logs (the directory is printed) instead of removing them.
    #[arg(long)]
    keep: bool,
}

struct Node {
    addr: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.child.id());
        }
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<StatusResponse> {
        let mut admin = AdminClient::connect(format!("http://{}", self.addr)).await?;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        Ok(admin.status(request).await?.into_inner())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Bytes of sync traffic this node's links counted: anti-entropy both ways, plus pushes.
fn sync_bytes(status: &StatusResponse) -> (u64, u64) {
    let sessions = status.sync_links.iter().map(|l| l.bytes_sent + l.bytes_received).sum();
    let pushed = status.sync_links.iter().map(|l| l.pushed_bytes).sum();
    (sessions, pushed)
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ledged = match &args.ledged {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("ledged"),
    };
    let temp = tempfile::tempdir()?;
    let dir = temp.path().to_path_buf();
    let addrs: Vec<String> =
        (0..3).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<anyhow::Result<_>>()?;
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("n{i}.log")))?;
        let child = Command::new(&ledged)
            .args(["--region", "catchup", "--listen", addr, "--join", &addrs.join(","), "--bootstrap-expect", "3"])
            .arg("--data-dir")
            .arg(dir.join(format!("n{i}")))
            .args(["--anti-entropy-ms", &args.anti_entropy_ms.to_string()])
            .args(["--sync-log-keep", &args.sync_log_keep.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", ledged.display()))?;
        nodes.push(Node { addr: addr.clone(), child });
    }
    let all = Client::builder().endpoints(addrs.clone()).timeout(Duration::from_secs(10)).connect().await?;
    wait_for("a leader", async || all.status().await.is_ok_and(|s| s.leader_id.is_some())).await?;
    wait_for("the keyspace", async || all.create_keyspace(KEYSPACE, Mode::Eventual, Scope::Region).await.is_ok())
        .await?;
    for node in &nodes {
        let client = Client::connect([node.addr.clone()]).await?;
        wait_for("every node to know the keyspace", async || {
            client.get(KEYSPACE, "probe", ReadOptions::one()).await.is_ok()
        })
        .await?;
    }

    nodes[2].signal("STOP")?;
    let writer = Client::builder().endpoint(addrs[0].clone()).timeout(Duration::from_secs(10)).connect().await?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let (writer, next, value) = (writer.clone(), next.clone(), vec![b'v'; args.value_size]);
            let keys = args.keys;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        return Ok::<_, ledge_client::Error>(());
                    }
                    writer.put(KEYSPACE, format!("key-{i:012}"), value.clone()).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let missed_bytes = args.keys * (16 + args.value_size as u64);
    wait_for("node 2 to hold every key", async || nodes[1].status().await.is_ok_and(|s| s.eventual_keys >= args.keys))
        .await?;
    let mut before = (0, 0);
    for node in &nodes[..2] {
        let (sessions, pushed) = sync_bytes(&node.status().await?);
        before = (before.0 + sessions, before.1 + pushed);
    }

    nodes[2].signal("CONT")?;
    let resumed = Instant::now();
    wait_for("node 3 to catch up", async || nodes[2].status().await.is_ok_and(|s| s.eventual_keys >= args.keys))
        .await?;
    let catch_up = resumed.elapsed();
    // Let the last sessions finish and be counted.
    tokio::time::sleep(Duration::from_millis(args.anti_entropy_ms * 2)).await;
    let mut after = (0, 0);
    for node in &nodes {
        let (sessions, pushed) = sync_bytes(&node.status().await?);
        after = (after.0 + sessions, after.1 + pushed);
    }
    let (sessions, pushed) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "keys": args.keys, "value_size": args.value_size, "missed_bytes": missed_bytes,
                "write_secs": write_secs, "writes_per_sec": args.keys as f64 / write_secs,
                "catch_up_secs": catch_up.as_secs_f64(), "anti_entropy_bytes": sessions, "pushed_bytes": pushed,
            })
        );
    } else {
        println!("wrote {} keys ({} bytes of keys and values) in {write_secs:.1} s", args.keys, missed_bytes);
        println!("node 3 caught up in {:.2} s", catch_up.as_secs_f64());
        println!("sync traffic: {sessions} bytes of anti-entropy sessions, {pushed} bytes pushed");
        println!("ratio to the missed data: {:.2}", (sessions + pushed) as f64 / missed_bytes as f64);
    }
    drop(nodes);
    if args.keep {
        eprintln!("kept data and logs in {}", temp.keep().display());
    }
    Ok(())
}
