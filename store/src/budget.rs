//! The node's memory budget: one number (`--memory-mb`), split explicitly between the parts that
//! hold memory in proportion to load or data, so that none of them grows with the data set.
//!
//! | part | share | what takes it |
//! |------|-------|---------------|
//! | `sled_cache` | 25 % | sled's page cache (`cache_capacity`) for the state machine and eventual keyspaces |
//! | `log_cache` | 10 % | the Raft WAL's in-memory tail (`LogOptions::cache_bytes`) |
//! | `requests` | 10 % | bytes of strong writes queued for, or in, a Raft proposal |
//! | `changes` | 5 % | the in-memory change log and the live feed to watchers, half each |
//! | `digests` | 10 % | the in-memory hash trees of eventual keyspaces (4 KiB to 1 MiB each) |
//!
//! The remaining 40 % is left to what no share bounds: sled's own bookkeeping beyond its cache
//! (an entry per page of every tree, about 30 bytes per stored key, since sled 0.34 splits a leaf
//! past 16 keys), the session table (at most 65,536 results), thread stacks, the runtime and the
//! allocator's slack. Every share is a hard cap enforced where the memory is taken, except sled's,
//! which sled enforces itself (approximately: it counts the pages it caches, not their
//! bookkeeping). [`Usage`] carries the live figures that the
//! status call reports beside each share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Smallest budget a node accepts, in MiB.
pub const MIN_MEMORY_MB: u64 = 32;
/// Largest budget a node accepts, in MiB (1 TiB).
pub const MAX_MEMORY_MB: u64 = 1 << 20;
/// The default budget, in MiB: a node sized for a small edge box.
pub const DEFAULT_MEMORY_MB: u64 = 64;

/// Largest size of one eventual keyspace's in-memory hash tree (65,536 leaves of 16 bytes, plus
/// the 256 middle hashes and the root); a small keyspace's is a few KiB, since leaves are
/// allocated in blocks of 256 as keys fall under them.
pub const DIGEST_TREE_BYTES: u64 = (1 << 16) * 16 + 256 * 16 + 16;

/// A part of the node that takes a share of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// sled's page cache.
    SledCache,
    /// The Raft WAL's in-memory tail.
    LogCache,
    /// Strong writes queued for, or in, a proposal.
    Requests,
    /// Applied changes held for live watchers.
    Changes,
    /// Eventual keyspaces' hash trees.
    Digests,
}

impl Part {
    /// Every part, in the order the status call lists them.
    pub const ALL: [Part; 5] = [Part::SledCache, Part::LogCache, Part::Requests, Part::Changes, Part::Digests];

    /// The part's name in the status call and the docs.
    pub fn name(self) -> &'static str {
        match self {
            Part::SledCache => "sled_cache",
            Part::LogCache => "log_cache",
            Part::Requests => "requests",
            Part::Changes => "changes",
            Part::Digests => "digests",
        }
    }

    /// The part's share of the budget, in percent.
    fn percent(self) -> u64 {
        match self {
            Part::SledCache => 25,
            Part::LogCache => 10,
            Part::Requests => 10,
            Part::Changes => 5,
            Part::Digests => 10,
        }
    }
}

/// A memory budget and its split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    total: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self { total: DEFAULT_MEMORY_MB << 20 }
    }
}

impl MemoryBudget {
    /// A budget of `mb` MiB; refused outside [`MIN_MEMORY_MB`]..=[`MAX_MEMORY_MB`].
    pub fn from_mb(mb: u64) -> Result<Self, String> {
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) {
            return Err(format!(
                "--memory-mb {mb} is out of range: a node needs {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MiB"
            ));
        }
        Ok(Self { total: mb << 20 })
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `part`'s share, in bytes.
    pub fn share(&self, part: Part) -> u64 {
        self.total / 100 * part.percent()
    }
}

/// Live memory figures of the parts that can count what they hold. Cheap to clone; every clone
/// shares the same counters.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    changes: AtomicU64,
    digests: AtomicU64,
}

impl Usage {
    fn counter(&self, part: Part) -> Option<&AtomicU64> {
        match part {
            Part::Requests => Some(&self.inner.requests),
            Part::Changes => Some(&self.inner.changes),
            Part::Digests => Some(&self.inner.digests),
            Part::SledCache | Part::LogCache => None,
        }
    }

    /// Bytes `part` holds now, if this counter tracks it (the log cache is asked of the log, and
    /// sled does not report its cache's occupancy).
    pub fn get(&self, part: Part) -> Option<u64> {
        self.counter(part).map(|c| c.load(Ordering::Relaxed))
    }

    /// Adds `bytes` to `part`'s count.
    pub fn add(&self, part: Part, bytes: u64) {
        if let Some(c) = self.counter(part) {
            c.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Takes `bytes` off `part`'s count.
    pub fn sub(&self, part: Part, bytes: u64) {
        if let Some(c) = self.counter(part) {
            // Saturating: a count never wraps below zero even if a caller double-counts.
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(bytes)));
        }
    }

    /// Adds `bytes` to `part`'s count only if the result stays within `limit`; says whether it
    /// did.
    pub fn try_add(&self, part: Part, bytes: u64, limit: u64) -> bool {
        match self.counter(part) {
            Some(c) => c
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    v.checked_add(bytes).filter(|total| *total <= limit)
                })
                .is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_less_than_the_budget() {
        let budget = MemoryBudget::from_mb(64).unwrap();
        let total: u64 = Part::ALL.iter().map(|p| budget.share(*p)).sum();
        assert!(total <= budget.total() * 6 / 10, "{total}");
        assert_eq!(budget.share(Part::SledCache), (64 << 20) / 100 * 25);
    }

    #[test]
    fn out_of_range_budgets_are_refused_by_name() {
        let e = MemoryBudget::from_mb(8).unwrap_err();
        assert!(e.contains("--memory-mb 8") && e.contains("32"), "{e}");
        assert!(MemoryBudget::from_mb(MAX_MEMORY_MB + 1).is_err());
    }

    #[test]
    fn try_add_never_passes_the_limit() {
        let usage = Usage::default();
        assert!(usage.try_add(Part::Changes, 60, 100));
        assert!(!usage.try_add(Part::Changes, 41, 100));
        assert!(usage.try_add(Part::Changes, 40, 100));
        usage.sub(Part::Changes, 500);
        assert_eq!(usage.get(Part::Changes), Some(0));
        assert_eq!(usage.get(Part::SledCache), None);
    }
}
