//! The on-disk implementation of [`MvccStore`]: one shard's versions in a
//! copy-on-write B+tree file behind a page cache.
//!
//! Owns: the MVCC layout in the tree (keys.rs: one tree entry per version,
//! user key then newest revision first; value.rs: version metadata with the
//! value), the reads and writes with `MemStore`'s exact semantics (read.rs,
//! write.rs, compact.rs), the counters and compaction state saved with each
//! checkpoint (blob.rs), the page cache (cache.rs) and the error policy
//! below. Never touches: Raft, the WAL, io_uring (the node does the
//! asynchronous I/O and hands pages in), or revisions inside `btree` (the
//! tree only sees bytes).
//!
//! # Durability
//!
//! Writes change the in-memory tree only (its dirty pages); nothing is
//! synced per write. A checkpoint makes the state durable with the caller's
//! applied index: `begin_checkpoint` seals the pages to write, the node
//! writes them, fdatasyncs, writes the meta page, fdatasyncs, and calls
//! `finish_checkpoint` (or `fail_checkpoint`). Reads and writes continue in
//! between; they land in the next checkpoint. `checkpoint_sync` does all of
//! it with pwrite and fdatasync. `open` returns the applied index and extra
//! bytes of the newest durable checkpoint; the node replays its log from
//! there. A crash at any point of a checkpoint leaves the previous or the
//! new checkpoint (btree crash-consistency argument; tests/crash.rs).
//!
//! # Misses and prefetching
//!
//! The `MvccStore` methods are synchronous: a page the cache misses is read
//! with pread on the spot (`CacheStats::sync_misses`). To avoid that, before
//! a batch or a read the node calls `plan_loads` with the keys and ranges it
//! will touch, reads the listed pages itself (O_DIRECT, io_uring) and hands
//! them to `insert_loaded`, and repeats until the plan is empty (each round
//! reaches one level deeper; about the tree's height plus one rounds).
//!
//! # Errors: a broken store never answers
//!
//! `MvccStore` methods cannot return errors. An I/O error, a page that
//! fails its checksum or id check (reported with the file's path and the
//! page's byte offset), or an entry that does not decode, met inside one,
//! *breaks* the store: the first error is kept (`error`, `take_error`), the
//! method returns a conservative answer (nothing found, a scan cut short, a
//! write not made), and every later call does nothing and answers nothing
//! (`live_keys` and `size_bytes` keep their last, possibly half-updated,
//! values: they are hints for the balancer, not answers).
//! Nothing is ever silently wrong because:
//!
//! - the node checks `is_broken` after every batch and every read, before
//!   sending any reply computed from the store, and stops the shard loudly
//!   (with `take_error`) instead;
//! - a broken store refuses `begin_checkpoint`, so no state computed after
//!   the error becomes durable; restarting reopens the last checkpoint and
//!   replays the log.
//!
//! Pages are verified once, when read from the file or loaded; a page that
//! passed is trusted while cached (memory is not re-checked).
//!
//! # Bounds and costs
//!
//! - `latest`: one seek. `put`/`delete`: one seek plus one tree insert.
//! - `scan`/`count` at a revision: one seek to the range start, then per
//!   key the entries of its newest versions down to the first at or below
//!   the read revision; a key with more than `STEP_MAX` versions to pass is
//!   left with a seek (so old versions cost a seek, not a visit each).
//!   `scan_rev`: the same walking backward (it copies each candidate
//!   version's inline value once).
//! - `history`: per key a seek and the versions in the window (buffered per
//!   key, newest first, then emitted oldest first).
//! - `live_keys`: O(1) (a counter). `split_key`, `key_at`: a walk over the
//!   keys up to the answer, like `MemStore`'s.
//! - Keys longer than `SHORT_KEY_BYTES_MAX` (480 bytes) live in groups that
//!   are read as a whole (keys.rs); every operation on such a key costs the
//!   size of its group (usually one key).
//! - Values: a version must fit the tree's `VALUE_BYTES_MAX` (about 1.97
//!   MiB) with its 25 bytes of metadata (and the full key, for long keys);
//!   a larger put breaks the store, so the API layer must refuse it first
//!   (`DiskStore::value_bytes_max`).

mod blob;
mod cache;
mod compact;
mod keys;
mod pins;
mod read;
mod value;
mod write;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blob::{fuzz_blob, EXTRA_BYTES_MAX};
pub use cache::{CacheStats, DataFile, LoadTicket, PageCache, PageFile, CACHE_PAGES_MIN};
pub use keys::{fuzz_tree_key, SHORT_KEY_BYTES_MAX};
pub use value::fuzz_value;

use self::blob::Blob;
use self::compact::Compaction;
use self::keys::{is_long, past_slot, slot_prefix, BadKey};
use self::pins::Pins;
use self::value::BadValue;
use crate::btree::{self, Checkpoint, Page, PageId, PageStore, Tree};
use crate::mvcc::{End, Event, KeyHistory, KeyValue, KvRef, MvccStore, Rev};

/// Tree-level bytes a version costs besides its tree key and value: the
/// leaf cell header and its slot (see `DiskStore::size_bytes`).
const ENTRY_OVERHEAD_BYTES: u64 = 9;

/// Bytes of metadata a put version stores besides its value (value.rs).
const PUT_OVERHEAD_BYTES: usize = 25;

/// What went wrong in a disk store. Every variant names the data file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A page failed verification (checksum, id, kind, level, layout) or a
    /// reference points past the end of the file.
    #[error("{}: page {page} at byte offset {offset} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// The page.
        page: PageId,
        /// Where it starts in the file.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The operating system reported an error.
    #[error("{}: {op} failed{}: {source}", path.display(), at.map(|o| format!(" at byte offset {o}")).unwrap_or_default())]
    Io {
        /// The data file.
        path: PathBuf,
        /// `read`, `write`, `sync`, `truncate`, `open`, `rename`.
        op: &'static str,
        /// The byte offset concerned, if one.
        at: Option<u64>,
        /// The error.
        source: io::Error,
    },
    /// A tree entry whose key or value is not a version this store wrote
    /// (its page passed its checksum: a bug or undetected damage).
    #[error("{}: version entry with tree key {key} does not decode: {detail}", path.display())]
    BadEntry {
        /// The data file.
        path: PathBuf,
        /// The tree key, in hex.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The newest checkpoint's blob is not one this store wrote.
    #[error("{}: checkpoint blob: {source}", path.display())]
    BadBlob {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        source: blob::BadBlob,
    },
    /// The extra checkpoint bytes do not fit the meta page.
    #[error("{extra_bytes} extra checkpoint bytes exceed the {extra_bytes_max}-byte bound")]
    ExtraTooLarge {
        /// Bytes given.
        extra_bytes: usize,
        /// The bound (`EXTRA_BYTES_MAX`).
        extra_bytes_max: usize,
    },
    /// `truncate_file` while a checkpoint is being written.
    #[error("{}: a checkpoint is being written", path.display())]
    CheckpointInFlight {
        /// The data file.
        path: PathBuf,
    },
    /// Any other tree error (e.g. a value over the tree's bound).
    #[error("{}: {source}", path.display())]
    Tree {
        /// The data file.
        path: PathBuf,
        /// The error.
        source: btree::Error,
    },
    /// The store broke on an earlier error (see `DiskStore::error`) and
    /// must be reopened.
    #[error("{}: the store is broken by an earlier error ({cause}); reopen it", path.display())]
    Broken {
        /// The data file.
        path: PathBuf,
        /// The earlier error.
        cause: String,
    },
}

impl DiskError {
    /// A copy (an I/O error is copied by kind and message).
    fn duplicate(&self) -> DiskError {
        match self {
            DiskError::Corrupt { path, page, offset, detail } => {
                DiskError::Corrupt { path: path.clone(), page: *page, offset: *offset, detail: detail.clone() }
            }
            DiskError::Io { path, op, at, source } => DiskError::Io {
                path: path.clone(),
                op,
                at: *at,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            DiskError::BadEntry { path, key, detail } => {
                DiskError::BadEntry { path: path.clone(), key: key.clone(), detail: detail.clone() }
            }
            DiskError::BadBlob { path, source } => DiskError::BadBlob { path: path.clone(), source: *source },
            DiskError::ExtraTooLarge { extra_bytes, extra_bytes_max } => {
                DiskError::ExtraTooLarge { extra_bytes: *extra_bytes, extra_bytes_max: *extra_bytes_max }
            }
            DiskError::CheckpointInFlight { path } => DiskError::CheckpointInFlight { path: path.clone() },
            DiskError::Tree { path, source } => DiskError::Broken { path: path.clone(), cause: source.to_string() },
            DiskError::Broken { path, cause } => DiskError::Broken { path: path.clone(), cause: cause.clone() },
        }
    }

    /// The byte offset in the data file the error concerns, if one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            DiskError::Corrupt { offset, .. } => Some(*offset),
            DiskError::Io { at, .. } => *at,
            _ => None,
        }
    }

    /// A tree or page store error, with the file's path.
    fn from_tree(path: &Path, e: btree::Error) -> DiskError {
        let path = path.to_path_buf();
        match e {
            btree::Error::Corrupt { page, corruption } => {
                DiskError::Corrupt { path, page, offset: page.byte_offset(), detail: corruption.to_string() }
            }
            btree::Error::OutOfRange { page, page_count } => DiskError::Corrupt {
                path,
                page,
                offset: page.byte_offset(),
                detail: format!("referenced past the end of the store ({page_count} pages)"),
            },
            btree::Error::Io { op, page, source } => {
                DiskError::Io { path, op, at: page.map(PageId::byte_offset), source }
            }
            source => DiskError::Tree { path, source },
        }
    }
}

/// What `DiskStore::open` recovered from the newest durable checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The applied index the checkpoint was taken at (0 for a new file):
    /// replay the log after it.
    pub applied_index: u64,
    /// The caller's extra bytes given to that checkpoint.
    pub extra: Vec<u8>,
}

/// A checkpoint being written; see `DiskStore::begin_checkpoint`.
#[derive(Debug)]
pub struct DiskCheckpoint {
    inner: Checkpoint,
    applied_index: u64,
}

impl DiskCheckpoint {
    /// The checkpoint's number.
    pub fn number(&self) -> u64 {
        self.inner.number()
    }

    /// The sealed pages to write (at `id.byte_offset()`) before the first
    /// fdatasync, by ascending id; 4 KiB-aligned for O_DIRECT.
    pub fn pages(&self) -> &[(PageId, Arc<Page>)] {
        self.inner.pages()
    }

    /// The meta page to write after the first fdatasync, and where.
    pub fn meta(&self) -> (PageId, &Arc<Page>) {
        self.inner.meta()
    }

    /// The file length, in pages, this checkpoint needs.
    pub fn page_count(&self) -> u64 {
        self.inner.page_count()
    }

    /// The applied index it records.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// What the node will touch next, for `DiskStore::plan_loads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch<'a> {
    /// A point read or write of one key (`latest`, `put`, `delete`).
    Key(&'a [u8]),
    /// A read of a range (`scan`, `scan_rev`, `count`, `history`,
    /// `take_range`): every page of its versions, values included.
    Range {
        /// First key.
        start: &'a [u8],
        /// Where it ends.
        end: End<'a>,
    },
}

/// Pages to load, from `DiskStore::plan_loads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Hand back with each page to `insert_loaded`.
    pub ticket: LoadTicket,
    /// The pages the cache misses, ascending, without duplicates.
    pub pages: Vec<PageId>,
}

/// The MVCC store of one shard on a B+tree file; see the module comment.
pub struct DiskStore<F: PageFile = DataFile> {
    tree: Tree,
    cache: PageCache<F>,
    /// Keys whose newest version is a put.
    live_keys: u64,
    /// Keys with any stored version.
    stored_keys: u64,
    /// See `size_bytes`.
    size_bytes: u64,
    /// The highest revision a compaction was requested at; 0 for none.
    compacted: i64,
    /// The compaction not yet finished, if any.
    pending: Option<Compaction>,
    /// Applied index of the newest durable checkpoint.
    applied_index: u64,
    /// File length, in pages, of the newest durable checkpoint.
    durable_pages: u64,
    /// Whether a checkpoint is being written.
    in_flight: bool,
    /// The first error met; the store is broken once it is set.
    error: RefCell<Option<DiskError>>,
    broken: Cell<bool>,
    /// What `latest` returned since the last `&mut self` call.
    pins: Pins,
}

/// The result of the store's internal operations.
type Result<T> = std::result::Result<T, DiskError>;

impl DiskStore<DataFile> {
    /// Opens the store in the data file at `path` with a page cache of
    /// `cache_bytes`, creating and formatting the file first if there is
    /// none (under a temporary name, renamed once it is durable, so a crash
    /// never leaves a half-formatted file at `path`).
    pub fn open_path(path: &Path, cache_bytes: usize) -> Result<(DiskStore<DataFile>, Recovered)> {
        let io = |op| move |source| DiskError::Io { path: path.to_path_buf(), op, at: None, source };
        if !path.exists() {
            let mut name = path.as_os_str().to_owned();
            name.push(OsString::from(".creating"));
            let creating = PathBuf::from(name);
            let mut cache =
                PageCache::new(DataFile::open(&creating).map_err(io("open"))?, CACHE_PAGES_MIN).map_err(io("open"))?;
            if cache.page_count() != 0 {
                // Left over from a crash during an earlier creation.
                cache.truncate(0).map_err(|e| DiskError::from_tree(&creating, e.into()))?;
            }
            Tree::create(&mut cache).map_err(|e| DiskError::from_tree(&creating, e))?;
            drop(cache);
            std::fs::rename(&creating, path).map_err(io("rename"))?;
            sync_parent(path).map_err(io("sync"))?;
        }
        let file = DataFile::open(path).map_err(io("open"))?;
        DiskStore::open(PageCache::new(file, cache_bytes).map_err(io("open"))?)
    }
}

/// fdatasyncs the directory holding `path` (makes a rename durable).
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

impl<F: PageFile> DiskStore<F> {
    /// Opens the newest durable checkpoint in `cache`'s file (formatting an
    /// empty file). Returns the store and what the checkpoint recorded.
    pub fn open(mut cache: PageCache<F>) -> Result<(DiskStore<F>, Recovered)> {
        let tree = Tree::open_or_create(&mut cache).map_err(|e| DiskError::from_tree(cache.path(), e))?;
        let blob =
            Blob::decode(tree.blob()).map_err(|source| DiskError::BadBlob { path: cache.path().into(), source })?;
        let store = DiskStore {
            durable_pages: tree.page_count(),
            tree,
            cache,
            live_keys: blob.live_keys,
            stored_keys: blob.stored_keys,
            size_bytes: blob.size_bytes,
            compacted: blob.compacted,
            // The walk restarts from the first key: compacting a key twice
            // at one target changes nothing.
            pending: (blob.pending != 0).then(|| Compaction::new(blob.pending)),
            applied_index: blob.applied_index,
            in_flight: false,
            error: RefCell::new(None),
            broken: Cell::new(false),
            pins: Pins::default(),
        };
        let recovered = Recovered { applied_index: blob.applied_index, extra: blob.extra };
        Ok((store, recovered))
    }

    /// The data file's path.
    pub fn path(&self) -> &Path {
        self.cache.path()
    }

    /// The page cache.
    pub fn cache(&self) -> &PageCache<F> {
        &self.cache
    }

    /// The page cache, writable (tests: fault injection).
    pub fn cache_mut(&mut self) -> &mut PageCache<F> {
        &mut self.cache
    }

    /// What the page cache counted.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Pages changed since the last checkpoint began, held in memory by the
    /// tree outside the cache budget: checkpoint when this grows.
    pub fn dirty_pages(&self) -> usize {
        self.tree.dirty_pages()
    }

    /// The file length, in pages, the store uses now.
    pub fn file_pages(&self) -> u64 {
        self.tree.page_count()
    }

    /// The applied index of the newest durable checkpoint.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The highest revision compaction was requested at (0 for none), as
    /// `MemStore::compacted_revision`.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// Whether a compaction is still in progress.
    pub fn compaction_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Keys with any stored version (live or not).
    pub fn stored_keys(&self) -> u64 {
        self.stored_keys
    }

    /// The largest value a put of `key` can store (the tree's bound less
    /// the version's metadata); the API layer must refuse larger ones.
    pub fn value_bytes_max(key: &[u8]) -> usize {
        let key_bytes = if is_long(key) { 4 + key.len() } else { 0 };
        btree::VALUE_BYTES_MAX.saturating_sub(PUT_OVERHEAD_BYTES + key_bytes)
    }

    /// Whether an error broke the store (see the module comment).
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// The error that broke the store, if any, as a message.
    pub fn error(&self) -> Option<String> {
        self.error.borrow().as_ref().map(ToString::to_string)
    }

    /// Takes the error that broke the store; the store stays broken.
    pub fn take_error(&self) -> Option<DiskError> {
        self.error.take()
    }

    /// Drops what `latest` pinned (done by every `&mut self` call anyway).
    pub fn release_pins(&mut self) {
        self.pins.clear();
    }

    /// Buffers `latest` holds now, and their bytes.
    pub fn pinned(&self) -> (usize, usize) {
        (self.pins.len(), self.pins.bytes())
    }

    /// Records the first error and breaks the store.
    fn fail(&self, e: DiskError) {
        self.broken.set(true);
        let mut error = self.error.borrow_mut();
        if error.is_none() {
            *error = Some(e);
        }
    }

    /// `Broken` if the store is.
    fn check_usable(&self) -> Result<()> {
        if !self.broken.get() {
            return Ok(());
        }
        let cause = self.error().unwrap_or_else(|| "an error already taken".to_string());
        Err(DiskError::Broken { path: self.path().to_path_buf(), cause })
    }

    /// Runs a read for a trait method: `None` if the store is or becomes
    /// broken.
    fn read<'a, T>(&'a self, op: impl FnOnce(&'a Self) -> Result<T>) -> Option<T> {
        if self.broken.get() {
            return None;
        }
        match op(self) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Runs a mutation for a trait method: `None` if the store is or
    /// becomes broken.
    fn write<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Option<T> {
        self.pins.clear();
        if self.broken.get() {
            return None;
        }
        match op(self) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// A tree error with the file's path.
    fn tree_err(&self, e: btree::Error) -> DiskError {
        DiskError::from_tree(self.path(), e)
    }

    fn bad_key(&self, tree_key: &[u8], e: BadKey) -> DiskError {
        DiskError::BadEntry { path: self.path().into(), key: hex(tree_key), detail: e.to_string() }
    }

    fn bad_value(&self, tree_key: &[u8], e: BadValue) -> DiskError {
        DiskError::BadEntry { path: self.path().into(), key: hex(tree_key), detail: e.to_string() }
    }

    /// The blob of a checkpoint taken now.
    fn blob(&self, applied_index: u64, extra: &[u8]) -> Result<Vec<u8>> {
        let blob = Blob {
            applied_index,
            live_keys: self.live_keys,
            stored_keys: self.stored_keys,
            size_bytes: self.size_bytes,
            compacted: self.compacted,
            pending: self.pending.as_ref().map_or(0, |c| c.target),
            extra: extra.to_vec(),
        };
        blob.encode().ok_or(DiskError::ExtraTooLarge { extra_bytes: extra.len(), extra_bytes_max: EXTRA_BYTES_MAX })
    }

    /// Starts a checkpoint of the current state at `applied_index`, with up
    /// to `EXTRA_BYTES_MAX` bytes of the caller's. Needs no I/O. Write every
    /// page of `pages()`, fdatasync, write `meta()`, fdatasync, then call
    /// `finish_checkpoint`; on any failure call `fail_checkpoint`. Reads
    /// and writes may go on meanwhile (they go to the next checkpoint).
    /// Refused while the store is broken or another checkpoint is in flight.
    pub fn begin_checkpoint(&mut self, applied_index: u64, extra: &[u8]) -> Result<DiskCheckpoint> {
        self.pins.clear();
        self.check_usable()?;
        let blob = self.blob(applied_index, extra)?;
        let inner = self.tree.begin_checkpoint(&blob).map_err(|e| self.tree_err(e))?;
        self.in_flight = true;
        Ok(DiskCheckpoint { inner, applied_index })
    }

    /// The checkpoint's meta page is durable: its pages become clean cache
    /// entries, and loads planned before now are dropped as possibly stale.
    /// The file may then be cut with `truncate_file`.
    pub fn finish_checkpoint(&mut self, checkpoint: DiskCheckpoint) -> Result<()> {
        self.pins.clear();
        self.check_usable()?;
        let pages = checkpoint.pages().to_vec();
        let (page_count, applied_index) = (checkpoint.page_count(), checkpoint.applied_index);
        self.tree.finish_checkpoint(checkpoint.inner).map_err(|e| self.tree_err(e))?;
        self.cache.checkpoint_finished(&pages, page_count);
        self.in_flight = false;
        self.applied_index = applied_index;
        self.durable_pages = page_count;
        Ok(())
    }

    /// Writing the checkpoint failed with `error` (the node's write or
    /// fdatasync): what the file holds is unknown, so the store breaks with
    /// that error (reopen it: the previous or this checkpoint is intact).
    pub fn fail_checkpoint(&mut self, checkpoint: DiskCheckpoint, error: io::Error) {
        let path = self.path().to_path_buf();
        self.fail(DiskError::Io { path, op: "checkpoint write", at: None, source: error });
        self.abandon_checkpoint(checkpoint);
    }

    /// Drops a checkpoint whose writing failed; the store is broken.
    fn abandon_checkpoint(&mut self, checkpoint: DiskCheckpoint) {
        let number = checkpoint.number();
        self.tree.fail_checkpoint(checkpoint.inner);
        self.in_flight = false;
        let cause = format!("writing checkpoint {number} failed");
        self.fail(DiskError::Broken { path: self.path().to_path_buf(), cause });
    }

    /// Cuts the file to the length the newest durable checkpoint uses (the
    /// free tail). Refused while a checkpoint is in flight. A failure
    /// breaks the store (the checkpoint itself is durable).
    pub fn truncate_file(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.in_flight {
            return Err(DiskError::CheckpointInFlight { path: self.path().to_path_buf() });
        }
        let pages = self.durable_pages;
        let cut = self.cache.truncate(pages).map_err(|e| DiskError::from_tree(self.cache.path(), e.into()));
        if let Err(e) = &cut {
            // The checkpoint is durable, but the policy is simple: an I/O
            // error breaks the store.
            self.fail(e.duplicate());
        }
        cut
    }

    /// A whole checkpoint with pwrite and fdatasync (tests, tools, start-up
    /// and shutdown): begin, write, sync, meta, sync, finish, truncate.
    /// Returns its number. On failure the store is broken.
    pub fn checkpoint_sync(&mut self, applied_index: u64, extra: &[u8]) -> Result<u64> {
        let checkpoint = self.begin_checkpoint(applied_index, extra)?;
        if let Err(e) = self.write_checkpoint(&checkpoint) {
            // Kept first: the error the node reports is the real one.
            self.fail(e.duplicate());
            self.abandon_checkpoint(checkpoint);
            return Err(e);
        }
        let number = checkpoint.number();
        self.finish_checkpoint(checkpoint)?;
        self.truncate_file()?;
        Ok(number)
    }

    fn write_checkpoint(&mut self, checkpoint: &DiskCheckpoint) -> Result<()> {
        let path = self.cache.path().to_path_buf();
        let err = |e: btree::StoreError| DiskError::from_tree(&path, e.into());
        for (id, page) in checkpoint.pages() {
            self.cache.write(*id, page).map_err(err)?;
        }
        self.cache.sync().map_err(err)?;
        let (meta_id, meta) = checkpoint.meta();
        self.cache.write(meta_id, meta).map_err(err)?;
        self.cache.sync().map_err(err)
    }

    /// The pages the cache misses among those the `touches` will read
    /// (at most `pages_max`), with the ticket to load them under. Load
    /// them, hand each to `insert_loaded`, and call again until the plan is
    /// empty: each round reaches one level deeper. Changes nothing.
    pub fn plan_loads(&self, touches: &[Touch<'_>], pages_max: usize) -> Result<LoadPlan> {
        self.check_usable()?;
        let ticket = self.cache.ticket();
        self.cache.set_fallback(false);
        let planned = self.plan_touches(touches, pages_max);
        self.cache.set_fallback(true);
        let mut pages = self.cache.take_planned();
        if let Err(e) = planned {
            self.fail(e.duplicate());
            return Err(e);
        }
        pages.sort_unstable();
        pages.dedup();
        pages.truncate(pages_max);
        Ok(LoadPlan { ticket, pages })
    }

    fn plan_touches(&self, touches: &[Touch<'_>], pages_max: usize) -> Result<()> {
        let mut scratch = Vec::new();
        for touch in touches {
            // Ids found missing by this plan so far (duplicates included).
            if self.cache.planned_len() >= pages_max.saturating_mul(4) {
                break;
            }
            let (from, to, values) = match *touch {
                Touch::Key(key) => {
                    let prefix = slot_prefix(key);
                    let past = past_slot(&prefix);
                    let before = self.cache.planned_len();
                    self.missed(self.tree.missing_pages(
                        &self.cache,
                        Bound::Included(&prefix),
                        Bound::Included(&past),
                        is_long(key),
                        pages_max,
                        &mut scratch,
                    ))?;
                    if self.cache.planned_len() == before && !is_long(key) {
                        self.plan_newest_value(&prefix)?;
                    }
                    continue;
                }
                Touch::Range { start, end } => match end {
                    End::Single => (slot_prefix(start), Some(past_slot(&slot_prefix(start))), true),
                    End::Unbounded => (slot_prefix(start), None, true),
                    End::Before(e) if e <= start => continue,
                    End::Before(e) if is_long(e) => (slot_prefix(start), Some(past_slot(&slot_prefix(e))), true),
                    End::Before(e) => (slot_prefix(start), Some(slot_prefix(e)), true),
                },
            };
            let to = to.as_deref().map_or(Bound::Unbounded, Bound::Included);
            let planned =
                self.tree.missing_pages(&self.cache, Bound::Included(&from), to, values, pages_max, &mut scratch);
            self.missed(planned)?;
        }
        Ok(())
    }

    /// Plans the overflow pages of the newest version in slot `prefix`
    /// (what `latest`, `put` and `delete` read), once its leaf is cached.
    fn plan_newest_value(&self, prefix: &[u8]) -> Result<()> {
        let mut cursor = btree::Cursor::forward(Bound::Included(prefix));
        let overflow = match cursor.next(&self.tree, &self.cache) {
            Ok(Some(e)) if keys::in_slot(e.key, prefix) => match e.value {
                btree::Value::Overflow(o) => o,
                btree::Value::Inline(_) => return Ok(()),
            },
            other => return self.missed(other),
        };
        let pages = match self.tree.overflow_pages(&self.cache, overflow) {
            Ok(pages) => pages,
            other => return self.missed(other),
        };
        for id in pages {
            // In planning mode a read answers from memory or records a miss.
            self.missed(self.cache.read(id).map_err(btree::Error::from))?;
        }
        Ok(())
    }

    /// A miss is what planning looks for; any other error is one.
    fn missed<T>(&self, result: std::result::Result<T, btree::Error>) -> Result<()> {
        match result {
            Ok(_) | Err(btree::Error::Miss(_)) => Ok(()),
            Err(e) => Err(self.tree_err(e)),
        }
    }

    /// Adds a page the node read for a plan made under `ticket`. Returns
    /// whether it was cached (`false`: stale or already cached, nothing to
    /// do). A page that fails verification is an error naming the file and
    /// offset, and breaks the store.
    pub fn insert_loaded(&self, ticket: LoadTicket, id: PageId, page: Page) -> Result<bool> {
        self.check_usable()?;
        match self.cache.insert_loaded(ticket, id, page) {
            Ok(cached) => Ok(cached),
            Err(e) => {
                let e = DiskError::from_tree(self.path(), e.into());
                self.fail(e.duplicate());
                Err(e)
            }
        }
    }

    /// Checks the tree's structure and page accounting, and the counters
    /// against a recount of every version (a full walk; tests and tools).
    /// An error breaks the store, as in any read.
    pub fn verify(&self) -> Result<()> {
        self.check_usable()?;
        let verified = self.verify_all();
        if let Err(e) = &verified {
            self.fail(e.duplicate());
        }
        verified
    }

    fn verify_all(&self) -> Result<()> {
        self.tree.verify(&self.cache).map_err(|e| self.tree_err(e))?;
        let (live, stored, bytes) = self.recount()?;
        let counters = (self.live_keys, self.stored_keys, self.size_bytes);
        if (live, stored, bytes) != counters {
            let detail = format!("counters (live, stored, bytes) {counters:?}, recounted {:?}", (live, stored, bytes));
            let source = btree::Error::Inconsistent { detail };
            return Err(DiskError::Tree { path: self.path().into(), source });
        }
        Ok(())
    }
}

/// Bytes as lowercase hex (error messages).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `size_bytes` of one stored version.
fn entry_bytes(tree_key_bytes: usize, value_bytes: usize) -> u64 {
    ENTRY_OVERHEAD_BYTES + tree_key_bytes as u64 + value_bytes as u64
}

impl<F: PageFile> MvccStore for DiskStore<F> {
    fn latest(&self, key: &[u8]) -> Option<KvRef<'_>> {
        self.read(|s| s.latest_pinned(key))?
    }

    fn scan(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>) {
        self.read(|s| s.scan_forward(start, end, rev, f));
    }

    fn scan_rev(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>) {
        self.read(|s| s.scan_backward(start, end, rev, f));
    }

    fn count(&self, start: &[u8], end: End<'_>, rev: i64) -> u64 {
        self.read(|s| s.count_live(start, end, rev)).unwrap_or(0)
    }

    fn history(&self, start: &[u8], end: End<'_>, from: i64, to: i64, f: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        self.read(|s| s.history_of(start, end, from, to, f));
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: i64, rev: Rev) -> Option<KeyValue> {
        self.write(|s| s.put_version(key, value, lease, rev))?
    }

    fn delete(&mut self, key: &[u8], rev: Rev) -> Option<KeyValue> {
        self.write(|s| s.delete_version(key, rev))?
    }

    fn begin_compact(&mut self, rev: i64) {
        self.write(|s| {
            s.begin_compaction(rev);
            Ok(())
        });
    }

    /// A broken store reports no work left (it does none).
    fn compact_step(&mut self, budget_keys: usize) -> bool {
        self.write(|s| s.compaction_step(budget_keys)).unwrap_or(true)
    }

    fn live_keys(&self) -> u64 {
        self.live_keys
    }

    /// Approximate: the bytes of the leaf cells of every stored version
    /// (tree key, encoded value with its metadata, cell header and slot).
    /// Not counted: branch pages, overflow page headers, free space in
    /// pages, free pages, the meta pages. The file is `file_pages()` pages.
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn split_key(&self) -> Option<Vec<u8>> {
        self.read(|s| s.split_key_of())?
    }

    fn key_at(&self, n: u64, from_high: bool) -> Option<Vec<u8>> {
        self.read(|s| s.live_key_at(n, from_high))?
    }

    /// As `MemStore`'s: the histories leave compacted at the compacted
    /// revision.
    fn take_range(&mut self, start: &[u8], end: End<'_>) -> Vec<KeyHistory> {
        self.write(|s| s.take_histories(start, end)).unwrap_or_default()
    }

    /// As `MemStore`'s: compacted at the compacted revision on the way in; a
    /// key already present gets the union of both histories.
    fn insert_histories(&mut self, histories: Vec<KeyHistory>) {
        self.write(|s| histories.into_iter().try_for_each(|h| s.insert_history(h)));
    }
}
