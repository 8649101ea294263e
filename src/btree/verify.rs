//! The integrity check: walks every page of the tree and accounts for every
//! page of the file.
//!
//! Owns: `Tree::verify` and its report. Never touches: anything it checks
//! (it only reads). Memory: one bit per page of the file, plus one path of
//! separator keys per level.

use crate::btree::error::Error;
use crate::btree::node::{NodeRef, Value};
use crate::btree::overflow::{data_payload, head_data_pages, payload_bytes_of};
use crate::btree::page::PageId;
use crate::btree::store::PageStore;
use crate::btree::tree::Tree;

/// What `Tree::verify` counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Keys.
    pub entries: u64,
    /// Leaf and branch pages.
    pub node_pages: u64,
    /// Overflow head and data pages.
    pub overflow_pages: u64,
    /// Pages free, or to be freed by the next checkpoints, or holding the
    /// free list.
    pub allocator_pages: u64,
    /// Levels of the tree (0 when empty).
    pub depth: u8,
}

/// One bit per page id: which pages something already claimed.
struct Claims {
    bits: Vec<u64>,
    page_count: u64,
}

impl Claims {
    fn claim(&mut self, id: PageId, by: &str) -> Result<(), Error> {
        if id.0 >= self.page_count {
            return Err(inconsistent(format!("{by} page {id} is past the end ({} pages)", self.page_count)));
        }
        let (word, bit) = ((id.0 / 64) as usize, id.0 % 64);
        if self.bits[word] & (1 << bit) != 0 {
            return Err(inconsistent(format!("page {id} is claimed twice (again as {by})")));
        }
        self.bits[word] |= 1 << bit;
        Ok(())
    }

    fn first_unclaimed(&self) -> Option<PageId> {
        (0..self.page_count).map(PageId).find(|id| self.bits[(id.0 / 64) as usize] & (1 << (id.0 % 64)) == 0)
    }
}

fn inconsistent(detail: String) -> Error {
    Error::Inconsistent { detail }
}

/// A node still to visit, with the key range its parent assigns it.
struct Visit {
    id: PageId,
    level: u8,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
}

impl Tree {
    /// Checks the whole tree: every page's checksum, kind and level; keys in
    /// order and inside their parent's separators; no empty node below the
    /// root; overflow values complete; the key count; and that every page
    /// of the file is used exactly once (by the tree, the allocator, or as a
    /// meta page). Reads every page: a maintenance and test tool.
    pub fn verify<S: PageStore + ?Sized>(&self, store: &S) -> Result<VerifyStats, Error> {
        self.check_usable()?;
        let page_count = self.alloc.page_count();
        let mut claims = Claims { bits: vec![0; page_count.div_ceil(64) as usize], page_count };
        claims.claim(PageId(0), "meta")?;
        claims.claim(PageId(1), "meta")?;
        let mut stats = VerifyStats::default();
        if self.root != PageId::NONE {
            stats.depth = self.root_level + 1;
            let root = Visit { id: self.root, level: self.root_level, lower: None, upper: None };
            self.verify_nodes(store, root, &mut claims, &mut stats)?;
        }
        for (id, set) in self.alloc.accounted() {
            claims.claim(id, set)?;
            stats.allocator_pages += 1;
        }
        if let Some(id) = claims.first_unclaimed() {
            return Err(inconsistent(format!("page {id} is neither in the tree nor free (leaked)")));
        }
        if stats.entries != self.entries {
            return Err(inconsistent(format!("{} keys found, {} recorded", stats.entries, self.entries)));
        }
        Ok(stats)
    }

    fn verify_nodes<S: PageStore + ?Sized>(
        &self,
        store: &S,
        root: Visit,
        claims: &mut Claims,
        stats: &mut VerifyStats,
    ) -> Result<(), Error> {
        let mut to_visit = vec![root];
        while let Some(visit) = to_visit.pop() {
            claims.claim(visit.id, "node")?;
            stats.node_pages += 1;
            let page = self.load_node(store, visit.id, visit.level)?;
            let node = NodeRef::parse(visit.id, page.bytes())?;
            if node.count() == 0 && visit.id != self.root {
                return Err(inconsistent(format!("empty node {} below the root", visit.id)));
            }
            check_key_order(&node, &visit)?;
            if node.is_leaf() {
                stats.entries += node.count() as u64;
                for i in 0..node.count() {
                    self.verify_value(store, node.value(i)?, claims, stats)?;
                }
                continue;
            }
            for i in 0..node.count() {
                let lower = if i == 0 { visit.lower.clone() } else { Some(node.key(i)?.to_vec()) };
                let upper = if i + 1 < node.count() { Some(node.key(i + 1)?.to_vec()) } else { visit.upper.clone() };
                to_visit.push(Visit { id: node.child(i)?, level: visit.level - 1, lower, upper });
            }
        }
        Ok(())
    }

    fn verify_value<S: PageStore + ?Sized>(
        &self,
        store: &S,
        value: Value<'_>,
        claims: &mut Claims,
        stats: &mut VerifyStats,
    ) -> Result<(), Error> {
        let Value::Overflow(o) = value else { return Ok(()) };
        claims.claim(o.head, "overflow head")?;
        let head = self.page(store, o.head)?;
        let value_bytes = o.value_bytes as usize;
        for (i, id) in head_data_pages(o.head, head.bytes(), value_bytes)?.into_iter().enumerate() {
            claims.claim(id, "overflow data")?;
            data_payload(id, self.page(store, id)?.bytes(), payload_bytes_of(i, value_bytes))?;
            stats.overflow_pages += 1;
        }
        stats.overflow_pages += 1;
        Ok(())
    }
}

/// Keys strictly ascending and inside `[lower, upper)`; a branch's first
/// key is not a real key and is skipped.
fn check_key_order(node: &NodeRef<'_>, visit: &Visit) -> Result<(), Error> {
    let first = if node.is_leaf() { 0 } else { 1 };
    let mut previous: Option<&[u8]> = visit.lower.as_deref();
    for i in first..node.count() {
        let key = node.key(i)?;
        let in_order = match previous {
            None => true,
            Some(p) if i == first => p <= key,
            Some(p) => p < key,
        };
        if !in_order || visit.upper.as_deref().is_some_and(|u| key >= u) {
            return Err(inconsistent(format!("key {i} of page {} is out of order", node.id())));
        }
        previous = Some(key);
    }
    Ok(())
}
