//! The consensus loop on the sequencer reactor: proposals become Raft
//! entries, Raft's Readies are carried out (messages to peers, entries to
//! the WAL, committed entries to every shard), and ReadIndex requests are
//! answered (DESIGN §3).
//!
//! One task drives the `RaftCore`; it wakes on anything that changes its
//! inputs: proposals, a peer's message, a tick, a finished WAL flush, a
//! read. A second task owns the WAL and group-commits whatever Readies
//! queued while its previous write + fdatasync was in flight; it reports
//! each flush back, and only then do the Readies count as persisted. A
//! follower forwards its proposals to the leader on the Forward stream; a
//! command's reply comes from the origin member's own shards when they
//! apply the entry, wherever it was proposed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::handle::NodeHandle;
use super::msg::{Committed, Msg};
use super::sequencer::Proposals;
use super::shard::fatal;
use crate::apply::command::{access_batch, aligned_copy, encode_batch, Batch, Item};
use crate::apply::{ApplyError, Reply};
use crate::raft::{MessageClass as RaftClass, Payload, Persist, RaftCore, ReadyNumber, Role};
use crate::runtime::local::{oneshot, Notify, Receiver, Sender};
use crate::transport::{MessageClass, TransportHandle};
use crate::types::{MemberId, RaftIndex, ReactorId, ShardId};
use crate::wal::Wal;

/// Most read requests answered by one ReadIndex round.
const READS_PER_ROUND_MAX: usize = 4096;

/// The result of a ReadIndex request.
pub type ReadIndexResult = Result<RaftIndex, ApplyError>;

#[derive(Default)]
struct Reads {
    /// Waiting for the next round.
    waiting: Vec<Sender<ReadIndexResult>>,
    /// Rounds issued, by context, with when they were issued.
    issued: HashMap<u64, (Instant, Vec<Sender<ReadIndexResult>>)>,
    next_ctx: u64,
}

/// The consensus state of this member, on reactor 0.
pub struct Consensus {
    core: RefCell<RaftCore>,
    transport: Option<TransportHandle>,
    proposals: Rc<Proposals>,
    ticks: Cell<u32>,
    persisted: Cell<u64>,
    jobs: RefCell<VecDeque<Persist>>,
    jobs_ready: Notify,
    inbound: RefCell<VecDeque<(MemberId, MessageClass, Bytes)>>,
    reads: RefCell<Reads>,
    /// Since when no leader is known (proposals wait that long at most).
    leaderless_since: Cell<Option<Instant>>,
    /// How long proposals wait for a leader before failing.
    leader_wait: Duration,
    /// How long a ReadIndex round may go unanswered before it is retried.
    read_retry: Duration,
    /// The only voter: it campaigns as soon as it has handed out every
    /// committed entry, instead of after an election timeout.
    alone: bool,
}

impl Consensus {
    /// Wraps a core; `transport` is `None` for a single member.
    pub fn new(
        core: RaftCore,
        transport: Option<TransportHandle>,
        proposals: Rc<Proposals>,
        leader_wait: Duration,
        alone: bool,
    ) -> Rc<Consensus> {
        Rc::new(Consensus {
            core: RefCell::new(core),
            transport,
            proposals,
            ticks: Cell::new(0),
            persisted: Cell::new(0),
            jobs: RefCell::new(VecDeque::new()),
            jobs_ready: Notify::default(),
            inbound: RefCell::new(VecDeque::new()),
            reads: RefCell::new(Reads::default()),
            leaderless_since: Cell::new(Some(Instant::now())),
            leader_wait,
            // Two heartbeats at etcd's default timing: a round raft-rs
            // dropped (e.g. at a leader that has not yet committed in its
            // term) goes out again soon.
            read_retry: leader_wait / 15,
            alone,
        })
    }

    fn wake(&self) {
        self.proposals.wake();
    }

    /// Asks raft-rs to hand leadership to `to`.
    pub fn transfer_leader(&self, to: MemberId) -> Result<(), crate::raft::TransferError> {
        let r = self.core.borrow_mut().transfer_leader(to);
        self.wake();
        r
    }

    /// A ReadIndex: the commit index a linearizable read must wait for.
    pub fn read_index(&self) -> Receiver<ReadIndexResult> {
        let (tx, rx) = oneshot();
        self.reads.borrow_mut().waiting.push(tx);
        self.wake();
        rx
    }

    /// Starts the loop's tasks: ticks every `heartbeat`, peer receive, WAL
    /// flusher, and the loop itself.
    pub fn start(self: &Rc<Self>, node: NodeHandle, wal: Wal, heartbeat: Duration) {
        monoio::spawn(self.clone().flush_loop(wal));
        let ticker = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(heartbeat).await;
                ticker.ticks.set(ticker.ticks.get() + 1);
                ticker.wake();
            }
        });
        if let Some(t) = self.transport.clone() {
            let rx = self.clone();
            monoio::spawn(async move {
                loop {
                    let m = t.recv().await;
                    rx.inbound.borrow_mut().push_back(m);
                    rx.wake();
                }
            });
        }
        monoio::spawn(self.clone().run(node));
    }

    async fn run(self: Rc<Self>, node: NodeHandle) {
        loop {
            self.proposals.woken().await;
            self.take_inputs(&node);
            self.carry_out(&node);
            self.campaign_alone(&node);
        }
    }

    /// A lone voter needs nobody's vote. raft-rs refuses to campaign while
    /// committed conf changes are not yet handed out (after a restart), so
    /// this waits for that first.
    fn campaign_alone(&self, node: &NodeHandle) {
        if !self.alone {
            return;
        }
        {
            let mut core = self.core.borrow_mut();
            if core.leader().is_some() || core.applied_index() < core.commit_index() {
                return;
            }
            if let Err(e) = core.campaign() {
                fatal(&format!("raft: {e}"));
            }
        }
        self.carry_out(node);
    }

    fn take_inputs(&self, node: &NodeHandle) {
        let mut core = self.core.borrow_mut();
        for _ in 0..self.ticks.replace(0) {
            core.tick();
        }
        let persisted = self.persisted.get();
        if persisted > 0 {
            core.on_persisted(ReadyNumber(persisted));
        }
        let inbound: Vec<_> = self.inbound.borrow_mut().drain(..).collect();
        for (peer, class, bytes) in inbound {
            match class {
                MessageClass::Raft | MessageClass::Snapshot => {
                    if let Err(e) = core.step(peer, &bytes) {
                        crate::log_warn!("refused a peer's raft message", "peer" => peer, "error" => e.to_string());
                    }
                }
                MessageClass::Forward => self.forwarded(&mut core, node, peer, bytes),
            }
        }
        self.propose(&mut core, node);
        self.issue_reads(&mut core);
    }

    /// Proposes what clients of this member proposed, or forwards it to
    /// the leader; fails it when no leader came up in time.
    fn propose(&self, core: &mut RaftCore, node: &NodeHandle) {
        let leader = core.leader();
        match leader {
            Some(_) => self.leaderless_since.set(None),
            None => {
                let since = *self.leaderless_since.get().get_or_insert_with(Instant::now);
                self.leaderless_since.set(Some(since));
                if since.elapsed() >= self.leader_wait {
                    fail_all(node, self.proposals.take_now(), ApplyError::NoLeader);
                }
                return;
            }
        }
        loop {
            let items = self.proposals.take_now();
            if items.is_empty() {
                return;
            }
            let data = encode_batch(&Batch { items });
            match leader {
                Some(l) if l == core.id() => {
                    if let Err(e) = core.propose(&data) {
                        crate::log_warn!("proposal refused", "error" => e.to_string());
                        fail_encoded(node, &data, ApplyError::Timeout);
                    }
                }
                Some(l) => {
                    let sent =
                        self.transport.as_ref().map(|t| t.send(l, MessageClass::Forward, Bytes::from(data.to_vec())));
                    if !matches!(sent, Some(Ok(()))) {
                        fail_encoded(node, &data, ApplyError::Timeout);
                    }
                }
                None => return,
            }
        }
    }

    /// A follower's forwarded proposals: propose them if this member leads
    /// (their replies come from the follower's shards), else pass them on.
    fn forwarded(&self, core: &mut RaftCore, _node: &NodeHandle, peer: MemberId, bytes: Bytes) {
        if access_batch(&aligned_copy(&bytes)).is_err() {
            crate::log_warn!("refused malformed forwarded proposals", "peer" => peer);
            return;
        }
        match core.leader() {
            Some(l) if l == core.id() => {
                if let Err(e) = core.propose(&bytes) {
                    crate::log_warn!("forwarded proposal refused", "peer" => peer, "error" => e.to_string());
                }
            }
            Some(l) if l != peer => {
                if let Some(t) = &self.transport {
                    let _ = t.send(l, MessageClass::Forward, bytes);
                }
            }
            // No leader, or back to where it came from: the client times out.
            _ => {}
        }
    }

    fn issue_reads(&self, core: &mut RaftCore) {
        let mut reads = self.reads.borrow_mut();
        // raft-rs drops a ReadIndex that is lost on the way or reaches a
        // leader without a commit in its term: a round unanswered for a
        // retry interval goes out again (its waiters keep their deadline).
        let now = Instant::now();
        let stale: Vec<u64> =
            reads.issued.iter().filter(|(_, (at, _))| now - *at >= self.read_retry).map(|(c, _)| *c).collect();
        for ctx in stale {
            if let Some((_, waiters)) = reads.issued.remove(&ctx) {
                reads.waiting.extend(waiters);
            }
        }
        if reads.waiting.is_empty() {
            return;
        }
        // Without a leader, reads wait as proposals do (see `propose`),
        // then fail with etcd's "no leader".
        if core.leader().is_none() {
            if self.leaderless_since.get().is_some_and(|since| since.elapsed() >= self.leader_wait) {
                reads.waiting.drain(..).for_each(|tx| tx.send(Err(ApplyError::NoLeader)));
            }
            return;
        }
        // A leader answers reads only once it committed an entry of its
        // term; until then they wait here.
        if core.role() == Role::Leader && !core.committed_in_term() {
            return;
        }
        let n = reads.waiting.len().min(READS_PER_ROUND_MAX);
        let round: Vec<_> = reads.waiting.drain(..n).collect();
        let ctx = reads.next_ctx;
        reads.next_ctx += 1;
        match core.read_index(ctx.to_le_bytes().to_vec()) {
            Ok(()) => {
                reads.issued.insert(ctx, (now, round));
            }
            Err(_) => round.into_iter().for_each(|tx| tx.send(Err(ApplyError::NoLeader))),
        }
    }

    /// Carries out every Ready the core has.
    fn carry_out(&self, node: &NodeHandle) {
        loop {
            let rd = match self.core.borrow_mut().ready() {
                Ok(Some(rd)) => rd,
                Ok(None) => break,
                Err(e) => fatal(&format!("raft: {e}")),
            };
            // Replies to what this Ready commits carry the new term.
            node.on_raft_progress(self.core.borrow().term(), self.core.borrow().last_index());
            if let Some(ss) = rd.soft_state {
                let last = self.core.borrow().last_index();
                node.on_leadership(ss.leader, ss.role == Role::Leader, last);
            }
            for m in rd.messages {
                let class = match m.class {
                    RaftClass::Raft => MessageClass::Raft,
                    RaftClass::Snapshot => MessageClass::Snapshot,
                };
                if let Some(t) = &self.transport {
                    if t.send(m.to, class, Bytes::from(m.bytes)).is_err() {
                        self.core.borrow_mut().report_unreachable(m.to);
                    }
                }
            }
            if let Some(p) = rd.persist {
                if p.snapshot.is_some() {
                    fatal("a snapshot arrived from the leader; installing snapshots is not supported yet");
                }
                self.jobs.borrow_mut().push_back(p);
                self.jobs_ready.notify();
            }
            for c in rd.committed {
                let data = match c.payload {
                    Payload::Data(d) => aligned_copy(&d),
                    Payload::Empty | Payload::ConfChange(_) => Default::default(),
                };
                let c = std::sync::Arc::new(Committed { index: c.index, data });
                node.broadcast(|| Msg::Committed(c.clone()));
            }
            for rs in rd.read_states {
                let ctx = rs.context.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX);
                if let Some((_, waiters)) = self.reads.borrow_mut().issued.remove(&ctx) {
                    waiters.into_iter().for_each(|tx| tx.send(Ok(rs.index)));
                }
            }
            node.on_raft_progress(self.core.borrow().term(), self.core.borrow().last_index());
        }
    }

    /// Group commit: every Ready queued while the previous write was in
    /// flight goes into the next one.
    async fn flush_loop(self: Rc<Self>, mut wal: Wal) {
        loop {
            let jobs: Vec<Persist> = self.jobs.borrow_mut().drain(..).collect();
            if jobs.is_empty() {
                self.jobs_ready.notified().await;
                continue;
            }
            let mut last = 0;
            for p in &jobs {
                let entries: Vec<_> = p.entries.iter().map(|e| e.as_wal()).collect();
                if let Err(e) = wal.append(&entries, p.hard_state) {
                    fatal(&format!("WAL append: {e}"));
                }
                last = p.number.0;
            }
            if let Err(e) = wal.flush().await {
                fatal(&format!("WAL write: {e}"));
            }
            self.persisted.set(last);
            self.wake();
        }
    }
}

/// Answers every command in `items` with `e` (they were never proposed).
fn fail_all(node: &NodeHandle, items: Vec<Item>, e: ApplyError) {
    let (member, boot) = node.origin_filter();
    for item in items {
        let o = item.origin;
        if o.member == member && o.boot == boot && o.seq != 0 {
            let reply =
                Reply { origin: o, shard: ShardId(0), parts_total: 1, revision: 0, result: Err(e), physical: false };
            node.send(ReactorId(o.reactor), Msg::Reply(reply));
        }
    }
}

/// [`fail_all`] for an encoded batch.
fn fail_encoded(node: &NodeHandle, data: &[u8], e: ApplyError) {
    let bytes = aligned_copy(data);
    if let Ok(batch) = access_batch(&bytes) {
        if let Ok(items) = rkyv::deserialize::<Vec<Item>, rkyv::rancor::Error>(&batch.items) {
            fail_all(node, items, e);
        }
    }
}
