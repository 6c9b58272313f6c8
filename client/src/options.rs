//! Per-request options: how a read is served, how many replicas a write waits for, and what a
//! scan or a watch covers.
//!
//! Every option has a "server default" state (`None`), which the server resolves per keyspace:
//! a read with no consistency is linearizable on a `strong` keyspace and `one` on an `eventual`
//! one; a write with no level is `one` on an eventual keyspace (strong writes always wait for a
//! majority). Sending the default rather than guessing keeps one client correct against every
//! keyspace.

use std::time::Duration;

use crate::Hlc;

/// How a read is served (see docs/api.md, "Kv", and docs/eventual.md, "Write and read levels").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Strong keyspaces: the leader confirms its leadership with a quorum, then reads.
    Linearizable,
    /// Strong keyspaces: any replica answers from its applied state, optionally bounded by a
    /// maximum staleness and a minimum revision.
    Stale,
    /// Eventual keyspaces: the local replica answers.
    One,
    /// Eventual keyspaces: a majority of replicas are merged, and stale ones repaired.
    Quorum,
}

impl Consistency {
    /// The lower-case name used on the command line and in docs, e.g. `linearizable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
        }
    }
}

/// How a single read is served.
///
/// ```
/// use std::time::Duration;
/// use ledge_client::ReadOptions;
///
/// // Any replica, but only if it is at most 500 ms behind the leader.
/// let options = ReadOptions::stale().max_staleness(Duration::from_millis(500));
/// // Read your own write (made at revision 42) on any replica.
/// let session = ReadOptions::session(42);
/// # let _ = (options, session);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The consistency level; `None` lets the server use the keyspace's default.
    pub consistency: Option<Consistency>,
    /// Refuse (with `Unavailable`) when the answering replica is further behind than this.
    pub max_staleness: Option<Duration>,
    /// Wait until the answering replica has applied this revision (a session read).
    pub min_revision: Option<u64>,
}

impl ReadOptions {
    /// The keyspace's default consistency.
    pub fn new() -> ReadOptions {
        ReadOptions::default()
    }

    /// A linearizable read.
    pub fn linearizable() -> ReadOptions {
        ReadOptions::with_consistency(Consistency::Linearizable)
    }

    /// A stale read from any replica, with no staleness bound.
    pub fn stale() -> ReadOptions {
        ReadOptions::with_consistency(Consistency::Stale)
    }

    /// A session read: stale, but only after the replica has applied `min_revision`, so a
    /// client that wrote at `min_revision` sees its own write on any replica.
    pub fn session(min_revision: u64) -> ReadOptions {
        ReadOptions::stale().min_revision(min_revision)
    }

    /// An eventual read from the local replica.
    pub fn one() -> ReadOptions {
        ReadOptions::with_consistency(Consistency::One)
    }

    /// An eventual read merged from a majority of replicas.
    pub fn quorum() -> ReadOptions {
        ReadOptions::with_consistency(Consistency::Quorum)
    }

    /// A read at the given consistency level.
    pub fn with_consistency(consistency: Consistency) -> ReadOptions {
        ReadOptions { consistency: Some(consistency), ..ReadOptions::default() }
    }

    /// Sets the maximum staleness the answering replica may have.
    pub fn max_staleness(mut self, max_staleness: Duration) -> ReadOptions {
        self.max_staleness = Some(max_staleness);
        self
    }

    /// Sets the revision the answering replica must have applied first.
    pub fn min_revision(mut self, min_revision: u64) -> ReadOptions {
        self.min_revision = Some(min_revision);
        self
    }
}

/// How many region replicas must hold an eventual write before it is acknowledged. Strong
/// writes always wait for a majority, whatever the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteLevel {
    /// Durable on the node that took the write.
    One,
    /// Acknowledged by a majority of the region's replicas.
    Quorum,
    /// Acknowledged by every replica of the region.
    All,
}

impl WriteLevel {
    /// The lower-case name used on the command line, e.g. `quorum`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteLevel::One => "one",
            WriteLevel::Quorum => "quorum",
            WriteLevel::All => "all",
        }
    }
}

/// What a scan reads: a keyspace, an optional prefix and key range, and one page's size.
///
/// ```
/// use ledge_client::{ReadOptions, ScanOptions};
///
/// let options = ScanOptions::new("orders").prefix("2024/").limit(100).read(ReadOptions::stale());
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// The keyspace; empty means `default`.
    pub keyspace: String,
    /// Only keys starting with this prefix.
    pub prefix: Vec<u8>,
    /// Only keys at or after this one; empty for no bound.
    pub start: Vec<u8>,
    /// Only keys before this one; empty for no bound.
    pub end: Vec<u8>,
    /// Maximum entries in one page; zero means the server's default page size.
    pub limit: u32,
    /// Continue after the page that returned this token; empty to start at the beginning.
    pub page_token: String,
    /// How the scan is served.
    pub read: ReadOptions,
    /// Return keys and revisions only, without values.
    pub keys_only: bool,
}

impl ScanOptions {
    /// A scan of the whole keyspace, in pages of the server's default size.
    pub fn new(keyspace: impl Into<String>) -> ScanOptions {
        ScanOptions { keyspace: keyspace.into(), ..ScanOptions::default() }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<Vec<u8>>) -> ScanOptions {
        self.prefix = prefix.into();
        self
    }

    /// Sets the key range `[start, end)`; an empty bound is open.
    pub fn range(mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> ScanOptions {
        self.start = start.into();
        self.end = end.into();
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> ScanOptions {
        self.limit = limit;
        self
    }

    /// Sets the token of the page to continue after.
    pub fn page_token(mut self, page_token: impl Into<String>) -> ScanOptions {
        self.page_token = page_token.into();
        self
    }

    /// Sets how the scan is served.
    pub fn read(mut self, read: ReadOptions) -> ScanOptions {
        self.read = read;
        self
    }

    /// Asks for keys and revisions only.
    pub fn keys_only(mut self, keys_only: bool) -> ScanOptions {
        self.keys_only = keys_only;
        self
    }
}

/// What a watch follows: one key or every key under a prefix, in one keyspace, starting at a
/// revision.
///
/// ```
/// use ledge_client::WatchOptions;
///
/// // Every change under `orders/` from revision 100 on (a snapshot first if 100 is compacted).
/// let options = WatchOptions::prefix("default", "orders/").from_revision(100);
/// // Future changes to one key only.
/// let one = WatchOptions::key("default", "config/limits");
/// # let _ = (options, one);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// The keyspace; empty means `default`.
    pub keyspace: String,
    /// The watched key, or the prefix of the watched keys when `prefix` is true.
    pub key: Vec<u8>,
    /// Watch every key starting with `key` rather than `key` alone.
    pub prefix: bool,
    /// Strong keyspaces: the first revision to deliver; 0 means only changes made after the
    /// watch starts.
    pub from_revision: u64,
    /// Eventual keyspaces: deliver the changes after this cursor (a
    /// [`crate::WatchMessage::cursor`]); `None` means only changes made after the watch starts.
    pub from_cursor: Option<Hlc>,
}

impl WatchOptions {
    /// Watches exactly `key` in `keyspace`.
    pub fn key(keyspace: impl Into<String>, key: impl Into<Vec<u8>>) -> WatchOptions {
        WatchOptions { keyspace: keyspace.into(), key: key.into(), prefix: false, from_revision: 0, from_cursor: None }
    }

    /// Watches every key starting with `prefix` in `keyspace`; an empty prefix watches the
    /// whole keyspace.
    pub fn prefix(keyspace: impl Into<String>, prefix: impl Into<Vec<u8>>) -> WatchOptions {
        WatchOptions {
            keyspace: keyspace.into(),
            key: prefix.into(),
            prefix: true,
            from_revision: 0,
            from_cursor: None,
        }
    }

    /// Starts at `revision` instead of at the next change (0 keeps that default). Pass the
    /// revision after the last one seen to resume a watch without gaps or repeats.
    pub fn from_revision(mut self, revision: u64) -> WatchOptions {
        self.from_revision = revision;
        self
    }

    /// On an eventual keyspace, starts after `cursor` (the cursor of the last message seen)
    /// instead of at the next change. On the node that issued the cursor the watch goes on
    /// without gaps or repeats while that node still keeps the changes after it; otherwise a
    /// snapshot of the watched range comes first.
    pub fn from_cursor(mut self, cursor: Hlc) -> WatchOptions {
        self.from_cursor = Some(cursor);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_option_constructors() {
        assert_eq!(ReadOptions::new().consistency, None);
        assert_eq!(ReadOptions::linearizable().consistency, Some(Consistency::Linearizable));
        let session = ReadOptions::session(42);
        assert_eq!(session.consistency, Some(Consistency::Stale));
        assert_eq!(session.min_revision, Some(42));
        let bounded = ReadOptions::stale().max_staleness(Duration::from_secs(2));
        assert_eq!(bounded.max_staleness, Some(Duration::from_secs(2)));
        assert_eq!(bounded.min_revision, None);
    }

    #[test]
    fn scan_option_builders() {
        let options = ScanOptions::new("ks").prefix("a/").limit(10).keys_only(true);
        assert_eq!(options.keyspace, "ks");
        assert_eq!(options.prefix, b"a/");
        assert_eq!(options.limit, 10);
        assert!(options.keys_only);
        assert!(options.page_token.is_empty());
    }

    #[test]
    fn watch_option_builders() {
        let one = WatchOptions::key("ks", "k").from_revision(5);
        assert_eq!(
            (one.keyspace.as_str(), one.key.as_slice(), one.prefix, one.from_revision),
            ("ks", &b"k"[..], false, 5)
        );
        let all = WatchOptions::prefix("ks", "");
        assert!(all.prefix && all.key.is_empty());
        assert_eq!(all.from_revision, 0);
    }
}
