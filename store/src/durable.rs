//! Flushing sled to disk from async code.

use std::sync::atomic::{AtomicBool, Ordering};

static INLINE: AtomicBool = AtomicBool::new(false);

/// Makes every [`flush`] in this process run on the calling thread, blocking it until the data is
/// on disk. For a deterministic simulation only: there every node shares one thread and a
/// simulated clock, and a flush on another thread finishes after a real-time delay that the
/// simulated clock turns into a different interleaving on every run. Blocking that thread
/// instead makes a flush take no simulated time. Never in a server: it stalls the runtime.
pub fn set_inline_flush(inline: bool) {
    INLINE.store(inline, Ordering::Relaxed);
}

/// Makes every write to `db` so far durable, without tying up sled's own I/O threads.
///
/// sled's `flush_async` runs the blocking flush on sled's I/O thread pool, the same pool that
/// writes out the log buffers the flush waits for, and that pool only grows when more than seven
/// jobs are queued. Seven flushes waiting at once (several databases in one process, as in the
/// simulation harness) leave no thread to write their buffers, and every one of them waits
/// forever. Flushing on tokio's blocking pool keeps sled's threads free for the writes.
///
/// With [`set_inline_flush`] on, the flush runs on the calling thread instead.
pub async fn flush(db: &sled::Db) -> sled::Result<usize> {
    if INLINE.load(Ordering::Relaxed) {
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
/// flush the device's write cache, so a power loss could still lose them.
#[derive(Clone)]
pub struct Disk {
    db: sled::Db,
    file: Option<std::sync::Arc<std::fs::File>>,
}

impl Disk {
    /// The database opened at `dir` (sled keeps its data in `dir/db`), synced to the device.
    pub fn open(db: sled::Db, dir: &std::path::Path) -> Result<Disk, crate::Error> {
        let path = dir.join("db");
        let file = std::fs::File::open(&path).map_err(|e| crate::Error::Io(format!("{}: {e}", path.display())))?;
        Ok(Disk { db, file: Some(std::sync::Arc::new(file)) })
    }

    /// A database whose flushes stop at sled's own (for tests that build one by hand).
    pub fn unsynced(db: sled::Db) -> Disk {
        Disk { db, file: None }
    }

    /// The database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write to the database so far durable: sled's flush, then `fdatasync` of its
    /// data file. Runs on the calling thread under [`set_inline_flush`], like [`flush`].
    pub async fn sync(&self) -> Result<(), crate::Error> {
        flush(&self.db).await?;
        let Some(file) = self.file.clone() else { return Ok(()) };
        if INLINE.load(Ordering::Relaxed) {
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
