//! Free-list pages: the durable list of free page ids of one checkpoint.
//!
//! Owns: the layout of free-list pages. Never touches: which pages are free
//! (the allocator decides), the store, or the meta page that points here.
//!
//! Layout: header `count` = ids in this page, `aux` = next free-list page
//! (0 at the end of the chain); then `count` u64 page ids.

use crate::btree::error::{Corruption, Error};
use crate::btree::page::{
    expect_kind, field, get_u16, get_u64, put_u64, write_header, Page, PageId, PageKind, HEADER_BYTES, PAGE_BODY_BYTES,
};

/// Bytes of one id.
const ID_BYTES: usize = 8;
/// Page ids one free-list page holds.
pub(crate) const IDS_PER_PAGE: usize = PAGE_BODY_BYTES / ID_BYTES;

/// A free-list page holding `ids` (at most `IDS_PER_PAGE`), followed by `next`.
pub(crate) fn build(ids: &[PageId], next: PageId) -> Page {
    debug_assert!(ids.len() <= IDS_PER_PAGE);
    let mut page = Page::zeroed();
    let bytes = page.bytes_mut();
    write_header(bytes, PageKind::FreeList, 0, ids.len() as u16, next.0);
    for (i, id) in ids.iter().enumerate() {
        put_u64(bytes, HEADER_BYTES + i * ID_BYTES, id.0);
    }
    page
}

/// The ids in free-list page `id` and the next page of the chain.
pub(crate) fn parse(id: PageId, bytes: &[u8]) -> Result<(Vec<PageId>, PageId), Error> {
    let bad = |c| Error::corrupt(id, c);
    expect_kind(bytes, PageKind::FreeList).map_err(bad)?;
    let count = usize::from(get_u16(bytes, field::COUNT).unwrap_or(u16::MAX));
    if count > IDS_PER_PAGE {
        return Err(bad(Corruption::OutOfBounds { what: "free-list count" }));
    }
    let next = PageId(get_u64(bytes, field::AUX).unwrap_or(0));
    let ids = (0..count).map(|i| PageId(get_u64(bytes, HEADER_BYTES + i * ID_BYTES).unwrap_or(0))).collect();
    Ok((ids, next))
}
