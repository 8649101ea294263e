//! Meta pages: the two checkpoint records at pages 0 and 1.
//!
//! Owns: the meta page layout, its encoding and its validation. Never
//! touches: the store (the tree reads and writes the pages), or what the
//! caller's blob means.
//!
//! Checkpoint `n` is written to page `n % 2`, so a new checkpoint always
//! overwrites the older record and a torn write leaves the newer one.

use crate::btree::error::{Corruption, Error};
use crate::btree::page::{
    expect_kind, get_u32, get_u64, put_u32, put_u64, write_header, Page, PageId, PageKind, HEADER_BYTES, PAGE_BYTES,
};

/// Identifies a corekv B+tree file.
pub const MAGIC: [u8; 8] = *b"corekvBT";
/// Version of the on-disk format.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the caller's blob a meta page holds.
pub const META_BLOB_BYTES_MAX: usize = 1024;

/// Field offsets after the common header.
mod at {
    use super::HEADER_BYTES;
    pub const MAGIC: usize = HEADER_BYTES;
    pub const VERSION: usize = MAGIC + 8;
    pub const PAGE_BYTES: usize = VERSION + 4;
    pub const NUMBER: usize = PAGE_BYTES + 4;
    pub const ROOT: usize = NUMBER + 8;
    pub const ROOT_LEVEL: usize = ROOT + 8;
    pub const ENTRIES: usize = ROOT_LEVEL + 8;
    pub const PAGE_COUNT: usize = ENTRIES + 8;
    pub const FREE_HEAD: usize = PAGE_COUNT + 8;
    pub const FREE_COUNT: usize = FREE_HEAD + 8;
    pub const BLOB_BYTES: usize = FREE_COUNT + 8;
    pub const BLOB: usize = BLOB_BYTES + 8;
}

const _: () = assert!(at::BLOB + META_BLOB_BYTES_MAX <= PAGE_BYTES);

/// The content of one meta page: everything needed to open a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The checkpoint number; higher is newer.
    pub number: u64,
    /// The root page, `PageId::NONE` for an empty tree.
    pub root: PageId,
    /// The root's level (0 = leaf).
    pub root_level: u8,
    /// Number of keys in the tree.
    pub entries: u64,
    /// Pages of the file the checkpoint uses (ids below this).
    pub page_count: u64,
    /// First free-list page, `PageId::NONE` if none.
    pub free_head: PageId,
    /// Number of ids on the free list.
    pub free_count: u64,
    /// The caller's bytes (e.g. the applied log index and revision).
    pub blob: Vec<u8>,
}

impl Meta {
    /// The meta page slot this checkpoint is written to.
    pub fn slot(&self) -> PageId {
        PageId(self.number % 2)
    }

    /// The sealed page.
    pub fn encode(&self) -> Page {
        debug_assert!(self.blob.len() <= META_BLOB_BYTES_MAX);
        let mut page = Page::zeroed();
        let bytes = page.bytes_mut();
        write_header(bytes, PageKind::Meta, 0, 0, 0);
        bytes[at::MAGIC..at::MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(bytes, at::VERSION, FORMAT_VERSION);
        put_u32(bytes, at::PAGE_BYTES, PAGE_BYTES as u32);
        put_u64(bytes, at::NUMBER, self.number);
        put_u64(bytes, at::ROOT, self.root.0);
        put_u64(bytes, at::ROOT_LEVEL, u64::from(self.root_level));
        put_u64(bytes, at::ENTRIES, self.entries);
        put_u64(bytes, at::PAGE_COUNT, self.page_count);
        put_u64(bytes, at::FREE_HEAD, self.free_head.0);
        put_u64(bytes, at::FREE_COUNT, self.free_count);
        put_u64(bytes, at::BLOB_BYTES, self.blob.len() as u64);
        bytes[at::BLOB..at::BLOB + self.blob.len()].copy_from_slice(&self.blob);
        page.seal(self.slot());
        page
    }

    /// Decodes and validates meta page `id` (0 or 1), checksum included.
    pub fn decode(id: PageId, bytes: &[u8]) -> Result<Meta, Error> {
        let bad = |c| Error::corrupt(id, c);
        let invalid = |what| Error::corrupt(id, Corruption::Invalid { what });
        crate::btree::page::verify_bytes(id, bytes).map_err(bad)?;
        expect_kind(bytes, PageKind::Meta).map_err(bad)?;
        if bytes.get(at::MAGIC..at::MAGIC + 8) != Some(&MAGIC[..]) {
            return Err(invalid("magic"));
        }
        if get_u32(bytes, at::VERSION) != Some(FORMAT_VERSION) {
            return Err(invalid("format version"));
        }
        if get_u32(bytes, at::PAGE_BYTES) != Some(PAGE_BYTES as u32) {
            return Err(invalid("page size"));
        }
        let meta = Meta::read_fields(bytes).ok_or(bad(Corruption::OutOfBounds { what: "meta fields" }))?;
        meta.check(id)?;
        Ok(meta)
    }

    fn read_fields(bytes: &[u8]) -> Option<Meta> {
        let blob_bytes = usize::try_from(get_u64(bytes, at::BLOB_BYTES)?).ok()?;
        if blob_bytes > META_BLOB_BYTES_MAX {
            return None;
        }
        Some(Meta {
            number: get_u64(bytes, at::NUMBER)?,
            root: PageId(get_u64(bytes, at::ROOT)?),
            root_level: u8::try_from(get_u64(bytes, at::ROOT_LEVEL)?).ok()?,
            entries: get_u64(bytes, at::ENTRIES)?,
            page_count: get_u64(bytes, at::PAGE_COUNT)?,
            free_head: PageId(get_u64(bytes, at::FREE_HEAD)?),
            free_count: get_u64(bytes, at::FREE_COUNT)?,
            blob: bytes.get(at::BLOB..at::BLOB + blob_bytes)?.to_vec(),
        })
    }

    /// Rules between fields.
    fn check(&self, id: PageId) -> Result<(), Error> {
        let invalid = |what| Err(Error::corrupt(id, Corruption::Invalid { what }));
        if self.slot() != id {
            return invalid("checkpoint number for this meta page");
        }
        if self.page_count < PageId::FIRST_DATA.0 {
            return invalid("page count");
        }
        let in_file = |p: PageId| p == PageId::NONE || (p >= PageId::FIRST_DATA && p.0 < self.page_count);
        if !in_file(self.root) || !in_file(self.free_head) {
            return invalid("root or free-list page id");
        }
        if self.root == PageId::NONE && (self.root_level != 0 || self.entries != 0) {
            return invalid("empty tree with entries");
        }
        if (self.free_head == PageId::NONE && self.free_count != 0) || self.free_count >= self.page_count {
            return invalid("free-list count");
        }
        Ok(())
    }
}
