//! A write-ahead log made for the Raft log: segmented append-only files, one writer, group
//! commit with one `fdatasync` per group, an in-memory index of every live entry and a cache of
//! the recent tail.
//!
//! # Two views of the log
//!
//! The *logical* view ([`State`], behind an `RwLock`) is what callers and readers see: where
//! every live entry is (segment, offset, length), the decoded recent tail, the vote and the purge
//! point. Every operation updates it at once, on the caller's thread, and assigns the bytes of
//! new records their final place in a segment. The *physical* view ([`Writer`], behind a
//! `Mutex`) owns the files and carries out the operations, in the order they were made, as jobs:
//! on the caller's thread ([`FlushPolicy::Inline`]) or on the `ledge-wal` thread
//! ([`FlushPolicy::Background`]), which takes every job queued, writes the appends of the group
//! with one positioned write per segment touched, syncs once, then completes them in order.
//!
//! Entries appended but not yet written are pinned in the tail cache (each cached entry carries
//! the sequence number of its job; the writer publishes the last one written), so a reader never
//! looks in a file for bytes that are not there yet.
//!
//! # Lock order
//!
//! `Shared::writer` before `Shared::state`. The writer takes `state` briefly after each group to
//! publish its progress; an inline caller takes `writer` first and then `state`; a background
//! caller takes only `state`, and sends its job on the channel while holding it, so channel order
//! is job order. Readers take `state` (shared) only, and hold it while they read a segment so
//! that no purge or truncation removes the file under them.

mod record;
mod recover;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::{Entry, Vote};

use crate::command::{LogId, NodeId, TypeConfig};
use crate::Error;
use segment::Meta;

/// When appended entries are written and synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// A dedicated thread (`ledge-wal`) writes and syncs; `append` returns at once and the thread
    /// completes it. For servers.
    #[default]
    Background,
    /// `append` writes and syncs on the calling thread before it completes. For a deterministic
    /// simulation that runs every node on one thread with a simulated clock.
    Inline,
}

/// How a [`crate::Log`] is laid out and flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it holds at least this many bytes
    /// (default 8 MiB, so that purging behind a checkpoint frees disk soon).
    pub segment_bytes: u64,
    /// Bytes (as encoded) of recent entries kept decoded in memory (default 16 MiB).
    pub cache_bytes: usize,
    /// Where appends are written and synced.
    pub flush: FlushPolicy,
    /// Most bytes (as encoded) of entries one replication read returns, past the first entry
    /// (default 2 MiB): openraft asks for up to `max_payload_entries` entries at a time, and
    /// entries can each hold megabytes, so the read stops at a byte budget instead.
    pub max_read_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { segment_bytes: 8 << 20, cache_bytes: 16 << 20, flush: FlushPolicy::Background, max_read_bytes: 2 << 20 }
    }
}

/// Called once a job is done: with `Ok` only if everything it wrote is durable.
pub(crate) type Done = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// Where a live entry is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

/// A segment in the logical view.
#[derive(Debug, Clone, Copy)]
struct Seg {
    first: u64,
    len: u64,
}

struct Cached {
    entry: Entry<TypeConfig>,
    bytes: usize,
    /// The job that writes it; 0 for entries read at open.
    seq: u64,
}

/// The logical view.
struct State {
    /// Segments in order; the last one is the one appends go to.
    segments: Vec<Seg>,
    /// Index of `locs[0]`; with no live entry, the index the next append must have.
    first: u64,
    /// Every live entry, from `first` on.
    locs: VecDeque<Loc>,
    /// The decoded tail: entries `next - cache.len() .. next`.
    cache: VecDeque<Cached>,
    cached_bytes: usize,
    /// The last job issued.
    seq: u64,
    /// The last append job written to its segment.
    written_seq: u64,
    /// Vote and purge point as of the last operation (maybe not yet on disk).
    meta: Meta,
    /// The last committed log id saved, maybe never persisted.
    committed: Option<LogId>,
}

impl State {
    fn next(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    fn evict(&mut self, budget: usize) {
        while self.cached_bytes > budget {
            match self.cache.front() {
                Some(c) if c.seq <= self.written_seq => {
                    self.cached_bytes -= c.bytes;
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    fn push_cache(&mut self, entry: Entry<TypeConfig>, bytes: usize, seq: u64, budget: usize) {
        self.cached_bytes += bytes;
        self.cache.push_back(Cached { entry, bytes, seq });
        self.evict(budget);
    }

    /// Drops cached entries from `index` on.
    fn uncache_from(&mut self, index: u64) {
        while self.cache.back().is_some_and(|c| c.entry.log_id.index >= index) {
            if let Some(c) = self.cache.pop_back() {
                self.cached_bytes -= c.bytes;
            }
        }
    }

    /// Drops cached entries up to `index`, inclusive.
    /// Forgets the segments all of whose entries are at or below `purged` (`next` is the index
    /// after the last entry); returns their first indexes, for the caller to delete the files.
    fn drop_purged_segments(&mut self, purged: u64, next: u64) -> Vec<u64> {
        let mut remove = Vec::new();
        while let Some(seg) = self.segments.first() {
            let end = self.segments.get(1).map_or(next, |s| s.first);
            if end > purged.saturating_add(1) {
                break;
            }
            remove.push(seg.first);
            self.segments.remove(0);
        }
        remove
    }

    fn uncache_upto(&mut self, index: u64) {
        while self.cache.front().is_some_and(|c| c.entry.log_id.index <= index) {
            if let Some(c) = self.cache.pop_front() {
                self.cached_bytes -= c.bytes;
            }
        }
    }

    /// The meta to persist: the committed id goes along only if every entry up to it is durable
    /// by the time the job runs, which holds for entries below `next` (a control job runs after
    /// every earlier append is synced).
    fn meta_to_persist(&mut self) -> Meta {
        let next = self.next();
        let safe = |c: &Option<LogId>| c.is_some_and(|c| c.index < next);
        if safe(&self.committed) {
            self.meta.committed = self.committed;
        } else if !safe(&self.meta.committed) {
            self.meta.committed = None;
        }
        self.meta.clone()
    }
}

/// A run of records for one segment, at the offset the logical view assigned them.
struct Chunk {
    segment: u64,
    /// The segment is new: create it.
    create: bool,
    offset: u64,
    bytes: Vec<u8>,
}

enum Op {
    /// Remove `remove` (newest first; an empty log restarting at another index), then write
    /// `chunks`.
    Append { remove: Vec<u64>, chunks: Vec<Chunk> },
    /// Remove `remove` (newest first), then cut `cut.0` to `cut.1` bytes.
    Truncate { remove: Vec<u64>, cut: Option<(u64, u64)> },
    /// Persist `meta` (the new purge point), then remove `remove` (oldest first).
    Purge { meta: Meta, remove: Vec<u64> },
    /// Persist `meta` (a new vote).
    Meta(Meta),
}

struct Job {
    seq: u64,
    op: Op,
    done: Done,
}

/// The physical view: the files.
struct Writer {
    dir: PathBuf,
    /// The segment last written to and its file.
    active: Option<(u64, File)>,
    /// Set by the first failed write or sync: after that nothing the writer does is trusted.
    poisoned: Option<String>,
}

struct Shared {
    dir: PathBuf,
    opts: LogOptions,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Data syncs (`fdatasync` of a segment) so far.
    syncs: AtomicU64,
}

/// The WAL. Cheap to clone; the last clone dropped stops the writer thread (after it finishes
/// the jobs queued).
#[derive(Clone)]
pub(crate) struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

fn poisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Writer {
    /// Runs a group of jobs in order: appends are gathered and written together, synced once and
    /// completed; any other job first finishes the appends before it.
    fn run(&mut self, shared: &Shared, jobs: Vec<Job>) {
        let mut appends: Vec<(u64, Vec<Chunk>, Done)> = Vec::new();
        for job in jobs {
            match job.op {
                Op::Append { remove, chunks } if remove.is_empty() => appends.push((job.seq, chunks, job.done)),
                Op::Append { remove, chunks } => {
                    self.commit(shared, std::mem::take(&mut appends));
                    let removed = self.check().and_then(|()| {
                        self.forget(&remove);
                        segment::remove_segments(&self.dir, &remove)
                    });
                    match removed {
                        Ok(()) => appends.push((job.seq, chunks, job.done)),
                        Err(e) => {
                            self.poison(&e);
                            (job.done)(Err(e));
                        }
                    }
                }
                op => {
                    self.commit(shared, std::mem::take(&mut appends));
                    let result = self.check().and_then(|()| self.control(op));
                    if let Err(e) = &result {
                        self.poison(e);
                    }
                    (job.done)(result);
                }
            }
        }
        self.commit(shared, appends);
    }

    fn check(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(e) => Err(Error::Io(format!("the WAL failed earlier and accepts no more writes: {e}"))),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: &Error) {
        tracing::error!("WAL write failed: {e}");
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
    }

    fn commit(&mut self, shared: &Shared, appends: Vec<(u64, Vec<Chunk>, Done)>) {
        let Some(last_seq) = appends.last().map(|a| a.0) else { return };
        let result = self.check().and_then(|()| self.write_group(shared, &appends));
        match &result {
            Ok(()) => {
                let mut state = shared.write();
                state.written_seq = state.written_seq.max(last_seq);
                state.evict(shared.opts.cache_bytes);
            }
            Err(e) => self.poison(e),
        }
        tracing::trace!(appends = appends.len(), "WAL group commit");
        for (_, _, done) in appends {
            done(result.clone());
        }
    }

    fn write_group(&mut self, shared: &Shared, appends: &[(u64, Vec<Chunk>, Done)]) -> Result<(), Error> {
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_at = 0u64;
        let mut dirty = false;
        for chunk in appends.iter().flat_map(|a| a.1.iter()) {
            let same = matches!(&self.active, Some((first, _)) if *first == chunk.segment);
            if !same || chunk.create || buf_at + buf.len() as u64 != chunk.offset {
                self.flush_buf(&mut buf, buf_at)?;
                if !same || chunk.create {
                    if dirty {
                        self.sync(shared)?;
                    }
                    let file = if chunk.create {
                        segment::create_segment(&self.dir, chunk.segment)?
                    } else {
                        segment::open_segment(&self.dir, chunk.segment)?
                    };
                    self.active = Some((chunk.segment, file));
                }
                buf_at = chunk.offset;
            }
            buf.extend_from_slice(&chunk.bytes);
            dirty = true;
        }
        self.flush_buf(&mut buf, buf_at)?;
        if dirty {
            self.sync(shared)?;
        }
        Ok(())
    }

    fn flush_buf(&mut self, buf: &mut Vec<u8>, at: u64) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some((_, file)) = &self.active else {
            return Err(Error::Io("WAL bytes to write but no segment open".into()));
        };
        file.write_all_at(buf, at)?;
        buf.clear();
        Ok(())
    }

    fn sync(&mut self, shared: &Shared) -> Result<(), Error> {
        if let Some((_, file)) = &self.active {
            file.sync_data()?;
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn control(&mut self, op: Op) -> Result<(), Error> {
        match op {
            Op::Append { .. } => Ok(()),
            Op::Truncate { remove, cut } => {
                self.forget(&remove);
                segment::remove_segments(&self.dir, &remove)?;
                if let Some((first, len)) = cut {
                    segment::cut_segment(&self.dir, first, len)?;
                }
                Ok(())
            }
            Op::Purge { meta, remove } => {
                segment::write_meta(&self.dir, &meta)?;
                self.forget(&remove);
                segment::remove_segments(&self.dir, &remove)
            }
            Op::Meta(meta) => segment::write_meta(&self.dir, &meta),
        }
    }

    /// Closes the active segment if it is among `removed`.
    fn forget(&mut self, removed: &[u64]) {
        if matches!(&self.active, Some((first, _)) if removed.contains(first)) {
            self.active = None;
        }
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, recovering what is there (see the module docs of
    /// `crate::log` for the rules).
    pub(crate) fn open(dir: &Path, opts: LogOptions) -> Result<Self, Error> {
        if opts.segment_bytes == 0 {
            return Err(Error::InvalidInput("WAL segment size must be positive".into()));
        }
        std::fs::create_dir_all(dir)?;
        segment::sync_dir(dir)?;
        let meta = segment::read_meta(dir)?;
        let state = recover::recover(dir, &opts, meta)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer { dir: dir.to_path_buf(), active: None, poisoned: None }),
            state: RwLock::new(state),
            syncs: AtomicU64::new(0),
            opts,
        });
        let (queue, thread) = match shared.opts.flush {
            FlushPolicy::Inline => (None, None),
            FlushPolicy::Background => {
                let (tx, rx) = mpsc::channel::<Job>();
                let for_thread = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("ledge-wal".into())
                    .spawn(move || writer_loop(&for_thread, &rx))?;
                (Some(tx), Some(thread))
            }
        };
        Ok(Self { inner: Arc::new(Inner { shared, queue, thread }) })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Issues a job built from the logical view: `make` updates the view and returns the
    /// operation; the job is then run inline or queued, in issue order.
    fn submit(&self, make: impl FnOnce(&mut State) -> Result<Option<Op>, Error>, done: Done) -> Result<(), Error> {
        let shared = self.shared();
        match &self.inner.queue {
            None => {
                let mut writer = poisoned(&shared.writer);
                let job = {
                    let mut state = shared.write();
                    match make(&mut state)? {
                        Some(op) => {
                            state.seq += 1;
                            Job { seq: state.seq, op, done }
                        }
                        None => {
                            drop(state);
                            done(Ok(()));
                            return Ok(());
                        }
                    }
                };
                writer.run(shared, vec![job]);
                Ok(())
            }
            Some(queue) => {
                let mut state = shared.write();
                let Some(op) = make(&mut state)? else {
                    drop(state);
                    done(Ok(()));
                    return Ok(());
                };
                state.seq += 1;
                let job = Job { seq: state.seq, op, done };
                if let Err(mpsc::SendError(job)) = queue.send(job) {
                    drop(state);
                    (job.done)(Err(Error::Io("the WAL writer thread is gone".into())));
                }
                Ok(())
            }
        }
    }

    /// Issues a job and waits for it.
    async fn submit_wait(&self, make: impl FnOnce(&mut State) -> Result<Option<Op>, Error>) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            make,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await.map_err(|_| Error::Io("the WAL writer dropped a job".into()))?
    }

    /// Appends `entries`, which must follow the last entry (or, in an empty log, may start
    /// anywhere). They are readable when this returns; `done` is called once they are durable.
    /// An error returned here means nothing was appended and `done` was not called.
    pub(crate) fn append(&self, entries: Vec<Entry<TypeConfig>>, done: Done) -> Result<(), Error> {
        let mut records = Vec::new();
        let mut lens = Vec::with_capacity(entries.len());
        for entry in &entries {
            lens.push(record::encode_into(entry, &mut records)?);
        }
        let opts = self.shared().opts.clone();
        self.submit(
            move |state| {
                let Some(head) = entries.first() else {
                    return Ok(Some(Op::Append { remove: Vec::new(), chunks: Vec::new() }));
                };
                let mut chunks: Vec<Chunk> = Vec::new();
                let mut remove = Vec::new();
                if state.locs.is_empty() && head.log_id.index != state.first {
                    // An empty log restarting elsewhere (say after a snapshot): the segments left
                    // hold only purged or truncated entries; remove them (newest first) before
                    // the new segment is created, so the directory never shows a gap.
                    remove = state.segments.drain(..).rev().map(|s| s.first).collect();
                    state.first = head.log_id.index;
                    state.uncache_from(0);
                }
                for (k, entry) in entries.iter().enumerate() {
                    let expected = state.next() + k as u64;
                    if entry.log_id.index != expected {
                        return Err(Error::InvalidInput(format!(
                            "append of log index {} where {expected} is next",
                            entry.log_id.index
                        )));
                    }
                }
                let mut at = 0usize;
                for (entry, len) in entries.into_iter().zip(lens) {
                    let index = entry.log_id.index;
                    let rotate = match state.segments.last() {
                        None => true,
                        Some(seg) => seg.len >= opts.segment_bytes,
                    };
                    if rotate {
                        state.segments.push(Seg { first: index, len: 0 });
                    }
                    let Some(seg) = state.segments.last_mut() else {
                        return Err(Error::Io("no WAL segment to append to".into()));
                    };
                    let bytes = &records[at..at + len as usize];
                    at += len as usize;
                    match chunks.last_mut() {
                        Some(c) if !rotate && c.segment == seg.first => c.bytes.extend_from_slice(bytes),
                        _ => chunks.push(Chunk {
                            segment: seg.first,
                            create: rotate,
                            offset: seg.len,
                            bytes: bytes.to_vec(),
                        }),
                    }
                    let loc = Loc { segment: seg.first, offset: seg.len, len, log_id: entry.log_id };
                    seg.len += u64::from(len);
                    state.locs.push_back(loc);
                    let seq = state.seq + 1;
                    state.push_cache(entry, len as usize, seq, opts.cache_bytes);
                }
                Ok(Some(Op::Append { remove, chunks }))
            },
            done,
        )
    }
}

impl Wal {
    /// Removes every entry from `index` on: later segments are removed, the segment holding
    /// `index` is cut where its record starts, and appends continue from there. Durable when it
    /// returns.
    pub(crate) async fn truncate(&self, index: u64) -> Result<(), Error> {
        self.submit_wait(move |state| {
            let index = index.max(state.first);
            let Some(&cut) = state.locs.get((index - state.first) as usize) else { return Ok(None) };
            state.locs.truncate((index - state.first) as usize);
            state.uncache_from(index);
            let mut remove = Vec::new();
            while state.segments.last().is_some_and(|s| s.first > cut.segment) {
                if let Some(seg) = state.segments.pop() {
                    remove.push(seg.first);
                }
            }
            let mut cut_to = None;
            if let Some(seg) = state.segments.last_mut() {
                if cut.offset == 0 {
                    remove.push(seg.first);
                    state.segments.pop();
                } else {
                    seg.len = cut.offset;
                    cut_to = Some((seg.first, cut.offset));
                }
            }
            Ok(Some(Op::Truncate { remove, cut: cut_to }))
        })
        .await
    }

    /// Removes every entry up to `log_id`, inclusive: the purge point is persisted first, then
    /// segments holding nothing but purged entries are removed. Durable when it returns.
    pub(crate) async fn purge(&self, log_id: LogId) -> Result<(), Error> {
        self.submit_wait(move |state| {
            // Never move the purge point back, but do drop entries up to it that an append put
            // below it (an empty log restarting below its purge point).
            let log_id = match state.meta.last_purged {
                Some(p) if p.index >= log_id.index => p,
                _ => log_id,
            };
            let next = state.next();
            state.meta.last_purged = Some(log_id);
            while state.locs.front().is_some_and(|l| l.log_id.index <= log_id.index) {
                state.locs.pop_front();
            }
            state.uncache_upto(log_id.index);
            state.first = match state.locs.front() {
                Some(l) => l.log_id.index,
                None => log_id.index.saturating_add(1),
            };
            let remove = state.drop_purged_segments(log_id.index, next);
            Ok(Some(Op::Purge { meta: state.meta_to_persist(), remove }))
        })
        .await
    }

    /// Saves the vote. Durable when it returns.
    pub(crate) async fn save_vote(&self, vote: Vote<NodeId>) -> Result<(), Error> {
        self.submit_wait(move |state| {
            state.meta.vote = Some(vote);
            Ok(Some(Op::Meta(state.meta_to_persist())))
        })
        .await
    }

    /// Saves the committed log id in memory; it reaches the disk with the next vote or purge, and
    /// only once every entry up to it is durable.
    pub(crate) fn save_committed(&self, committed: Option<LogId>) {
        self.shared().write().committed = committed;
    }

    /// The last committed log id saved.
    pub(crate) fn committed(&self) -> Option<LogId> {
        self.shared().read().committed
    }

    /// The last vote saved.
    pub(crate) fn vote(&self) -> Option<Vote<NodeId>> {
        self.shared().read().meta.vote
    }

    /// The purge point and the last log id (the purge point in an empty log).
    pub(crate) fn log_state(&self) -> (Option<LogId>, Option<LogId>) {
        let state = self.shared().read();
        let purged = state.meta.last_purged;
        (purged, state.locs.back().map(|l| l.log_id).or(purged))
    }

    /// Number of live entries.
    pub(crate) fn len(&self) -> usize {
        self.shared().read().locs.len()
    }

    /// Bytes (as encoded) of entries held in the in-memory tail.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.shared().read().cached_bytes
    }

    /// Data syncs of segment files so far (for tests and metrics).
    pub(crate) fn syncs(&self) -> u64 {
        self.shared().syncs.load(Ordering::Relaxed)
    }

    /// The longest run of live entries from `start` (below `end`) whose records total at most
    /// the log's `max_read_bytes`, and at least one entry: what replication reads at a time.
    pub(crate) fn read_limited(&self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let shared = self.shared();
        let budget = shared.opts.max_read_bytes;
        let end = {
            let state = shared.read();
            let mut stop = start.max(state.first);
            let end = end.min(state.next());
            let mut total = 0u64;
            while stop < end {
                let Some(loc) = state.locs.get((stop - state.first) as usize) else { break };
                total += u64::from(loc.len);
                if total > budget && stop > start.max(state.first) {
                    break;
                }
                stop += 1;
            }
            stop
        };
        self.read(start, end)
    }

    /// The live entries with indexes in `start..end`, from the tail cache or the segments.
    pub(crate) fn read(&self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let shared = self.shared();
        let state = shared.read();
        let start = start.max(state.first);
        let end = end.min(state.next());
        if start >= end {
            return Ok(Vec::new());
        }
        let cache_first = state.next() - state.cache.len() as u64;
        let mut out = Vec::with_capacity((end - start) as usize);
        // From disk: indexes below the cache, one read per segment.
        let mut index = start;
        while index < end.min(cache_first) {
            let from = (index - state.first) as usize;
            let Some(head) = state.locs.get(from) else { break };
            let mut n = 1usize;
            while index + (n as u64) < end.min(cache_first)
                && state.locs.get(from + n).is_some_and(|l| l.segment == head.segment)
            {
                n += 1;
            }
            let Some(tail) = state.locs.get(from + n - 1) else { break };
            let span = tail.offset + u64::from(tail.len) - head.offset;
            let path = segment::segment_path(&shared.dir, head.segment);
            let mut buf = vec![0u8; span as usize];
            File::open(&path)?.read_exact_at(&mut buf, head.offset)?;
            for k in 0..n {
                let Some(loc) = state.locs.get(from + k) else { break };
                let at = (loc.offset - head.offset) as usize;
                let bytes = buf.get(at..at + loc.len as usize).unwrap_or_default();
                out.push(segment::decode_record(&path, loc.offset, bytes, index + k as u64)?);
            }
            index += n as u64;
        }
        for i in index..end {
            match i.checked_sub(cache_first).and_then(|k| state.cache.get(k as usize)) {
                Some(c) => out.push(c.entry.clone()),
                None => return Err(Error::Io(format!("WAL entry {i} is neither cached nor indexed"))),
            }
        }
        Ok(out)
    }
}

fn writer_loop(shared: &Shared, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        poisoned(&shared.writer).run(shared, group);
    }
}
