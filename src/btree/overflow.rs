//! Overflow pages: values too large for a leaf.
//!
//! Owns: the layout of overflow head pages (the list of a value's data
//! pages) and overflow data pages (consecutive slices of the value). Never
//! touches: allocation, the store, or the leaf that points here.
//!
//! A head page lists every data page, so a value can be freed after reading
//! one page, and a caching store can load all of a value's pages at once
//! instead of following a chain one miss at a time.
//!
//! - head: header `count` = data pages, `aux` = value bytes; then `count`
//!   u64 page ids;
//! - data: header `aux` = payload bytes (`PAGE_BODY_BYTES` except in the
//!   last page); then the payload.

use crate::btree::error::{Corruption, Error};
use crate::btree::page::{
    expect_kind, field, get_u16, get_u64, put_u64, write_header, Page, PageId, PageKind, HEADER_BYTES, PAGE_BODY_BYTES,
};

/// Bytes of a page id in a head page.
const ID_BYTES: usize = 8;
/// The most data pages one value may use: as many ids as a head page holds.
pub const OVERFLOW_PAGES_MAX: usize = PAGE_BODY_BYTES / ID_BYTES;
/// The largest value, in bytes (about 1.97 MiB with 4 KiB pages, above the
/// 1.5 MiB a Kubernetes object may reach).
pub const VALUE_BYTES_MAX: usize = OVERFLOW_PAGES_MAX * PAGE_BODY_BYTES;

const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);

/// Data pages a value of `value_bytes` needs.
pub(crate) fn data_pages_for(value_bytes: usize) -> usize {
    value_bytes.div_ceil(PAGE_BODY_BYTES)
}

/// The head page for a value of `value_bytes` held in `data` pages.
pub(crate) fn build_head(value_bytes: usize, data: &[PageId]) -> Page {
    debug_assert!(data.len() == data_pages_for(value_bytes) && data.len() <= OVERFLOW_PAGES_MAX);
    let mut page = Page::zeroed();
    let bytes = page.bytes_mut();
    write_header(bytes, PageKind::OverflowHead, 0, data.len() as u16, value_bytes as u64);
    for (i, id) in data.iter().enumerate() {
        put_u64(bytes, HEADER_BYTES + i * ID_BYTES, id.0);
    }
    page
}

/// A data page holding `chunk` (at most `PAGE_BODY_BYTES`).
pub(crate) fn build_data(chunk: &[u8]) -> Page {
    debug_assert!(chunk.len() <= PAGE_BODY_BYTES);
    let mut page = Page::zeroed();
    let bytes = page.bytes_mut();
    write_header(bytes, PageKind::OverflowData, 0, 0, chunk.len() as u64);
    bytes[HEADER_BYTES..HEADER_BYTES + chunk.len()].copy_from_slice(chunk);
    page
}

/// The data page ids listed by head page `id` for a value the leaf says is
/// `value_bytes` long; checks that the head agrees.
pub(crate) fn head_data_pages(id: PageId, bytes: &[u8], value_bytes: usize) -> Result<Vec<PageId>, Error> {
    let bad = |c| Error::corrupt(id, c);
    expect_kind(bytes, PageKind::OverflowHead).map_err(bad)?;
    let count = usize::from(get_u16(bytes, field::COUNT).unwrap_or(u16::MAX));
    let recorded = get_u64(bytes, field::AUX).unwrap_or(u64::MAX);
    if recorded != value_bytes as u64 {
        return Err(bad(Corruption::Invalid { what: "overflow value length" }));
    }
    if count > OVERFLOW_PAGES_MAX || count != data_pages_for(value_bytes) {
        return Err(bad(Corruption::OutOfBounds { what: "overflow page count" }));
    }
    (0..count)
        .map(|i| {
            let page = PageId(get_u64(bytes, HEADER_BYTES + i * ID_BYTES).unwrap_or(0));
            if page < PageId::FIRST_DATA {
                return Err(bad(Corruption::Invalid { what: "overflow data page id" }));
            }
            Ok(page)
        })
        .collect()
}

/// The payload of data page `id`, which must be `payload_bytes` long.
pub(crate) fn data_payload(id: PageId, bytes: &[u8], payload_bytes: usize) -> Result<&[u8], Error> {
    let bad = |c| Error::corrupt(id, c);
    expect_kind(bytes, PageKind::OverflowData).map_err(bad)?;
    if get_u64(bytes, field::AUX) != Some(payload_bytes as u64) {
        return Err(bad(Corruption::Invalid { what: "overflow payload length" }));
    }
    bytes
        .get(HEADER_BYTES..HEADER_BYTES + payload_bytes)
        .ok_or(bad(Corruption::OutOfBounds { what: "overflow payload" }))
}

/// Payload bytes of data page `i` of a value of `value_bytes`.
pub(crate) fn payload_bytes_of(i: usize, value_bytes: usize) -> usize {
    value_bytes.saturating_sub(i * PAGE_BODY_BYTES).min(PAGE_BODY_BYTES)
}
