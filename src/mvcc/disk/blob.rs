//! The checkpoint blob: what the store keeps in the B+tree's meta page.
//!
//! Owns: the encoding of the applied index, the store's counters, its
//! compaction state and the caller's extra bytes into the meta page blob
//! (at most `META_BLOB_BYTES_MAX`, 1024 bytes). Never touches: the tree.
//!
//! # Encoding (format version 1, integers little-endian)
//!
//! | size | field                                                   |
//! |------|---------------------------------------------------------|
//! | 4    | magic `MVC1`                                            |
//! | 8    | applied index (the caller's)                            |
//! | 8    | live keys                                               |
//! | 8    | stored keys (keys with any version)                     |
//! | 8    | size bytes (see `DiskStore::size_bytes`)                |
//! | 8    | highest compaction revision requested (i64)             |
//! | 8    | target of the compaction in progress, 0 for none (i64)  |
//! | 2    | extra length                                            |
//! | n    | the caller's extra bytes                                |
//!
//! An empty blob (a file just created, before its first checkpoint) is the
//! empty store at applied index 0.

use crate::btree::META_BLOB_BYTES_MAX;

const MAGIC: [u8; 4] = *b"MVC1";
/// Bytes before the caller's extra bytes.
const HEADER_BYTES: usize = 4 + 6 * 8 + 2;
/// The most extra bytes a checkpoint can carry.
pub const EXTRA_BYTES_MAX: usize = META_BLOB_BYTES_MAX - HEADER_BYTES;

/// The store's state that a checkpoint records besides the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob {
    /// The caller's applied index.
    pub applied_index: u64,
    /// Keys whose newest version is a put.
    pub live_keys: u64,
    /// Keys with any stored version.
    pub stored_keys: u64,
    /// See `DiskStore::size_bytes`.
    pub size_bytes: u64,
    /// The highest revision a compaction was requested at.
    pub compacted: i64,
    /// The target of the unfinished compaction, 0 for none.
    pub pending: i64,
    /// The caller's bytes.
    pub extra: Vec<u8>,
}

/// Why blob bytes are not one this module wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadBlob {
    /// Wrong magic.
    #[error("not an MVCC checkpoint blob (magic)")]
    Magic,
    /// Shorter than its fields, or a length past the end.
    #[error("checkpoint blob truncated")]
    Truncated,
    /// Bytes after the extra bytes.
    #[error("checkpoint blob with trailing bytes")]
    Trailing,
}

impl Blob {
    /// The encoding; `None` if the extra bytes do not fit.
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.extra.len() > EXTRA_BYTES_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + self.extra.len());
        out.extend_from_slice(&MAGIC);
        for v in [self.applied_index, self.live_keys, self.stored_keys, self.size_bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.compacted, self.pending] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.extra.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.extra);
        Some(out)
    }

    /// Decodes a blob; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Blob, BadBlob> {
        if bytes.is_empty() {
            return Ok(Blob::default());
        }
        let (magic, mut rest) = bytes.split_first_chunk::<4>().ok_or(BadBlob::Truncated)?;
        if *magic != MAGIC {
            return Err(BadBlob::Magic);
        }
        let mut u64s = [0u64; 6];
        for v in &mut u64s {
            let (b, after) = rest.split_first_chunk::<8>().ok_or(BadBlob::Truncated)?;
            *v = u64::from_le_bytes(*b);
            rest = after;
        }
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(BadBlob::Truncated)?;
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len {
            return Err(BadBlob::Truncated);
        }
        if rest.len() > len {
            return Err(BadBlob::Trailing);
        }
        let [applied_index, live_keys, stored_keys, size_bytes, compacted, pending] = u64s;
        Ok(Blob {
            applied_index,
            live_keys,
            stored_keys,
            size_bytes,
            compacted: compacted as i64,
            pending: pending as i64,
            extra: rest.to_vec(),
        })
    }
}

/// Decodes arbitrary bytes as a checkpoint blob (fuzz entry point); never
/// panics.
pub fn fuzz_blob(bytes: &[u8]) {
    if let Ok(blob) = Blob::decode(bytes) {
        let _ = blob.encode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_the_largest_fits_the_meta_page() {
        let blob = Blob {
            applied_index: 9,
            live_keys: 1,
            stored_keys: 2,
            size_bytes: 3,
            compacted: -1,
            pending: 5,
            extra: vec![7; EXTRA_BYTES_MAX],
        };
        let bytes = blob.encode().unwrap();
        assert_eq!(bytes.len(), META_BLOB_BYTES_MAX);
        assert_eq!(Blob::decode(&bytes), Ok(blob.clone()));
        for cut in 1..bytes.len() {
            assert!(Blob::decode(&bytes[..cut]).is_err());
        }
        assert_eq!(Blob::decode(&[]), Ok(Blob::default()));
        let too_big = Blob { extra: vec![0; EXTRA_BYTES_MAX + 1], ..blob };
        assert_eq!(too_big.encode(), None);
    }
}
