//! The record format: `[len u32 LE][crc32 u32 LE][payload]`, payload = bincode of an
//! `openraft::Entry<TypeConfig>`, crc32 (IEEE, `crc32fast`) over the payload.
//!
//! A length header above [`MAX_PAYLOAD`] is refused as corrupt before anything is allocated, so
//! a flipped bit in a header never turns into a multi-gigabyte allocation.

use std::io::Read;

use openraft::Entry;

use crate::command::TypeConfig;
use crate::error::{decode, encode};
use crate::Error;

/// Bytes before the payload: length and checksum.
pub(crate) const HEADER_LEN: u64 = 8;

/// The largest payload a record may have (80 MiB: one Raft entry holds at most a 1 MiB batch plus
/// one command of the largest `--max-request-bytes`, 64 MiB, with room to spare). Larger appends
/// are refused, larger length headers on disk are corruption.
pub(crate) const MAX_PAYLOAD: u64 = 80 << 20;

/// Encodes `entry` as one record appended to `out`; returns the record's length in bytes.
pub(crate) fn encode_into(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> Result<u32, Error> {
    let payload = encode(entry)?;
    if payload.len() as u64 > MAX_PAYLOAD {
        return Err(Error::InvalidInput(format!(
            "log entry {} encodes to {} bytes, more than the {} a WAL record may hold",
            entry.log_id.index,
            payload.len(),
            MAX_PAYLOAD
        )));
    }
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(len + HEADER_LEN as u32)
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug)]
pub(crate) enum Invalid {
    /// The file ends inside the header or the payload (a torn write, if in the last segment).
    Short,
    /// The length header exceeds [`MAX_PAYLOAD`].
    TooLong(u64),
    /// The payload does not match its checksum.
    Checksum,
    /// The payload is not a bincode entry.
    Undecodable(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Short => write!(f, "record runs past the end of the file"),
            Invalid::TooLong(len) => write!(f, "record length {len} exceeds the limit of {MAX_PAYLOAD}"),
            Invalid::Checksum => write!(f, "checksum mismatch"),
            Invalid::Undecodable(e) => write!(f, "undecodable entry: {e}"),
        }
    }
}

/// Parses a record header, checking the length against the cap and against `remaining`, the
/// bytes left in the file after the header. Returns the payload length and the checksum.
pub(crate) fn parse_header(header: [u8; HEADER_LEN as usize], remaining: u64) -> Result<(u32, u32), Invalid> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if u64::from(len) > MAX_PAYLOAD {
        return Err(Invalid::TooLong(u64::from(len)));
    }
    if u64::from(len) > remaining {
        return Err(Invalid::Short);
    }
    Ok((len, crc))
}

/// Checks a payload against its checksum and decodes it.
pub(crate) fn decode_payload(payload: &[u8], crc: u32) -> Result<Entry<TypeConfig>, Invalid> {
    if crc32fast::hash(payload) != crc {
        return Err(Invalid::Checksum);
    }
    decode(payload).map_err(|e| Invalid::Undecodable(e.to_string()))
}

/// A record read: the entry and the record's length, `None` at a clean end of file, or why the
/// bytes are not a record.
pub(crate) type ReadRecord = Result<Option<(Entry<TypeConfig>, u64)>, Invalid>;

/// Reads one record from `reader`, which has `remaining` bytes left. `Ok(None)` at a clean end
/// (no bytes left). I/O errors are returned as such; invalid bytes as [`Invalid`].
pub(crate) fn read_record(reader: &mut impl Read, remaining: u64) -> std::io::Result<ReadRecord> {
    if remaining == 0 {
        return Ok(Ok(None));
    }
    if remaining < HEADER_LEN {
        return Ok(Err(Invalid::Short));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let (len, crc) = match parse_header(header, remaining - HEADER_LEN) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    Ok(decode_payload(&payload, crc).map(|entry| Some((entry, HEADER_LEN + u64::from(len)))))
}
