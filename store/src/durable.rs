//! Flushing sled to disk from async code.

use crate::FlushPolicy;

/// Makes every write to `db` so far durable, without tying up sled's own I/O threads.
///
/// sled's `flush_async` runs the blocking flush on sled's I/O thread pool, the same pool that
/// writes out the log buffers the flush waits for, and that pool only grows when more than seven
/// jobs are queued. Seven flushes waiting at once (several databases in one process, as in the
/// simulation harness) leave no thread to write their buffers, and every one of them waits
/// forever. Flushing on tokio's blocking pool keeps sled's threads free for the writes.
///
/// Under [`FlushPolicy::Inline`] the flush runs on the calling thread instead, blocking it until
/// the data is on disk. That is for a deterministic simulation only: there every node shares one
/// thread and a simulated clock, and a flush on another thread finishes after a real-time delay
/// that the simulated clock turns into a different interleaving on every run; blocking the
/// thread makes a flush take no simulated time. Never in a server: it stalls the runtime.
async fn flush(db: &sled::Db, policy: FlushPolicy) -> sled::Result<usize> {
    if policy == FlushPolicy::Inline {
        return db.flush();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let db = db.clone();
            rt.spawn_blocking(move || db.flush())
                .await
                .map_err(|e| sled::Error::ReportableBug(format!("the flush task ended without a result: {e}")))?
        }
        Err(_) => db.flush(),
    }
}

/// A sled database and a handle on its data file, so that making writes durable ends with
/// `fdatasync`: sled's own flush is `sync_file_range`, which writes the pages out but does not
/// flush the device's write cache, so a power loss could still lose them. The flush policy says
/// where the blocking work runs (see `flush` above).
#[derive(Clone)]
pub struct Disk {
    db: sled::Db,
    file: Option<std::sync::Arc<std::fs::File>>,
    policy: FlushPolicy,
}

impl Disk {
    /// The database opened at `dir` (sled keeps its data in `dir/db`), synced to the device,
    /// its flushes run as `policy` says.
    pub fn open(db: sled::Db, dir: &std::path::Path, policy: FlushPolicy) -> Result<Disk, crate::Error> {
        let path = dir.join("db");
        let file = std::fs::File::open(&path).map_err(|e| crate::Error::Io(format!("{}: {e}", path.display())))?;
        Ok(Disk { db, file: Some(std::sync::Arc::new(file)), policy })
    }

    /// A database whose flushes stop at sled's own (for tests that build one by hand).
    pub fn unsynced(db: sled::Db) -> Disk {
        Disk { db, file: None, policy: FlushPolicy::Background }
    }

    /// The database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write to the database so far durable: sled's flush, then `fdatasync` of its
    /// data file.
    pub async fn sync(&self) -> Result<(), crate::Error> {
        flush(&self.db, self.policy).await?;
        let Some(file) = self.file.clone() else { return Ok(()) };
        if self.policy == FlushPolicy::Inline {
            return Ok(file.sync_data()?);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| crate::Error::Io(format!("the sync task ended without a result: {e}")))??,
            Err(_) => file.sync_data()?,
        }
        Ok(())
    }
}
