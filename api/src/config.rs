//! Node configuration: command-line flags, each also read from a `LEDGE_<FLAG>` environment
//! variable, and an optional TOML file (`--config`). Precedence: flag, then environment, then
//! file, then defaults.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// `ledged`: a Ledge node.
#[derive(Debug, Clone, Parser)]
#[command(name = "ledged", version, about = "Ledge: a replicated key-value and SQL datastore for the edge")]
pub struct Args {
    /// Start a one-node development region on 127.0.0.1:7700 with data in ./ledge-data.
    #[arg(long, env = "LEDGE_DEV")]
    pub dev: bool,
    /// TOML file with any of the settings below (keys as the flags, with underscores).
    #[arg(long, env = "LEDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id; generated at first start and kept in the data dir when not given.
    #[arg(long, env = "LEDGE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Region (site) this node belongs to.
    #[arg(long, env = "LEDGE_REGION")]
    pub region: Option<String>,
    /// `edge` (a region node) or `cloud`.
    #[arg(long, env = "LEDGE_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Where the node keeps its data.
    #[arg(long, env = "LEDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "LEDGE_LISTEN")]
    pub listen: Option<String>,
    /// Address peers and clients use to reach this node (defaults to --listen).
    #[arg(long, env = "LEDGE_ADVERTISE")]
    pub advertise: Option<String>,
    /// HTTP address for metrics and status.
    #[arg(long, env = "LEDGE_HTTP")]
    pub http: Option<String>,
    /// Seed peers, comma separated (`host:port`).
    #[arg(long, env = "LEDGE_JOIN", value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// How many nodes form the region at first start.
    #[arg(long, env = "LEDGE_BOOTSTRAP_EXPECT")]
    pub bootstrap_expect: Option<usize>,
    /// Cloud endpoint an edge node syncs to.
    #[arg(long, env = "LEDGE_CLOUD")]
    pub cloud: Option<String>,
    /// Log format.
    #[arg(long, env = "LEDGE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Deadline for writes and linearizable reads, in milliseconds.
    #[arg(long, env = "LEDGE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Build a Raft snapshot after this many log entries.
    #[arg(long, env = "LEDGE_SNAPSHOT_AFTER")]
    pub snapshot_after: Option<u64>,
    /// Log entries and watch-history revisions kept behind a snapshot, and eventual changes
    /// kept for watches to resume from [default: 1,000 entries, 10,000 revisions and 10,000
    /// changes].
    #[arg(long, env = "LEDGE_LOG_KEEP")]
    pub log_keep: Option<u64>,
    /// Most voters a region grows to; further nodes stay learners.
    #[arg(long, env = "LEDGE_MAX_VOTERS")]
    pub max_voters: Option<usize>,
    /// Raft heartbeat period, in milliseconds [default: 50].
    #[arg(long, env = "LEDGE_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout range `MIN-MAX`, in milliseconds [default: 250-500].
    #[arg(long, env = "LEDGE_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<String>,
    /// Pause between anti-entropy rounds of eventual keyspaces, in milliseconds.
    #[arg(long, env = "LEDGE_ANTI_ENTROPY_MS")]
    pub anti_entropy_ms: Option<u64>,
    /// Eventual change-log records kept for peers that have not acknowledged them; a peer
    /// further behind catches up through anti-entropy.
    #[arg(long, env = "LEDGE_SYNC_LOG_KEEP")]
    pub sync_log_keep: Option<u64>,
    /// How far ahead of this node's clock a peer's HLC timestamp may be and still be adopted,
    /// in milliseconds.
    #[arg(long, env = "LEDGE_MAX_CLOCK_DRIFT_MS")]
    pub max_clock_drift_ms: Option<u64>,
    /// Largest client request in bytes (a whole Put, Batch or any other call); larger ones are
    /// refused with RESOURCE_EXHAUSTED [default: 4194304].
    #[arg(long, env = "LEDGE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Memory budget of the node in MiB, split between sled's cache, the Raft log's tail,
    /// queued writes, the watch feed and eventual hash trees [default: 64].
    #[arg(long, env = "LEDGE_MEMORY_MB")]
    pub memory_mb: Option<u64>,
    /// How long a watch stream may go without its watcher taking a message while messages
    /// wait, in milliseconds; then the node ends it with RESOURCE_EXHAUSTED naming the revision
    /// to resume from [default: 30000].
    #[arg(long, env = "LEDGE_WATCH_STALL_MS")]
    pub watch_stall_ms: Option<u64>,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A node of an edge region.
    Edge,
    /// A node of the cloud tier.
    Cloud,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings a TOML file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node_id: Option<u64>,
    region: Option<String>,
    role: Option<Role>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    http: Option<String>,
    join: Option<Vec<String>>,
    bootstrap_expect: Option<usize>,
    cloud: Option<String>,
    log_format: Option<LogFormat>,
    request_timeout_ms: Option<u64>,
    snapshot_after: Option<u64>,
    log_keep: Option<u64>,
    max_voters: Option<usize>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<String>,
    anti_entropy_ms: Option<u64>,
    sync_log_keep: Option<u64>,
    max_clock_drift_ms: Option<u64>,
    max_request_bytes: Option<usize>,
    memory_mb: Option<u64>,
    watch_stall_ms: Option<u64>,
}

/// Resolved node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node id override.
    pub node_id: Option<u64>,
    /// Region name.
    pub region: String,
    /// Role.
    pub role: Role,
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: String,
    /// Advertised address.
    pub advertise: String,
    /// HTTP address, if any.
    pub http: Option<String>,
    /// Seed peers.
    pub join: Vec<String>,
    /// Expected region size at first start; 0 when the node only joins an existing region.
    pub bootstrap_expect: usize,
    /// Cloud endpoint.
    pub cloud: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Request deadline in milliseconds.
    pub request_timeout_ms: u64,
    /// Snapshot threshold in log entries.
    pub snapshot_after: u64,
    /// Log entries and watch-history revisions kept behind a snapshot, when set (otherwise
    /// 1,000 entries and 10,000 revisions).
    pub log_keep: Option<u64>,
    /// Most voters.
    pub max_voters: usize,
    /// Raft heartbeat period in milliseconds.
    pub heartbeat_ms: u64,
    /// Raft election timeout range in milliseconds.
    pub election_timeout_ms: (u64, u64),
    /// Pause between anti-entropy rounds, in milliseconds.
    pub anti_entropy_ms: u64,
    /// Eventual change-log records kept for lagging peers.
    pub sync_log_keep: u64,
    /// HLC drift bound in milliseconds.
    pub max_clock_drift_ms: u64,
    /// Largest client request in bytes.
    pub max_request_bytes: usize,
    /// Memory budget.
    pub memory: ledge_store::MemoryBudget,
    /// How long a watcher may leave waiting messages untaken, in milliseconds.
    pub watch_stall_ms: u64,
}

impl Config {
    /// Resolves flags, environment and the optional file into a configuration.
    pub fn resolve(args: Args) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
                toml::from_str::<File>(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
            }
            None => File::default(),
        };
        let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7700".into());
        let advertise = args.advertise.or(file.advertise).unwrap_or_else(|| listen.clone());
        let join: Vec<String> = args
            .join
            .or(file.join)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // With seeds other than itself and no expected size, a node only joins an existing region.
        let has_peers = join.iter().any(|j| *j != advertise);
        let bootstrap_expect = args.bootstrap_expect.or(file.bootstrap_expect).unwrap_or(if has_peers { 0 } else { 1 });
        if args.bootstrap_expect.or(file.bootstrap_expect).is_some() && (bootstrap_expect == 0 || bootstrap_expect > 7)
        {
            return Err(format!("--bootstrap-expect must be between 1 and 7, got {bootstrap_expect}"));
        }
        let region =
            args.region.or(file.region).unwrap_or_else(|| if args.dev { "dev".into() } else { "default".into() });
        if region.is_empty() || region.len() > 64 || region.contains('/') {
            return Err(format!("--region {region:?}: use 1 to 64 characters without '/'"));
        }
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50);
        let election_timeout_ms = match args.election_timeout_ms.or(file.election_timeout_ms) {
            None => (250, 500),
            Some(text) => {
                parse_range(&text).filter(|(min, max)| min < max && *min > heartbeat_ms).ok_or_else(|| {
                    format!("--election-timeout-ms {text:?}: use MIN-MAX in ms with heartbeat < MIN < MAX")
                })?
            }
        };
        if heartbeat_ms == 0 || heartbeat_ms >= election_timeout_ms.0 {
            return Err(format!("--heartbeat-ms {heartbeat_ms} must be positive and below the election timeout"));
        }
        let anti_entropy_ms = args.anti_entropy_ms.or(file.anti_entropy_ms).unwrap_or(1_000);
        if anti_entropy_ms == 0 {
            return Err("--anti-entropy-ms must be positive".into());
        }
        let max_clock_drift_ms = args.max_clock_drift_ms.or(file.max_clock_drift_ms).unwrap_or(60_000);
        let max_request_bytes =
            args.max_request_bytes.or(file.max_request_bytes).unwrap_or(crate::limits::DEFAULT_MAX_REQUEST_BYTES);
        if !(crate::limits::MIN_MAX_REQUEST_BYTES..=crate::limits::MAX_MAX_REQUEST_BYTES).contains(&max_request_bytes) {
            return Err(format!(
                "--max-request-bytes {max_request_bytes}: use {} (a largest key and value with room to spare) to {}",
                crate::limits::MIN_MAX_REQUEST_BYTES,
                crate::limits::MAX_MAX_REQUEST_BYTES
            ));
        }
        let memory = ledge_store::MemoryBudget::from_mb(
            args.memory_mb.or(file.memory_mb).unwrap_or(ledge_store::budget::DEFAULT_MEMORY_MB),
        )?;
        let request_timeout_ms = args.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(5_000);
        if request_timeout_ms == 0 {
            return Err("--request-timeout-ms must be positive".into());
        }
        Ok(Self {
            node_id: args.node_id.or(file.node_id),
            region,
            role: args.role.or(file.role).unwrap_or(Role::Edge),
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("ledge-data")),
            listen,
            advertise,
            http: args.http.or(file.http),
            join,
            bootstrap_expect,
            cloud: args.cloud.or(file.cloud),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            request_timeout_ms,
            snapshot_after: args.snapshot_after.or(file.snapshot_after).unwrap_or(20_000).max(1),
            log_keep: args.log_keep.or(file.log_keep),
            max_voters: match args.max_voters.or(file.max_voters).unwrap_or(5) {
                n @ 1..=7 => n,
                n => return Err(format!("--max-voters must be between 1 and 7, got {n}")),
            },
            heartbeat_ms,
            election_timeout_ms,
            anti_entropy_ms,
            sync_log_keep: args.sync_log_keep.or(file.sync_log_keep).unwrap_or(100_000),
            max_clock_drift_ms,
            max_request_bytes,
            watch_stall_ms: args.watch_stall_ms.or(file.watch_stall_ms).unwrap_or(30_000).max(1),
            memory,
        })
    }
}

/// Parses `MIN-MAX`.
fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (min, max) = text.split_once('-')?;
    Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["ledged"];
        argv.extend_from_slice(args);
        Config::resolve(Args::try_parse_from(argv).map_err(|e| e.to_string())?)
    }

    #[test]
    fn dev_defaults() {
        let c = parse(&["--dev"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7700");
        assert_eq!(c.advertise, "127.0.0.1:7700");
        assert_eq!(c.data_dir, PathBuf::from("ledge-data"));
        assert_eq!(c.bootstrap_expect, 1);
        assert_eq!(c.role, Role::Edge);
    }

    #[test]
    fn region_flags_parse() {
        let c = parse(&[
            "--region",
            "r1",
            "--data-dir",
            "d1",
            "--listen",
            "127.0.0.1:7711",
            "--join",
            "127.0.0.1:7711,127.0.0.1:7712,127.0.0.1:7713",
            "--bootstrap-expect",
            "3",
        ])
        .unwrap();
        assert_eq!(c.join.len(), 3);
        assert_eq!(c.bootstrap_expect, 3);
        let joiner = parse(&["--listen", "127.0.0.1:7714", "--join", "127.0.0.1:7711"]).unwrap();
        assert_eq!(joiner.bootstrap_expect, 0, "a node with seeds and no expected size only joins");
        assert_eq!(c.region, "r1");
        let c =
            parse(&["--role", "cloud", "--region", "cloud", "--data-dir", "c", "--listen", "127.0.0.1:7790"]).unwrap();
        assert_eq!(c.role, Role::Cloud);
    }

    #[test]
    fn raft_timing() {
        let c = parse(&["--heartbeat-ms", "50", "--election-timeout-ms", "200-400"]).unwrap();
        assert_eq!((c.heartbeat_ms, c.election_timeout_ms), (50, (200, 400)));
        assert!(parse(&["--election-timeout-ms", "400-200"]).unwrap_err().contains("--election-timeout-ms"));
        assert!(parse(&["--heartbeat-ms", "500"]).unwrap_err().contains("--heartbeat-ms"));
    }

    #[test]
    fn eventual_settings() {
        let c = parse(&[]).unwrap();
        assert_eq!((c.anti_entropy_ms, c.sync_log_keep, c.max_clock_drift_ms), (1_000, 100_000, 60_000));
        let c = parse(&["--anti-entropy-ms", "200", "--sync-log-keep", "10", "--max-clock-drift-ms", "5000"]).unwrap();
        assert_eq!((c.anti_entropy_ms, c.sync_log_keep, c.max_clock_drift_ms), (200, 10, 5_000));
        assert!(parse(&["--anti-entropy-ms", "0"]).unwrap_err().contains("--anti-entropy-ms"));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(parse(&["--bootstrap-expect", "0"]).unwrap_err().contains("--bootstrap-expect"));
        assert!(parse(&["--region", "a/b"]).unwrap_err().contains("--region"));
        assert!(parse(&["--role", "moon"]).is_err());
    }

    #[test]
    fn file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledge.toml");
        std::fs::write(&path, "region = \"site-7\"\nlisten = \"127.0.0.1:7801\"\nbootstrap_expect = 3\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--listen", "127.0.0.1:7802"]).unwrap();
        assert_eq!(c.region, "site-7");
        assert_eq!(c.listen, "127.0.0.1:7802");
        assert_eq!(c.bootstrap_expect, 3);
        std::fs::write(&path, "regoin = \"typo\"\n").unwrap();
        assert!(parse(&["--config", path.to_str().unwrap()]).unwrap_err().contains("regoin"));
    }
}
