//! Injected I/O errors (a file that fails after a random countdown, under a
//! cache small enough that reads go to it): the error surfaces (the store
//! breaks, naming the file), every answer given before is right, nothing
//! is answered after, no checkpoint is taken after, and a reopen plus the
//! log's replay gives back exactly the model.

use std::ops::ControlFlow;

use super::model::{random_op, reads_agree, Harness, Reopen};
use super::util::{for_seeds, FaultyFile, Rng, SimDisk, SimFile};
use crate::btree::PAGE_BYTES;
use crate::mvcc::disk::{DiskError, DiskStore, PageCache, PageFile};
use crate::mvcc::{End, MvccStore, Rev};

type Faulty = FaultyFile<SimFile>;

/// Reopens (after a crash: unsynced writes lost) with a fresh, unarmed file.
fn faulty_reopen(cache_bytes: usize) -> Reopen<Faulty> {
    let file = SimFile::new(SimDisk::default());
    Box::new(move || {
        let crashed = file.disk.borrow().crashed();
        *file.disk.borrow_mut() = crashed;
        PageCache::new(FaultyFile::new(file.clone()), cache_bytes).unwrap()
    })
}

/// A broken store: its error is the injected one, with the file's name;
/// it answers nothing and refuses checkpoints.
fn assert_broken_loudly<F: PageFile>(store: &mut DiskStore<F>) {
    assert!(store.is_broken());
    let message = store.error().expect("a broken store keeps its error");
    assert!(message.contains("injected fault") && message.starts_with("sim.db"), "{message}");
    assert!(store.latest(b"/registry/pods/1").is_none());
    let mut seen = 0;
    store.scan(b"", End::Unbounded, i64::MAX, &mut |_| {
        seen += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(seen, 0);
    assert_eq!(store.count(b"", End::Unbounded, i64::MAX), 0);
    assert!(store.put(b"k", b"v", 0, Rev { main: i64::MAX - 1, sub: 0 }).is_none());
    assert!(matches!(store.begin_checkpoint(1, b""), Err(DiskError::Broken { .. })));
    assert!(store.take_error().is_some());
    assert!(store.is_broken(), "taking the error does not mend the store");
}

#[test]
fn injected_io_errors_break_the_store_and_never_give_a_wrong_answer() {
    for_seeds("faults", 8, |seed| {
        let mut rng = Rng::new(seed + 3000);
        let mut h = Harness::new(faulty_reopen(16 * PAGE_BYTES));
        let mut faults = 0;
        for _ in 0..700 {
            if rng.percent(4) {
                h.disk().cache().file().arm(rng.below(60));
            }
            let ok = match rng.below(100) {
                0..=79 => {
                    let op = random_op(&mut rng, &h.mem, h.rev);
                    h.step(op)
                }
                80..=85 => h.checkpoint(),
                86..=88 => {
                    let during = rng.below(3) as usize;
                    h.staged_checkpoint(&mut rng, during)
                }
                _ => {
                    let full = rng.percent(20);
                    reads_agree(&mut rng, h.disk(), &h.mem, h.rev, full)
                }
            };
            // An injected fault always breaks the store; nothing else does.
            let injected = h.disk().cache().file().injected.get() > 0;
            assert_eq!(injected, h.disk().is_broken(), "{:?}", h.disk().error());
            if !ok || injected {
                assert_broken_loudly(h.disk_mut());
                faults += 1;
                h.reopen();
                assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
            }
        }
        assert!(faults >= 3, "only {faults} faults hit");
    });
}
