//! The in-memory implementation of [`MvccStore`].
//!
//! Owns: one ordered map from user key to that key's versions (oldest first),
//! the live-key and byte counters, and the cursor of an incremental
//! compaction. Never touches disk, Raft, requests, or the global revision
//! counters: every revision it stores is handed to it by the caller.
//!
//! Layout: `BTreeMap<Box<[u8]>, Vec<Stored>>`. A `Stored` is one version
//! (revision, value or tombstone, create revision, version number, lease).
//! Writes only ever append to a key's `Vec`, so it stays sorted by revision
//! and a read at a revision finds its version by checking the newest first
//! and falling back to a binary search.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use super::{End, Event, EventKind, KeyHistory, KeyValue, KvRef, MvccStore, PutVersion, Rev, Version};

/// Bytes counted for a stored key besides the key's own bytes: the map entry.
const KEY_OVERHEAD_BYTES: u64 = (size_of::<Box<[u8]>>() + size_of::<Vec<Stored>>()) as u64;

/// Bytes counted for a stored version besides its value's bytes.
const VERSION_OVERHEAD_BYTES: u64 = size_of::<Stored>() as u64;

/// One stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    /// When it was written.
    rev: Rev,
    /// The value of a put; `None` is a tombstone.
    value: Option<Box<[u8]>>,
    /// Main revision of the put that created the key (0 for a tombstone).
    create_revision: i64,
    /// Puts since creation, 1 for the creating put (0 for a tombstone).
    version: i64,
    /// Attached lease, 0 for none.
    lease: i64,
}

impl Stored {
    fn tombstone(rev: Rev) -> Stored {
        Stored { rev, value: None, create_revision: 0, version: 0, lease: 0 }
    }

    fn is_put(&self) -> bool {
        self.value.is_some()
    }

    /// The bytes this version is counted as in [`MvccStore::size_bytes`].
    fn bytes(&self) -> u64 {
        VERSION_OVERHEAD_BYTES + self.value.as_ref().map_or(0, |v| v.len() as u64)
    }

    /// This version as a live key-value, or `None` for a tombstone.
    fn kv<'a>(&'a self, key: &'a [u8]) -> Option<KvRef<'a>> {
        let value = self.value.as_deref()?;
        Some(KvRef {
            key,
            value,
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            lease: self.lease,
        })
    }
}

impl From<Version> for Stored {
    fn from(v: Version) -> Stored {
        match v.put {
            None => Stored::tombstone(v.rev),
            Some(put) => Stored {
                rev: v.rev,
                value: Some(put.value.into_boxed_slice()),
                create_revision: put.create_revision,
                version: put.version,
                lease: put.lease,
            },
        }
    }
}

impl From<Stored> for Version {
    fn from(s: Stored) -> Version {
        let put = s.value.map(|value| PutVersion {
            value: value.into_vec(),
            create_revision: s.create_revision,
            version: s.version,
            lease: s.lease,
        });
        Version { rev: s.rev, put }
    }
}

/// The newest version with `main <= rev`, if any.
fn newest_at(versions: &[Stored], rev: i64) -> Option<&Stored> {
    match versions.last() {
        // The usual read is at the current revision: the newest version.
        Some(last) if last.rev.main <= rev => Some(last),
        _ => {
            let after = versions.partition_point(|v| v.rev.main <= rev);
            versions.get(after.checked_sub(1)?)
        }
    }
}

/// Whether the key's newest version is a put.
fn is_live(versions: &[Stored]) -> bool {
    versions.last().is_some_and(Stored::is_put)
}

/// Bytes a key with these versions is counted as.
fn history_bytes(key: &[u8], versions: &[Stored]) -> u64 {
    let versions_bytes: u64 = versions.iter().map(Stored::bytes).sum();
    KEY_OVERHEAD_BYTES + key.len() as u64 + versions_bytes
}

/// Appends a version. The caller writes in revision order; should it not, the
/// version still goes to its sorted place so reads stay correct.
fn push_version(versions: &mut Vec<Stored>, version: Stored) {
    debug_assert!(
        versions.last().is_none_or(|last| last.rev < version.rev),
        "writes to a key arrive in revision order"
    );
    let at = versions.partition_point(|old| old.rev <= version.rev);
    versions.insert(at, version);
}

/// Drops the versions no read at `target` or later can see: everything older
/// than the newest version with `main <= target`, and that version too if it
/// is a tombstone. Returns the bytes freed.
fn compact_versions(versions: &mut Vec<Stored>, target: i64) -> u64 {
    let first_newer = versions.partition_point(|v| v.rev.main <= target);
    let Some(newest_visible) = first_newer.checked_sub(1) else {
        return 0;
    };
    let keep_from = match versions.get(newest_visible) {
        Some(v) if v.is_put() => newest_visible,
        _ => first_newer,
    };
    if keep_from == 0 {
        return 0;
    }
    let freed = versions.drain(..keep_from).map(|v| v.bytes()).sum();
    // A key rewritten often keeps a large buffer; give it back.
    if versions.capacity() > 2 * versions.len() + 4 {
        versions.shrink_to_fit();
    }
    freed
}

/// Lower and upper bound of a range of keys, as the map's range API takes them.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The map bounds of a key range, or `None` when the range is empty.
fn key_bounds<'a>(start: &'a [u8], end: End<'a>) -> Option<KeyBounds<'a>> {
    match end {
        End::Single => Some((Bound::Included(start), Bound::Included(start))),
        End::Unbounded => Some((Bound::Included(start), Bound::Unbounded)),
        End::Before(end) if end > start => Some((Bound::Included(start), Bound::Excluded(end))),
        End::Before(_) => None,
    }
}

/// Calls `f` with the version of each key visible at `rev`, until it breaks.
fn visit<'a>(
    keys: impl Iterator<Item = (&'a Box<[u8]>, &'a Vec<Stored>)>,
    rev: i64,
    f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>,
) {
    for (key, versions) in keys {
        let Some(kv) = newest_at(versions, rev).and_then(|v| v.kv(key)) else {
            continue;
        };
        if f(kv).is_break() {
            return;
        }
    }
}

/// A compaction in progress: a walk over the keys in key order.
///
/// When the target is raised mid-walk, the walk goes on from where it is at
/// the new target, wraps around after the last key, and stops once it is
/// back where the raise happened; so every key is visited once at the
/// highest target, without starting over.
#[derive(Debug)]
struct Compaction {
    /// The revision being compacted at.
    target: i64,
    /// Keys up to and including this one are done in this walk's current
    /// lap; `None` when none are.
    done_through: Option<Box<[u8]>>,
    /// For a walk that began mid-keyspace: after the last key the walk wraps
    /// to the first and ends after this one. `None`: it began at the first key.
    wrap_through: Option<Box<[u8]>>,
    /// Whether the walk has wrapped.
    wrapped: bool,
}

impl Compaction {
    fn new(target: i64) -> Compaction {
        Compaction { target, done_through: None, wrap_through: None, wrapped: false }
    }

    /// Compacts at a higher target from here on, around to here again.
    fn raise(&mut self, target: i64) {
        self.target = target;
        self.wrap_through = self.done_through.clone();
        self.wrapped = false;
    }

    /// The keys left in the current lap.
    fn bounds(&self) -> KeyBounds<'_> {
        let lower = self.done_through.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let upper = match (&self.wrap_through, self.wrapped) {
            (Some(through), true) => Bound::Included(&**through),
            _ => Bound::Unbounded,
        };
        (lower, upper)
    }

    /// Moves to the next lap after the current one ran out of keys. Returns
    /// false when the walk is over.
    fn next_lap(&mut self) -> bool {
        if self.wrapped || self.wrap_through.is_none() {
            return false;
        }
        self.wrapped = true;
        self.done_through = None;
        true
    }
}

/// The in-memory MVCC store of one shard.
#[derive(Debug, Default)]
pub struct MemStore {
    /// Every stored key with its versions, oldest first; never an empty `Vec`.
    keys: BTreeMap<Box<[u8]>, Vec<Stored>>,
    /// Keys whose newest version is a put.
    live_keys: u64,
    /// See [`MvccStore::size_bytes`].
    size_bytes: u64,
    /// The highest revision a compaction was requested at; 0 for none.
    compacted: i64,
    /// The compaction not yet finished, if any.
    pending: Option<Compaction>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The highest revision compaction was requested at (0 for none). Keys
    /// moved in or out with [`MvccStore::insert_histories`] and
    /// [`MvccStore::take_range`] are compacted at it on the way.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// Whether a compaction is still in progress.
    pub fn compaction_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn iter_range<'a>(
        &'a self,
        start: &'a [u8],
        end: End<'a>,
    ) -> impl DoubleEndedIterator<Item = (&'a Box<[u8]>, &'a Vec<Stored>)> {
        key_bounds(start, end).map(|bounds| self.keys.range::<[u8], _>(bounds)).into_iter().flatten()
    }

    fn add_key(&mut self, key: Box<[u8]>, versions: Vec<Stored>) {
        self.size_bytes += history_bytes(&key, &versions);
        self.live_keys += u64::from(is_live(&versions));
        self.keys.insert(key, versions);
    }

    /// Takes a key's versions out of the counters (the caller removes them).
    fn forget_key(&mut self, key: &[u8], versions: &[Stored]) {
        self.size_bytes -= history_bytes(key, versions);
        self.live_keys -= u64::from(is_live(versions));
    }

    /// Detaches the keys of a range into their own map.
    fn split_out(&mut self, start: &[u8], end: End<'_>) -> BTreeMap<Box<[u8]>, Vec<Stored>> {
        match end {
            End::Single => self.keys.remove_entry(start).into_iter().collect(),
            End::Unbounded => self.keys.split_off(start),
            End::Before(end) if end > start => {
                let mut taken = self.keys.split_off(start);
                let mut rest = taken.split_off(end);
                self.keys.append(&mut rest);
                taken
            }
            End::Before(_) => BTreeMap::new(),
        }
    }

    /// Compacts up to `budget_keys` keys of the current lap. Returns how many
    /// it did and whether the lap has no keys left.
    fn compact_lap(&mut self, c: &mut Compaction, budget_keys: usize) -> (usize, bool) {
        let mut freed = 0;
        let mut emptied = Vec::new();
        let mut done = 0;
        let mut iter = self.keys.range_mut::<[u8], _>(c.bounds());
        let mut last = None;
        for (key, versions) in iter.by_ref().take(budget_keys) {
            freed += compact_versions(versions, c.target);
            if versions.is_empty() {
                emptied.push(key.clone());
            }
            last = Some(key);
            done += 1;
        }
        let lap_over = iter.next().is_none();
        if let Some(last) = last {
            c.done_through = Some(last.clone());
        }
        self.size_bytes -= freed;
        for key in emptied {
            // Only a key whose newest version was a tombstone empties out.
            self.keys.remove(&key);
            self.size_bytes -= KEY_OVERHEAD_BYTES + key.len() as u64;
        }
        (done, lap_over)
    }

    fn insert_history(&mut self, history: KeyHistory) {
        let mut versions: Vec<Stored> = history.versions.into_iter().map(Stored::from).collect();
        let key = match self.keys.remove_entry(history.key.as_slice()) {
            // Not expected; merging keeps every version rather than losing some.
            Some((key, old)) => {
                self.forget_key(&key, &old);
                versions.extend(old);
                key
            }
            None => history.key.into_boxed_slice(),
        };
        if !versions.is_sorted_by_key(|v| v.rev) {
            versions.sort_by_key(|v| v.rev);
        }
        versions.dedup_by_key(|v| v.rev);
        compact_versions(&mut versions, self.compacted);
        if !versions.is_empty() {
            self.add_key(key, versions);
        }
    }

    /// The live key at the middle of the live keys, if there are two.
    fn live_median(&self) -> Option<Vec<u8>> {
        let half = usize::try_from(self.live_keys / 2).ok()?;
        let mut live = self.keys.iter().filter(|(_, versions)| is_live(versions));
        live.nth(half).map(|(key, _)| key.to_vec())
    }
}

impl MvccStore for MemStore {
    fn latest(&self, key: &[u8]) -> Option<KvRef<'_>> {
        let (key, versions) = self.keys.get_key_value(key)?;
        versions.last()?.kv(key)
    }

    fn scan(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>) {
        visit(self.iter_range(start, end), rev, f);
    }

    fn scan_rev(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>) {
        visit(self.iter_range(start, end).rev(), rev, f);
    }

    fn count(&self, start: &[u8], end: End<'_>, rev: i64) -> u64 {
        let visible = self.iter_range(start, end);
        visible.filter(|(_, versions)| newest_at(versions, rev).is_some_and(Stored::is_put)).count() as u64
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: i64, rev: Rev) -> Option<KeyValue> {
        let mut stored = Stored { rev, value: Some(value.into()), create_revision: rev.main, version: 1, lease };
        let Some(versions) = self.keys.get_mut(key) else {
            self.add_key(key.into(), vec![stored]);
            return None;
        };
        let prev = versions.last().and_then(|v| v.kv(key)).map(|kv| kv.to_owned_kv());
        match &prev {
            Some(prev) => {
                stored.create_revision = prev.create_revision;
                stored.version = prev.version + 1;
            }
            None => self.live_keys += 1,
        }
        self.size_bytes += stored.bytes();
        push_version(versions, stored);
        prev
    }

    fn delete(&mut self, key: &[u8], rev: Rev) -> Option<KeyValue> {
        let versions = self.keys.get_mut(key)?;
        let prev = versions.last()?.kv(key)?.to_owned_kv();
        let tombstone = Stored::tombstone(rev);
        self.size_bytes += tombstone.bytes();
        self.live_keys -= 1;
        push_version(versions, tombstone);
        Some(prev)
    }

    fn begin_compact(&mut self, rev: i64) {
        if rev <= self.compacted {
            return;
        }
        self.compacted = rev;
        match &mut self.pending {
            Some(c) => c.raise(rev),
            None => self.pending = Some(Compaction::new(rev)),
        }
    }

    fn compact_step(&mut self, budget_keys: usize) -> bool {
        let Some(mut c) = self.pending.take() else {
            return true;
        };
        let mut budget = budget_keys;
        loop {
            let (done, lap_over) = self.compact_lap(&mut c, budget);
            budget -= done;
            if !lap_over {
                self.pending = Some(c);
                return false;
            }
            if !c.next_lap() {
                return true;
            }
        }
    }

    fn live_keys(&self) -> u64 {
        self.live_keys
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The middle live key (so both halves hold live keys) when at least two
    /// keys are live, else the middle stored key when two are stored. An
    /// O(n) walk over half the keys: meant for occasional rebalancing.
    fn split_key(&self) -> Option<Vec<u8>> {
        if self.live_keys >= 2 {
            return self.live_median();
        }
        if self.keys.len() < 2 {
            return None;
        }
        self.keys.keys().nth(self.keys.len() / 2).map(|key| key.to_vec())
    }

    fn history(&self, start: &[u8], end: End<'_>, from: i64, to: i64, f: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        for (key, versions) in self.iter_range(start, end) {
            let first = versions.partition_point(|v| v.rev.main < from);
            for i in first..versions.len() {
                let v = &versions[i];
                if v.rev.main > to {
                    break;
                }
                let prev = i.checked_sub(1).and_then(|p| versions[p].kv(key)).map(|kv| kv.to_owned_kv());
                let (kind, kv) = match v.kv(key) {
                    Some(kv) => (EventKind::Put, kv.to_owned_kv()),
                    None => (
                        EventKind::Delete,
                        KeyValue { key: key.to_vec(), mod_revision: v.rev.main, ..KeyValue::default() },
                    ),
                };
                if f(Event { rev: v.rev, kind, kv, prev }).is_break() {
                    return;
                }
            }
        }
    }

    fn key_at(&self, n: u64, from_high: bool) -> Option<Vec<u8>> {
        let n = usize::try_from(n).ok()?;
        let key = if from_high {
            self.keys.iter().rev().filter(|(_, v)| is_live(v)).nth(n)
        } else {
            self.keys.iter().filter(|(_, v)| is_live(v)).nth(n)
        };
        key.map(|(k, _)| k.to_vec())
    }

    /// The histories leave compacted at [`MemStore::compacted_revision`], so
    /// a compaction pending here does not have to be redone elsewhere.
    fn take_range(&mut self, start: &[u8], end: End<'_>) -> Vec<KeyHistory> {
        let taken = self.split_out(start, end);
        let mut out = Vec::with_capacity(taken.len());
        for (key, mut versions) in taken {
            self.forget_key(&key, &versions);
            compact_versions(&mut versions, self.compacted);
            if versions.is_empty() {
                continue;
            }
            let versions = versions.into_iter().map(Version::from).collect();
            out.push(KeyHistory { key: key.into_vec(), versions });
        }
        out
    }

    /// Each history is compacted at [`MemStore::compacted_revision`] on the
    /// way in. A key already present (a caller bug) gets the union of both
    /// histories.
    fn insert_histories(&mut self, histories: Vec<KeyHistory>) {
        for history in histories {
            self.insert_history(history);
        }
    }
}

#[cfg(test)]
mod tests;
