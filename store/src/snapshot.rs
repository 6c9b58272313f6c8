//! Raft snapshots of the state machine, streamed through files.
//!
//! A snapshot file is a sequence of frames (`u32` little-endian length, then a bincode
//! [`Record`]): a header (with the revision counter), the session table that deduplicates retried
//! writes, then for each keyspace its definition followed by its entries (none for an eventual
//! keyspace, whose replicas sync outside Raft). The
//! change log is not part of a snapshot: a watcher that asks for revisions older than a node
//! holds receives the current state instead (see the `Watch` RPC).
//!
//! Building: `get_snapshot_builder` runs while openraft holds the state machine exclusively, so
//! it writes a consistent copy to a temporary file; `build_snapshot` then only renames it and
//! records its metadata. Installing: the received file is kept as the current snapshot, an
//! `installing` marker is written, the trees are replaced, and the marker removed. A crash in
//! between is finished by [`resume_install`] on the next open. A snapshot that is not newer than
//! the applied state is ignored, so installing never moves a node backwards.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use openraft::Snapshot;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::command::{KeyspaceDef, LogId, Mode, SnapshotMeta, StoredMembership, TypeConfig};
use crate::error::{decode, encode};
use crate::state::{data_tree_name, StateMachine, COMPACTED_BEFORE, LAST_APPLIED, MEMBERSHIP, REVISION};
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

fn snapshot_path(sm: &StateMachine, id: &str) -> PathBuf {
    sm.inner.snapshot_dir.join(format!("{id}.snap"))
}

fn next_seq(sm: &StateMachine) -> Result<u64, Error> {
    let next = match sm.inner.meta.get(SEQ)? {
        Some(b) => decode::<u64>(&b)? + 1,
        None => 1,
    };
    sm.inner.meta.insert(SEQ, encode(&next)?)?;
    Ok(next)
}

/// Builds a snapshot: staged when created, finished by `build_snapshot`.
pub struct SnapshotBuilder {
    sm: StateMachine,
    staged: Result<(PathBuf, SnapshotMeta, u64), Error>,
}

impl SnapshotBuilder {
    pub(crate) fn stage(sm: StateMachine) -> Self {
        let staged = Self::export(&sm);
        Self { sm, staged }
    }

    fn export(sm: &StateMachine) -> Result<(PathBuf, SnapshotMeta, u64), Error> {
        let last_applied = sm.last_applied()?;
        let revision = sm.applied_revision();
        let membership = sm.membership()?;
        let seq = next_seq(sm)?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}-{seq}", id.leader_id.term, id.leader_id.node_id, id.index),
            None => format!("0-0-0-{seq}"),
        };
        let path = sm.inner.snapshot_dir.join(format!("{snapshot_id}.tmp"));
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        write_record(&mut out, &Record::Header { last_applied, membership: membership.clone(), revision })?;
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
        Ok((path, SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id }, revision))
    }

    pub(crate) async fn finish(&mut self) -> Result<Snapshot<TypeConfig>, Error> {
        let (tmp, meta, revision) =
            std::mem::replace(&mut self.staged, Err(Error::InvalidInput("snapshot already built".into())))?;
        // openraft purges the log behind a snapshot: first make the applied state durable.
        self.sm.checkpoint().await?;
        let path = snapshot_path(&self.sm, &meta.snapshot_id);
        std::fs::rename(&tmp, &path)?;
        set_current(&self.sm, &meta).await?;
        self.sm.compact_changes(revision)?;
        let file = tokio::fs::File::open(&path).await?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}

/// Records `meta` as the current snapshot and removes older snapshot files.
async fn set_current(sm: &StateMachine, meta: &SnapshotMeta) -> Result<(), Error> {
    sm.inner.meta.insert(CURRENT, encode(meta)?)?;
    sm.inner.disk.sync().await?;
    let keep = format!("{}.snap", meta.snapshot_id);
    for entry in std::fs::read_dir(&sm.inner.snapshot_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != keep && (name.ends_with(".snap") || name.starts_with("recv-")) {
            // A leftover file costs only disk space; failing to remove it is not fatal.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The current snapshot, if one was built or installed.
pub(crate) async fn current(sm: &StateMachine) -> Result<Option<Snapshot<TypeConfig>>, Error> {
    let Some(bytes) = sm.inner.meta.get(CURRENT)? else { return Ok(None) };
    let meta: SnapshotMeta = decode(&bytes)?;
    match tokio::fs::File::open(snapshot_path(sm, &meta.snapshot_id)).await {
        Ok(file) => Ok(Some(Snapshot { meta, snapshot: Box::new(file) })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
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
    // Keep the received bytes as this node's current snapshot file.
    let path = snapshot_path(sm, &meta.snapshot_id);
    data.seek(std::io::SeekFrom::Start(0)).await?;
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await?;
    {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    drop(bytes);
    sm.inner.meta.insert(INSTALLING, encode(meta)?)?;
    sm.inner.disk.sync().await?;
    import(sm, &path, meta)?;
    sm.inner.meta.remove(INSTALLING)?;
    set_current(sm, meta).await?;
    Ok(())
}

/// Finishes an install that a crash interrupted.
pub(crate) fn resume_install(sm: &StateMachine) -> Result<(), Error> {
    let Some(bytes) = sm.inner.meta.get(INSTALLING)? else { return Ok(()) };
    let meta: SnapshotMeta = decode(&bytes)?;
    tracing::warn!(snapshot = %meta.snapshot_id, "finishing an interrupted snapshot install");
    import(sm, &snapshot_path(sm, &meta.snapshot_id), &meta)?;
    sm.inner.meta.remove(INSTALLING)?;
    sm.inner.meta.insert(CURRENT, encode(&meta)?)?;
    sm.inner.db.flush()?;
    Ok(())
}

/// Replaces the catalog and every keyspace tree with the snapshot's contents.
fn import(sm: &StateMachine, path: &Path, meta: &SnapshotMeta) -> Result<(), Error> {
    for def in sm.keyspaces()? {
        sm.inner.db.drop_tree(data_tree_name(&def).as_bytes())?;
    }
    sm.inner.catalog.clear()?;
    sm.invalidate_catalog();
    sm.inner.changes.clear()?;
    sm.inner.sessions_tree.clear()?;
    let mut revision = 0;
    let mut input = BufReader::new(std::fs::File::open(path)?);
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    while let Some(record) = read_record(&mut input)? {
        match record {
            Record::Header { revision: r, .. } => revision = r,
            Record::Session(k, v) => {
                sm.inner.sessions_tree.insert(k, v)?;
            }
            Record::Keyspace(def) => {
                if let Some(t) = tree.take() {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
                sm.inner.catalog.insert(def.name.as_bytes(), encode(&def)?)?;
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
    sm.ensure_default_keyspace()?;
    sm.invalidate_catalog();
    let mut m = sled::Batch::default();
    m.insert(LAST_APPLIED, encode(&meta.last_log_id)?);
    m.insert(MEMBERSHIP, encode(&meta.last_membership)?);
    m.insert(REVISION, encode(&revision)?);
    // The change log starts after the snapshot: older revisions are answered with a snapshot.
    let next = revision + 1;
    m.insert(COMPACTED_BEFORE, encode(&next)?);
    sm.inner.meta.apply_batch(m)?;
    sm.refresh_applied()?;
    Ok(())
}
