//! The page cache of one shard's data file, and the file under it.
//!
//! Owns: `PageCache` (a `PageStore` with a fixed memory budget and CLOCK
//! eviction, reads verified once, misses read synchronously or reported for
//! an asynchronous load), the `PageFile` boundary under it and `DataFile`
//! (positional std I/O on one file). Never touches: the tree's logic,
//! revisions, or io_uring (the node reads pages itself and hands them in
//! with `insert_loaded`).
//!
//! # What the cache holds, and why eviction is always safe
//!
//! Only clean pages: copies of what the file holds at their id. The tree
//! keeps every page changed since the last checkpoint began ("dirty") and
//! every page of the checkpoint being written in its own maps and reads
//! those before asking the store (btree tree.rs `Tree::page`), so evicting
//! any cached page loses nothing: the next read of it goes to the file.
//! The budget counts cached pages only; the tree's dirty pages are bounded
//! by how often the node checkpoints (`DiskStore::dirty_pages`), and pages
//! a reader still holds (an `Arc`) stay alive until it drops them.
//!
//! # Reads
//!
//! A hit returns the cached page. A miss, in the normal mode, reads the
//! page with pread, verifies its checksum and id, caches it and counts a
//! `sync_misses` (the correct fallback; the node avoids it by prefetching).
//! In planning mode (`set_fallback(false)`) a miss returns
//! `StoreError::Miss(id)` and records the id; the tree then reports
//! `Error::Miss` having changed nothing.
//!
//! # Loads from elsewhere, and which ones are stale
//!
//! `insert_loaded` adds a page the node read itself (O_DIRECT through
//! io_uring). It is checked against a `LoadTicket` taken when the page was
//! found missing: a page the tree still references is rewritten only after
//! the checkpoint that stops referencing it is durable (btree alloc.rs), so
//! if no checkpoint finished since the ticket, the bytes read are the ones
//! the tree references. Once one finished (the epoch moved), a load is
//! dropped unread; the next plan asks for the page again if it is needed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::btree::{Page, PageId, PageStore, StoreError, PAGE_BYTES};

/// The fewest pages a cache holds whatever its budget: enough for a few
/// root-to-leaf paths.
pub const CACHE_PAGES_MIN: usize = 16;

/// The file under a cache: whole pages at `id × PAGE_BYTES`.
pub trait PageFile {
    /// The file's path, for error messages.
    fn path(&self) -> &Path;
    /// Reads page `id` into `page` (unverified). A page past the end of
    /// the file is an error.
    fn read_page(&self, id: PageId, page: &mut Page) -> io::Result<()>;
    /// Writes page `id`; durable only after `sync`.
    fn write_page(&mut self, id: PageId, page: &Page) -> io::Result<()>;
    /// fdatasync.
    fn sync(&mut self) -> io::Result<()>;
    /// The file's length in whole pages.
    fn len_pages(&self) -> io::Result<u64>;
    /// Cuts the file to `pages` pages.
    fn set_len_pages(&mut self, pages: u64) -> io::Result<()>;
}

/// A data file read and written with pread, pwrite and fdatasync.
#[derive(Debug)]
pub struct DataFile {
    file: File,
    path: PathBuf,
}

impl DataFile {
    /// Opens `path` for reading and writing, creating an empty file if there
    /// is none.
    pub fn open(path: &Path) -> io::Result<DataFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(DataFile { file, path: path.to_path_buf() })
    }
}

impl PageFile for DataFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_page(&self, id: PageId, page: &mut Page) -> io::Result<()> {
        self.file.read_exact_at(page.bytes_mut(), id.byte_offset())
    }

    fn write_page(&mut self, id: PageId, page: &Page) -> io::Result<()> {
        self.file.write_all_at(page.bytes(), id.byte_offset())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len_pages(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len() / PAGE_BYTES as u64)
    }

    fn set_len_pages(&mut self, pages: u64) -> io::Result<()> {
        self.file.set_len(pages.saturating_mul(PAGE_BYTES as u64))
    }
}

/// What the cache counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads that missed and were read synchronously (pread).
    pub sync_misses: u64,
    /// Reads that missed in planning mode (reported, not read).
    pub planned_misses: u64,
    /// Pages added by `insert_loaded`.
    pub loaded: u64,
    /// Loads dropped: stale (a checkpoint finished since their ticket) or
    /// already cached.
    pub loads_dropped: u64,
    /// Pages evicted to stay within the budget.
    pub evictions: u64,
    /// Pages cached now.
    pub resident: u64,
}

/// Proof of when a set of missing pages was planned; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadTicket(u64);

/// One cached page.
struct Slot {
    id: PageId,
    page: Arc<Page>,
    referenced: bool,
}

/// The cached pages with a CLOCK hand: a hit sets a page's bit; eviction
/// sweeps, clearing bits, and takes the first page whose bit is clear.
#[derive(Default)]
struct Clock {
    index: HashMap<PageId, usize>,
    slots: Vec<Slot>,
    hand: usize,
}

impl Clock {
    fn get(&mut self, id: PageId) -> Option<Arc<Page>> {
        let slot = &mut self.slots[*self.index.get(&id)?];
        slot.referenced = true;
        Some(Arc::clone(&slot.page))
    }

    /// Caches `page` at `id` (replacing what was cached there); returns
    /// whether a page was evicted to make room.
    fn insert(&mut self, id: PageId, page: Arc<Page>, capacity: usize) -> bool {
        if let Some(&i) = self.index.get(&id) {
            self.slots[i] = Slot { id, page, referenced: true };
            return false;
        }
        if self.slots.len() < capacity {
            self.index.insert(id, self.slots.len());
            self.slots.push(Slot { id, page, referenced: false });
            return false;
        }
        // At most one sweep clears every bit, so this ends within two.
        loop {
            let hand = self.hand % self.slots.len();
            self.hand = hand + 1;
            let slot = &mut self.slots[hand];
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.index.remove(&slot.id);
            *slot = Slot { id, page, referenced: false };
            self.index.insert(id, hand);
            return true;
        }
    }

    /// Forgets the pages at or past `page_count`.
    fn drop_from(&mut self, page_count: u64) {
        if self.slots.iter().all(|s| s.id.0 < page_count) {
            return;
        }
        self.slots.retain(|s| s.id.0 < page_count);
        self.index = self.slots.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        self.hand = 0;
    }
}

/// A page cache over one data file; see the module comment.
pub struct PageCache<F: PageFile = DataFile> {
    file: F,
    capacity: usize,
    clock: RefCell<Clock>,
    /// Pages the file holds (known to the cache: its own writes, the
    /// node's checkpoints, truncation).
    page_count: u64,
    fallback: Cell<bool>,
    planned: RefCell<Vec<PageId>>,
    /// Checkpoints finished (and truncations) so far; see `LoadTicket`.
    epoch: u64,
    stats: Cell<CacheStats>,
}

impl<F: PageFile> PageCache<F> {
    /// A cache of at most `budget_bytes` of pages (at least
    /// `CACHE_PAGES_MIN` pages) over `file`.
    pub fn new(file: F, budget_bytes: usize) -> io::Result<PageCache<F>> {
        let page_count = file.len_pages()?;
        Ok(PageCache {
            file,
            capacity: (budget_bytes / PAGE_BYTES).max(CACHE_PAGES_MIN),
            clock: RefCell::new(Clock::default()),
            page_count,
            fallback: Cell::new(true),
            planned: RefCell::new(Vec::new()),
            epoch: 0,
            stats: Cell::new(CacheStats::default()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The file under the cache.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The file under the cache, writable (tests: fault injection).
    pub fn file_mut(&mut self) -> &mut F {
        &mut self.file
    }

    /// The most pages the cache holds.
    pub fn capacity_pages(&self) -> usize {
        self.capacity
    }

    /// What the cache counted.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.stats.get();
        stats.resident = self.clock.borrow().slots.len() as u64;
        stats
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Normal mode (`true`: misses are read synchronously) or planning mode
    /// (`false`: misses are reported and recorded).
    pub fn set_fallback(&self, fallback: bool) {
        self.fallback.set(fallback);
    }

    /// How many ids missed in planning mode since the last `take_planned`.
    pub fn planned_len(&self) -> usize {
        self.planned.borrow().len()
    }

    /// Takes the ids that missed in planning mode.
    pub fn take_planned(&self) -> Vec<PageId> {
        self.planned.take()
    }

    /// A ticket for pages found missing now.
    pub fn ticket(&self) -> LoadTicket {
        LoadTicket(self.epoch)
    }

    /// Whether page `id` is cached.
    pub fn contains(&self, id: PageId) -> bool {
        self.clock.borrow().index.contains_key(&id)
    }

    /// Adds a page read elsewhere (e.g. O_DIRECT through io_uring) for a
    /// miss planned under `ticket`. Returns `Ok(true)` if it was cached,
    /// `Ok(false)` if dropped (stale or already cached), and the corruption
    /// if its checksum or id is wrong.
    pub fn insert_loaded(&self, ticket: LoadTicket, id: PageId, page: Page) -> Result<bool, StoreError> {
        if ticket.0 != self.epoch || self.contains(id) || id < PageId::FIRST_DATA {
            self.count(|s| s.loads_dropped += 1);
            return Ok(false);
        }
        page.verify(id).map_err(|corruption| StoreError::Corrupt { page: id, corruption })?;
        self.cache(id, Arc::new(page));
        self.count(|s| s.loaded += 1);
        Ok(true)
    }

    /// A checkpoint is durable: its pages are what the file holds at their
    /// ids (the tree reads them from the store from now on), and loads
    /// planned before now may be stale.
    pub fn checkpoint_finished(&mut self, pages: &[(PageId, Arc<Page>)], page_count: u64) {
        self.epoch += 1;
        self.page_count = self.page_count.max(page_count);
        for (id, page) in pages {
            self.cache(*id, Arc::clone(page));
        }
    }

    fn cache(&self, id: PageId, page: Arc<Page>) {
        if id < PageId::FIRST_DATA {
            return;
        }
        if self.clock.borrow_mut().insert(id, page, self.capacity) {
            self.count(|s| s.evictions += 1);
        }
    }

    fn io(op: &'static str, page: Option<PageId>) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { op, page, source }
    }

    fn read_file(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        let mut page = Page::zeroed();
        self.file.read_page(id, &mut page).map_err(Self::io("read", Some(id)))?;
        page.verify(id).map_err(|corruption| StoreError::Corrupt { page: id, corruption })?;
        Ok(Arc::new(page))
    }
}

impl<F: PageFile> PageStore for PageCache<F> {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        if id < PageId::FIRST_DATA {
            // Meta pages are read only when the tree is opened.
            return self.read_file(id);
        }
        if let Some(page) = self.clock.borrow_mut().get(id) {
            self.count(|s| s.hits += 1);
            return Ok(page);
        }
        if !self.fallback.get() {
            self.count(|s| s.planned_misses += 1);
            self.planned.borrow_mut().push(id);
            return Err(StoreError::Miss(id));
        }
        let page = self.read_file(id)?;
        self.count(|s| s.sync_misses += 1);
        self.cache(id, Arc::clone(&page));
        Ok(page)
    }

    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        self.file.write_page(id, page).map_err(Self::io("write", Some(id)))?;
        self.page_count = self.page_count.max(id.0 + 1);
        self.cache(id, Arc::clone(page));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync().map_err(Self::io("sync", None))
    }

    fn page_count(&self) -> u64 {
        self.page_count
    }

    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        if page_count >= self.page_count {
            return Ok(());
        }
        self.file.set_len_pages(page_count).map_err(Self::io("truncate", Some(PageId(page_count))))?;
        self.page_count = page_count;
        self.epoch += 1;
        self.clock.borrow_mut().drop_from(page_count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(id: u64, fill: u8) -> Arc<Page> {
        let mut page = Page::zeroed();
        page.bytes_mut()[100] = fill;
        page.seal(PageId(id));
        Arc::new(page)
    }

    #[test]
    fn clock_keeps_referenced_pages_and_stays_within_capacity() {
        let mut clock = Clock::default();
        for id in 0..4 {
            assert!(!clock.insert(PageId(id), sealed(id, 0), 4));
        }
        assert!(clock.get(PageId(0)).is_some());
        assert!(clock.insert(PageId(10), sealed(10, 0), 4));
        assert!(clock.get(PageId(0)).is_some(), "a referenced page survives a sweep");
        assert_eq!(clock.slots.len(), 4);
        assert_eq!(clock.index.len(), 4);
        for id in 20..100 {
            clock.insert(PageId(id), sealed(id, 0), 4);
            assert_eq!(clock.slots.len(), 4);
        }
        for (id, &i) in &clock.index {
            assert_eq!(clock.slots[i].id, *id);
        }
        clock.drop_from(50);
        assert!(clock.slots.iter().all(|s| s.id.0 < 50));
    }
}
