//! Leaf and branch pages: the slotted layout, read in place and rebuilt.
//!
//! Owns: the cell formats, `NodeRef` (checked, zero-copy accessors over a
//! page's bytes) and `NodeEdit` (a node's cells being rearranged: insert,
//! remove, split, merge, then built into a fresh page). Never touches: page
//! ids' allocation, the store, or what keys mean (they are compared as
//! bytes).
//!
//! Layout after the 32-byte header: `count` u16 slots (cell offsets, in key
//! order), free space, then the cells packed towards the end of the page
//! (`cells_start` is the lowest cell offset). Cells:
//!
//! - leaf: `flags` u8 (0 inline, 1 overflow), `key_len` u16, `value_len` u32,
//!   the key, then the value (inline) or its overflow head page id (u64);
//! - branch: `key_len` u16, `child` u64, the key. The first cell's key is
//!   always empty: it stands for "everything below the second key".
//!
//! A child `i` of a branch holds the keys `k` with `key_i <= k < key_{i+1}`.

use std::borrow::Cow;

use crate::btree::error::{Corruption, Error};
use crate::btree::page::{
    field, get_u16, get_u32, get_u64, get_u8, kind_of, put_u16, put_u32, put_u64, write_header, Page, PageId, PageKind,
    HEADER_BYTES, PAGE_BODY_BYTES, PAGE_BYTES,
};

/// Bytes of one slot (a u16 cell offset).
pub(crate) const SLOT_BYTES: usize = 2;
/// Bytes of a leaf cell before its key.
const LEAF_CELL_HEADER_BYTES: usize = 7;
/// Bytes of a branch cell before its key.
const BRANCH_CELL_HEADER_BYTES: usize = 10;
/// Leaf cell flag: the value follows the key.
const FLAG_INLINE: u8 = 0;
/// Leaf cell flag: an overflow head page id follows the key.
const FLAG_OVERFLOW: u8 = 1;

/// The longest key, in bytes: four maximal branch cells fit in a page.
pub const KEY_BYTES_MAX: usize = PAGE_BYTES / 4 - 24;
/// The largest leaf cell with its slot is half a page body, so any full
/// page plus one cell splits into two pages that fit. Larger values go to
/// overflow pages.
pub(crate) const LEAF_CELL_BYTES_MAX: usize = PAGE_BODY_BYTES / 2 - SLOT_BYTES;
/// A node using fewer bytes than this (header included) after a delete is
/// merged with a sibling if the two fit in one page.
pub(crate) const MERGE_BELOW_BYTES: usize = PAGE_BYTES / 4;

const _: () = assert!(LEAF_CELL_HEADER_BYTES + KEY_BYTES_MAX + 8 <= LEAF_CELL_BYTES_MAX);
const _: () = assert!(4 * (SLOT_BYTES + BRANCH_CELL_HEADER_BYTES + KEY_BYTES_MAX) <= PAGE_BODY_BYTES);

/// Whether a (key, value) pair is stored in the leaf itself.
pub(crate) fn fits_inline(key_bytes: usize, value_bytes: usize) -> bool {
    LEAF_CELL_HEADER_BYTES + key_bytes + value_bytes <= LEAF_CELL_BYTES_MAX
}

/// A value as a leaf stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// The bytes, in the leaf page.
    Inline(&'a [u8]),
    /// In overflow pages; read it with `Tree::read_value`.
    Overflow(OverflowRef),
}

impl Value<'_> {
    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Inline(v) => v.len(),
            Value::Overflow(o) => o.value_bytes as usize,
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a large value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverflowRef {
    /// Its overflow head page (which lists the data pages).
    pub head: PageId,
    /// Its length.
    pub value_bytes: u32,
}

/// A leaf or branch page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Leaf,
    Branch,
}

impl NodeKind {
    fn page_kind(self) -> PageKind {
        match self {
            NodeKind::Leaf => PageKind::Leaf,
            NodeKind::Branch => PageKind::Branch,
        }
    }
}

/// Checked, zero-copy view of a leaf or branch page. Construction checks
/// the header; every accessor checks the offsets it follows and returns
/// `Error::Corrupt` (naming the page) instead of panicking.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    id: PageId,
    bytes: &'a [u8],
    kind: NodeKind,
    level: u8,
    count: usize,
}

impl<'a> NodeRef<'a> {
    /// Views `bytes` (page `id`, checksum already verified by the store) as
    /// a node.
    pub fn parse(id: PageId, bytes: &'a [u8]) -> Result<NodeRef<'a>, Error> {
        let bad = |c| Error::corrupt(id, c);
        if bytes.len() != PAGE_BYTES {
            return Err(bad(Corruption::WrongLength { page_bytes: bytes.len() }));
        }
        let kind = match kind_of(bytes).map_err(bad)? {
            PageKind::Leaf => NodeKind::Leaf,
            PageKind::Branch => NodeKind::Branch,
            found => return Err(bad(Corruption::UnexpectedKind { expected: PageKind::Leaf, found })),
        };
        let level = get_u8(bytes, field::LEVEL).unwrap_or(u8::MAX);
        let count = usize::from(get_u16(bytes, field::COUNT).unwrap_or(u16::MAX));
        let cells_start = usize::from(get_u16(bytes, field::CELLS_START).unwrap_or(u16::MAX));
        if (kind == NodeKind::Leaf) != (level == 0) {
            return Err(bad(Corruption::Invalid { what: "level for the node kind" }));
        }
        if kind == NodeKind::Branch && count == 0 {
            return Err(bad(Corruption::Invalid { what: "empty branch" }));
        }
        if HEADER_BYTES + count * SLOT_BYTES > cells_start || cells_start > PAGE_BYTES {
            return Err(bad(Corruption::OutOfBounds { what: "slot array or cell area" }));
        }
        Ok(NodeRef { id, bytes, kind, level, count })
    }

    /// Views `bytes` and checks that it is a node of `level` (0 = leaf).
    pub(crate) fn parse_at_level(id: PageId, bytes: &'a [u8], level: u8) -> Result<NodeRef<'a>, Error> {
        let node = NodeRef::parse(id, bytes)?;
        if node.level != level {
            return Err(Error::corrupt(id, Corruption::WrongLevel { expected: level, found: node.level }));
        }
        Ok(node)
    }

    /// The page id.
    pub fn id(&self) -> PageId {
        self.id
    }

    /// Whether this is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.kind == NodeKind::Leaf
    }

    pub(crate) fn kind(&self) -> NodeKind {
        self.kind
    }

    /// Height above the leaves (0 for a leaf).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Number of cells.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes in use: header, slots and cells.
    pub(crate) fn used_bytes(&self) -> Result<usize, Error> {
        let mut used = HEADER_BYTES;
        for i in 0..self.count {
            used += SLOT_BYTES + self.cell(i)?.len();
        }
        Ok(used)
    }

    fn corrupt(&self, what: &'static str) -> Error {
        Error::corrupt(self.id, Corruption::OutOfBounds { what })
    }

    /// The exact bytes of cell `i`.
    pub(crate) fn cell(&self, i: usize) -> Result<&'a [u8], Error> {
        if i >= self.count {
            return Err(self.corrupt("cell index"));
        }
        let offset = get_u16(self.bytes, HEADER_BYTES + i * SLOT_BYTES).ok_or_else(|| self.corrupt("slot"))?;
        let offset = usize::from(offset);
        if offset < HEADER_BYTES + self.count * SLOT_BYTES {
            return Err(self.corrupt("cell offset"));
        }
        let rest = self.bytes.get(offset..).ok_or_else(|| self.corrupt("cell offset"))?;
        let len = cell_len(self.kind, rest).map_err(|c| Error::corrupt(self.id, c))?;
        self.bytes.get(offset..offset + len).ok_or_else(|| self.corrupt("cell length"))
    }

    /// The key of cell `i` (empty for a branch's first cell).
    pub fn key(&self, i: usize) -> Result<&'a [u8], Error> {
        let cell = self.cell(i)?;
        Ok(cell_key(self.kind, cell))
    }

    /// The value of leaf cell `i`.
    pub fn value(&self, i: usize) -> Result<Value<'a>, Error> {
        if self.kind != NodeKind::Leaf {
            return Err(Error::corrupt(self.id, Corruption::Invalid { what: "value read from a branch" }));
        }
        Ok(leaf_cell_value(self.cell(i)?))
    }

    /// The child page of branch cell `i`.
    pub fn child(&self, i: usize) -> Result<PageId, Error> {
        if self.kind != NodeKind::Branch {
            return Err(Error::corrupt(self.id, Corruption::Invalid { what: "child read from a leaf" }));
        }
        let child = branch_cell_child(self.cell(i)?);
        if child < PageId::FIRST_DATA {
            return Err(Error::corrupt(self.id, Corruption::Invalid { what: "child page id" }));
        }
        Ok(child)
    }

    /// The first index whose key is `>= key` (or `> key` if `strict`):
    /// where `key` is or would be inserted.
    pub fn lower_bound(&self, key: &[u8], strict: bool) -> Result<usize, Error> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.key(mid)?;
            let before = if strict { k <= key } else { k < key };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The index of the exact `key`, if present.
    pub fn find(&self, key: &[u8]) -> Result<Option<usize>, Error> {
        let i = self.lower_bound(key, false)?;
        Ok((i < self.count && self.key(i)? == key).then_some(i))
    }

    /// The branch cell whose child may hold `key`: the last `i` with
    /// `key_i <= key` (cell 0 stands for everything below cell 1).
    pub fn child_index(&self, key: &[u8]) -> Result<usize, Error> {
        let (mut lo, mut hi) = (1, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid)? <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo - 1)
    }
}

/// The length of the cell at the start of `rest`, checked against `rest`
/// and the key bound.
fn cell_len(kind: NodeKind, rest: &[u8]) -> Result<usize, Corruption> {
    let oob = |what| Corruption::OutOfBounds { what };
    let len = match kind {
        NodeKind::Leaf => {
            let flags = get_u8(rest, 0).ok_or(oob("leaf cell header"))?;
            let key = usize::from(get_u16(rest, 1).ok_or(oob("leaf cell header"))?);
            let value = get_u32(rest, 3).ok_or(oob("leaf cell header"))? as usize;
            if key > KEY_BYTES_MAX {
                return Err(oob("key length"));
            }
            match flags {
                FLAG_INLINE => LEAF_CELL_HEADER_BYTES + key + value,
                FLAG_OVERFLOW => LEAF_CELL_HEADER_BYTES + key + 8,
                _ => return Err(Corruption::Invalid { what: "leaf cell flags" }),
            }
        }
        NodeKind::Branch => {
            let key = usize::from(get_u16(rest, 0).ok_or(oob("branch cell header"))?);
            if key > KEY_BYTES_MAX {
                return Err(oob("key length"));
            }
            BRANCH_CELL_HEADER_BYTES + key
        }
    };
    if len > rest.len() {
        return Err(oob("cell length"));
    }
    Ok(len)
}

// The functions below take cells that `NodeRef::cell` (or an encoder here)
// produced, so their lengths are already checked; they still never index
// out of bounds (they fall back to empty slices and zero ids).

/// The key of a checked cell.
pub(crate) fn cell_key(kind: NodeKind, cell: &[u8]) -> &[u8] {
    let (len_at, key_at) = match kind {
        NodeKind::Leaf => (1, LEAF_CELL_HEADER_BYTES),
        NodeKind::Branch => (0, BRANCH_CELL_HEADER_BYTES),
    };
    let key_len = usize::from(get_u16(cell, len_at).unwrap_or(0));
    cell.get(key_at..key_at + key_len).unwrap_or(&[])
}

/// The value of a checked leaf cell.
pub(crate) fn leaf_cell_value(cell: &[u8]) -> Value<'_> {
    let key_len = usize::from(get_u16(cell, 1).unwrap_or(0));
    let value_bytes = get_u32(cell, 3).unwrap_or(0);
    let at = LEAF_CELL_HEADER_BYTES + key_len;
    if get_u8(cell, 0) == Some(FLAG_OVERFLOW) {
        let head = PageId(get_u64(cell, at).unwrap_or(0));
        Value::Overflow(OverflowRef { head, value_bytes })
    } else {
        Value::Inline(cell.get(at..).unwrap_or(&[]))
    }
}

/// The child of a checked branch cell.
pub(crate) fn branch_cell_child(cell: &[u8]) -> PageId {
    PageId(get_u64(cell, 2).unwrap_or(0))
}

/// A leaf cell; `value` must fit inline (see `fits_inline`).
pub(crate) fn leaf_cell(key: &[u8], value: Value<'_>) -> Vec<u8> {
    let mut cell = Vec::with_capacity(LEAF_CELL_HEADER_BYTES + key.len() + 8);
    let (flags, value_bytes) = match value {
        Value::Inline(v) => (FLAG_INLINE, v.len() as u32),
        Value::Overflow(o) => (FLAG_OVERFLOW, o.value_bytes),
    };
    cell.push(flags);
    cell.extend_from_slice(&(key.len() as u16).to_le_bytes());
    cell.extend_from_slice(&value_bytes.to_le_bytes());
    cell.extend_from_slice(key);
    match value {
        Value::Inline(v) => cell.extend_from_slice(v),
        Value::Overflow(o) => cell.extend_from_slice(&o.head.0.to_le_bytes()),
    }
    debug_assert!(cell.len() <= LEAF_CELL_BYTES_MAX);
    cell
}

/// A branch cell.
pub(crate) fn branch_cell(key: &[u8], child: PageId) -> Vec<u8> {
    let mut cell = vec![0; BRANCH_CELL_HEADER_BYTES];
    put_u16(&mut cell, 0, key.len() as u16);
    put_u64(&mut cell, 2, child.0);
    cell.extend_from_slice(key);
    cell
}

/// The shortest key `s` with `left < s <= right`, given `left < right`: a
/// prefix of `right` (suffix truncation keeps separators short).
pub(crate) fn separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..(common + 1).min(right.len())].to_vec()
}

/// A node's cells being rearranged before it is built into a new page.
/// Cells are borrowed from the page they came from until replaced.
pub(crate) struct NodeEdit<'a> {
    pub kind: NodeKind,
    pub level: u8,
    pub cells: Vec<Cow<'a, [u8]>>,
}

impl<'a> NodeEdit<'a> {
    /// An empty leaf.
    pub fn empty_leaf() -> NodeEdit<'a> {
        NodeEdit { kind: NodeKind::Leaf, level: 0, cells: Vec::new() }
    }

    /// The cells of `node`, every one checked.
    pub fn of(node: &NodeRef<'a>) -> Result<NodeEdit<'a>, Error> {
        let cells = (0..node.count()).map(|i| node.cell(i).map(Cow::Borrowed)).collect::<Result<_, _>>()?;
        Ok(NodeEdit { kind: node.kind(), level: node.level(), cells })
    }

    /// Bytes the built page would use.
    pub fn used_bytes(&self) -> usize {
        HEADER_BYTES + self.cells.iter().map(|c| SLOT_BYTES + c.len()).sum::<usize>()
    }

    /// Whether the cells fit in one page.
    pub fn fits(&self) -> bool {
        self.used_bytes() <= PAGE_BYTES
    }

    /// The key of cell `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        self.cells.get(i).map_or(&[], |c| cell_key(self.kind, c))
    }

    /// Points branch cell `i` at `child`, keeping its key.
    pub fn set_child(&mut self, i: usize, child: PageId) {
        if let Some(cell) = self.cells.get_mut(i) {
            let mut owned = cell.to_vec();
            if owned.len() >= BRANCH_CELL_HEADER_BYTES {
                put_u64(&mut owned, 2, child.0);
            }
            *cell = Cow::Owned(owned);
        }
    }

    /// Removes cell `i`; if that was a branch's first cell, the next one
    /// takes its place with an empty key.
    pub fn remove(&mut self, i: usize) {
        if i < self.cells.len() {
            self.cells.remove(i);
        }
        if i == 0 {
            self.clear_first_key();
        }
    }

    /// Gives a branch's first cell an empty key (the "-infinity" cell).
    pub fn clear_first_key(&mut self) {
        if self.kind != NodeKind::Branch {
            return;
        }
        if let Some(first) = self.cells.first_mut() {
            if !cell_key(NodeKind::Branch, first).is_empty() {
                *first = Cow::Owned(branch_cell(&[], branch_cell_child(first)));
            }
        }
    }

    /// Appends `right`'s cells after this node's; for branches `separator`
    /// (the parent's key for `right`) becomes the key of right's first cell.
    pub fn append(&mut self, mut right: NodeEdit<'a>, separator: &[u8]) {
        if self.kind == NodeKind::Branch && !self.cells.is_empty() {
            if let Some(first) = right.cells.first_mut() {
                *first = Cow::Owned(branch_cell(separator, branch_cell_child(first)));
            }
        }
        self.cells.append(&mut right.cells);
        self.clear_first_key();
    }

    /// Builds the page (id and checksum are set when it is sealed).
    pub fn build(&self) -> Page {
        debug_assert!(self.fits(), "node of {} bytes built into a page", self.used_bytes());
        debug_assert!(self.kind == NodeKind::Leaf || self.key(0).is_empty());
        let mut page = Page::zeroed();
        let bytes = page.bytes_mut();
        let mut end = PAGE_BYTES;
        for (i, cell) in self.cells.iter().enumerate() {
            end -= cell.len();
            bytes[end..end + cell.len()].copy_from_slice(cell);
            put_u16(bytes, HEADER_BYTES + i * SLOT_BYTES, end as u16);
        }
        write_header(bytes, self.kind.page_kind(), self.level, self.cells.len() as u16, 0);
        put_u16(bytes, field::CELLS_START, end as u16);
        put_u32(bytes, field::CHECKSUM, 0);
        page
    }

    /// Splits a node that does not fit into two that do, returning the
    /// right half and the separator key for it. `new_index` is the cell
    /// that was just added: at the end (ascending inserts) the left page
    /// keeps every old cell, so appends fill pages completely.
    pub fn split(&mut self, new_index: usize) -> (NodeEdit<'a>, Vec<u8>) {
        let at = self.split_point(new_index);
        let right_cells = self.cells.split_off(at);
        let mut right = NodeEdit { kind: self.kind, level: self.level, cells: right_cells };
        let sep = match self.kind {
            NodeKind::Leaf => separator(self.key(self.cells.len() - 1), right.key(0)),
            NodeKind::Branch => right.key(0).to_vec(),
        };
        right.clear_first_key();
        (right, sep)
    }

    /// Where to split: the preferred point if both halves fit there, else
    /// the fitting point nearest to it. One always exists because every
    /// cell takes at most half a page body.
    fn split_point(&self, new_index: usize) -> usize {
        let n = self.cells.len();
        debug_assert!(n >= 2, "split of a node with {n} cells");
        let preferred = if new_index + 1 == n {
            n - 1
        } else if new_index == 0 {
            1
        } else {
            self.balanced_point()
        };
        let mut candidates = (0..n).flat_map(|d| [preferred.checked_sub(d), Some(preferred + d)]).flatten();
        candidates.find(|&s| s >= 1 && s < n && self.halves_fit(s)).unwrap_or(preferred.clamp(1, n - 1))
    }

    /// The first point where the left half holds at least half the bytes.
    fn balanced_point(&self) -> usize {
        let total: usize = self.cells.iter().map(|c| SLOT_BYTES + c.len()).sum();
        let mut left = 0;
        for (i, c) in self.cells.iter().enumerate() {
            left += SLOT_BYTES + c.len();
            if 2 * left >= total {
                return (i + 1).clamp(1, self.cells.len() - 1);
            }
        }
        self.cells.len() - 1
    }

    /// Whether splitting before cell `at` gives two pages that fit.
    fn halves_fit(&self, at: usize) -> bool {
        let bytes = |cells: &[Cow<[u8]>]| HEADER_BYTES + cells.iter().map(|c| SLOT_BYTES + c.len()).sum::<usize>();
        let left = bytes(&self.cells[..at]);
        let mut right = bytes(&self.cells[at..]);
        if self.kind == NodeKind::Branch {
            right -= self.key(at).len();
        }
        left <= PAGE_BYTES && right <= PAGE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_is_the_shortest_prefix_between() {
        assert_eq!(separator(b"abc", b"abd"), b"abd");
        assert_eq!(separator(b"ab", b"abzzz"), b"abz");
        assert_eq!(separator(b"a", b"b"), b"b");
        assert_eq!(separator(b"", b"x"), b"x");
    }

    #[test]
    fn built_leaf_reads_back_in_place() {
        let mut edit = NodeEdit::empty_leaf();
        edit.cells.push(Cow::Owned(leaf_cell(b"a", Value::Inline(b"1"))));
        edit.cells
            .push(Cow::Owned(leaf_cell(b"c", Value::Overflow(OverflowRef { head: PageId(9), value_bytes: 5000 }))));
        let page = edit.build();
        let node = NodeRef::parse(PageId(2), page.bytes()).unwrap();
        assert_eq!(node.count(), 2);
        assert_eq!(node.key(1).unwrap(), b"c");
        assert_eq!(node.value(0).unwrap(), Value::Inline(b"1"));
        assert_eq!(node.value(1).unwrap(), Value::Overflow(OverflowRef { head: PageId(9), value_bytes: 5000 }));
        assert_eq!(node.find(b"b").unwrap(), None);
        assert_eq!(node.lower_bound(b"b", false).unwrap(), 1);
        assert_eq!(node.lower_bound(b"a", true).unwrap(), 1);
    }

    #[test]
    fn appending_split_keeps_the_old_cells_left() {
        let mut edit = NodeEdit::empty_leaf();
        let mut i = 0u32;
        while edit.fits() {
            edit.cells.push(Cow::Owned(leaf_cell(&i.to_be_bytes(), Value::Inline(&[7; 100]))));
            i += 1;
        }
        let n = edit.cells.len();
        let (right, sep) = edit.split(n - 1);
        assert_eq!(edit.cells.len(), n - 1);
        assert_eq!(right.cells.len(), 1);
        assert_eq!(sep, separator(&(i - 2).to_be_bytes(), &(i - 1).to_be_bytes()));
    }
}
