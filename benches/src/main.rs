//! `ledge-load`: a closed-loop put load generator for Ledge, and for etcd to compare against.
//!
//! For each concurrency level it runs that many clients over a shared pool of gRPC
//! connections, each issuing one put at a time (a fresh random key of `--key-size` bytes, a
//! value of `--value-size` bytes), and reports acknowledged puts per second and latency
//! percentiles. Every acknowledged put is durable: both systems reply only after a quorum has
//! committed (and fsynced) it. A level ends after `--duration` seconds, after `--total`
//! acknowledged puts across all its clients, or at whichever comes first when both are given.
//!
//! ```text
//! ledge-load --endpoints 127.0.0.1:7700 --clients 1,16,64 --duration 10
//! ledge-load --target etcd --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --clients 64
//! ledge-load --clients 16 --total 10000          # write exactly 10,000 keys
//! ```
//!
//! `--target etcd` needs the `etcd` cargo feature (see benches/Cargo.toml);
//! benches/scripts/side-by-side.sh runs both targets on one machine.

mod target;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use target::{Conn, Target};

/// A level bounded only by `--total` stops after this many failed puts unless told otherwise,
/// so a dead cluster cannot keep it retrying forever.
const DEFAULT_MAX_ERRORS_UNTIMED: u64 = 1000;

#[derive(Debug, Parser)]
#[command(name = "ledge-load", about = "Closed-loop put load against a Ledge region or an etcd cluster")]
struct Args {
    /// System to load.
    #[arg(long, value_enum, default_value_t = Target::Ledge)]
    target: Target,
    /// Endpoints (host:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7700")]
    endpoints: Vec<String>,
    /// Concurrency levels to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// How long each level runs, in seconds [default: 10, or no limit with --total].
    #[arg(long)]
    duration: Option<f64>,
    /// Stop each level after this many acknowledged puts in total across its clients.
    #[arg(long)]
    total: Option<u64>,
    /// Stop a level early once this many puts failed (0: no limit) [default: no limit, or
    /// 1000 when only --total bounds the level].
    #[arg(long)]
    max_errors: Option<u64>,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keyspace to write to (Ledge only; etcd has one flat keyspace).
    #[arg(long, default_value = "default")]
    keyspace: String,
    /// gRPC connections shared by the clients (0: one per client, at most 16).
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
    /// Acknowledged plus in-flight puts, never above `total`: a client takes a slot before a
    /// put and gives it back if the put fails, so exactly `total` puts end up acknowledged.
    claimed: AtomicU64,
    total: Option<u64>,
    errors: AtomicU64,
    max_errors: Option<u64>,
}

impl Limits {
    /// Whether a client may issue one more put; takes a `--total` slot if so.
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

    /// Records a failed put, giving its `--total` slot back.
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

async fn run_level(args: &Args, clients: usize) -> anyhow::Result<Level> {
    let connections = if args.connections == 0 { clients.min(16) } else { args.connections };
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        pool.push(Conn::connect(args.target, &args.endpoints).await?);
    }
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
        let (limits, keyspace) = (limits.clone(), keyspace.clone());
        let (key_size, value_size) = (args.key_size, args.value_size);
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(c as u64));
        tasks.push(tokio::spawn(async move {
            let mut latency = new_histogram();
            let mut ops = 0u64;
            while limits.admit() {
                let key = random_bytes(&mut rng, key_size);
                let value = random_bytes(&mut rng, value_size);
                let t = Instant::now();
                match conn.put(&keyspace, key, value).await {
                    Ok(()) => {
                        ops += 1;
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => limits.failed(),
                }
            }
            (ops, latency)
        }));
    }
    let mut level = Level { clients, ops: 0, errors: 0, elapsed: Duration::ZERO, latency: new_histogram() };
    for t in tasks {
        let (ops, latency) = t.await?;
        level.ops += ops;
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
    if !args.json {
        println!(
            "{:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "clients", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"
        );
    }
    for &clients in &args.clients {
        let l = run_level(&args, clients.max(1)).await?;
        let rate = l.ops as f64 / l.elapsed.as_secs_f64();
        let (p50, p99, max) =
            (ms(l.latency.value_at_quantile(0.5)), ms(l.latency.value_at_quantile(0.99)), ms(l.latency.max()));
        if args.json {
            let line = serde_json::json!({
                "target": args.target.name(), "clients": l.clients, "ops": l.ops, "ops_per_sec": rate,
                "p50_ms": p50, "p99_ms": p99, "max_ms": max, "errors": l.errors,
                "elapsed_s": l.elapsed.as_secs_f64(), "key_size": args.key_size, "value_size": args.value_size,
            });
            println!("{line}");
        } else {
            println!(
                "{:>8} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                l.clients, l.ops, rate, p50, p99, max, l.errors
            );
        }
    }
    Ok(())
}
