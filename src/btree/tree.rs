//! The copy-on-write B+tree: its in-memory state, opening, and point reads.
//!
//! Owns: the root, the dirty pages (written since the last checkpoint
//! began), the pages of the checkpoint being written, the allocator, and
//! the rules for reading a page (dirty, then in flight, then the store).
//! Never touches: the store's writes (checkpoint.rs drives them), caching,
//! or what keys and values mean.
//!
//! Mutations live in write.rs, checkpoints in checkpoint.rs, range reads in
//! cursor.rs, the integrity check in verify.rs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use crate::btree::alloc::Allocator;
use crate::btree::error::{Corruption, Error};
use crate::btree::freelist;
use crate::btree::meta::Meta;
use crate::btree::node::{NodeRef, OverflowRef, Value};
use crate::btree::overflow::{data_payload, head_data_pages, payload_bytes_of};
use crate::btree::page::{Page, PageId};
use crate::btree::store::PageStore;

/// A B+tree of byte keys and byte values over a `PageStore`.
///
/// The tree does not own its store: every operation takes it as an
/// argument, so the caller can load pages into a caching store between a
/// `Error::Miss` and the retry. Pass the same store to every call.
///
/// Reads see every mutation made before them. Nothing is written to the
/// store until a checkpoint; a crash loses everything since the last
/// durable checkpoint (the caller's log replays it).
pub struct Tree {
    /// Root page, `PageId::NONE` when the tree is empty.
    pub(crate) root: PageId,
    /// The root's level (0 = leaf).
    pub(crate) root_level: u8,
    /// Number of keys.
    pub(crate) entries: u64,
    /// Number of the newest durable checkpoint (opened or finished).
    pub(crate) durable: u64,
    /// Number of the checkpoint being written, if one is.
    pub(crate) in_flight: Option<u64>,
    /// The blob of the newest durable checkpoint.
    pub(crate) blob: Vec<u8>,
    /// Pages written since the last checkpoint began; ids allocated then.
    pub(crate) dirty: HashMap<PageId, Arc<Page>>,
    /// Pages of the checkpoint in flight, until it is durable.
    pub(crate) writing: HashMap<PageId, Arc<Page>>,
    pub(crate) alloc: Allocator,
    /// Bumped by every mutation; cursors re-seek when it changed.
    pub(crate) generation: u64,
    /// Set when a checkpoint or a mutation failed half-way.
    pub(crate) broken: bool,
}

/// A key found by `Tree::get`, with its value, borrowed from the leaf page
/// it lives in (the page stays alive as long as this does).
pub struct Found {
    page: Arc<Page>,
    key: Range<usize>,
    value: FoundValue,
}

enum FoundValue {
    Inline(Range<usize>),
    Overflow(OverflowRef),
}

impl Found {
    /// The key.
    pub fn key(&self) -> &[u8] {
        self.page.bytes().get(self.key.clone()).unwrap_or(&[])
    }

    /// The value (read an overflow value with `Tree::read_value`).
    pub fn value(&self) -> Value<'_> {
        match &self.value {
            FoundValue::Inline(r) => Value::Inline(self.page.bytes().get(r.clone()).unwrap_or(&[])),
            FoundValue::Overflow(o) => Value::Overflow(*o),
        }
    }
}

/// Where `inner` (a subslice of `outer`) lies in `outer`.
pub(crate) fn range_in(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

impl Tree {
    fn with_meta(meta: &Meta, alloc: Allocator) -> Tree {
        Tree {
            root: meta.root,
            root_level: meta.root_level,
            entries: meta.entries,
            durable: meta.number,
            in_flight: None,
            blob: meta.blob.clone(),
            dirty: HashMap::new(),
            writing: HashMap::new(),
            alloc,
            generation: 0,
            broken: false,
        }
    }

    /// Formats an empty store: writes both meta pages (checkpoints 0 and 1,
    /// an empty tree) and syncs. Refuses a store that holds pages. The file
    /// is usable only once this returned; create it under a temporary name
    /// and rename it if a crash during creation must not leave an
    /// unopenable file.
    pub fn create<S: PageStore + ?Sized>(store: &mut S) -> Result<Tree, Error> {
        if store.page_count() != 0 {
            return Err(Error::NotEmpty { page_count: store.page_count() });
        }
        let mut meta = Meta {
            number: 0,
            root: PageId::NONE,
            root_level: 0,
            entries: 0,
            page_count: PageId::FIRST_DATA.0,
            free_head: PageId::NONE,
            free_count: 0,
            blob: Vec::new(),
        };
        store.write(meta.slot(), &Arc::new(meta.encode()))?;
        meta.number = 1;
        store.write(meta.slot(), &Arc::new(meta.encode()))?;
        store.sync()?;
        Ok(Tree::with_meta(&meta, Allocator::empty()))
    }

    /// Opens the newest valid checkpoint: the meta page with the highest
    /// number whose checksum and fields are valid (a torn meta write falls
    /// back to the other page), and its free list.
    pub fn open<S: PageStore + ?Sized>(store: &S) -> Result<Tree, Error> {
        if store.page_count() == 0 {
            return Err(Error::NotFormatted);
        }
        let meta = newest_meta(store)?;
        let (free, list_pages) = load_free_list(store, &meta)?;
        let tree = Tree::with_meta(&meta, Allocator::opened(free, list_pages, meta.page_count));
        if tree.root != PageId::NONE {
            tree.load_node(store, tree.root, tree.root_level)?;
        }
        Ok(tree)
    }

    /// `open`, or `create` if the store is empty.
    pub fn open_or_create<S: PageStore + ?Sized>(store: &mut S) -> Result<Tree, Error> {
        match Tree::open(store) {
            Err(Error::NotFormatted) => Tree::create(store),
            other => other,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the tree holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of the newest durable checkpoint.
    pub fn checkpoint_number(&self) -> u64 {
        self.durable
    }

    /// The blob stored with the newest durable checkpoint.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Pages changed since the last checkpoint began (the next checkpoint
    /// writes them; the caller bounds memory by checkpointing).
    pub fn dirty_pages(&self) -> usize {
        self.dirty.len()
    }

    /// The file length, in pages, the tree uses now.
    pub fn page_count(&self) -> u64 {
        self.alloc.page_count()
    }

    /// Pages free now or once the checkpoint in flight is durable.
    pub fn free_pages(&self) -> usize {
        self.alloc.free_pages()
    }

    /// Changes with every mutation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Errors if the tree is `Broken`.
    pub(crate) fn check_usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        Ok(())
    }

    /// Page `id` as the tree sees it now.
    pub(crate) fn page<S: PageStore + ?Sized>(&self, store: &S, id: PageId) -> Result<Arc<Page>, Error> {
        if let Some(page) = self.dirty.get(&id).or_else(|| self.writing.get(&id)) {
            return Ok(Arc::clone(page));
        }
        if id < PageId::FIRST_DATA || id.0 >= self.alloc.page_count() {
            return Err(Error::OutOfRange { page: id, page_count: self.alloc.page_count() });
        }
        Ok(store.read(id)?)
    }

    /// Page `id`, checked to be a node of `level`.
    pub(crate) fn load_node<S: PageStore + ?Sized>(
        &self,
        store: &S,
        id: PageId,
        level: u8,
    ) -> Result<Arc<Page>, Error> {
        let page = self.page(store, id)?;
        NodeRef::parse_at_level(id, page.bytes(), level)?;
        Ok(page)
    }

    /// The leaf that holds `key` if anything does.
    fn leaf_for<S: PageStore + ?Sized>(&self, store: &S, key: &[u8]) -> Result<Option<(PageId, Arc<Page>)>, Error> {
        if self.root == PageId::NONE {
            return Ok(None);
        }
        let (mut id, mut level) = (self.root, self.root_level);
        loop {
            let page = self.load_node(store, id, level)?;
            let node = NodeRef::parse(id, page.bytes())?;
            if node.is_leaf() {
                return Ok(Some((id, page)));
            }
            id = node.child(node.child_index(key)?)?;
            level -= 1;
        }
    }

    /// The entry for `key`, if present.
    pub fn get<S: PageStore + ?Sized>(&self, store: &S, key: &[u8]) -> Result<Option<Found>, Error> {
        self.check_usable()?;
        let Some((id, page)) = self.leaf_for(store, key)? else { return Ok(None) };
        let node = NodeRef::parse(id, page.bytes())?;
        let Some(i) = node.find(key)? else { return Ok(None) };
        let key = range_in(page.bytes(), node.key(i)?);
        let value = match node.value(i)? {
            Value::Inline(v) => FoundValue::Inline(range_in(page.bytes(), v)),
            Value::Overflow(o) => FoundValue::Overflow(o),
        };
        Ok(Some(Found { page, key, value }))
    }

    /// The value of `key`, copied, if present (overflow values assembled).
    pub fn get_value<S: PageStore + ?Sized>(&self, store: &S, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(found) = self.get(store, key)? else { return Ok(None) };
        let mut out = Vec::with_capacity(found.value().len());
        self.read_value(store, found.value(), &mut out)?;
        Ok(Some(out))
    }

    /// Appends the bytes of `value` to `out`. On error `out` may hold part
    /// of the value: truncate it before retrying.
    pub fn read_value<S: PageStore + ?Sized>(
        &self,
        store: &S,
        value: Value<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let overflow = match value {
            Value::Inline(bytes) => {
                out.extend_from_slice(bytes);
                return Ok(());
            }
            Value::Overflow(o) => o,
        };
        let value_bytes = overflow.value_bytes as usize;
        let head = self.page(store, overflow.head)?;
        for (i, id) in head_data_pages(overflow.head, head.bytes(), value_bytes)?.into_iter().enumerate() {
            let page = self.page(store, id)?;
            out.extend_from_slice(data_payload(id, page.bytes(), payload_bytes_of(i, value_bytes))?);
        }
        Ok(())
    }

    /// Every page of an overflow value, head first: what to load at once
    /// before `read_value` to avoid a miss per page.
    pub fn overflow_pages<S: PageStore + ?Sized>(
        &self,
        store: &S,
        overflow: OverflowRef,
    ) -> Result<Vec<PageId>, Error> {
        let head = self.page(store, overflow.head)?;
        let mut pages = vec![overflow.head];
        pages.extend(head_data_pages(overflow.head, head.bytes(), overflow.value_bytes as usize)?);
        Ok(pages)
    }
}

/// The valid meta page with the highest number. A page that fails
/// validation is skipped (a torn write); a store error or miss is returned,
/// since falling back past a newer checkpoint that merely could not be read
/// would open pages that may have been reused since.
fn newest_meta<S: PageStore + ?Sized>(store: &S) -> Result<Meta, Error> {
    let read = |slot: u64| -> Result<Result<Meta, Error>, Error> {
        let id = PageId(slot);
        match store.read(id).map_err(Error::from) {
            Ok(page) => Ok(Meta::decode(id, page.bytes())),
            Err(e @ (Error::Corrupt { .. } | Error::OutOfRange { .. })) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    };
    match (read(0)?, read(1)?) {
        (Ok(a), Ok(b)) => Ok(if a.number > b.number { a } else { b }),
        (Ok(m), Err(_)) | (Err(_), Ok(m)) => Ok(m),
        (Err(slot0), Err(slot1)) => Err(Error::NoValidMeta { slot0: Box::new(slot0), slot1: Box::new(slot1) }),
    }
}

/// The free ids and the list's own pages, checked: ids inside the file,
/// no duplicates, no cycle, the count the meta page records.
fn load_free_list<S: PageStore + ?Sized>(store: &S, meta: &Meta) -> Result<(BTreeSet<PageId>, Vec<PageId>), Error> {
    let mut free = BTreeSet::new();
    let mut list_pages = Vec::new();
    let mut list_set = HashSet::new();
    let mut next = meta.free_head;
    let in_file = |id: PageId| id >= PageId::FIRST_DATA && id.0 < meta.page_count;
    while next != PageId::NONE {
        let invalid = |what| Error::corrupt(next, Corruption::Invalid { what });
        if !in_file(next) || !list_set.insert(next) || free.contains(&next) {
            return Err(invalid("free-list chain"));
        }
        let page = store.read(next)?;
        let (ids, after) = freelist::parse(next, page.bytes())?;
        for id in ids {
            if !in_file(id) || !free.insert(id) || list_set.contains(&id) {
                return Err(invalid("free page id"));
            }
        }
        list_pages.push(next);
        next = after;
    }
    if free.len() as u64 != meta.free_count || list_pages.iter().any(|p| free.contains(p)) {
        return Err(Error::corrupt(meta.slot(), Corruption::Invalid { what: "free-list count" }));
    }
    Ok((free, list_pages))
}
