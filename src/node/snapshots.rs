//! Snapshots on the node: what the shards and the sequencer write into a
//! snapshot directory, the state every shard shares (`global`), reading a
//! snapshot back at start, and the chunk format of the snapshot stream.
//! The formats of manifests and parts are `crate::snapshot`'s.
//!
//! Making one (every `--snapshot-count` applied entries, or when a
//! follower needs entries the log no longer has): the consensus loop picks
//! the last index it handed out, creates `snap/<index>.tmp/`, and queues a
//! [`SnapJob`] behind that entry on every shard. Each shard, at that point
//! of its apply order, writes its key histories to `part-NNNN` (fsynced)
//! and reports a [`PartDone`]. The loop then writes `global` and the
//! manifest, fsyncs, renames the directory to `snap/<index>/`, and only then
//! compacts the Raft log and releases the WAL segments the snapshot covers.
//! A crash before the rename leaves a `.tmp` directory that start-up
//! deletes; after it, the snapshot is whole (every file was fsynced first).
//!
//! Streaming one to a follower: the files go as chunks on the Snapshot
//! stream, in order, then Raft's MsgSnapshot, whose data is the manifest;
//! the follower checks every file's length and CRC against it before it
//! renames its copy into place and hands the message to Raft.

use std::path::{Path, PathBuf};

use super::members::{Member, MemberTable};
use crate::apply::command::Publish;
use crate::snapshot::{FileInfo, Manifest, Put, Reader, SnapError};
use crate::types::{ClusterId, MemberId, ShardId};

/// The `global` file's name in a snapshot directory.
pub const GLOBAL_FILE: &str = "global";
/// The manifest's name.
pub const MANIFEST_FILE: &str = "manifest";
/// Bytes per chunk on the snapshot stream and per read or write.
pub const CHUNK_BYTES: usize = 1 << 20;
/// A snapshot-stream message: a chunk of a file.
pub const STREAM_CHUNK: u8 = 1;
/// A snapshot-stream message: Raft's MsgSnapshot, after the chunks.
pub const STREAM_RAFT: u8 = 0;
/// Snapshots kept: the newest, and the one before it (a follower may still
/// be receiving it).
pub const SNAPSHOTS_KEPT: usize = 2;

/// A shard's part file name.
pub fn part_name(shard: ShardId) -> String {
    format!("part-{:04}", shard.0)
}

/// The directory of the snapshot at `index` under `root`.
pub fn dir_of(root: &Path, index: u64) -> PathBuf {
    root.join(format!("{index:016x}"))
}

/// For the shards: prepare your checkpoint at `index`, and write your part
/// of the snapshot into `dir` if `parts`.
#[derive(Debug)]
pub struct SnapJob {
    /// The log index the snapshot is at.
    pub index: u64,
    /// Where the parts go.
    pub dir: PathBuf,
    /// Whether to write parts (a snapshot to send to a member).
    pub parts: bool,
}

/// A shard wrote its part (or failed to).
#[derive(Debug)]
pub struct PartDone {
    /// The snapshot.
    pub index: u64,
    /// The shard.
    pub shard: ShardId,
    /// The part file, or why not (`None`: none was asked for).
    pub result: Option<Result<FileInfo, String>>,
    /// The shard's prepared checkpoint.
    pub prepared: super::stores::Prepared,
    /// The range map the shard held: version and split points.
    pub map: (u64, Vec<Vec<u8>>),
    /// The shard's revision and compaction revision at the snapshot.
    pub rev: i64,
    /// See `rev`.
    pub compact_rev: i64,
    /// The lease table's IDs and TTLs (the same on every shard).
    pub leases: Vec<(i64, i64)>,
}

/// For the shards: replace your state with the snapshot in `dir`.
#[derive(Debug)]
pub struct Install {
    /// The manifest.
    pub manifest: Manifest,
    /// Where its files are.
    pub dir: PathBuf,
    /// Its `global` file.
    pub global: Global,
    /// At start-up, the `stores` record the shards' files were opened at
    /// (they hold the data; no part is read).
    pub stores: Option<super::stores::Stores>,
}

/// The state every shard shares, in the `global` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Global {
    /// The store's revision.
    pub rev: i64,
    /// Its compaction revision (-1: never compacted).
    pub compact_rev: i64,
    /// Leases: ID and TTL.
    pub leases: Vec<(i64, i64)>,
    /// The member table.
    pub members: MemberTable,
}

const GLOBAL_MAGIC: &[u8; 8] = b"corekvGL";
const URLS_MAX: usize = 64;
const MEMBERS_MAX: usize = 4096;
const LEASES_MAX: usize = 1 << 26;

impl Global {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.leases.len() * 16);
        b.extend_from_slice(GLOBAL_MAGIC);
        b.put_i64(self.rev);
        b.put_i64(self.compact_rev);
        b.put_u32(self.leases.len() as u32);
        for &(id, ttl) in &self.leases {
            b.put_i64(id);
            b.put_i64(ttl);
        }
        let t = &self.members;
        b.put_u64(t.cluster.map_or(0, ClusterId::get));
        b.put_u32(t.members.len() as u32);
        for (id, m) in &t.members {
            b.put_u64(id.get());
            b.push(u8::from(m.learner));
            b.put_u32(m.peer_urls.len() as u32);
            for u in &m.peer_urls {
                b.put_str16(u);
            }
        }
        b.put_u32(t.published.len() as u32);
        for p in t.published.values() {
            b.put_u64(p.member);
            b.put_str16(&p.name);
            b.put_u32(p.client_urls.len() as u32);
            for u in &p.client_urls {
                b.put_str16(u);
            }
        }
        b.put_u32(t.removed.len() as u32);
        for id in &t.removed {
            b.put_u64(id.get());
        }
        b
    }

    /// Decodes the file. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Global, SnapError> {
        let mut r = Reader::new(bytes, "global");
        if r.take(8)? != GLOBAL_MAGIC {
            return Err(SnapError::Malformed("not a corekv global state file".into()));
        }
        let rev = r.i64()?;
        let compact_rev = r.i64()?;
        let n = r.count(LEASES_MAX, 16)?;
        let mut leases = Vec::with_capacity(n);
        for _ in 0..n {
            leases.push((r.i64()?, r.i64()?));
        }
        let mut members = MemberTable::default();
        let cluster = r.u64()?;
        members.cluster = (cluster != 0).then_some(ClusterId(cluster));
        for _ in 0..r.count(MEMBERS_MAX, 13)? {
            let id = MemberId(r.u64()?);
            let learner = r.u8()? == 1;
            let k = r.count(URLS_MAX, 2)?;
            let peer_urls = (0..k).map(|_| r.str16(1024)).collect::<Result<Vec<_>, _>>()?;
            members.members.insert(id, Member { peer_urls, learner });
        }
        for _ in 0..r.count(MEMBERS_MAX, 14)? {
            let member = r.u64()?;
            let name = r.str16(1024)?;
            let k = r.count(URLS_MAX, 2)?;
            let client_urls = (0..k).map(|_| r.str16(1024)).collect::<Result<Vec<_>, _>>()?;
            members.published.insert(member, Publish { member, name, client_urls });
        }
        for _ in 0..r.count(MEMBERS_MAX, 8)? {
            members.removed.insert(MemberId(r.u64()?));
        }
        r.end()?;
        if rev < 1 || compact_rev > rev {
            return Err(SnapError::Malformed(format!("revision {rev} with compaction revision {compact_rev}")));
        }
        Ok(Global { rev, compact_rev, leases, members })
    }
}

/// The newest whole snapshot under `root`, read and checked: its manifest,
/// directory and global state. Leftover `.tmp` and `.recv` directories are
/// deleted. A manifest that does not decode, or a file whose length does
/// not match it, is an error naming the file: the node must not start on
/// a damaged snapshot (its WAL segments were released). Blocking; run at
/// start-up.
pub fn newest(root: &Path) -> Result<Option<(Manifest, PathBuf, Global)>, String> {
    let read_dir = match std::fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list {}: {e}", root.display())),
    };
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for item in read_dir {
        let item = item.map_err(|e| format!("cannot list {}: {e}", root.display()))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") || name.ends_with(".recv") {
            let _ = std::fs::remove_dir_all(item.path());
            continue;
        }
        if let Some(base) = name.strip_suffix(".old") {
            // `put_in_place` moved it aside: the new one replaced it, or a
            // crash came first and it is still the snapshot.
            let dir = root.join(base);
            if dir.exists() {
                let _ = std::fs::remove_dir_all(item.path());
                continue;
            }
            std::fs::rename(item.path(), &dir).map_err(|e| format!("cannot rename {}: {e}", dir.display()))?;
            sync_dir(root)?;
            if let Ok(index) = u64::from_str_radix(base, 16) {
                found.push((index, dir));
            }
            continue;
        }
        if name.len() == 16 {
            if let Ok(index) = u64::from_str_radix(name, 16) {
                found.push((index, item.path()));
            }
        }
    }
    found.sort();
    let Some((index, dir)) = found.pop() else { return Ok(None) };
    let mpath = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).map_err(|e| format!("cannot read {}: {e}", mpath.display()))?;
    let manifest = Manifest::decode(&bytes).map_err(|e| format!("snapshot {} at offset 0: {e}", mpath.display()))?;
    if manifest.index != index {
        return Err(format!("{} is for index {} but its directory says {index}", mpath.display(), manifest.index));
    }
    for f in &manifest.files {
        let p = dir.join(&f.name);
        let len = std::fs::metadata(&p).map_err(|e| format!("snapshot file {}: {e}", p.display()))?.len();
        if len != f.bytes {
            return Err(format!("snapshot file {} has {len} bytes, its manifest says {}", p.display(), f.bytes));
        }
    }
    let gpath = dir.join(GLOBAL_FILE);
    let gbytes = std::fs::read(&gpath).map_err(|e| format!("cannot read {}: {e}", gpath.display()))?;
    let ginfo = manifest.files.iter().find(|f| f.name == GLOBAL_FILE);
    if ginfo.is_none_or(|g| g.crc != crc32c::crc32c(&gbytes)) {
        return Err(format!("snapshot file {} at offset 0: checksum mismatch", gpath.display()));
    }
    let global = Global::decode(&gbytes).map_err(|e| format!("snapshot file {} at offset 0: {e}", gpath.display()))?;
    Ok(Some((manifest, dir, global)))
}

/// Renames a finished `.tmp` directory to the snapshot at `index`. A
/// snapshot already there (one without parts, made again with them) moves
/// aside to `.old` first and goes once the new one is in place; `newest`
/// puts back an `.old` a crash left alone.
pub fn put_in_place(root: &Path, tmp: &Path, index: u64) -> Result<(), String> {
    let dir = dir_of(root, index);
    let old = root.join(format!("{index:016x}.old"));
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&dir, &old).map_err(|e| format!("cannot rename {}: {e}", dir.display()))?;
    }
    std::fs::rename(tmp, &dir).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    sync_dir(root)?;
    if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Deletes all but the newest [`SNAPSHOTS_KEPT`] snapshots under `root`.
pub fn prune(root: &Path) {
    let Ok(read_dir) = std::fs::read_dir(root) else { return };
    let mut found: Vec<(u64, PathBuf)> = read_dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (name.len() == 16).then(|| u64::from_str_radix(&name, 16).ok()).flatten().map(|i| (i, e.path()))
        })
        .collect();
    found.sort();
    let old = found.len().saturating_sub(SNAPSHOTS_KEPT);
    for (_, dir) in found.into_iter().take(old) {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            crate::log_warn!("cannot delete an old snapshot", "dir" => dir.display().to_string(), "error" => e.to_string());
        }
    }
}

/// fsyncs a directory (after creating or renaming entries in it).
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot fsync {}: {e}", dir.display()))
}

/// Writes `bytes` to a new file at `path` through io_uring and fsyncs it;
/// returns its length and CRC32C.
pub async fn write_file(path: &Path, name: &str, bytes: Vec<u8>) -> Result<FileInfo, String> {
    let crc = crc32c::crc32c(&bytes);
    let len = bytes.len() as u64;
    let file = monoio::fs::File::create(path).await.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    if !bytes.is_empty() {
        let (res, _) = file.write_all_at(bytes, 0).await;
        res.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    file.sync_all().await.map_err(|e| format!("cannot fsync {}: {e}", path.display()))?;
    let _ = file.close().await;
    Ok(FileInfo { name: name.to_string(), bytes: len, crc })
}

/// Reads a whole file through io_uring in chunks, calling `f` with each,
/// and checks its length and CRC32C against `info`.
pub async fn read_file(
    dir: &Path,
    info: &FileInfo,
    f: &mut dyn FnMut(&[u8]) -> Result<(), SnapError>,
) -> Result<(), String> {
    let path = dir.join(&info.name);
    let file = monoio::fs::File::open(&path).await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut at = 0u64;
    let mut crc = 0u32;
    while at < info.bytes {
        let want = (info.bytes - at).min(CHUNK_BYTES as u64) as usize;
        // monoio fills a Vec's whole capacity: exactly `want` bytes.
        let (res, buf) = file.read_exact_at(Vec::with_capacity(want), at).await;
        res.map_err(|e| format!("cannot read {} at offset {at}: {e}", path.display()))?;
        crc = crc32c::crc32c_append(crc, &buf);
        f(&buf).map_err(|e| format!("snapshot file {} near offset {at}: {e}", path.display()))?;
        at += want as u64;
    }
    let _ = file.close().await;
    if crc != info.crc {
        return Err(format!("snapshot file {} at offset 0: checksum mismatch", path.display()));
    }
    Ok(())
}

/// A chunk of file `file` (its position in the manifest) at `offset`.
pub fn encode_chunk(index: u64, file: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(21 + data.len());
    b.push(STREAM_CHUNK);
    b.put_u64(index);
    b.put_u32(file);
    b.put_u64(offset);
    b.extend_from_slice(data);
    b
}

/// Decodes a chunk (after its tag byte): index, file, offset, data.
pub fn decode_chunk(b: &[u8]) -> Option<(u64, u32, u64, &[u8])> {
    let mut r = Reader::new(b, "chunk");
    let index = r.u64().ok()?;
    let file = r.u32().ok()?;
    let offset = r.u64().ok()?;
    let rest = r.rest();
    Some((index, file, offset, r.take(rest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_state_round_trips_and_garbage_is_refused() {
        let mut members = MemberTable { cluster: Some(ClusterId(77)), ..Default::default() };
        members.members.insert(MemberId(3), Member { peer_urls: vec!["http://127.0.0.3:2380".into()], learner: true });
        members.published.insert(3, Publish { member: 3, name: "m3".into(), client_urls: vec!["http://x:1".into()] });
        members.removed.insert(MemberId(9));
        let g = Global { rev: 42, compact_rev: 7, leases: vec![(5, 60), (6, 10)], members };
        let b = g.encode();
        assert_eq!(Global::decode(&b), Ok(g));
        for cut in 0..b.len() {
            assert!(Global::decode(&b[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn chunks_round_trip() {
        let c = encode_chunk(9, 2, 1 << 33, b"abc");
        assert_eq!(c[0], STREAM_CHUNK);
        assert_eq!(decode_chunk(&c[1..]), Some((9, 2, 1 << 33, &b"abc"[..])));
        assert_eq!(decode_chunk(&c[1..10]), None);
    }
}
