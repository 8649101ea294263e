//! Incremental compaction: the walk over the keys and what it removes.
//!
//! Owns: the compaction walk (as `MemStore`'s: key order, a raised target
//! goes on from where the walk is and wraps around to there), the rule for
//! which versions go, and applying it to one slot. Never touches: reads at
//! revisions (callers refuse reads below the compacted revision).
//!
//! The rule (as `MemStore`'s): for each key, every version older than the
//! newest version with `main <= target` goes, and that version too if it
//! is a tombstone; a key left without versions is gone. A step does up to
//! its budget of slots (a long-key group counts as one), each with a seek
//! to its newest version, a seek to the newest at or below the target, and
//! one tree delete per version removed.

use std::ops::Bound;

use super::keys::{in_slot, past_slot, seek_at, SlotKind};
use super::{entry_bytes, DiskStore, PageFile, Result};
use crate::btree::Cursor;
use crate::mvcc::Version;

/// A compaction in progress: a walk over the slots in key order, by slot
/// prefix (keys.rs; prefixes sort as their keys).
#[derive(Debug)]
pub(super) struct Compaction {
    /// The revision being compacted at.
    pub target: i64,
    /// Slots up to and including this prefix are done in the current lap.
    done_through: Option<Vec<u8>>,
    /// For a walk raised mid-keyspace: after the last slot it wraps to the
    /// first and ends after this one.
    wrap_through: Option<Vec<u8>>,
    /// Whether the walk has wrapped.
    wrapped: bool,
}

impl Compaction {
    pub fn new(target: i64) -> Compaction {
        Compaction { target, done_through: None, wrap_through: None, wrapped: false }
    }

    /// Compacts at a higher target from here on, around to here again.
    fn raise(&mut self, target: i64) {
        self.target = target;
        self.wrap_through = self.done_through.clone();
        self.wrapped = false;
    }

    /// Whether the slot `prefix` is past the end of the current lap.
    fn past_lap(&self, prefix: &[u8]) -> bool {
        self.wrapped && self.wrap_through.as_deref().is_some_and(|through| prefix > through)
    }

    /// Moves to the next lap; false when the walk is over.
    fn next_lap(&mut self) -> bool {
        if self.wrapped || self.wrap_through.is_none() {
            return false;
        }
        self.wrapped = true;
        self.done_through = None;
        true
    }
}

/// Drops from `versions` (oldest first) what a compaction at `target`
/// removes (the module's rule).
pub(super) fn compact_versions(versions: &mut Vec<Version>, target: i64) {
    let first_newer = versions.partition_point(|v| v.rev.main <= target);
    let Some(newest_visible) = first_newer.checked_sub(1) else { return };
    let keep_from = if versions[newest_visible].put.is_some() { newest_visible } else { first_newer };
    versions.drain(..keep_from);
}

impl<F: PageFile> DiskStore<F> {
    /// `MvccStore::begin_compact`.
    pub(super) fn begin_compaction(&mut self, rev: i64) {
        if rev <= self.compacted {
            return;
        }
        self.compacted = rev;
        match &mut self.pending {
            Some(c) => c.raise(rev),
            None => self.pending = Some(Compaction::new(rev)),
        }
    }

    /// `MvccStore::compact_step`.
    pub(super) fn compaction_step(&mut self, budget_keys: usize) -> Result<bool> {
        let Some(mut c) = self.pending.take() else { return Ok(true) };
        let mut budget = budget_keys;
        loop {
            let (done, lap_over) = match self.compact_lap(&mut c, budget) {
                Ok(progress) => progress,
                Err(e) => {
                    self.pending = Some(c);
                    return Err(e);
                }
            };
            budget -= done;
            if !lap_over {
                self.pending = Some(c);
                return Ok(false);
            }
            if !c.next_lap() {
                return Ok(true);
            }
        }
    }

    /// Compacts up to `budget` slots of the current lap. Returns how many it
    /// did and whether the lap has no slots left.
    fn compact_lap(&mut self, c: &mut Compaction, budget: usize) -> Result<(usize, bool)> {
        let mut done = 0;
        loop {
            let next = self.slot_after(c.done_through.as_deref())?;
            let Some((kind, prefix)) = next.filter(|(_, prefix)| !c.past_lap(prefix)) else {
                return Ok((done, true));
            };
            if done == budget {
                return Ok((done, false));
            }
            match kind {
                SlotKind::Short => self.compact_short(&prefix, c.target)?,
                SlotKind::Group => self.compact_group(&prefix, c.target)?,
            }
            c.done_through = Some(prefix);
            done += 1;
        }
    }

    /// The first slot after the slot `after` (from the first if `None`).
    fn slot_after(&self, after: Option<&[u8]>) -> Result<Option<(SlotKind, Vec<u8>)>> {
        let past = after.map(past_slot);
        let mut cursor = Cursor::forward(past.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
        let Some(e) = self.next(&mut cursor)? else { return Ok(None) };
        let parsed = self.parse(e.key)?;
        Ok(Some((parsed.kind, parsed.prefix.to_vec())))
    }

    /// Applies the rule to the short key of slot `prefix`.
    fn compact_short(&mut self, prefix: &[u8], target: i64) -> Result<()> {
        let newest = {
            let mut cursor = Cursor::forward(Bound::Included(prefix));
            match self.next(&mut cursor)? {
                Some(e) if in_slot(e.key, prefix) => self.rev_in(e.key, prefix.len())?,
                _ => return Ok(()),
            }
        };
        let (mut doomed, mut keep) = (Vec::new(), false);
        {
            let mut cursor = Cursor::forward(Bound::Included(&seek_at(prefix, target)));
            let mut first = true;
            while let Some(e) = self.next(&mut cursor)? {
                if !in_slot(e.key, prefix) {
                    break;
                }
                if first {
                    first = false;
                    keep = self.is_put(e.key, e.value)?;
                    if keep {
                        continue;
                    }
                }
                doomed.push((e.key.to_vec(), entry_bytes(e.key.len(), e.value.len())));
            }
        }
        for (tree_key, bytes) in &doomed {
            self.delete_entry(tree_key, *bytes)?;
        }
        if !doomed.is_empty() && !keep && newest.main <= target {
            self.stored_keys -= 1;
        }
        Ok(())
    }

    /// Applies the rule to every key of the long-key group `prefix`.
    fn compact_group(&mut self, prefix: &[u8], target: i64) -> Result<()> {
        let group = self.load_group(prefix)?;
        for versions in group.chunk_by(|a, b| a.key == b.key) {
            let Some(visible) = versions.iter().position(|v| v.rev.main <= target) else { continue };
            let keep = versions[visible].put.is_some();
            let doomed = &versions[visible + usize::from(keep)..];
            for v in doomed {
                self.delete_entry(&v.tree_key, v.bytes)?;
            }
            if !keep && visible == 0 {
                self.stored_keys -= 1;
            }
        }
        Ok(())
    }
}
