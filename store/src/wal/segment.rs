//! Files of the WAL directory: segment files, the meta file, and the helpers that read, scan and
//! sync them.
//!
//! A segment is named after the index of its first entry, zero-padded to 20 digits
//! (`00000000000000000001.wal`), so a directory listing sorted by name is in log order.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use openraft::{Entry, Vote};
use serde::{Deserialize, Serialize};

use super::record::{self, Invalid, HEADER_LEN};
use crate::command::{LogId, NodeId, TypeConfig};
use crate::error::{decode, encode};
use crate::Error;

const SUFFIX: &str = ".wal";
const META: &str = "meta";
const META_TMP: &str = "meta.tmp";
/// A meta file holds three small ids; anything larger is not one.
const META_MAX: u64 = 64 << 10;

/// The file name of the segment whose first entry is `first`.
pub(crate) fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The path of the segment whose first entry is `first`.
pub(crate) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_name(first))
}

/// The first index of every segment in `dir`, in order. Files that are not segments are left
/// alone (with a warning unless they are the meta file).
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut firsts = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(path = %item.path().display(), "ignoring a file with a non-UTF-8 name in the WAL directory");
            continue;
        };
        if name == META || name == META_TMP {
            continue;
        }
        match name.strip_suffix(SUFFIX).filter(|stem| stem.len() == 20).and_then(|stem| stem.parse::<u64>().ok()) {
            Some(first) => firsts.push(first),
            None => tracing::warn!(path = %item.path().display(), "ignoring a file that is not a WAL segment"),
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Makes the creation, removal or renaming of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates (or empties) the segment file whose first entry is `first` and makes its existence
/// durable.
pub(crate) fn create_segment(dir: &Path, first: u64) -> Result<File, Error> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(segment_path(dir, first))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Opens an existing segment for writing.
pub(crate) fn open_segment(dir: &Path, first: u64) -> Result<File, Error> {
    Ok(OpenOptions::new().read(true).write(true).open(segment_path(dir, first))?)
}

/// Removes the segments `firsts`, in the order given, syncing the directory after each removal so
/// that a crash part-way leaves the segments that remain contiguous (callers remove from the
/// ends: oldest first for a purge, newest first for a truncation). A segment already gone is
/// fine.
pub(crate) fn remove_segments(dir: &Path, firsts: &[u64]) -> Result<(), Error> {
    for &first in firsts {
        match std::fs::remove_file(segment_path(dir, first)) {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Cuts the segment `first` to `len` bytes and syncs it.
pub(crate) fn cut_segment(dir: &Path, first: u64, len: u64) -> Result<(), Error> {
    let file = open_segment(dir, first)?;
    file.set_len(len)?;
    file.sync_all()?;
    Ok(())
}

/// Checks and decodes `bytes`, the record of entry `index` at `offset` in the segment at `path`.
pub(crate) fn decode_record(path: &Path, offset: u64, bytes: &[u8], index: u64) -> Result<Entry<TypeConfig>, Error> {
    let corrupt = |why: &dyn std::fmt::Display| Error::Corrupt(format!("{} at byte {offset}: {why}", path.display()));
    let Some((head, payload)) = bytes.split_first_chunk::<{ HEADER_LEN as usize }>() else {
        return Err(corrupt(&Invalid::Short));
    };
    let (len, crc) = record::parse_header(*head, payload.len() as u64).map_err(|e| corrupt(&e))?;
    if len as usize != payload.len() {
        return Err(corrupt(&"record length differs from the index"));
    }
    let entry = record::decode_payload(payload, crc).map_err(|e| corrupt(&e))?;
    if entry.log_id.index != index {
        return Err(corrupt(&format_args!("entry has index {}, expected {index}", entry.log_id.index)));
    }
    Ok(entry)
}

/// The outcome of scanning one segment.
pub(crate) struct Scan {
    /// Bytes of valid records from the start of the file.
    pub(crate) valid_len: u64,
    /// The file's length.
    pub(crate) file_len: u64,
    /// The offset of the first invalid record and why it is invalid, if the valid records do not
    /// reach the end of the file.
    pub(crate) invalid: Option<(u64, String)>,
}

/// Reads segment `first` from the start, handing each valid entry (with its offset and record
/// length) to `found`, until the end of the file or the first invalid record. Entries must carry
/// consecutive indexes starting at `first`; an entry with another index is invalid.
pub(crate) fn scan_segment(
    dir: &Path,
    first: u64,
    mut found: impl FnMut(Entry<TypeConfig>, u64, u32),
) -> Result<Scan, Error> {
    let path = segment_path(dir, first);
    let file = File::open(&path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut expected = first;
    let invalid = loop {
        match record::read_record(&mut reader, file_len - offset)? {
            Ok(None) => break None,
            Ok(Some((entry, len))) => {
                if entry.log_id.index != expected {
                    break Some((offset, format!("entry has index {}, expected {expected}", entry.log_id.index)));
                }
                found(entry, offset, len as u32);
                offset += len;
                expected = expected.saturating_add(1);
            }
            Err(e) => break Some((offset, e.to_string())),
        }
    };
    Ok(Scan { valid_len: offset, file_len, invalid })
}

/// What the meta file holds: the vote, the last committed log id known to be covered by durable
/// entries, and the purge point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The last vote saved.
    pub(crate) vote: Option<Vote<NodeId>>,
    /// The last committed log id saved (lazily).
    pub(crate) committed: Option<LogId>,
    /// Every entry up to this one is purged.
    pub(crate) last_purged: Option<LogId>,
}

/// Reads the meta file of `dir`; the default if there is none. A leftover temporary file from
/// an interrupted replacement is removed.
pub(crate) fn read_meta(dir: &Path) -> Result<Meta, Error> {
    match std::fs::remove_file(dir.join(META_TMP)) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let path = dir.join(META);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > META_MAX => {
            return Err(Error::Corrupt(format!(
                "{} at byte 0: {} bytes, a meta file is small",
                path.display(),
                m.len()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(e.into()),
    }
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |why: &dyn std::fmt::Display| Error::Corrupt(format!("{} at byte 0: {why}", path.display()));
    if bytes.len() < HEADER_LEN as usize {
        return Err(corrupt(&Invalid::Short));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    header.copy_from_slice(&bytes[..HEADER_LEN as usize]);
    let (len, crc) = record::parse_header(header, bytes.len() as u64 - HEADER_LEN).map_err(|e| corrupt(&e))?;
    let payload = &bytes[HEADER_LEN as usize..];
    if payload.len() != len as usize {
        return Err(corrupt(&"length differs from the file's"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(&Invalid::Checksum));
    }
    decode(payload).map_err(|e| corrupt(&e))
}

/// Replaces the meta file of `dir` atomically and durably: write a temporary file, sync it,
/// rename it over the old one, sync the directory.
pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> Result<(), Error> {
    let payload = encode(meta)?;
    let mut bytes = Vec::with_capacity(payload.len() + HEADER_LEN as usize);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(META_TMP);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(META))?;
    sync_dir(dir)
}
