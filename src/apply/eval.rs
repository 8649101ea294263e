//! Deciding what a command does before its revision is known (phase 1).
//!
//! A shard evaluates its commands against its store plus an [`Overlay`] of
//! the batch's earlier effects. A version written earlier in the batch has a
//! [`RevRef::Pending`] revision until the shards have exchanged their write
//! counts; compares against such a revision are decidable because the engine
//! puts a barrier in front of any compare whose constant could fall inside
//! the batch (see `engine`). The [`Planner`] turns a decided command into
//! [`Action`]s that phase 3 replays against the store with exact revisions,
//! and a skeleton of the reply ([`Part`]s) that phase 3 fills in.
//!
//! Everything here follows etcd's `applyTxn`: all compares of a Txn (nested
//! ones included) see the state before the Txn, request checks (`key not
//! found`, `lease not found`, revision checks of reads) come before any
//! write, and later ops see earlier ops' writes.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use super::command::{
    ArchivedCompare, ArchivedCompareResult, ArchivedCompareValue, ArchivedDeleteRange, ArchivedOp, ArchivedPut,
    ArchivedRange, ArchivedTxn,
};
use super::range::{RangePart, Shape};
use super::rangemap::RangeMap;
use crate::mvcc::{End, KeyValue, MvccStore};
use crate::types::ShardId;

/// Why a command fails, as etcd reports it (the API layer maps each to
/// etcd's gRPC status and text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A read or compaction at a revision that has been compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction at a revision that does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// The server is shutting down and the request's outcome is unknown.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A lease grant names an ID that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// No leader is known, so nothing can be proposed or read.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request's outcome did not arrive in time (it may still apply).
    #[error("etcdserver: request timed out")]
    Timeout,
}

/// The revision of a version: known, or that of a command earlier in the
/// batch whose revision is not known yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevRef {
    /// A known revision.
    Exact(i64),
    /// The revision command `n` of the batch will get.
    Pending(u32),
}

/// The revision each command of a batch ends at, filled in as exchanges
/// complete.
#[derive(Debug, Default)]
pub struct RevTable {
    after: Vec<Option<i64>>,
}

impl RevTable {
    /// A table for `n` commands, none known.
    pub fn new(n: usize) -> RevTable {
        RevTable { after: vec![None; n] }
    }

    /// Records that the store is at `rev` after command `cmd`.
    pub fn set(&mut self, cmd: usize, rev: i64) {
        self.after[cmd] = Some(rev);
    }

    /// The revision after command `cmd`, if known.
    pub fn get(&self, cmd: usize) -> Option<i64> {
        self.after.get(cmd).copied().flatten()
    }

    /// Resolves a reference if its revision is known.
    pub fn resolve(&self, r: RevRef) -> RevRef {
        match r {
            RevRef::Pending(c) => self.get(c as usize).map_or(r, RevRef::Exact),
            exact => exact,
        }
    }

    /// Orders a version's revision against a compare constant. A pending
    /// revision is above every constant the engine lets through without a
    /// barrier (they are at most the batch's base revision).
    fn cmp(&self, r: RevRef, constant: i64) -> Ordering {
        match self.resolve(r) {
            RevRef::Exact(x) => x.cmp(&constant),
            RevRef::Pending(_) => Ordering::Greater,
        }
    }
}

/// A live version as the evaluator sees it.
#[derive(Clone, Copy, Debug)]
pub struct LiveRef<'x> {
    /// The value.
    pub value: &'x [u8],
    /// Attached lease.
    pub lease: i64,
    /// Version number.
    pub version: i64,
    /// Create revision.
    pub create: RevRef,
    /// Mod revision.
    pub modr: RevRef,
}

/// A live version held in an overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live<'b> {
    /// The value, borrowed from the batch where possible.
    pub value: Cow<'b, [u8]>,
    /// Attached lease.
    pub lease: i64,
    /// Version number.
    pub version: i64,
    /// Create revision.
    pub create: RevRef,
    /// Mod revision.
    pub modr: RevRef,
}

impl Live<'_> {
    fn as_ref(&self) -> LiveRef<'_> {
        LiveRef { value: &self.value, lease: self.lease, version: self.version, create: self.create, modr: self.modr }
    }

    /// An owned copy, for sending to other shards.
    pub fn into_owned(self) -> Live<'static> {
        Live {
            value: Cow::Owned(self.value.into_owned()),
            lease: self.lease,
            version: self.version,
            create: self.create,
            modr: self.modr,
        }
    }
}

/// A key's state in an overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot<'b> {
    /// Written by a put.
    Live(Live<'b>),
    /// Deleted.
    Deleted,
}

/// `BTreeMap::range` bounds over byte keys.
type KeyBounds<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

/// A key range as `BTreeMap::range` bounds; `None` when it is empty (a
/// range the map would refuse).
fn key_bounds<'k>(start: &'k [u8], end: End<'k>) -> Option<KeyBounds<'k>> {
    match end {
        End::Single => Some((Bound::Included(start), Bound::Included(start))),
        End::Unbounded => Some((Bound::Included(start), Bound::Unbounded)),
        End::Before(e) if e <= start => None,
        End::Before(e) => Some((Bound::Included(start), Bound::Excluded(e))),
    }
}

/// Effects of the commands evaluated so far, over some base state.
#[derive(Debug, Default)]
pub struct Overlay<'b> {
    map: BTreeMap<Cow<'b, [u8]>, Slot<'b>>,
}

impl<'b> Overlay<'b> {
    fn get(&self, key: &[u8]) -> Option<&Slot<'b>> {
        self.map.get(key)
    }

    fn insert(&mut self, key: Cow<'b, [u8]>, slot: Slot<'b>) {
        self.map.insert(key, slot);
    }

    fn range<'s>(&'s self, start: &[u8], end: End<'_>) -> Vec<(&'s [u8], &'s Slot<'b>)> {
        let Some(bounds) = key_bounds(start, end) else { return Vec::new() };
        self.map.range::<[u8], _>(bounds).map(|(k, v)| (k.as_ref(), v)).collect()
    }

    /// Moves the entries whose keys `shard` owns into `into`.
    fn drain_owned_into(self, map: &RangeMap, shard: ShardId, into: &mut Overlay<'b>) {
        for (k, v) in self.map {
            if map.owns(shard, &k) {
                into.map.insert(k, v);
            }
        }
    }
}

/// Read access to the state a command is evaluated against.
pub trait View {
    /// The live version of `key`, if any.
    fn get(&self, key: &[u8]) -> Option<LiveRef<'_>>;
    /// Visits live keys of a range in ascending order until `f` breaks.
    fn for_each_live(&self, start: &[u8], end: End<'_>, f: &mut dyn FnMut(&[u8], LiveRef<'_>) -> ControlFlow<()>);
}

/// A shard's store as a [`View`] of its latest state.
pub struct StoreView<'s, S: ?Sized>(pub &'s S);

impl<S: MvccStore + ?Sized> View for StoreView<'_, S> {
    fn get(&self, key: &[u8]) -> Option<LiveRef<'_>> {
        self.0.latest(key).map(|kv| LiveRef {
            value: kv.value,
            lease: kv.lease,
            version: kv.version,
            create: RevRef::Exact(kv.create_revision),
            modr: RevRef::Exact(kv.mod_revision),
        })
    }

    fn for_each_live(&self, start: &[u8], end: End<'_>, f: &mut dyn FnMut(&[u8], LiveRef<'_>) -> ControlFlow<()>) {
        self.0.scan(start, end, i64::MAX, &mut |kv| {
            let live = LiveRef {
                value: kv.value,
                lease: kv.lease,
                version: kv.version,
                create: RevRef::Exact(kv.create_revision),
                modr: RevRef::Exact(kv.mod_revision),
            };
            f(kv.key, live)
        });
    }
}

/// The keys a barrier command touches, gathered from every shard.
#[derive(Debug, Default)]
pub struct FullView {
    map: BTreeMap<Vec<u8>, Live<'static>>,
}

impl FullView {
    /// Adds one shard's contribution, resolving pending revisions.
    pub fn extend(&mut self, entries: impl IntoIterator<Item = (Vec<u8>, Live<'static>)>, revs: &RevTable) {
        for (k, mut live) in entries {
            live.create = revs.resolve(live.create);
            live.modr = revs.resolve(live.modr);
            self.map.insert(k, live);
        }
    }
}

impl View for FullView {
    fn get(&self, key: &[u8]) -> Option<LiveRef<'_>> {
        self.map.get(key).map(Live::as_ref)
    }

    fn for_each_live(&self, start: &[u8], end: End<'_>, f: &mut dyn FnMut(&[u8], LiveRef<'_>) -> ControlFlow<()>) {
        let Some(bounds) = key_bounds(start, end) else { return };
        for (k, v) in self.map.range::<[u8], _>(bounds) {
            if f(k, v.as_ref()).is_break() {
                return;
            }
        }
    }
}

/// A base view with an overlay of effects on top.
pub struct Stacked<'v, 'o, 'b, V: View> {
    base: &'v V,
    top: &'o mut Overlay<'b>,
}

impl<'v, 'o, 'b, V: View> Stacked<'v, 'o, 'b, V> {
    /// Stacks `top` over `base`.
    pub fn new(base: &'v V, top: &'o mut Overlay<'b>) -> Self {
        Stacked { base, top }
    }
}

impl<V: View> View for Stacked<'_, '_, '_, V> {
    fn get(&self, key: &[u8]) -> Option<LiveRef<'_>> {
        match self.top.get(key) {
            Some(Slot::Live(l)) => Some(l.as_ref()),
            Some(Slot::Deleted) => None,
            None => self.base.get(key),
        }
    }

    fn for_each_live(&self, start: &[u8], end: End<'_>, f: &mut dyn FnMut(&[u8], LiveRef<'_>) -> ControlFlow<()>) {
        let tops = self.top.range(start, end);
        let mut i = 0;
        let mut stopped = false;
        self.base.for_each_live(start, end, &mut |k, v| {
            // Overlay keys below this base key come first.
            while i < tops.len() && tops[i].0 < k {
                if let Slot::Live(l) = tops[i].1 {
                    if f(tops[i].0, l.as_ref()).is_break() {
                        stopped = true;
                        return ControlFlow::Break(());
                    }
                }
                i += 1;
            }
            let flow = if i < tops.len() && tops[i].0 == k {
                i += 1;
                match tops[i - 1].1 {
                    Slot::Live(l) => f(k, l.as_ref()),
                    Slot::Deleted => ControlFlow::Continue(()),
                }
            } else {
                f(k, v)
            };
            if flow.is_break() {
                stopped = true;
            }
            flow
        });
        if stopped {
            return;
        }
        for (k, slot) in &tops[i..] {
            if let Slot::Live(l) = slot {
                if f(k, l.as_ref()).is_break() {
                    return;
                }
            }
        }
    }
}

/// The branch a Txn takes, and the branches of the nested Txns in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Every compare held.
    pub succeeded: bool,
    /// Paths of the nested Txns of the taken branch, in op order.
    pub nested: Vec<Path>,
}

fn compare_one(c: &ArchivedCompare, live: Option<LiveRef<'_>>, revs: &RevTable) -> bool {
    let ord = match &c.value {
        ArchivedCompareValue::Value(v) => match live {
            // A missing key has no value to compare, as in etcd.
            None => return false,
            Some(l) => l.value.cmp(v.as_slice()),
        },
        ArchivedCompareValue::Version(x) => live.map_or(0, |l| l.version).cmp(&x.to_native()),
        ArchivedCompareValue::Lease(x) => live.map_or(0, |l| l.lease).cmp(&x.to_native()),
        ArchivedCompareValue::CreateRevision(x) => match live {
            None => 0.cmp(&x.to_native()),
            Some(l) => revs.cmp(l.create, x.to_native()),
        },
        ArchivedCompareValue::ModRevision(x) => match live {
            None => 0.cmp(&x.to_native()),
            Some(l) => revs.cmp(l.modr, x.to_native()),
        },
    };
    match c.result {
        ArchivedCompareResult::Equal => ord == Ordering::Equal,
        ArchivedCompareResult::Greater => ord == Ordering::Greater,
        ArchivedCompareResult::Less => ord == Ordering::Less,
        ArchivedCompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Whether a compare holds: for a range, it must hold for every key in it;
/// an empty range compares as one absent key.
pub fn compare_holds<V: View>(v: &V, c: &ArchivedCompare, revs: &RevTable) -> bool {
    let key = c.key.as_slice();
    match End::from_range_end(c.range_end.as_slice()) {
        End::Single => compare_one(c, v.get(key), revs),
        end => {
            let mut any = false;
            let mut all = true;
            v.for_each_live(key, end, &mut |_, live| {
                any = true;
                if compare_one(c, Some(live), revs) {
                    ControlFlow::Continue(())
                } else {
                    all = false;
                    ControlFlow::Break(())
                }
            });
            if any {
                all
            } else {
                compare_one(c, None, revs)
            }
        }
    }
}

/// Decides the branches of a Txn and of the nested Txns it runs, all
/// against the state before the Txn.
pub fn txn_path<V: View>(v: &V, t: &ArchivedTxn, revs: &RevTable) -> Path {
    let succeeded = t.compare.iter().all(|c| compare_holds(v, c, revs));
    let ops = if succeeded { &t.success } else { &t.failure };
    let nested = ops
        .iter()
        .filter_map(|op| match op {
            ArchivedOp::Txn(inner) => Some(txn_path(v, inner, revs)),
            _ => None,
        })
        .collect();
    Path { succeeded, nested }
}

/// The global revision counters a request check needs.
#[derive(Clone, Copy, Debug)]
pub struct Revs {
    /// The store's revision before the command.
    pub current: i64,
    /// The compacted revision.
    pub compacted: i64,
}

/// Which of etcd's two put checks comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutCheck {
    /// A plain Put: the lease is looked up before the key.
    Plain,
    /// A put inside a Txn: the key before the lease.
    InTxn,
}

/// etcd's checks of a put against the state before it.
pub fn check_put<V: View>(
    v: &V,
    p: &ArchivedPut,
    order: PutCheck,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), ApplyError> {
    let lease = p.lease.to_native();
    let lease_ok = || !(!p.ignore_lease && lease != 0 && !lease_exists(lease));
    let key_ok = || !((p.ignore_value || p.ignore_lease) && v.get(p.key.as_slice()).is_none());
    if order == PutCheck::Plain && !lease_ok() {
        return Err(ApplyError::LeaseNotFound);
    }
    if !key_ok() {
        return Err(ApplyError::KeyNotFound);
    }
    if !lease_ok() {
        return Err(ApplyError::LeaseNotFound);
    }
    Ok(())
}

/// etcd's check of a read's revision inside a Txn.
pub fn check_range(r: &ArchivedRange, revs: Option<Revs>) -> Result<(), ApplyError> {
    let rev = r.revision.to_native();
    if rev <= 0 {
        return Ok(());
    }
    // The engine gives every Txn with a revisioned read exact counters.
    let Some(revs) = revs else { return Ok(()) };
    if rev > revs.current {
        Err(ApplyError::FutureRev)
    } else if rev < revs.compacted {
        Err(ApplyError::Compacted)
    } else {
        Ok(())
    }
}

/// etcd's `checkRequests` of a Txn's taken path: first every put (at every
/// depth, in order), then every read's revision, as etcd 3.4 and 3.5 do.
pub fn check_ops<V: View>(
    v: &V,
    ops: &[ArchivedOp],
    path: &Path,
    revs: Option<Revs>,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), ApplyError> {
    walk_path(ops, path, &mut |op| match op {
        ArchivedOp::Put(p) => check_put(v, p, PutCheck::InTxn, lease_exists),
        _ => Ok(()),
    })?;
    walk_path(ops, path, &mut |op| match op {
        ArchivedOp::Range(r) => check_range(r, revs),
        _ => Ok(()),
    })
}

/// Calls `f` on every non-Txn op of a taken path, depth first, in order,
/// until it fails.
fn walk_path(
    ops: &[ArchivedOp],
    path: &Path,
    f: &mut dyn FnMut(&ArchivedOp) -> Result<(), ApplyError>,
) -> Result<(), ApplyError> {
    let mut nested = path.nested.iter();
    for op in ops {
        if let ArchivedOp::Txn(t) = op {
            let Some(p) = nested.next() else { break };
            let branch = if p.succeeded { &t.success } else { &t.failure };
            walk_path(branch, p, f)?;
        } else {
            f(op)?;
        }
    }
    Ok(())
}

/// One write or read phase 3 performs on the store, in order.
#[derive(Clone, Debug)]
pub enum Action<'b> {
    /// Put a version.
    Put {
        /// Reply part it belongs to.
        slot: u32,
        /// The key.
        key: &'b [u8],
        /// The value to write.
        value: Cow<'b, [u8]>,
        /// The lease to attach.
        lease: i64,
        /// Sub-revision within the command.
        sub: u32,
        /// Report the previous version.
        prev_kv: bool,
    },
    /// Delete a key.
    Delete {
        /// Reply part it belongs to.
        slot: u32,
        /// The key.
        key: Vec<u8>,
        /// Sub-revision within the command.
        sub: u32,
        /// Report the deleted version.
        prev_kv: bool,
    },
    /// Read a range into a reply part.
    Range {
        /// Reply part it fills.
        slot: u32,
        /// The read.
        req: &'b ArchivedRange,
        /// The command wrote something before this read.
        after_write: bool,
    },
    /// Start a compaction.
    Compact {
        /// The compaction revision.
        revision: i64,
    },
    /// Add a lease to the table.
    LeaseGrant {
        /// The lease.
        id: i64,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// Remove a lease from the table (its keys' deletes come before).
    LeaseRevoke {
        /// The lease.
        id: i64,
    },
    /// Record a member's published attributes.
    Publish {
        /// The member.
        member: u64,
        /// Its name.
        name: &'b str,
        /// Its client URLs.
        client_urls: Vec<&'b str>,
    },
}

/// One node of a reply, as one shard fills it; the shards' replies for one
/// command have the same skeleton and merge node by node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A put's reply.
    Put {
        /// The version the put replaced, if asked for.
        prev_kv: Option<KeyValue>,
    },
    /// A delete's reply.
    Delete {
        /// Keys deleted.
        deleted: i64,
        /// The deleted versions, if asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// A read's reply.
    Range {
        /// This shard's part of the result.
        part: RangePart,
        /// The store's revision at the read (etcd's header revision of a
        /// read inside a Txn).
        rev: i64,
        /// How the shards' parts merge.
        shape: Shape,
    },
    /// A Txn's reply: the taken branch's op replies are parts
    /// `first..first + len`.
    Txn {
        /// Every compare held.
        succeeded: bool,
        /// Index of the first op reply.
        first: u32,
        /// Number of op replies.
        len: u32,
    },
    /// A compaction's reply.
    Compact,
    /// A lease grant's or revoke's reply.
    Lease,
    /// A publish's reply.
    Published,
}

/// Which written keys belong to the planning shard.
pub enum Mine<'m> {
    /// All of them (the view holds only this shard's keys).
    All,
    /// Those `shard` owns under `map`.
    Owned(&'m RangeMap, ShardId),
}

impl Mine<'_> {
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Mine::All => true,
            Mine::Owned(map, shard) => map.owns(*shard, key),
        }
    }
}

/// Turns a decided command into actions and a reply skeleton, writing its
/// effects into the stacked overlay as it goes.
pub struct Planner<'v, 'o, 'b, 'm, V: View> {
    view: Stacked<'v, 'o, 'b, V>,
    mine: Mine<'m>,
    cmd: u32,
    /// Actions on this shard's keys, in order.
    pub actions: Vec<Action<'b>>,
    /// The reply skeleton; part 0 is the command's own.
    pub parts: Vec<Part>,
    /// Writes by the command on every shard (its sub-revision count).
    pub writes: u32,
    /// Writes on this shard's keys.
    pub mine_writes: u32,
    /// Record effects in the overlay (something later reads them).
    record: bool,
}

impl<'v, 'o, 'b, 'm, V: View> Planner<'v, 'o, 'b, 'm, V> {
    /// A planner for command `cmd` of the batch.
    pub fn new(view: Stacked<'v, 'o, 'b, V>, mine: Mine<'m>, cmd: u32) -> Self {
        Planner { view, mine, cmd, actions: Vec::new(), parts: Vec::new(), writes: 0, mine_writes: 0, record: true }
    }

    /// Skips recording plain puts' effects in the overlay: for commands
    /// after which nothing in the batch reads state.
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// The state the planner sees (base plus effects so far).
    pub fn view(&self) -> &Stacked<'v, 'o, 'b, V> {
        &self.view
    }

    fn next_sub(&mut self, key: &[u8]) -> Option<u32> {
        let sub = self.writes;
        self.writes += 1;
        if self.mine.contains(key) {
            self.mine_writes += 1;
            Some(sub)
        } else {
            None
        }
    }

    /// Plans a put whose checks passed.
    pub fn put(&mut self, slot: u32, p: &'b ArchivedPut) {
        let key = p.key.as_slice();
        if !self.record && !p.ignore_value && !p.ignore_lease {
            // Nothing later in the batch reads state: the put's effect on
            // the overlay would never be looked at.
            if let Some(sub) = self.next_sub(key) {
                let value = Cow::Borrowed(p.value.as_slice());
                self.actions.push(Action::Put {
                    slot,
                    key,
                    value,
                    lease: p.lease.to_native(),
                    sub,
                    prev_kv: p.prev_kv,
                });
            }
            return;
        }
        let cur = self.view.get(key);
        let value: Cow<'b, [u8]> = match (p.ignore_value, cur) {
            (true, Some(c)) => Cow::Owned(c.value.to_vec()),
            _ => Cow::Borrowed(p.value.as_slice()),
        };
        let lease = match (p.ignore_lease, cur) {
            (true, Some(c)) => c.lease,
            _ => p.lease.to_native(),
        };
        let (version, create) = match cur {
            Some(c) => (c.version + 1, c.create),
            None => (1, RevRef::Pending(self.cmd)),
        };
        let live = Live { value: value.clone(), lease, version, create, modr: RevRef::Pending(self.cmd) };
        self.view.top.insert(Cow::Borrowed(key), Slot::Live(live));
        if let Some(sub) = self.next_sub(key) {
            self.actions.push(Action::Put { slot, key, value, lease, sub, prev_kv: p.prev_kv });
        }
    }

    /// Plans the delete of one live key.
    pub fn delete_key(&mut self, slot: u32, key: Vec<u8>, prev_kv: bool) {
        self.view.top.insert(Cow::Owned(key.clone()), Slot::Deleted);
        if let Some(sub) = self.next_sub(&key) {
            self.actions.push(Action::Delete { slot, key, sub, prev_kv });
        }
    }

    /// The live keys carrying lease `id` now: those attached before the
    /// batch (`before`) and those the batch attached, less those it deleted
    /// or moved to another lease; in key order.
    pub fn attached_keys(&self, id: i64, before: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = before.into_iter().collect();
        for (k, slot) in &self.view.top.map {
            if let Slot::Live(l) = slot {
                if l.lease == id {
                    keys.insert(k.to_vec());
                }
            }
        }
        keys.into_iter().filter(|k| self.view.get(k).is_some_and(|l| l.lease == id)).collect()
    }

    /// Plans a delete of every live key in the range.
    pub fn delete_range(&mut self, slot: u32, d: &'b ArchivedDeleteRange) {
        let start = d.key.as_slice();
        let end = End::from_range_end(d.range_end.as_slice());
        let mut keys = Vec::new();
        self.view.for_each_live(start, end, &mut |k, _| {
            keys.push(k.to_vec());
            ControlFlow::Continue(())
        });
        for key in keys {
            self.view.top.insert(Cow::Owned(key.clone()), Slot::Deleted);
            if let Some(sub) = self.next_sub(&key) {
                self.actions.push(Action::Delete { slot, key, sub, prev_kv: d.prev_kv });
            }
        }
    }

    /// Plans a read. Every shard of the command performs it on its own
    /// store (which holds only its keys), so each fills in its part and the
    /// read's revision.
    pub fn range(&mut self, slot: u32, r: &'b ArchivedRange) {
        self.actions.push(Action::Range { slot, req: r, after_write: self.writes > 0 });
    }

    /// Plans the ops of a taken branch; returns the index of their first
    /// reply part.
    pub fn ops(&mut self, ops: &'b [ArchivedOp], path: &Path) -> u32 {
        let first = self.parts.len() as u32;
        for op in ops {
            self.parts.push(match op {
                ArchivedOp::Range(r) => {
                    Part::Range { part: RangePart::default(), rev: 0, shape: Shape::of_archived(r) }
                }
                ArchivedOp::Put(_) => Part::Put { prev_kv: None },
                ArchivedOp::DeleteRange(_) => Part::Delete { deleted: 0, prev_kvs: Vec::new() },
                ArchivedOp::Txn(_) => Part::Txn { succeeded: false, first: 0, len: 0 },
            });
        }
        let mut nested = path.nested.iter();
        for (i, op) in ops.iter().enumerate() {
            let slot = first + i as u32;
            match op {
                ArchivedOp::Range(r) => self.range(slot, r),
                ArchivedOp::Put(p) => self.put(slot, p),
                ArchivedOp::DeleteRange(d) => self.delete_range(slot, d),
                ArchivedOp::Txn(t) => {
                    let Some(p) = nested.next() else { break };
                    let branch = if p.succeeded { &t.success } else { &t.failure };
                    let f = self.ops(branch, p);
                    self.parts[slot as usize] =
                        Part::Txn { succeeded: p.succeeded, first: f, len: branch.len() as u32 };
                }
            }
        }
        first
    }

    /// Plans a whole Txn whose checks passed: part 0 is its reply.
    pub fn txn(&mut self, t: &'b ArchivedTxn, path: &Path) {
        self.parts.push(Part::Txn { succeeded: path.succeeded, first: 0, len: 0 });
        let branch = if path.succeeded { &t.success } else { &t.failure };
        let first = self.ops(branch, path);
        self.parts[0] = Part::Txn { succeeded: path.succeeded, first, len: branch.len() as u32 };
    }
}

/// Moves a barrier command's effects on `shard`'s keys from its scratch
/// overlay into the batch's overlay.
pub fn keep_owned<'b>(scratch: Overlay<'b>, map: &RangeMap, shard: ShardId, batch: &mut Overlay<'b>) {
    scratch.drain_owned_into(map, shard, batch);
}

/// The key ranges whose state decides a Txn: its compares, the keys it
/// puts (for `ignore_value`, versions and create revisions) and the ranges
/// it deletes, in every branch at every depth.
pub fn txn_footprint<'b>(t: &'b ArchivedTxn, out: &mut Vec<(&'b [u8], End<'b>)>) {
    for c in t.compare.iter() {
        out.push((c.key.as_slice(), End::from_range_end(c.range_end.as_slice())));
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        match op {
            ArchivedOp::Range(_) => {}
            ArchivedOp::Put(p) => out.push((p.key.as_slice(), End::Single)),
            ArchivedOp::DeleteRange(d) => out.push((d.key.as_slice(), End::from_range_end(d.range_end.as_slice()))),
            ArchivedOp::Txn(inner) => txn_footprint(inner, out),
        }
    }
}

/// Collects the live state of the given ranges from a view.
pub fn collect_state<V: View>(v: &V, ranges: &[(&[u8], End<'_>)]) -> Vec<(Vec<u8>, Live<'static>)> {
    let mut out: BTreeMap<Vec<u8>, Live<'static>> = BTreeMap::new();
    for (start, end) in ranges {
        v.for_each_live(start, *end, &mut |k, l| {
            out.entry(k.to_vec()).or_insert_with(|| Live {
                value: Cow::Owned(l.value.to_vec()),
                lease: l.lease,
                version: l.version,
                create: l.create,
                modr: l.modr,
            });
            ControlFlow::Continue(())
        });
    }
    out.into_iter().collect()
}
