//! A copy-on-write B+tree of byte keys and byte values in fixed-size pages,
//! with checkpoints.
//!
//! Owns: the page formats, the tree algorithms, page allocation and the
//! free list, the checkpoint protocol, and two page stores (memory, and a
//! file with positional std I/O). Never touches: revisions, etcd, Raft or
//! the log (DESIGN §9: "btree knows bytes and pages"); caching and
//! asynchronous I/O (the caller's store); which file a tree lives in (errors
//! name page ids; the caller adds the path, the offset is `id × PAGE_BYTES`).
//!
//! # Using it
//!
//! `Tree::create` / `Tree::open` a `PageStore`; `get`, `insert`, `delete`
//! and `Cursor` (forward or backward from a key) work on the in-memory tree,
//! whose changed pages stay in memory ("dirty") until a checkpoint writes
//! them. `checkpoint` (or the staged `begin_checkpoint` /
//! `finish_checkpoint`) makes the current state durable with a caller blob
//! (e.g. the applied log index). Nothing between checkpoints is durable: the
//! caller's log is.
//!
//! # Reads that miss: why operations can be retried
//!
//! The tree never owns or waits for its store: each operation takes the
//! store as an argument, and a caching store answers a read of a page it
//! does not hold with `StoreError::Miss(id)`. The operation then returns
//! `Error::Miss(id)` having changed nothing; the caller loads page `id`
//! (O_DIRECT through io_uring, yielding meanwhile) and calls again. Retrying
//! from the root is cheap because the upper levels are cached. To make this
//! safe, mutations read everything they need before changing anything (see
//! write.rs), and a `Cursor` keeps its position across a miss. A caller that
//! wants fewer round trips can prefetch: `Tree::overflow_pages` lists every
//! page of a large value, and `Tree::missing_pages` lists every page a
//! range read needs that the store misses (one round of loads per level). This keeps the tree sans-IO (like raft-rs's
//! `RawNode`) instead of threading `async` through the algorithms, and it
//! keeps the page logic testable with a fake disk.
//!
//! Checkpoints are sans-IO too: `begin_checkpoint` returns the sealed pages
//! and the meta page to write; the caller writes, syncs, writes the meta
//! page, syncs, and calls `finish_checkpoint`. Reads and mutations may
//! continue meanwhile.
//!
//! # Assumptions about the disk
//!
//! - A page write may be torn at any 512-byte sector boundary by a crash,
//!   and unsynced writes may reach the disk in any order, or not at all.
//! - After fdatasync returns Ok, every write issued before it is durable.
//!   After a failed write or sync nothing is known: the tree becomes
//!   `Broken` and must be reopened (the log replays the rest).
//! - Stored bytes may rot: every page carries a CRC32C and its own id, and
//!   is verified when read from the store. A lost write (the disk drops a
//!   write but acknowledges the sync) is not detected.
//!
//! # Crash consistency
//!
//! A checkpoint writes its pages only to ids that no durable checkpoint
//! uses, syncs, and then writes its meta page into the slot of the older
//! of the two checkpoints (`number % 2`), and syncs. Until that meta page
//! is durable, the previous checkpoint is intact and is what `open` finds;
//! a torn meta page fails its checksum and `open` falls back to the other
//! one. A page freed by copy-on-write is reused only after a checkpoint
//! that no longer references it is durable (alloc.rs).
//!
//! # On-disk format (format version 1)
//!
//! The file is an array of `PAGE_BYTES` (4096) pages; page `i` is at byte
//! `i × PAGE_BYTES`. All integers are little-endian. Every page starts with
//! a 32-byte header:
//!
//! | offset | size | field                                                     |
//! |--------|------|-----------------------------------------------------------|
//! | 0      | 4    | CRC32C of bytes 4..PAGE_BYTES                             |
//! | 4      | 8    | the page's own id                                         |
//! | 12     | 1    | kind: 1 meta, 2 leaf, 3 branch, 4 overflow head, 5 overflow data, 6 free list |
//! | 13     | 1    | level: height above the leaves (leaf 0)                   |
//! | 14     | 2    | count: cells (leaf, branch) or ids (overflow head, free list) |
//! | 16     | 2    | cells start: lowest cell offset (leaf, branch)            |
//! | 18     | 6    | zero                                                      |
//! | 24     | 8    | aux: free list: next page; overflow head: value bytes; overflow data: payload bytes |
//!
//! Pages 0 and 1 are meta pages; checkpoint `n` lives in page `n % 2`.
//! After the header:
//!
//! | offset | size | field                                                    |
//! |--------|------|----------------------------------------------------------|
//! | 32     | 8    | magic `corekvBT`                                         |
//! | 40     | 4    | format version (1)                                       |
//! | 44     | 4    | page size in bytes                                       |
//! | 48     | 8    | checkpoint number                                        |
//! | 56     | 8    | root page (0: empty tree)                                |
//! | 64     | 8    | root level                                               |
//! | 72     | 8    | number of keys                                           |
//! | 80     | 8    | page count: the file length the checkpoint uses          |
//! | 88     | 8    | first free-list page (0: none)                           |
//! | 96     | 8    | number of free page ids listed                           |
//! | 104    | 8    | blob length (at most `META_BLOB_BYTES_MAX`, 1024)        |
//! | 112    | n    | blob: the caller's bytes                                 |
//!
//! Leaf and branch pages are slotted (node.rs): u16 cell offsets after the
//! header, in key order; cells packed at the end of the page. A leaf cell is
//! `flags` u8 (0 inline, 1 overflow), `key_len` u16, `value_len` u32, the
//! key, then the value or its overflow head page id (u64). A branch cell is
//! `key_len` u16, `child` u64, the key; the first cell's key is empty and
//! child `i` holds keys in `[key_i, key_{i+1})`. Separators are the shortest
//! prefix that separates the two leaves (suffix truncation).
//!
//! A value that does not fit in half a page body goes to overflow pages
//! (overflow.rs): a head page listing up to `OVERFLOW_PAGES_MAX` (508) data
//! page ids, each data page holding up to 4064 bytes of the value. Free-list
//! pages (freelist.rs) hold up to 508 free page ids and the next page's id.
//!
//! # Bounds
//!
//! `PAGE_BYTES` 4096; keys up to `KEY_BYTES_MAX` (1000) bytes; values up to
//! `VALUE_BYTES_MAX` (2,064,512) bytes; meta blob up to
//! `META_BLOB_BYTES_MAX` (1024) bytes; tree height up to 255 levels (a
//! level is a u8; 4 levels already hold billions of keys).

#![deny(missing_docs)]

mod alloc;
mod checkpoint;
mod cursor;
mod error;
mod file;
mod freelist;
mod meta;
mod node;
mod overflow;
mod page;
mod prefetch;
mod store;
mod tree;
mod verify;
mod write;

#[cfg(test)]
mod tests;

pub use checkpoint::Checkpoint;
pub use cursor::{Cursor, Direction, Entry};
pub use error::{Corruption, Error, StoreError};
pub use file::FileStore;
pub use meta::{Meta, FORMAT_VERSION, META_BLOB_BYTES_MAX};
pub use node::{NodeRef, OverflowRef, Value, KEY_BYTES_MAX};
pub use overflow::{OVERFLOW_PAGES_MAX, VALUE_BYTES_MAX};
pub use page::{
    verify_bytes, Page, PageBuf, PageId, PageKind, HEADER_BYTES, PAGE_BODY_BYTES, PAGE_BYTES, SECTOR_BYTES,
};
pub use store::{MemStore, PageStore};
pub use tree::{Found, Tree};
pub use verify::VerifyStats;

/// Decodes arbitrary bytes as every kind of tree page, with and without a
/// valid checksum, walking every accessor. Never panics (fuzz entry point).
pub fn fuzz_page(bytes: &[u8]) {
    let id = PageId(2);
    let _ = verify_bytes(id, bytes);
    decode_page_body(id, bytes);
    if let Ok(mut page) = Page::from_bytes(bytes) {
        page.seal(id);
        let _ = page.verify(id);
        decode_page_body(id, page.bytes());
    }
}

fn decode_page_body(id: PageId, bytes: &[u8]) {
    if let Ok(node) = NodeRef::parse(id, bytes) {
        for i in 0..node.count().saturating_add(1) {
            let _ = (node.key(i), node.value(i), node.child(i), node.cell(i));
        }
        for probe in [&b""[..], b"a", b"m\x00", b"\xff\xff\xff"] {
            let _ = (node.find(probe), node.child_index(probe), node.lower_bound(probe, true));
        }
        let _ = node.used_bytes();
        let _ = node::NodeEdit::of(&node).map(|edit| (edit.fits(), edit.used_bytes()));
    }
    let aux = page::get_u64(bytes, page::field::AUX).unwrap_or(0);
    let aux_bytes = usize::try_from(aux).unwrap_or(usize::MAX);
    let _ = overflow::head_data_pages(id, bytes, aux_bytes);
    let _ = overflow::data_payload(id, bytes, aux_bytes.min(PAGE_BODY_BYTES));
    let _ = freelist::parse(id, bytes);
}

/// Decodes arbitrary bytes as a meta page in either slot, as given and
/// re-sealed (so field validation runs past the checksum). Never panics
/// (fuzz entry point).
pub fn fuzz_meta(bytes: &[u8]) {
    for slot in [PageId(0), PageId(1)] {
        let _ = Meta::decode(slot, bytes);
        if let Ok(mut page) = Page::from_bytes(bytes) {
            page.seal(slot);
            if let Ok(meta) = Meta::decode(slot, page.bytes()) {
                let _ = Meta::decode(meta.slot(), meta.encode().bytes());
            }
        }
    }
}
