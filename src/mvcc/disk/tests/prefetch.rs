//! Prefetching: loading what `plan_loads` lists (read from the file as the
//! node would, handed in with `insert_loaded`) makes the reads and writes
//! of the planned keys and ranges hit the cache: no synchronous miss. A
//! load planned before a checkpoint finished is dropped.

use std::ops::ControlFlow;

use super::model::{apply, random_op, reads_agree, Op};
use super::util::{as_end, for_seeds, read_raw, scan_all, scan_rev_all, Rng, SimDisk, SimFile};
use crate::btree::PAGE_BYTES;
use crate::mvcc::disk::{DiskStore, PageCache, Touch};
use crate::mvcc::{MemStore, MvccStore};

/// Plans and loads until the plan is empty; returns the rounds it took.
fn prefetch(store: &DiskStore<SimFile>, touches: &[Touch<'_>]) -> usize {
    for round in 0..16 {
        let plan = store.plan_loads(touches, 512).unwrap();
        if plan.pages.is_empty() {
            return round;
        }
        for &id in &plan.pages {
            let page = read_raw(store.cache().file(), id);
            assert!(store.insert_loaded(plan.ticket, id, page).unwrap(), "fresh load of {id} dropped");
        }
    }
    panic!("the plan never emptied");
}

#[test]
fn planned_loads_make_reads_and_writes_of_the_planned_keys_hit_the_cache() {
    for_seeds("prefetch", 4, |seed| {
        let mut rng = Rng::new(seed + 5000);
        let file = SimFile::new(SimDisk::default());
        let open = || DiskStore::open(PageCache::new(file.clone(), 8192 * PAGE_BYTES).unwrap()).unwrap().0;
        let (mut store, mut mem, mut rev) = (open(), MemStore::new(), 1);
        for _ in 0..1500 {
            let op = random_op(&mut rng, &mem, rev);
            assert_eq!(apply(&mut store, &op), apply(&mut mem, &op));
            if let Op::Request { main, .. } = op {
                rev = main;
            }
        }
        store.checkpoint_sync(1, b"").unwrap();
        // A cold cache: only the root, read when the tree was opened.
        drop(store);
        let mut store = open();
        let mut rounds_max = 0;
        for _ in 0..40 {
            let keys: Vec<Vec<u8>> = (0..3).map(|_| rng.key()).collect();
            let (start, end) = (rng.key(), rng.end());
            let mut touches: Vec<Touch<'_>> = keys.iter().map(|k| Touch::Key(k)).collect();
            touches.push(Touch::Range { start: &start, end: as_end(&end) });
            rounds_max = rounds_max.max(prefetch(&store, &touches));
            let before = store.cache_stats().sync_misses;
            for key in &keys {
                let expected = mem.latest(key).map(|kv| kv.to_owned_kv());
                assert_eq!(store.latest(key).map(|kv| kv.to_owned_kv()), expected);
            }
            let end = as_end(&end);
            assert_eq!(scan_all(&store, &start, end, i64::MAX), scan_all(&mem, &start, end, i64::MAX));
            assert_eq!(scan_rev_all(&store, &start, end, rev), scan_rev_all(&mem, &start, end, rev));
            assert_eq!(store.count(&start, end, rev), mem.count(&start, end, rev));
            assert_eq!(store.cache_stats().sync_misses, before, "a planned read missed");
            // Puts of planned keys read only planned pages too.
            rev += 1;
            for (sub, key) in keys.iter().enumerate() {
                let r = crate::mvcc::Rev { main: rev, sub: sub as i64 };
                assert_eq!(store.put(key, b"v", 0, r), mem.put(key, b"v", 0, r));
            }
            assert_eq!(store.cache_stats().sync_misses, before, "a planned put missed");
            assert!(!store.is_broken());
        }
        assert!((2..=6).contains(&rounds_max), "{rounds_max} rounds");
        assert!(reads_agree(&mut rng, &store, &mem, rev, true));
        // A load planned before a checkpoint finished is dropped unread.
        store.checkpoint_sync(2, b"").unwrap();
        drop(store);
        let store = open();
        let key = rng.key();
        let plan = store.plan_loads(&[Touch::Range { start: b"", end: crate::mvcc::End::Unbounded }], 4).unwrap();
        assert!(!plan.pages.is_empty());
        let mut store = store;
        store.put(&key, b"w", 0, crate::mvcc::Rev { main: rev + 1, sub: 0 });
        store.checkpoint_sync(3, b"").unwrap();
        let dropped = store.cache_stats().loads_dropped;
        for &id in &plan.pages {
            let page = read_raw(store.cache().file(), id);
            assert!(!store.insert_loaded(plan.ticket, id, page).unwrap());
        }
        assert_eq!(store.cache_stats().loads_dropped, dropped + plan.pages.len() as u64);
        let mut seen = 0;
        store.scan(b"", crate::mvcc::End::Unbounded, i64::MAX, &mut |_| {
            seen += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(seen, store.live_keys());
    });
}

#[test]
fn plans_stay_complete_however_many_were_made_before() {
    let file = SimFile::new(SimDisk::default());
    let open = || DiskStore::open(PageCache::new(file.clone(), 64 * PAGE_BYTES).unwrap()).unwrap().0;
    let mut store = open();
    for i in 0..4000u32 {
        let key = format!("/registry/leases/{i:05}").into_bytes();
        store.put(&key, &[1; 200], 0, crate::mvcc::Rev { main: 2 + i64::from(i), sub: 0 });
    }
    store.checkpoint_sync(1, b"").unwrap();
    drop(store);
    // A small cache: each plan misses many pages, and the cache's lifetime
    // count of planned misses grows far past any one plan's bound.
    let store = open();
    let everything = [Touch::Range { start: b"", end: crate::mvcc::End::Unbounded }];
    let first = store.plan_loads(&everything, 8).unwrap().pages;
    assert!(!first.is_empty());
    for _ in 0..50 {
        assert_eq!(store.plan_loads(&everything, 8).unwrap().pages, first, "the same plan changed");
    }
    assert!(store.cache_stats().planned_misses > 8 * 4, "{:?}", store.cache_stats());
}
