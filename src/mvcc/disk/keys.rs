//! Tree keys: one B+tree key per version, ordered by user key, then newest
//! revision first.
//!
//! Owns: the encoding of (user key, revision) into tree keys and back.
//! Never touches: values, pages or the tree.
//!
//! # Encoding (format version 1)
//!
//! ```text
//! short key (len <= SHORT_KEY_BYTES_MAX): esc(key)      00 00  !main(8) !sub(8)
//! long key  (longer):                     esc(key[..P]) 00 01  !main(8) !sub(8)
//! ```
//!
//! `esc` writes every byte as is except 0x00, which becomes `00 FF`. So a
//! 0x00 in an escaped key is always followed by 0xFF, and the terminators
//! `00 00` and `00 01` never occur inside `esc(..)`: the part up to and
//! including the terminator (the *slot prefix*) is prefix-free, and slot
//! prefixes sort exactly as their user keys do as raw bytes (a key that is
//! a prefix of another ends in `00 00`, which sorts below both `00 FF` and
//! any non-zero byte). `!main`, `!sub` are the revision's halves with the
//! sign bit flipped (so signed order is byte order) and every bit inverted,
//! big-endian: the versions of one key sort newest first, and a forward
//! seek to `prefix + !(rev, i64::MAX)` lands on the newest version with
//! `main <= rev`.
//!
//! A tree key is at most `KEY_BYTES_MAX` (1000) bytes, and etcd keys can be
//! far longer. A key longer than `SHORT_KEY_BYTES_MAX` (480) bytes is
//! *long*: its tree key is its *group* prefix (the escaped first 480 bytes
//! and `00 01`) and its revision, and the full key goes in the value. All
//! long keys that share their first 480 bytes form one group; they sort
//! after the short key equal to those 480 bytes (terminator `00 01` >
//! `00 00`) and before every other key, as their user keys do, because every
//! key that extends those 480 bytes is long. Within a group versions are
//! ordered by revision only (revisions are unique per write, so tree keys
//! stay unique), and readers load and sort a group as a whole (read.rs).
//! Worst case: 2 × 480 + 2 + 16 = 978 bytes.

use crate::btree::KEY_BYTES_MAX;
use crate::mvcc::Rev;

/// Longest user key stored under its own slot prefix; longer keys share a
/// group per first `SHORT_KEY_BYTES_MAX` bytes.
pub const SHORT_KEY_BYTES_MAX: usize = 480;
/// Bytes of the encoded revision after the slot prefix.
pub(crate) const REV_BYTES: usize = 16;
/// The escape byte, and what follows it for a 0x00 of the user key.
const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
/// After `ESCAPE`: the end of a short key's slot prefix.
const END_SHORT: u8 = 0x00;
/// After `ESCAPE`: the end of a long-key group's slot prefix.
const END_GROUP: u8 = 0x01;

const _: () = assert!(2 * SHORT_KEY_BYTES_MAX + 2 + REV_BYTES <= KEY_BYTES_MAX);

/// Sorts after every tree key of a slot when appended to its prefix (a
/// version is `REV_BYTES` long; this is one byte longer and all 0xFF).
const PAST_SLOT: [u8; REV_BYTES + 1] = [0xFF; REV_BYTES + 1];

/// Whether a user key is stored in a long-key group.
pub fn is_long(key: &[u8]) -> bool {
    key.len() > SHORT_KEY_BYTES_MAX
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// The versions of one short user key.
    Short,
    /// The versions of every long key with one 480-byte prefix.
    Group,
}

/// The slot prefix of `key`: its own (short) or its group's (long).
pub fn slot_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len().min(SHORT_KEY_BYTES_MAX) + 2 + REV_BYTES);
    push_slot_prefix(&mut out, key);
    out
}

/// Appends the slot prefix of `key` to `out`.
pub fn push_slot_prefix(out: &mut Vec<u8>, key: &[u8]) {
    let (part, end) = if is_long(key) { (&key[..SHORT_KEY_BYTES_MAX], END_GROUP) } else { (key, END_SHORT) };
    for chunk in part.split_inclusive(|&b| b == 0) {
        match chunk.split_last() {
            Some((&0, head)) => {
                out.extend_from_slice(head);
                out.extend_from_slice(&[ESCAPE, ESCAPED_ZERO]);
            }
            _ => out.extend_from_slice(chunk),
        }
    }
    out.extend_from_slice(&[ESCAPE, end]);
}

/// The eight bytes of one half of a revision: sign flipped, inverted,
/// big-endian, so a larger value sorts first.
fn inverted(v: i64) -> [u8; 8] {
    (!((v as u64) ^ (1 << 63))).to_be_bytes()
}

fn uninverted(bytes: [u8; 8]) -> i64 {
    ((!u64::from_be_bytes(bytes)) ^ (1 << 63)) as i64
}

/// The encoded revision.
pub fn rev_bytes(rev: Rev) -> [u8; REV_BYTES] {
    let mut out = [0; REV_BYTES];
    out[..8].copy_from_slice(&inverted(rev.main));
    out[8..].copy_from_slice(&inverted(rev.sub));
    out
}

/// The tree key of `key`'s version at `rev`.
pub fn tree_key(key: &[u8], rev: Rev) -> Vec<u8> {
    let mut out = slot_prefix(key);
    out.extend_from_slice(&rev_bytes(rev));
    out
}

/// The tree key a forward seek starts from to land on the newest version
/// in the slot with `main <= rev`.
pub fn seek_at(prefix: &[u8], rev: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + REV_BYTES);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&rev_bytes(Rev { main: rev, sub: i64::MAX }));
    out
}

/// A key greater than every tree key of the slot and smaller than every
/// tree key of the slots after it.
pub fn past_slot(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + PAST_SLOT.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&PAST_SLOT);
    out
}

/// A tree key taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The slot prefix (terminator included).
    pub prefix: &'a [u8],
    /// Short key or long-key group.
    pub kind: SlotKind,
    /// The version's revision.
    pub rev: Rev,
}

/// Why a tree key is not one this module wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    /// No terminator, or one that is neither `00 00` nor `00 01`.
    #[error("no slot terminator")]
    NoTerminator,
    /// The revision part is not `REV_BYTES` long.
    #[error("revision of {0} bytes")]
    RevLength(usize),
    /// A short key longer than the bound, or a group prefix of another length.
    #[error("escaped key of the wrong length for its kind")]
    KeyLength,
}

/// Takes a tree key apart; never panics.
pub fn parse(key: &[u8]) -> Result<Parsed<'_>, BadKey> {
    let mut i = 0;
    let mut raw_len = 0usize;
    let (end, kind) = loop {
        let Some(at) = key.get(i..).and_then(|rest| rest.iter().position(|&b| b == ESCAPE)) else {
            return Err(BadKey::NoTerminator);
        };
        raw_len += at;
        i += at;
        match key.get(i + 1) {
            Some(&ESCAPED_ZERO) => {
                raw_len += 1;
                i += 2;
            }
            Some(&END_SHORT) => break (i + 2, SlotKind::Short),
            Some(&END_GROUP) => break (i + 2, SlotKind::Group),
            _ => return Err(BadKey::NoTerminator),
        }
    };
    let length_ok = match kind {
        SlotKind::Short => raw_len <= SHORT_KEY_BYTES_MAX,
        SlotKind::Group => raw_len == SHORT_KEY_BYTES_MAX,
    };
    if !length_ok {
        return Err(BadKey::KeyLength);
    }
    let (prefix, rest) = key.split_at(end);
    let rev: &[u8; REV_BYTES] = rest.try_into().map_err(|_| BadKey::RevLength(rest.len()))?;
    let (main, sub) = rev.split_at(8);
    let half = |b: &[u8]| -> Result<i64, BadKey> {
        let bytes: [u8; 8] = b.try_into().map_err(|_| BadKey::RevLength(rest.len()))?;
        Ok(uninverted(bytes))
    };
    Ok(Parsed { prefix, kind, rev: Rev { main: half(main)?, sub: half(sub)? } })
}

/// Takes arbitrary bytes apart as a tree key, and checks that what parses
/// re-encodes to the same bytes. Never panics on a decoding path (fuzz
/// entry point; the re-encoding check asserts the format's round trip).
pub fn fuzz_tree_key(bytes: &[u8]) {
    let Ok(parsed) = parse(bytes) else { return };
    let mut user = Vec::new();
    unescape_into(parsed.prefix, &mut user);
    let _ = rev_of(bytes, parsed.prefix.len());
    if parsed.kind == SlotKind::Short {
        assert_eq!(tree_key(&user, parsed.rev), bytes, "a parsed tree key re-encodes to its bytes");
    }
}

/// Whether `key` is a tree key of the slot `prefix` (a version of it).
pub fn in_slot(key: &[u8], prefix: &[u8]) -> bool {
    key.len() == prefix.len() + REV_BYTES && key.starts_with(prefix)
}

/// The revision of a tree key known to be in a slot of `prefix_len` bytes.
pub fn rev_of(key: &[u8], prefix_len: usize) -> Option<Rev> {
    let rev: &[u8; REV_BYTES] = key.get(prefix_len..)?.try_into().ok()?;
    let main: [u8; 8] = rev[..8].try_into().ok()?;
    let sub: [u8; 8] = rev[8..].try_into().ok()?;
    Some(Rev { main: uninverted(main), sub: uninverted(sub) })
}

/// Appends the user bytes of a slot prefix (terminator included) to `out`.
pub fn unescape_into(prefix: &[u8], out: &mut Vec<u8>) {
    let body = prefix.get(..prefix.len().saturating_sub(2)).unwrap_or(&[]);
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        out.push(b);
        if b == ESCAPE {
            // The 0xFF after an escaped zero.
            bytes.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![0, 0xFF],
            vec![1],
            vec![0xFF],
            vec![0xFF, 0],
            vec![0xFF, 0xFF],
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00b".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            b"a\xff".to_vec(),
        ];
        for fill in [0u8, 1, b'x', 0xFF] {
            for len in [SHORT_KEY_BYTES_MAX - 1, SHORT_KEY_BYTES_MAX, SHORT_KEY_BYTES_MAX + 1, 2000] {
                let mut k = vec![fill; len];
                keys.push(k.clone());
                k.push(0);
                keys.push(k.clone());
                *k.last_mut().unwrap() = 7;
                keys.push(k);
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    fn revs() -> Vec<Rev> {
        let mains = [0, 1, 2, 255, 256, i64::MAX - 1, i64::MAX];
        let subs = [0, 1, 300, i64::MAX];
        mains.iter().flat_map(|&main| subs.iter().map(move |&sub| Rev { main, sub })).collect()
    }

    #[test]
    fn slot_prefixes_sort_as_their_user_keys_and_groups_sit_where_their_keys_do() {
        let keys = keys();
        for a in &keys {
            for b in &keys {
                let (pa, pb) = (slot_prefix(a), slot_prefix(b));
                if pa == pb {
                    // Only long keys with one 480-byte prefix share a slot.
                    assert!(
                        a == b || (is_long(a) && is_long(b) && a[..SHORT_KEY_BYTES_MAX] == b[..SHORT_KEY_BYTES_MAX])
                    );
                    continue;
                }
                assert_eq!(a.cmp(b), pa.cmp(&pb), "{a:?} vs {b:?}");
                // Prefix-free: every version of one slot sorts on its side.
                for r in [Rev { main: 0, sub: 0 }, Rev { main: i64::MAX, sub: i64::MAX }] {
                    assert_eq!(a.cmp(b), tree_key(a, r).cmp(&tree_key(b, r)));
                    assert_eq!(a.cmp(b), past_slot(&pa).cmp(&tree_key(b, r)), "past_slot({a:?}) vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn versions_of_a_key_sort_newest_first_and_seek_at_lands_at_or_below() {
        let revs = revs();
        for key in [&b""[..], b"k\x00", &[9; 600]] {
            let prefix = slot_prefix(key);
            for &a in &revs {
                for &b in &revs {
                    assert_eq!(b.cmp(&a), tree_key(key, a).cmp(&tree_key(key, b)));
                }
                let seek = seek_at(&prefix, a.main);
                for &b in &revs {
                    assert_eq!(tree_key(key, b) >= seek, b.main <= a.main, "seek {a:?} version {b:?}");
                }
                assert!(tree_key(key, a) < past_slot(&prefix));
                assert!(tree_key(key, a) > prefix);
            }
        }
    }

    #[test]
    fn parse_inverts_tree_key() {
        for key in keys() {
            for rev in revs() {
                let tk = tree_key(&key, rev);
                assert!(tk.len() <= KEY_BYTES_MAX);
                let parsed = parse(&tk).unwrap();
                assert_eq!(parsed.rev, rev);
                assert_eq!(parsed.prefix, &slot_prefix(&key)[..]);
                assert!(in_slot(&tk, parsed.prefix));
                assert_eq!(rev_of(&tk, parsed.prefix.len()), Some(rev));
                let expected_kind = if is_long(&key) { SlotKind::Group } else { SlotKind::Short };
                assert_eq!(parsed.kind, expected_kind);
                let mut user = Vec::new();
                unescape_into(parsed.prefix, &mut user);
                assert_eq!(user, key[..key.len().min(SHORT_KEY_BYTES_MAX)]);
            }
        }
    }

    #[test]
    fn parse_rejects_what_it_did_not_write() {
        let bad: [&[u8]; 7] =
            [b"", b"abc", b"a\x00", b"a\x00\x02xxxxxxxxxxxxxxxx", b"a\x00\x00short", &[0, 0], &[0, 1, 0]];
        for key in bad {
            assert!(parse(key).is_err(), "{key:?}");
        }
        let mut group = vec![b'a'; 10];
        group.extend_from_slice(&[0, 1]);
        group.extend_from_slice(&[0; REV_BYTES]);
        assert_eq!(parse(&group), Err(BadKey::KeyLength));
    }
}
