//! The command line, as clap types. docs/client.md ("CLI") is the contract: scripts and
//! tests depend on these names, so change them only together with it.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ledge_client::{Consistency, Hlc, Mode, Scope, WriteLevel};

use super::duration::parse_duration;

/// Command-line client for Ledge, a replicated key-value store for the edge.
#[derive(Debug, Parser)]
#[command(name = "ledge", version)]
pub struct Cli {
    /// Node addresses (host:port), comma-separated; the client finds the leader itself.
    #[arg(long, env = "LEDGE_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:7700", global = true)]
    pub endpoints: Vec<String>,

    /// Output format: aligned text, or one JSON object per result per line.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where `kv watch --from` starts: a revision (strong keyspaces) or a cursor (eventual ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// A revision number.
    Revision(u64),
    /// An HLC cursor, `physical.logical@node`.
    Cursor(Hlc),
}

impl std::str::FromStr for WatchFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<WatchFrom, String> {
        if text.contains('@') {
            return text.parse().map(WatchFrom::Cursor).map_err(|e: ledge_client::Error| e.to_string());
        }
        text.parse().map(WatchFrom::Revision).map_err(|_| {
            format!("{text:?} is neither a revision number nor a cursor of the form physical.logical@node")
        })
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable aligned text.
    Table,
    /// One JSON object per result, one per line.
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and write keys.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Create and list keyspaces.
    #[command(subcommand)]
    Keyspace(KeyspaceCommand),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `ledge kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The keyspace.
        #[arg(long, default_value = "default")]
        keyspace: String,
        /// Replicas that must hold the write before it is acknowledged (eventual keyspaces).
        #[arg(long, value_enum)]
        level: Option<LevelArg>,
    },
    /// Read a value.
    Get {
        /// The key.
        key: String,
        /// The keyspace.
        #[arg(long, default_value = "default")]
        keyspace: String,
        /// How the read is served.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        /// The keyspace.
        #[arg(long, default_value = "default")]
        keyspace: String,
        /// Replicas that must hold the delete before it is acknowledged (eventual keyspaces).
        #[arg(long, value_enum)]
        level: Option<LevelArg>,
    },
    /// Add DELTA (negative to decrement) to a counter of an eventual keyspace.
    Incr {
        /// The key; its first increment makes it a counter.
        key: String,
        /// The amount to add.
        #[arg(allow_negative_numbers = true)]
        delta: i64,
        /// The (eventual) keyspace.
        #[arg(long)]
        keyspace: String,
        /// Replicas that must hold the increment before it is acknowledged.
        #[arg(long, value_enum)]
        level: Option<LevelArg>,
    },
    /// Add a member to a set of an eventual keyspace (`kv get` lists the members).
    Sadd {
        /// The key; its first add makes it a set.
        key: String,
        /// The member.
        member: String,
        /// The (eventual) keyspace.
        #[arg(long)]
        keyspace: String,
        /// Replicas that must hold the change before it is acknowledged.
        #[arg(long, value_enum)]
        level: Option<LevelArg>,
    },
    /// Remove a member from a set of an eventual keyspace.
    Srem {
        /// The key.
        key: String,
        /// The member.
        member: String,
        /// The (eventual) keyspace.
        #[arg(long)]
        keyspace: String,
        /// Replicas that must hold the change before it is acknowledged.
        #[arg(long, value_enum)]
        level: Option<LevelArg>,
    },
    /// List keys and values in key order.
    Scan {
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Return at most this many keys; default: all of them.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// The keyspace.
        #[arg(long, default_value = "default")]
        keyspace: String,
        /// How the scan is served (`quorum` on an eventual keyspace merges a majority's pages).
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Print changes as they happen, until interrupted. Without KEY or --prefix, watches the
    /// whole keyspace.
    Watch {
        /// Watch only this key.
        #[arg(conflicts_with = "prefix")]
        key: Option<String>,
        /// Watch every key starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Strong keyspace: start at this revision (a snapshot comes first if it was
        /// compacted). Eventual keyspace: start after this cursor (`physical.logical@node`, as
        /// printed with each change). Default: only changes made from now on.
        #[arg(long, value_name = "REV|CURSOR")]
        from: Option<WatchFrom>,
        /// The keyspace.
        #[arg(long, default_value = "default")]
        keyspace: String,
    },
}

/// How a read (`kv get`, `kv scan`) is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ReadArgs {
    /// How the read is served; default: the keyspace's (linearizable for strong ones, the local
    /// replica for eventual ones).
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
    /// Refuse the read if the replica is further behind than this (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_staleness: Option<Duration>,
    /// Session read: wait until the replica has applied this revision.
    #[arg(long, value_name = "REV")]
    pub min_revision: Option<u64>,
}

/// `ledge keyspace ...`
#[derive(Debug, Subcommand)]
pub enum KeyspaceCommand {
    /// Create a keyspace.
    Create {
        /// The keyspace's name.
        name: String,
        /// strong (CP, Raft) or eventual (AP, CRDT).
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// region, or global (eventual keyspaces only).
        #[arg(long, value_enum, default_value_t = ScopeArg::Region)]
        scope: ScopeArg,
    },
    /// List keyspaces.
    List,
}

/// `ledge cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the status of the node that answers.
    Status,
    /// List the members of the region's Raft group.
    Members,
    /// Remove a node (voter or learner) from the region.
    Remove {
        /// The node's id.
        #[arg(value_name = "NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
}

/// `--level`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// Durable on the node that took the write.
    One,
    /// Acknowledged by a majority of the region.
    Quorum,
    /// Acknowledged by every replica of the region.
    All,
}

impl From<LevelArg> for WriteLevel {
    fn from(level: LevelArg) -> WriteLevel {
        match level {
            LevelArg::One => WriteLevel::One,
            LevelArg::Quorum => WriteLevel::Quorum,
            LevelArg::All => WriteLevel::All,
        }
    }
}

/// `--consistency`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Leader-confirmed read (strong keyspaces).
    Linearizable,
    /// Any replica's applied state (strong keyspaces).
    Stale,
    /// The local replica (eventual keyspaces).
    One,
    /// A majority of replicas, merged (eventual keyspaces).
    Quorum,
}

impl From<ConsistencyArg> for Consistency {
    fn from(consistency: ConsistencyArg) -> Consistency {
        match consistency {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Stale => Consistency::Stale,
            ConsistencyArg::One => Consistency::One,
            ConsistencyArg::Quorum => Consistency::Quorum,
        }
    }
}

/// `--mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// CP: Raft-replicated, linearizable.
    Strong,
    /// AP: CRDT replicas, writable on every side of a partition.
    Eventual,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Strong => Mode::Strong,
            ModeArg::Eventual => Mode::Eventual,
        }
    }
}

/// `--scope`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The region's nodes.
    Region,
    /// Every region.
    Global,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Scope {
        match scope {
            ScopeArg::Region => Scope::Region,
            ScopeArg::Global => Scope::Global,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ledge").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_and_defaults() {
        let cli = parse(&["--endpoints", "a:1,b:2", "--output", "json", "kv", "get", "k"]).unwrap();
        assert_eq!(cli.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.output, Output::Json);
        match cli.command {
            Command::Kv(KvCommand::Get { key, keyspace, read }) => {
                assert_eq!((key.as_str(), keyspace.as_str()), ("k", "default"));
                assert_eq!((read.consistency, read.max_staleness, read.min_revision), (None, None, None));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn get_takes_read_options() {
        let cli = parse(&[
            "kv",
            "get",
            "k",
            "--keyspace",
            "ks",
            "--consistency",
            "stale",
            "--max-staleness",
            "500ms",
            "--min-revision",
            "42",
        ])
        .unwrap();
        match cli.command {
            Command::Kv(KvCommand::Get {
                keyspace,
                read: ReadArgs { consistency, max_staleness, min_revision },
                ..
            }) => {
                assert_eq!(keyspace, "ks");
                assert_eq!(consistency, Some(ConsistencyArg::Stale));
                assert_eq!(max_staleness, Some(Duration::from_millis(500)));
                assert_eq!(min_revision, Some(42));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["kv", "get", "k", "--max-staleness", "5"]).is_err());
    }

    #[test]
    fn watch_takes_a_key_or_a_prefix_and_a_start() {
        let watch = |args: &[&str]| match parse(args).map(|cli| cli.command) {
            Ok(Command::Kv(KvCommand::Watch { key, prefix, from, keyspace })) => (key, prefix, from, keyspace),
            other => panic!("{args:?} parsed as {other:?}"),
        };
        assert_eq!(watch(&["kv", "watch"]), (None, None, None, "default".into()));
        assert_eq!(
            watch(&["kv", "watch", "--prefix", "a/", "--from", "12", "--keyspace", "ks"]),
            (None, Some("a/".into()), Some(WatchFrom::Revision(12)), "ks".into())
        );
        let cursor = Hlc { physical_ms: 1_700_000_000_000, logical: 3, node_id: 42 };
        assert_eq!(
            watch(&["kv", "watch", "k", "--keyspace", "ev", "--from", "1700000000000.3@42"]),
            (Some("k".into()), None, Some(WatchFrom::Cursor(cursor)), "ev".into())
        );
        assert!(parse(&["kv", "watch", "--from", "soon"]).is_err());
        assert!(parse(&["kv", "watch", "--from", "1.x@2"]).is_err());
        assert_eq!(watch(&["kv", "watch", "user/1"]), (Some("user/1".into()), None, None, "default".into()));
    }

    #[test]
    fn cluster_remove_takes_a_node_id() {
        match parse(&["--output", "json", "cluster", "remove", "42"]).map(|cli| cli.command) {
            Ok(Command::Cluster(ClusterCommand::Remove { node_id })) => assert_eq!(node_id, 42),
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            parse(&["cluster", "members"]).map(|cli| cli.command),
            Ok(Command::Cluster(ClusterCommand::Members))
        ));
    }

    #[test]
    fn every_contract_command_parses() {
        let commands: &[&[&str]] = &[
            &["kv", "put", "k", "v", "--keyspace", "ks", "--level", "quorum"],
            &["kv", "del", "k", "--keyspace", "ks"],
            &["kv", "scan", "--prefix", "p", "--limit", "10", "--keyspace", "ks"],
            &["kv", "scan"],
            &["keyspace", "create", "ks", "--mode", "eventual", "--scope", "global"],
            &["keyspace", "create", "ks", "--mode", "strong"],
            &["keyspace", "list"],
            &["cluster", "status"],
            &["kv", "watch"],
            &["kv", "watch", "--prefix", "p", "--from", "5", "--keyspace", "ks"],
            &["kv", "watch", "k", "--from", "0"],
            &["cluster", "members"],
            &["cluster", "remove", "3"],
            &["kv", "incr", "k", "5", "--keyspace", "ks"],
            &["kv", "incr", "k", "-5", "--keyspace", "ks", "--level", "all"],
            &["kv", "sadd", "k", "m", "--keyspace", "ks"],
            &["kv", "srem", "k", "m", "--keyspace", "ks", "--level", "quorum"],
            &["kv", "del", "k", "--keyspace", "ks", "--level", "one"],
            &["kv", "get", "k", "--keyspace", "ks", "--consistency", "quorum"],
        ];
        for args in commands {
            if let Err(err) = parse(args) {
                panic!("{args:?}: {err}");
            }
        }
    }

    #[test]
    fn commands_outside_the_contract_do_not_exist() {
        let rejected: &[&[&str]] = &[
            &["kv", "incr", "k", "1"],
            &["kv", "incr", "k", "one", "--keyspace", "ks"],
            &["kv", "sadd", "k", "--keyspace", "ks"],
            &["sql", "SELECT 1"],
            &["kv", "watch", "k", "--prefix", "p"],
            &["kv", "watch", "--from", "-1"],
            &["kv", "watch", "--from", "latest"],
            &["cluster", "remove"],
            &["cluster", "remove", "0"],
            &["cluster", "remove", "node-1"],
            &["keyspace", "create", "ks"],
            &["kv", "scan", "--limit", "0"],
            &["kv", "put", "k", "v", "--level", "two"],
        ];
        for args in rejected {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }
}
