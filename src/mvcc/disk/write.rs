//! Writes: puts, tombstones, and moving key histories out and in.
//!
//! Owns: the tree entries each write adds or removes and the counters they
//! change (live keys, stored keys, size bytes). Never touches: the
//! compaction walk (compact.rs) or checkpoints.

use std::ops::ControlFlow;

use super::compact::compact_versions;
use super::keys::{is_long, tree_key, SlotKind};
use super::read::{kv_of, Loaded};
use super::value::{self, PutMeta};
use super::{entry_bytes, DiskError, DiskStore, PageFile, Result};
use crate::btree;
use crate::mvcc::{End, KeyHistory, KeyValue, Rev, Version};

impl<F: PageFile> DiskStore<F> {
    /// Adds one version entry. A version already stored at this key and
    /// revision is a caller bug (`MemStore` asserts against it): the store
    /// breaks rather than guess which one is right.
    fn insert_entry(&mut self, tree_key: &[u8], value: &[u8]) -> Result<()> {
        let replaced = self.tree.insert(&self.cache, tree_key, value).map_err(|e| self.tree_err(e))?;
        self.size_bytes += entry_bytes(tree_key.len(), value.len());
        if replaced {
            let detail = "two versions of one key at one revision".to_string();
            return Err(DiskError::BadEntry { path: self.path().into(), key: super::hex(tree_key), detail });
        }
        Ok(())
    }

    /// Removes one version entry counted as `bytes`.
    pub(super) fn delete_entry(&mut self, tree_key: &[u8], bytes: u64) -> Result<()> {
        if !self.tree.delete(&self.cache, tree_key).map_err(|e| self.tree_err(e))? {
            let source = btree::Error::Inconsistent { detail: format!("version {} vanished", super::hex(tree_key)) };
            return Err(DiskError::Tree { path: self.path().into(), source });
        }
        self.size_bytes = self.size_bytes.saturating_sub(bytes);
        Ok(())
    }

    /// Writes the version `put` (`None`: a tombstone) of `key` at `rev`.
    fn write_version(&mut self, key: &[u8], rev: Rev, put: Option<(PutMeta, &[u8])>) -> Result<()> {
        let full_key = is_long(key).then_some(key);
        self.insert_entry(&tree_key(key, rev), &value::encode(full_key, put))
    }

    /// `MvccStore::put`.
    pub(super) fn put_version(&mut self, key: &[u8], value: &[u8], lease: i64, rev: Rev) -> Result<Option<KeyValue>> {
        let newest = self.version_at(key, i64::MAX)?;
        let prev = newest.as_ref().and_then(|(r, put)| put.as_ref().map(|p| kv_of(key, *r, p)));
        let meta = match &prev {
            Some(p) => PutMeta { create_revision: p.create_revision, version: p.version + 1, lease },
            None => PutMeta { create_revision: rev.main, version: 1, lease },
        };
        self.write_version(key, rev, Some((meta, value)))?;
        self.live_keys += u64::from(prev.is_none());
        self.stored_keys += u64::from(newest.is_none());
        Ok(prev)
    }

    /// `MvccStore::delete`.
    pub(super) fn delete_version(&mut self, key: &[u8], rev: Rev) -> Result<Option<KeyValue>> {
        let Some((found, Some(put))) = self.version_at(key, i64::MAX)? else { return Ok(None) };
        let prev = kv_of(key, found, &put);
        self.write_version(key, rev, None)?;
        self.live_keys -= 1;
        Ok(Some(prev))
    }

    /// Removes every version of one key (newest first) and its counts.
    fn forget_key(&mut self, versions: &[Loaded]) -> Result<()> {
        let Some(newest) = versions.first() else { return Ok(()) };
        self.stored_keys -= 1;
        self.live_keys -= u64::from(newest.put.is_some());
        for v in versions {
            self.delete_entry(&v.tree_key, v.bytes)?;
        }
        Ok(())
    }

    /// `MvccStore::take_range`: every key of the range leaves, its
    /// history compacted at the compacted revision (as `MemStore` does).
    pub(super) fn take_histories(&mut self, start: &[u8], end: End<'_>) -> Result<Vec<KeyHistory>> {
        let mut taken: Vec<Vec<Loaded>> = Vec::new();
        self.for_each_slot(start, end, &mut |kind, prefix, user| {
            match kind {
                SlotKind::Short => taken.push(self.slot_versions(prefix, user)?),
                SlotKind::Group => {
                    let group = self.load_group(prefix)?;
                    let in_range = group.chunk_by(|a, b| a.key == b.key).filter(|v| end.contains(start, &v[0].key));
                    taken.extend(in_range.map(<[Loaded]>::to_vec));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let mut out = Vec::with_capacity(taken.len());
        for versions in taken {
            self.forget_key(&versions)?;
            let mut history: Vec<Version> = versions.iter().rev().map(Loaded::version).collect();
            compact_versions(&mut history, self.compacted);
            if let (false, Some(first)) = (history.is_empty(), versions.into_iter().next()) {
                out.push(KeyHistory { key: first.key, versions: history });
            }
        }
        Ok(out)
    }

    /// One history of `MvccStore::insert_histories`: compacted at the
    /// compacted revision; merged with the key's own versions if it has
    /// any (a caller bug, handled as `MemStore` does: the union, the
    /// incoming version winning at an equal revision).
    pub(super) fn insert_history(&mut self, history: KeyHistory) -> Result<()> {
        let key = history.key;
        let existing = self.key_versions(&key)?;
        self.forget_key(&existing)?;
        let mut versions = history.versions;
        versions.extend(existing.iter().rev().map(Loaded::version));
        if !versions.is_sorted_by_key(|v| v.rev) {
            versions.sort_by_key(|v| v.rev);
        }
        versions.dedup_by_key(|v| v.rev);
        compact_versions(&mut versions, self.compacted);
        let Some(newest) = versions.last() else { return Ok(()) };
        let live = newest.put.is_some();
        for v in &versions {
            let put = v.put.as_ref().map(|p| {
                (PutMeta { create_revision: p.create_revision, version: p.version, lease: p.lease }, &p.value[..])
            });
            self.write_version(&key, v.rev, put)?;
        }
        self.stored_keys += 1;
        self.live_keys += u64::from(live);
        Ok(())
    }
}
