//! The snapshot format: the replicated state at one log index, as files.
//!
//! Owns: the byte formats of a snapshot's manifest and of its key-history
//! parts, and their defensive decoders. Sans-IO: the node writes, sends,
//! receives and reads the files (`node::snapshots`). Never knows Raft's
//! internals or shards' ranges: a part is a key-ordered run of key
//! histories, whichever shard wrote it, and any shard of any member (of any
//! core count) reads the keys it owns out of any part.
//!
//! A snapshot is a directory `member/snap/<index as 16 hex digits>/`:
//!
//! - `part-NNNN`: the key histories of one shard of the member that made
//!   it (every stored version, tombstones included), in key order.
//! - `global`: state every shard shares (revisions, leases, members),
//!   encoded by the node.
//! - `manifest`: written last; names the index, term and configuration,
//!   and every file with its length and CRC32C. It is also what Raft
//!   carries as the snapshot's data to a follower, which fetches the files
//!   over the snapshot stream and checks them against it.
//!
//! All integers are little-endian. Manifest: magic `corekvSN`, format
//! version u32, index u64, term u64, the configuration (four lists of u64
//! member IDs, each a u32 count, then auto-leave u8), the files (u32 count;
//! each: name as u16 length + bytes, length u64, CRC32C u32), and a CRC32C
//! of everything before it. A part is a sequence of histories: key length
//! u32, key, version count u32, and per version: main i64, sub i64, kind u8
//! (0 tombstone, 1 put), then for a put: create revision i64, version i64,
//! lease i64, value length u32, value.

use crate::mvcc::{KeyHistory, PutVersion, Rev, Version};
use crate::raft::Membership;
use crate::types::MemberId;

const MANIFEST_MAGIC: &[u8; 8] = b"corekvSN";
const FORMAT_VERSION: u32 = 1;
/// Bounds that no valid snapshot exceeds; a decoder refuses more.
const NAME_BYTES_MAX: usize = 255;
const FILES_MAX: usize = 65_536;
const MEMBERS_MAX: usize = 4096;
/// A key or value longer than this is corruption (etcd's requests are far
/// smaller).
pub const FIELD_BYTES_MAX: usize = 64 << 20;
/// Versions of one key beyond this are corruption.
const VERSIONS_MAX: usize = 1 << 28;

/// Why snapshot bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapError {
    /// The bytes end before the structure does.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// A field is out of range or inconsistent.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A checksum does not match.
    #[error("checksum mismatch: {0}")]
    Checksum(&'static str),
}

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Its name in the snapshot directory.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// CRC32C of its content.
    pub crc: u32,
}

/// What a snapshot is: where in the log, and which files hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The last log index it covers.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The configuration at `index`.
    pub membership: Membership,
    /// Its files, in the order they are sent.
    pub files: Vec<FileInfo>,
}

/// Reads little-endian fields from a byte slice, refusing to read past it.
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`; `what` names the structure in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], SnapError> {
        if self.bytes.len() < n {
            return Err(SnapError::Truncated(self.what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// A u8.
    pub fn u8(&mut self) -> Result<u8, SnapError> {
        Ok(self.take(1)?[0])
    }

    /// A u16.
    pub fn u16(&mut self) -> Result<u16, SnapError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// A u32.
    pub fn u32(&mut self) -> Result<u32, SnapError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u64.
    pub fn u64(&mut self) -> Result<u64, SnapError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// An i64.
    pub fn i64(&mut self) -> Result<i64, SnapError> {
        Ok(self.u64()? as i64)
    }

    /// A count (u32) of items of at least `min_item_bytes` each, at most
    /// `max`: refused when the bytes left cannot hold that many.
    pub fn count(&mut self, max: usize, min_item_bytes: usize) -> Result<usize, SnapError> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(min_item_bytes) > self.rest() {
            return Err(SnapError::Malformed(format!("{}: count {n} out of range", self.what)));
        }
        Ok(n)
    }

    /// A string with a u16 length of at most `max` bytes.
    pub fn str16(&mut self, max: usize) -> Result<String, SnapError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(SnapError::Malformed(format!("{}: string of {n} bytes", self.what)));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| SnapError::Malformed(format!("{}: not UTF-8", self.what)))
    }

    /// Refuses bytes left over.
    pub fn end(&self) -> Result<(), SnapError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(SnapError::Malformed(format!("{}: {} bytes after the end", self.what, self.bytes.len())))
        }
    }
}

/// Appends little-endian fields.
pub trait Put {
    /// A u16-length string (truncated to `u16::MAX` bytes; callers bound it).
    fn put_str16(&mut self, s: &str);
    /// A u32.
    fn put_u32(&mut self, n: u32);
    /// A u64.
    fn put_u64(&mut self, n: u64);
    /// An i64.
    fn put_i64(&mut self, n: i64);
}

impl Put for Vec<u8> {
    fn put_str16(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.extend_from_slice(&(b.len() as u16).to_le_bytes());
        self.extend_from_slice(b);
    }
    fn put_u32(&mut self, n: u32) {
        self.extend_from_slice(&n.to_le_bytes());
    }
    fn put_u64(&mut self, n: u64) {
        self.extend_from_slice(&n.to_le_bytes());
    }
    fn put_i64(&mut self, n: i64) {
        self.extend_from_slice(&n.to_le_bytes());
    }
}

fn put_ids(b: &mut Vec<u8>, ids: &[MemberId]) {
    b.put_u32(ids.len() as u32);
    for id in ids {
        b.put_u64(id.get());
    }
}

fn get_ids(r: &mut Reader<'_>) -> Result<Vec<MemberId>, SnapError> {
    let n = r.count(MEMBERS_MAX, 8)?;
    (0..n).map(|_| r.u64().map(MemberId)).collect()
}

impl Manifest {
    /// The manifest's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + self.files.len() * 32);
        b.extend_from_slice(MANIFEST_MAGIC);
        b.put_u32(FORMAT_VERSION);
        b.put_u64(self.index);
        b.put_u64(self.term);
        let m = &self.membership;
        for ids in [&m.voters, &m.learners, &m.voters_outgoing, &m.learners_next] {
            put_ids(&mut b, ids);
        }
        b.push(u8::from(m.auto_leave));
        b.put_u32(self.files.len() as u32);
        for f in &self.files {
            b.put_str16(&f.name);
            b.put_u64(f.bytes);
            b.put_u32(f.crc);
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32(crc);
        b
    }

    /// Decodes and checks a manifest. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, SnapError> {
        if bytes.len() < 4 {
            return Err(SnapError::Truncated("manifest"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let want = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32c::crc32c(body) != want {
            return Err(SnapError::Checksum("manifest"));
        }
        let mut r = Reader::new(body, "manifest");
        if r.take(8)? != MANIFEST_MAGIC {
            return Err(SnapError::Malformed("not a corekv snapshot manifest".into()));
        }
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(SnapError::Malformed(format!("format version {version}")));
        }
        let index = r.u64()?;
        let term = r.u64()?;
        let membership = Membership {
            voters: get_ids(&mut r)?,
            learners: get_ids(&mut r)?,
            voters_outgoing: get_ids(&mut r)?,
            learners_next: get_ids(&mut r)?,
            auto_leave: match r.u8()? {
                0 => false,
                1 => true,
                n => return Err(SnapError::Malformed(format!("auto-leave {n}"))),
            },
        };
        let n = r.count(FILES_MAX, 14)?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str16(NAME_BYTES_MAX)?;
            let safe = !name.is_empty()
                && name != "."
                && name != ".."
                && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
            if !safe {
                return Err(SnapError::Malformed(format!("file name {name:?}")));
            }
            files.push(FileInfo { name, bytes: r.u64()?, crc: r.u32()? });
        }
        r.end()?;
        if index == 0 {
            return Err(SnapError::Malformed("index 0".into()));
        }
        Ok(Manifest { index, term, membership, files })
    }
}

/// Appends one key history to a part.
pub fn encode_history(h: &KeyHistory, out: &mut Vec<u8>) {
    out.put_u32(h.key.len() as u32);
    out.extend_from_slice(&h.key);
    out.put_u32(h.versions.len() as u32);
    for v in &h.versions {
        out.put_i64(v.rev.main);
        out.put_i64(v.rev.sub);
        match &v.put {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                out.put_i64(p.create_revision);
                out.put_i64(p.version);
                out.put_i64(p.lease);
                out.put_u32(p.value.len() as u32);
                out.extend_from_slice(&p.value);
            }
        }
    }
}

/// Decodes a part fed in pieces of any size, history by history.
#[derive(Default)]
pub struct PartDecoder {
    buf: Vec<u8>,
    at: usize,
    last_key: Option<Vec<u8>>,
}

impl PartDecoder {
    /// Adds the next bytes of the part.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at >= self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete history, if the bytes so far hold one.
    pub fn next_history(&mut self) -> Result<Option<KeyHistory>, SnapError> {
        let mut r = Reader::new(&self.buf[self.at..], "part");
        let h = match decode_history(&mut r) {
            Ok(h) => h,
            Err(SnapError::Truncated(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let used = self.buf.len() - self.at - r.rest();
        self.at += used;
        if self.last_key.as_ref().is_some_and(|k| *k >= h.key) {
            return Err(SnapError::Malformed("keys out of order".into()));
        }
        self.last_key = Some(h.key.clone());
        Ok(Some(h))
    }

    /// The part ended: refuses a partial history left over.
    pub fn finish(&self) -> Result<(), SnapError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(SnapError::Truncated("part ends inside a key history"))
        }
    }
}

fn decode_history(r: &mut Reader<'_>) -> Result<KeyHistory, SnapError> {
    let klen = r.u32()? as usize;
    if klen == 0 || klen > FIELD_BYTES_MAX {
        return Err(SnapError::Malformed(format!("key of {klen} bytes")));
    }
    let key = r.take(klen)?.to_vec();
    let n = r.u32()? as usize;
    if n == 0 || n > VERSIONS_MAX {
        return Err(SnapError::Malformed(format!("{n} versions")));
    }
    let mut versions = Vec::with_capacity(n.min(1024));
    let mut prev: Option<Rev> = None;
    for _ in 0..n {
        let rev = Rev { main: r.i64()?, sub: r.i64()? };
        if rev.main < 1 || rev.sub < 0 || prev.is_some_and(|p| p >= rev) {
            return Err(SnapError::Malformed(format!("version revision {rev:?} out of order")));
        }
        prev = Some(rev);
        let put = match r.u8()? {
            0 => None,
            1 => {
                let create_revision = r.i64()?;
                let version = r.i64()?;
                let lease = r.i64()?;
                let vlen = r.u32()? as usize;
                if vlen > FIELD_BYTES_MAX {
                    return Err(SnapError::Malformed(format!("value of {vlen} bytes")));
                }
                Some(PutVersion { value: r.take(vlen)?.to_vec(), create_revision, version, lease })
            }
            k => return Err(SnapError::Malformed(format!("version kind {k}"))),
        };
        versions.push(Version { rev, put });
    }
    Ok(KeyHistory { key, versions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(key: &str, n: i64) -> KeyHistory {
        let versions = (1..=n)
            .map(|i| Version {
                rev: Rev { main: i * 2, sub: i % 3 },
                put: (i % 4 != 0).then(|| PutVersion {
                    value: vec![i as u8; i as usize * 7],
                    create_revision: 2,
                    version: i,
                    lease: i * 11,
                }),
            })
            .collect();
        KeyHistory { key: key.as_bytes().to_vec(), versions }
    }

    #[test]
    fn manifests_round_trip_and_any_damage_is_refused() {
        let m = Manifest {
            index: 1234,
            term: 7,
            membership: Membership {
                voters: vec![MemberId(1), MemberId(9)],
                learners: vec![MemberId(4)],
                ..Membership::default()
            },
            files: vec![
                FileInfo { name: "part-0000".into(), bytes: 99, crc: 5 },
                FileInfo { name: "global".into(), bytes: 3, crc: 6 },
            ],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m.clone()));
        for cut in 0..b.len() {
            assert!(Manifest::decode(&b[..cut]).is_err(), "prefix of {cut} bytes");
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x40;
            assert!(Manifest::decode(&d).is_err(), "byte {i} flipped");
        }
        let evil = Manifest { files: vec![FileInfo { name: "../x".into(), bytes: 1, crc: 0 }], ..m };
        assert!(matches!(Manifest::decode(&evil.encode()), Err(SnapError::Malformed(_))));
    }

    #[test]
    fn parts_decode_from_pieces_of_any_size() {
        let hs = vec![history("a", 1), history("b\0x", 9), history("zz", 4)];
        let mut bytes = Vec::new();
        for h in &hs {
            encode_history(h, &mut bytes);
        }
        for step in [1, 2, 7, 64, bytes.len()] {
            let mut d = PartDecoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                d.push(chunk);
                while let Some(h) = d.next_history().expect("decodes") {
                    got.push(h);
                }
            }
            d.finish().expect("complete");
            assert_eq!(got, hs, "pieces of {step}");
        }
        // Cut short: the decoder says so at the end.
        let mut d = PartDecoder::default();
        d.push(&bytes[..bytes.len() - 3]);
        while d.next_history().expect("decodes").is_some() {}
        assert!(d.finish().is_err());
    }

    #[test]
    fn garbage_parts_are_refused_without_panicking() {
        let mut bytes = Vec::new();
        encode_history(&history("k", 3), &mut bytes);
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut d = bytes.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % d.len();
            d[i] = (seed >> 32) as u8;
            let mut dec = PartDecoder::default();
            dec.push(&d);
            let _ = dec.next_history();
        }
        // Keys out of order are refused.
        let mut two = Vec::new();
        encode_history(&history("b", 1), &mut two);
        encode_history(&history("a", 1), &mut two);
        let mut dec = PartDecoder::default();
        dec.push(&two);
        assert!(dec.next_history().expect("first").is_some());
        assert!(dec.next_history().is_err());
    }
}
