//! Deterministic parallel apply of one committed batch on one shard.
//!
//! etcd gives a revision to each request that modifies something, so a
//! command's revision depends on whether the commands before it, on every
//! shard, modified anything. A [`BatchRun`] resolves that in three phases
//! (DESIGN §4):
//!
//! 1. [`BatchRun::plan_segment`]: the shard plans its own commands in order
//!    against its store plus the batch's earlier effects, counting the
//!    writes each makes on its keys.
//! 2. [`BatchRun::absorb`]: with every shard's counts for the segment, a
//!    prefix sum gives each command its exact revision.
//! 3. [`BatchRun::apply`]: the shard replays its actions on its store with
//!    those revisions and fills in its parts of the replies.
//!
//! Some commands cannot be planned by one shard alone. A *barrier* ends a
//! segment: a Txn whose keys span shards, a Txn with a compare on a mod or
//! create revision above the batch's base revision (its outcome could depend
//! on a revision not known yet), a Txn with a read at an explicit revision
//! (checked against the exact current revision), and every Compact. At a
//! barrier every shard sends, with its counts, the state of the barrier
//! command's keys in its range; every shard then plans the barrier command
//! against the same full view and so reaches the same outcome. Barriers are
//! decided from the commands and the batch's base revision alone, so every
//! shard cuts the same segments. With one shard there are no barriers and no
//! exchanges.
//!
//! Sans-IO: the caller moves [`Exchange`]s between shards.

use super::command::{ArchivedBatch, ArchivedCommand, ArchivedCompareValue, ArchivedOp, ArchivedTxn, Origin};
use super::eval::{
    check_ops, check_put, collect_state, keep_owned, txn_footprint, txn_path, Action, ApplyError, FullView, Live, Mine,
    Overlay, Part, Planner, PutCheck, RevTable, Revs, Stacked, StoreView,
};
use super::lease::{LeaseChange, LeaseState};
use super::range::{read_part, Shape};
use super::rangemap::RangeMap;
use crate::mvcc::{End, Event, EventKind, KeyValue, MvccStore, Rev};
use crate::types::{RaftIndex, ShardId};
use std::collections::HashMap;

/// What one shard tells every other shard at the end of a segment.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The batch's log index.
    pub index: RaftIndex,
    /// Segment number within the batch, from 0.
    pub segment: u32,
    /// The sender.
    pub from: ShardId,
    /// `(command, writes)` for the segment's commands that wrote on the
    /// sender's keys.
    pub counts: Vec<(u32, u32)>,
    /// The state of the barrier command's keys in the sender's range.
    pub view: Vec<(Vec<u8>, Live<'static>)>,
}

/// One shard's part of a command's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Who waits for it.
    pub origin: Origin,
    /// The shard that sends it.
    pub shard: ShardId,
    /// How many shards send a part for this command.
    pub parts_total: u16,
    /// The store's revision after the command.
    pub revision: i64,
    /// The reply skeleton filled with this shard's data, or the error.
    pub result: Result<Vec<Part>, ApplyError>,
    /// A physical compaction: send the reply only when the store has
    /// finished compacting.
    pub physical: bool,
}

/// What a batch did to a shard.
#[derive(Debug, Default)]
pub struct Applied {
    /// Replies for commands whose origin the caller asked for.
    pub replies: Vec<Reply>,
    /// The store's revision after the batch.
    pub rev: i64,
    /// The compacted revision after the batch.
    pub compact_rev: i64,
    /// The changes to this shard's keys, in revision order, if asked for.
    pub events: Vec<Event>,
    /// Leases granted and revoked, in order.
    pub lease_changes: Vec<LeaseChange>,
    /// Member attributes published, in order (shard 0 only).
    pub published: Vec<crate::apply::command::Publish>,
}

/// A small set of shards.
#[derive(Clone, Debug, Default)]
struct ShardSet(Vec<u64>);

impl ShardSet {
    fn add_span(&mut self, (a, b): (ShardId, ShardId)) {
        for s in a.idx()..=b.idx() {
            let w = s / 64;
            if self.0.len() <= w {
                self.0.resize(w + 1, 0);
            }
            self.0[w] |= 1 << (s % 64);
        }
    }

    fn contains(&self, s: ShardId) -> bool {
        self.0.get(s.idx() / 64).is_some_and(|w| w & (1 << (s.idx() % 64)) != 0)
    }

    fn len(&self) -> u16 {
        self.0.iter().map(|w| w.count_ones() as u16).sum()
    }
}

/// Static facts about one command of the batch.
#[derive(Debug)]
struct CmdInfo {
    involves_me: bool,
    replies: bool,
    parts_total: u16,
    barrier: bool,
}

fn txn_shards(t: &ArchivedTxn, map: &RangeMap, set: &mut ShardSet) {
    for c in t.compare.iter() {
        if let Some(span) = map.overlapping(c.key.as_slice(), End::from_range_end(c.range_end.as_slice())) {
            set.add_span(span);
        }
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        let span = match op {
            ArchivedOp::Range(r) => map.overlapping(r.key.as_slice(), End::from_range_end(r.range_end.as_slice())),
            ArchivedOp::Put(p) => map.overlapping(p.key.as_slice(), End::Single),
            ArchivedOp::DeleteRange(d) => {
                map.overlapping(d.key.as_slice(), End::from_range_end(d.range_end.as_slice()))
            }
            ArchivedOp::Txn(inner) => {
                txn_shards(inner, map, set);
                None
            }
        };
        if let Some(span) = span {
            set.add_span(span);
        }
    }
}

/// Whether a Txn's outcome may depend on state a single shard cannot know
/// before the exchange: a revision compare above `base`, or a revisioned read.
fn txn_needs_exact_revs(t: &ArchivedTxn, base: i64) -> bool {
    let compares = t.compare.iter().any(|c| match &c.value {
        ArchivedCompareValue::CreateRevision(x) | ArchivedCompareValue::ModRevision(x) => x.to_native() > base,
        _ => false,
    });
    compares
        || t.success.iter().chain(t.failure.iter()).any(|op| match op {
            ArchivedOp::Range(r) => r.revision.to_native() > 0,
            ArchivedOp::Txn(inner) => txn_needs_exact_revs(inner, base),
            _ => false,
        })
}

/// Whether planning `cmd` reads the state earlier commands left.
fn reads_state(cmd: &ArchivedCommand) -> bool {
    match cmd {
        ArchivedCommand::Put(p) => p.ignore_value || p.ignore_lease,
        ArchivedCommand::DeleteRange(_) | ArchivedCommand::Txn(_) | ArchivedCommand::LeaseRevoke(_) => true,
        ArchivedCommand::Compact(_) | ArchivedCommand::LeaseGrant(_) | ArchivedCommand::Publish(_) => false,
    }
}

fn cmd_info(cmd: &ArchivedCommand, map: &RangeMap, me: ShardId, base: i64) -> CmdInfo {
    let n = map.shards();
    let mut set = ShardSet::default();
    let mut barrier = false;
    match cmd {
        ArchivedCommand::Put(p) => set.add_span((map.owner(p.key.as_slice()), map.owner(p.key.as_slice()))),
        ArchivedCommand::DeleteRange(d) => {
            if let Some(span) = map.overlapping(d.key.as_slice(), End::from_range_end(d.range_end.as_slice())) {
                set.add_span(span);
            }
        }
        ArchivedCommand::Txn(t) => {
            txn_shards(t, map, &mut set);
            barrier = n > 1 && (set.len() > 1 || txn_needs_exact_revs(t, base));
        }
        ArchivedCommand::Compact(_) => {
            set.add_span((ShardId(0), ShardId((n - 1) as u16)));
            barrier = n > 1;
        }
        ArchivedCommand::LeaseGrant(_) | ArchivedCommand::LeaseRevoke(_) => {
            // Every shard keeps the lease table and a revoke deletes keys
            // anywhere; shard 0 alone answers.
            return CmdInfo { involves_me: true, replies: me == ShardId(0), parts_total: 1, barrier: false };
        }
        ArchivedCommand::Publish(_) => {
            // Shard 0 keeps the member table and answers.
            let zero = me == ShardId(0);
            return CmdInfo { involves_me: zero, replies: zero, parts_total: 1, barrier: false };
        }
    }
    if set.len() == 0 {
        // A command that touches no key (an empty Txn, a delete of an empty
        // range) is answered by shard 0.
        set.add_span((ShardId(0), ShardId(0)));
    }
    CmdInfo { involves_me: set.contains(me), replies: set.contains(me), parts_total: set.len(), barrier }
}

/// A shard's plan for one command.
#[derive(Debug)]
struct Plan<'b> {
    result: Result<(), ApplyError>,
    actions: Vec<Action<'b>>,
    parts: Vec<Part>,
    /// Sub-revisions are numbered across all shards already (barrier
    /// commands); otherwise the shards before this one wrote first.
    global_subs: bool,
}

impl Plan<'_> {
    fn failed(e: ApplyError) -> Self {
        Plan { result: Err(e), actions: Vec::new(), parts: Vec::new(), global_subs: true }
    }
}

/// The apply of one batch on one shard.
pub struct BatchRun<'b, 'm> {
    batch: &'b ArchivedBatch,
    index: RaftIndex,
    map: &'m RangeMap,
    me: ShardId,
    base_rev: i64,
    compact_rev: i64,
    /// Leases granted (true) or revoked (false) earlier in the batch.
    lease_overlay: HashMap<i64, bool>,
    info: Vec<CmdInfo>,
    plans: Vec<Option<Plan<'b>>>,
    overlay: Overlay<'b>,
    totals: Vec<u32>,
    offsets: Vec<u32>,
    revs: RevTable,
    /// First command not yet planned.
    next: usize,
    /// Revision after command `next - 1` once absorbed.
    cur_rev: i64,
    barrier: Option<usize>,
    segment: u32,
    /// The last command that reads state when planned (a Txn, a delete, a
    /// put that keeps its value or lease): effects after it need no overlay.
    last_reader: Option<usize>,
}

impl<'b, 'm> BatchRun<'b, 'm> {
    /// Starts applying `batch` (log index `index`) on shard `me`, whose
    /// store is at global revision `base_rev` with `compact_rev` compacted.
    pub fn new(
        batch: &'b ArchivedBatch,
        index: RaftIndex,
        map: &'m RangeMap,
        me: ShardId,
        base_rev: i64,
        compact_rev: i64,
    ) -> Self {
        let n = batch.items.len();
        let info = batch.items.iter().map(|it| cmd_info(&it.cmd, map, me, base_rev)).collect();
        BatchRun {
            batch,
            index,
            map,
            me,
            base_rev,
            compact_rev,
            lease_overlay: HashMap::new(),
            info,
            plans: (0..n).map(|_| None).collect(),
            overlay: Overlay::default(),
            totals: vec![0; n],
            offsets: vec![0; n],
            revs: RevTable::new(n),
            next: 0,
            cur_rev: base_rev,
            barrier: None,
            segment: 0,
            last_reader: batch.items.iter().rposition(|it| reads_state(&it.cmd)),
        }
    }

    /// Whether every command has been planned and given its revision.
    pub fn done(&self) -> bool {
        self.next >= self.batch.items.len() && self.barrier.is_none()
    }

    /// Plans the commands up to the next barrier (phase 1) and returns what
    /// to tell the other shards.
    pub fn plan_segment<S: MvccStore + ?Sized>(&mut self, store: &S, leases: &dyn LeaseState) -> Exchange {
        let n = self.batch.items.len();
        let single = self.map.shards() == 1;
        let mut counts = Vec::new();
        let mut c = self.next;
        while c < n && !self.info[c].barrier {
            if self.info[c].involves_me {
                let (plan, writes) = self.plan_local(store, leases, c, single);
                if writes > 0 {
                    counts.push((c as u32, writes));
                }
                if single {
                    // One shard knows every count: revisions are exact now.
                    self.totals[c] = writes;
                    if writes > 0 {
                        self.cur_rev += 1;
                    }
                    self.revs.set(c, self.cur_rev);
                }
                self.plans[c] = Some(plan);
            }
            c += 1;
        }
        let view = if c < n {
            self.barrier = Some(c);
            self.barrier_state(store, c)
        } else {
            Vec::new()
        };
        if single {
            self.next = c;
        }
        Exchange { index: self.index, segment: self.segment, from: self.me, counts, view }
    }

    /// Takes every shard's exchange for the current segment, this shard's
    /// own included (phase 2), and plans the barrier command that ends it.
    pub fn absorb(&mut self, all: Vec<Exchange>, leases: &dyn LeaseState) {
        let single = self.map.shards() == 1;
        let mut full = FullView::default();
        let end = self.barrier.unwrap_or(self.batch.items.len());
        if !single {
            for ex in &all {
                debug_assert_eq!((ex.index, ex.segment), (self.index, self.segment));
                for &(c, w) in &ex.counts {
                    let c = c as usize;
                    self.totals[c] += w;
                    if ex.from < self.me {
                        self.offsets[c] += w;
                    }
                }
            }
            for c in self.next..end {
                if self.totals[c] > 0 {
                    self.cur_rev += 1;
                }
                self.revs.set(c, self.cur_rev);
            }
        }
        self.next = end;
        if let Some(b) = self.barrier.take() {
            for ex in all {
                full.extend(ex.view, &self.revs);
            }
            self.plan_barrier(&full, leases, b);
            if self.totals[b] > 0 {
                self.cur_rev += 1;
            }
            self.revs.set(b, self.cur_rev);
            self.next = b + 1;
            self.segment += 1;
        }
    }

    fn plan_local<S: MvccStore + ?Sized>(
        &mut self,
        store: &S,
        leases: &dyn LeaseState,
        c: usize,
        single: bool,
    ) -> (Plan<'b>, u32) {
        let base = StoreView(store);
        let item = &self.batch.items[c];
        let lease_overlay = &mut self.lease_overlay;
        let revs = single.then_some(Revs { current: self.cur_rev, compacted: self.compact_rev });
        let mut planner = Planner::new(Stacked::new(&base, &mut self.overlay), Mine::All, c as u32);
        if self.last_reader.is_none_or(|r| c > r) {
            planner = planner.without_recording();
        }
        // Leases granted or revoked earlier in the batch count.
        let lease_exists = |id: i64| lease_overlay.get(&id).copied().unwrap_or_else(|| leases.exists(id));
        let result = match &item.cmd {
            ArchivedCommand::Put(p) => check_put(planner.view(), p, PutCheck::Plain, &lease_exists).map(|()| {
                planner.parts.push(Part::Put { prev_kv: None });
                planner.put(0, p);
            }),
            ArchivedCommand::DeleteRange(d) => {
                planner.parts.push(Part::Delete { deleted: 0, prev_kvs: Vec::new() });
                planner.delete_range(0, d);
                Ok(())
            }
            ArchivedCommand::Txn(t) => {
                let path = txn_path(planner.view(), t, &self.revs);
                let branch = if path.succeeded { &t.success } else { &t.failure };
                check_ops(planner.view(), branch, &path, revs, &lease_exists).map(|()| planner.txn(t, &path))
            }
            ArchivedCommand::Compact(cp) => {
                // Only reached with one shard: every other shard count makes
                // Compact a barrier.
                let r = cp.revision.to_native();
                let checked = check_compact(r, self.cur_rev, self.compact_rev);
                if checked.is_ok() {
                    self.compact_rev = r;
                    planner.parts.push(Part::Compact);
                    planner.actions.push(Action::Compact { revision: r });
                }
                checked
            }
            ArchivedCommand::LeaseGrant(g) => {
                let id = g.id.to_native();
                if lease_exists(id) {
                    Err(ApplyError::LeaseExists)
                } else {
                    lease_overlay.insert(id, true);
                    planner.parts.push(Part::Lease);
                    planner.actions.push(Action::LeaseGrant { id, ttl: g.ttl.to_native() });
                    Ok(())
                }
            }
            ArchivedCommand::Publish(p) => {
                planner.parts.push(Part::Published);
                planner.actions.push(Action::Publish {
                    member: p.member.to_native(),
                    name: p.name.as_str(),
                    client_urls: p.client_urls.iter().map(|u| u.as_str()).collect(),
                });
                Ok(())
            }
            ArchivedCommand::LeaseRevoke(r) => {
                let id = r.id.to_native();
                if !lease_exists(id) {
                    Err(ApplyError::LeaseNotFound)
                } else {
                    lease_overlay.insert(id, false);
                    planner.parts.push(Part::Lease);
                    let attached = planner.attached_keys(id, leases.attached(id));
                    for key in attached {
                        planner.delete_key(0, key, false);
                    }
                    planner.actions.push(Action::LeaseRevoke { id });
                    Ok(())
                }
            }
        };
        let writes = if result.is_ok() { planner.mine_writes } else { 0 };
        let plan = match result {
            Ok(()) => Plan { result: Ok(()), actions: planner.actions, parts: planner.parts, global_subs: false },
            Err(e) => Plan::failed(e),
        };
        (plan, writes)
    }

    fn barrier_state<S: MvccStore + ?Sized>(&mut self, store: &S, b: usize) -> Vec<(Vec<u8>, Live<'static>)> {
        let ArchivedCommand::Txn(t) = &self.batch.items[b].cmd else { return Vec::new() };
        let mut ranges = Vec::new();
        txn_footprint(t, &mut ranges);
        let base = StoreView(store);
        collect_state(&Stacked::new(&base, &mut self.overlay), &ranges)
    }

    fn plan_barrier(&mut self, full: &FullView, leases: &dyn LeaseState, b: usize) {
        let item = &self.batch.items[b];
        let plan = match &item.cmd {
            ArchivedCommand::Compact(cp) => {
                let r = cp.revision.to_native();
                match check_compact(r, self.cur_rev, self.compact_rev) {
                    Ok(()) => {
                        self.compact_rev = r;
                        Plan {
                            result: Ok(()),
                            actions: vec![Action::Compact { revision: r }],
                            parts: vec![Part::Compact],
                            global_subs: true,
                        }
                    }
                    Err(e) => Plan::failed(e),
                }
            }
            ArchivedCommand::Txn(t) => self.plan_barrier_txn(full, leases, t, b),
            // Puts and deletes are never barriers.
            _ => return,
        };
        if self.info[b].involves_me {
            self.plans[b] = Some(plan);
        }
    }

    fn plan_barrier_txn(&mut self, full: &FullView, leases: &dyn LeaseState, t: &'b ArchivedTxn, b: usize) -> Plan<'b> {
        let revs = Revs { current: self.cur_rev, compacted: self.compact_rev };
        let path = txn_path(full, t, &self.revs);
        let branch = if path.succeeded { &t.success } else { &t.failure };
        let overlay = &self.lease_overlay;
        let lease_exists = |id: i64| overlay.get(&id).copied().unwrap_or_else(|| leases.exists(id));
        if let Err(e) = check_ops(full, branch, &path, Some(revs), &lease_exists) {
            return Plan::failed(e);
        }
        let mut scratch = Overlay::default();
        let mut planner = Planner::new(Stacked::new(full, &mut scratch), Mine::Owned(self.map, self.me), b as u32);
        planner.txn(t, &path);
        self.totals[b] = planner.writes;
        let (actions, parts) = (planner.actions, planner.parts);
        keep_owned(scratch, self.map, self.me, &mut self.overlay);
        Plan { result: Ok(()), actions, parts, global_subs: true }
    }

    /// Applies the planned actions with their exact revisions (phase 3) and
    /// returns the replies for commands from `member` at boot `boot`.
    pub fn apply<S: MvccStore + ?Sized>(
        mut self,
        store: &mut S,
        leases: &mut dyn LeaseState,
        origin: (u64, u32),
        want_events: bool,
    ) -> Applied {
        debug_assert!(self.done(), "apply before every segment was absorbed");
        let (member, boot) = origin;
        let mut out = Effects { events: want_events.then(Vec::new), lease_changes: Vec::new(), published: Vec::new() };
        let mut replies = Vec::new();
        let mut rev_before = self.base_rev;
        for (c, item) in self.batch.items.iter().enumerate() {
            let rev_after = self.revs.get(c).unwrap_or(rev_before);
            if let Some(plan) = self.plans[c].take() {
                let offset = if plan.global_subs { 0 } else { self.offsets[c] };
                let physical = plan.result.is_ok() && matches!(&item.cmd, ArchivedCommand::Compact(cp) if cp.physical);
                let result = plan.result.map(|()| {
                    let mut parts = plan.parts;
                    for a in plan.actions {
                        execute(store, leases, a, &mut parts, (rev_before, rev_after, offset), &mut out);
                    }
                    parts
                });
                let o = &item.origin;
                let origin = Origin {
                    member: o.member.to_native(),
                    reactor: o.reactor.to_native(),
                    boot: o.boot.to_native(),
                    seq: o.seq.to_native(),
                };
                if self.info[c].replies && origin.member == member && origin.boot == boot {
                    replies.push(Reply {
                        origin,
                        shard: self.me,
                        parts_total: self.info[c].parts_total,
                        revision: rev_after,
                        result,
                        physical,
                    });
                }
            }
            rev_before = rev_after;
        }
        Applied {
            replies,
            rev: self.cur_rev,
            compact_rev: self.compact_rev,
            events: out.events.unwrap_or_default(),
            lease_changes: out.lease_changes,
            published: out.published,
        }
    }
}

fn check_compact(r: i64, current: i64, compacted: i64) -> Result<(), ApplyError> {
    if r <= compacted {
        Err(ApplyError::Compacted)
    } else if r > current {
        Err(ApplyError::FutureRev)
    } else {
        Ok(())
    }
}

/// What phase 3 produces besides replies.
struct Effects {
    events: Option<Vec<Event>>,
    lease_changes: Vec<LeaseChange>,
    published: Vec<crate::apply::command::Publish>,
}

/// The key-value a put writes, derived from the version it replaces as
/// the store derives it.
fn written(key: &[u8], value: &[u8], lease: i64, main: i64, prev: Option<&KeyValue>) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: prev.map_or(main, |p| p.create_revision),
        mod_revision: main,
        version: prev.map_or(1, |p| p.version + 1),
        lease,
    }
}

fn execute<S: MvccStore + ?Sized>(
    store: &mut S,
    leases: &mut dyn LeaseState,
    action: Action<'_>,
    parts: &mut [Part],
    (rev_before, rev_after, offset): (i64, i64, u32),
    out: &mut Effects,
) {
    match action {
        Action::Put { slot, key, value, lease, sub, prev_kv } => {
            let rev = Rev { main: rev_after, sub: (sub + offset) as i64 };
            let prev = store.put(key, &value, lease, rev);
            match &prev {
                Some(p) if p.lease != 0 && p.lease != lease => leases.detach(p.lease, key),
                _ => {}
            }
            if lease != 0 {
                leases.attach(lease, key);
            }
            if let Some(events) = &mut out.events {
                let kv = written(key, &value, lease, rev_after, prev.as_ref());
                events.push(Event { rev, kind: EventKind::Put, kv, prev: prev.clone() });
            }
            if prev_kv {
                parts[slot as usize] = Part::Put { prev_kv: prev };
            }
        }
        Action::Delete { slot, key, sub, prev_kv } => {
            let rev = Rev { main: rev_after, sub: (sub + offset) as i64 };
            let prev = store.delete(&key, rev);
            debug_assert!(prev.is_some(), "planned delete of a key that is not live");
            let Some(prev) = prev else { return };
            if prev.lease != 0 {
                leases.detach(prev.lease, &key);
            }
            if let Some(events) = &mut out.events {
                let kv = KeyValue { key: key.clone(), mod_revision: rev_after, ..KeyValue::default() };
                events.push(Event { rev, kind: EventKind::Delete, kv, prev: Some(prev.clone()) });
            }
            if let Part::Delete { deleted, prev_kvs } = &mut parts[slot as usize] {
                *deleted += 1;
                if prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        Action::Range { slot, req, after_write } => {
            let rev = req.revision.to_native();
            let at = if rev > 0 { rev } else { i64::MAX };
            let shape = Shape::of_archived(req);
            let part = read_part(store, req.key.as_slice(), End::from_range_end(req.range_end.as_slice()), at, &shape);
            // A read inside a Txn sees the Txn's earlier writes; its header
            // revision is the Txn's own once it has written, as in etcd.
            let current = if after_write { rev_after } else { rev_before };
            parts[slot as usize] = Part::Range { part, rev: current, shape };
        }
        Action::Compact { revision } => store.begin_compact(revision),
        Action::LeaseGrant { id, ttl } => {
            leases.grant(id, ttl);
            out.lease_changes.push(LeaseChange::Granted { id, ttl });
        }
        Action::LeaseRevoke { id } => {
            leases.revoke(id);
            out.lease_changes.push(LeaseChange::Revoked { id });
        }
        Action::Publish { member, name, client_urls } => {
            out.published.push(crate::apply::command::Publish {
                member,
                name: name.to_owned(),
                client_urls: client_urls.into_iter().map(str::to_owned).collect(),
            });
        }
    }
}
