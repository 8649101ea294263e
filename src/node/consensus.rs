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
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::handle::NodeHandle;
use super::members::{self, MemberOp};
use super::msg::{Committed, Msg};
use super::sequencer::Proposals;
use super::shard::fatal;
use super::snapshots::{self, sync_dir, write_file, Global, Install, PartDone, SnapJob, GLOBAL_FILE, MANIFEST_FILE};
use super::stores::{Stores, STORES_FILE};
use crate::api::backend::ClusterError;
use crate::apply::command::{access_batch, aligned_copy, encode_batch, Batch, Item};
use crate::apply::{ApplyError, Reply};
use crate::raft::{
    ChangeKind, ConfChangeOutcome, Membership, MessageClass as RaftClass, Payload, Persist, ProposeError, RaftCore,
    ReadyNumber, Role,
};
use crate::runtime::local::{oneshot, Notify, Receiver, Sender};
use crate::snapshot::Manifest;
use crate::transport::{MessageClass, TransportHandle};
use crate::types::{MemberId, RaftIndex, ReactorId, ShardId};
use crate::wal::{self, Wal};
use std::path::PathBuf;

/// Most read requests answered by one ReadIndex round.
const READS_PER_ROUND_MAX: usize = 4096;

/// The first byte of a Forward message: what follows.
const FORWARD_BATCH: u8 = 0;
/// A membership request for the leader ([`encode_member_request`]).
const FORWARD_MEMBER: u8 = 1;
/// Dirty pages any one shard may hold before a checkpoint is made
/// without waiting for `--snapshot-count` (64 MiB: bounds the memory the
/// tree holds unwritten, and the work of one checkpoint).
const DIRTY_PAGES_CHECKPOINT: u64 = 16 * 1024;

/// The leader refused a forwarded membership request.
const FORWARD_MEMBER_REFUSED: u8 = 2;

/// A membership request waiting to be proposed (on the leader).
struct QueuedOp {
    origin: MemberId,
    request: u64,
    op: MemberOp,
    since: Instant,
}

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
    /// The peer links; started when a second member appears.
    transport: RefCell<Option<TransportHandle>>,
    proposals: Rc<Proposals>,
    ticks: Cell<u32>,
    persisted: Cell<u64>,
    jobs: RefCell<VecDeque<Job>>,
    jobs_ready: Notify,
    inbound: RefCell<VecDeque<(MemberId, MessageClass, Bytes)>>,
    reads: RefCell<Reads>,
    /// Since when no leader is known (proposals wait that long at most).
    leaderless_since: Cell<Option<Instant>>,
    /// How long proposals wait for a leader before failing.
    leader_wait: Duration,
    /// How long a ReadIndex round may go unanswered before it is retried.
    read_retry: Duration,
    /// Membership requests to propose while this member leads.
    ops: RefCell<VecDeque<QueuedOp>>,
    /// This member's clients' membership requests, by number: answered
    /// when the change applies here (or is refused).
    op_waits: RefCell<HashMap<u64, Sender<Result<MemberId, ClusterError>>>>,
    next_op: Cell<u64>,
    /// This member was removed and is stopping.
    stopping: Cell<bool>,
    /// The learner last promoted by `--learner-auto-promote`, and when.
    auto_promoted: Cell<Option<(MemberId, Instant)>>,
    /// Snapshots: the newest on disk, the one being made.
    snap: RefCell<SnapState>,
    parts_ready: Notify,
    /// Snapshot-stream messages from the leader, in arrival order.
    snap_in: RefCell<VecDeque<(MemberId, Bytes)>>,
    snap_in_ready: Notify,
}

/// What the WAL task does next.
enum Job {
    /// Make a Ready durable.
    Persist(Box<Persist>),
    /// A snapshot up to this index is durable: drop the segments it covers.
    Release(RaftIndex),
}

#[derive(Default)]
struct SnapState {
    /// `member/snap`.
    root: PathBuf,
    /// The index of the newest snapshot on disk (0: none).
    last: u64,
    /// Whether it has parts (can be sent to a member).
    sendable: bool,
    /// Shards that committed the checkpoint of the snapshot being made.
    committed: usize,
    /// The index of the snapshot being made.
    making: Option<u64>,
    /// The parts the shards reported for it.
    parts: Vec<PartDone>,
    /// The last committed entry handed out: index and term.
    handed: (u64, u64),
}

impl Consensus {
    /// Wraps a core; `transport` is `None` for a single member.
    pub fn new(
        core: RaftCore,
        transport: Option<TransportHandle>,
        proposals: Rc<Proposals>,
        leader_wait: Duration,
        snap_root: PathBuf,
        snap_index: u64,
        snap_sendable: bool,
    ) -> Rc<Consensus> {
        Rc::new(Consensus {
            core: RefCell::new(core),
            transport: RefCell::new(transport),
            proposals,
            ticks: Cell::new(0),
            persisted: Cell::new(0),
            jobs: RefCell::new(VecDeque::new()),
            snap: RefCell::new(SnapState {
                root: snap_root,
                last: snap_index,
                sendable: snap_sendable,
                ..SnapState::default()
            }),
            parts_ready: Notify::default(),
            snap_in: RefCell::new(VecDeque::new()),
            snap_in_ready: Notify::default(),
            jobs_ready: Notify::default(),
            inbound: RefCell::new(VecDeque::new()),
            reads: RefCell::new(Reads::default()),
            leaderless_since: Cell::new(Some(Instant::now())),
            leader_wait,
            // Two heartbeats at etcd's default timing: a round raft-rs
            // dropped (e.g. at a leader that has not yet committed in its
            // term) goes out again soon.
            read_retry: leader_wait / 15,
            ops: RefCell::new(VecDeque::new()),
            op_waits: RefCell::new(HashMap::new()),
            next_op: Cell::new(0),
            stopping: Cell::new(false),
            auto_promoted: Cell::new(None),
        })
    }

    /// Raft's configuration now.
    pub fn membership(&self) -> Membership {
        self.core.borrow().membership()
    }

    fn transport(&self) -> Option<TransportHandle> {
        self.transport.borrow().clone()
    }

    /// Receives from the transport into the loop's inbound queue.
    fn spawn_receiver(self: &Rc<Self>, t: TransportHandle) {
        let rx = self.clone();
        monoio::spawn(async move {
            loop {
                let m = t.recv().await;
                rx.inbound.borrow_mut().push_back(m);
                rx.wake();
            }
        });
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
    pub fn start(self: &Rc<Self>, node: NodeHandle, wal: Wal, hard_state: wal::HardState, heartbeat: Duration) {
        monoio::spawn(self.clone().flush_loop(wal, hard_state));
        monoio::spawn(self.clone().snapshot_receiver(node.clone()));
        let ticker = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(heartbeat).await;
                ticker.ticks.set(ticker.ticks.get() + 1);
                ticker.wake();
            }
        });
        if let Some(t) = self.transport() {
            self.spawn_receiver(t);
        }
        self.update_lone_voter(&node);
        monoio::spawn(self.clone().run(node));
    }

    async fn run(self: Rc<Self>, node: NodeHandle) {
        loop {
            self.proposals.woken().await;
            self.take_inputs(&node);
            self.carry_out(&node);
            self.campaign_alone(&node);
            self.propose_ops(&node);
            self.carry_out(&node);
        }
    }

    fn update_lone_voter(&self, node: &NodeHandle) {
        let m = self.core.borrow().membership();
        let me = node.shared().member;
        let lone = m.voters == [me] && m.voters_outgoing.is_empty();
        node.shared().stats.lone_voter.store(lone, std::sync::atomic::Ordering::Release);
    }

    /// A lone voter needs nobody's vote. raft-rs refuses to campaign while
    /// committed conf changes are not yet handed out (after a restart), so
    /// this waits for that first.
    fn campaign_alone(self: &Rc<Self>, node: &NodeHandle) {
        {
            let mut core = self.core.borrow_mut();
            let m = core.membership();
            if m.voters != [core.id()] || !m.voters_outgoing.is_empty() {
                return;
            }
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
        if self.transport().is_some_and(|t| t.removed_from_cluster()) {
            // It missed the commit of its removal: a peer told it.
            self.stop_removed(node.shared().member);
        }
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
                MessageClass::Snapshot => {
                    self.snap_in.borrow_mut().push_back((peer, bytes));
                    self.snap_in_ready.notify();
                }
                MessageClass::Raft => {
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
        // A leader that removed itself leads until the others time it out:
        // wait for the next one.
        let leader = core.leader().filter(|l| core.is_member(*l));
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
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(FORWARD_BATCH);
                    msg.extend_from_slice(&data);
                    let sent = self.transport().map(|t| t.send(l, MessageClass::Forward, Bytes::from(msg)));
                    if !matches!(sent, Some(Ok(()))) {
                        fail_encoded(node, &data, ApplyError::Timeout);
                    }
                }
                None => return,
            }
        }
    }

    /// A Forward message: a follower's proposals, a membership request, or
    /// the leader's refusal of one of ours.
    fn forwarded(&self, core: &mut RaftCore, node: &NodeHandle, peer: MemberId, bytes: Bytes) {
        match bytes.first() {
            Some(&FORWARD_BATCH) => self.forwarded_batch(core, peer, bytes.slice(1..)),
            Some(&FORWARD_MEMBER) => match decode_member_request(&bytes[1..]) {
                Some((request, op)) => {
                    self.ops.borrow_mut().push_back(QueuedOp { origin: peer, request, op, since: Instant::now() })
                }
                None => crate::log_warn!("refused a malformed membership request", "peer" => peer),
            },
            Some(&FORWARD_MEMBER_REFUSED) => match decode_refusal(&bytes[1..]) {
                Some((request, e)) => {
                    if let Some(tx) = self.op_waits.borrow_mut().remove(&request) {
                        tx.send(Err(e));
                    }
                }
                None => crate::log_warn!("refused a malformed membership answer", "peer" => peer),
            },
            _ => crate::log_warn!("refused a forwarded message of unknown kind", "peer" => peer),
        }
        let _ = node;
    }

    /// A follower's forwarded proposals: propose them if this member leads
    /// (their replies come from the follower's shards), else pass them on.
    fn forwarded_batch(&self, core: &mut RaftCore, peer: MemberId, bytes: Bytes) {
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
                if let Some(t) = self.transport() {
                    let mut msg = Vec::with_capacity(bytes.len() + 1);
                    msg.push(FORWARD_BATCH);
                    msg.extend_from_slice(&bytes);
                    let _ = t.send(l, MessageClass::Forward, Bytes::from(msg));
                }
            }
            // No leader, or back to where it came from: the client times out.
            _ => {}
        }
    }

    /// A membership request from one of this member's clients: proposed
    /// here if this member leads, else sent to the leader. Resolves with
    /// the member the change concerns once it applied here.
    pub async fn member_op(&self, node: &NodeHandle, op: MemberOp) -> Result<MemberId, ClusterError> {
        let request = self.next_op.get() + 1;
        self.next_op.set(request);
        let (tx, rx) = oneshot();
        self.op_waits.borrow_mut().insert(request, tx);
        let me = node.shared().member;
        let started = Instant::now();
        let timeout = node.shared().request_timeout;
        // Wait for a leader as proposals do.
        let leader = loop {
            let known = {
                let core = self.core.borrow();
                core.leader().filter(|l| core.is_member(*l))
            };
            if known.is_some() {
                break known;
            }
            if started.elapsed() >= self.leader_wait.min(timeout) {
                break None;
            }
            monoio::time::sleep(node.shared().heartbeat).await;
        };
        match leader {
            None => {
                self.op_waits.borrow_mut().remove(&request);
                return Err(ClusterError::NoLeader);
            }
            Some(l) if l == me => {
                self.ops.borrow_mut().push_back(QueuedOp { origin: me, request, op, since: Instant::now() });
                self.wake();
            }
            Some(l) => {
                let mut msg = vec![FORWARD_MEMBER];
                msg.extend_from_slice(&encode_member_request(request, &op));
                let sent = self.transport().map(|t| t.send(l, MessageClass::Forward, Bytes::from(msg)));
                if !matches!(sent, Some(Ok(()))) {
                    self.op_waits.borrow_mut().remove(&request);
                    return Err(ClusterError::Timeout);
                }
            }
        }
        let left = timeout.saturating_sub(started.elapsed());
        match monoio::time::timeout(left, rx).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(ClusterError::Stopped),
            Err(_) => {
                self.op_waits.borrow_mut().remove(&request);
                Err(ClusterError::Timeout)
            }
        }
    }

    /// Proposes queued membership requests while this member leads, one
    /// at a time (Raft takes one configuration change at a time).
    fn propose_ops(&self, node: &NodeHandle) {
        let shared = node.shared();
        if shared.learner_auto_promote && self.ops.borrow().is_empty() {
            // etcd#15107: promote a learner as soon as it is in sync (the
            // plan below refuses it until then, quietly: request 0 has no
            // waiter).
            let core = self.core.borrow();
            if core.role() == Role::Leader {
                let leader_index = core.last_index().get();
                for id in core.membership().learners {
                    let matched = core.matched(id).map_or(0, |i| i.get());
                    let recent =
                        self.auto_promoted.get().is_some_and(|(m, at)| m == id && at.elapsed() < self.leader_wait);
                    if !recent && matched as f64 >= leader_index as f64 * members::PROMOTE_READY_SHARE {
                        self.auto_promoted.set(Some((id, Instant::now())));
                        let op = MemberOp::Promote { id };
                        self.ops.borrow_mut().push_back(QueuedOp {
                            origin: shared.member,
                            request: 0,
                            op,
                            since: Instant::now(),
                        });
                        crate::log_info!("promoting a learner that caught up", "member" => id);
                    }
                }
            }
        }
        let timeout = shared.request_timeout;
        loop {
            let Some(q) = self.ops.borrow_mut().pop_front() else { return };
            if q.since.elapsed() >= timeout {
                continue;
            }
            let mut core = self.core.borrow_mut();
            if core.leader() != Some(core.id()) {
                // Lost leadership: the asker times out and retries.
                self.ops.borrow_mut().clear();
                return;
            }
            let membership = core.membership();
            let leader_index = core.last_index().get();
            let planned = {
                let table = shared.members();
                let matched = |id: MemberId| core.matched(id).map(|i| i.get());
                let judge = members::Judge {
                    membership: &membership,
                    token: &shared.cluster_token,
                    cluster: shared.cluster_id(),
                    origin: q.origin,
                    request: q.request,
                    matched: &matched,
                    leader_index,
                };
                members::plan(&table, &q.op, &judge)
            };
            let (change, ctx) = match planned {
                Ok(p) => p,
                Err(e) => {
                    drop(core);
                    self.refuse(node, q.origin, q.request, e.into());
                    continue;
                }
            };
            if matches!(change.kind, ChangeKind::AddVoter) {
                // A second voter may depose this leader: reads take the
                // ReadIndex path from now on.
                shared.stats.lone_voter.store(false, std::sync::atomic::Ordering::Release);
            }
            match core.propose_conf_change(&[change], &ctx.encode()) {
                Ok(()) => {}
                Err(ProposeError::ConfChangePending) => {
                    // Try again once the pending change applied.
                    self.ops.borrow_mut().push_front(q);
                    return;
                }
                Err(e) => {
                    crate::log_warn!("membership change refused", "error" => e.to_string());
                    drop(core);
                    self.refuse(node, q.origin, q.request, ClusterError::Timeout);
                }
            }
        }
    }

    fn refuse(&self, node: &NodeHandle, origin: MemberId, request: u64, e: ClusterError) {
        if origin == node.shared().member {
            if let Some(tx) = self.op_waits.borrow_mut().remove(&request) {
                tx.send(Err(e));
            }
        } else if let Some(t) = self.transport() {
            let mut msg = vec![FORWARD_MEMBER_REFUSED];
            msg.extend_from_slice(&encode_refusal(request, e));
            let _ = t.send(origin, MessageClass::Forward, Bytes::from(msg));
        }
    }

    /// A committed configuration change: the member table, the peer links
    /// and the asker's answer follow it.
    fn conf_changed(self: &Rc<Self>, node: &NodeHandle, outcome: &ConfChangeOutcome) {
        let shared = node.shared();
        let me = shared.member;
        let ctx = match &outcome.result {
            Ok(membership) => {
                let ctx =
                    shared.members().apply(&outcome.changes, &outcome.context, &|id| shared.initial_peer_urls(id));
                if let Some(c) = shared.members().cluster {
                    shared.cluster.store(c.get(), std::sync::atomic::Ordering::Relaxed);
                }
                let learner = membership.learners.contains(&me);
                shared.learner.store(learner, std::sync::atomic::Ordering::Relaxed);
                crate::log_info!(
                    "applied a configuration change",
                    "voters" => format!("{:?}", membership.voters.iter().map(|m| m.get()).collect::<Vec<_>>()),
                    "learners" => format!("{:?}", membership.learners.iter().map(|m| m.get()).collect::<Vec<_>>())
                );
                self.update_lone_voter(node);
                self.update_peers(node);
                ctx
            }
            Err(e) => {
                crate::log_warn!("a configuration change was refused", "error" => e.as_str());
                members::Context::decode(&outcome.context)
            }
        };
        if let Some(ctx) = ctx.filter(|c| c.origin == me) {
            if let Some(tx) = self.op_waits.borrow_mut().remove(&ctx.request) {
                tx.send(if outcome.result.is_ok() { Ok(ctx.member) } else { Err(ClusterError::Timeout) });
            }
        }
        if self.core.borrow().is_removed() {
            self.stop_removed(me);
        }
    }

    /// This member was removed from the cluster: it stops, as etcd's do.
    fn stop_removed(&self, me: MemberId) {
        if self.stopping.replace(true) {
            return;
        }
        crate::log_warn!("the member has been permanently removed from the cluster", "local-member-id" => me);
        // Give the answer to the client that removed it time to leave.
        monoio::spawn(async {
            monoio::time::sleep(Duration::from_millis(500)).await;
            std::process::exit(0);
        });
    }

    /// Points the transport at the table's members, starting it if this
    /// is the first other member.
    fn update_peers(self: &Rc<Self>, node: &NodeHandle) {
        let shared = node.shared();
        let peers = super::peer_addrs(shared);
        let removed: Vec<MemberId> = shared.members().removed.iter().copied().collect();
        if let Some(t) = self.transport() {
            t.set_removed(removed);
            t.set_peer_addrs(peers);
        } else if !peers.is_empty() {
            let t = super::start_transport(shared);
            t.set_removed(removed);
            *self.transport.borrow_mut() = Some(t.clone());
            self.spawn_receiver(t);
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
    fn carry_out(self: &Rc<Self>, node: &NodeHandle) {
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
                if m.class == RaftClass::Snapshot {
                    // The snapshot's files go first, on the snapshot stream.
                    monoio::spawn(self.clone().send_snapshot(node.clone(), m.to, Bytes::from(m.bytes)));
                    continue;
                }
                if let Some(t) = self.transport() {
                    if t.send(m.to, MessageClass::Raft, Bytes::from(m.bytes)).is_err() {
                        self.core.borrow_mut().report_unreachable(m.to);
                    }
                }
            }
            if let Some(p) = rd.persist {
                if let Some(snap) = &p.snapshot {
                    self.install_from_leader(node, snap);
                }
                self.jobs.borrow_mut().push_back(Job::Persist(Box::new(p)));
                self.jobs_ready.notify();
            }
            if let Some(last) = rd.committed.last() {
                self.snap.borrow_mut().handed = (last.index.get(), last.term.get());
            }
            for c in rd.committed {
                let data = match c.payload {
                    Payload::Data(d) => aligned_copy(&d),
                    Payload::Empty => Default::default(),
                    Payload::ConfChange(outcome) => {
                        self.conf_changed(node, &outcome);
                        Default::default()
                    }
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
            self.maybe_snapshot(node, rd.checkpoint_wanted);
        }
    }

    /// Group commit: every Ready queued while the previous write was in
    /// flight goes into the next one.
    async fn flush_loop(self: Rc<Self>, mut wal: Wal, mut hard_state: wal::HardState) {
        loop {
            let jobs: Vec<Job> = self.jobs.borrow_mut().drain(..).collect();
            if jobs.is_empty() {
                self.jobs_ready.notified().await;
                continue;
            }
            let mut last = 0;
            let mut release = None;
            for job in &jobs {
                let p = match job {
                    Job::Persist(p) => p,
                    Job::Release(index) => {
                        release = Some(*index);
                        continue;
                    }
                };
                if let Some(snap) = &p.snapshot {
                    // The log restarts after an installed snapshot.
                    if let Err(e) = wal.reset_after(snap.index) {
                        fatal(&format!("WAL append: {e}"));
                    }
                }
                let entries: Vec<_> = p.entries.iter().map(|e| e.as_wal()).collect();
                if let Err(e) = wal.append(&entries, p.hard_state) {
                    fatal(&format!("WAL append: {e}"));
                }
                if let Some(hs) = p.hard_state {
                    hard_state = hs;
                }
                last = p.number.0;
            }
            if release.is_some() {
                // The newest hard state goes into the segments that stay.
                if let Err(e) = wal.append(&[], Some(hard_state)) {
                    fatal(&format!("WAL append: {e}"));
                }
            }
            if let Err(e) = wal.flush().await {
                fatal(&format!("WAL write: {e}"));
            }
            if let Some(index) = release {
                match wal.release_through(index) {
                    Ok(n) if n > 0 => {
                        crate::log_info!("released WAL segments", "segments" => n, "through-index" => index.get())
                    }
                    Ok(_) => {}
                    Err(e) => crate::log_warn!("cannot release WAL segments", "error" => e.to_string()),
                }
            }
            if last > 0 {
                self.persisted.set(last);
            }
            self.wake();
        }
    }

    /// Starts a snapshot at the last handed-out entry when `--snapshot-count`
    /// entries were applied since the last one, a shard holds many dirty
    /// pages, or a member needs one (then with parts to send).
    fn maybe_snapshot(self: &Rc<Self>, node: &NodeHandle, wanted: bool) {
        let (index, term, parts) = {
            let snap = self.snap.borrow();
            let (index, term) = snap.handed;
            let dirty = node.shared().stats.dirty.iter().any(|d| d.load(Ordering::Relaxed) > DIRTY_PAGES_CHECKPOINT);
            let send = wanted && (index > snap.last || !snap.sendable);
            let due = index >= snap.last + node.shared().snapshot_count || (dirty && index > snap.last) || send;
            if snap.making.is_some() || !due || index == 0 {
                return;
            }
            (index, term, wanted)
        };
        let root = self.snap.borrow().root.clone();
        let tmp = root.join(format!("{index:016x}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = std::fs::create_dir_all(&tmp) {
            crate::log_warn!("cannot make a snapshot", "dir" => tmp.display().to_string(), "error" => e.to_string());
            return;
        }
        {
            let mut snap = self.snap.borrow_mut();
            snap.making = Some(index);
            snap.parts.clear();
            snap.committed = 0;
        }
        // Conf changes up to `index` are applied: this is the table and the
        // configuration at `index`.
        let membership = self.core.borrow().membership();
        let members = node.shared().members().clone();
        let job = std::sync::Arc::new(SnapJob { index, dir: tmp.clone(), parts });
        node.broadcast(|| Msg::Snapshot(job.clone()));
        monoio::spawn(self.clone().finish_snapshot(node.clone(), index, term, parts, membership, members, tmp));
    }

    /// A shard reported its prepared checkpoint (and part) of the snapshot
    /// being made.
    pub fn part_done(&self, done: PartDone) {
        let mut snap = self.snap.borrow_mut();
        if snap.making == Some(done.index) {
            snap.parts.push(done);
            self.parts_ready.notify();
        }
    }

    /// A shard committed its checkpoint of the snapshot being made.
    pub fn checkpoint_committed(&self, index: u64) {
        let mut snap = self.snap.borrow_mut();
        if snap.making == Some(index) {
            snap.committed += 1;
            self.parts_ready.notify();
        }
    }

    /// Waits for every shard's prepared checkpoint (and part), writes
    /// `global`, the manifest and the `stores` record, makes the directory
    /// the newest snapshot (the decision), has the shards commit, then
    /// compacts the log and releases the WAL. Once shards have prepared,
    /// a failure here stops the node (their checkpoints cannot be
    /// abandoned; a restart recovers from the last decision).
    #[allow(clippy::too_many_arguments)]
    async fn finish_snapshot(
        self: Rc<Self>,
        node: NodeHandle,
        index: u64,
        term: u64,
        sendable: bool,
        membership: Membership,
        members: members::MemberTable,
        tmp: PathBuf,
    ) {
        let started = Instant::now();
        let shards = node.shared().shards;
        loop {
            if self.snap.borrow().parts.len() >= shards {
                break;
            }
            self.parts_ready.notified().await;
        }
        let mut parts = std::mem::take(&mut self.snap.borrow_mut().parts);
        parts.sort_by_key(|p| p.shard);
        let result: Result<(Manifest, u64), String> = async {
            let mut files = Vec::new();
            for p in &parts {
                if let Some(r) = &p.result {
                    files.push(r.clone()?);
                }
            }
            let first = &parts[0];
            if parts.iter().any(|p| p.map != first.map) {
                return Err("the shards held different range maps at one log index".to_string());
            }
            let global =
                Global { rev: first.rev, compact_rev: first.compact_rev, leases: first.leases.clone(), members };
            files.push(write_file(&tmp.join(GLOBAL_FILE), GLOBAL_FILE, global.encode()).await?);
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let manifest = Manifest { index, term, membership, files };
            write_file(&tmp.join(MANIFEST_FILE), MANIFEST_FILE, manifest.encode()).await?;
            let record = Stores {
                index,
                map_version: first.map.0,
                splits: first.map.1.clone(),
                shards: parts.iter().map(|p| p.prepared.clone()).collect(),
            };
            write_file(&tmp.join(STORES_FILE), STORES_FILE, record.encode()).await?;
            sync_dir(&tmp)?;
            let root = self.snap.borrow().root.clone();
            snapshots::put_in_place(&root, &tmp, index)?;
            Ok((manifest, bytes))
        }
        .await;
        let (manifest, bytes) = match result {
            Ok(d) => d,
            Err(e) => fatal(&format!("cannot make the snapshot at index {index}: {e}")),
        };
        node.broadcast(|| Msg::CheckpointCommit(index));
        loop {
            if self.snap.borrow().committed >= shards {
                break;
            }
            self.parts_ready.notified().await;
        }
        {
            let mut core = self.core.borrow_mut();
            if index >= core.compacted_index().get() {
                // A snapshot without parts cannot be sent: Raft asks for
                // one with parts when a member needs it.
                let data = if sendable { Bytes::from(manifest.encode()) } else { Bytes::new() };
                if let Err(e) = core.compact_to(RaftIndex(index), data) {
                    crate::log_warn!("cannot compact the raft log", "index" => index, "error" => e.to_string());
                }
            }
        }
        {
            let mut snap = self.snap.borrow_mut();
            snap.making = None;
            snap.last = snap.last.max(index);
            snap.sendable = sendable;
            snapshots::prune(&snap.root);
        }
        self.jobs.borrow_mut().push_back(Job::Release(RaftIndex(index)));
        self.jobs_ready.notify();
        crate::log_info!(
            "saved snapshot",
            "snapshot-index" => index,
            "parts" => sendable,
            "bytes" => bytes,
            "took" => format!("{:?}", started.elapsed())
        );
        self.wake();
    }

    /// Streams a snapshot's files to `to`, then Raft's MsgSnapshot, and
    /// tells Raft how it went.
    async fn send_snapshot(self: Rc<Self>, node: NodeHandle, to: MemberId, raft_msg: Bytes) {
        let ok = match self.stream_snapshot(&node, to, &raft_msg).await {
            Ok(bytes) => {
                crate::log_info!("sent a snapshot", "to" => to, "bytes" => bytes);
                true
            }
            Err(e) => {
                crate::log_warn!("cannot send a snapshot", "to" => to, "error" => e);
                false
            }
        };
        self.core.borrow_mut().report_snapshot(to, ok);
        self.wake();
    }

    async fn stream_snapshot(&self, _node: &NodeHandle, to: MemberId, raft_msg: &Bytes) -> Result<u64, String> {
        use protobuf::Message as _;
        let msg = raft::eraftpb::Message::parse_from_bytes(raft_msg).map_err(|e| e.to_string())?;
        let manifest = Manifest::decode(&msg.get_snapshot().data).map_err(|e| e.to_string())?;
        let dir = snapshots::dir_of(&self.snap.borrow().root, manifest.index);
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut sent = 0u64;
        for (n, f) in manifest.files.iter().enumerate() {
            let path = dir.join(&f.name);
            let file =
                monoio::fs::File::open(&path).await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let mut offset = 0u64;
            while offset < f.bytes {
                let want = (f.bytes - offset).min(snapshots::CHUNK_BYTES as u64) as usize;
                // monoio fills a Vec's whole capacity: exactly `want` bytes.
                let (res, buf) = file.read_exact_at(Vec::with_capacity(want), offset).await;
                res.map_err(|e| format!("cannot read {} at offset {offset}: {e}", path.display()))?;
                let m = Bytes::from(snapshots::encode_chunk(manifest.index, n as u32, offset, &buf));
                self.send_paced(to, m, deadline).await?;
                offset += want as u64;
                sent += want as u64;
            }
            let _ = file.close().await;
        }
        let mut last = Vec::with_capacity(raft_msg.len() + 1);
        last.push(snapshots::STREAM_RAFT);
        last.extend_from_slice(raft_msg);
        self.send_paced(to, Bytes::from(last), deadline).await?;
        Ok(sent)
    }

    /// Sends on the snapshot stream, waiting while its queue is full.
    async fn send_paced(&self, to: MemberId, msg: Bytes, deadline: Instant) -> Result<(), String> {
        loop {
            let Some(t) = self.transport() else { return Err("no peer transport".into()) };
            match t.send(to, MessageClass::Snapshot, msg.clone()) {
                Ok(()) => return Ok(()),
                Err(crate::transport::SendError::QueueFull { .. }) if Instant::now() < deadline => {
                    monoio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Takes snapshot-stream messages in order: writes chunks to a
    /// `.recv` directory, and when Raft's MsgSnapshot arrives checks every
    /// file against its manifest, makes the directory the newest snapshot
    /// and hands the message to Raft.
    async fn snapshot_receiver(self: Rc<Self>, node: NodeHandle) {
        let mut recv: Option<Receiving> = None;
        loop {
            let next = self.snap_in.borrow_mut().pop_front();
            let Some((peer, bytes)) = next else {
                self.snap_in_ready.notified().await;
                continue;
            };
            match bytes.first() {
                Some(&snapshots::STREAM_CHUNK) => {
                    let Some((index, file, offset, data)) = snapshots::decode_chunk(&bytes[1..]) else {
                        crate::log_warn!("refused a malformed snapshot chunk", "peer" => peer);
                        continue;
                    };
                    if recv.as_ref().is_none_or(|r| r.index != index || r.from != peer) {
                        recv = self.start_receiving(peer, index);
                    }
                    let Some(r) = recv.as_mut() else { continue };
                    if let Err(e) = r.write(file, offset, data).await {
                        crate::log_warn!("dropped a snapshot being received", "peer" => peer, "error" => e);
                        recv = None;
                    }
                }
                Some(&snapshots::STREAM_RAFT) => {
                    let raft_msg = bytes.slice(1..);
                    let r = recv.take();
                    match self.finish_receiving(&node, peer, r, &raft_msg).await {
                        Ok(index) => {
                            crate::log_info!("received a snapshot", "from" => peer, "snapshot-index" => index);
                            self.inbound.borrow_mut().push_back((peer, MessageClass::Raft, raft_msg));
                            self.wake();
                        }
                        Err(e) => crate::log_warn!("refused a snapshot", "peer" => peer, "error" => e),
                    }
                }
                _ => crate::log_warn!("refused a snapshot-stream message of unknown kind", "peer" => peer),
            }
        }
    }

    fn start_receiving(&self, from: MemberId, index: u64) -> Option<Receiving> {
        let root = self.snap.borrow().root.clone();
        let dir = root.join(format!("{index:016x}.recv"));
        let _ = std::fs::remove_dir_all(&dir);
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(Receiving { index, from, dir, files: HashMap::new() }),
            Err(e) => {
                crate::log_warn!("cannot receive a snapshot", "dir" => dir.display().to_string(), "error" => e.to_string());
                None
            }
        }
    }

    async fn finish_receiving(
        &self,
        node: &NodeHandle,
        peer: MemberId,
        recv: Option<Receiving>,
        raft_msg: &Bytes,
    ) -> Result<u64, String> {
        let me = node.shared().member;
        let msg = crate::raft::wire::decode(raft_msg, me.get(), peer.get()).map_err(|e| e.to_string())?;
        let manifest = Manifest::decode(&msg.get_snapshot().data).map_err(|e| e.to_string())?;
        let index = manifest.index;
        if msg.get_snapshot().get_metadata().index != index {
            return Err("the manifest's index is not the snapshot's".into());
        }
        let known = |name: &str| {
            name == GLOBAL_FILE
                || name.strip_prefix("part-").is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
        };
        if let Some(f) = manifest.files.iter().find(|f| !known(&f.name)) {
            return Err(format!("the manifest names an unexpected file {:?}", f.name));
        }
        let root = self.snap.borrow().root.clone();
        let dir = snapshots::dir_of(&root, index);
        if recv.is_none() && dir.join(MANIFEST_FILE).exists() {
            // Sent again with no chunks: the files are here already.
            return Ok(index);
        }
        let mut recv = match recv {
            Some(r) if r.index == index && r.from == peer => r,
            _ => self.start_receiving(peer, index).ok_or("cannot receive")?,
        };
        for (n, f) in manifest.files.iter().enumerate() {
            let got = recv.files.remove(&(n as u32));
            let (bytes, crc) = match &got {
                Some(rf) => (rf.bytes, rf.crc),
                None => (0, 0),
            };
            if bytes != f.bytes || (f.bytes > 0 && crc != f.crc) {
                return Err(format!(
                    "file {} arrived with {bytes} bytes and CRC {crc:08x}, expected {} and {:08x}",
                    f.name, f.bytes, f.crc
                ));
            }
            let from = recv.dir.join(format!("file-{n}"));
            match got {
                Some(rf) => {
                    rf.file.sync_all().await.map_err(|e| format!("cannot fsync {}: {e}", from.display()))?;
                    let _ = rf.file.close().await;
                }
                None => {
                    std::fs::File::create(&from).map_err(|e| format!("cannot create {}: {e}", from.display()))?;
                }
            }
            std::fs::rename(&from, recv.dir.join(&f.name))
                .map_err(|e| format!("cannot rename {}: {e}", from.display()))?;
        }
        write_file(&recv.dir.join(MANIFEST_FILE), MANIFEST_FILE, manifest.encode()).await?;
        sync_dir(&recv.dir)?;
        snapshots::put_in_place(&root, &recv.dir, index)?;
        Ok(index)
    }

    /// Raft installs a snapshot from the leader: every shard replaces its
    /// state with it (before the entries after it), and so do the member
    /// table and the lessor.
    fn install_from_leader(self: &Rc<Self>, node: &NodeHandle, meta: &crate::raft::SnapshotMeta) {
        let index = meta.index.get();
        let root = self.snap.borrow().root.clone();
        let dir = snapshots::dir_of(&root, index);
        let manifest = match Manifest::decode(&meta.data) {
            Ok(m) => m,
            Err(e) => fatal(&format!("the snapshot Raft installs does not decode: {e}")),
        };
        let gpath = dir.join(GLOBAL_FILE);
        let global = match std::fs::read(&gpath)
            .map_err(|e| e.to_string())
            .and_then(|b| Global::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(g) => g,
            Err(e) => fatal(&format!("cannot read {}: {e}", gpath.display())),
        };
        install_everywhere(node, manifest, dir, global, None);
        {
            let mut snap = self.snap.borrow_mut();
            snap.last = snap.last.max(index);
            snap.sendable = true;
            snap.handed = (index, meta.term.get());
        }
        self.update_lone_voter(node);
        self.update_peers(node);
        crate::log_info!("installed a snapshot", "snapshot-index" => index);
    }
}

/// State being received on the snapshot stream.
struct Receiving {
    index: u64,
    from: MemberId,
    dir: PathBuf,
    files: HashMap<u32, RecvFile>,
}

struct RecvFile {
    file: monoio::fs::File,
    bytes: u64,
    crc: u32,
}

impl Receiving {
    /// Writes a chunk; chunks of a file arrive in order.
    async fn write(&mut self, n: u32, offset: u64, data: &[u8]) -> Result<(), String> {
        if !self.files.contains_key(&n) {
            if offset != 0 || self.files.len() >= 65_536 {
                return Err(format!("file {n} does not start at offset 0"));
            }
            let path = self.dir.join(format!("file-{n}"));
            let file =
                monoio::fs::File::create(&path).await.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            self.files.insert(n, RecvFile { file, bytes: 0, crc: 0 });
        }
        let Some(rf) = self.files.get_mut(&n) else { return Err("lost a file".into()) };
        if offset != rf.bytes {
            return Err(format!("file {n}: chunk at {offset}, expected {}", rf.bytes));
        }
        let (res, _) = rf.file.write_all_at(data.to_vec(), offset).await;
        res.map_err(|e| format!("cannot write a snapshot chunk: {e}"))?;
        rf.crc = crc32c::crc32c_append(rf.crc, data);
        rf.bytes += data.len() as u64;
        Ok(())
    }
}

/// Queues an install of the snapshot in `dir` on every shard, and takes
/// its member table and leases on this reactor (the consensus one).
pub(super) fn install_everywhere(
    node: &NodeHandle,
    manifest: Manifest,
    dir: PathBuf,
    global: Global,
    stores: Option<Stores>,
) {
    let shared = node.shared();
    {
        let mut table = shared.members();
        *table = global.members.clone();
        if let Some(c) = table.cluster {
            shared.cluster.store(c.get(), std::sync::atomic::Ordering::Relaxed);
        }
    }
    let learner = manifest.membership.learners.contains(&shared.member);
    shared.learner.store(learner, std::sync::atomic::Ordering::Relaxed);
    node.reset_leases(&global.leases);
    let inst = std::sync::Arc::new(Install { manifest, dir, global, stores });
    node.broadcast(|| Msg::Install(inst.clone()));
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

/// A membership request as a follower forwards it to the leader.
fn encode_member_request(request: u64, op: &MemberOp) -> Vec<u8> {
    let mut b = request.to_le_bytes().to_vec();
    let (kind, id, learner, urls): (u8, u64, bool, &[String]) = match op {
        MemberOp::Add { peer_urls, learner } => (1, 0, *learner, peer_urls),
        MemberOp::Remove { id } => (2, id.get(), false, &[]),
        MemberOp::Update { id, peer_urls } => (3, id.get(), false, peer_urls),
        MemberOp::Promote { id } => (4, id.get(), false, &[]),
    };
    b.push(kind);
    b.push(u8::from(learner));
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(urls.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for u in urls.iter().take(u16::MAX as usize) {
        let u = &u.as_bytes()[..u.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(u.len() as u16).to_le_bytes());
        b.extend_from_slice(u);
    }
    b
}

/// Decodes [`encode_member_request`]; `None` for anything malformed.
fn decode_member_request(mut b: &[u8]) -> Option<(u64, MemberOp)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    let request = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
    let kind = take(&mut b, 1)?[0];
    let learner = take(&mut b, 1)?[0] == 1;
    let id = MemberId(u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?));
    let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
    if n > 64 {
        return None;
    }
    let mut urls = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        urls.push(String::from_utf8(take(&mut b, len)?.to_vec()).ok()?);
    }
    if !b.is_empty() {
        return None;
    }
    let op = match kind {
        1 => MemberOp::Add { peer_urls: urls, learner },
        2 => MemberOp::Remove { id },
        3 => MemberOp::Update { id, peer_urls: urls },
        4 => MemberOp::Promote { id },
        _ => return None,
    };
    Some((request, op))
}

const REFUSALS: [ClusterError; 9] = [
    ClusterError::MemberNotFound,
    ClusterError::MemberExists,
    ClusterError::PeerUrlExists,
    ClusterError::BadUrls,
    ClusterError::NotLearner,
    ClusterError::LearnerNotReady,
    ClusterError::TooManyLearners,
    ClusterError::NoLeader,
    ClusterError::Timeout,
];

fn encode_refusal(request: u64, e: ClusterError) -> Vec<u8> {
    let code = REFUSALS.iter().position(|r| *r == e).unwrap_or(REFUSALS.len() - 1) as u8;
    let mut b = request.to_le_bytes().to_vec();
    b.push(code);
    b
}

fn decode_refusal(b: &[u8]) -> Option<(u64, ClusterError)> {
    if b.len() != 9 {
        return None;
    }
    let request = u64::from_le_bytes(b[..8].try_into().ok()?);
    Some((request, *REFUSALS.get(b[8] as usize)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_membership_messages_round_trip_and_garbage_is_refused() {
        let ops = [
            MemberOp::Add { peer_urls: vec!["http://127.0.0.4:2380".into()], learner: true },
            MemberOp::Remove { id: MemberId(9) },
            MemberOp::Update { id: MemberId(3), peer_urls: vec!["http://a:1".into(), "http://b:2".into()] },
            MemberOp::Promote { id: MemberId(4) },
        ];
        for (i, op) in ops.iter().enumerate() {
            let b = encode_member_request(i as u64, op);
            assert_eq!(decode_member_request(&b), Some((i as u64, op.clone())));
            for cut in 0..b.len() {
                assert_eq!(decode_member_request(&b[..cut]), None);
            }
        }
        for e in REFUSALS {
            assert_eq!(decode_refusal(&encode_refusal(5, e)), Some((5, e)));
        }
        assert_eq!(decode_refusal(&[0; 8]), None);
        assert_eq!(decode_refusal(&[0, 0, 0, 0, 0, 0, 0, 0, 200]), None);
    }
}
