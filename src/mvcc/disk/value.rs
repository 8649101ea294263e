//! Tree values: one version's metadata and bytes.
//!
//! Owns: the encoding of a version (put or tombstone) into the tree value
//! stored under its tree key (keys.rs), and its checked decoding. Never
//! touches: the tree or pages.
//!
//! # Encoding (format version 1, integers little-endian)
//!
//! | size | field                                                        |
//! |------|--------------------------------------------------------------|
//! | 1    | kind: 0 put, 1 tombstone; bit 0x80: the full key follows      |
//! | 4+n  | long keys only: key length (u32) and the full user key       |
//! | 8    | put only: create revision (i64)                              |
//! | 8    | put only: version (i64)                                      |
//! | 8    | put only: lease (i64)                                        |
//! | rest | put only: the value                                          |
//!
//! A short key's tombstone is the single byte 1, so it is always stored
//! inline in its leaf, and a reader can tell a put from a tombstone by the
//! first byte without reading an overflow value (an overflow value of a
//! short key is always a put).

use crate::mvcc::PutVersion;

/// First byte: a put.
const KIND_PUT: u8 = 0;
/// First byte: a tombstone.
const KIND_TOMBSTONE: u8 = 1;
/// First-byte flag: the full user key follows (long keys).
const FLAG_FULL_KEY: u8 = 0x80;
/// Bytes of a put's metadata.
const PUT_META_BYTES: usize = 24;

/// A put's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutMeta {
    /// Main revision of the put that created the key.
    pub create_revision: i64,
    /// Puts since creation, 1 for the creating put.
    pub version: i64,
    /// Attached lease, 0 for none.
    pub lease: i64,
}

/// A decoded version, borrowing the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The full user key, for a long key.
    pub full_key: Option<&'a [u8]>,
    /// A put's metadata; `None` for a tombstone.
    pub put: Option<PutMeta>,
    /// A put's value (empty for a tombstone).
    pub value: &'a [u8],
}

impl Decoded<'_> {
    /// An owned put version, or `None` for a tombstone.
    pub fn to_put_version(self) -> Option<PutVersion> {
        self.put.map(|m| PutVersion {
            value: self.value.to_vec(),
            create_revision: m.create_revision,
            version: m.version,
            lease: m.lease,
        })
    }
}

/// Why stored value bytes are not a version this module wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// Empty, or shorter than its fields.
    #[error("value too short for its fields")]
    Truncated,
    /// An unknown kind byte.
    #[error("unknown version kind {0:#04x}")]
    Kind(u8),
    /// A tombstone with bytes after its fields.
    #[error("tombstone with trailing bytes")]
    Trailing,
    /// A long key's version without its full key, or with a key of another
    /// group.
    #[error("long-key version without the full key of its group")]
    FullKey,
}

/// Appends the encoding of a version to `out`: `put` is the metadata and
/// value of a put, `None` a tombstone; `full_key` is given for long keys.
pub fn encode_into(out: &mut Vec<u8>, full_key: Option<&[u8]>, put: Option<(PutMeta, &[u8])>) {
    let kind = if put.is_some() { KIND_PUT } else { KIND_TOMBSTONE };
    let flag = if full_key.is_some() { FLAG_FULL_KEY } else { 0 };
    out.push(kind | flag);
    if let Some(key) = full_key {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    if let Some((meta, value)) = put {
        out.extend_from_slice(&meta.create_revision.to_le_bytes());
        out.extend_from_slice(&meta.version.to_le_bytes());
        out.extend_from_slice(&meta.lease.to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// The encoding of a version (see [`encode_into`]).
pub fn encode(full_key: Option<&[u8]>, put: Option<(PutMeta, &[u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + full_key.map_or(0, |k| 4 + k.len()) + put.map_or(0, |(_, v)| 24 + v.len()));
    encode_into(&mut out, full_key, put);
    out
}

/// Whether stored bytes starting with `first` are a put (checks the kind).
pub fn is_put(first: Option<u8>) -> Result<bool, BadValue> {
    let first = first.ok_or(BadValue::Truncated)?;
    match first & !FLAG_FULL_KEY {
        KIND_PUT => Ok(true),
        KIND_TOMBSTONE => Ok(false),
        _ => Err(BadValue::Kind(first)),
    }
}

/// Decodes stored bytes; never panics.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, BadValue> {
    let (&first, mut rest) = bytes.split_first().ok_or(BadValue::Truncated)?;
    let put = is_put(Some(first))?;
    let full_key = if first & FLAG_FULL_KEY != 0 {
        let (len, after) = rest.split_first_chunk::<4>().ok_or(BadValue::Truncated)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| BadValue::Truncated)?;
        if after.len() < len {
            return Err(BadValue::Truncated);
        }
        let (key, after) = after.split_at(len);
        rest = after;
        Some(key)
    } else {
        None
    };
    if !put {
        if !rest.is_empty() {
            return Err(BadValue::Trailing);
        }
        return Ok(Decoded { full_key, put: None, value: &[] });
    }
    if rest.len() < PUT_META_BYTES {
        return Err(BadValue::Truncated);
    }
    let (meta, value) = rest.split_at(PUT_META_BYTES);
    let field = |i: usize| -> Result<i64, BadValue> {
        let bytes = meta.get(i * 8..i * 8 + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or(BadValue::Truncated)?;
        Ok(i64::from_le_bytes(bytes))
    };
    let meta = PutMeta { create_revision: field(0)?, version: field(1)?, lease: field(2)? };
    Ok(Decoded { full_key, put: Some(meta), value })
}

/// Decodes arbitrary bytes as a stored version and checks that what
/// decodes re-encodes to the same bytes (fuzz entry point: decoding never
/// panics; the assertion is the format's round trip).
pub fn fuzz_value(bytes: &[u8]) {
    if let Ok(decoded) = decode(bytes) {
        let again = encode(decoded.full_key, decoded.put.map(|m| (m, decoded.value)));
        assert_eq!(again, bytes, "a decoded value re-encodes to its bytes");
    }
    let _ = is_put(bytes.first().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_short_tombstones_are_one_byte() {
        let meta = PutMeta { create_revision: 3, version: 7, lease: -1 };
        let long = vec![0xAB; 700];
        for full_key in [None, Some(&b""[..]), Some(&long[..])] {
            for put in [None, Some((meta, &b""[..])), Some((meta, &b"value\x00"[..]))] {
                let bytes = encode(full_key, put);
                let d = decode(&bytes).unwrap();
                assert_eq!(d.full_key, full_key);
                assert_eq!(d.put, put.map(|(m, _)| m));
                assert_eq!(d.value, put.map_or(&b""[..], |(_, v)| v));
                assert_eq!(is_put(bytes.first().copied()), Ok(put.is_some()));
                fuzz_value(&bytes);
            }
        }
        assert_eq!(encode(None, None), vec![KIND_TOMBSTONE]);
    }

    #[test]
    fn decode_rejects_damage_without_panicking() {
        let meta = PutMeta { create_revision: 1, version: 1, lease: 0 };
        let good = encode(Some(b"key"), Some((meta, b"v")));
        for cut in 0..good.len() - 1 {
            if cut != 1 + 4 + 3 + 24 {
                assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
            }
            fuzz_value(&good[..cut]);
        }
        assert_eq!(decode(&[2]), Err(BadValue::Kind(2)));
        assert_eq!(decode(&[1, 0]), Err(BadValue::Trailing));
        assert_eq!(decode(&[0x80, 0xFF, 0xFF, 0xFF, 0xFF]), Err(BadValue::Truncated));
    }
}
