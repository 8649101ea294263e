//! The page store boundary, and the in-memory store used by tests.
//!
//! Owns: the `PageStore` trait and `MemStore`. Never touches: tree logic,
//! allocation (the tree decides which ids to write) or caching policy.

use std::sync::Arc;

use crate::btree::error::StoreError;
use crate::btree::page::{Page, PageId};

/// Where a tree's pages live: a file, a cache in front of one, or memory.
///
/// Every page is `PAGE_BYTES` long, written whole at `id × PAGE_BYTES`,
/// and 4 KiB-aligned in memory (`Page`), so an O_DIRECT implementation can
/// hand the buffers to the kernel as they are.
///
/// The tree reads through `read` during operations; it writes only while a
/// checkpoint is applied, in the order `Tree::checkpoint` documents (the
/// staged form, `Tree::begin_checkpoint`, lets an asynchronous caller do the
/// writes and syncs itself and skip `write`/`sync` here entirely).
pub trait PageStore {
    /// The page last written at `id`, its checksum and id verified
    /// (`StoreError::Corrupt` otherwise). A caching store returns
    /// `StoreError::Miss(id)` for a page it does not hold; the tree then
    /// reports `Error::Miss(id)` without having changed anything, and the
    /// caller loads the page (asynchronously) and retries.
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError>;

    /// Writes a sealed page at `id`, growing the store if needed. Durable
    /// only after `sync`.
    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError>;

    /// Makes every write so far durable (fdatasync).
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Pages the store holds (its length over `PAGE_BYTES`).
    fn page_count(&self) -> u64;

    /// Drops every page at or past `page_count` (shrinks the file); does
    /// nothing if the store is not longer than that.
    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError>;
}

impl<S: PageStore + ?Sized> PageStore for &mut S {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        (**self).read(id)
    }
    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        (**self).write(id, page)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn page_count(&self) -> u64 {
        (**self).page_count()
    }
    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        (**self).truncate(page_count)
    }
}

/// Pages in memory. Reads verify checksums as a file store does, so tests
/// can corrupt a page (`set_raw`) and see the error. Cloning is cheap (pages
/// are shared), which crash tests use to keep disk images.
#[derive(Clone, Default)]
pub struct MemStore {
    pages: Vec<Option<Arc<Page>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The stored bytes of page `id`, unverified.
    pub fn raw(&self, id: PageId) -> Option<&Arc<Page>> {
        self.pages.get(usize::try_from(id.0).ok()?)?.as_ref()
    }

    /// Replaces page `id` with arbitrary bytes (`None`: never written).
    pub fn set_raw(&mut self, id: PageId, page: Option<Page>) {
        let Ok(index) = usize::try_from(id.0) else { return };
        if self.pages.len() <= index {
            self.pages.resize(index + 1, None);
        }
        self.pages[index] = page.map(Arc::new);
    }
}

impl PageStore for MemStore {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        let page_count = self.page_count();
        let slot = usize::try_from(id.0).ok().and_then(|i| self.pages.get(i));
        let Some(slot) = slot else { return Err(StoreError::OutOfRange { page: id, page_count }) };
        // A page never written reads as zeros, which fail the checksum.
        let page = slot.clone().unwrap_or_else(|| Arc::new(Page::zeroed()));
        page.verify(id).map_err(|corruption| StoreError::Corrupt { page: id, corruption })?;
        Ok(page)
    }

    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        debug_assert!(page.verify(id).is_ok(), "unsealed page written at {id}");
        self.set_raw(id, None);
        if let Ok(index) = usize::try_from(id.0) {
            self.pages[index] = Some(Arc::clone(page));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }

    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        if let Ok(n) = usize::try_from(page_count) {
            self.pages.truncate(n);
        }
        Ok(())
    }
}
