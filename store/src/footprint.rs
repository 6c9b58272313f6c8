//! What a node occupies on disk, by part, and in memory as the kernel counts it.

use std::path::Path;

/// Bytes a node's data directory holds on disk, by part (allocated blocks, so a sparse or
/// preallocated file counts what it really takes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The Raft WAL (`raft/`).
    pub log: u64,
    /// sled: the state machine, the change log and eventual keyspaces (`db/`).
    pub db: u64,
    /// Snapshot files being sent or installed (`snapshots/`).
    pub snapshots: u64,
}

impl DiskUsage {
    /// Measures the data directory `dir` of a node. A part that cannot be read counts as 0.
    pub fn of(dir: &Path) -> Self {
        Self {
            log: tree_bytes(&dir.join("raft")),
            db: tree_bytes(&dir.join("db")),
            snapshots: tree_bytes(&dir.join("snapshots")),
        }
    }

    /// All parts together.
    pub fn total(&self) -> u64 {
        self.log + self.db + self.snapshots
    }
}

/// Allocated bytes of the files under `path`.
fn tree_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries.flatten().map(|e| tree_bytes(&e.path())).sum()
}

/// The resident set size of this process in bytes (0 where `/proc` cannot tell).
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_measured_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("raft")).unwrap();
        std::fs::write(dir.path().join("raft/seg"), vec![1u8; 64 * 1024]).unwrap();
        let usage = DiskUsage::of(dir.path());
        assert!(usage.log >= 64 * 1024, "{usage:?}");
        assert_eq!((usage.db, usage.snapshots), (0, 0));
        assert_eq!(usage.total(), usage.log);
        assert!(rss_bytes() > 0);
    }
}
