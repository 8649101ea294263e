//! Crash consistency: a crash at every point of a checkpoint (any prefix or
//! subset of the unsynced page writes, a torn page, a torn or lost meta
//! write) reopens to exactly the previous or the new checkpoint.

use std::sync::Arc;

use super::util::{assert_matches, for_seeds, random_key, random_value, Model, Rng};
use crate::btree::{Checkpoint, MemStore, Page, PageId, PageStore, Tree, PAGE_BYTES, SECTOR_BYTES};

const SECTORS_PER_PAGE: usize = PAGE_BYTES / SECTOR_BYTES;

/// What became of one unsynced write at the crash.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Lost,
    Landed,
    /// Sector `i` holds the new bytes if bit `i` is set, the old ones if not.
    Torn(u64),
}

/// `base` with `writes` applied according to `fate`.
fn disk_after_crash(base: &MemStore, writes: &[(PageId, Arc<Page>)], fate: impl Fn(usize) -> Fate) -> MemStore {
    let mut disk = base.clone();
    for (i, (id, page)) in writes.iter().enumerate() {
        match fate(i) {
            Fate::Lost => {}
            Fate::Landed => disk.write(*id, page).unwrap(),
            Fate::Torn(mask) => {
                let mut torn = disk.raw(*id).map_or_else(Page::zeroed, |old| (**old).clone());
                for sector in (0..SECTORS_PER_PAGE).filter(|s| mask & (1 << s) != 0) {
                    let range = sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES;
                    torn.bytes_mut()[range.clone()].copy_from_slice(&page.bytes()[range]);
                }
                disk.set_raw(*id, Some(torn));
            }
        }
    }
    disk
}

/// Opens `disk` and checks it holds `expected` exactly, and that the
/// reopened tree keeps working (writes, checkpoints, reopens).
fn assert_recovers_to(disk: MemStore, expected: &Model, what: &str) {
    let mut disk = disk;
    let mut tree = Tree::open(&disk).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_matches(&tree, &disk, expected);
    tree.insert(&disk, b"after-crash", b"ok").unwrap();
    tree.checkpoint(&mut disk, b"").unwrap();
    let tree = Tree::open(&disk).unwrap();
    assert_eq!(tree.get_value(&disk, b"after-crash").unwrap().as_deref(), Some(&b"ok"[..]));
    tree.verify(&disk).unwrap();
}

/// Every crash point of `checkpoint` over `base`: `old` before the meta
/// page lands, `new` after.
fn crash_everywhere(rng: &mut Rng, base: &MemStore, checkpoint: &Checkpoint, old: &Model, new: &Model) {
    let pages = checkpoint.pages();
    let n = pages.len();
    // Before the first sync: any prefix, any subset, with a torn page.
    for k in 0..=n {
        let stride = (n / 12).max(1);
        if k % stride == 0 || k == n {
            assert_recovers_to(disk_after_crash(base, pages, |i| fate_for(i < k)), old, "page prefix");
        }
    }
    for _ in 0..4 {
        let torn_at = rng.below(n.max(1) as u64) as usize;
        let mask = rng.next_u64();
        let disk =
            disk_after_crash(base, pages, |i| if i == torn_at { Fate::Torn(mask) } else { fate_for(rng_bit(mask, i)) });
        assert_recovers_to(disk, old, "page subset with a torn page");
    }
    // After the first sync: the meta write lost, torn, or landed.
    let synced = disk_after_crash(base, pages, |_| Fate::Landed);
    let (meta_id, meta) = checkpoint.meta();
    let meta_write = [(meta_id, Arc::clone(meta))];
    assert_recovers_to(disk_after_crash(&synced, &meta_write, |_| Fate::Lost), old, "meta lost");
    for _ in 0..4 {
        let mask = rng.below((1 << SECTORS_PER_PAGE) - 1);
        let disk = disk_after_crash(&synced, &meta_write, |_| Fate::Torn(mask));
        // Sectors the old and new meta pages share make some tears whole.
        let whole = disk.raw(meta_id).is_some_and(|p| p.bytes() == meta.bytes());
        assert_recovers_to(disk, if whole { new } else { old }, "meta torn");
    }
    assert_recovers_to(disk_after_crash(&synced, &meta_write, |_| Fate::Landed), new, "meta landed");
}

fn fate_for(landed: bool) -> Fate {
    if landed {
        Fate::Landed
    } else {
        Fate::Lost
    }
}

fn rng_bit(mask: u64, i: usize) -> bool {
    mask.rotate_left((i % 64) as u32) & 1 == 1
}

#[test]
fn a_crash_at_any_point_of_a_checkpoint_recovers_the_old_or_the_new_state() {
    for_seeds("crash_during_checkpoint", 3, |seed| {
        let mut rng = Rng::new(seed);
        let mut store = MemStore::new();
        let mut tree = Tree::create(&mut store).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        for round in 0..6 {
            let old = model.clone();
            for _ in 0..150 + rng.below(300) {
                let key = random_key(&mut rng, &mut counter);
                if rng.percent(25) {
                    let first = model.range(key..).next().map(|(k, _)| k.clone());
                    if let Some(k) = first {
                        tree.delete(&store, &k).unwrap();
                        model.remove(&k);
                    }
                } else {
                    let value = random_value(&mut rng);
                    tree.insert(&store, &key, &value).unwrap();
                    model.insert(key, value);
                }
            }
            let checkpoint = tree.begin_checkpoint(&[round]).unwrap();
            crash_everywhere(&mut rng, &store, &checkpoint, &old, &model);
            for (id, page) in checkpoint.pages() {
                store.write(*id, page).unwrap();
            }
            let (meta_id, meta) = checkpoint.meta();
            store.write(meta_id, meta).unwrap();
            let page_count = checkpoint.page_count();
            tree.finish_checkpoint(checkpoint).unwrap();
            store.truncate(page_count).unwrap();
            assert_recovers_to(store.clone(), &model, "after finish");
        }
    });
}

#[test]
fn a_crash_before_any_checkpoint_reopens_the_empty_tree() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    for i in 0..1000u32 {
        tree.insert(&store, &i.to_be_bytes(), b"v").unwrap();
    }
    assert_recovers_to(store.clone(), &Model::new(), "no checkpoint");
}
