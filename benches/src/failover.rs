//! `ledge-failover`: how long a Ledge region is unwritable after its leader dies.
//!
//! Each run starts a fresh 3-node region of real `ledged` processes on loopback (identical
//! flags: `--region failover --join P1,P2,P3 --bootstrap-expect 3`), waits until all three
//! nodes name the same leader and the region has 3 voters, and starts `--writers` concurrent
//! writers putting fresh keys back-to-back through one client that knows all three endpoints.
//! After a warm-up it SIGKILLs the leader and measures the time from the kill to the
//! acknowledgement of the first put whose send started after the kill. Puts already in flight
//! at the kill do not count, even when a survivor completes them: a put that was sent before
//! the kill says nothing about when the region became writable again.
//!
//! ```text
//! ledge-failover                                   # 10 runs, ledged next to this binary
//! ledge-failover --runs 3 --json --ledged target/release/ledged
//! ledge-failover --dir /tmp/failover --keep        # keep every run's data and logs
//! ```
//!
//! Alongside the failover time, each run reports when a survivor first named a new leader
//! (polled every 10 ms through `Status`), which separates the election from the client's
//! retries, and the Raft term before and after (a jump of more than one means split votes).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ledge_client::Client;

/// How many nodes the region has.
const NODES: usize = 3;
/// How long a region may take to form, or to agree on a leader after the kill.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A writer's pause after a failed put, so that calls failing at once (connection refused on
/// every endpoint) do not spin a core the surviving nodes need for their election. It bounds
/// the measurement's resolution; with several writers the effective granularity is finer.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// How often the survivors' status is polled for a new leader after the kill.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Parser)]
#[command(
    name = "ledge-failover",
    about = "Time from SIGKILL of a 3-node Ledge region's leader to the first acknowledged write"
)]
struct Args {
    /// The `ledged` binary [default: `ledged` next to this executable].
    #[arg(long)]
    ledged: Option<PathBuf>,
    /// How many failovers to measure, each on a fresh region.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Directory for the nodes' data and logs (`DIR/runK/nI`, `DIR/runK/nI.log`) [default: a
    /// fresh temporary directory, removed at the end].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object with every run and the summary instead of text.
    #[arg(long)]
    json: bool,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// How long the writers run before the leader is killed, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// The writers' client timeout per put (retries included), in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Keep each run's data and logs instead of removing them.
    #[arg(long)]
    keep: bool,
}

/// One `ledged` process of a run.
struct Node {
    /// Index within the run (`nI`).
    index: usize,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// Its stderr.
    log: PathBuf,
    /// The process, until it is killed.
    child: Option<Child>,
    /// A client talking to this node only.
    client: Client,
}

impl Node {
    /// SIGKILLs the process (if still running) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fails when the process has exited on its own.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("n{} ({}) exited with {status}; last log lines:\n{}", self.index, self.addr, tail(&self.log, 20));
            }
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `n` distinct free loopback ports: all bound at once, then released for the nodes to take.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?)
}

/// A client for `endpoints` with the given per-call timeout.
async fn client(endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .endpoints(endpoints.iter().cloned())
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect()
        .await?)
}

/// Starts the region's nodes with identical flags.
async fn start_region(ledged: &Path, run_dir: &Path) -> anyhow::Result<Vec<Node>> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("create {}", run_dir.display()))?;
    let addrs: Vec<String> = free_ports(NODES)?.into_iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let join = addrs.join(",");
    let mut nodes = Vec::with_capacity(NODES);
    for (index, addr) in addrs.iter().enumerate() {
        let log = run_dir.join(format!("n{index}.log"));
        let stderr = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(ledged);
        cmd.arg("--region")
            .arg("failover")
            .arg("--data-dir")
            .arg(run_dir.join(format!("n{index}")))
            .arg("--listen")
            .arg(addr)
            .arg("--join")
            .arg(&join)
            .arg("--bootstrap-expect")
            .arg(NODES.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Every setting comes from the flags above, not from the caller's LEDGE_* environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LEDGE_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().with_context(|| format!("spawn {}", ledged.display()))?;
        let client = client(std::slice::from_ref(addr), Duration::from_secs(1)).await?;
        nodes.push(Node { index, addr: addr.clone(), log, child: Some(child), client });
    }
    Ok(nodes)
}

/// The leader every running node names, as (node index, node id, term), once they agree.
async fn agreed_leader(nodes: &mut [Node]) -> anyhow::Result<Option<(usize, u64, u64)>> {
    let mut leader = None;
    let mut term = 0;
    let mut ids = Vec::with_capacity(nodes.len());
    for node in nodes.iter_mut().filter(|n| n.child.is_some()) {
        node.check_alive()?;
        let Ok(status) = node.client.status().await else { return Ok(None) };
        match status.leader_id {
            Some(id) if leader.is_none_or(|l| l == id) => leader = Some(id),
            _ => return Ok(None),
        }
        term = term.max(status.term);
        ids.push((node.index, status.node_id));
    }
    let Some(leader) = leader else { return Ok(None) };
    Ok(ids.into_iter().find(|&(_, id)| id == leader).map(|(index, id)| (index, id, term)))
}

/// Waits until every running node names the same leader and that leader lists `voters` voters;
/// returns (leader's index, id, term).
async fn wait_leader(nodes: &mut [Node], voters: usize) -> anyhow::Result<(usize, u64, u64)> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some((index, id, term)) = agreed_leader(nodes).await? {
            if let Ok(members) = nodes[index].client.members().await {
                if members.iter().filter(|m| m.role != "learner").count() == voters {
                    return Ok((index, id, term));
                }
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> =
                nodes.iter().map(|n| format!("=== n{} ({})\n{}", n.index, n.addr, tail(&n.log, 20))).collect();
            bail!("no agreed leader with {voters} voters within {SETTLE_TIMEOUT:?}; logs:\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the writers share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The instant the leader was killed (set after the SIGKILL was sent).
    killed_at: OnceLock<Instant>,
    /// The earliest acknowledgement of a put sent after `killed_at`.
    first_ack: Mutex<Option<Instant>>,
    /// Signalled when `first_ack` is first set.
    acked_after_kill: tokio::sync::Notify,
    /// Puts acknowledged in total.
    acked: AtomicU64,
    /// Failed puts (errors and timeouts) after the kill.
    errors: AtomicU64,
    /// Puts in flight at the kill that were acknowledged anyway (not counted as the first ack).
    straddling: AtomicU64,
}

/// Sets the writers' stop flag when dropped, so that no exit path leaves them running.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts `writers` tasks putting fresh keys through `client` until `shared.stop` is set.
fn spawn_writers(
    client: &Client,
    writers: usize,
    run: usize,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (client, shared) = (client.clone(), shared.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    let key = format!("failover/run{run}/w{w}/{i}");
                    i += 1;
                    let sent = Instant::now();
                    let result = client.put("default", key, "x").await;
                    let done = Instant::now();
                    let after_kill = shared.killed_at.get().is_some_and(|&k| sent >= k);
                    match result {
                        Ok(_) => {
                            shared.acked.fetch_add(1, Ordering::Relaxed);
                            if after_kill {
                                let mut first = shared.first_ack.lock().unwrap();
                                if first.is_none_or(|f| done < f) {
                                    *first = Some(done);
                                    shared.acked_after_kill.notify_one();
                                }
                            } else if shared.killed_at.get().is_some_and(|&k| done >= k) {
                                shared.straddling.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            if shared.killed_at.get().is_some() {
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Polls the survivors until one names a leader other than `old`; returns that instant.
async fn first_new_leader_seen(survivors: Vec<Client>, old: u64, give_up: Instant) -> Option<Instant> {
    while Instant::now() < give_up {
        for client in &survivors {
            if let Ok(status) = client.status().await {
                if status.leader_id.is_some_and(|id| id != old) {
                    return Some(Instant::now());
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    None
}

/// A node as reported.
#[derive(Debug, Clone)]
struct NodeRef {
    index: usize,
    id: u64,
    addr: String,
}

impl NodeRef {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "node": format!("n{}", self.index), "id": self.id, "addr": self.addr })
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{} (id {}, {})", self.index, self.id, self.addr)
    }
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    run: usize,
    /// Kill → first acknowledged put sent after the kill.
    failover: Duration,
    /// Kill → a survivor first names a new leader (`None` if never seen by the poller).
    leader_seen: Option<Duration>,
    killed: NodeRef,
    new_leader: NodeRef,
    term_before: u64,
    term_after: u64,
    /// Failed puts after the kill.
    errors: u64,
    /// Puts in flight at the kill that were acknowledged anyway.
    straddling: u64,
    /// Puts acknowledged before the kill (warm-up).
    warmup_acked: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One failover: start a region, write, kill the leader, measure, tear down.
async fn run_once(args: &Args, ledged: &Path, run_dir: &Path, run: usize) -> anyhow::Result<Run> {
    let mut nodes = start_region(ledged, run_dir).await?;
    wait_leader(&mut nodes, NODES).await?;

    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let writer_client = client(&endpoints, Duration::from_millis(args.timeout_ms)).await?;
    let shared = Arc::new(Shared::default());
    let writers = spawn_writers(&writer_client, args.writers.max(1), run, &shared);
    let _stop_writers = StopOnDrop(shared.clone());
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let warmup_acked = shared.acked.load(Ordering::Relaxed);
    if warmup_acked == 0 {
        bail!("no put was acknowledged during the {} ms warm-up", args.warmup_ms);
    }

    // Leadership may in principle have moved during the warm-up: kill whoever leads now.
    let (leader, leader_id, term_before) = match agreed_leader(&mut nodes).await? {
        Some(l) => l,
        None => wait_leader(&mut nodes, NODES).await?,
    };
    let killed = NodeRef { index: leader, id: leader_id, addr: nodes[leader].addr.clone() };
    let survivors: Vec<Client> = nodes.iter().filter(|n| n.index != leader).map(|n| n.client.clone()).collect();

    let child = nodes[leader].child.as_mut().context("leader not running")?;
    child.kill().context("SIGKILL the leader")?;
    // Recorded once kill(2) has returned, so no put counted below was sent before the signal.
    let killed_at = Instant::now();
    let _ = shared.killed_at.set(killed_at);
    nodes[leader].kill(); // reap it
    let poller = tokio::spawn(first_new_leader_seen(survivors, leader_id, killed_at + SETTLE_TIMEOUT));

    let deadline = killed_at + SETTLE_TIMEOUT;
    let first_ack = loop {
        if let Some(t) = *shared.first_ack.lock().unwrap() {
            break t;
        }
        if Instant::now() > deadline {
            bail!("no put acknowledged within {SETTLE_TIMEOUT:?} of killing the leader");
        }
        for node in nodes.iter_mut() {
            node.check_alive()?;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), shared.acked_after_kill.notified()).await;
    };
    shared.stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let leader_seen = poller.await.ok().flatten().map(|t| t.saturating_duration_since(killed_at));

    let (new_index, new_id, term_after) = wait_leader(&mut nodes, NODES).await?;
    let new_leader = NodeRef { index: new_index, id: new_id, addr: nodes[new_index].addr.clone() };
    for node in nodes.iter_mut() {
        node.kill();
    }
    Ok(Run {
        run,
        failover: first_ack.saturating_duration_since(killed_at),
        leader_seen,
        killed,
        new_leader,
        term_before,
        term_after,
        errors: shared.errors.load(Ordering::Relaxed),
        straddling: shared.straddling.load(Ordering::Relaxed),
        warmup_acked,
    })
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let ledged = match &args.ledged {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("ledged"),
    };
    if !ledged.is_file() {
        bail!(
            "{} not found: pass --ledged or build it (cargo build --release -p ledge-api --bin ledged)",
            ledged.display()
        );
    }
    // Without --dir, a fresh directory under the system temp dir, removed at the end (kept on
    // failure or with --keep).
    let (dir, remove_dir) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
            let dir = std::env::temp_dir().join(format!("ledge-failover.{}.{nanos:09}", std::process::id()));
            std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            (dir, !args.keep)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    if !args.json {
        println!(
            "{} runs, {} writers, client timeout {} ms, warm-up {} ms, ledged {}, data {}",
            args.runs,
            args.writers.max(1),
            args.timeout_ms,
            args.warmup_ms,
            ledged.display(),
            dir.display()
        );
    }

    let mut runs = Vec::with_capacity(args.runs);
    for k in 1..=args.runs {
        let run_dir = dir.join(format!("run{k}"));
        match run_once(&args, &ledged, &run_dir, k).await {
            Ok(r) => {
                if !args.json {
                    let seen = r.leader_seen.map_or("-".to_string(), |d| format!("{:.1}", ms(d)));
                    let rounds = r.term_after.saturating_sub(r.term_before);
                    let note = if rounds > 1 { format!(" [{rounds} election rounds]") } else { String::new() };
                    println!(
                        "run {:>2}: {:>7.1} ms  killed {} -> new leader {}; new leader seen at {} ms, term {} -> {}, \
                         {} failed puts{note}",
                        r.run,
                        ms(r.failover),
                        r.killed,
                        r.new_leader,
                        seen,
                        r.term_before,
                        r.term_after,
                        r.errors
                    );
                }
                runs.push(r);
                if !args.keep {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
            }
            Err(e) => {
                return Err(e.context(format!("run {k} failed; its data and logs are in {}", run_dir.display())));
            }
        }
    }
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut sorted: Vec<f64> = runs.iter().map(|r| ms(r.failover)).collect();
    sorted.sort_by(f64::total_cmp);
    let (med, min, max) = (median(&sorted), sorted[0], sorted[sorted.len() - 1]);
    if args.json {
        let per_run: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run": r.run,
                    "failover_ms": ms(r.failover),
                    "leader_seen_ms": r.leader_seen.map(ms),
                    "killed": r.killed.json(),
                    "new_leader": r.new_leader.json(),
                    "term_before": r.term_before,
                    "term_after": r.term_after,
                    "failed_puts": r.errors,
                    "straddling_acked_puts": r.straddling,
                    "warmup_acked_puts": r.warmup_acked,
                })
            })
            .collect();
        let out = serde_json::json!({
            "runs": per_run,
            "median_ms": med, "min_ms": min, "max_ms": max,
            "writers": args.writers.max(1), "timeout_ms": args.timeout_ms, "warmup_ms": args.warmup_ms,
        });
        println!("{out}");
    } else {
        println!("failover (kill -> first acknowledged put sent after it), {} runs:", runs.len());
        println!("  median {med:.1} ms, min {min:.1} ms, max {max:.1} ms");
    }
    Ok(())
}
