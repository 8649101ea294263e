//! The shards' store files and the record that ties their checkpoints to
//! one log index.
//!
//! Every shard keeps its versions in a `DiskStore` file,
//! `member/store/shard-NNNN-<generation>.db`; the generation is the log
//! index of the snapshot the file was built from (0 for a file that grew
//! from an empty store), so an installed snapshot never overwrites the file
//! the previous state lives in.
//!
//! A checkpoint of the node is a two-phase commit over the shards' files
//! with one durable decision (DESIGN §5):
//! 1. at one point of the log (a `SnapJob`), every shard starts a
//!    checkpoint, writes its pages into free space and fdatasyncs them
//!    (*prepared*); its meta page is not written yet, so its file still
//!    opens at its previous checkpoint;
//! 2. the sequencer writes the snapshot directory with a `stores` file
//!    naming, per shard, its file and the prepared meta page (this record,
//!    fsynced and renamed into place, is the decision);
//! 3. every shard writes its meta page and fdatasyncs (*committed*).
//!
//! A crash between 2 and 3 leaves some files at the previous checkpoint:
//! start-up writes the recorded meta page into them (redo), so every shard
//! opens at the same index, and the log is replayed from there. Until 3
//! the pages the previous checkpoint uses are never overwritten (the tree
//! is copy-on-write and reuses a page only after the checkpoint that freed
//! it is durable), so the redo is always sound.

use std::path::{Path, PathBuf};

use crate::apply::RangeMap;
use crate::btree::{verify_bytes, PageId, PAGE_BYTES};
use crate::snapshot::{Put, Reader, SnapError};
use crate::types::ShardId;

/// The record's name in a snapshot directory (not in the manifest: it
/// names files of this member only and is never streamed).
pub const STORES_FILE: &str = "stores";
const MAGIC: &[u8; 8] = b"corekvST";
const SHARDS_MAX: usize = 1 << 12;
const SPLIT_BYTES_MAX: usize = 1 << 16;

/// The directory of the store files.
pub fn store_dir(member_dir: &Path) -> PathBuf {
    member_dir.join("store")
}

/// A shard's store file of generation `gen`.
pub fn store_path(dir: &Path, shard: ShardId, gen: u64) -> PathBuf {
    dir.join(format!("shard-{:04}-{gen:016x}.db", shard.0))
}

/// A shard's prepared checkpoint, as the decision records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The file's generation.
    pub gen: u64,
    /// Where the meta page goes.
    pub meta_id: u64,
    /// The meta page.
    pub meta: Vec<u8>,
}

/// The `stores` file: the checkpoint of every shard at one log index, and
/// the range map they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stores {
    /// The log index.
    pub index: u64,
    /// The range map's version.
    pub map_version: u64,
    /// Its split points.
    pub splits: Vec<Vec<u8>>,
    /// Per shard, in shard order.
    pub shards: Vec<Prepared>,
}

impl Stores {
    /// The file's bytes (with a trailing CRC32C).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.shards.len() * (PAGE_BYTES + 24));
        b.extend_from_slice(MAGIC);
        b.put_u64(self.index);
        b.put_u64(self.map_version);
        b.put_u32(self.splits.len() as u32);
        for s in &self.splits {
            b.put_u32(s.len() as u32);
            b.extend_from_slice(s);
        }
        b.put_u32(self.shards.len() as u32);
        for p in &self.shards {
            b.put_u64(p.gen);
            b.put_u64(p.meta_id);
            b.extend_from_slice(&p.meta);
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32(crc);
        b
    }

    /// Decodes and checks the file. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Stores, SnapError> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(SnapError::Malformed("stores record too short".into()));
        };
        let (body, tail) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != tail {
            return Err(SnapError::Malformed("stores record checksum mismatch".into()));
        }
        let mut r = Reader::new(body, "stores");
        if r.take(8)? != MAGIC {
            return Err(SnapError::Malformed("not a corekv stores record".into()));
        }
        let index = r.u64()?;
        let map_version = r.u64()?;
        let n = r.count(SHARDS_MAX, 5)?;
        let mut splits = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u32()? as usize;
            if len == 0 || len > SPLIT_BYTES_MAX {
                return Err(SnapError::Malformed(format!("split point of {len} bytes")));
            }
            splits.push(r.take(len)?.to_vec());
        }
        if !splits.windows(2).all(|w| w[0] < w[1]) {
            return Err(SnapError::Malformed("split points do not ascend".into()));
        }
        let shards_n = r.count(SHARDS_MAX, 16 + PAGE_BYTES)?;
        if shards_n != splits.len() + 1 {
            return Err(SnapError::Malformed(format!("{shards_n} shards for {} split points", splits.len())));
        }
        let mut shards = Vec::with_capacity(shards_n);
        for i in 0..shards_n {
            let gen = r.u64()?;
            let meta_id = r.u64()?;
            let meta = r.take(PAGE_BYTES)?.to_vec();
            if meta_id >= PageId::FIRST_DATA.get() {
                return Err(SnapError::Malformed(format!("shard {i}'s meta page id {meta_id}")));
            }
            verify_bytes(PageId(meta_id), &meta)
                .map_err(|e| SnapError::Malformed(format!("shard {i}'s meta page {meta_id}: {e}")))?;
            shards.push(Prepared { gen, meta_id, meta });
        }
        r.end()?;
        Ok(Stores { index, map_version, splits, shards })
    }

    /// The range map the shards held.
    pub fn map(&self) -> RangeMap {
        RangeMap::restored(self.splits.clone(), self.map_version)
    }
}

/// How a reactor opens its shard's store at start-up.
#[derive(Clone, Debug)]
pub enum StoreSetup {
    /// A new, empty file at this path (no checkpoint to start from).
    Fresh(PathBuf),
    /// The file of a `stores` record: it must open at `index`, after the
    /// recorded meta page is written if the commit did not reach it.
    Recorded {
        /// The file.
        path: PathBuf,
        /// The checkpoint's log index.
        index: u64,
        /// The prepared checkpoint.
        prepared: Prepared,
    },
}

/// Reads the `stores` record of a snapshot directory, if it has one.
pub fn read_record(dir: &Path) -> Result<Option<Stores>, String> {
    let path = dir.join(STORES_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Stores::decode(&bytes).map(Some).map_err(|e| format!("{} at offset 0: {e}", path.display()))
}

/// Decides how every shard opens its store, and deletes the store files no
/// setup uses (left by installs, or by a crash before a first checkpoint).
/// Blocking; runs once before the reactors start.
pub fn plan(dir: &Path, shards: usize, record: Option<&Stores>) -> Result<Vec<StoreSetup>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let setups: Vec<StoreSetup> = match record {
        Some(rec) => {
            if rec.shards.len() != shards {
                return Err(format!(
                    "the data directory's stores were written by {} reactors (--cores {}); this start has {shards}: start with --cores {}",
                    rec.shards.len(),
                    rec.shards.len(),
                    rec.shards.len()
                ));
            }
            rec.shards
                .iter()
                .enumerate()
                .map(|(i, p)| StoreSetup::Recorded {
                    path: store_path(dir, ShardId(i as u16), p.gen),
                    index: rec.index,
                    prepared: p.clone(),
                })
                .collect()
        }
        None => (0..shards).map(|i| StoreSetup::Fresh(store_path(dir, ShardId(i as u16), 0))).collect(),
    };
    let keep: Vec<PathBuf> = setups
        .iter()
        .filter_map(|s| match s {
            StoreSetup::Recorded { path, .. } => Some(path.clone()),
            StoreSetup::Fresh(_) => None,
        })
        .collect();
    let listing = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for item in listing.flatten() {
        let path = item.path();
        if !keep.contains(&path) {
            std::fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        }
    }
    Ok(setups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::Page;

    fn meta_page(id: u64) -> Vec<u8> {
        let mut p = Page::zeroed();
        p.seal(PageId(id));
        p.bytes().to_vec()
    }

    #[test]
    fn the_record_round_trips_and_damage_is_refused() {
        let rec = Stores {
            index: 77,
            map_version: 3,
            splits: vec![b"/registry/m".to_vec()],
            shards: vec![
                Prepared { gen: 0, meta_id: 0, meta: meta_page(0) },
                Prepared { gen: 12, meta_id: 1, meta: meta_page(1) },
            ],
        };
        let b = rec.encode();
        assert_eq!(Stores::decode(&b), Ok(rec.clone()));
        for cut in 0..b.len() {
            assert!(Stores::decode(&b[..cut]).is_err(), "prefix of {cut} bytes");
        }
        for at in [0, 9, 30, b.len() / 2, b.len() - 1] {
            let mut bad = b.clone();
            bad[at] ^= 0x40;
            assert!(Stores::decode(&bad).is_err(), "flipped byte {at}");
        }
        assert_eq!(rec.map().splits(), &[b"/registry/m".to_vec()][..]);
        assert_eq!(rec.map().version(), 3);
    }

    #[test]
    fn planning_keeps_only_the_recorded_files() {
        let dir = std::env::temp_dir().join(format!("corekv-stores-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (shard, gen) in [(0, 0), (0, 9), (1, 9), (1, 4)] {
            std::fs::write(store_path(&dir, ShardId(shard), gen), b"x").unwrap();
        }
        let rec = Stores {
            index: 9,
            map_version: 0,
            splits: vec![b"m".to_vec()],
            shards: vec![
                Prepared { gen: 9, meta_id: 0, meta: meta_page(0) },
                Prepared { gen: 9, meta_id: 1, meta: meta_page(1) },
            ],
        };
        let setups = plan(&dir, 2, Some(&rec)).unwrap();
        assert_eq!(setups.len(), 2);
        let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, vec![store_path(&dir, ShardId(0), 9), store_path(&dir, ShardId(1), 9)]);
        assert!(plan(&dir, 3, Some(&rec)).unwrap_err().contains("--cores 2"));
        let fresh = plan(&dir, 2, None).unwrap();
        assert!(matches!(&fresh[1], StoreSetup::Fresh(p) if *p == store_path(&dir, ShardId(1), 0)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
