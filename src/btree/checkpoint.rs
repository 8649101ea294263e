//! Checkpoints: making the tree's current state durable.
//!
//! Owns: the checkpoint protocol (seal the dirty pages and the free list,
//! write them, sync, write the meta page into the older slot, sync) in two
//! forms: staged (`begin_checkpoint` hands the caller the pages to write;
//! `finish_checkpoint` once they are durable) for an asynchronous caller,
//! and `checkpoint`, which drives a `PageStore` synchronously. Never
//! touches: how writes reach the disk (the caller's or the store's job).

use std::sync::Arc;

use crate::btree::error::Error;
use crate::btree::freelist::{self, IDS_PER_PAGE};
use crate::btree::meta::{Meta, META_BLOB_BYTES_MAX};
use crate::btree::page::{Page, PageId};
use crate::btree::store::PageStore;
use crate::btree::tree::Tree;

/// A checkpoint being written. Write every page of `pages()`, fdatasync,
/// write `meta()`, fdatasync, then call `Tree::finish_checkpoint`; after
/// that the file may be truncated to `page_count()` pages. If any step
/// fails, call `Tree::fail_checkpoint` (and reopen).
///
/// The tree stays usable meanwhile: reads and mutations may run between
/// `begin_checkpoint` and `finish_checkpoint` (they change later pages, not
/// these).
#[derive(Debug)]
pub struct Checkpoint {
    number: u64,
    pages: Vec<(PageId, Arc<Page>)>,
    meta: Arc<Page>,
    meta_id: PageId,
    page_count: u64,
    blob: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The sealed pages to write before the first sync, by ascending id.
    pub fn pages(&self) -> &[(PageId, Arc<Page>)] {
        &self.pages
    }

    /// The sealed meta page to write after the first sync, and where.
    pub fn meta(&self) -> (PageId, &Arc<Page>) {
        (self.meta_id, &self.meta)
    }

    /// The file length, in pages, this checkpoint needs.
    pub fn page_count(&self) -> u64 {
        self.page_count
    }
}

/// `page` with its id and checksum set; copied only if shared.
fn sealed(page: Arc<Page>, id: PageId) -> Arc<Page> {
    let mut page = Arc::try_unwrap(page).unwrap_or_else(|shared| (*shared).clone());
    page.seal(id);
    Arc::new(page)
}

impl Tree {
    /// Starts checkpoint `checkpoint_number() + 1` with the caller's `blob`
    /// (at most `META_BLOB_BYTES_MAX` bytes): seals every dirty page and the
    /// new free list. Needs no I/O.
    pub fn begin_checkpoint(&mut self, blob: &[u8]) -> Result<Checkpoint, Error> {
        self.check_usable()?;
        if blob.len() > META_BLOB_BYTES_MAX {
            return Err(Error::BlobTooLarge { blob_bytes: blob.len(), blob_bytes_max: META_BLOB_BYTES_MAX });
        }
        if self.in_flight.is_some() {
            return Err(Error::CheckpointInFlight);
        }
        let number = self.durable + 1;
        let plan = self.alloc.begin_checkpoint();
        let mut pages = Vec::with_capacity(self.dirty.len() + plan.pages.len());
        for (id, page) in std::mem::take(&mut self.dirty) {
            let page = sealed(page, id);
            self.writing.insert(id, Arc::clone(&page));
            pages.push((id, page));
        }
        let mut chunks = plan.ids.chunks(IDS_PER_PAGE);
        for (i, &id) in plan.pages.iter().enumerate() {
            let ids = chunks.next().unwrap_or(&[]);
            let next = plan.pages.get(i + 1).copied().unwrap_or(PageId::NONE);
            pages.push((id, sealed(Arc::new(freelist::build(ids, next)), id)));
        }
        pages.sort_unstable_by_key(|(id, _)| *id);
        let meta = Meta {
            number,
            root: self.root,
            root_level: self.root_level,
            entries: self.entries,
            page_count: plan.page_count,
            free_head: plan.pages.first().copied().unwrap_or(PageId::NONE),
            free_count: plan.ids.len() as u64,
            blob: blob.to_vec(),
        };
        self.in_flight = Some(number);
        let meta_id = meta.slot();
        Ok(Checkpoint {
            number,
            pages,
            meta: Arc::new(meta.encode()),
            meta_id,
            page_count: plan.page_count,
            blob: meta.blob,
        })
    }

    /// The checkpoint's meta page is durable: the pages it released become
    /// reusable and its pages are read from the store from now on.
    pub fn finish_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), Error> {
        self.check_usable()?;
        if self.in_flight != Some(checkpoint.number) {
            return Err(Error::CheckpointMismatch { number: checkpoint.number });
        }
        self.alloc.finish_checkpoint();
        self.writing.clear();
        self.durable = checkpoint.number;
        self.blob = checkpoint.blob;
        self.in_flight = None;
        Ok(())
    }

    /// Writing the checkpoint failed: what is on disk is unknown, so the tree
    /// refuses further use (`Error::Broken`); reopen the store.
    pub fn fail_checkpoint(&mut self, _checkpoint: Checkpoint) {
        self.broken = true;
    }

    /// Writes a checkpoint through `store`: the pages, sync, the meta page,
    /// sync, then truncates the free tail of the file. Returns its number.
    /// On a store error the tree becomes `Broken`.
    pub fn checkpoint<S: PageStore + ?Sized>(&mut self, store: &mut S, blob: &[u8]) -> Result<u64, Error> {
        let checkpoint = self.begin_checkpoint(blob)?;
        if let Err(e) = write_checkpoint(store, &checkpoint) {
            self.fail_checkpoint(checkpoint);
            return Err(e);
        }
        let (number, page_count) = (checkpoint.number, checkpoint.page_count);
        self.finish_checkpoint(checkpoint)?;
        // The checkpoint is durable; a failed truncation only wastes space.
        store.truncate(page_count)?;
        Ok(number)
    }
}

fn write_checkpoint<S: PageStore + ?Sized>(store: &mut S, checkpoint: &Checkpoint) -> Result<(), Error> {
    for (id, page) in &checkpoint.pages {
        store.write(*id, page)?;
    }
    store.sync()?;
    let (meta_id, meta) = checkpoint.meta();
    store.write(meta_id, meta)?;
    store.sync()?;
    Ok(())
}
