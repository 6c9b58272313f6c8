//! openraft's storage conformance suite, run against the store: the WAL-based Raft log and the
//! sled state machine, both with the background writer and with inline flushes.

use ledge_store::{FlushPolicy, Log, LogOptions, StateMachine, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct Builder(FlushPolicy);

impl StoreBuilder<TypeConfig, Log, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, Log, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        // Small segments, so that the suite's purges and truncations cross segment boundaries.
        let opts = LogOptions { segment_bytes: 256, cache_bytes: 512, flush: self.0, ..LogOptions::default() };
        let (_db, log, sm) =
            ledge_store::open_with(dir.path(), ledge_store::StoreOptions { log: opts, cache_bytes: 0 })
                .expect("open store");
        sm.serve_snapshots();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder(FlushPolicy::Background))?;
    Ok(())
}

#[test]
fn openraft_storage_suite_inline() -> Result<(), StorageError> {
    Suite::test_all(Builder(FlushPolicy::Inline))?;
    Ok(())
}
