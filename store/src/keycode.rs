//! Order-preserving key encoding.
//!
//! Every sled key that Ledge builds from more than raw user bytes goes through this module, so
//! that sled's lexicographic byte order agrees with the logical order of the parts:
//!
//! - `u64` as 8 big-endian bytes: numeric order equals byte order (Raft log indexes, revisions).
//! - byte strings inside composite keys are escaped (`0x00` becomes `0x00 0xff`) and terminated
//!   by `0x00 0x00`, so a shorter string sorts before any longer string it prefixes and the next
//!   part of the key cannot bleed into the comparison.
//!
//! User keys of a KV keyspace are stored as they are: a keyspace tree holds nothing else, so their
//! raw byte order is already the order a scan returns.

use crate::Error;

/// Encodes a `u64` so that byte order equals numeric order.
pub fn encode_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Encodes two integers so that pairs sort by the first, then the second.
pub fn encode_u64_pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// Decodes [`encode_u64_pair`].
pub fn split_u64_pair(bytes: [u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    b.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

/// Decodes a key produced by [`encode_u64`].
pub fn decode_u64(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("expected an 8-byte integer key, got {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// Appends an escaped, terminated byte string to `out` (for composite keys).
pub fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0x00 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Decodes one byte string written by [`encode_bytes`] from the front of `input`, returning it
/// and the rest of the input.
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, &[u8]), Error> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match (input[i], input.get(i + 1)) {
            (0x00, Some(0x00)) => return Ok((out, &input[i + 2..])),
            (0x00, Some(0xff)) => {
                out.push(0x00);
                i += 2;
            }
            (0x00, _) => return Err(Error::Corrupt("invalid escape in encoded key".into())),
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err(Error::Corrupt("unterminated byte string in encoded key".into()))
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no such
/// key exists (the prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u64_order_is_byte_order(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), encode_u64(a).cmp(&encode_u64(b)));
            prop_assert_eq!(decode_u64(&encode_u64(a)).unwrap(), a);
        }

        #[test]
        fn bytes_order_is_preserved(a: Vec<u8>, b: Vec<u8>, ta: u64, tb: u64) {
            // A composite key (bytes, u64) sorts by the bytes first, then the integer.
            let mut ka = Vec::new();
            encode_bytes(&a, &mut ka);
            ka.extend_from_slice(&encode_u64(ta));
            let mut kb = Vec::new();
            encode_bytes(&b, &mut kb);
            kb.extend_from_slice(&encode_u64(tb));
            prop_assert_eq!((&a, ta).cmp(&(&b, tb)), ka.cmp(&kb));
            let (da, rest) = decode_bytes(&ka).unwrap();
            prop_assert_eq!(da, a);
            prop_assert_eq!(decode_u64(rest).unwrap(), ta);
        }

        #[test]
        fn prefix_end_bounds_the_prefix(prefix: Vec<u8>, suffix: Vec<u8>) {
            let mut key = prefix.clone();
            key.extend_from_slice(&suffix);
            if let Some(end) = prefix_end(&prefix) {
                prop_assert!(key < end);
                prop_assert!(prefix < end);
            }
        }
    }

    #[test]
    fn prefix_end_edges() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode_u64(b"abc").is_err());
        assert!(decode_bytes(b"abc").is_err());
        assert!(decode_bytes(&[0x00, 0x01]).is_err());
    }
}
