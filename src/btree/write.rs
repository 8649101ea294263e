//! Insert and delete, copy-on-write.
//!
//! Owns: the two-pass mutation protocol and the page-level rules of
//! mutation (split, merge, drop, root growth and collapse, reuse of dirty
//! page ids). Never touches: the store's writes, checkpoints, or cursors.
//!
//! Every mutation runs in two passes:
//!
//! 1. *Read*: descend from the root and read every page the change will
//!    need (the path, an old overflow value's head, the siblings a delete
//!    will merge with). This is the only pass that reads the store, so a
//!    miss (`Error::Miss`) or a read error leaves the tree untouched and the
//!    caller retries after loading the page.
//! 2. *Write*: rebuild the changed nodes from the pages read in pass 1 and
//!    put them in the dirty set. It cannot miss; an error here means a bug
//!    or an undetected corruption in a page, and marks the tree `Broken`.
//!
//! A changed page that is already dirty keeps its id (no durable checkpoint
//! references it); a clean one is written to a new id and the old id is
//! freed after the next checkpoint. When a node keeps its id, its parent is
//! unchanged and the rewrite stops there.

use std::borrow::Cow;
use std::sync::Arc;

use crate::btree::error::Error;
use crate::btree::node::{
    branch_cell, fits_inline, leaf_cell, NodeEdit, NodeKind, NodeRef, OverflowRef, Value, KEY_BYTES_MAX,
    MERGE_BELOW_BYTES, SLOT_BYTES,
};
use crate::btree::overflow::{build_data, build_head, data_pages_for, VALUE_BYTES_MAX};
use crate::btree::page::{Page, PageId, HEADER_BYTES, PAGE_BODY_BYTES, PAGE_BYTES};
use crate::btree::store::PageStore;
use crate::btree::tree::Tree;

/// One node on the path from the root to a leaf, as read in pass 1.
pub(crate) struct PathStep {
    pub id: PageId,
    pub page: Arc<Page>,
    /// Branch: the child taken. Leaf: where the key is or would go.
    pub index: usize,
}

impl PathStep {
    pub fn node(&self) -> Result<NodeRef<'_>, Error> {
        NodeRef::parse(self.id, self.page.bytes())
    }
}

/// What rebuilding a node produced, for its parent.
enum Rebuilt {
    /// The node's new page id (maybe the same).
    Rewritten(PageId),
    /// The node split in two; `right` goes after `left` under `separator`.
    Split { left: PageId, separator: Vec<u8>, right: PageId },
    /// The node became empty and was freed.
    Dropped,
    /// The node and its sibling were merged into `id`, which replaces the
    /// left one (`left_index`); the right one's cell (`right_index`) goes.
    Merged { left_index: usize, id: PageId, right_index: usize },
}

/// What a delete does to one non-root node of the path, decided in pass 1.
enum Fate {
    Keep,
    Drop,
    Merge { sibling_index: usize, sibling: PathStep },
}

impl Tree {
    /// Sets `key` to `value`. Returns whether the key was present (its old
    /// value replaced).
    pub fn insert<S: PageStore + ?Sized>(&mut self, store: &S, key: &[u8], value: &[u8]) -> Result<bool, Error> {
        self.check_usable()?;
        check_sizes(key, value)?;
        let path = self.descend(store, key)?;
        let (at, exists, old_overflow) = match path.last() {
            None => (0, false, None),
            Some(leaf) => self.leaf_slot(store, leaf, key)?,
        };
        self.commit(|tree| tree.insert_planned(&path, key, value, at, exists, old_overflow))?;
        Ok(exists)
    }

    /// Removes `key`. Returns whether it was present.
    pub fn delete<S: PageStore + ?Sized>(&mut self, store: &S, key: &[u8]) -> Result<bool, Error> {
        self.check_usable()?;
        if key.len() > KEY_BYTES_MAX {
            return Ok(false);
        }
        let path = self.descend(store, key)?;
        let Some(leaf) = path.last() else { return Ok(false) };
        let (at, exists, old_overflow) = self.leaf_slot(store, leaf, key)?;
        if !exists {
            return Ok(false);
        }
        let fates = self.plan_delete(store, &path, at)?;
        self.commit(|tree| tree.delete_planned(&path, at, old_overflow, fates))?;
        Ok(true)
    }

    /// Runs pass 2: counts the change, or breaks the tree if it failed.
    fn commit(&mut self, write: impl FnOnce(&mut Tree) -> Result<(), Error>) -> Result<(), Error> {
        let result = write(self);
        if result.is_err() {
            self.broken = true;
        }
        self.generation += 1;
        result
    }

    /// Pass 1 descent: the path to the leaf for `key`.
    pub(crate) fn descend<S: PageStore + ?Sized>(&self, store: &S, key: &[u8]) -> Result<Vec<PathStep>, Error> {
        let mut path = Vec::new();
        if self.root == PageId::NONE {
            return Ok(path);
        }
        let (mut id, mut level) = (self.root, self.root_level);
        loop {
            let page = self.load_node(store, id, level)?;
            let node = NodeRef::parse(id, page.bytes())?;
            if node.is_leaf() {
                let index = node.lower_bound(key, false)?;
                path.push(PathStep { id, page, index });
                return Ok(path);
            }
            let index = node.child_index(key)?;
            let child = node.child(index)?;
            path.push(PathStep { id, page, index });
            (id, level) = (child, level - 1);
        }
    }

    /// Where `key` is or goes in `leaf`, whether it is there, and the pages
    /// of its old overflow value (to free).
    fn leaf_slot<S: PageStore + ?Sized>(
        &self,
        store: &S,
        leaf: &PathStep,
        key: &[u8],
    ) -> Result<(usize, bool, Option<Vec<PageId>>), Error> {
        let node = leaf.node()?;
        let at = leaf.index;
        if at >= node.count() || node.key(at)? != key {
            return Ok((at, false, None));
        }
        let old_overflow = match node.value(at)? {
            Value::Overflow(o) => Some(self.overflow_pages(store, o)?),
            Value::Inline(_) => None,
        };
        Ok((at, true, old_overflow))
    }

    fn insert_planned(
        &mut self,
        path: &[PathStep],
        key: &[u8],
        value: &[u8],
        at: usize,
        exists: bool,
        old_overflow: Option<Vec<PageId>>,
    ) -> Result<(), Error> {
        for id in old_overflow.into_iter().flatten() {
            self.free_page(id);
        }
        let cell = Cow::Owned(self.value_cell(key, value));
        let mut edit = match path.last() {
            Some(leaf) => NodeEdit::of(&leaf.node()?)?,
            None => NodeEdit::empty_leaf(),
        };
        if exists {
            edit.cells[at] = cell;
        } else {
            edit.cells.insert(at, cell);
            self.entries += 1;
        }
        let mut rebuilt = self.write_edit(path.last().map(|s| s.id), edit, at);
        for level in (0..path.len().saturating_sub(1)).rev() {
            let (parent, child) = (&path[level], &path[level + 1]);
            if matches!(rebuilt, Rebuilt::Rewritten(id) if id == child.id) {
                return Ok(());
            }
            let mut edit = NodeEdit::of(&parent.node()?)?;
            let new_index = apply_to_parent(&mut edit, parent.index, rebuilt);
            rebuilt = self.write_edit(Some(parent.id), edit, new_index);
        }
        self.set_root(rebuilt);
        Ok(())
    }

    /// Installs what became of the old root.
    fn set_root(&mut self, rebuilt: Rebuilt) {
        match rebuilt {
            Rebuilt::Rewritten(id) => {
                if self.root == PageId::NONE {
                    self.root_level = 0;
                }
                self.root = id;
            }
            Rebuilt::Split { left, separator, right } => {
                let level = if self.root == PageId::NONE { 1 } else { self.root_level + 1 };
                let cells = vec![Cow::Owned(branch_cell(&[], left)), Cow::Owned(branch_cell(&separator, right))];
                let edit = NodeEdit { kind: NodeKind::Branch, level, cells };
                self.root = self.write_node(None, edit.build());
                self.root_level = level;
            }
            Rebuilt::Dropped | Rebuilt::Merged { .. } => {
                self.root = PageId::NONE;
                self.root_level = 0;
            }
        }
    }

    /// The leaf cell for (key, value), writing the value's overflow pages
    /// first if it does not fit inline.
    fn value_cell(&mut self, key: &[u8], value: &[u8]) -> Vec<u8> {
        if fits_inline(key.len(), value.len()) {
            return leaf_cell(key, Value::Inline(value));
        }
        let mut data = Vec::with_capacity(data_pages_for(value.len()));
        for chunk in value.chunks(PAGE_BODY_BYTES) {
            data.push(self.write_node(None, build_data(chunk)));
        }
        let head = self.write_node(None, build_head(value.len(), &data));
        leaf_cell(key, Value::Overflow(OverflowRef { head, value_bytes: value.len() as u32 }))
    }

    /// Writes `edit` in place of page `old` (if any), splitting it if it
    /// does not fit; `new_index` is the cell just added (guides the split).
    fn write_edit(&mut self, old: Option<PageId>, mut edit: NodeEdit<'_>, new_index: usize) -> Rebuilt {
        if edit.fits() {
            return Rebuilt::Rewritten(self.write_node(old, edit.build()));
        }
        let (right, separator) = edit.split(new_index);
        let left = self.write_node(old, edit.build());
        let right = self.write_node(None, right.build());
        Rebuilt::Split { left, separator, right }
    }

    /// Puts `page` in the dirty set, replacing page `old`: under the same
    /// id if `old` is dirty, else under a new id (and `old` is freed).
    pub(crate) fn write_node(&mut self, old: Option<PageId>, page: Page) -> PageId {
        let id = match old {
            Some(id) if self.dirty.contains_key(&id) => id,
            Some(id) => {
                self.free_page(id);
                self.alloc.allocate()
            }
            None => self.alloc.allocate(),
        };
        self.dirty.insert(id, Arc::new(page));
        id
    }

    /// Frees page `id` of the current tree.
    pub(crate) fn free_page(&mut self, id: PageId) {
        if self.dirty.remove(&id).is_some() {
            self.alloc.release_now(id);
        } else {
            self.alloc.release_after_checkpoint(id);
        }
    }

    /// Pass 1 of a delete: for each non-root node of the path, bottom-up,
    /// whether it is kept, dropped (empty) or merged with a sibling (read
    /// here), computed from exact byte counts.
    fn plan_delete<S: PageStore + ?Sized>(&self, store: &S, path: &[PathStep], at: usize) -> Result<Vec<Fate>, Error> {
        let mut fates: Vec<Fate> = path.iter().map(|_| Fate::Keep).collect();
        let leaf = path[path.len() - 1].node()?;
        let mut count = leaf.count() - 1;
        let mut used = leaf.used_bytes()? - SLOT_BYTES - leaf.cell(at)?.len();
        for level in (1..path.len()).rev() {
            let parent_step = &path[level - 1];
            let parent = parent_step.node()?;
            let ci = parent_step.index;
            let removed = if count == 0 {
                fates[level] = Fate::Drop;
                let next_key = if ci == 0 && parent.count() > 1 { parent.key(1)?.len() } else { 0 };
                SLOT_BYTES + parent.cell(ci)?.len() + next_key
            } else if used < MERGE_BELOW_BYTES && parent.count() >= 2 {
                let sibling_index = if ci + 1 < parent.count() { ci + 1 } else { ci - 1 };
                let right_index = ci.max(sibling_index);
                let id = parent.child(sibling_index)?;
                let page = self.load_node(store, id, parent.level() - 1)?;
                let sibling = NodeRef::parse(id, page.bytes())?;
                let separator = if sibling.is_leaf() { 0 } else { parent.key(right_index)?.len() };
                if used + sibling.used_bytes()? - HEADER_BYTES + separator > PAGE_BYTES {
                    break;
                }
                fates[level] = Fate::Merge { sibling_index, sibling: PathStep { id, page, index: 0 } };
                SLOT_BYTES + parent.cell(right_index)?.len()
            } else {
                break;
            };
            count = parent.count() - 1;
            used = parent.used_bytes()? - removed;
        }
        Ok(fates)
    }

    fn delete_planned(
        &mut self,
        path: &[PathStep],
        at: usize,
        old_overflow: Option<Vec<PageId>>,
        mut fates: Vec<Fate>,
    ) -> Result<(), Error> {
        for id in old_overflow.into_iter().flatten() {
            self.free_page(id);
        }
        self.entries -= 1;
        let mut edit = NodeEdit::of(&path[path.len() - 1].node()?)?;
        edit.remove(at);
        for level in (1..path.len()).rev() {
            let (step, parent) = (&path[level], &path[level - 1]);
            let rebuilt = match std::mem::replace(&mut fates[level], Fate::Keep) {
                Fate::Keep => {
                    let id = self.write_node(Some(step.id), edit.build());
                    if id == step.id {
                        return Ok(());
                    }
                    Rebuilt::Rewritten(id)
                }
                Fate::Drop => {
                    self.free_page(step.id);
                    Rebuilt::Dropped
                }
                Fate::Merge { sibling_index, sibling } => self.merge(parent, step, edit, sibling_index, &sibling)?,
            };
            edit = NodeEdit::of(&parent.node()?)?;
            apply_to_parent(&mut edit, parent.index, rebuilt);
        }
        self.write_root(path[0].id, edit);
        Ok(())
    }

    /// Merges node `step` (new content `edit`) with its sibling.
    fn merge(
        &mut self,
        parent: &PathStep,
        step: &PathStep,
        edit: NodeEdit<'_>,
        sibling_index: usize,
        sibling: &PathStep,
    ) -> Result<Rebuilt, Error> {
        let ci = parent.index;
        let sibling_edit = NodeEdit::of(&sibling.node()?)?;
        let (left_id, mut left, right_id, right) = if sibling_index > ci {
            (step.id, edit, sibling.id, sibling_edit)
        } else {
            (sibling.id, sibling_edit, step.id, edit)
        };
        let right_index = ci.max(sibling_index);
        left.append(right, parent.node()?.key(right_index)?);
        self.free_page(right_id);
        let id = self.write_node(Some(left_id), left.build());
        Ok(Rebuilt::Merged { left_index: ci.min(sibling_index), id, right_index })
    }

    /// Writes the new root content, dropping an empty root and collapsing
    /// branch roots with a single child.
    fn write_root(&mut self, old: PageId, edit: NodeEdit<'_>) {
        if edit.cells.is_empty() {
            self.free_page(old);
            self.root = PageId::NONE;
            self.root_level = 0;
            return;
        }
        self.root = self.write_node(Some(old), edit.build());
        self.collapse_root();
    }

    /// While the root is a branch with one child, makes the child the root.
    /// Looks only at dirty pages (the root was just rewritten; its only
    /// child usually was too), so it never reads; a single-child root left
    /// over is valid and goes on a later delete.
    fn collapse_root(&mut self) {
        while self.root_level > 0 {
            let Some(page) = self.dirty.get(&self.root) else { return };
            let Ok(node) = NodeRef::parse(self.root, page.bytes()) else { return };
            let (1, Ok(child)) = (node.count(), node.child(0)) else { return };
            let old = self.root;
            self.free_page(old);
            self.root = child;
            self.root_level -= 1;
        }
    }
}

/// Applies a child's rebuild to its parent's cells (child at `ci`); returns
/// the index of the cell added, if one was, else `ci` (a split hint).
fn apply_to_parent(edit: &mut NodeEdit<'_>, ci: usize, rebuilt: Rebuilt) -> usize {
    match rebuilt {
        Rebuilt::Rewritten(id) => {
            edit.set_child(ci, id);
            ci
        }
        Rebuilt::Split { left, separator, right } => {
            edit.set_child(ci, left);
            edit.cells.insert(ci + 1, Cow::Owned(branch_cell(&separator, right)));
            ci + 1
        }
        Rebuilt::Dropped => {
            edit.remove(ci);
            ci
        }
        Rebuilt::Merged { left_index, id, right_index } => {
            edit.set_child(left_index, id);
            edit.remove(right_index);
            left_index
        }
    }
}

/// Refuses keys and values over the bounds.
fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), Error> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge { key_bytes: key.len(), key_bytes_max: KEY_BYTES_MAX });
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::ValueTooLarge { value_bytes: value.len(), value_bytes_max: VALUE_BYTES_MAX });
    }
    Ok(())
}
