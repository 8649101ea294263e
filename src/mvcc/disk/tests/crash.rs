//! Crash consistency at the store level: a crash at every point of a
//! staged checkpoint (any prefix or subset of its page writes landed, a
//! page torn at sector boundaries, the meta page lost, torn or landed),
//! with reads and writes going on between begin and finish, reopens to
//! exactly the previous or the new checkpoint: its versions, counters,
//! compaction revision, applied index and extra bytes. The reopened store
//! keeps working.

use std::sync::Arc;

use super::model::{apply, random_op, reads_agree, Op};
use super::util::{for_seeds, history_all, Rng, SimDisk, SimFile};
use crate::btree::{Page, PageId, PAGE_BYTES, SECTOR_BYTES};
use crate::mvcc::disk::{DiskCheckpoint, DiskStore, PageCache, PageFile};
use crate::mvcc::{End, Event, MemStore, MvccStore, Rev};

const SECTORS_PER_PAGE: usize = PAGE_BYTES / SECTOR_BYTES;

/// Everything a checkpoint must bring back.
#[derive(Debug, PartialEq)]
struct State {
    versions: Vec<Event>,
    live_keys: u64,
    stored_keys: u64,
    size_bytes: u64,
    compacted: i64,
    applied_index: u64,
    extra: Vec<u8>,
}

fn state_of<F: PageFile>(store: &DiskStore<F>, applied_index: u64, extra: Vec<u8>) -> State {
    State {
        versions: history_all(store, b"", End::Unbounded, 1, i64::MAX),
        live_keys: store.live_keys(),
        stored_keys: store.stored_keys(),
        size_bytes: store.size_bytes(),
        compacted: store.compacted_revision(),
        applied_index,
        extra,
    }
}

/// What became of one unsynced write at the crash.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Lost,
    Landed,
    /// Sector `i` holds the new bytes if bit `i` is set, the old ones if not.
    Torn(u64),
}

/// The durable image `base` after a crash in which `writes` met `fate`.
fn after_crash(base: &SimDisk, writes: &[(PageId, Arc<Page>)], fate: impl Fn(usize) -> Fate) -> SimDisk {
    let mut disk = base.clone();
    for (i, (id, page)) in writes.iter().enumerate() {
        match fate(i) {
            Fate::Lost => {}
            Fate::Landed => disk.land(*id, (**page).clone()),
            Fate::Torn(mask) => {
                let mut torn = disk.durable_page(*id);
                for sector in (0..SECTORS_PER_PAGE).filter(|s| mask & (1 << s) != 0) {
                    let range = sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES;
                    torn.bytes_mut()[range.clone()].copy_from_slice(&page.bytes()[range]);
                }
                disk.land(*id, torn);
            }
        }
    }
    disk
}

/// Opens the image, checks it holds `expected` exactly and that it keeps
/// working (a write, a checkpoint, a reopen).
fn assert_recovers_to(disk: SimDisk, expected: &State, what: &str) {
    let file = SimFile::new(disk);
    let open = |file: &SimFile| DiskStore::open(PageCache::new(file.clone(), 1 << 20).unwrap());
    let (mut store, recovered) = open(&file).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let got = state_of(&store, recovered.applied_index, recovered.extra);
    assert!(
        got == *expected,
        "{what}: recovered state differs (applied {} expected {})",
        got.applied_index,
        expected.applied_index
    );
    store.verify().unwrap_or_else(|e| panic!("{what}: {e}"));
    store.put(b"after-crash", b"ok", 0, Rev { main: i64::MAX / 2, sub: 0 });
    store.checkpoint_sync(u64::MAX, b"after").unwrap();
    drop(store);
    let (store, recovered) = open(&file).unwrap();
    assert_eq!(recovered.applied_index, u64::MAX);
    assert_eq!(store.latest(b"after-crash").map(|kv| kv.value.to_vec()), Some(b"ok".to_vec()));
}

/// Every crash point of `checkpoint` over the durable image `base`.
fn crash_everywhere(rng: &mut Rng, base: &SimDisk, checkpoint: &DiskCheckpoint, old: &State, new: &State) {
    let pages = checkpoint.pages();
    let n = pages.len();
    let landed = |yes: bool| if yes { Fate::Landed } else { Fate::Lost };
    // Before the first sync: any prefix, any subset, with a torn page.
    let stride = (n / 10).max(1);
    for k in (0..=n).filter(|k| k % stride == 0 || *k == n) {
        assert_recovers_to(after_crash(base, pages, |i| landed(i < k)), old, "page prefix");
    }
    for _ in 0..3 {
        let (torn_at, mask) = (rng.below(n.max(1) as u64) as usize, rng.next_u64());
        let subset = rng.next_u64();
        let fate =
            |i: usize| if i == torn_at { Fate::Torn(mask) } else { landed(subset.rotate_left(i as u32) & 1 == 1) };
        assert_recovers_to(after_crash(base, pages, fate), old, "page subset with a torn page");
    }
    // After the first sync: the meta page lost, torn, or landed.
    let synced = after_crash(base, pages, |_| Fate::Landed);
    let (meta_id, meta) = checkpoint.meta();
    let meta_write = [(meta_id, Arc::clone(meta))];
    assert_recovers_to(after_crash(&synced, &meta_write, |_| Fate::Lost), old, "meta lost");
    for _ in 0..3 {
        let mask = rng.below((1 << SECTORS_PER_PAGE) - 1);
        let disk = after_crash(&synced, &meta_write, |_| Fate::Torn(mask));
        // Sectors the old and new meta pages share can make a tear whole.
        let whole = disk.durable_page(meta_id).bytes() == meta.bytes();
        assert_recovers_to(disk, if whole { new } else { old }, "meta torn");
    }
    assert_recovers_to(after_crash(&synced, &meta_write, |_| Fate::Landed), new, "meta landed");
}

#[test]
fn a_crash_at_any_point_of_a_checkpoint_reopens_the_previous_or_the_new_one() {
    for_seeds("crash", 3, |seed| {
        let mut rng = Rng::new(seed + 4000);
        let file = SimFile::new(SimDisk::default());
        let (mut store, _) = DiskStore::open(PageCache::new(file.clone(), 256 * PAGE_BYTES).unwrap()).unwrap();
        let (mut mem, mut rev) = (MemStore::new(), 1);
        let step = |store: &mut DiskStore<SimFile>, mem: &mut MemStore, rng: &mut Rng, rev: &mut i64| {
            let op = random_op(rng, mem, *rev);
            assert_eq!(apply(store, &op), apply(mem, &op));
            if let Op::Request { main, .. } = op {
                *rev = main;
            }
        };
        let mut old = state_of(&store, 0, Vec::new());
        for round in 1..=4u64 {
            for _ in 0..100 + rng.below(200) {
                step(&mut store, &mut mem, &mut rng, &mut rev);
            }
            let extra = format!("round {round}").into_bytes();
            let new = state_of(&store, round, extra.clone());
            let checkpoint = store.begin_checkpoint(round, &extra).unwrap();
            // Reads and writes go on while the checkpoint is written.
            for _ in 0..30 {
                step(&mut store, &mut mem, &mut rng, &mut rev);
            }
            assert!(reads_agree(&mut rng, &store, &mem, rev, false));
            let base = file.disk.borrow().crashed();
            crash_everywhere(&mut rng, &base, &checkpoint, &old, &new);
            // Now write it for real, as the node does, and finish.
            let mut writer = file.clone();
            for (id, page) in checkpoint.pages() {
                writer.write_page(*id, page).unwrap();
            }
            writer.sync().unwrap();
            let (meta_id, meta) = checkpoint.meta();
            writer.write_page(meta_id, meta).unwrap();
            writer.sync().unwrap();
            store.finish_checkpoint(checkpoint).unwrap();
            store.truncate_file().unwrap();
            assert!(reads_agree(&mut rng, &store, &mem, rev, true));
            assert_recovers_to(file.disk.borrow().crashed(), &new, "after finish");
            old = new;
        }
    });
}
