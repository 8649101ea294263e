//! Page allocation and the rules for reusing freed pages.
//!
//! Owns: the sets of free page ids and the file's length in pages. Never
//! touches: page contents, the store, or the tree's shape.
//!
//! A page referenced by the newest durable checkpoint must not be
//! overwritten until a newer checkpoint is durable; a page allocated since
//! the last checkpoint began is referenced by nothing durable. So a freed
//! page goes:
//!
//! - straight to `free` if it was allocated since the last checkpoint began;
//! - else to `freed`. When the next checkpoint begins, `freed` becomes
//!   `releasing`: that checkpoint lists those pages as free, but they are
//!   reused only once it is durable (`finish_checkpoint`).
//!
//! The pages holding a checkpoint's free list (`list_pages`) are referenced
//! by it, so the checkpoint after it releases them the same way.
//!
//! `allocate` hands out the lowest free id, so live pages drift to the
//! front of the file and the free tail can be cut off at each checkpoint.

use std::collections::BTreeSet;

use crate::btree::freelist::IDS_PER_PAGE;
use crate::btree::page::PageId;

/// The free list a checkpoint writes.
pub(crate) struct FreeListPlan {
    /// Every id free in the checkpoint's view, ascending per set.
    pub ids: Vec<PageId>,
    /// The pages to write the list to (possibly more than needed; extra
    /// pages hold empty lists).
    pub pages: Vec<PageId>,
    /// The file length the checkpoint needs.
    pub page_count: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Allocator {
    /// Reusable now.
    free: BTreeSet<PageId>,
    /// Freed since the last checkpoint began; still referenced by it.
    freed: Vec<PageId>,
    /// Listed free by the checkpoint being written; reusable once durable.
    releasing: Vec<PageId>,
    /// Pages holding the free list of the last checkpoint begun (or opened).
    list_pages: Vec<PageId>,
    /// The file's length in pages: every id in use is below it.
    page_count: u64,
}

impl Allocator {
    /// The allocator of a new, empty file (just the meta pages).
    pub fn empty() -> Allocator {
        Allocator { page_count: PageId::FIRST_DATA.0, ..Allocator::default() }
    }

    /// The allocator of an opened checkpoint.
    pub fn opened(free: BTreeSet<PageId>, list_pages: Vec<PageId>, page_count: u64) -> Allocator {
        Allocator { free, list_pages, page_count, ..Allocator::default() }
    }

    /// The file's length in pages.
    pub fn page_count(&self) -> u64 {
        self.page_count
    }

    /// Pages free now or after the checkpoint in flight.
    pub fn free_pages(&self) -> usize {
        self.free.len() + self.freed.len() + self.releasing.len()
    }

    /// A page id to write a new page to.
    pub fn allocate(&mut self) -> PageId {
        if let Some(id) = self.free.pop_first() {
            return id;
        }
        let id = PageId(self.page_count);
        self.page_count += 1;
        id
    }

    /// Frees a page that no durable or in-flight checkpoint references.
    pub fn release_now(&mut self, id: PageId) {
        let fresh = self.free.insert(id);
        debug_assert!(fresh, "page {id} freed twice");
    }

    /// Frees a page the last checkpoint begun references.
    pub fn release_after_checkpoint(&mut self, id: PageId) {
        self.freed.push(id);
    }

    /// Starts a checkpoint: moves the freed pages to `releasing`, cuts the
    /// free tail off the file, and allocates the pages for the free list.
    pub fn begin_checkpoint(&mut self) -> FreeListPlan {
        debug_assert!(self.releasing.is_empty(), "checkpoint begun twice");
        self.releasing = std::mem::take(&mut self.freed);
        self.releasing.append(&mut self.list_pages);
        self.cut_free_tail();
        let mut pages = Vec::new();
        while (self.free.len() + self.releasing.len()).div_ceil(IDS_PER_PAGE) > pages.len() {
            pages.push(self.allocate());
        }
        let mut ids: Vec<PageId> = self.free.iter().copied().collect();
        ids.extend_from_slice(&self.releasing);
        self.list_pages.clone_from(&pages);
        FreeListPlan { ids, pages, page_count: self.page_count }
    }

    /// The checkpoint begun last is durable: its released pages are free.
    pub fn finish_checkpoint(&mut self) {
        let releasing = std::mem::take(&mut self.releasing);
        for id in releasing {
            self.release_now(id);
        }
    }

    /// Removes the free pages at the end of the file from it.
    fn cut_free_tail(&mut self) {
        while let Some(&last) = self.free.last() {
            if last.0 + 1 != self.page_count {
                break;
            }
            self.free.pop_last();
            self.page_count -= 1;
        }
    }

    /// Every page id the allocator accounts for, with the set it is in (for
    /// `Tree::verify`).
    pub fn accounted(&self) -> impl Iterator<Item = (PageId, &'static str)> + '_ {
        let free = self.free.iter().map(|&id| (id, "free"));
        let freed = self.freed.iter().map(|&id| (id, "freed"));
        let releasing = self.releasing.iter().map(|&id| (id, "releasing"));
        let list = self.list_pages.iter().map(|&id| (id, "free list"));
        free.chain(freed).chain(releasing).chain(list)
    }
}
