//! The change log of eventual keyspaces: reading it, locating stream positions in it, and
//! trimming it.

use serde::{Deserialize, Serialize};

use super::{lock, Eventual, SpaceId, TRIMMED, TRIMMED_SEEN};
use crate::error::decode;
use crate::keycode::{decode_u64, encode_u64};
use crate::Error;

/// One change-log record: a key's new state after a write or a merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The keyspace.
    pub space: SpaceId,
    /// The key.
    pub key: Vec<u8>,
    /// The key's whole state after the change.
    pub state: Vec<u8>,
    /// Whether this node originated the change (a client write here) rather than merging a
    /// peer's state. Push streams carry only local changes.
    pub local: bool,
    /// Where the change stands in this node's change stream ([`super::Put::seen`]); empty in records
    /// written before stream positions were kept.
    pub seen: Vec<u8>,
}

/// The borrowed twin of [`Record`], for encoding without copies.
#[derive(Serialize)]
pub(super) struct RecordRef<'a> {
    pub(super) space: &'a SpaceId,
    pub(super) key: &'a [u8],
    pub(super) state: &'a [u8],
    pub(super) local: bool,
    pub(super) seen: &'a [u8],
}

/// A change-log record as written before records carried [`Record::seen`].
#[derive(Deserialize)]
struct RecordWithoutSeen {
    space: SpaceId,
    key: Vec<u8>,
    state: Vec<u8>,
    local: bool,
}

impl Record {
    /// Decodes a stored record, of either layout.
    pub(super) fn decode(bytes: &[u8]) -> Result<Record, Error> {
        decode::<Record>(bytes).or_else(|_| {
            let old: RecordWithoutSeen = decode(bytes)?;
            Ok(Record { space: old.space, key: old.key, state: old.state, local: old.local, seen: Vec::new() })
        })
    }
}

impl Eventual {
    /// Change-log records with sequence in `(after, upto]`, at most `max` of them and about
    /// `max_bytes` of states (at least one record when there is one).
    pub fn changes(&self, after: u64, upto: u64, max: usize, max_bytes: usize) -> Result<Vec<(u64, Record)>, Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        if upto <= after {
            return Ok(out);
        }
        for item in self.inner.changes.range(encode_u64(after + 1)..=encode_u64(upto)) {
            if out.len() >= max || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (k, v) = item?;
            bytes += v.len();
            out.push((decode_u64(&k)?, Record::decode(&v)?));
        }
        Ok(out)
    }

    /// The sequence of the last change whose stream position ([`Record::seen`]) is at or below
    /// `cursor`, when the change log can tell: every later change is above it. `None` when the
    /// records that would decide it were trimmed (or predate stream positions).
    pub fn locate(&self, cursor: &[u8]) -> Result<Option<u64>, Error> {
        let trimmed = self.trimmed()?;
        if trimmed > 0 {
            let seen = self.inner.meta.get(TRIMMED_SEEN)?;
            if seen.is_none_or(|seen| seen.is_empty() || seen.as_ref() > cursor) {
                return Ok(None);
            }
        }
        // Positions grow with the sequence: find the last one at or below the cursor.
        let (mut low, mut high) = (trimmed, self.committed());
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let seen = match self.inner.changes.get(encode_u64(mid))? {
                Some(v) => Record::decode(&v)?.seen,
                // Trimmed meanwhile.
                None => return Ok(None),
            };
            if seen.is_empty() {
                return Ok(None);
            }
            if seen.as_slice() <= cursor {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(Some(low))
    }

    /// The last committed sequence and a stream position issued by `stamp` under the commit
    /// lock: every change after that sequence gets a position above it, when positions are
    /// issued as [`Put::seen`] says.
    pub fn position(&self, stamp: impl FnOnce() -> Vec<u8>) -> Result<(u64, Vec<u8>), Error> {
        let last = lock(&self.inner.commit)?;
        Ok((*last, stamp()))
    }

    /// The highest sequence trimmed from the change log (0: none).
    pub fn trimmed(&self) -> Result<u64, Error> {
        match self.inner.meta.get(TRIMMED)? {
            Some(b) => decode_u64(&b),
            None => Ok(0),
        }
    }

    /// The oldest sequence still in the change log, if any.
    pub fn first_change(&self) -> Result<Option<u64>, Error> {
        match self.inner.changes.first()? {
            Some((k, _)) => Ok(Some(decode_u64(&k)?)),
            None => Ok(None),
        }
    }

    /// Removes change-log records up to and including `upto`.
    pub fn trim_changes(&self, upto: u64) -> Result<usize, Error> {
        let upto = upto.min(self.committed());
        let trimmed = self.trimmed()?;
        if upto <= trimmed {
            return Ok(0);
        }
        // The stream position of the last record trimmed, so a watch can still tell whether a
        // cursor lies before or after the trimmed part.
        let seen = match self.inner.changes.get(encode_u64(upto))? {
            Some(v) => Record::decode(&v)?.seen,
            None => Vec::new(),
        };
        self.inner.meta.insert(TRIMMED_SEEN, seen)?;
        self.inner.meta.insert(TRIMMED, &encode_u64(upto))?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in self.inner.changes.range(..=encode_u64(upto)).keys() {
            batch.remove(key?);
            n += 1;
        }
        self.inner.changes.apply_batch(batch)?;
        Ok(n)
    }
}
