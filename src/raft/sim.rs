//! A deterministic cluster simulator (TigerBeetle's VOPR, in miniature).
//!
//! N `RaftCore`s (3 or 5) run in one thread on virtual time (1 ms steps,
//! one tick per ~10 ms, each member's clock a little off), everything drawn
//! from one seed:
//!
//! * network: per-message loss, duplication, delay (so reordering),
//!   partitions (one member cut off, or a minority/majority split) that
//!   heal; snapshots are reported delivered or failed to their sender;
//! * disk: a Ready's write completes after a virtual delay, in order; a
//!   crash loses every write not completed, except that a prefix of them
//!   (and part of the next: entries without their hard state) may have
//!   reached the disk anyway; the member restarts from what is durable;
//! * shards: each member applies committed batches with corekv's apply
//!   engine (`apply::engine::BatchRun`, one shard on a `MemStore`), takes
//!   checkpoints and compacts its log to them; a member that lags behind a
//!   compaction gets a snapshot (the checkpoint, copied);
//! * clients: random puts, deletes and compare-and-put Txns proposed to the
//!   leader, ReadIndex reads on any member, leader transfers.
//!
//! Checked all along: at most one leader per term; every member hands out
//! the same entry (term and payload) at the same index; every member's
//! store hashes the same at the same applied index; a ReadIndex is never
//! below an index acknowledged before the read started. At the end the
//! faults stop, every member restarts and reconnects, and every member must
//! apply up to every acknowledged write (none lost) and agree.
//!
//! A failure prints the seed; `RAFT_SIM_SEED=n [RAFT_SIM_NODES=5] cargo
//! test --lib raft::sim::replay` runs it again, exactly. `RAFT_SIM_SEEDS`
//! (count), `RAFT_SIM_FIRST` (first seed) and `RAFT_SIM_TICKS` widen the
//! sweep; `RAFT_SIM_LOG=1` sends raft-rs's log lines to stderr. A third sweep starts with learners and promotes and demotes
//! members (single changes and joint configurations) under the same faults.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::*;
use crate::apply::command::{
    access_batch, aligned_copy, encode_batch, Batch, Command, Compare, CompareResult, CompareValue, DeleteRange, Item,
    Op, Origin, Put, Txn,
};
use crate::apply::engine::BatchRun;
use crate::apply::RangeMap;
use crate::lease::LeaseTable;
use crate::mvcc::{End, KeyHistory, MemStore, MvccStore};
use crate::types::ShardId;

/// Virtual milliseconds per tick (the heartbeat interval).
const TICK_MS: u64 = 10;
/// Distinct keys the clients write.
const KEYS: u64 = 24;

/// One run's knobs, drawn from the seed.
#[derive(Clone, Debug)]
struct Faults {
    drop_per_mille: u64,
    dup_per_mille: u64,
    delay_max_ms: u64,
    disk_delay_max_ms: u64,
    crash_per_mille_per_tick: u64,
    partition_per_mille_per_tick: u64,
    propose_per_mille_per_ms: u64,
    compact_gap: u64,
}

impl Faults {
    fn draw(rng: &mut XorShift) -> Faults {
        Faults {
            drop_per_mille: rng.below(100),
            dup_per_mille: rng.below(50),
            delay_max_ms: 1 + rng.below(30),
            disk_delay_max_ms: 1 + rng.below(12),
            crash_per_mille_per_tick: rng.below(6),
            partition_per_mille_per_tick: rng.below(8),
            propose_per_mille_per_ms: 50 + rng.below(300),
            compact_gap: 20 + rng.below(200),
        }
    }
}

struct InFlight {
    at: u64,
    seq: u64,
    from: usize,
    to: usize,
    class: MessageClass,
    bytes: Vec<u8>,
}

struct Write {
    done_at: u64,
    persist: Persist,
}

/// What survives a crash: the WAL (with its snapshot marker).
#[derive(Clone, Default)]
struct Durable {
    hard_state: wal::HardState,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<wal::Entry>,
}

impl Durable {
    fn write(&mut self, p: &Persist, entries_only: Option<usize>) {
        if let Some(s) = &p.snapshot {
            self.entries.clear();
            self.snapshot = Some(s.clone());
            self.hard_state.commit = self.hard_state.commit.max(s.index);
        }
        let n = entries_only.unwrap_or(p.entries.len());
        for e in &p.entries[..n] {
            self.entries.retain(|x| x.index < e.index);
            self.entries.push(e.as_wal().to_entry());
        }
        if entries_only.is_none() {
            if let Some(hs) = p.hard_state {
                self.hard_state = hs;
            }
        }
    }

    fn compact(&mut self, meta: SnapshotMeta) {
        self.entries.retain(|e| e.index > meta.index);
        self.snapshot = Some(meta);
    }
}

/// A shard's state: the store and the revision counters.
struct Shard {
    store: MemStore,
    leases: LeaseTable,
    rev: i64,
    compact_rev: i64,
    applied: u64,
}

/// A durable shard checkpoint.
#[derive(Clone)]
struct Checkpoint {
    index: u64,
    histories: Vec<KeyHistory>,
    rev: i64,
    compact_rev: i64,
    hash: u64,
}

impl Shard {
    fn empty() -> Shard {
        Shard { store: MemStore::new(), leases: LeaseTable::default(), rev: 1, compact_rev: -1, applied: 0 }
    }

    fn from_checkpoint(c: &Checkpoint) -> Shard {
        let mut store = MemStore::new();
        store.insert_histories(c.histories.clone());
        Shard { store, leases: LeaseTable::default(), rev: c.rev, compact_rev: c.compact_rev, applied: c.index }
    }

    fn checkpoint(&mut self) -> Checkpoint {
        let histories = self.store.take_range(b"", End::Unbounded);
        self.store.insert_histories(histories.clone());
        Checkpoint { index: self.applied, histories, rev: self.rev, compact_rev: self.compact_rev, hash: self.hash() }
    }

    /// FNV-1a over the revision and every live key-value.
    fn hash(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        };
        eat(&self.rev.to_le_bytes());
        self.store.scan(b"", End::Unbounded, self.rev, &mut |kv| {
            eat(kv.key);
            eat(kv.value);
            eat(&kv.create_revision.to_le_bytes());
            eat(&kv.mod_revision.to_le_bytes());
            eat(&kv.version.to_le_bytes());
            std::ops::ControlFlow::Continue(())
        });
        h
    }

    /// Applies one batch; returns the request numbers answered for
    /// `(member, boot)`.
    fn apply(&mut self, index: u64, data: &[u8], member: u64, boot: u32) -> Vec<u64> {
        let bytes = aligned_copy(data);
        let batch = access_batch(&bytes).expect("the simulator proposes only valid batches");
        let map = RangeMap::initial(1);
        let mut run = BatchRun::new(batch, RaftIndex(index), &map, ShardId(0), self.rev, self.compact_rev);
        loop {
            let ex = run.plan_segment(&self.store, &self.leases);
            run.absorb(vec![ex], &self.leases);
            if run.done() {
                break;
            }
        }
        let applied = run.apply(&mut self.store, &mut self.leases, (member, boot), false);
        self.rev = applied.rev;
        self.compact_rev = applied.compact_rev;
        applied.replies.iter().map(|r| r.origin.seq).collect()
    }
}

struct Node {
    id: MemberId,
    core: Option<RaftCore>,
    boot: u32,
    durable: Durable,
    writes: VecDeque<Write>,
    shard: Shard,
    checkpoint: Option<Checkpoint>,
    tick_ms: u64,
    next_tick: u64,
    restart_at: u64,
    /// ReadIndex requests: context → index acknowledged before it started.
    reads: BTreeMap<Vec<u8>, u64>,
    /// Read states waiting for the shard to apply up to them.
    ready_reads: Vec<(u64, u64)>,
}

/// The checker's memory of what happened.
#[derive(Default)]
struct Oracle {
    /// index → (term, payload digest) of every entry handed out anywhere.
    log: BTreeMap<u64, (u64, u64)>,
    /// index → store hash after applying it, anywhere.
    states: BTreeMap<u64, u64>,
    /// term → leader.
    leaders: BTreeMap<u64, MemberId>,
    /// request number → index of the entry that answered it.
    acked: BTreeMap<u64, u64>,
    /// Highest acknowledged index.
    acked_max: u64,
    /// Every checkpoint ever taken, by index (identical on every member).
    checkpoints: BTreeMap<u64, Checkpoint>,
    reads_checked: u64,
    /// A digest of every message sent and when: equal runs, equal traces.
    trace: u64,
    snapshots_installed: u64,
    /// Committed and applied membership changes (after the bootstrap).
    conf_changes: u64,
    /// Members removed for good (IDs are never reused, as in etcd).
    removed: Vec<MemberId>,
    crashes: u64,
    elections: u64,
}

struct Sim {
    rng: XorShift,
    faults: Faults,
    now: u64,
    nodes: Vec<Node>,
    net: Vec<InFlight>,
    msg_seq: u64,
    /// Which side of a partition each member is on (all 0: healed).
    side: Vec<u8>,
    heal_at: u64,
    next_request: u64,
    oracle: Oracle,
    quiet: bool,
    /// Initial voters; the next member starts as a learner, any others
    /// join later (etcd's `--initial-cluster-state existing`).
    voters: usize,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn digest(p: &Payload) -> u64 {
    let h = 0xcbf2_9ce4_8422_2325u64;
    match p {
        Payload::Empty => fnv(h, b"empty"),
        Payload::Data(d) => fnv(h, d),
        Payload::ConfChange(o) => fnv(h, format!("{o:?}").as_bytes()),
    }
}

impl Sim {
    fn new(seed: u64, n: usize, voters: usize) -> Sim {
        let mut rng = XorShift::new(seed);
        let faults = Faults::draw(&mut rng);
        let ids: Vec<MemberId> = (1..=n as u64).map(MemberId).collect();
        let mut nodes = Vec::new();
        for id in &ids {
            let tick_ms = TICK_MS - 1 + rng.below(3);
            let mut node = Node {
                id: *id,
                core: None,
                boot: 0,
                durable: Durable::default(),
                writes: VecDeque::new(),
                shard: Shard::empty(),
                checkpoint: None,
                tick_ms,
                next_tick: rng.below(TICK_MS),
                restart_at: 0,
                reads: BTreeMap::new(),
                ready_reads: Vec::new(),
            };
            start(&mut node, &ids, voters, rng.next());
            nodes.push(node);
        }
        Sim {
            rng,
            faults,
            now: 0,
            nodes,
            net: Vec::new(),
            msg_seq: 0,
            side: vec![0; n],
            heal_at: 0,
            next_request: 1,
            oracle: Oracle::default(),
            quiet: false,
            voters,
        }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.below(1000) < per_mille
    }

    fn ids(&self) -> Vec<MemberId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// One virtual millisecond.
    fn step(&mut self) {
        self.now += 1;
        self.deliver();
        self.complete_writes();
        for i in 0..self.nodes.len() {
            self.maybe_restart(i);
            if self.nodes[i].core.is_some() && self.now >= self.nodes[i].next_tick {
                self.nodes[i].next_tick = self.now + self.nodes[i].tick_ms;
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.tick();
                }
                self.tick_faults(i);
            }
        }
        if !self.quiet && self.chance(self.faults.propose_per_mille_per_ms) {
            self.client_write();
        }
        if self.chance(20) {
            self.client_read();
        }
        for i in 0..self.nodes.len() {
            self.process(i);
        }
        self.check_leaders();
    }

    fn tick_faults(&mut self, i: usize) {
        if self.quiet {
            return;
        }
        if self.chance(self.faults.crash_per_mille_per_tick) {
            self.crash(i);
            return;
        }
        if i == 0 && self.chance(self.faults.partition_per_mille_per_tick) {
            self.partition();
        }
        if i == 0 && self.heal_at != 0 && self.now >= self.heal_at {
            self.side.iter_mut().for_each(|s| *s = 0);
            self.heal_at = 0;
        }
        if self.chance(3) {
            self.compact(i, self.faults.compact_gap);
        }
        if self.chance(2) {
            self.transfer(i);
        }
        if self.voters < self.nodes.len() && self.chance(10) {
            self.change_membership(i);
        }
    }

    /// On the leader: adds a non-member as a learner, promotes or removes
    /// a learner, demotes a voter (keeping at least the initial number of
    /// voters), one at a time or two at once (a joint change).
    fn change_membership(&mut self, i: usize) {
        let ids = self.ids();
        let a = ids[self.rng.below(ids.len() as u64) as usize];
        let b = ids[self.rng.below(ids.len() as u64) as usize];
        let both = self.rng.below(3) == 0;
        let remove = self.rng.below(3) == 0;
        let min_voters = self.voters;
        if self.oracle.removed.contains(&a) || self.oracle.removed.contains(&b) {
            return;
        }
        let Some(core) = self.nodes[i].core.as_mut() else { return };
        if core.role() != Role::Leader {
            return;
        }
        let m = core.membership();
        let flip = |id: MemberId| {
            // Voters are demoted, non-members join as learners.
            let kind = if m.voters.contains(&id) || !m.learners.contains(&id) {
                ChangeKind::AddLearner
            } else if remove {
                ChangeKind::Remove
            } else {
                ChangeKind::AddVoter
            };
            MemberChange { kind, member: id }
        };
        let mut changes = vec![flip(a)];
        if both && a != b {
            changes.push(flip(b));
        }
        let demoted =
            changes.iter().filter(|c| c.kind == ChangeKind::AddLearner && m.voters.contains(&c.member)).count();
        let promoted = changes.iter().filter(|c| c.kind == ChangeKind::AddVoter).count();
        if m.voters.len() + promoted < min_voters + demoted {
            return;
        }
        match core.propose_conf_change(&changes, b"attrs") {
            Ok(()) | Err(ProposeError::ConfChangePending) | Err(ProposeError::BadConfChange(_)) => {}
            Err(ProposeError::TransferInProgress) | Err(ProposeError::Removed) => {}
            Err(e) => panic!("unexpected conf change error: {e}"),
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        self.side.iter_mut().for_each(|s| *s = 0);
        if self.rng.below(2) == 0 {
            // Cut one member off (often the leader).
            let leader = self.nodes.iter().position(|x| x.core.as_ref().is_some_and(|c| c.role() == Role::Leader));
            let victim = match leader {
                Some(l) if self.rng.below(2) == 0 => l,
                _ => self.rng.below(n as u64) as usize,
            };
            self.side[victim] = 1;
        } else {
            // A random minority on one side, the majority on the other.
            let k = 1 + self.rng.below(((n - 1) / 2) as u64) as usize;
            for _ in 0..k {
                let v = self.rng.below(n as u64) as usize;
                self.side[v] = 1;
            }
        }
        self.heal_at = self.now + 200 + self.rng.below(3000);
    }

    fn crash(&mut self, i: usize) {
        let survive = self.rng.below(self.nodes[i].writes.len() as u64 + 1) as usize;
        let partial = self.rng.below(4) == 0;
        let cut = self.rng.next();
        let node = &mut self.nodes[i];
        if node.core.is_none() {
            return;
        }
        self.oracle.crashes += 1;
        // Writes the disk took before the crash although nobody was told.
        for (k, w) in node.writes.drain(..).enumerate() {
            if k < survive {
                node.durable.write(&w.persist, None);
                if let Some(s) = &w.persist.snapshot {
                    node.checkpoint = self.oracle.checkpoints.get(&s.index.get()).cloned();
                }
            } else if k == survive && partial && w.persist.snapshot.is_none() && !w.persist.entries.is_empty() {
                let n = (cut % w.persist.entries.len() as u64) as usize;
                node.durable.write(&w.persist, Some(n));
            }
        }
        node.core = None;
        node.reads.clear();
        node.ready_reads.clear();
        node.restart_at = self.now + 50 + self.rng.below(2000);
    }

    fn maybe_restart(&mut self, i: usize) {
        if self.nodes[i].core.is_some() || self.now < self.nodes[i].restart_at {
            return;
        }
        let ids = self.ids();
        let seed = self.rng.next();
        let voters = self.voters;
        let node = &mut self.nodes[i];
        node.shard = match &node.checkpoint {
            Some(c) => Shard::from_checkpoint(c),
            None => Shard::empty(),
        };
        start(node, &ids, voters, seed);
    }

    fn compact(&mut self, i: usize, gap: u64) {
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else { return };
        let base = node.checkpoint.as_ref().map_or(0, |c| c.index);
        if node.shard.applied < base + gap || node.shard.applied <= core.compacted_index().get() {
            // Too soon, or a snapshot being installed is ahead of the shard.
            return;
        }
        let cp = node.shard.checkpoint();
        if let Some(other) = self.oracle.checkpoints.get(&cp.index) {
            assert_eq!(other.hash, cp.hash, "two checkpoints at index {} differ", cp.index);
        }
        self.oracle.checkpoints.entry(cp.index).or_insert_with(|| cp.clone());
        let index = cp.index;
        node.checkpoint = Some(cp);
        core.compact_to(RaftIndex(index), Bytes::copy_from_slice(&index.to_le_bytes())).expect("compact to applied");
        node.durable.compact(core.snapshot_meta());
    }

    fn transfer(&mut self, i: usize) {
        let n = self.nodes.len() as u64;
        let to = MemberId(1 + self.rng.below(n));
        if let Some(core) = self.nodes[i].core.as_mut() {
            if core.role() == Role::Leader && to != core.id() {
                let _ = core.transfer_leader(to);
            }
        }
    }

    fn client_write(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let mut items = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let key = format!("k{:02}", self.rng.below(KEYS)).into_bytes();
            let seq = self.next_request;
            self.next_request += 1;
            let cmd = match self.rng.below(10) {
                0 | 1 => Command::DeleteRange(DeleteRange { key, range_end: vec![], prev_kv: false }),
                2 => Command::Txn(Txn {
                    compare: vec![Compare {
                        result: CompareResult::Greater,
                        value: CompareValue::Version(self.rng.below(4) as i64),
                        key: key.clone(),
                        range_end: vec![],
                    }],
                    success: vec![Op::Put(Put { key, value: format!("t{seq}").into_bytes(), ..Put::default() })],
                    failure: vec![],
                }),
                _ => Command::Put(Put { key, value: format!("v{seq}").into_bytes(), ..Put::default() }),
            };
            let node = &self.nodes[i];
            items.push(Item { origin: Origin { member: node.id.get(), reactor: 0, boot: node.boot, seq }, cmd });
        }
        let data = encode_batch(&Batch { items });
        if let Some(core) = self.nodes[i].core.as_mut() {
            match core.propose(&data) {
                Ok(())
                | Err(ProposeError::NotLeader { .. })
                | Err(ProposeError::TransferInProgress)
                | Err(ProposeError::Removed) => {}
                Err(e) => panic!("unexpected proposal error: {e}"),
            }
        }
    }

    fn client_read(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let ctx = self.rng.next().to_le_bytes().to_vec();
        let floor = self.oracle.acked_max;
        let node = &mut self.nodes[i];
        if let Some(core) = node.core.as_mut() {
            if core.read_index(ctx.clone()).is_ok() {
                node.reads.insert(ctx, floor);
            }
        }
    }

    /// Delivers due messages.
    fn deliver(&mut self) {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].at <= now {
                due.push(self.net.swap_remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|m| (m.at, m.seq));
        for m in due {
            let cut = self.side[m.from] != self.side[m.to];
            let lost = cut || self.nodes[m.to].core.is_none();
            if !lost {
                let sender = self.nodes[m.from].id;
                if let Some(core) = self.nodes[m.to].core.as_mut() {
                    match core.step(sender, &m.bytes) {
                        Ok(())
                        | Err(StepError::UnknownPeer(_))
                        | Err(StepError::Refused(_))
                        | Err(StepError::Removed) => {}
                        Err(e) => {
                            let msg = <raft::eraftpb::Message as protobuf::Message>::parse_from_bytes(&m.bytes);
                            panic!("a member refused bytes another member sent: {e}: {msg:?}")
                        }
                    }
                }
            }
            if m.class == MessageClass::Snapshot {
                let to = self.nodes[m.to].id;
                if let Some(core) = self.nodes[m.from].core.as_mut() {
                    core.report_snapshot(to, !lost);
                }
            }
        }
    }

    fn send(&mut self, from: usize, msgs: Vec<Outbound>) {
        for m in msgs {
            let Some(to) = self.nodes.iter().position(|n| n.id == m.to) else { continue };
            if !self.quiet && self.chance(self.faults.drop_per_mille) {
                if m.class == MessageClass::Snapshot {
                    let id = self.nodes[to].id;
                    if let Some(core) = self.nodes[from].core.as_mut() {
                        core.report_snapshot(id, false);
                    }
                }
                continue;
            }
            let copies = if !self.quiet && self.chance(self.faults.dup_per_mille) { 2 } else { 1 };
            self.oracle.trace = fnv(self.oracle.trace, &m.bytes) ^ self.now;
            for _ in 0..copies {
                let at = self.now + 1 + self.rng.below(self.faults.delay_max_ms);
                self.msg_seq += 1;
                self.net.push(InFlight { at, seq: self.msg_seq, from, to, class: m.class, bytes: m.bytes.clone() });
            }
        }
    }

    fn complete_writes(&mut self) {
        for i in 0..self.nodes.len() {
            loop {
                let node = &mut self.nodes[i];
                let Some(w) = node.writes.front() else { break };
                if w.done_at > self.now {
                    break;
                }
                let Some(w) = node.writes.pop_front() else { break };
                self.finish_write(i, w);
            }
        }
    }

    fn finish_write(&mut self, i: usize, w: Write) {
        let node = &mut self.nodes[i];
        node.durable.write(&w.persist, None);
        if let Some(s) = &w.persist.snapshot {
            let index = s.index.get();
            let cp = self.oracle.checkpoints.get(&index).expect("a snapshot names a checkpoint someone took");
            assert_eq!(s.data.as_ref(), &index.to_le_bytes(), "snapshot descriptor");
            node.shard = Shard::from_checkpoint(cp);
            node.checkpoint = Some(cp.clone());
            self.oracle.snapshots_installed += 1;
        }
        if let Some(core) = node.core.as_mut() {
            core.on_persisted(w.persist.number);
        }
    }

    /// Handles every Ready a member has.
    fn process(&mut self, i: usize) {
        for _ in 0..100 {
            let Some(core) = self.nodes[i].core.as_mut() else { return };
            let Some(rd) = core.ready().expect("ready") else { break };
            self.handle(i, rd);
        }
        self.answer_reads(i);
    }

    fn handle(&mut self, i: usize, rd: Ready) {
        if rd.checkpoint_wanted {
            self.compact(i, 0);
        }
        if let Some(ss) = rd.soft_state {
            if ss.role == Role::Leader {
                self.oracle.elections += 1;
            }
        }
        self.send(i, rd.messages);
        if let Some(p) = rd.persist {
            let delay = 1 + self.rng.below(self.faults.disk_delay_max_ms);
            let node = &mut self.nodes[i];
            let after = node.writes.back().map_or(0, |w| w.done_at);
            if !p.must_sync && node.writes.is_empty() {
                // Only the commit index: written without waiting.
                node.durable.write(&p, None);
                if let Some(core) = node.core.as_mut() {
                    core.on_persisted(p.number);
                }
            } else {
                node.writes.push_back(Write { done_at: after.max(self.now + delay), persist: p });
            }
        }
        for c in rd.committed {
            self.apply(i, c);
        }
        let node = &mut self.nodes[i];
        for rs in rd.read_states {
            if let Some(floor) = node.reads.remove(&rs.context) {
                node.ready_reads.push((rs.index.get(), floor));
            }
        }
    }

    fn apply(&mut self, i: usize, c: Committed) {
        let index = c.index.get();
        let d = digest(&c.payload);
        match self.oracle.log.get(&index) {
            Some(&(t, h)) => assert!(
                t == c.term.get() && h == d,
                "member {} hands out entry {index} (term {}) unlike another member's (term {t})",
                self.nodes[i].id,
                c.term
            ),
            None => {
                self.oracle.log.insert(index, (c.term.get(), d));
                let bootstrap = index <= self.nodes.len() as u64;
                if let Payload::ConfChange(o) = &c.payload {
                    if o.result.is_ok() && !bootstrap {
                        self.oracle.conf_changes += 1;
                        let gone = o.changes.iter().filter(|c| c.kind == ChangeKind::Remove).map(|c| c.member);
                        self.oracle.removed.extend(gone);
                    }
                }
            }
        }
        let node = &mut self.nodes[i];
        if index <= node.shard.applied {
            return; // replayed after a restart: the checkpoint has it
        }
        assert_eq!(index, node.shard.applied + 1, "member {} skips from {} to {index}", node.id, node.shard.applied);
        let answered = match &c.payload {
            Payload::Data(data) => node.shard.apply(index, data, node.id.get(), node.boot),
            Payload::Empty | Payload::ConfChange(_) => Vec::new(),
        };
        node.shard.applied = index;
        let h = node.shard.hash();
        match self.oracle.states.get(&index) {
            Some(&other) => assert_eq!(other, h, "member {} store differs at index {index}", node.id),
            None => {
                self.oracle.states.insert(index, h);
            }
        }
        for seq in answered {
            self.oracle.acked.insert(seq, index);
            self.oracle.acked_max = self.oracle.acked_max.max(index);
        }
    }

    fn answer_reads(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let applied = node.shard.applied;
        let id = node.id;
        let mut checked = 0;
        node.ready_reads.retain(|&(index, floor)| {
            if applied < index {
                return true;
            }
            assert!(index >= floor, "member {id}: ReadIndex {index} is below the acknowledged index {floor}");
            checked += 1;
            false
        });
        self.oracle.reads_checked += checked;
    }

    fn check_leaders(&mut self) {
        for node in &self.nodes {
            let Some(core) = &node.core else { continue };
            if core.role() != Role::Leader {
                continue;
            }
            let term = core.term().get();
            let prev = *self.oracle.leaders.entry(term).or_insert(node.id);
            assert_eq!(prev, node.id, "two leaders in term {term}");
        }
    }

    /// Stops the faults, restarts and reconnects everyone, and waits until
    /// every member applied a final write and everything acknowledged.
    fn settle(&mut self) {
        self.quiet = true;
        self.side.iter_mut().for_each(|s| *s = 0);
        self.heal_at = 0;
        for n in &mut self.nodes {
            n.restart_at = n.restart_at.min(self.now);
        }
        let deadline = self.now + 600 * TICK_MS;
        let mut final_write: Option<u64> = None;
        while self.now < deadline {
            self.step();
            if final_write.is_none() && self.now.is_multiple_of(50) {
                let before = self.next_request;
                self.client_write_to_leader();
                if self.next_request != before {
                    final_write = Some(before);
                }
            }
            let Some(seq) = final_write else { continue };
            let Some(&index) = self.oracle.acked.get(&seq) else {
                // Not taken (leader changed): try again.
                if self.now.is_multiple_of(500) {
                    final_write = None;
                }
                continue;
            };
            let target = index.max(self.oracle.acked_max);
            let Some(members) = self.final_members() else { continue };
            let members: Vec<&Node> = self.nodes.iter().filter(|n| members.contains(n.id)).collect();
            if members.iter().all(|n| n.core.is_some() && n.shard.applied >= target) {
                let hashes: Vec<u64> = members.iter().map(|n| n.shard.hash()).collect();
                let applied: Vec<u64> = members.iter().map(|n| n.shard.applied).collect();
                if applied.iter().all(|a| *a == applied[0]) {
                    assert!(hashes.iter().all(|h| *h == hashes[0]), "stores differ at index {}", applied[0]);
                }
                return;
            }
        }
        let applied: Vec<u64> = self.nodes.iter().map(|n| n.shard.applied).collect();
        panic!(
            "no progress after the faults stopped: applied {applied:?}, acknowledged up to {}, final write {final_write:?}",
            self.oracle.acked_max
        );
    }

    /// The configuration the leader has, if there is a leader.
    fn final_members(&self) -> Option<Membership> {
        let leader =
            self.nodes.iter().find_map(|n| n.core.as_ref().filter(|c| c.role() == Role::Leader && !c.is_removed()))?;
        Some(leader.membership())
    }

    fn client_write_to_leader(&mut self) {
        let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.core.as_ref().is_some_and(|c| c.role() == Role::Leader && !c.is_removed()))
        else {
            return;
        };
        let seq = self.next_request;
        let node = &self.nodes[i];
        let item = Item {
            origin: Origin { member: node.id.get(), reactor: 0, boot: node.boot, seq },
            cmd: Command::Put(Put { key: b"final".to_vec(), value: seq.to_le_bytes().to_vec(), ..Put::default() }),
        };
        let data = encode_batch(&Batch { items: vec![item] });
        if let Some(core) = self.nodes[i].core.as_mut() {
            if core.propose(&data).is_ok() {
                self.next_request += 1;
            }
        }
    }
}

/// (Re)starts a member from its durable state.
fn start(node: &mut Node, ids: &[MemberId], voters: usize, seed: u64) {
    let mut cfg = RaftConfig::new(node.id, ids[..voters].to_vec());
    cfg.learners = ids[voters..(voters + 1).min(ids.len())].to_vec();
    cfg.join_existing = ids.get(voters + 1..).is_some_and(|joiners| joiners.contains(&node.id));
    cfg.seed = seed;
    cfg.max_msg_bytes = 64 << 10;
    if std::env::var_os("RAFT_SIM_LOG").is_some() {
        cfg.logging = RaftLogging::CrateLog;
    }
    let boot = Boot {
        hard_state: node.durable.hard_state,
        entries: node.durable.entries.clone(),
        snapshot: node.durable.snapshot.clone(),
    };
    node.core = Some(RaftCore::new(cfg, boot).expect("restart from durable state"));
    node.boot += 1;
    node.writes.clear();
    node.next_tick = 0;
}

/// Prints how to replay a seed if the run panics.
struct SeedGuard {
    seed: u64,
    nodes: usize,
    voters: usize,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "raft simulator failed: replay with RAFT_SIM_SEED={} RAFT_SIM_NODES={} RAFT_SIM_VOTERS={} \
                 cargo test --lib raft::sim::replay",
                self.seed, self.nodes, self.voters
            );
        }
    }
}

/// What one run saw, for the sweep's summary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    trace: u64,
    acked: u64,
    applied: u64,
    elections: u64,
    crashes: u64,
    snapshots: u64,
    reads: u64,
    conf_changes: u64,
    removed: u64,
}

fn run(seed: u64, nodes: usize, voters: usize, ticks: u64) -> Summary {
    let _guard = SeedGuard { seed, nodes, voters };
    let mut sim = Sim::new(seed, nodes, voters);
    while sim.now < ticks * TICK_MS {
        sim.step();
    }
    sim.settle();
    Summary {
        trace: sim.oracle.trace,
        acked: sim.oracle.acked.len() as u64,
        applied: sim.nodes.iter().map(|n| n.shard.applied).min().unwrap_or(0),
        elections: sim.oracle.elections,
        crashes: sim.oracle.crashes,
        snapshots: sim.oracle.snapshots_installed,
        reads: sim.oracle.reads_checked,
        conf_changes: sim.oracle.conf_changes,
        removed: sim.oracle.removed.len() as u64,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sweep(nodes: usize, voters: usize, default_seeds: u64) {
    let seeds = env_u64("RAFT_SIM_SEEDS", default_seeds);
    let first = env_u64("RAFT_SIM_FIRST", 0);
    let ticks = env_u64("RAFT_SIM_TICKS", 2000);
    let mut total = Summary::default();
    for seed in first..first + seeds {
        let s = run(seed, nodes, voters, ticks);
        total.trace ^= s.trace;
        total.acked += s.acked;
        total.applied += s.applied;
        total.elections += s.elections;
        total.crashes += s.crashes;
        total.snapshots += s.snapshots;
        total.reads += s.reads;
        total.conf_changes += s.conf_changes;
        total.removed += s.removed;
    }
    eprintln!(
        "raft sim, {nodes} members ({voters} voters at first), seeds {first}..{}, {ticks} ticks each: {total:?}",
        first + seeds
    );
    assert!(total.acked > 0 && total.elections > 0, "the sweep did nothing: {total:?}");
}

#[test]
fn three_members_survive_faults_for_many_seeds() {
    sweep(3, 3, 50);
}

#[test]
fn five_members_survive_faults_for_many_seeds() {
    sweep(5, 5, 30);
}

/// Three voters, a learner and a member that joins later: added,
/// promoted, demoted and removed (one at a time or through a joint
/// configuration) while the faults go on.
#[test]
fn membership_changes_survive_faults_for_many_seeds() {
    sweep(5, 3, 20);
}

#[test]
fn a_seed_replays_exactly() {
    for nodes in [3, 5] {
        let a = run(42, nodes, 3, 600);
        let b = run(42, nodes, 3, 600);
        assert_eq!(a, b, "two runs of one seed diverged");
        assert_ne!(run(43, nodes, 3, 600).trace, a.trace);
    }
}

/// Replays one seed: `RAFT_SIM_SEED=n [RAFT_SIM_NODES=3]
/// [RAFT_SIM_VOTERS=nodes] [RAFT_SIM_TICKS=2000]`.
#[test]
fn replay() {
    let Ok(seed) = std::env::var("RAFT_SIM_SEED") else { return };
    let seed = seed.parse().expect("RAFT_SIM_SEED is a number");
    let nodes = env_u64("RAFT_SIM_NODES", 3) as usize;
    let voters = env_u64("RAFT_SIM_VOTERS", nodes as u64) as usize;
    let s = run(seed, nodes, voters, env_u64("RAFT_SIM_TICKS", 2000));
    eprintln!("seed {seed}: {s:?}");
}
