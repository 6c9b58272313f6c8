//! The digest index of an eventual keyspace, summarised as a three-level hash tree for
//! anti-entropy.
//!
//! Every key falls into one of 65,536 leaf buckets by the first two bytes of its SHA-256; the
//! first byte names one of 256 middle buckets. An entry contributes `H(key, digest)` (16 bytes of
//! SHA-256 over the key and its value digest) and a bucket's hash is the XOR of its entries'
//! contributions, a middle bucket's the XOR of its 256 leaves, the root the XOR of everything.
//! XOR makes every update O(1): a write XORs the old contribution out and the new one in, at all
//! three levels, whatever order concurrent writes land in. The sled digest tree keys entries by
//! `bucket ++ key`, so the entries of one leaf are one range scan.
//!
//! Two replicas reconcile by comparing roots, then the 256 middle hashes, then the leaves under
//! differing middles, then the keys of differing leaves: for `d` differences that costs about
//! `16 + 4 KiB + d × (4 KiB + keys per leaf × (key + 16 bytes))` before the differing entries
//! themselves, independent of the keyspace size up to a few million keys (where leaves start to
//! hold many keys each).

use sha2::{Digest as _, Sha256};

/// Length of a digest and of a bucket hash.
pub const HASH_LEN: usize = 16;
/// A value digest or a bucket hash.
pub type Hash = [u8; HASH_LEN];
/// Number of leaf buckets.
pub const LEAVES: usize = 1 << 16;
/// Number of middle buckets (leaves per middle bucket is the same number).
pub const MIDS: usize = 256;

/// The leaf bucket of a key.
pub fn bucket(key: &[u8]) -> u16 {
    let hash = Sha256::digest(key);
    u16::from_be_bytes([hash[0], hash[1]])
}

/// A key's entry in the digest tree: its bucket, big-endian, then the key.
pub(crate) fn digest_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    out.extend_from_slice(&bucket(key).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// What an entry contributes to its bucket's hash.
fn contribution(key: &[u8], digest: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_be_bytes());
    hasher.update(key);
    hasher.update(digest);
    let full = hasher.finalize();
    let mut out = [0; HASH_LEN];
    out.copy_from_slice(&full[..HASH_LEN]);
    out
}

fn xor(into: &mut Hash, with: &Hash) {
    for (a, b) in into.iter_mut().zip(with) {
        *a ^= b;
    }
}

/// Bytes of one middle bucket's block of leaf hashes.
pub(crate) const LEAF_BLOCK_BYTES: usize = MIDS * HASH_LEN;

/// The bucket hashes of one keyspace, kept in memory and rebuilt from the digest tree on open.
/// A middle bucket's 256 leaf hashes are allocated when a key first falls under it, so a small
/// keyspace takes a few KiB and a large one at most 1 MiB.
pub(crate) struct Merkle {
    leaves: Vec<Option<Box<[Hash; MIDS]>>>,
    mids: Vec<Hash>,
    root: Hash,
}

impl Merkle {
    pub(crate) fn new() -> Self {
        Self { leaves: (0..MIDS).map(|_| None).collect(), mids: vec![[0; HASH_LEN]; MIDS], root: [0; HASH_LEN] }
    }

    /// Bytes the hash tree holds: the middle hashes and the leaf blocks allocated so far.
    pub(crate) fn bytes(&self) -> usize {
        LEAF_BLOCK_BYTES + self.leaves.iter().flatten().count() * LEAF_BLOCK_BYTES
    }

    /// Records that `key`'s digest changed from `old` to `new` (`None`: absent); returns the
    /// bytes newly allocated for it (a leaf block, or nothing).
    pub(crate) fn update(&mut self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) -> usize {
        let mut delta = [0; HASH_LEN];
        if let Some(old) = old {
            xor(&mut delta, &contribution(key, old));
        }
        if let Some(new) = new {
            xor(&mut delta, &contribution(key, new));
        }
        let leaf = usize::from(bucket(key));
        let block = &mut self.leaves[leaf >> 8];
        let allocated = if block.is_none() { LEAF_BLOCK_BYTES } else { 0 };
        let block = block.get_or_insert_with(|| Box::new([[0; HASH_LEN]; MIDS]));
        xor(&mut block[leaf & 0xff], &delta);
        xor(&mut self.mids[leaf >> 8], &delta);
        xor(&mut self.root, &delta);
        allocated
    }

    pub(crate) fn root(&self) -> Hash {
        self.root
    }

    pub(crate) fn mids(&self) -> Vec<Hash> {
        self.mids.clone()
    }

    /// The 256 leaf hashes under middle bucket `mid`.
    pub(crate) fn leaves(&self, mid: u8) -> Vec<Hash> {
        match &self.leaves[usize::from(mid)] {
            Some(block) => block.to_vec(),
            None => vec![[0; HASH_LEN]; MIDS],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_blocks_are_allocated_as_keys_fall_under_them_up_to_one_mib() {
        let mut m = Merkle::new();
        assert_eq!(m.bytes(), LEAF_BLOCK_BYTES);
        assert_eq!(m.update(b"key", None, Some(b"d")), LEAF_BLOCK_BYTES);
        assert_eq!(m.update(b"key", Some(b"d"), Some(b"e")), 0, "same block");
        assert_eq!(m.bytes(), 2 * LEAF_BLOCK_BYTES);
        let mut grown = m.bytes();
        for i in 0..20_000u32 {
            grown += m.update(&i.to_be_bytes(), None, Some(b"d"));
        }
        assert_eq!(grown, m.bytes());
        assert_eq!(m.bytes() as u64, crate::budget::DIGEST_TREE_BYTES - HASH_LEN as u64);
        // An untouched block reads as zeros.
        let empty = Merkle::new();
        assert_eq!(empty.leaves(7), vec![[0; HASH_LEN]; MIDS]);
    }

    #[test]
    fn xor_hashes_do_not_depend_on_order_and_removals_cancel() {
        let (mut a, mut b) = (Merkle::new(), Merkle::new());
        a.update(b"k1", None, Some(b"d1"));
        a.update(b"k2", None, Some(b"d2"));
        a.update(b"k1", Some(b"d1"), Some(b"d3"));
        b.update(b"k2", None, Some(b"d2"));
        b.update(b"k1", None, Some(b"d3"));
        assert_eq!(a.root(), b.root());
        assert_eq!(a.mids(), b.mids());
        a.update(b"k1", Some(b"d3"), None);
        a.update(b"k2", Some(b"d2"), None);
        assert_eq!(a.root(), [0; HASH_LEN]);
        assert!(a.mids().iter().all(|h| *h == [0; HASH_LEN]));
    }

    #[test]
    fn a_change_shows_at_every_level_of_its_bucket_only() {
        let mut m = Merkle::new();
        m.update(b"key", None, Some(b"digest"));
        let leaf = bucket(b"key");
        let mid = (leaf >> 8) as u8;
        assert_ne!(m.root(), [0; HASH_LEN]);
        let mids = m.mids();
        assert_eq!(mids.iter().filter(|h| **h != [0; HASH_LEN]).count(), 1);
        assert_ne!(mids[usize::from(mid)], [0; HASH_LEN]);
        let leaves = m.leaves(mid);
        assert_eq!(leaves.iter().filter(|h| **h != [0; HASH_LEN]).count(), 1);
        assert_ne!(leaves[usize::from(leaf & 0xff)], [0; HASH_LEN]);
        assert_eq!(&digest_key(b"key")[..2], &leaf.to_be_bytes());
    }
}
