//! openraft's storage conformance suite, run against the sled store.

use ledge_store::{Log, StateMachine, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct SledBuilder;

impl StoreBuilder<TypeConfig, Log, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, Log, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_db, log, sm) = ledge_store::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}
