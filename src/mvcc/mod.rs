//! Multi-version key-value state of one shard.
//!
//! Owns: the versions of the keys in one shard's range, tombstones, and the
//! physical side of compaction. Knows revisions and keys; never knows Raft,
//! batches, requests or which shard it is (DESIGN §9).
//!
//! The store is told the exact revision of every write by the apply engine;
//! it never invents one. Reads name the revision they read at; checking that
//! the revision is neither compacted nor in the future is the caller's job
//! (the caller holds the global revision counters, the store only its keys).
//!
//! `MvccStore` is the boundary both implementations share: `MemStore` keeps
//! every version in memory; `DiskStore` (disk/) keeps them in a B+tree file
//! behind a page cache, with checkpoints, and has the same observable
//! semantics (its tests compare the two).

pub mod disk;
mod memory;

pub use disk::DiskStore;
pub use memory::MemStore;

use std::ops::ControlFlow;

/// The full revision of one version: `main` is etcd's revision; `sub` orders
/// the writes of one request (a Txn or a DeleteRange writes several keys at
/// one main revision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    /// etcd's revision.
    pub main: i64,
    /// Position of the write within its request, from 0.
    pub sub: i64,
}

/// The upper end of a key range, as etcd's `range_end` means it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End<'a> {
    /// Just the start key (`range_end` empty).
    Single,
    /// Every key at or after the start key (`range_end` is `"\0"`).
    Unbounded,
    /// Keys in `[start, end)`. An end at or before the start is an empty range.
    Before(&'a [u8]),
}

impl<'a> End<'a> {
    /// Decodes etcd's `range_end` field.
    pub fn from_range_end(range_end: &'a [u8]) -> End<'a> {
        match range_end {
            [] => End::Single,
            [0] => End::Unbounded,
            end => End::Before(end),
        }
    }

    /// Whether `key` lies in the range that starts at `start`.
    pub fn contains(&self, start: &[u8], key: &[u8]) -> bool {
        match self {
            End::Single => key == start,
            End::Unbounded => key >= start,
            End::Before(end) => key >= start && key < *end,
        }
    }
}

/// One live version of a key, borrowed from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRef<'a> {
    /// The user key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Main revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// Main revision of the put that wrote this version.
    pub mod_revision: i64,
    /// Number of puts since the key was created; 1 for the creating put.
    pub version: i64,
    /// Lease attached to this version; 0 for none.
    pub lease: i64,
}

impl KvRef<'_> {
    /// An owned copy.
    pub fn to_owned_kv(&self) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// An owned key-value version, as etcd's `mvccpb.KeyValue` carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The user key.
    pub key: Vec<u8>,
    /// The value (empty when the reader asked for keys only).
    pub value: Vec<u8>,
    /// See [`KvRef::create_revision`].
    pub create_revision: i64,
    /// See [`KvRef::mod_revision`].
    pub mod_revision: i64,
    /// See [`KvRef::version`].
    pub version: i64,
    /// See [`KvRef::lease`].
    pub lease: i64,
}

/// What a change did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A put wrote a version.
    Put,
    /// A delete wrote a tombstone.
    Delete,
}

/// One change to one key, as watchers see it (etcd's `mvccpb.Event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When: etcd orders a revision's events by `sub`.
    pub rev: Rev,
    /// Put or delete.
    pub kind: EventKind,
    /// The version written; for a delete, the key and `mod_revision` only.
    pub kv: KeyValue,
    /// The version the change replaced, if it was live (and still stored).
    pub prev: Option<KeyValue>,
}

/// All stored versions of one key, oldest first, for moving a key range from
/// one shard to another. Opaque outside the store that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHistory {
    /// The user key.
    pub key: Vec<u8>,
    /// Its versions, oldest first.
    pub versions: Vec<Version>,
}

/// One stored version of a key: a put or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// When it was written.
    pub rev: Rev,
    /// What was written; `None` is a tombstone (a delete).
    pub put: Option<PutVersion>,
}

/// The content of a put version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutVersion {
    /// The value.
    pub value: Vec<u8>,
    /// Main revision of the put that created the key.
    pub create_revision: i64,
    /// Puts since creation, 1 for the creating put.
    pub version: i64,
    /// Attached lease, 0 for none.
    pub lease: i64,
}

/// The storage boundary of one shard's MVCC state.
///
/// Reads see every write made before them through `&mut self`; there is no
/// transaction object because one reactor owns the store and applies a batch
/// without yielding.
pub trait MvccStore {
    /// The newest version of `key` if it is live (not deleted, not absent).
    fn latest(&self, key: &[u8]) -> Option<KvRef<'_>>;

    /// Calls `f` for each key in `[start, end)` that is live at revision
    /// `rev` (its newest version with `main <= rev` is a put), with that
    /// version, in ascending key order, until `f` returns `Break`.
    fn scan(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>);

    /// As [`MvccStore::scan`], in descending key order.
    fn scan_rev(&self, start: &[u8], end: End<'_>, rev: i64, f: &mut dyn FnMut(KvRef<'_>) -> ControlFlow<()>);

    /// The number of keys in the range live at `rev`.
    fn count(&self, start: &[u8], end: End<'_>, rev: i64) -> u64 {
        let mut n = 0u64;
        self.scan(start, end, rev, &mut |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        n
    }

    /// Calls `f` with every change to the keys in `[start, end)` whose main
    /// revision is in `[from, to]`: key by key in key order, each key's in
    /// revision order (callers merge across keys), until `f` breaks. A change
    /// carries the version it replaced when that was a put the store still
    /// holds. Revisions below the compaction revision may be gone.
    fn history(&self, start: &[u8], end: End<'_>, from: i64, to: i64, f: &mut dyn FnMut(Event) -> ControlFlow<()>);

    /// Writes a put version of `key` at `rev`. The store derives the version
    /// number and create revision from the key's newest version. Returns the
    /// version that was live before, if any.
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64, rev: Rev) -> Option<KeyValue>;

    /// Writes a tombstone for `key` at `rev` if the key is live. Returns the
    /// version that was live, or `None` (and writes nothing) if it was not.
    fn delete(&mut self, key: &[u8], rev: Rev) -> Option<KeyValue>;

    /// Starts compacting at `rev`: versions a read at `rev` or later cannot
    /// see become removable. Logical effect is the caller's (it refuses
    /// reads below `rev`); the physical removal happens in
    /// [`MvccStore::compact_step`].
    fn begin_compact(&mut self, rev: i64);

    /// Does up to `budget_keys` keys' worth of the pending compaction.
    /// Returns true when no compaction work is left.
    fn compact_step(&mut self, budget_keys: usize) -> bool;

    /// Number of live keys (for balancing the range map).
    fn live_keys(&self) -> u64;

    /// Approximate bytes held by the store (keys, values, version metadata).
    fn size_bytes(&self) -> u64;

    /// A key that splits the stored keys into two halves of about equal
    /// count, if there are at least two keys.
    fn split_key(&self) -> Option<Vec<u8>>;

    /// The live key `n` places from the low end of the store (from the high
    /// end if `from_high`), if there are more than `n` live keys: where to
    /// cut to hand `n` keys to a neighbouring shard.
    fn key_at(&self, n: u64, from_high: bool) -> Option<Vec<u8>>;

    /// Removes and returns every version of every key in `[start, end)`
    /// (the range leaves this shard).
    fn take_range(&mut self, start: &[u8], end: End<'_>) -> Vec<KeyHistory>;

    /// Adds key histories taken from another shard's store. The keys must
    /// not be present here.
    fn insert_histories(&mut self, histories: Vec<KeyHistory>);

    /// Calls `f` with every stored key history in `[start, end)`, in key
    /// order, each with every version the store holds (for snapshots),
    /// until `f` breaks. Read-only.
    fn histories(&self, start: &[u8], end: End<'_>, f: &mut dyn FnMut(KeyHistory) -> ControlFlow<()>) {
        let mut cur: Option<KeyHistory> = None;
        let mut stopped = false;
        self.history(start, end, i64::MIN, i64::MAX, &mut |e| {
            let version = Version {
                rev: e.rev,
                put: match e.kind {
                    EventKind::Put => Some(PutVersion {
                        value: e.kv.value,
                        create_revision: e.kv.create_revision,
                        version: e.kv.version,
                        lease: e.kv.lease,
                    }),
                    EventKind::Delete => None,
                },
            };
            match &mut cur {
                Some(h) if h.key == e.kv.key => h.versions.push(version),
                _ => {
                    if let Some(done) = cur.replace(KeyHistory { key: e.kv.key, versions: vec![version] }) {
                        if f(done).is_break() {
                            stopped = true;
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if let (Some(h), false) = (cur, stopped) {
            let _ = f(h);
        }
    }
}
