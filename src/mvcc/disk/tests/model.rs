//! Model-based tests: random requests (single and multi-key at one
//! revision), compactions, range moves, checkpoints (synchronous and
//! staged, with writes in between) and reopens (a crash: unsynced writes
//! are lost, then the operations since the checkpoint are replayed), with
//! `MemStore` as the model. Every read the stores have is compared at
//! random revisions at or above the compacted one, after every batch of
//! operations, every checkpoint and every reopen.

use super::util::{
    as_end, for_seeds, history_all, history_limited, scan_all, scan_limited, scan_rev_all, Rng, SimDisk, SimFile,
    TempDir,
};
use crate::mvcc::disk::{DataFile, DiskStore, PageCache, PageFile};
use crate::mvcc::{End, KeyHistory, KeyValue, MemStore, MvccStore, Rev};

/// One write of a request: a put (value, lease) or a delete (`None`).
pub type Write = (Vec<u8>, Option<(Vec<u8>, i64)>);

/// One operation, as both stores are given it.
#[derive(Clone, Debug)]
pub enum Op {
    /// Writes at one main revision, sub = position: a put (value, lease)
    /// or a delete (`None`).
    Request { main: i64, writes: Vec<Write> },
    /// `begin_compact`.
    Compact(i64),
    /// `compact_step` with a budget.
    Step(usize),
    /// `take_range`, then `insert_histories` of what was taken if `back`.
    Move { start: Vec<u8>, end: Option<Vec<u8>>, back: bool },
}

/// What an operation returned, where the stores must agree.
#[derive(Debug, PartialEq)]
pub enum Output {
    Prevs(Vec<Option<KeyValue>>),
    Taken(Vec<KeyHistory>),
    Nothing,
}

pub fn apply(store: &mut dyn MvccStore, op: &Op) -> Output {
    match op {
        Op::Request { main, writes } => {
            let mut prevs = Vec::new();
            for (sub, (key, write)) in writes.iter().enumerate() {
                let rev = Rev { main: *main, sub: sub as i64 };
                prevs.push(match write {
                    Some((value, lease)) => store.put(key, value, *lease, rev),
                    None => store.delete(key, rev),
                });
            }
            Output::Prevs(prevs)
        }
        Op::Compact(rev) => {
            store.begin_compact(*rev);
            Output::Nothing
        }
        Op::Step(budget) => {
            // Progress differs between the stores (a long-key group is one
            // step here); what compaction leaves is compared by the reads.
            store.compact_step(*budget);
            Output::Nothing
        }
        Op::Move { start, end, back } => {
            let taken = store.take_range(start, as_end(end));
            if *back {
                store.insert_histories(taken.clone());
            }
            Output::Taken(taken)
        }
    }
}

/// A random operation for the current state of the model.
pub fn random_op(rng: &mut Rng, mem: &MemStore, rev: i64) -> Op {
    match rng.below(100) {
        0..=79 => {
            let mut writes: Vec<Write> = Vec::new();
            let most = if rng.percent(20) { 6 } else { 1 };
            for _ in 0..=rng.below(most) {
                let key = rng.key();
                if writes.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                let write = if rng.percent(70) || mem.latest(&key).is_none() && rng.percent(70) {
                    Some((rng.value(), rng.below(3) as i64))
                } else {
                    None
                };
                writes.push((key, write));
            }
            Op::Request { main: rev + 1, writes }
        }
        80..=83 => Op::Compact(rng.between(mem.compacted_revision().max(1), rev)),
        84..=96 => Op::Step(rng.below(6) as usize),
        _ => Op::Move { start: rng.key(), end: rng.end(), back: rng.percent(80) },
    }
}

/// The main revision after `op` given its output on the model.
fn rev_after(rev: i64, op: &Op, out: &Output) -> i64 {
    match (op, out) {
        (Op::Request { main, writes }, Output::Prevs(prevs)) => {
            let wrote = writes.iter().zip(prevs).any(|((_, w), prev)| w.is_some() || prev.is_some());
            if wrote {
                *main
            } else {
                rev
            }
        }
        _ => rev,
    }
}

/// Compares every read of `disk` with `mem` at random revisions at or
/// above the compacted one. Returns false (and stops) as soon as `disk`
/// is broken: a broken store's answers are never used.
pub fn reads_agree<F: PageFile>(rng: &mut Rng, disk: &DiskStore<F>, mem: &MemStore, rev: i64, full: bool) -> bool {
    macro_rules! check {
        ($got:expr, $expected:expr, $($what:tt)*) => {{
            let got = $got;
            if disk.is_broken() {
                return false;
            }
            assert_eq!(got, $expected, $($what)*);
        }};
    }
    let floor = mem.compacted_revision().max(1);
    check!(disk.live_keys(), mem.live_keys(), "live_keys");
    for _ in 0..3 {
        let at = if rng.percent(50) { i64::MAX } else { rng.between(floor, rev) };
        let start = rng.key();
        let end = rng.end();
        let end = as_end(&end);
        let expected = scan_all(mem, &start, end, at);
        check!(scan_all(disk, &start, end, at), expected, "scan {start:?} {end:?} at {at}");
        check!(scan_rev_all(disk, &start, end, at), scan_rev_all(mem, &start, end, at), "scan_rev {start:?} {end:?}");
        check!(disk.count(&start, end, at), expected.len() as u64, "count {start:?} {end:?} at {at}");
        let limit = 1 + rng.below(4) as usize;
        let backward = rng.percent(50);
        let expected = scan_limited(mem, &start, end, at, limit, backward);
        check!(scan_limited(disk, &start, end, at, limit, backward), expected, "limited scan");
        let from = rng.between(floor + 1, rev + 1);
        let to = rng.between(from, rev + 1);
        let expected = history_all(mem, &start, end, from, to);
        check!(history_all(disk, &start, end, from, to), expected, "history {start:?} {end:?} [{from}, {to}]");
        let limit = 1 + rng.below(5) as usize;
        check!(
            history_limited(disk, &start, end, from, to, limit),
            history_limited(mem, &start, end, from, to, limit),
            ""
        );
    }
    for _ in 0..4 {
        let key = rng.key();
        let expected = mem.latest(&key).map(|kv| kv.to_owned_kv());
        check!(disk.latest(&key).map(|kv| kv.to_owned_kv()), expected, "latest {key:?}");
    }
    let n = rng.below(mem.live_keys() + 2);
    let high = rng.percent(50);
    check!(disk.key_at(n, high), mem.key_at(n, high), "key_at {n} {high}");
    if mem.live_keys() >= 2 || !(mem.compaction_pending() || disk.compaction_pending()) {
        check!(disk.split_key(), mem.split_key(), "split_key");
    }
    if full {
        check!(scan_all(disk, b"", End::Unbounded, rev), scan_all(mem, b"", End::Unbounded, rev), "full scan");
        let from = mem.compacted_revision() + 1;
        let expected = history_all(mem, b"", End::Unbounded, from, rev);
        check!(history_all(disk, b"", End::Unbounded, from, rev), expected, "full history from {from}");
        let verified = disk.verify();
        if disk.is_broken() {
            return false;
        }
        verified.unwrap();
    }
    true
}

/// How a harness reopens its store after a crash.
pub type Reopen<F> = Box<dyn Fn() -> PageCache<F>>;

/// A `DiskStore` and its model, with the operations since the last
/// durable checkpoint (to replay after a reopen).
pub struct Harness<F: PageFile> {
    pub disk: Option<DiskStore<F>>,
    pub mem: MemStore,
    /// The operations after the newest checkpoint known durable, each with
    /// its applied index.
    pub since_checkpoint: Vec<(u64, Op)>,
    /// The applied index of that checkpoint.
    pub durable_applied: u64,
    /// Operations applied: the applied index.
    pub applied: u64,
    pub rev: i64,
    pub reopen: Reopen<F>,
    /// The largest file, in pages, seen after a checkpoint.
    pub peak_pages: u64,
    /// Evictions and synchronous misses of the stores reopened away.
    pub evictions: u64,
    pub sync_misses: u64,
}

impl<F: PageFile> Harness<F> {
    pub fn new(reopen: Reopen<F>) -> Harness<F> {
        let (disk, recovered) = DiskStore::open(reopen()).unwrap();
        assert_eq!(recovered.applied_index, 0);
        let mem = MemStore::new();
        Harness {
            disk: Some(disk),
            mem,
            since_checkpoint: Vec::new(),
            durable_applied: 0,
            applied: 0,
            rev: 1,
            reopen,
            peak_pages: 0,
            evictions: 0,
            sync_misses: 0,
        }
    }

    pub fn disk(&self) -> &DiskStore<F> {
        self.disk.as_ref().unwrap()
    }

    pub fn disk_mut(&mut self) -> &mut DiskStore<F> {
        self.disk.as_mut().unwrap()
    }

    /// Applies `op` to both; their outputs must agree unless the disk
    /// store broke doing it. Returns false if it did.
    pub fn step(&mut self, op: Op) -> bool {
        let expected = apply(&mut self.mem, &op);
        let got = apply(self.disk_mut(), &op);
        self.rev = rev_after(self.rev, &op, &expected);
        self.applied += 1;
        self.since_checkpoint.push((self.applied, op));
        if self.disk().is_broken() {
            return false;
        }
        assert_eq!(got, expected, "outputs of {:?}", self.since_checkpoint.last());
        true
    }

    fn extra(applied: u64) -> Vec<u8> {
        format!("applied={applied}").into_bytes()
    }

    /// A synchronous checkpoint. False if the store broke.
    pub fn checkpoint(&mut self) -> bool {
        let applied = self.applied;
        match self.disk_mut().checkpoint_sync(applied, &Self::extra(applied)) {
            Ok(_) => {
                self.since_checkpoint.clear();
                self.durable_applied = applied;
                self.peak_pages = self.peak_pages.max(self.disk().file_pages());
                true
            }
            Err(_) => {
                assert!(self.disk().is_broken());
                false
            }
        }
    }

    /// A staged checkpoint with `ops` applied between begin and finish; the
    /// pages are written as the node would (to the file, not the cache).
    pub fn staged_checkpoint(&mut self, rng: &mut Rng, ops: usize) -> bool {
        let applied = self.applied;
        let Ok(checkpoint) = self.disk_mut().begin_checkpoint(applied, &Self::extra(applied)) else { return false };
        for _ in 0..ops {
            let op = random_op(rng, &self.mem, self.rev);
            if !self.step(op) {
                return false;
            }
        }
        let file = self.disk_mut().cache_mut().file_mut();
        let written = checkpoint.pages().iter().try_for_each(|(id, page)| file.write_page(*id, page));
        let written = written.and_then(|()| file.sync());
        let (meta_id, meta) = checkpoint.meta();
        let written = written.and_then(|()| file.write_page(meta_id, meta)).and_then(|()| file.sync());
        if let Err(e) = written {
            self.disk_mut().fail_checkpoint(checkpoint, e);
            return false;
        }
        if self.disk_mut().finish_checkpoint(checkpoint).is_err() || self.disk_mut().truncate_file().is_err() {
            return false;
        }
        self.since_checkpoint.retain(|(i, _)| *i > applied);
        self.durable_applied = applied;
        true
    }

    /// Reopens from the file (as after a crash) and replays the operations
    /// after the checkpoint it finds: the newest known durable one, or a
    /// newer one whose writing failed only after its meta page was synced.
    /// The result must equal the model.
    pub fn reopen(&mut self) {
        let stats = self.disk().cache_stats();
        self.evictions += stats.evictions;
        self.sync_misses += stats.sync_misses;
        self.disk = None;
        let (disk, recovered) = DiskStore::open((self.reopen)()).unwrap();
        let found = recovered.applied_index;
        assert!(found >= self.durable_applied && found <= self.applied, "reopened at applied index {found}");
        if found > 0 {
            assert_eq!(recovered.extra, Self::extra(found));
        }
        self.disk = Some(disk);
        self.since_checkpoint.retain(|(i, _)| *i > found);
        self.durable_applied = found;
        let replay: Vec<Op> = self.since_checkpoint.iter().map(|(_, op)| op.clone()).collect();
        for op in &replay {
            apply(self.disk_mut(), op);
        }
        assert!(!self.disk().is_broken(), "replay broke the store: {:?}", self.disk().error());
    }
}

/// Runs a random workload of `ops` operations; `on_step` may inject
/// faults (it returns false to skip comparisons while the store is broken).
pub fn run<F: PageFile>(seed: u64, ops: usize, reopen: Reopen<F>) -> Harness<F> {
    run_preloaded(seed, 0, ops, reopen)
}

/// `run` after `preload` requests of 16 puts each of distinct keys with
/// 300-byte values (data far larger than a small cache).
pub fn run_preloaded<F: PageFile>(seed: u64, preload: usize, ops: usize, reopen: Reopen<F>) -> Harness<F> {
    let mut rng = Rng::new(seed);
    let mut h = Harness::new(reopen);
    for i in 0..preload {
        let writes = (0..16).map(|j| (format!("/bulk/{i:05}/{j:02}").into_bytes(), Some((vec![j as u8; 300], 0))));
        assert!(h.step(Op::Request { main: h.rev + 1, writes: writes.collect() }));
        if i % 50 == 49 {
            assert!(h.checkpoint());
        }
    }
    for _ in 0..ops {
        match rng.below(100) {
            0..=86 => {
                let op = random_op(&mut rng, &h.mem, h.rev);
                assert!(h.step(op), "broke: {:?}", h.disk().error());
            }
            87..=89 => {
                assert!(h.checkpoint(), "checkpoint broke: {:?}", h.disk().error());
                assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
            }
            90..=91 => {
                let during = rng.below(4) as usize;
                assert!(h.staged_checkpoint(&mut rng, during), "staged checkpoint broke: {:?}", h.disk().error());
                assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
            }
            92..=93 => {
                h.reopen();
                if rng.percent(30) {
                    // A compaction pending at the checkpoint goes on after it.
                    finish_compaction(&mut h);
                }
                assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
            }
            _ => assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, false)),
        }
        if rng.percent(20) {
            assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, false));
        }
    }
    // Finish every compaction: then everything agrees, split_key and the
    // versions at or below the compacted revision (what stays stored) too.
    finish_compaction(&mut h);
    assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
    h.checkpoint();
    h.reopen();
    assert!(reads_agree(&mut rng, h.disk(), &h.mem, h.rev, true));
    h
}

/// Runs both stores' compactions to the end and compares every version
/// they still hold.
pub fn finish_compaction<F: PageFile>(h: &mut Harness<F>) {
    while !h.mem.compact_step(1000) {}
    while !h.disk_mut().compact_step(1000) {}
    let everything = |s: &dyn MvccStore| history_all(s, b"", End::Unbounded, 1, i64::MAX);
    assert_eq!(everything(h.disk()), everything(&h.mem), "stored versions after compaction");
}

/// A simulated disk whose reopen drops unsynced writes (a crash).
pub fn sim_reopen(cache_bytes: usize) -> Reopen<SimFile> {
    let file = SimFile::new(SimDisk::default());
    Box::new(move || {
        let crashed = file.disk.borrow().crashed();
        *file.disk.borrow_mut() = crashed;
        PageCache::new(file.clone(), cache_bytes).unwrap()
    })
}

#[test]
fn disk_store_matches_mem_store_under_writes_compactions_moves_checkpoints_and_crashes() {
    for_seeds("model", 12, |seed| {
        run(seed, 400, sim_reopen(4 << 20));
    });
}

#[test]
fn a_cache_far_smaller_than_the_data_gives_identical_answers() {
    for_seeds("small_cache", 3, |seed| {
        let h = run_preloaded(seed + 1000, 300, 600, sim_reopen(64 * crate::btree::PAGE_BYTES));
        let stats = h.disk().cache_stats();
        let pages = h.peak_pages;
        assert_eq!(h.disk().cache().capacity_pages(), 64);
        assert!(pages > 4 * 64, "data of only {pages} pages");
        let (evictions, sync_misses) = (h.evictions + stats.evictions, h.sync_misses + stats.sync_misses);
        assert!(evictions > 100 && sync_misses > 100, "{evictions} evictions, {sync_misses} sync misses");
        assert!(stats.resident <= 64, "{stats:?}");
    });
}

#[test]
fn disk_store_on_a_real_file_matches_mem_store_across_reopens() {
    let dir = TempDir::new("model");
    for_seeds("real_file", 2, |seed| {
        let path = dir.path(&format!("shard-{seed}.db"));
        let reopen: Reopen<DataFile> =
            Box::new(move || PageCache::new(DataFile::open(&path).unwrap(), 1 << 20).unwrap());
        run(seed + 2000, 300, reopen);
    });
}

#[test]
fn open_path_creates_a_formatted_file_and_reopens_it() {
    let dir = TempDir::new("open-path");
    let path = dir.path("shard.db");
    let (mut store, recovered) = DiskStore::open_path(&path, 1 << 20).unwrap();
    assert_eq!(recovered, Default::default());
    store.put(b"k", b"v", 0, Rev { main: 2, sub: 0 });
    store.checkpoint_sync(7, b"extra").unwrap();
    drop(store);
    assert!(!dir.path("shard.db.creating").exists());
    let (store, recovered) = DiskStore::open_path(&path, 1 << 20).unwrap();
    assert_eq!((recovered.applied_index, &recovered.extra[..]), (7, &b"extra"[..]));
    assert_eq!(store.latest(b"k").map(|kv| kv.value.to_vec()), Some(b"v".to_vec()));
    assert_eq!(store.applied_index(), 7);
}

fn put_version(value: &[u8], create: i64, version: i64, main: i64) -> crate::mvcc::Version {
    let put = crate::mvcc::PutVersion { value: value.to_vec(), create_revision: create, version, lease: 0 };
    crate::mvcc::Version { rev: Rev { main, sub: 0 }, put: Some(put) }
}

#[test]
fn insert_histories_compacts_at_the_compacted_revision_and_merges_a_present_key() {
    let mut long = vec![b'q'; 600];
    for key in [b"k".to_vec(), std::mem::take(&mut long)] {
        let mut disk = DiskStore::open(PageCache::new(SimFile::new(SimDisk::default()), 1 << 20).unwrap()).unwrap().0;
        let mut mem = MemStore::new();
        let tombstone = |main| crate::mvcc::Version { rev: Rev { main, sub: 0 }, put: None };
        let stores: [&mut dyn MvccStore; 2] = [&mut disk, &mut mem];
        for s in stores {
            s.put(&key, b"here", 0, Rev { main: 8, sub: 0 });
            s.begin_compact(6);
            while !s.compact_step(10) {}
            let incoming = KeyHistory {
                key: key.clone(),
                versions: vec![
                    put_version(b"a", 2, 1, 2),
                    put_version(b"b", 2, 2, 4),
                    tombstone(5),
                    put_version(b"c", 7, 1, 7),
                ],
            };
            let gone = KeyHistory { key: b"gone".to_vec(), versions: vec![put_version(b"x", 1, 1, 1), tombstone(3)] };
            s.insert_histories(vec![incoming, gone]);
        }
        let everything = |s: &dyn MvccStore| history_all(s, b"", End::Unbounded, 1, i64::MAX);
        let expected = everything(&mem);
        assert_eq!(expected.len(), 2, "the versions after 6 stay: {expected:?}");
        assert_eq!(everything(&disk), expected);
        assert_eq!(disk.live_keys(), mem.live_keys());
        assert_eq!(disk.stored_keys(), 1);
        assert_eq!(disk.latest(&key).map(|kv| kv.to_owned_kv()), mem.latest(&key).map(|kv| kv.to_owned_kv()));
        disk.verify().unwrap();
    }
}
