//! `ledge-load`: a closed-loop load generator for Ledge, and for etcd to compare against.
//!
//! For each concurrency level it runs that many clients over a shared pool of gRPC
//! connections, each issuing one request at a time, and reports acknowledged requests per
//! second and latency percentiles. `--op` picks the request:
//!
//! - `put` (default): a fresh random key of `--key-size` bytes with a `--value-size` value.
//!   Every acknowledged put on a strong keyspace (and on etcd) is durable: both systems reply
//!   only after a quorum has committed (and fsynced) it.
//! - `get`: a linearizable read of a random preloaded key.
//! - `stale-get`: a read of a random preloaded key from the local state of the replica the
//!   connection is pinned to (Ledge `stale`, etcd serializable); connections are pinned to the
//!   endpoints round-robin so that every replica serves reads.
//!
//! Before the first level of a read run, `--preload` keys (same sizes) are written by a
//! concurrent put loop that is not timed. A level ends after `--duration` seconds, after
//! `--total` acknowledged requests across all its clients, or at whichever comes first when both
//! are given.
//!
//! ```text
//! ledge-load --endpoints 127.0.0.1:7700 --clients 1,16,64 --duration 10
//! ledge-load --target etcd --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --clients 64
//! ledge-load --clients 16 --total 10000          # write exactly 10,000 keys
//! ledge-load --op stale-get --endpoints 127.0.0.1:7711,127.0.0.1:7712,127.0.0.1:7713 --preload 10000
//! ```
//!
//! `--target etcd` needs the `etcd` cargo feature (see benches/Cargo.toml);
//! benches/scripts/side-by-side.sh runs both targets on one machine.

mod target;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use target::{Conn, Op, Target};

/// A level bounded only by `--total` stops after this many failed requests unless told
/// otherwise, so a dead cluster cannot keep it retrying forever.
const DEFAULT_MAX_ERRORS_UNTIMED: u64 = 1000;

/// Concurrent writers of the preload (over at most 16 connections, like a level).
const PRELOAD_CLIENTS: usize = 64;

/// Mixed into `--seed` for the preloaded keys, so they differ from the keys of a put run.
const PRELOAD_SEED: u64 = 0x7072_656c_6f61_6400;

#[derive(Debug, Parser)]
#[command(name = "ledge-load", about = "Closed-loop put/get load against a Ledge region or an etcd cluster")]
struct Args {
    /// System to load.
    #[arg(long, value_enum, default_value_t = Target::Ledge)]
    target: Target,
    /// What each request does: put a fresh key, linearizable get, or stale (Ledge) /
    /// serializable (etcd) get of a preloaded key from the replica the connection is pinned to.
    #[arg(long, value_enum, default_value_t = Op::Put)]
    op: Op,
    /// Keys written before the first level of a get run (not timed); gets pick among them.
    #[arg(long, default_value_t = 10_000)]
    preload: usize,
    /// Endpoints (host:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7700")]
    endpoints: Vec<String>,
    /// Concurrency levels to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// How long each level runs, in seconds [default: 10, or no limit with --total].
    #[arg(long)]
    duration: Option<f64>,
    /// Stop each level after this many acknowledged requests in total across its clients.
    #[arg(long)]
    total: Option<u64>,
    /// Stop a level early once this many requests failed (0: no limit) [default: no limit, or
    /// 1000 when only --total bounds the level].
    #[arg(long)]
    max_errors: Option<u64>,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keyspace to use (Ledge only; etcd has one flat keyspace).
    #[arg(long, default_value = "default")]
    keyspace: String,
    /// Write level of puts to an eventual keyspace: one, quorum or all (Ledge only; default:
    /// the keyspace's, `one`).
    #[arg(long, value_parser = parse_level)]
    level: Option<ledge_client::WriteLevel>,
    /// gRPC connections shared by the clients (0: one per client, at most 16). For `stale-get`
    /// connection i is pinned to endpoint i mod (number of endpoints).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Print one JSON object per level instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed for keys and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What bounds one level, shared by its clients.
struct Limits {
    deadline: Option<Instant>,
    /// Acknowledged plus in-flight requests, never above `total`: a client takes a slot before
    /// a request and gives it back if it fails, so exactly `total` end up acknowledged.
    claimed: AtomicU64,
    total: Option<u64>,
    errors: AtomicU64,
    max_errors: Option<u64>,
}

impl Limits {
    /// Whether a client may issue one more request; takes a `--total` slot if so.
    fn admit(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if self.max_errors.is_some_and(|m| self.errors.load(Ordering::Relaxed) >= m) {
            return false;
        }
        match self.total {
            None => true,
            Some(total) => {
                self.claimed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < total).then_some(c + 1)).is_ok()
            }
        }
    }

    /// Records a failed request, giving its `--total` slot back.
    fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some() {
            self.claimed.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What one level measured.
struct Level {
    clients: usize,
    ops: u64,
    errors: u64,
    /// Gets that found no value (a preloaded key a stale replica has not applied yet).
    misses: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    // Printable bytes keep keys readable in tools; entropy is still ~6 bits per byte.
    (0..len).map(|_| rng.gen_range(b'0'..=b'z')).collect()
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to 60 s.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Opens `connections` connections. Pinned ones each know only one endpoint, taken
/// round-robin; the others get every endpoint and the client's normal routing.
async fn connect_pool(args: &Args, connections: usize, pinned: bool) -> anyhow::Result<Vec<Conn>> {
    let mut pool = Vec::with_capacity(connections);
    for i in 0..connections {
        let endpoints =
            if pinned { std::slice::from_ref(&args.endpoints[i % args.endpoints.len()]) } else { &args.endpoints[..] };
        pool.push(Conn::connect(args.target, endpoints).await?);
    }
    Ok(pool)
}

/// Writes `--preload` keys with `PRELOAD_CLIENTS` concurrent put loops and returns them.
async fn preload(args: &Args) -> anyhow::Result<Arc<Vec<Vec<u8>>>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ PRELOAD_SEED);
    let keys: Arc<Vec<Vec<u8>>> = Arc::new((0..args.preload).map(|_| random_bytes(&mut rng, args.key_size)).collect());
    let started = Instant::now();
    let pool = connect_pool(args, PRELOAD_CLIENTS.min(16), false).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let keyspace: Arc<str> = args.keyspace.as_str().into();
    let mut tasks = Vec::with_capacity(PRELOAD_CLIENTS);
    for c in 0..PRELOAD_CLIENTS {
        let mut conn = pool[c % pool.len()].clone();
        let (keys, next, keyspace) = (keys.clone(), next.clone(), keyspace.clone());
        let value_size = args.value_size;
        let mut rng = rand::rngs::StdRng::seed_from_u64((args.seed ^ PRELOAD_SEED).wrapping_add(1 + c as u64));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { return anyhow::Ok(()) };
                let value = random_bytes(&mut rng, value_size);
                conn.put(&keyspace, key.clone(), value, None)
                    .await
                    .map_err(|e| e.context(format!("preload put {i}")))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!("ledge-load: preloaded {} keys in {:.1} s", keys.len(), started.elapsed().as_secs_f64());
    Ok(keys)
}

async fn run_level(args: &Args, clients: usize, keys: &Arc<Vec<Vec<u8>>>) -> anyhow::Result<Level> {
    let connections = if args.connections == 0 { clients.min(16) } else { args.connections };
    let pool = connect_pool(args, connections, args.op == Op::StaleGet).await?;
    let duration = match (args.duration, args.total) {
        (Some(d), _) => Some(d),
        (None, None) => Some(10.0),
        (None, Some(_)) => None,
    };
    let max_errors = match args.max_errors {
        Some(0) => None,
        Some(m) => Some(m),
        None if duration.is_none() => Some(DEFAULT_MAX_ERRORS_UNTIMED),
        None => None,
    };
    let started = Instant::now();
    let limits = Arc::new(Limits {
        deadline: duration.map(|d| started + Duration::from_secs_f64(d)),
        claimed: AtomicU64::new(0),
        total: args.total,
        errors: AtomicU64::new(0),
        max_errors,
    });
    let keyspace: Arc<str> = args.keyspace.as_str().into();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut conn = pool[c % connections].clone();
        let (limits, keyspace, keys) = (limits.clone(), keyspace.clone(), keys.clone());
        let (op, key_size, value_size, level) = (args.op, args.key_size, args.value_size, args.level);
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(c as u64));
        tasks.push(tokio::spawn(async move {
            let mut latency = new_histogram();
            let (mut ops, mut misses) = (0u64, 0u64);
            while limits.admit() {
                // Keys and values are made before the clock starts, so only the request is timed.
                let (key, value) = if op.is_read() {
                    (keys[rng.gen_range(0..keys.len())].clone(), Vec::new())
                } else {
                    (random_bytes(&mut rng, key_size), random_bytes(&mut rng, value_size))
                };
                let t = Instant::now();
                let result = if op.is_read() {
                    conn.get(&keyspace, key, op).await
                } else {
                    conn.put(&keyspace, key, value, level).await.map(|()| true)
                };
                match result {
                    Ok(found) => {
                        ops += 1;
                        misses += u64::from(!found);
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => limits.failed(),
                }
            }
            (ops, misses, latency)
        }));
    }
    let mut level = Level { clients, ops: 0, errors: 0, misses: 0, elapsed: Duration::ZERO, latency: new_histogram() };
    for t in tasks {
        let (ops, misses, latency) = t.await?;
        level.ops += ops;
        level.misses += misses;
        level.latency.add(&latency)?;
    }
    level.elapsed = started.elapsed();
    level.errors = limits.errors.load(Ordering::Relaxed);
    Ok(level)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.total == Some(0) {
        anyhow::bail!("--total must be at least 1");
    }
    if args.endpoints.is_empty() {
        anyhow::bail!("--endpoints must name at least one endpoint");
    }
    let keys = if args.op.is_read() {
        if args.preload == 0 {
            anyhow::bail!("--op {} reads preloaded keys: --preload must be at least 1", args.op.name());
        }
        preload(&args).await?
    } else {
        Arc::new(Vec::new())
    };
    if !args.json {
        println!(
            "{:>9} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op", "clients", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
    }
    for &clients in &args.clients {
        let l = run_level(&args, clients.max(1), &keys).await?;
        let rate = l.ops as f64 / l.elapsed.as_secs_f64();
        let q = |q: f64| ms(l.latency.value_at_quantile(q));
        let (p50, p90, p99, max) = (q(0.5), q(0.9), q(0.99), ms(l.latency.max()));
        if args.json {
            let line = serde_json::json!({
                "target": args.target.name(), "op": args.op.name(), "clients": l.clients, "ops": l.ops,
                "ops_per_sec": rate, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "errors": l.errors, "misses": l.misses, "elapsed_s": l.elapsed.as_secs_f64(),
                "key_size": args.key_size, "value_size": args.value_size,
            });
            println!("{line}");
        } else {
            println!(
                "{:>9} {:>8} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                args.op.name(),
                l.clients,
                l.ops,
                rate,
                p50,
                p90,
                p99,
                max,
                l.errors
            );
        }
        if l.misses > 0 {
            eprintln!("ledge-load: {} of {} gets at {} clients found no value", l.misses, l.ops, l.clients);
        }
    }
    Ok(())
}

fn parse_level(text: &str) -> Result<ledge_client::WriteLevel, String> {
    match text {
        "one" => Ok(ledge_client::WriteLevel::One),
        "quorum" => Ok(ledge_client::WriteLevel::Quorum),
        "all" => Ok(ledge_client::WriteLevel::All),
        other => Err(format!("unknown write level {other:?}: use one, quorum or all")),
    }
}
