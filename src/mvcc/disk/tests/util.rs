//! Test helpers: a seeded PRNG and seed loops, temporary directories under
//! /var/tmp, a simulated disk (unsynced writes are lost or torn at a
//! crash), a file that fails after a countdown, and random workloads.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::btree::{Page, PageId, PAGE_BYTES};
use crate::mvcc::disk::{PageFile, SHORT_KEY_BYTES_MAX};
use crate::mvcc::{End, Event, KeyValue, MvccStore};

/// xorshift64*: a failing seed replays exactly.
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

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// A key from a mix of shapes: a few hot keys, short keys over a tiny
    /// alphabet with 0x00 and 0xFF (prefixes of one another, the empty
    /// key), "registry" keys, and keys around the 480-byte long-key
    /// boundary sharing one of two 480-byte prefixes (so long-key groups
    /// hold several keys).
    pub fn key(&mut self) -> Vec<u8> {
        const ALPHABET: [u8; 5] = [0x00, 0x01, b'a', b'b', 0xFF];
        match self.below(100) {
            // Hot keys: many versions each (scans seek past them).
            0..=11 => vec![b'h', ALPHABET[self.below(3) as usize]],
            12..=54 => (0..self.below(4)).map(|_| ALPHABET[self.below(5) as usize]).collect(),
            55..=84 => format!("/registry/pods/{}", self.below(300)).into_bytes(),
            _ => {
                let mut key = vec![if self.percent(50) { b'x' } else { 0 }; SHORT_KEY_BYTES_MAX - 1];
                for _ in 0..self.below(4) {
                    key.push(ALPHABET[self.below(5) as usize]);
                }
                if self.percent(5) {
                    key.extend(std::iter::repeat_n(b'z', 1500));
                }
                key
            }
        }
    }

    /// A range end: `Single`, `Unbounded`, or before a random key.
    pub fn end(&mut self) -> Option<Vec<u8>> {
        match self.below(10) {
            0 => Some(Vec::new()),
            1 | 2 => None,
            _ => Some(self.key()),
        }
    }

    /// A value: mostly small, some around the inline limit, a few large.
    pub fn value(&mut self) -> Vec<u8> {
        let len = match self.below(100) {
            0..=84 => self.below(40),
            85..=96 => 1800 + self.below(600),
            _ => 5000 + self.below(15_000),
        } as usize;
        let fill = self.next_u64() as u8;
        let mut value = vec![fill; len];
        if let Some(first) = value.first_mut() {
            *first = self.next_u64() as u8;
        }
        value
    }
}

/// `None` → `Unbounded`, empty → `Single`, else `Before`.
pub fn as_end(end: &Option<Vec<u8>>) -> End<'_> {
    match end {
        None => End::Unbounded,
        Some(e) if e.is_empty() => End::Single,
        Some(e) => End::Before(e),
    }
}

/// The seeds to run: `DISK_SEED` alone if set, else `DISK_SEEDS` (or
/// `default_count`) seeds from 1.
pub fn for_seeds(name: &str, default_count: u64, test: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("DISK_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let n = std::env::var("DISK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| test(seed))) {
            eprintln!("{name} failed with seed {seed}; replay with DISK_SEED={seed}");
            resume_unwind(panic);
        }
    }
}

/// A directory under /var/tmp (a real disk, not tmpfs), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/var/tmp/corekv-disk-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a simulated disk holds: pages made durable by a sync, and writes
/// issued since (lost at a crash).
#[derive(Clone, Default)]
pub struct SimDisk {
    pub durable: Vec<Option<Page>>,
    pub pending: Vec<(PageId, Page)>,
    pub len_pages: u64,
}

impl SimDisk {
    fn put(pages: &mut Vec<Option<Page>>, id: PageId, page: Page) {
        let i = id.0 as usize;
        if pages.len() <= i {
            pages.resize_with(i + 1, || None);
        }
        pages[i] = Some(page);
    }

    /// The durable image with `page` written at `id` (as if it landed).
    pub fn land(&mut self, id: PageId, page: Page) {
        self.len_pages = self.len_pages.max(id.0 + 1);
        SimDisk::put(&mut self.durable, id, page);
    }

    /// The durable page at `id`, or zeros.
    pub fn durable_page(&self, id: PageId) -> Page {
        self.durable.get(id.0 as usize).and_then(|p| p.clone()).unwrap_or_else(Page::zeroed)
    }

    /// What survives a crash now: the durable pages only.
    pub fn crashed(&self) -> SimDisk {
        SimDisk { durable: self.durable.clone(), pending: Vec::new(), len_pages: self.len_pages }
    }
}

/// A `PageFile` on a shared simulated disk.
#[derive(Clone)]
pub struct SimFile {
    pub disk: Rc<RefCell<SimDisk>>,
}

impl SimFile {
    pub fn new(disk: SimDisk) -> SimFile {
        SimFile { disk: Rc::new(RefCell::new(disk)) }
    }
}

impl PageFile for SimFile {
    fn path(&self) -> &Path {
        Path::new("sim.db")
    }

    fn read_page(&self, id: PageId, page: &mut Page) -> io::Result<()> {
        let disk = self.disk.borrow();
        if id.0 >= disk.len_pages {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        let pending = disk.pending.iter().rev().find(|(p, _)| *p == id).map(|(_, page)| page.clone());
        *page = pending.unwrap_or_else(|| disk.durable_page(id));
        Ok(())
    }

    fn write_page(&mut self, id: PageId, page: &Page) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.len_pages = disk.len_pages.max(id.0 + 1);
        disk.pending.push((id, page.clone()));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        for (id, page) in std::mem::take(&mut disk.pending) {
            SimDisk::put(&mut disk.durable, id, page);
        }
        Ok(())
    }

    fn len_pages(&self) -> io::Result<u64> {
        Ok(self.disk.borrow().len_pages)
    }

    fn set_len_pages(&mut self, pages: u64) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.len_pages = pages;
        disk.durable.truncate(pages as usize);
        disk.pending.retain(|(id, _)| id.0 < pages);
        Ok(())
    }
}

/// A file that fails every operation once a countdown runs out, while armed.
pub struct FaultyFile<F> {
    pub inner: F,
    countdown: Cell<Option<u64>>,
    pub injected: Cell<u64>,
}

impl<F> FaultyFile<F> {
    pub fn new(inner: F) -> FaultyFile<F> {
        FaultyFile { inner, countdown: Cell::new(None), injected: Cell::new(0) }
    }

    /// Fails the operation after the next `ops` ones, and every one after
    /// it (the store is reopened over a fresh, unarmed file).
    pub fn arm(&self, ops: u64) {
        self.countdown.set(Some(ops));
    }

    fn tick(&self) -> io::Result<()> {
        match self.countdown.get() {
            Some(0) => {
                self.injected.set(self.injected.get() + 1);
                Err(io::Error::other("injected fault"))
            }
            Some(n) => {
                self.countdown.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl<F: PageFile> PageFile for FaultyFile<F> {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn read_page(&self, id: PageId, page: &mut Page) -> io::Result<()> {
        self.tick()?;
        self.inner.read_page(id, page)
    }
    fn write_page(&mut self, id: PageId, page: &Page) -> io::Result<()> {
        self.tick()?;
        self.inner.write_page(id, page)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.tick()?;
        self.inner.sync()
    }
    fn len_pages(&self) -> io::Result<u64> {
        self.inner.len_pages()
    }
    fn set_len_pages(&mut self, pages: u64) -> io::Result<()> {
        self.tick()?;
        self.inner.set_len_pages(pages)
    }
}

/// Reads page `id` of a file as the node would (its own read, not the cache).
pub fn read_raw(file: &impl PageFile, id: PageId) -> Page {
    let mut page = Page::zeroed();
    file.read_page(id, &mut page).unwrap();
    page
}

/// Bytes of page `id` of a real file, read with std.
pub fn read_file_page(path: &Path, id: PageId) -> Page {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap();
    let mut page = Page::zeroed();
    file.read_exact_at(page.bytes_mut(), id.0 * PAGE_BYTES as u64).unwrap();
    page
}

pub fn scan_all(store: &dyn MvccStore, start: &[u8], end: End<'_>, at: i64) -> Vec<KeyValue> {
    let mut out = Vec::new();
    store.scan(start, end, at, &mut |kv| {
        out.push(kv.to_owned_kv());
        ControlFlow::Continue(())
    });
    out
}

pub fn scan_rev_all(store: &dyn MvccStore, start: &[u8], end: End<'_>, at: i64) -> Vec<KeyValue> {
    let mut out = Vec::new();
    store.scan_rev(start, end, at, &mut |kv| {
        out.push(kv.to_owned_kv());
        ControlFlow::Continue(())
    });
    out
}

/// The first `limit` keys a scan (either way) yields before breaking.
pub fn scan_limited(
    store: &dyn MvccStore,
    start: &[u8],
    end: End<'_>,
    at: i64,
    limit: usize,
    rev: bool,
) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let mut f = |kv: crate::mvcc::KvRef<'_>| {
        out.push(kv.to_owned_kv());
        if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    if rev {
        store.scan_rev(start, end, at, &mut f);
    } else {
        store.scan(start, end, at, &mut f);
    }
    out
}

pub fn history_all(store: &dyn MvccStore, start: &[u8], end: End<'_>, from: i64, to: i64) -> Vec<Event> {
    let mut out = Vec::new();
    store.history(start, end, from, to, &mut |e| {
        out.push(e);
        ControlFlow::Continue(())
    });
    out
}

/// A history read that breaks after `limit` events.
pub fn history_limited(
    store: &dyn MvccStore,
    start: &[u8],
    end: End<'_>,
    from: i64,
    to: i64,
    limit: usize,
) -> Vec<Event> {
    let mut out = Vec::new();
    store.history(start, end, from, to, &mut |e| {
        out.push(e);
        if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    out
}
