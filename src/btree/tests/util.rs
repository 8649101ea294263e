//! Test helpers: a seeded PRNG, seed loops that print the failing seed, a
//! model comparison, and stores that miss or fail on purpose.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::btree::{Cursor, Error, MemStore, Page, PageId, PageStore, StoreError, Tree};

pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// Key-value pairs in the order read.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// xorshift64*: small, fast, and a failing seed replays exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seeds to run: `BTREE_SEED` alone if set, else `BTREE_SEEDS` (or
/// `default_count`) seeds from 1.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("BTREE_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("BTREE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
    (1..=count).collect()
}

/// Runs `test` for each seed; a failure prints how to replay it.
pub fn for_seeds(name: &str, default_count: u64, test: impl Fn(u64)) {
    for seed in seeds(default_count) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| test(seed))) {
            eprintln!("{name} failed with seed {seed}; replay with BTREE_SEED={seed}");
            resume_unwind(panic);
        }
    }
}

/// A key drawn from a mix of shapes: short random keys over a small
/// alphabet (shared prefixes, collisions), ascending appends, and long keys
/// (`long_percent` of them; many long keys make deep, narrow trees).
pub fn random_key_with(rng: &mut Rng, counter: &mut u64, long_percent: u64) -> Vec<u8> {
    if rng.percent(long_percent) {
        let len = 1 + rng.below(crate::btree::KEY_BYTES_MAX as u64) as usize;
        let mut key = vec![b'a' + rng.below(3) as u8; len];
        key[len - 1] = b'a' + rng.below(26) as u8;
        return key;
    }
    if rng.percent(55) {
        let len = 1 + rng.below(12) as usize;
        return (0..len).map(|_| b'a' + rng.below(6) as u8).collect();
    }
    *counter += 1;
    let mut key = b"/registry/pods/".to_vec();
    key.extend_from_slice(&counter.to_be_bytes());
    key
}

/// `random_key_with` 5% long keys.
pub fn random_key(rng: &mut Rng, counter: &mut u64) -> Vec<u8> {
    random_key_with(rng, counter, 5)
}

/// A value: mostly small, some around the inline limit, a few overflowing.
pub fn random_value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=79 => rng.below(120),
        80..=93 => 500 + rng.below(2000),
        _ => 2000 + rng.below(20_000),
    } as usize;
    let fill = rng.next_u64() as u8;
    let mut value = vec![fill; len];
    if let Some(first) = value.first_mut() {
        *first = rng.next_u64() as u8;
    }
    value
}

/// Every entry from `cursor`, with values read, at most `limit` of them.
pub fn collect<S: PageStore + ?Sized>(
    tree: &Tree,
    store: &S,
    mut cursor: Cursor,
    limit: usize,
) -> Result<Pairs, Error> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(entry) = cursor.next(tree, store)? else { break };
        let key = entry.key.to_vec();
        let value = entry.value;
        let mut bytes = Vec::new();
        tree.read_value(store, value, &mut bytes)?;
        out.push((key, bytes));
    }
    Ok(out)
}

/// The model's entries from `from` in the cursor's direction.
pub fn model_range(model: &Model, from: Bound<&[u8]>, forward: bool, limit: usize) -> Pairs {
    let from = from.map(<[u8]>::to_vec);
    let pairs = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    if forward {
        model.range((from, Bound::Unbounded)).take(limit).map(pairs).collect()
    } else {
        model.range((Bound::Unbounded, from)).rev().take(limit).map(pairs).collect()
    }
}

/// Asserts that the tree holds exactly the model, both directions, and
/// that its page accounting is exact.
pub fn assert_matches<S: PageStore + ?Sized>(tree: &Tree, store: &S, model: &Model) {
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let forward = collect(tree, store, Cursor::forward(Bound::Unbounded), usize::MAX).expect("forward scan");
    assert!(forward == all, "forward scan: {} entries, model {}", forward.len(), all.len());
    let mut backward = collect(tree, store, Cursor::backward(Bound::Unbounded), usize::MAX).expect("backward scan");
    backward.reverse();
    assert!(backward == all, "backward scan differs from the model");
    assert_eq!(tree.len(), model.len() as u64);
    tree.verify(store).expect("verify");
}

/// A store that fails every operation once a countdown of operations runs
/// out, while armed.
pub struct FaultyStore {
    pub inner: MemStore,
    countdown: Cell<Option<u64>>,
    pub injected: Cell<u64>,
}

impl FaultyStore {
    pub fn new(inner: MemStore) -> FaultyStore {
        FaultyStore { inner, countdown: Cell::new(None), injected: Cell::new(0) }
    }

    /// Fails the operation after the next `ops` ones succeed, and every
    /// operation after it until `disarm`.
    pub fn arm(&self, ops: u64) {
        self.countdown.set(Some(ops));
    }

    pub fn disarm(&self) {
        self.countdown.set(None);
    }

    fn tick(&self, op: &'static str, page: Option<PageId>) -> Result<(), StoreError> {
        match self.countdown.get() {
            Some(0) => {
                self.injected.set(self.injected.get() + 1);
                let source = std::io::Error::other("injected fault");
                Err(StoreError::Io { op, page, source })
            }
            Some(n) => {
                self.countdown.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl PageStore for FaultyStore {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        self.tick("read", Some(id))?;
        self.inner.read(id)
    }
    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        self.tick("write", Some(id))?;
        self.inner.write(id, page)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.tick("sync", None)?;
        self.inner.sync()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        self.tick("truncate", None)?;
        self.inner.truncate(page_count)
    }
}

/// A caching store in miniature: reads of pages not loaded miss.
pub struct MissStore {
    pub inner: MemStore,
    pub resident: HashSet<PageId>,
    pub misses: u64,
}

impl MissStore {
    pub fn load(&mut self, id: PageId) {
        self.misses += 1;
        self.resident.insert(id);
    }
}

impl PageStore for MissStore {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        if !self.resident.contains(&id) {
            return Err(StoreError::Miss(id));
        }
        self.inner.read(id)
    }
    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        self.resident.insert(id);
        self.inner.write(id, page)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        self.resident.retain(|id| id.0 < page_count);
        self.inner.truncate(page_count)
    }
}
