//! Pages: the fixed-size unit of storage, their common header and checksum.
//!
//! Owns: `PageId`, the aligned page buffer `Page`, the page kinds, the
//! 32-byte header every page starts with, and the CRC32C seal. Never touches:
//! what is inside a page past the header (node, overflow, free-list and meta
//! modules own their layouts), files, or the tree.

use std::fmt;

use crate::btree::error::Corruption;

/// Bytes in a page: the unit of every read, write and allocation. Offsets
/// inside a page are `u16`, so it may grow up to 32 KiB; it stays a multiple
/// of 4 KiB for O_DIRECT.
pub const PAGE_BYTES: usize = 4096;
/// Bytes of the header at the start of every page.
pub const HEADER_BYTES: usize = 32;
/// Bytes a page holds after its header.
pub const PAGE_BODY_BYTES: usize = PAGE_BYTES - HEADER_BYTES;
/// Bytes of one disk sector: the unit a torn write is made of (crash tests).
pub const SECTOR_BYTES: usize = 512;

const _: () = assert!(PAGE_BYTES.is_multiple_of(4096) && PAGE_BYTES <= 32768);
// `PageBuf`'s `align` attribute needs a literal; it must stay the O_DIRECT
// alignment (4 KiB), whatever the page size.
const _: () = assert!(std::mem::align_of::<PageBuf>() == 4096);

/// Header field offsets (all little-endian).
pub(crate) mod field {
    /// u32: CRC32C of bytes `4..PAGE_BYTES`.
    pub const CHECKSUM: usize = 0;
    /// u64: the page's own id (catches misdirected writes).
    pub const ID: usize = 4;
    /// u8: `PageKind`.
    pub const KIND: usize = 12;
    /// u8: branch height above the leaves (leaf 0; other kinds 0).
    pub const LEVEL: usize = 13;
    /// u16: cells (leaf, branch) or page ids (overflow head, free list).
    pub const COUNT: usize = 14;
    /// u16: start of the cell area (leaf, branch); `PAGE_BYTES` when empty.
    pub const CELLS_START: usize = 16;
    /// u64: kind-specific (free list: next page; overflow head: value
    /// bytes; overflow data: payload bytes in this page).
    pub const AUX: usize = 24;
}

/// The number of a page in its file: byte offset = id × `PAGE_BYTES`.
/// Pages 0 and 1 are the meta pages, so id 0 doubles as "no page".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

impl PageId {
    /// "No page" (an empty tree's root, the end of a chain).
    pub const NONE: PageId = PageId(0);
    /// The first id a tree, overflow or free-list page can have.
    pub const FIRST_DATA: PageId = PageId(2);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Where the page starts in its file.
    pub const fn byte_offset(self) -> u64 {
        self.0.saturating_mul(PAGE_BYTES as u64)
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// One of the two checkpoint records (pages 0 and 1).
    Meta,
    /// Sorted (key, value) cells.
    Leaf,
    /// Sorted (separator key, child page) cells.
    Branch,
    /// The list of data pages of one large value.
    OverflowHead,
    /// A slice of one large value.
    OverflowData,
    /// Part of the list of free pages.
    FreeList,
}

impl PageKind {
    /// The on-disk code.
    pub const fn code(self) -> u8 {
        match self {
            PageKind::Meta => 1,
            PageKind::Leaf => 2,
            PageKind::Branch => 3,
            PageKind::OverflowHead => 4,
            PageKind::OverflowData => 5,
            PageKind::FreeList => 6,
        }
    }

    /// The kind of an on-disk code, if known.
    pub const fn from_code(code: u8) -> Option<PageKind> {
        match code {
            1 => Some(PageKind::Meta),
            2 => Some(PageKind::Leaf),
            3 => Some(PageKind::Branch),
            4 => Some(PageKind::OverflowHead),
            5 => Some(PageKind::OverflowData),
            6 => Some(PageKind::FreeList),
            _ => None,
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The bytes of one page, aligned for O_DIRECT.
#[repr(C, align(4096))]
pub struct PageBuf(pub [u8; PAGE_BYTES]);

/// An owned, 4 KiB-aligned page buffer (one heap allocation of exactly
/// `PAGE_BYTES`). Shared read-only as `Arc<Page>`; the `Box` inside keeps the
/// `Arc`'s counters out of the aligned allocation.
pub struct Page {
    buf: Box<PageBuf>,
}

impl Page {
    /// A page of zeros.
    pub fn zeroed() -> Page {
        Page { buf: Box::new(PageBuf([0; PAGE_BYTES])) }
    }

    /// A page holding a copy of `bytes`, which must be exactly one page.
    pub fn from_bytes(bytes: &[u8]) -> Result<Page, Corruption> {
        let array: &[u8; PAGE_BYTES] =
            bytes.try_into().map_err(|_| Corruption::WrongLength { page_bytes: bytes.len() })?;
        let mut page = Page::zeroed();
        page.buf.0.copy_from_slice(array);
        Ok(page)
    }

    /// The page's bytes.
    pub fn bytes(&self) -> &[u8; PAGE_BYTES] {
        &self.buf.0
    }

    /// The page's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_BYTES] {
        &mut self.buf.0
    }

    /// The aligned buffer itself (for positional or O_DIRECT I/O).
    pub fn buf_mut(&mut self) -> &mut PageBuf {
        &mut self.buf
    }

    /// The kind recorded in the header, if valid.
    pub fn kind(&self) -> Option<PageKind> {
        PageKind::from_code(self.buf.0[field::KIND])
    }

    /// Writes `id` into the header and the checksum over everything after
    /// it: the page is ready to be written at `id`.
    pub fn seal(&mut self, id: PageId) {
        put_u64(&mut self.buf.0, field::ID, id.0);
        let crc = checksum(&self.buf.0);
        put_u32(&mut self.buf.0, field::CHECKSUM, crc);
    }

    /// Checks that this page, read from `id`, is the one sealed for `id`.
    pub fn verify(&self, id: PageId) -> Result<(), Corruption> {
        verify_bytes(id, &self.buf.0)
    }
}

impl Clone for Page {
    fn clone(&self) -> Page {
        let mut page = Page::zeroed();
        page.buf.0.copy_from_slice(&self.buf.0);
        page
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("kind", &self.kind())
            .field("id", &get_u64(&self.buf.0, field::ID))
            .field("count", &get_u16(&self.buf.0, field::COUNT))
            .finish()
    }
}

/// CRC32C of a page's bytes after the checksum field.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes.get(field::ID..).unwrap_or(&[]))
}

/// Checks length, checksum and recorded id of page bytes read from `id`.
pub fn verify_bytes(id: PageId, bytes: &[u8]) -> Result<(), Corruption> {
    if bytes.len() != PAGE_BYTES {
        return Err(Corruption::WrongLength { page_bytes: bytes.len() });
    }
    let stored = get_u32(bytes, field::CHECKSUM).unwrap_or(0);
    let computed = checksum(bytes);
    if stored != computed {
        return Err(Corruption::Checksum { stored, computed });
    }
    let found = get_u64(bytes, field::ID).unwrap_or(u64::MAX);
    if found != id.0 {
        return Err(Corruption::WrongId { found });
    }
    Ok(())
}

/// The header's page kind; an error for an unknown code.
pub(crate) fn kind_of(bytes: &[u8]) -> Result<PageKind, Corruption> {
    let code = get_u8(bytes, field::KIND).ok_or(Corruption::WrongLength { page_bytes: bytes.len() })?;
    PageKind::from_code(code).ok_or(Corruption::UnknownKind { code })
}

/// Checks that the header's kind is `expected`.
pub(crate) fn expect_kind(bytes: &[u8], expected: PageKind) -> Result<(), Corruption> {
    let found = kind_of(bytes)?;
    if found != expected {
        return Err(Corruption::UnexpectedKind { expected, found });
    }
    Ok(())
}

/// Writes the common header fields (not id and checksum: `seal` does).
pub(crate) fn write_header(bytes: &mut [u8], kind: PageKind, level: u8, count: u16, aux: u64) {
    bytes[field::KIND] = kind.code();
    bytes[field::LEVEL] = level;
    put_u16(bytes, field::COUNT, count);
    put_u64(bytes, field::AUX, aux);
}

/// Little-endian reads that return `None` past the end instead of
/// panicking: every read of bytes that came from disk goes through these.
pub(crate) fn get_u8(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

/// See [`get_u8`].
pub(crate) fn get_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

/// See [`get_u8`].
pub(crate) fn get_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// See [`get_u8`].
pub(crate) fn get_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Little-endian writes into a page being built; offsets are computed by
/// this module's callers from bounds they checked, so out of range is a bug.
pub(crate) fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// See [`put_u16`].
pub(crate) fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// See [`put_u16`].
pub(crate) fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
