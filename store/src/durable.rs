//! Flushing sled to disk from async code.

/// Makes every write to `db` so far durable, without tying up sled's own I/O threads.
///
/// sled's `flush_async` runs the blocking flush on sled's I/O thread pool, the same pool that
/// writes out the log buffers the flush waits for, and that pool only grows when more than seven
/// jobs are queued. Seven flushes waiting at once (several databases in one process, as in the
/// simulation harness) leave no thread to write their buffers, and every one of them waits
/// forever. Flushing on tokio's blocking pool keeps sled's threads free for the writes.
pub async fn flush(db: &sled::Db) -> sled::Result<usize> {
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
