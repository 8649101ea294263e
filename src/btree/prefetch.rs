//! Prefetch planning: which pages a read of a key range needs that the
//! store does not hold.
//!
//! Owns: `Tree::missing_pages`. Never touches: the store's contents (it only
//! reads, and treats `Error::Miss` as an answer, not a failure), loading,
//! or what keys mean.
//!
//! A caching store answers a page it does not hold with a miss; an
//! operation stops at its first miss. Planning instead walks every branch
//! of the range it can reach and collects every missed page, so one round
//! of loads (issued together, e.g. through io_uring) resolves a whole level
//! of the range. Call it again after loading: the next round goes one level
//! deeper, until it returns nothing.

use std::ops::Bound;

use crate::btree::error::Error;
use crate::btree::node::{NodeRef, Value};
use crate::btree::page::PageId;
use crate::btree::store::PageStore;
use crate::btree::tree::Tree;

impl Tree {
    /// Appends to `out` the pages that `store` misses (`Error::Miss`) among
    /// those a read of the keys in `(from, to)` visits, forward or backward:
    /// the nodes on every path into the range, the nodes of the neighbour
    /// subtree on each bounded side (where a cursor finds the entry just
    /// past the range's end), and, if `values`, the overflow pages of the
    /// range's values. A node that misses hides its subtree until it is
    /// loaded. Stops once `out` holds `pages_max` ids; may list an id that is
    /// already in `out`. Changes nothing; any error other than a miss is
    /// returned.
    pub fn missing_pages<S: PageStore + ?Sized>(
        &self,
        store: &S,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        values: bool,
        pages_max: usize,
        out: &mut Vec<PageId>,
    ) -> Result<(), Error> {
        self.check_usable()?;
        if self.root == PageId::NONE {
            return Ok(());
        }
        let range = KeyRange { from, to };
        let mut stack = vec![(self.root, self.root_level)];
        while let Some((id, level)) = stack.pop() {
            if out.len() >= pages_max {
                return Ok(());
            }
            let page = match self.load_node(store, id, level) {
                Err(Error::Miss(missed)) => {
                    out.push(missed);
                    continue;
                }
                other => other?,
            };
            let node = NodeRef::parse(id, page.bytes())?;
            if node.is_leaf() {
                if values {
                    self.missing_values(store, &node, &range, pages_max, out)?;
                }
                continue;
            }
            // One more child on each bounded side: a cursor reads the entry
            // just past each end of the range to see that it ended.
            let first = range.lower_key().map_or(Ok(0), |k| node.child_index(k).map(|i| i.saturating_sub(1)))?;
            let last = match range.upper_key() {
                Some(k) => (node.child_index(k)? + 1).min(node.count() - 1),
                None => node.count() - 1,
            };
            // Pushed last first, so children are visited in key order.
            for i in (first..=last).rev() {
                stack.push((node.child(i)?, level - 1));
            }
        }
        Ok(())
    }

    /// The missed overflow pages of the values of `leaf` in `range`.
    fn missing_values<S: PageStore + ?Sized>(
        &self,
        store: &S,
        leaf: &NodeRef<'_>,
        range: &KeyRange<'_>,
        pages_max: usize,
        out: &mut Vec<PageId>,
    ) -> Result<(), Error> {
        let start = match range.from {
            Bound::Unbounded => 0,
            Bound::Included(k) => leaf.lower_bound(k, false)?,
            Bound::Excluded(k) => leaf.lower_bound(k, true)?,
        };
        for i in start..leaf.count() {
            if !range.below_end(leaf.key(i)?) || out.len() >= pages_max {
                return Ok(());
            }
            let Value::Overflow(overflow) = leaf.value(i)? else { continue };
            let pages = match self.overflow_pages(store, overflow) {
                Err(Error::Miss(missed)) => {
                    out.push(missed);
                    continue;
                }
                other => other?,
            };
            for &data in pages.iter().skip(1) {
                match self.page(store, data) {
                    Err(Error::Miss(missed)) => out.push(missed),
                    other => drop(other?),
                }
            }
        }
        Ok(())
    }
}

/// The bounds of a planned read.
struct KeyRange<'a> {
    from: Bound<&'a [u8]>,
    to: Bound<&'a [u8]>,
}

impl KeyRange<'_> {
    fn lower_key(&self) -> Option<&[u8]> {
        match self.from {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        }
    }

    fn upper_key(&self) -> Option<&[u8]> {
        match self.to {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        }
    }

    fn below_end(&self, key: &[u8]) -> bool {
        match self.to {
            Bound::Included(k) => key <= k,
            Bound::Excluded(k) => key < k,
            Bound::Unbounded => true,
        }
    }
}
