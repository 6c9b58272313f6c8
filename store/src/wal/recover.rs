//! Recovery at open: the logical view rebuilt from the segment files and the meta file.
//!
//! Segments are read in order. In a closed segment any invalid record is corruption and stops
//! the open; in the last one the longest valid prefix is kept and the torn tail cut off.
//! Segments must be contiguous, and a purge interrupted by a crash is finished.

use std::collections::VecDeque;
use std::path::Path;

use super::segment::{self, Meta};
use super::{Loc, LogOptions, Seg, State};
use crate::Error;

/// Rebuilds the logical view from the files in `dir`.
pub(super) fn recover(dir: &Path, opts: &LogOptions, meta: Meta) -> Result<State, Error> {
    let firsts = segment::list_segments(dir)?;
    let mut state = State {
        segments: Vec::new(),
        first: firsts.first().copied().unwrap_or(0),
        locs: VecDeque::new(),
        cache: VecDeque::new(),
        cached_bytes: 0,
        seq: 0,
        written_seq: 0,
        committed: meta.committed,
        meta,
    };
    for (k, &first) in firsts.iter().enumerate() {
        let path = segment::segment_path(dir, first);
        let last = k + 1 == firsts.len();
        if k > 0 && first != state.next() {
            return Err(Error::Corrupt(format!(
                "{} at byte 0: segment starts at index {first}, but the segment before it ends before index {}",
                path.display(),
                state.next()
            )));
        }
        let mut pushed = Vec::new();
        let scan = segment::scan_segment(dir, first, |entry, offset, len| {
            pushed.push(Loc { segment: first, offset, len, log_id: entry.log_id });
            state.push_cache(entry, len as usize, 0, opts.cache_bytes);
        })?;
        state.locs.extend(pushed);
        if let Some((offset, why)) = scan.invalid {
            if !last {
                return Err(Error::Corrupt(format!("{} at byte {offset}: {why}", path.display())));
            }
            tracing::warn!(
                path = %path.display(),
                offset,
                dropped = scan.file_len - scan.valid_len,
                "WAL: cutting a torn tail off the last segment ({why})"
            );
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(scan.valid_len)?;
            file.sync_all()?;
        }
        state.segments.push(Seg { first, len: scan.valid_len });
    }
    // Finish an interrupted purge: drop purged entries, remove segments that hold nothing else.
    if let Some(purged) = state.meta.last_purged {
        let next = state.next();
        while state.locs.front().is_some_and(|l| l.log_id.index <= purged.index) {
            state.locs.pop_front();
        }
        state.uncache_upto(purged.index);
        let remove = state.drop_purged_segments(purged.index, next);
        segment::remove_segments(dir, &remove)?;
        match state.locs.front() {
            Some(l) if l.log_id.index > purged.index.saturating_add(1) => {
                return Err(Error::Corrupt(format!(
                    "{} at byte 0: the log resumes at index {} but is purged only up to {}",
                    segment::segment_path(dir, l.segment).display(),
                    l.log_id.index,
                    purged.index
                )));
            }
            Some(l) => state.first = l.log_id.index,
            None => state.first = purged.index.saturating_add(1),
        }
    }
    Ok(state)
}
