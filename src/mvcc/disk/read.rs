//! Reads: point reads, scans both ways, counts, history, and the walks over
//! keys they share.
//!
//! Owns: how a read finds the version visible at a revision in the tree
//! layout of keys.rs, and loading a long-key group as a whole. Never
//! touches: the tree's pages directly (it reads through `Cursor`), or any
//! mutation.
//!
//! A forward walk lands on each key's newest version (the first entry of
//! its slot), steps to the newest version at or below the read revision,
//! yields it, and steps past the key's older versions; after `STEP_MAX`
//! steps within one key it seeks instead. A backward walk lands on each
//! key's oldest version and steps toward newer ones, keeping a copy of the
//! newest one at or below the read revision; past `STEP_MAX` it looks the
//! key up with one seek and jumps over the rest.

use std::ops::{Bound, ControlFlow};

use super::keys::{in_slot, is_long, past_slot, rev_of, seek_at, slot_prefix, unescape_into, BadKey, Parsed, SlotKind};
use super::value::{self, BadValue, Decoded};
use super::{entry_bytes, DiskStore, PageFile, Result};
use crate::btree::{Cursor, Entry, Value};
use crate::mvcc::{End, Event, EventKind, KeyValue, KvRef, PutVersion, Rev, Version};

/// Versions of one key a walk steps over before it seeks instead.
pub(super) const STEP_MAX: usize = 8;

/// One stored version, copied out of the tree.
#[derive(Clone, Debug)]
pub(super) struct Loaded {
    /// The user key.
    pub key: Vec<u8>,
    /// Its revision.
    pub rev: Rev,
    /// Its tree key.
    pub tree_key: Vec<u8>,
    /// A put's content; `None` for a tombstone.
    pub put: Option<PutVersion>,
    /// What it counts for in `size_bytes`.
    pub bytes: u64,
}

impl Loaded {
    pub fn version(&self) -> Version {
        Version { rev: self.rev, put: self.put.clone() }
    }
}

/// What a walk found in a slot.
pub(super) enum Found<'a> {
    /// The version of a short key visible at the read revision.
    Short {
        /// The user key.
        key: &'a [u8],
        /// The version's revision.
        rev: Rev,
        /// Its stored value (metadata first, value.rs).
        value: Value<'a>,
        /// Its tree key (for error messages).
        tree_key: &'a [u8],
    },
    /// A long-key group (its slot prefix): the visitor loads it.
    Group(&'a [u8]),
}

/// A walk's visitor.
pub(super) type Visit<'v> = dyn FnMut(Found<'_>) -> Result<ControlFlow<()>> + 'v;

/// A slot walk's visitor: the slot's kind, prefix and user key (a group's:
/// its 480-byte prefix).
pub(super) type VisitSlot<'v> = dyn FnMut(SlotKind, &[u8], &[u8]) -> Result<ControlFlow<()>> + 'v;

/// A candidate version a backward walk keeps while stepping on.
enum Kept {
    Inline,
    Overflow(crate::btree::OverflowRef),
}

/// A live key-value of a put version.
pub(super) fn kv_of(key: &[u8], rev: Rev, put: &PutVersion) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: put.value.clone(),
        create_revision: put.create_revision,
        mod_revision: rev.main,
        version: put.version,
        lease: put.lease,
    }
}

/// Whether the walk past `user` (a short key, or a group's 480-byte
/// prefix, whose keys are all longer) is past the end of the range.
fn past_end(user: &[u8], end: End<'_>) -> bool {
    matches!(end, End::Before(e) if user >= e)
}

impl<F: PageFile> DiskStore<F> {
    /// The cursor's next entry.
    pub(super) fn next<'c>(&self, cursor: &'c mut Cursor) -> Result<Option<Entry<'c>>> {
        cursor.next(&self.tree, &self.cache).map_err(|e| self.tree_err(e))
    }

    pub(super) fn parse<'k>(&self, tree_key: &'k [u8]) -> Result<Parsed<'k>> {
        super::keys::parse(tree_key).map_err(|e| self.bad_key(tree_key, e))
    }

    /// The revision of a tree key in a slot of `prefix_len` bytes.
    pub(super) fn rev_in(&self, tree_key: &[u8], prefix_len: usize) -> Result<Rev> {
        rev_of(tree_key, prefix_len).ok_or_else(|| self.bad_key(tree_key, BadKey::RevLength(tree_key.len())))
    }

    /// The bytes of a stored value: in its leaf, or assembled into `buf`.
    pub(super) fn value_bytes<'a>(&self, value: Value<'a>, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        match value {
            Value::Inline(bytes) => Ok(bytes),
            Value::Overflow(_) => {
                buf.clear();
                self.tree.read_value(&self.cache, value, buf).map_err(|e| self.tree_err(e))?;
                Ok(buf)
            }
        }
    }

    pub(super) fn decode<'a>(&self, tree_key: &[u8], bytes: &'a [u8]) -> Result<Decoded<'a>> {
        value::decode(bytes).map_err(|e| self.bad_value(tree_key, e))
    }

    /// Whether a short key's stored value is a put, without reading an
    /// overflow value (a short key's tombstone is always inline).
    pub(super) fn is_put(&self, tree_key: &[u8], value: Value<'_>) -> Result<bool> {
        match value {
            Value::Inline(bytes) => value::is_put(bytes.first().copied()).map_err(|e| self.bad_value(tree_key, e)),
            Value::Overflow(_) => Ok(true),
        }
    }

    /// Every version of the short key of slot `prefix`, newest first.
    pub(super) fn slot_versions(&self, prefix: &[u8], key: &[u8]) -> Result<Vec<Loaded>> {
        let mut cursor = Cursor::forward(Bound::Included(prefix));
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while let Some(e) = self.next(&mut cursor)? {
            if !in_slot(e.key, prefix) {
                break;
            }
            let rev = self.rev_in(e.key, prefix.len())?;
            let bytes = entry_bytes(e.key.len(), e.value.len());
            let decoded = self.decode(e.key, self.value_bytes(e.value, &mut buf)?)?;
            let put = decoded.to_put_version();
            out.push(Loaded { key: key.to_vec(), rev, tree_key: e.key.to_vec(), put, bytes });
        }
        Ok(out)
    }

    /// Every version of every key of a long-key group, by key, each key's
    /// newest first.
    pub(super) fn load_group(&self, prefix: &[u8]) -> Result<Vec<Loaded>> {
        let mut cursor = Cursor::forward(Bound::Included(prefix));
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while let Some(e) = self.next(&mut cursor)? {
            if !in_slot(e.key, prefix) {
                break;
            }
            let rev = self.rev_in(e.key, prefix.len())?;
            let bytes = entry_bytes(e.key.len(), e.value.len());
            let decoded = self.decode(e.key, self.value_bytes(e.value, &mut buf)?)?;
            let key = match decoded.full_key {
                Some(key) if is_long(key) && slot_prefix(key) == prefix => key.to_vec(),
                _ => return Err(self.bad_value(e.key, BadValue::FullKey)),
            };
            out.push(Loaded { key, rev, tree_key: e.key.to_vec(), put: decoded.to_put_version(), bytes });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key).then(b.rev.cmp(&a.rev)));
        Ok(out)
    }

    /// Every version of `key`, newest first.
    pub(super) fn key_versions(&self, key: &[u8]) -> Result<Vec<Loaded>> {
        let prefix = slot_prefix(key);
        if !is_long(key) {
            return self.slot_versions(&prefix, key);
        }
        let mut group = self.load_group(&prefix)?;
        group.retain(|v| v.key == key);
        Ok(group)
    }

    /// The newest version of `key` with `main <= rev`: its revision and,
    /// for a put, its content. One seek for a short key.
    pub(super) fn version_at(&self, key: &[u8], rev: i64) -> Result<Option<(Rev, Option<PutVersion>)>> {
        let prefix = slot_prefix(key);
        if is_long(key) {
            let group = self.load_group(&prefix)?;
            return Ok(group.into_iter().find(|v| v.key == key && v.rev.main <= rev).map(|v| (v.rev, v.put)));
        }
        let mut cursor = Cursor::forward(Bound::Included(&seek_at(&prefix, rev)));
        let Some(e) = self.next(&mut cursor)? else { return Ok(None) };
        if !in_slot(e.key, &prefix) {
            return Ok(None);
        }
        let found = self.rev_in(e.key, prefix.len())?;
        let mut buf = Vec::new();
        let decoded = self.decode(e.key, self.value_bytes(e.value, &mut buf)?)?;
        Ok(Some((found, decoded.to_put_version())))
    }

    /// `MvccStore::latest`, with the key and value pinned (pins.rs).
    pub(super) fn latest_pinned(&self, key: &[u8]) -> Result<Option<KvRef<'_>>> {
        let Some((rev, Some(put))) = self.version_at(key, i64::MAX)? else { return Ok(None) };
        let key = self.pins.pin(key.to_vec());
        let value = self.pins.pin(put.value);
        let (create_revision, version, lease) = (put.create_revision, put.version, put.lease);
        Ok(Some(KvRef { key, value, create_revision, mod_revision: rev.main, version, lease }))
    }

    /// Calls `f` with the live keys of the group `prefix` in the range, as
    /// visible at `rev`, in key order (descending if `reverse`).
    fn scan_group(
        &self,
        prefix: &[u8],
        (start, end): (&[u8], End<'_>),
        rev: i64,
        reverse: bool,
        f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let group = self.load_group(prefix)?;
        let mut live: Vec<&Loaded> = group
            .chunk_by(|a, b| a.key == b.key)
            .filter(|versions| end.contains(start, &versions[0].key))
            .filter_map(|versions| versions.iter().find(|v| v.rev.main <= rev))
            .filter(|v| v.put.is_some())
            .collect();
        if reverse {
            live.reverse();
        }
        for v in live {
            let Some(put) = &v.put else { continue };
            let kv = KvRef {
                key: &v.key,
                value: &put.value,
                create_revision: put.create_revision,
                mod_revision: v.rev.main,
                version: put.version,
                lease: put.lease,
            };
            if f(kv).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The visitor of `scan` and `scan_rev`: decodes a visible version and
    /// hands live ones to `f`.
    fn emit<'f>(
        &'f self,
        range: (&'f [u8], End<'f>),
        rev: i64,
        reverse: bool,
        f: &'f mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>,
    ) -> impl FnMut(Found<'_>) -> Result<ControlFlow<()>> + 'f {
        let mut buf = Vec::new();
        move |found| match found {
            Found::Short { key, rev, value, tree_key } => {
                let decoded = self.decode(tree_key, self.value_bytes(value, &mut buf)?)?;
                let Some(meta) = decoded.put else { return Ok(ControlFlow::Continue(())) };
                Ok(f(KvRef {
                    key,
                    value: decoded.value,
                    create_revision: meta.create_revision,
                    mod_revision: rev.main,
                    version: meta.version,
                    lease: meta.lease,
                }))
            }
            Found::Group(prefix) => self.scan_group(prefix, range, rev, reverse, f),
        }
    }

    /// `MvccStore::scan`.
    pub(super) fn scan_forward(
        &self,
        start: &[u8],
        end: End<'_>,
        rev: i64,
        f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut visit = self.emit((start, end), rev, false, f);
        self.walk_forward(start, end, rev, &mut visit)
    }

    /// `MvccStore::scan_rev`.
    pub(super) fn scan_backward(
        &self,
        start: &[u8],
        end: End<'_>,
        rev: i64,
        f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut visit = self.emit((start, end), rev, true, f);
        self.walk_backward(start, end, rev, &mut visit)
    }

    /// `MvccStore::count`: reads only the first byte of each visible short
    /// version (never an overflow value).
    pub(super) fn count_live(&self, start: &[u8], end: End<'_>, rev: i64) -> Result<u64> {
        let mut n = 0u64;
        self.walk_forward(start, end, rev, &mut |found| {
            match found {
                Found::Short { value, tree_key, .. } => n += u64::from(self.is_put(tree_key, value)?),
                Found::Group(prefix) => {
                    let counted = self.scan_group(prefix, (start, end), rev, false, &mut |_| {
                        n += 1;
                        ControlFlow::Continue(())
                    })?;
                    debug_assert!(counted.is_continue());
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(n)
    }

    /// Visits the version of the single key `key` visible at `rev` (if it
    /// is a short key), or its group.
    fn visit_point(&self, key: &[u8], rev: i64, visit: &mut Visit<'_>) -> Result<ControlFlow<()>> {
        let prefix = slot_prefix(key);
        if is_long(key) {
            return visit(Found::Group(&prefix));
        }
        let mut cursor = Cursor::forward(Bound::Included(&seek_at(&prefix, rev)));
        let Some(e) = self.next(&mut cursor)? else { return Ok(ControlFlow::Continue(())) };
        if !in_slot(e.key, &prefix) {
            return Ok(ControlFlow::Continue(()));
        }
        let found = self.rev_in(e.key, prefix.len())?;
        visit(Found::Short { key, rev: found, value: e.value, tree_key: e.key })
    }

    /// Moves the cursor; whether it stands on an entry.
    fn advance(&self, cursor: &mut Cursor) -> Result<bool> {
        Ok(self.next(cursor)?.is_some())
    }

    /// Moves the cursor: `None` past the end, else whether the entry it
    /// stands on is in slot `prefix`.
    fn advance_in(&self, cursor: &mut Cursor, prefix: &[u8]) -> Result<Option<bool>> {
        Ok(self.next(cursor)?.map(|e| in_slot(e.key, prefix)))
    }

    /// The entry the cursor stands on (after `advance` returned true).
    fn current<'c>(&self, cursor: &'c Cursor) -> Result<Entry<'c>> {
        let current = cursor.current().map_err(|e| self.tree_err(e))?;
        current.ok_or_else(|| self.tree_err(crate::btree::Error::Broken))
    }

    /// Takes apart the cursor's entry: copies its slot prefix and user key
    /// into the buffers; returns its kind and revision.
    fn enter_slot(&self, cursor: &Cursor, slot: &mut Vec<u8>, user: &mut Vec<u8>) -> Result<(SlotKind, Rev)> {
        let e = self.current(cursor)?;
        let parsed = self.parse(e.key)?;
        slot.clear();
        slot.extend_from_slice(parsed.prefix);
        user.clear();
        unescape_into(parsed.prefix, user);
        Ok((parsed.kind, parsed.rev))
    }

    /// The revision of the cursor's entry if it is in slot `prefix`.
    fn rev_here(&self, cursor: &Cursor, prefix: &[u8]) -> Result<Option<Rev>> {
        let e = self.current(cursor)?;
        if !in_slot(e.key, prefix) {
            return Ok(None);
        }
        self.rev_in(e.key, prefix.len()).map(Some)
    }

    /// Visits, in ascending key order, the version of each short key in the
    /// range visible at `rev` (tombstones included; the visitor tells), and
    /// each long-key group that may hold keys of the range.
    pub(super) fn walk_forward(&self, start: &[u8], end: End<'_>, rev: i64, visit: &mut Visit<'_>) -> Result<()> {
        match end {
            End::Single => return self.visit_point(start, rev, visit).map(drop),
            End::Before(e) if e <= start => return Ok(()),
            _ => {}
        }
        let mut cursor = Cursor::forward(Bound::Included(&slot_prefix(start)));
        let (mut slot, mut user) = (Vec::new(), Vec::new());
        let mut on_entry = self.advance(&mut cursor)?;
        while on_entry {
            // The cursor is on the first (newest) version of a slot.
            let (kind, mut found) = self.enter_slot(&cursor, &mut slot, &mut user)?;
            if past_end(&user, end) {
                return Ok(());
            }
            if kind == SlotKind::Group {
                if visit(Found::Group(&slot))?.is_break() {
                    return Ok(());
                }
                cursor = Cursor::forward(Bound::Excluded(&past_slot(&slot)));
                on_entry = self.advance(&mut cursor)?;
                continue;
            }
            // Step to the newest version at or below `rev`, or seek to it.
            let mut steps = 0;
            while found.main > rev {
                steps += 1;
                if steps > STEP_MAX {
                    cursor = Cursor::forward(Bound::Included(&seek_at(&slot, rev)));
                }
                on_entry = self.advance(&mut cursor)?;
                match on_entry.then(|| self.rev_here(&cursor, &slot)).transpose()?.flatten() {
                    Some(r) => found = r,
                    None => break,
                }
            }
            if found.main > rev {
                // None visible; the cursor is on the next slot (or done).
                continue;
            }
            let e = self.current(&cursor)?;
            if visit(Found::Short { key: &user, rev: found, value: e.value, tree_key: e.key })?.is_break() {
                return Ok(());
            }
            // Past the key's older versions.
            let mut steps = 0;
            loop {
                let here = self.advance_in(&mut cursor, &slot)?;
                on_entry = here.is_some();
                if here != Some(true) {
                    break;
                }
                steps += 1;
                if steps >= STEP_MAX {
                    cursor = Cursor::forward(Bound::Excluded(&past_slot(&slot)));
                    on_entry = self.advance(&mut cursor)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// As `walk_forward`, in descending key order.
    pub(super) fn walk_backward(&self, start: &[u8], end: End<'_>, rev: i64, visit: &mut Visit<'_>) -> Result<()> {
        let from = match end {
            End::Single => return self.visit_point(start, rev, visit).map(drop),
            End::Before(e) if e <= start => return Ok(()),
            End::Unbounded => None,
            // The group of a long end key may hold keys before it.
            End::Before(e) if is_long(e) => Some(past_slot(&slot_prefix(e))),
            End::Before(e) => Some(slot_prefix(e)),
        };
        let mut cursor = Cursor::backward(from.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
        let (mut slot, mut user, mut kept_bytes, mut kept_key) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut on_entry = self.advance(&mut cursor)?;
        while on_entry {
            // The cursor is on the last (oldest) version of a slot.
            let (kind, first) = self.enter_slot(&cursor, &mut slot, &mut user)?;
            if kind == SlotKind::Group {
                // Its keys extend `user`; all of them are below a start
                // that is above `user` and does not extend it.
                if user.as_slice() < start && !start.starts_with(&user) {
                    return Ok(());
                }
                if visit(Found::Group(&slot))?.is_break() {
                    return Ok(());
                }
                cursor = Cursor::backward(Bound::Excluded(&slot));
                on_entry = self.advance(&mut cursor)?;
                continue;
            }
            if user.as_slice() < start {
                return Ok(());
            }
            // Step toward newer versions, keeping the newest at or below `rev`.
            let (mut found, mut steps, mut kept) = (Some(first), 0, None);
            while let Some(r) = found.filter(|r| r.main <= rev) {
                steps += 1;
                if steps > STEP_MAX {
                    break;
                }
                let e = self.current(&cursor)?;
                kept_key.clear();
                kept_key.extend_from_slice(e.key);
                kept = Some((r, self.keep(e.value, &mut kept_bytes)));
                on_entry = self.advance(&mut cursor)?;
                found = if on_entry { self.rev_here(&cursor, &slot)? } else { None };
            }
            if steps > STEP_MAX {
                // Many versions: one seek for the visible one, one past the key.
                if self.visit_point(&user, rev, visit)?.is_break() {
                    return Ok(());
                }
                cursor = Cursor::backward(Bound::Excluded(&slot));
                on_entry = self.advance(&mut cursor)?;
                continue;
            }
            if found.is_some() {
                // The rest of the key's versions are newer than `rev`.
                on_entry = self.skip_back(&mut cursor, &slot)?;
            }
            let Some((found, kept)) = kept else { continue };
            let value = match kept {
                Kept::Inline => Value::Inline(&kept_bytes),
                Kept::Overflow(o) => Value::Overflow(o),
            };
            if visit(Found::Short { key: &user, rev: found, value, tree_key: &kept_key })?.is_break() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Copies an inline value into `buf` (an overflow value is kept by
    /// reference: its pages do not move with the cursor).
    fn keep(&self, value: Value<'_>, buf: &mut Vec<u8>) -> Kept {
        match value {
            Value::Inline(bytes) => {
                buf.clear();
                buf.extend_from_slice(bytes);
                Kept::Inline
            }
            Value::Overflow(o) => Kept::Overflow(o),
        }
    }

    /// Moves a backward cursor standing in slot `prefix` past the slot's
    /// remaining versions (stepping, or seeking after `STEP_MAX`); returns
    /// whether it stands on an entry.
    fn skip_back(&self, cursor: &mut Cursor, prefix: &[u8]) -> Result<bool> {
        for _ in 0..STEP_MAX {
            match self.advance_in(cursor, prefix)? {
                None => return Ok(false),
                Some(false) => return Ok(true),
                Some(true) => {}
            }
        }
        *cursor = Cursor::backward(Bound::Excluded(prefix));
        self.advance(cursor)
    }

    /// Calls `visit` with each slot whose keys may lie in the range, in key
    /// order: its kind, prefix and user key (a group's: its 480-byte prefix).
    pub(super) fn for_each_slot(&self, start: &[u8], end: End<'_>, visit: &mut VisitSlot<'_>) -> Result<()> {
        if matches!(end, End::Before(e) if e <= start) {
            return Ok(());
        }
        let start_slot = slot_prefix(start);
        let mut cursor = Cursor::forward(Bound::Included(&start_slot));
        let (mut slot, mut user) = (Vec::new(), Vec::new());
        loop {
            let kind = {
                let Some(e) = self.next(&mut cursor)? else { return Ok(()) };
                let parsed = self.parse(e.key)?;
                slot.clear();
                slot.extend_from_slice(parsed.prefix);
                parsed.kind
            };
            user.clear();
            unescape_into(&slot, &mut user);
            if past_end(&user, end) || (end == End::Single && slot != start_slot) {
                return Ok(());
            }
            if visit(kind, &slot, &user)?.is_break() {
                return Ok(());
            }
            cursor = Cursor::forward(Bound::Excluded(&past_slot(&slot)));
        }
    }

    /// `MvccStore::history`.
    pub(super) fn history_of(
        &self,
        start: &[u8],
        end: End<'_>,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) -> Result<()> {
        self.for_each_slot(start, end, &mut |kind, prefix, user| match kind {
            SlotKind::Short => {
                let versions = self.window(prefix, from, to)?;
                Ok(emit_history(user, &versions, (from, to), f))
            }
            SlotKind::Group => {
                let group = self.load_group(prefix)?;
                for versions in group.chunk_by(|a, b| a.key == b.key) {
                    if end.contains(start, &versions[0].key)
                        && emit_history(&versions[0].key, versions, (from, to), f).is_break()
                    {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Ok(ControlFlow::Continue(()))
            }
        })
    }

    /// The versions of a short key with `main <= to`, newest first, down to
    /// the first one below `from` (included: it is the first change's
    /// previous version).
    fn window(&self, prefix: &[u8], from: i64, to: i64) -> Result<Vec<Loaded>> {
        let mut cursor = Cursor::forward(Bound::Included(&seek_at(prefix, to)));
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while let Some(e) = self.next(&mut cursor)? {
            if !in_slot(e.key, prefix) {
                break;
            }
            let rev = self.rev_in(e.key, prefix.len())?;
            let decoded = self.decode(e.key, self.value_bytes(e.value, &mut buf)?)?;
            let bytes = entry_bytes(e.key.len(), e.value.len());
            out.push(Loaded { key: Vec::new(), rev, tree_key: Vec::new(), put: decoded.to_put_version(), bytes });
            if rev.main < from {
                break;
            }
        }
        Ok(out)
    }

    /// `MvccStore::key_at`: the `n`th live key from either end.
    pub(super) fn live_key_at(&self, n: u64, from_high: bool) -> Result<Option<Vec<u8>>> {
        let (mut seen, mut out) = (0u64, None);
        let mut take = |key: &[u8]| {
            if seen == n {
                out = Some(key.to_vec());
                return ControlFlow::Break(());
            }
            seen += 1;
            ControlFlow::Continue(())
        };
        let mut visit = |found: Found<'_>| match found {
            Found::Short { key, value, tree_key, .. } => {
                Ok(if self.is_put(tree_key, value)? { take(key) } else { ControlFlow::Continue(()) })
            }
            Found::Group(prefix) => {
                self.scan_group(prefix, (&[], End::Unbounded), i64::MAX, from_high, &mut |kv| take(kv.key))
            }
        };
        if from_high {
            self.walk_backward(&[], End::Unbounded, i64::MAX, &mut visit)?;
        } else {
            self.walk_forward(&[], End::Unbounded, i64::MAX, &mut visit)?;
        }
        Ok(out)
    }

    /// `MvccStore::split_key`, as `MemStore` chooses it.
    pub(super) fn split_key_of(&self) -> Result<Option<Vec<u8>>> {
        if self.live_keys >= 2 {
            return self.live_key_at(self.live_keys / 2, false);
        }
        if self.stored_keys < 2 {
            return Ok(None);
        }
        let (target, mut seen, mut out) = (self.stored_keys / 2, 0u64, None);
        self.for_each_slot(&[], End::Unbounded, &mut |kind, prefix, user| {
            let keys = match kind {
                SlotKind::Short => vec![user.to_vec()],
                SlotKind::Group => {
                    let group = self.load_group(prefix)?;
                    group.chunk_by(|a, b| a.key == b.key).map(|v| v[0].key.clone()).collect()
                }
            };
            for key in keys {
                if seen == target {
                    out = Some(key);
                    return Ok(ControlFlow::Break(()));
                }
                seen += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Live keys, stored keys and size bytes, counted from every version.
    pub(super) fn recount(&self) -> Result<(u64, u64, u64)> {
        let (mut live, mut stored, mut bytes) = (0, 0, 0);
        self.for_each_slot(&[], End::Unbounded, &mut |kind, prefix, user| {
            let versions =
                if kind == SlotKind::Short { self.slot_versions(prefix, user)? } else { self.load_group(prefix)? };
            for key_versions in versions.chunk_by(|a, b| a.key == b.key) {
                stored += 1;
                live += u64::from(key_versions[0].put.is_some());
                bytes += key_versions.iter().map(|v| v.bytes).sum::<u64>();
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok((live, stored, bytes))
    }
}

/// Calls `f` with the changes of one key among `versions` (newest first)
/// whose main revision is in `[from, to]`, oldest first, each with the
/// version it replaced if that was a put.
fn emit_history(
    key: &[u8],
    versions: &[Loaded],
    (from, to): (i64, i64),
    f: &mut dyn FnMut(Event) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut prev: Option<KeyValue> = None;
    for v in versions.iter().rev() {
        if v.rev.main > to {
            break;
        }
        let kv = v.put.as_ref().map(|put| kv_of(key, v.rev, put));
        if v.rev.main >= from {
            let event = match &kv {
                Some(kv) => Event { rev: v.rev, kind: EventKind::Put, kv: kv.clone(), prev: prev.take() },
                None => Event {
                    rev: v.rev,
                    kind: EventKind::Delete,
                    kv: KeyValue { key: key.to_vec(), mod_revision: v.rev.main, ..KeyValue::default() },
                    prev: prev.take(),
                },
            };
            f(event)?;
        }
        prev = kv;
    }
    ControlFlow::Continue(())
}
