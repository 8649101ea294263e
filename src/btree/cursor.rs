//! Ordered iteration, forward and backward, resumable after a miss.
//!
//! Owns: `Cursor`, a position in the tree (the pages from the root to a
//! leaf, held alive by `Arc`) that yields entries borrowed from the leaf.
//! Never touches: the store's writes or the tree's state (it only reads).
//!
//! The cursor does not borrow the tree between calls: each `next` takes the
//! tree and store. So a caller can stream a range across many reactor turns
//! with bounded memory (one path of pages) while the tree changes:
//!
//! - after `Error::Miss` the position is unchanged; load the page and call
//!   `next` again;
//! - if the tree was mutated since the last call (`Tree::generation`), the
//!   cursor re-seeks from the last key it yielded (read from the old leaf it
//!   still holds), so it continues in the current tree, strictly past that
//!   key.

use std::ops::Bound;
use std::sync::Arc;

use crate::btree::error::Error;
use crate::btree::node::{NodeRef, Value};
use crate::btree::page::{Page, PageId};
use crate::btree::store::PageStore;
use crate::btree::tree::Tree;

/// Iteration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// One entry, borrowed from the cursor's current leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value (an overflow value is read with `Tree::read_value`).
    pub value: Value<'a>,
}

/// A resumable position for ordered iteration; see the module comment.
#[derive(Debug)]
pub struct Cursor {
    direction: Direction,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not positioned yet: the first `next` seeks to the first entry from
    /// this bound (in the cursor's direction).
    Seek(Bound<Vec<u8>>),
    /// At the entry `index` of the leaf at the end of `stack`, which was
    /// yielded, in the tree as of `generation`.
    At { stack: Vec<Frame>, generation: u64 },
    /// Past the last entry.
    Done,
}

#[derive(Clone, Debug)]
struct Frame {
    id: PageId,
    page: Arc<Page>,
    /// Branch: the child the path takes. Leaf: the current entry.
    index: usize,
}

impl Frame {
    fn node(&self) -> Result<NodeRef<'_>, Error> {
        NodeRef::parse(self.id, self.page.bytes())
    }
}

impl Cursor {
    /// Ascending from `from` (`Included(k)`: keys `>= k`; `Excluded(k)`:
    /// keys `> k`; `Unbounded`: the first key).
    pub fn forward(from: Bound<&[u8]>) -> Cursor {
        Cursor { direction: Direction::Forward, state: State::Seek(from.map(<[u8]>::to_vec)) }
    }

    /// Descending from `from` (`Included(k)`: keys `<= k`; `Excluded(k)`:
    /// keys `< k`; `Unbounded`: the last key).
    pub fn backward(from: Bound<&[u8]>) -> Cursor {
        Cursor { direction: Direction::Backward, state: State::Seek(from.map(<[u8]>::to_vec)) }
    }

    /// The cursor's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The entry the last `next` yielded, read again from the leaf the
    /// cursor holds, without moving (`None` before the first `next` and
    /// past the end). Lets a caller step with `next` without keeping its
    /// borrow alive across the next step. If the tree was mutated since,
    /// this is the entry as it was (the old leaf is still held).
    pub fn current(&self) -> Result<Option<Entry<'_>>, Error> {
        match &self.state {
            State::At { stack, .. } => entry_at(stack).map(Some),
            State::Seek(_) | State::Done => Ok(None),
        }
    }

    /// The next entry, or `None` past the end. On error the position is
    /// unchanged, so the call can be retried (after loading a missed page).
    pub fn next<S: PageStore + ?Sized>(&mut self, tree: &Tree, store: &S) -> Result<Option<Entry<'_>>, Error> {
        tree.check_usable()?;
        if self.step_in_leaf(tree)? {
            return self.current();
        }
        let moved = match &self.state {
            State::Done => return Ok(None),
            State::Seek(from) => seek(tree, store, self.direction, bound_ref(from))?,
            State::At { stack, generation } if *generation == tree.generation => {
                step(tree, store, self.direction, stack.clone())?
            }
            State::At { stack, .. } => {
                let leaf = stack.last().ok_or(Error::Broken)?;
                let key = leaf.node()?.key(leaf.index)?;
                seek(tree, store, self.direction, Bound::Excluded(key))?
            }
        };
        let Some(stack) = moved else {
            self.state = State::Done;
            return Ok(None);
        };
        entry_at(&stack)?;
        self.state = State::At { stack, generation: tree.generation };
        match &self.state {
            State::At { stack, .. } => entry_at(stack).map(Some),
            _ => Ok(None),
        }
    }
}

impl Cursor {
    /// The common step: the next entry is in the current leaf, so the
    /// cursor moves in place (no read, so no miss; no copy of the path).
    /// Returns false, having changed nothing, when the step leaves the
    /// leaf or the tree changed since the last call.
    fn step_in_leaf(&mut self, tree: &Tree) -> Result<bool, Error> {
        let State::At { stack, generation } = &mut self.state else { return Ok(false) };
        let Some(leaf) = stack.last_mut().filter(|_| *generation == tree.generation) else { return Ok(false) };
        let next = {
            let node = leaf.node()?;
            let next = match self.direction {
                Direction::Forward => leaf.index.checked_add(1).filter(|&i| i < node.count()),
                Direction::Backward => leaf.index.checked_sub(1).filter(|&i| i < node.count()),
            };
            // Checked before moving, so an error leaves the position as it was.
            if let Some(i) = next {
                node.key(i)?;
                node.value(i)?;
            }
            next
        };
        let Some(index) = next else { return Ok(false) };
        leaf.index = index;
        Ok(true)
    }
}

fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The entry the leaf frame points at.
fn entry_at(stack: &[Frame]) -> Result<Entry<'_>, Error> {
    let leaf = stack.last().ok_or(Error::Broken)?;
    let node = leaf.node()?;
    Ok(Entry { key: node.key(leaf.index)?, value: node.value(leaf.index)? })
}

/// The path to the first entry from `from` in `direction`, if any.
fn seek<S: PageStore + ?Sized>(
    tree: &Tree,
    store: &S,
    direction: Direction,
    from: Bound<&[u8]>,
) -> Result<Option<Vec<Frame>>, Error> {
    if tree.root == PageId::NONE {
        return Ok(None);
    }
    let mut stack = Vec::new();
    let (mut id, mut level) = (tree.root, tree.root_level);
    loop {
        let page = tree.load_node(store, id, level)?;
        let node = NodeRef::parse(id, page.bytes())?;
        if node.is_leaf() {
            let position = leaf_position(&node, direction, from)?;
            stack.push(Frame { id, page, index: position.unwrap_or(0) });
            if position.is_some() {
                return Ok(Some(stack));
            }
            return next_leaf(tree, store, direction, stack);
        }
        let index = match from {
            Bound::Included(k) | Bound::Excluded(k) => node.child_index(k)?,
            Bound::Unbounded if direction == Direction::Forward => 0,
            Bound::Unbounded => node.count() - 1,
        };
        let child = node.child(index)?;
        stack.push(Frame { id, page, index });
        (id, level) = (child, level - 1);
    }
}

/// The first entry of `leaf` from `from` in `direction`, if it has one.
fn leaf_position(leaf: &NodeRef<'_>, direction: Direction, from: Bound<&[u8]>) -> Result<Option<usize>, Error> {
    let count = leaf.count();
    let position = match (direction, from) {
        (Direction::Forward, Bound::Unbounded) => Some(0),
        (Direction::Forward, Bound::Included(k)) => Some(leaf.lower_bound(k, false)?),
        (Direction::Forward, Bound::Excluded(k)) => Some(leaf.lower_bound(k, true)?),
        (Direction::Backward, Bound::Unbounded) => count.checked_sub(1),
        (Direction::Backward, Bound::Included(k)) => leaf.lower_bound(k, true)?.checked_sub(1),
        (Direction::Backward, Bound::Excluded(k)) => leaf.lower_bound(k, false)?.checked_sub(1),
    };
    Ok(position.filter(|&p| p < count))
}

/// The path to the entry after (or before) the current one.
fn step<S: PageStore + ?Sized>(
    tree: &Tree,
    store: &S,
    direction: Direction,
    mut stack: Vec<Frame>,
) -> Result<Option<Vec<Frame>>, Error> {
    let leaf = stack.last_mut().ok_or(Error::Broken)?;
    let count = leaf.node()?.count();
    let next = match direction {
        Direction::Forward => leaf.index.checked_add(1).filter(|&i| i < count),
        Direction::Backward => leaf.index.checked_sub(1).filter(|&i| i < count),
    };
    if let Some(index) = next {
        leaf.index = index;
        return Ok(Some(stack));
    }
    next_leaf(tree, store, direction, stack)
}

/// Replaces the last leaf of `stack` by the next non-empty leaf in
/// `direction`, positioned at its first entry in that direction.
fn next_leaf<S: PageStore + ?Sized>(
    tree: &Tree,
    store: &S,
    direction: Direction,
    mut stack: Vec<Frame>,
) -> Result<Option<Vec<Frame>>, Error> {
    loop {
        stack.pop();
        let Some(top) = stack.last_mut() else { return Ok(None) };
        let node = top.node()?;
        let next = match direction {
            Direction::Forward => top.index.checked_add(1).filter(|&i| i < node.count()),
            Direction::Backward => top.index.checked_sub(1),
        };
        let Some(index) = next else { continue };
        let (child, level) = (node.child(index)?, node.level() - 1);
        top.index = index;
        if descend_to_edge(tree, store, direction, &mut stack, child, level)? {
            return Ok(Some(stack));
        }
    }
}

/// Pushes the path from `id` down to its first (or last) leaf. Returns
/// whether that leaf has an entry.
fn descend_to_edge<S: PageStore + ?Sized>(
    tree: &Tree,
    store: &S,
    direction: Direction,
    stack: &mut Vec<Frame>,
    mut id: PageId,
    mut level: u8,
) -> Result<bool, Error> {
    loop {
        let page = tree.load_node(store, id, level)?;
        let node = NodeRef::parse(id, page.bytes())?;
        let count = node.count();
        let index = if direction == Direction::Forward { 0 } else { count.saturating_sub(1) };
        let leaf = node.is_leaf();
        let child = if leaf { PageId::NONE } else { node.child(index)? };
        stack.push(Frame { id, page, index });
        if leaf {
            return Ok(count > 0);
        }
        (id, level) = (child, level - 1);
    }
}
