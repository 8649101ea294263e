//! Errors of the B+tree and of page stores.
//!
//! Owns: `Corruption` (what is wrong with a page's bytes), `StoreError` (what
//! a page store reports) and `Error` (what tree operations report). Page
//! errors carry the page id; the caller that knows the file adds the path
//! (the offset is `PageId::byte_offset`).

use std::io;

use crate::btree::page::{PageId, PageKind};

/// What is wrong with the bytes of one page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The stored CRC32C does not match the bytes (a torn write, bit rot,
    /// or a page never written).
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The header names another page: a misdirected write.
    #[error("header names page {found}")]
    WrongId {
        /// The id in the header.
        found: u64,
    },
    /// The buffer is not one page long.
    #[error("{page_bytes} bytes where a page was expected")]
    WrongLength {
        /// Its length.
        page_bytes: usize,
    },
    /// The kind code is not one this version knows.
    #[error("unknown page kind {code}")]
    UnknownKind {
        /// The code in the header.
        code: u8,
    },
    /// The page is of the wrong kind for where it is referenced from.
    #[error("expected a {expected} page, found a {found} page")]
    UnexpectedKind {
        /// What the reference called for.
        expected: PageKind,
        /// What the header says.
        found: PageKind,
    },
    /// A node's level does not fit its place in the tree.
    #[error("expected level {expected}, found level {found}")]
    WrongLevel {
        /// The level its parent (or the meta page) implies.
        expected: u8,
        /// The level in the header.
        found: u8,
    },
    /// An offset, length or count points outside the page or breaks a bound.
    #[error("{what} out of bounds")]
    OutOfBounds {
        /// Which field.
        what: &'static str,
    },
    /// A field holds a value that cannot be (bad magic, version, page size,
    /// a page id outside the file, a duplicate, keys out of order).
    #[error("invalid {what}")]
    Invalid {
        /// Which field or rule.
        what: &'static str,
    },
}

/// What a `PageStore` reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The page is not in memory now: load it (asynchronously) and retry the
    /// operation. Only caching stores return this.
    #[error("page {0} is not resident; load it and retry")]
    Miss(PageId),
    /// The page's bytes failed validation.
    #[error("page {page} (byte offset {offset}) is corrupt: {corruption}", offset = page.byte_offset())]
    Corrupt {
        /// Which page.
        page: PageId,
        /// What is wrong.
        corruption: Corruption,
    },
    /// The page lies past the end of the file.
    #[error("page {page} is past the end of the store ({page_count} pages)")]
    OutOfRange {
        /// Which page.
        page: PageId,
        /// Pages the store holds.
        page_count: u64,
    },
    /// The operating system reported an error.
    #[error("{op} of page {page:?} failed: {source}")]
    Io {
        /// `read`, `write`, `sync`, `truncate`, `open`.
        op: &'static str,
        /// The page concerned, if one.
        page: Option<PageId>,
        /// The error.
        source: io::Error,
    },
}

/// What a tree operation reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A page the operation needs is not resident. Nothing was changed: load
    /// the page into the store and call the operation again.
    #[error("page {0} is not resident; load it and retry")]
    Miss(PageId),
    /// A page failed validation.
    #[error("page {page} (byte offset {offset}) is corrupt: {corruption}", offset = page.byte_offset())]
    Corrupt {
        /// Which page.
        page: PageId,
        /// What is wrong.
        corruption: Corruption,
    },
    /// A page reference points past the end of the store.
    #[error("page {page} is past the end of the store ({page_count} pages)")]
    OutOfRange {
        /// Which page.
        page: PageId,
        /// Pages the store holds.
        page_count: u64,
    },
    /// The store failed. If a checkpoint was being written, the tree is now
    /// `Broken`.
    #[error("{op} of page {page:?} failed: {source}")]
    Io {
        /// The store operation.
        op: &'static str,
        /// The page concerned, if one.
        page: Option<PageId>,
        /// The error.
        source: io::Error,
    },
    /// The store holds no pages: use `Tree::create`.
    #[error("the store is empty (not formatted)")]
    NotFormatted,
    /// `Tree::create` on a store that already holds pages.
    #[error("the store already holds {page_count} pages; refusing to format it")]
    NotEmpty {
        /// Pages it holds.
        page_count: u64,
    },
    /// Neither meta page is valid: the file is not a tree or both are damaged.
    #[error("no valid meta page (page 0: {slot0}; page 1: {slot1})")]
    NoValidMeta {
        /// Why page 0 was rejected.
        slot0: Box<Error>,
        /// Why page 1 was rejected.
        slot1: Box<Error>,
    },
    /// A key longer than the bound.
    #[error("key of {key_bytes} bytes exceeds the {key_bytes_max}-byte bound")]
    KeyTooLarge {
        /// Its length.
        key_bytes: usize,
        /// The bound.
        key_bytes_max: usize,
    },
    /// A value longer than the bound.
    #[error("value of {value_bytes} bytes exceeds the {value_bytes_max}-byte bound")]
    ValueTooLarge {
        /// Its length.
        value_bytes: usize,
        /// The bound.
        value_bytes_max: usize,
    },
    /// A checkpoint blob longer than the meta page holds.
    #[error("checkpoint blob of {blob_bytes} bytes exceeds the {blob_bytes_max}-byte bound")]
    BlobTooLarge {
        /// Its length.
        blob_bytes: usize,
        /// The bound.
        blob_bytes_max: usize,
    },
    /// `begin_checkpoint` while another checkpoint is being written.
    #[error("a checkpoint is already being written")]
    CheckpointInFlight,
    /// `finish_checkpoint` with a checkpoint this tree did not begin.
    #[error("checkpoint {number} is not the one being written")]
    CheckpointMismatch {
        /// The number of the checkpoint passed in.
        number: u64,
    },
    /// A checkpoint failed part-way; the in-memory state can no longer be
    /// trusted to match the file. Reopen the store (and replay the log).
    #[error("a checkpoint failed; reopen the store")]
    Broken,
    /// `Tree::verify` found the tree or its page accounting inconsistent.
    #[error("inconsistent tree: {detail}")]
    Inconsistent {
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The page to load before retrying, if this is a miss.
    pub fn missing_page(&self) -> Option<PageId> {
        match self {
            Error::Miss(id) => Some(*id),
            _ => None,
        }
    }

    /// A corruption error for `page`.
    pub(crate) fn corrupt(page: PageId, corruption: Corruption) -> Error {
        Error::Corrupt { page, corruption }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Miss(id) => Error::Miss(id),
            StoreError::Corrupt { page, corruption } => Error::Corrupt { page, corruption },
            StoreError::OutOfRange { page, page_count } => Error::OutOfRange { page, page_count },
            StoreError::Io { op, page, source } => Error::Io { op, page, source },
        }
    }
}
