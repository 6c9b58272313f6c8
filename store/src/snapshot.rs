//! Raft snapshots of the state machine: checkpoints, exported to a file only when a peer needs
//! one.
//!
//! The state machine is itself durable, so a snapshot does not copy it. Building a snapshot
//! (`build_snapshot`, triggered by the node by entries, bytes and time) is a *checkpoint*: the
//! applied state is synced to disk and its log id recorded as the current snapshot, which lets
//! openraft purge the log behind it. No data file is written, so the data is on disk once (in
//! sled), not twice.
//!
//! A snapshot's data is exported only when openraft asks for it to send to a follower or
//! learner that is behind the purged log (`get_current_snapshot` on a running node, see
//! [`crate::StateMachine::serve_snapshots`]). The export writes the state as it is at that
//! moment, while openraft's state-machine worker holds the state machine (apply waits), and
//! describes it with its own log id, which is at or past the checkpoint's. The export is reused
//! for further requests until a newer checkpoint passes it, and removed then, so at most one
//! export file exists. Before the node runs (openraft's start-up reads only the metadata) the
//! current snapshot is described without data.
//!
//! An export file is a sequence of frames (`u32` little-endian length, then a bincode
//! [`Record`]): a header (with the revision counter), the session table that deduplicates
//! retried writes, then for each keyspace its definition followed by its entries (none for an
//! eventual keyspace, whose replicas sync outside Raft). The change log is not part of a
//! snapshot: a watcher that asks for revisions older than a node holds receives the current
//! state instead (see the `Watch` RPC).
//!
//! Installing: the received bytes are copied (streamed, never held whole in memory) to
//! `installing.snap`, an `installing` marker is written, the trees are replaced, the marker is
//! removed and the file deleted. A crash in between is finished by [`resume_install`] on the next
//! open. A snapshot that is not newer than the applied state is ignored, so installing never
//! moves a node backwards. File names never come from the wire.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use openraft::Snapshot;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncSeekExt;

use crate::command::{KeyspaceDef, LogId, Mode, SnapshotMeta, StoredMembership, TypeConfig};
use crate::error::{decode, encode};
use crate::state::{data_tree_name, StateMachine, LAST_APPLIED, MEMBERSHIP, REVISION};
use crate::Error;

const CURRENT: &[u8] = b"snapshot";
const INSTALLING: &[u8] = b"snapshot_installing";
const SEQ: &[u8] = b"snapshot_seq";

#[derive(Serialize, Deserialize)]
enum Record {
    Header {
        last_applied: Option<LogId>,
        membership: StoredMembership,
        /// The revision counter at `last_applied`.
        revision: u64,
    },
    /// An entry of the session table (exactly-once results): stored key and value.
    Session(Vec<u8>, Vec<u8>),
    Keyspace(KeyspaceDef),
    /// A key and its encoded `Versioned` value, in the keyspace of the last `Keyspace` record.
    Entry(Vec<u8>, Vec<u8>),
}

fn write_record(out: &mut impl Write, record: &Record) -> Result<(), Error> {
    let bytes = encode(record)?;
    let len = u32::try_from(bytes.len()).map_err(|_| Error::InvalidInput("snapshot record too large".into()))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    Ok(())
}

fn read_record(input: &mut impl Read) -> Result<Option<Record>, Error> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut buf)?;
    Ok(Some(decode(&buf)?))
}

const INSTALL_FILE: &str = "installing.snap";
const EMPTY_FILE: &str = "described.snap";

fn export_path(sm: &StateMachine, seq: u64) -> PathBuf {
    sm.inner.snapshot_dir.join(format!("export-{seq}.snap"))
}

fn next_seq(sm: &StateMachine) -> Result<u64, Error> {
    let next = match sm.inner.meta.get(SEQ)? {
        Some(b) => decode::<u64>(&b)? + 1,
        None => 1,
    };
    sm.inner.meta.insert(SEQ, encode(&next)?)?;
    Ok(next)
}

/// The export kept for peers that need a snapshot, and whether exports are served yet.
#[derive(Default)]
pub(crate) struct Exports {
    serving: AtomicBool,
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
}

impl Exports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SnapshotMeta, PathBuf)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, export: (SnapshotMeta, PathBuf)) {
        *self.lock() = Some(export);
    }

    /// Removes the kept export if it is older than `floor`; returns the one kept, if any.
    fn retire_before(&self, floor: &Option<LogId>) -> Option<(SnapshotMeta, PathBuf)> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|(meta, _)| meta.last_log_id < *floor) {
            Self::remove(current.take());
        }
        current.clone()
    }

    /// Removes the kept export, whatever it is.
    fn discard(&self) {
        Self::remove(self.lock().take());
    }

    fn remove(export: Option<(SnapshotMeta, PathBuf)>) {
        if let Some((_, path)) = export {
            // A leftover file costs only disk space; it is removed at the next open.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes the files a previous run left in the snapshot directory (exports, partial receives).
pub(crate) fn clear_leftovers(sm: &StateMachine) -> Result<(), Error> {
    for entry in std::fs::read_dir(&sm.inner.snapshot_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with("export-") || name.starts_with("recv-") || name.ends_with(".tmp");
        // Files of the old layout (one full copy per snapshot, named by its id) go too.
        let old = name.ends_with(".snap") && name != INSTALL_FILE && name != EMPTY_FILE;
        if leftover || old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Builds a snapshot, that is a checkpoint: staged (metadata read) while openraft holds the
/// state machine, finished (state synced, checkpoint recorded) afterwards.
pub struct SnapshotBuilder {
    sm: StateMachine,
    staged: Result<SnapshotMeta, Error>,
}

impl SnapshotBuilder {
    pub(crate) fn stage(sm: StateMachine) -> Self {
        let staged = describe(&sm).map(|(meta, _)| meta);
        Self { sm, staged }
    }

    pub(crate) async fn finish(&mut self) -> Result<Snapshot<TypeConfig>, Error> {
        let meta = std::mem::replace(&mut self.staged, Err(Error::InvalidInput("snapshot already built".into())))?;
        // openraft purges the log behind a snapshot: first make the applied state durable.
        self.sm.checkpoint().await?;
        self.sm.inner.meta.insert(CURRENT, encode(&meta)?)?;
        self.sm.inner.disk.sync().await?;
        let _kept = self.sm.inner.exports.retire_before(&meta.last_log_id);
        Ok(Snapshot { meta, snapshot: Box::new(empty_file(&self.sm).await?) })
    }
}

/// The metadata of the state as applied now, with a fresh id, and the revision counter.
fn describe(sm: &StateMachine) -> Result<(SnapshotMeta, u64), Error> {
    let last_applied = sm.last_applied()?;
    let revision = sm.applied_revision();
    let membership = sm.membership()?;
    let seq = next_seq(sm)?;
    let snapshot_id = match last_applied {
        Some(id) => format!("{}-{}-{}-{seq}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => format!("0-0-0-{seq}"),
    };
    Ok((SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id }, revision))
}

/// Writes the state as applied now to `path`. The caller holds the state machine, so nothing is
/// applied meanwhile.
fn export(sm: &StateMachine, meta: &SnapshotMeta, revision: u64, path: &Path) -> Result<(), Error> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let header = Record::Header { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), revision };
    write_record(&mut out, &header)?;
    for item in sm.inner.sessions_tree.iter() {
        let (k, v) = item?;
        write_record(&mut out, &Record::Session(k.to_vec(), v.to_vec()))?;
    }
    for def in sm.keyspaces()? {
        // Eventual keyspaces' data lives outside Raft: only their definitions travel.
        let tree = match def.mode {
            Mode::Strong => Some(sm.inner.db.open_tree(data_tree_name(&def))?),
            Mode::Eventual => None,
        };
        write_record(&mut out, &Record::Keyspace(def))?;
        for item in tree.iter().flat_map(sled::Tree::iter) {
            let (k, v) = item?;
            write_record(&mut out, &Record::Entry(k.to_vec(), v.to_vec()))?;
        }
    }
    let file = out.into_inner().map_err(|e| Error::Io(e.to_string()))?;
    file.sync_all()?;
    Ok(())
}

/// An empty file: the data of a snapshot that is described, not exported.
async fn empty_file(sm: &StateMachine) -> Result<tokio::fs::File, Error> {
    let path = sm.inner.snapshot_dir.join(EMPTY_FILE);
    Ok(tokio::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).await?)
}

/// The current snapshot, if one was built or installed. On a running node its data is
/// exported (or the export kept from before reused); before that, it is described only.
pub(crate) async fn current(sm: &StateMachine) -> Result<Option<Snapshot<TypeConfig>>, Error> {
    let checkpoint: Option<SnapshotMeta> = match sm.inner.meta.get(CURRENT)? {
        Some(bytes) => Some(decode(&bytes)?),
        None => None,
    };
    // No checkpoint, no purged log: no peer can need a snapshot.
    let Some(checkpoint) = checkpoint else { return Ok(None) };
    if !sm.inner.exports.serving.load(Ordering::SeqCst) {
        return Ok(Some(Snapshot { meta: checkpoint, snapshot: Box::new(empty_file(sm).await?) }));
    }
    if let Some((meta, path)) = sm.inner.exports.retire_before(&checkpoint.last_log_id) {
        if let Ok(file) = tokio::fs::File::open(&path).await {
            return Ok(Some(Snapshot { meta, snapshot: Box::new(file) }));
        }
    }
    let (mut meta, revision) = describe(sm)?;
    if checkpoint.last_log_id == meta.last_log_id {
        // Nothing applied since the checkpoint: the export is that snapshot.
        meta.snapshot_id = checkpoint.snapshot_id;
    }
    let path = export_path(sm, next_seq(sm)?);
    tracing::info!(snapshot = %meta.snapshot_id, "exporting a snapshot for a peer");
    export(sm, &meta, revision, &path)?;
    let file = tokio::fs::File::open(&path).await?;
    sm.inner.exports.set((meta.clone(), path));
    Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
}

/// Lets [`current`] export data: called once the node runs.
pub(crate) fn serve(sm: &StateMachine) {
    sm.inner.exports.serving.store(true, Ordering::SeqCst);
}

/// A fresh file to receive a snapshot into.
pub(crate) async fn begin_receiving(sm: &StateMachine) -> Result<Box<tokio::fs::File>, Error> {
    let path = sm.inner.snapshot_dir.join(format!("recv-{}.tmp", next_seq(sm)?));
    let file = tokio::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).await?;
    Ok(Box::new(file))
}

/// Installs a received snapshot, unless the state machine is already at or past it.
pub(crate) async fn install(
    sm: &StateMachine,
    meta: &SnapshotMeta,
    mut data: Box<tokio::fs::File>,
) -> Result<(), Error> {
    if meta.last_log_id <= sm.last_applied()? {
        tracing::info!(snapshot = %meta.snapshot_id, "ignoring a snapshot that is not newer than the applied state");
        return Ok(());
    }
    // Copy the received bytes where a crash can find them, a buffer at a time.
    let path = sm.inner.snapshot_dir.join(INSTALL_FILE);
    data.seek(std::io::SeekFrom::Start(0)).await?;
    {
        let mut file = tokio::fs::File::create(&path).await?;
        tokio::io::copy(&mut *data, &mut file).await?;
        file.sync_all().await?;
    }
    drop(data);
    sm.inner.meta.insert(INSTALLING, encode(meta)?)?;
    sm.inner.disk.sync().await?;
    sm.inner.exports.discard();
    import(sm, &path, meta)?;
    sm.inner.meta.remove(INSTALLING)?;
    sm.inner.meta.insert(CURRENT, encode(meta)?)?;
    sm.inner.disk.sync().await?;
    clear_leftovers(sm)?;
    let _ = std::fs::remove_file(path);
    tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed a snapshot");
    Ok(())
}

/// Finishes an install that a crash interrupted.
pub(crate) fn resume_install(sm: &StateMachine) -> Result<(), Error> {
    let Some(bytes) = sm.inner.meta.get(INSTALLING)? else { return Ok(()) };
    let meta: SnapshotMeta = decode(&bytes)?;
    tracing::warn!(snapshot = %meta.snapshot_id, "finishing an interrupted snapshot install");
    let path = sm.inner.snapshot_dir.join(INSTALL_FILE);
    import(sm, &path, &meta)?;
    sm.inner.meta.remove(INSTALLING)?;
    sm.inner.meta.insert(CURRENT, encode(&meta)?)?;
    sm.inner.db.flush()?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Replaces the catalog and every strong keyspace's tree with the snapshot's contents. The
/// catalog changes in one atomic batch at the end, so a reader beside the install (eventual
/// housekeeping deciding which keyspaces were dropped) sees the old catalog or the new one,
/// never one without the keyspaces both hold. Eventual keyspaces' data is not Raft's and is
/// left alone.
fn import(sm: &StateMachine, path: &Path, meta: &SnapshotMeta) -> Result<(), Error> {
    let old = sm.keyspaces()?;
    for def in old.iter().filter(|def| def.mode == Mode::Strong) {
        sm.inner.db.drop_tree(data_tree_name(def).as_bytes())?;
    }
    sm.invalidate_catalog();
    sm.inner.sessions_tree.clear()?;
    let mut catalog = sled::Batch::default();
    for def in &old {
        catalog.remove(def.name.as_bytes());
    }
    let mut input = BufReader::new(std::fs::File::open(path)?);
    let revision = match read_record(&mut input)? {
        Some(Record::Header { revision, .. }) => revision,
        _ => return Err(Error::Corrupt(format!("snapshot {} does not start with a header", meta.snapshot_id))),
    };
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    while let Some(record) = read_record(&mut input)? {
        match record {
            Record::Header { .. } => {
                return Err(Error::Corrupt(format!("snapshot {} has a second header", meta.snapshot_id)))
            }
            Record::Session(k, v) => {
                sm.inner.sessions_tree.insert(k, v)?;
            }
            Record::Keyspace(def) => {
                if let Some(t) = tree.take() {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
                catalog.insert(def.name.as_bytes(), encode(&def)?);
                tree = match def.mode {
                    Mode::Strong => Some(sm.inner.db.open_tree(data_tree_name(&def))?),
                    Mode::Eventual => None,
                };
            }
            Record::Entry(k, v) => {
                let t = tree.as_ref().ok_or_else(|| Error::Corrupt("snapshot entry before any keyspace".into()))?;
                batch.insert(k, v);
                pending += 1;
                if pending == 10_000 {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
        }
    }
    if let Some(t) = tree {
        t.apply_batch(batch)?;
    }
    sm.inner.catalog.apply_batch(catalog)?;
    sm.ensure_default_keyspace()?;
    sm.invalidate_catalog();
    let mut m = sled::Batch::default();
    m.insert(LAST_APPLIED, encode(&meta.last_log_id)?);
    m.insert(MEMBERSHIP, encode(&meta.last_membership)?);
    m.insert(REVISION, encode(&revision)?);
    sm.inner.meta.apply_batch(m)?;
    sm.refresh_applied()?;
    Ok(())
}
