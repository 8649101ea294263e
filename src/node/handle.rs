//! One reactor's view of the node: routes messages from other reactors,
//! and serves the etcd services' requests by proposing writes to the
//! sequencer and reading from the shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::msg::{Answer, Msg, Query, ReadError, ReadReply, ReadReq};
use super::sequencer::Proposals;
use super::shard::{Shard, ShardLink, ShardState};
use super::Shared;
use crate::api::backend::{
    Backend, ClusterError, Identity, LeaseGranted, LeaseTtl, MemberChanged, MemberInfo, MemberRequest, ReadResult,
    StatusInfo, WatchSession,
};
use crate::api::grpc::LocalBoxFuture;
use crate::apply::command::{Command, Item, Origin, Range};
use crate::apply::range::{merge_parts, Shape};
use crate::apply::{merge, ApplyError, Exchange, LeaseChange, Outcome, RangeMap, Reply};
use crate::lease::Lessor;
use crate::mvcc::{End, Event, KeyHistory, MvccStore};
use crate::runtime::local::{oneshot, Notify, Sender};
use crate::runtime::{Inbox, Outbox};
use crate::types::{ReactorId, ShardId};
use crate::watch::Hub;

use super::SEQUENCER;

struct WriteWait {
    parts: Vec<Reply>,
    tx: Option<Sender<Outcome>>,
}

pub(super) struct Local {
    pub(super) me: ReactorId,
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Outbox<Msg>,
    /// The range map this reactor routes reads with: its shard's.
    map: RefCell<Rc<RangeMap>>,
    map_changed: Notify,
    pub(super) shard: Rc<Shard>,
    pub(super) proposals: Option<Rc<Proposals>>,
    seq: Cell<u64>,
    writes: RefCell<HashMap<u64, WriteWait>>,
    reads: RefCell<HashMap<u64, Sender<ReadReply>>>,
    answers: RefCell<HashMap<u64, Sender<Answer>>>,
    /// The leader's clock on leases (reactor 0 only).
    pub(super) lessor: Option<RefCell<Lessor>>,
    /// This reactor's watches.
    pub(super) hub: RefCell<Hub>,
    pub(super) watch: super::watches::WatchState,
    /// The consensus loop (reactor 0 only).
    consensus: RefCell<Option<Rc<super::consensus::Consensus>>>,
}

/// A reactor's handle on the node; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle(Rc<Local>);

impl Local {
    /// The shard this reactor owns.
    fn me_shard(&self) -> ShardId {
        ShardId(self.me.0)
    }
}

impl NodeHandle {
    pub(super) fn new(
        me: ReactorId,
        shared: Arc<Shared>,
        outbox: Outbox<Msg>,
        map: Rc<RangeMap>,
        shard: Rc<Shard>,
    ) -> NodeHandle {
        let proposals = (me == SEQUENCER).then(|| Rc::new(Proposals::default()));
        let lessor = (me == SEQUENCER).then(|| RefCell::new(Lessor::new(shared.min_lease_ttl)));
        let hub = RefCell::new(Hub::new(shared.shards));
        NodeHandle(Rc::new(Local {
            me,
            shared,
            outbox,
            map: RefCell::new(map),
            map_changed: Notify::default(),
            shard,
            proposals,
            seq: Cell::new(0),
            writes: RefCell::new(HashMap::new()),
            reads: RefCell::new(HashMap::new()),
            answers: RefCell::new(HashMap::new()),
            lessor,
            hub,
            watch: Default::default(),
            consensus: RefCell::new(None),
        }))
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.0.shared
    }

    pub(super) fn shared_arc(&self) -> Arc<Shared> {
        self.0.shared.clone()
    }

    /// Shard 0 applied members' attributes.
    pub(super) fn on_published(&self, published: Vec<crate::apply::command::Publish>) {
        let mut table = self.0.shared.members();
        for p in published {
            table.published.insert(p.member, p);
        }
    }

    /// The lessor takes a snapshot's leases with fresh TTLs (reactor 0).
    pub(super) fn reset_leases(&self, leases: &[(i64, i64)]) {
        if let Some(lessor) = &self.0.lessor {
            lessor.borrow_mut().reset(leases, std::time::Instant::now());
        }
    }

    /// A membership change, on the consensus reactor.
    async fn member_change_here(&self, req: MemberRequest) -> Result<MemberChanged, ClusterError> {
        let Some(c) = self.0.consensus.borrow().clone() else { return Err(ClusterError::Stopped) };
        let id = c.member_op(self, req).await?;
        let members = self.members();
        let member = members.iter().find(|m| m.id == id.get()).cloned().unwrap_or(MemberInfo {
            id: id.get(),
            name: String::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            is_learner: false,
        });
        Ok(MemberChanged { member, members })
    }

    /// etcd's MoveLeader, on the consensus reactor.
    async fn move_leader_here(&self, target: u64) -> Result<(), ClusterError> {
        let shared = &self.0.shared;
        let voter = match &*self.0.consensus.borrow() {
            Some(c) => c.membership().voters.contains(&crate::types::MemberId(target)),
            None => false,
        };
        if !self.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        if !voter {
            return Err(ClusterError::BadTransferee);
        }
        let from = shared.member.get();
        crate::log_info!("leadership transfer starting", "local-member-id" => shared.member, "transferee-member-id" => crate::types::MemberId(target));
        let started = std::time::Instant::now();
        if target != from {
            let Some(c) = self.0.consensus.borrow().clone() else { return Err(ClusterError::Stopped) };
            if c.transfer_leader(crate::types::MemberId(target)).is_err() {
                return Err(ClusterError::NotLeader);
            }
        }
        while shared.stats.leader.load(Ordering::Relaxed) != target {
            if started.elapsed() >= shared.request_timeout {
                return Err(ClusterError::TransferTimeout);
            }
            monoio::time::sleep(shared.heartbeat).await;
        }
        crate::log_info!("leadership transfer finished", "old-leader-member-id" => shared.member, "new-leader-member-id" => crate::types::MemberId(target), "took" => format!("{:?}", started.elapsed()));
        Ok(())
    }

    pub(super) fn proposals(&self) -> Rc<Proposals> {
        match &self.0.proposals {
            Some(p) => p.clone(),
            None => super::fatal("the sequencer runs on reactor 0 only"),
        }
    }

    pub(super) fn link(&self) -> Rc<Link> {
        Rc::new(Link(self.clone()))
    }

    pub(super) fn next_seq(&self) -> u64 {
        let s = self.0.seq.get() + 1;
        self.0.seq.set(s);
        s
    }

    /// Sends to a reactor; to this one, delivers at once.
    pub(super) fn send(&self, to: ReactorId, msg: Msg) {
        if to == self.0.me {
            self.deliver(msg);
        } else {
            self.0.outbox.push(to, msg);
        }
    }

    /// Sends a message made by `make` to every reactor, this one included.
    pub(super) fn broadcast(&self, make: impl Fn() -> Msg) {
        for r in 0..self.0.outbox.reactors() {
            self.send(ReactorId(r as u16), make());
        }
    }

    /// Receives other reactors' messages, forever.
    pub(super) async fn dispatch(self, inbox: Inbox<Msg>) {
        while let Ok(batch) = inbox.recv_async().await {
            for msg in batch {
                self.deliver(msg);
            }
        }
    }

    fn deliver(&self, msg: Msg) {
        let l = &self.0;
        match msg {
            Msg::Propose(item) => match &l.proposals {
                Some(p) => p.push(item),
                None => crate::log_error!("a proposal reached a reactor without the sequencer", "reactor" => l.me.0),
            },
            Msg::Committed(c) => l.shard.enqueue(c),
            Msg::Exchange(e) => l.shard.add_exchange(e),
            Msg::Read(req) => {
                let this = self.clone();
                monoio::spawn(async move {
                    let from = req.from;
                    let reply = this.0.shard.read(req).await;
                    this.send(from, Msg::ReadDone(reply));
                });
            }
            Msg::ReadDone(r) => {
                if let Some(tx) = l.reads.borrow_mut().remove(&r.seq) {
                    tx.send(r);
                }
            }
            Msg::Reply(r) => self.on_reply(r),
            Msg::Serve(index) => l.shard.serve_from(index),
            Msg::Remap(m) => l.shard.enqueue_remap(m),
            Msg::Transfer { version, histories } => l.shard.add_transfer(version, histories),
            Msg::Ask {
                seq,
                from,
                q: q @ (Query::ReadIndex | Query::HashKv { .. } | Query::MoveLeader { .. } | Query::Member(_)),
            } => {
                let this = self.clone();
                monoio::spawn(async move {
                    let a = this.answer_later(q).await;
                    this.send(from, Msg::Answer { seq, a });
                });
            }
            Msg::Ask { seq, from, q } => {
                let a = self.answer(from, q);
                self.send(from, Msg::Answer { seq, a });
            }
            Msg::Answer { seq, a } => {
                if let Some(tx) = l.answers.borrow_mut().remove(&seq) {
                    tx.send(a);
                }
            }
            Msg::WatchFeed { shard, upto, events } => self.on_feed(shard, upto, events),
            Msg::WatchResync { shard, upto } => {
                self.local().hub.borrow_mut().resync(shard.idx(), upto);
                self.pump();
            }
            Msg::Snapshot(job) => l.shard.enqueue_item(super::shard::Queued::Snapshot(job)),
            Msg::Install(inst) => l.shard.enqueue_item(super::shard::Queued::Install(inst)),
            Msg::SnapshotPart(done) => match &*l.consensus.borrow() {
                Some(c) => c.part_done(done),
                None => crate::log_error!("a snapshot part reached a reactor without the sequencer"),
            },
            Msg::CheckpointCommit(index) => {
                monoio::spawn(super::shard::commit_checkpoint(l.shard.clone(), self.link(), index));
            }
            Msg::CheckpointCommitted(index) => match &*l.consensus.borrow() {
                Some(c) => c.checkpoint_committed(index),
                None => crate::log_error!("a checkpoint commit reached a reactor without the sequencer"),
            },
            Msg::WatchLeave { from } => {
                l.shard.state.borrow_mut().watch_reactors.remove(&from);
            }
        }
    }

    fn on_reply(&self, r: Reply) {
        let seq = r.origin.seq;
        let mut writes = self.0.writes.borrow_mut();
        let Some(w) = writes.get_mut(&seq) else { return };
        let total = r.parts_total as usize;
        w.parts.push(r);
        if w.parts.len() >= total {
            if let Some(w) = writes.remove(&seq) {
                drop(writes);
                if let Some(tx) = w.tx {
                    tx.send(merge(w.parts));
                }
            }
        }
    }

    pub(super) async fn propose_cmd(self, cmd: Command) -> Outcome {
        let seq = self.next_seq();
        let (tx, rx) = oneshot();
        self.0.writes.borrow_mut().insert(seq, WriteWait { parts: Vec::new(), tx: Some(tx) });
        let origin = Origin { member: self.0.shared.member.get(), reactor: self.0.me.0, boot: self.0.shared.boot, seq };
        self.send(SEQUENCER, Msg::Propose(Item { origin, cmd }));
        // Dropping this future (the client went away) leaves the entry to
        // be removed when the reply arrives.
        match monoio::time::timeout(self.0.shared.request_timeout, rx).await {
            Ok(Some(o)) => o,
            Ok(None) => Outcome { revision: 0, result: Err(ApplyError::Stopped) },
            Err(_) => {
                self.0.writes.borrow_mut().remove(&seq);
                Outcome { revision: 0, result: Err(ApplyError::Timeout) }
            }
        }
    }

    async fn read_shard(&self, shard: ShardId, req: ReadReq) -> ReadReply {
        let owner = ReactorId(shard.0);
        if owner == self.0.me {
            return self.0.shard.read(req).await;
        }
        let (tx, rx) = oneshot();
        self.0.reads.borrow_mut().insert(req.seq, tx);
        self.send(owner, Msg::Read(req));
        rx.await.unwrap_or(ReadReply { seq: 0, applied_rev: 0, result: Err(ReadError::Apply(ApplyError::Stopped)) })
    }

    /// Asks reactor `to` a question (answered at once if it is this one).
    pub(super) async fn ask(&self, to: ReactorId, q: Query) -> Option<Answer> {
        if to == self.0.me {
            if let Query::ReadIndex | Query::HashKv { .. } | Query::MoveLeader { .. } | Query::Member(_) = q {
                return Some(self.answer_later(q).await);
            }
            return Some(self.answer(to, q));
        }
        let seq = self.next_seq();
        let (tx, rx) = oneshot();
        self.0.answers.borrow_mut().insert(seq, tx);
        self.0.outbox.push(to, Msg::Ask { seq, from: self.0.me, q });
        rx.await
    }

    /// Answers a question from reactor `from`.
    fn answer(&self, from: ReactorId, q: Query) -> Answer {
        let l = &self.0;
        match q {
            Query::SplitKey { n, from_high } => Answer::SplitKey(l.shard.state.borrow().store.key_at(n, from_high)),
            Query::History { key, range_end, from: lo, to, map_version } => {
                Answer::History(l.shard.history(&key, &range_end, lo, to, map_version))
            }
            Query::WatchJoin => {
                let mut s = l.shard.state.borrow_mut();
                s.watch_reactors.insert(from);
                Answer::Joined { shard: s.id, rev: s.rev }
            }
            Query::LeaseKeepAlive { id } => {
                Answer::Ttl(l.lessor.as_ref().and_then(|x| x.borrow_mut().keep_alive(id, std::time::Instant::now())))
            }
            Query::LeaseTimeToLive { id } => Answer::TimeToLive(
                l.lessor.as_ref().and_then(|x| x.borrow().time_to_live(id, std::time::Instant::now())),
            ),
            Query::LeaseIds => Answer::Ids(l.lessor.as_ref().map(|x| x.borrow().ids()).unwrap_or_default()),
            Query::LeaseKeys { id } => {
                Answer::Keys(crate::apply::LeaseState::attached(&l.shard.state.borrow().leases, id))
            }
            // Answered asynchronously (`answer_later`), never here.
            Query::ReadIndex => Answer::ReadIndex(Err(ApplyError::Stopped)),
            Query::HashKv { crc, .. } => Answer::Hash(crc),
            Query::MoveLeader { .. } => Answer::Moved(Err(ClusterError::Stopped)),
            Query::Member(_) => Answer::Member(Err(ClusterError::Stopped)),
        }
    }

    /// Answers the questions that wait for something.
    async fn answer_later(&self, q: Query) -> Answer {
        match q {
            Query::ReadIndex => Answer::ReadIndex(self.read_index_here().await),
            Query::HashKv { rev, crc } => {
                self.0.shard.wait_serving().await;
                self.0.shard.wait_rev(rev).await;
                Answer::Hash(self.0.shard.hash_kv(rev, crc))
            }
            Query::MoveLeader { target } => Answer::Moved(self.move_leader_here(target).await),
            Query::Member(req) => Answer::Member(self.member_change_here(req).await),
            other => self.answer(self.0.me, other),
        }
    }

    /// etcd's HashKV: a hash of every version a read at `rev` or a later
    /// revision can see, the same on every member whatever its shards.
    /// Returns (hash, compact revision, current revision).
    pub(super) async fn hash_kv_at(self, rev: i64) -> Result<(u32, i64, i64), ApplyError> {
        let (current, compacted) = {
            let s = self.0.shard.state.borrow();
            (s.rev, s.compact_rev)
        };
        let rev = if rev <= 0 { current } else { rev };
        if rev > current {
            return Err(ApplyError::FutureRev);
        }
        if rev < compacted {
            return Err(ApplyError::Compacted);
        }
        let mut crc = 0u32;
        for s in 0..self.0.shared.shards {
            match self.ask(ReactorId(s as u16), Query::HashKv { rev, crc }).await {
                Some(Answer::Hash(c)) => crc = c,
                _ => return Err(ApplyError::Stopped),
            }
        }
        Ok((crc, compacted.max(0), current))
    }

    pub(super) fn set_consensus(&self, c: Rc<super::consensus::Consensus>) {
        *self.0.consensus.borrow_mut() = Some(c);
    }

    /// This member and boot, as command origins carry them.
    pub(super) fn origin_filter(&self) -> (u64, u32) {
        (self.0.shared.member.get(), self.0.shared.boot)
    }

    /// Raft's leader or role changed.
    /// A leader change; `term_start` is the index of the new leader's
    /// first entry when this member leads.
    pub(super) fn on_leadership(
        &self,
        leader: Option<crate::types::MemberId>,
        is_leader: bool,
        term_start: crate::types::RaftIndex,
    ) {
        let st = &self.0.shared.stats;
        st.leader.store(leader.map_or(0, |m| m.get()), Ordering::Relaxed);
        st.term_start.store(if is_leader { term_start.get() } else { 0 }, Ordering::Release);
        crate::log_info!("raft leader changed", "leader" => leader.map_or(0, |m| m.get()), "this-member-leads" => is_leader);
        if is_leader {
            // etcd extends every lease by its TTL when a member becomes
            // leader: nobody could keep them alive meanwhile.
            if let Some(lessor) = &self.0.lessor {
                lessor.borrow_mut().promote(std::time::Instant::now());
            }
        }
    }

    /// Raft's term and last log index, for headers and Status.
    pub(super) fn on_raft_progress(&self, term: crate::types::Term, last: crate::types::RaftIndex) {
        let st = &self.0.shared.stats;
        st.term.store(term.get(), Ordering::Relaxed);
        st.raft_index.store(last.get(), Ordering::Relaxed);
    }

    /// Whether this member leads (reactor 0 knows; others ask the stats).
    pub(super) fn is_leader(&self) -> bool {
        self.0.shared.stats.leader.load(Ordering::Relaxed) == self.0.shared.member.get()
    }

    /// A ReadIndex from the consensus loop; call on reactor 0.
    async fn read_index_here(&self) -> Result<crate::types::RaftIndex, ApplyError> {
        let rx = match &*self.0.consensus.borrow() {
            Some(c) => c.read_index(),
            None => return Err(ApplyError::NoLeader),
        };
        let timeout = self.0.shared.request_timeout;
        match monoio::time::timeout(timeout, rx).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(ApplyError::Stopped),
            Err(_) => Err(ApplyError::Timeout),
        }
    }

    /// The index a linearizable read waits for. A cluster of several
    /// voters asks the leader (ReadIndex). A lone voter leads for its whole
    /// life, and every write it acknowledged was applied before the answer,
    /// so reads only wait for the first entry of its term: everything
    /// committed before a restart is applied by then. Until that entry is
    /// known, the read takes the ReadIndex path, which waits for it.
    async fn linearizable_index(&self) -> Result<crate::types::RaftIndex, ApplyError> {
        if self.0.shared.stats.lone_voter.load(Ordering::Acquire) {
            let start = self.0.shared.stats.term_start.load(Ordering::Acquire);
            if start != 0 {
                return Ok(crate::types::RaftIndex(start));
            }
        }
        self.read_index().await
    }

    async fn read_index(&self) -> Result<crate::types::RaftIndex, ApplyError> {
        match self.ask(SEQUENCER, Query::ReadIndex).await {
            Some(Answer::ReadIndex(r)) => r,
            _ => Err(ApplyError::Stopped),
        }
    }

    /// Asks shard `shard` for the key `n` live keys from one of its edges.
    pub(super) async fn split_key(&self, shard: ShardId, n: u64, from_high: bool) -> Option<Vec<u8>> {
        match self.ask(ReactorId(shard.0), Query::SplitKey { n, from_high }).await {
            Some(Answer::SplitKey(key)) => key,
            _ => None,
        }
    }

    pub(super) fn me(&self) -> ReactorId {
        self.0.me
    }

    pub(super) fn local(&self) -> &Rc<Local> {
        &self.0
    }

    /// The range map this reactor routes with.
    pub(super) fn map(&self) -> Rc<RangeMap> {
        self.0.map.borrow().clone()
    }

    pub(super) async fn map_at_least(&self, version: u64) -> Rc<RangeMap> {
        loop {
            let m = self.map();
            if m.version() >= version {
                return m;
            }
            self.0.map_changed.notified().await;
        }
    }

    async fn read_all(
        &self,
        shards: &[ShardId],
        r: &Range,
        (at_least, min_index): (i64, crate::types::RaftIndex),
        linearizable: bool,
        map_version: u64,
    ) -> Vec<ReadReply> {
        let futures = shards.iter().map(|&s| {
            let mut req = ReadReq::of(r, self.next_seq(), self.0.me, linearizable, map_version);
            req.at_least = at_least;
            req.min_index = min_index;
            self.read_shard(s, req)
        });
        futures_util::future::join_all(futures).await
    }

    async fn range_cmd(self, r: Range, linearizable: bool) -> Result<ReadResult, ApplyError> {
        // In a cluster a linearizable read first learns the commit index
        // from the leader (ReadIndex); the shards then wait to apply it.
        let min_index = if linearizable { self.linearizable_index().await? } else { crate::types::RaftIndex(0) };
        let mut map = self.map();
        loop {
            match self.range_with(&map, &r, linearizable, min_index).await {
                Err(ReadError::Moved(v)) => map = self.map_at_least(v.max(map.version() + 1)).await,
                Err(ReadError::Apply(e)) => return Err(e),
                Err(ReadError::Compacted(_)) => return Err(ApplyError::Compacted),
                Ok(result) => return Ok(result),
            }
        }
    }

    async fn range_with(
        &self,
        map: &RangeMap,
        r: &Range,
        linearizable: bool,
        min_index: crate::types::RaftIndex,
    ) -> Result<ReadResult, ReadError> {
        let shape = Shape::of(r);
        let v = map.version();
        // An empty range still checks its revision: the local shard does
        // that (and finds no keys).
        let span = map
            .overlapping(&r.key, End::from_range_end(&r.range_end))
            .unwrap_or((self.0.me_shard(), self.0.me_shard()));
        let (first, last) = span;
        let shards: Vec<ShardId> = (first.0..=last.0).map(ShardId).collect();
        let mut replies = self.read_all(&shards, r, (0, min_index), linearizable, v).await;
        if let Some(e) = replies.iter().find_map(|x| x.result.as_ref().err()) {
            return Err(*e);
        }
        let revision = replies.iter().map(|x| x.applied_rev).max().unwrap_or(1);
        if r.revision <= 0 {
            // The shards read at their own revisions; those behind the
            // newest read again at it, so all parts show one revision.
            let behind: Vec<usize> = (0..replies.len()).filter(|&i| replies[i].applied_rev < revision).collect();
            if !behind.is_empty() {
                let again: Vec<ShardId> = behind.iter().map(|&i| shards[i]).collect();
                let redo = self.read_all(&again, r, (revision, min_index), false, v).await;
                for (i, reply) in behind.into_iter().zip(redo) {
                    replies[i] = reply;
                }
            }
        }
        let mut parts = Vec::with_capacity(replies.len());
        for reply in replies {
            parts.push(reply.result?);
        }
        Ok(ReadResult { revision, result: merge_parts(parts, &shape) })
    }
}

impl Backend for NodeHandle {
    fn identity(&self) -> Identity {
        Identity { cluster_id: self.0.shared.cluster_id().get(), member_id: self.0.shared.member.get() }
    }

    fn raft_term(&self) -> u64 {
        self.0.shared.stats.term.load(Ordering::Relaxed)
    }

    fn propose(&self, cmd: Command) -> LocalBoxFuture<'static, Outcome> {
        Box::pin(self.clone().propose_cmd(cmd))
    }

    fn range(&self, req: Range, linearizable: bool) -> LocalBoxFuture<'static, Result<ReadResult, ApplyError>> {
        Box::pin(self.clone().range_cmd(req, linearizable))
    }

    fn status(&self) -> StatusInfo {
        let st = &self.0.shared.stats;
        let revision = st.revs.iter().map(|r| r.load(Ordering::Relaxed)).max().unwrap_or(1);
        let db_size = st.sizes.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        let applied = st.applied.iter().map(|a| a.load(Ordering::Relaxed)).min().unwrap_or(0);
        StatusInfo {
            revision,
            db_size,
            db_size_in_use: db_size,
            raft_index: st.raft_index.load(Ordering::Relaxed),
            raft_applied_index: applied,
            raft_term: st.term.load(Ordering::Relaxed),
            leader: st.leader.load(Ordering::Relaxed),
        }
    }

    fn lease_grant(&self, id: i64, ttl: i64) -> LocalBoxFuture<'static, Result<LeaseGranted, ApplyError>> {
        Box::pin(self.clone().grant(id, ttl))
    }

    fn lease_revoke(&self, id: i64) -> LocalBoxFuture<'static, Outcome> {
        Box::pin(self.clone().propose_cmd(Command::LeaseRevoke(crate::apply::command::LeaseRevoke { id })))
    }

    fn lease_keep_alive(&self, id: i64) -> LocalBoxFuture<'static, Option<i64>> {
        let this = self.clone();
        Box::pin(async move {
            match this.ask(SEQUENCER, Query::LeaseKeepAlive { id }).await {
                Some(Answer::Ttl(t)) => t,
                _ => None,
            }
        })
    }

    fn lease_time_to_live(&self, id: i64, keys: bool) -> LocalBoxFuture<'static, Option<LeaseTtl>> {
        Box::pin(self.clone().time_to_live(id, keys))
    }

    fn lease_ids(&self) -> LocalBoxFuture<'static, Vec<i64>> {
        let this = self.clone();
        Box::pin(async move {
            match this.ask(SEQUENCER, Query::LeaseIds).await {
                Some(Answer::Ids(ids)) => ids,
                _ => Vec::new(),
            }
        })
    }

    fn watch_session(&self) -> Box<dyn WatchSession> {
        Box::new(super::watches::Session::open(self.clone()))
    }

    fn hash_kv(&self, rev: i64) -> LocalBoxFuture<'static, Result<(u32, i64, i64), ApplyError>> {
        Box::pin(self.clone().hash_kv_at(rev))
    }

    fn progress_interval(&self) -> std::time::Duration {
        self.0.shared.progress_interval
    }

    fn members(&self) -> Vec<MemberInfo> {
        let table = self.0.shared.members();
        table
            .members
            .iter()
            .map(|(id, m)| {
                let p = table.published.get(&id.get());
                MemberInfo {
                    id: id.get(),
                    name: p.map(|p| p.name.clone()).unwrap_or_default(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: p.map(|p| p.client_urls.clone()).unwrap_or_default(),
                    is_learner: m.learner,
                }
            })
            .collect()
    }

    fn member_change(&self, req: MemberRequest) -> LocalBoxFuture<'static, Result<MemberChanged, ClusterError>> {
        let this = self.clone();
        Box::pin(async move {
            match this.ask(SEQUENCER, Query::Member(req)).await {
                Some(Answer::Member(r)) => r,
                _ => Err(ClusterError::Stopped),
            }
        })
    }

    fn is_learner(&self) -> bool {
        self.0.shared.learner.load(Ordering::Relaxed)
    }

    fn move_leader(&self, target: u64) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
        let this = self.clone();
        Box::pin(async move {
            match this.ask(SEQUENCER, Query::MoveLeader { target }).await {
                Some(Answer::Moved(r)) => r,
                _ => Err(ClusterError::Stopped),
            }
        })
    }
}

/// The shard's apply loop's way out to the reactor.
pub struct Link(NodeHandle);

impl ShardLink for Link {
    fn broadcast_exchange(&self, e: &Exchange) {
        let me = self.0 .0.me;
        for r in 0..self.0 .0.outbox.reactors() {
            let to = ReactorId(r as u16);
            if to != me {
                self.0.send(to, Msg::Exchange(e.clone()));
            }
        }
    }

    fn reply(&self, r: Reply) {
        self.0.send(ReactorId(r.origin.reactor), Msg::Reply(r));
    }

    fn origin_filter(&self) -> (u64, u32) {
        (self.0 .0.shared.member.get(), self.0 .0.shared.boot)
    }

    fn publish(&self, s: &ShardState) {
        let st = &self.0 .0.shared.stats;
        let i = s.id.idx();
        st.revs[i].store(s.rev, Ordering::Relaxed);
        st.sizes[i].store(s.store.size_bytes(), Ordering::Relaxed);
        st.applied[i].store(s.applied.get(), Ordering::Relaxed);
        st.keys[i].store(s.store.live_keys(), Ordering::Relaxed);
        st.map_versions[i].store(s.map.version(), Ordering::Relaxed);
        st.dirty[i].store(s.store.dirty_pages() as u64, Ordering::Relaxed);
    }

    fn transfer(&self, to: ShardId, version: u64, histories: Vec<KeyHistory>) {
        self.0.send(ReactorId(to.0), Msg::Transfer { version, histories });
    }

    fn map_changed(&self, map: Rc<RangeMap>) {
        *self.0 .0.map.borrow_mut() = map;
        self.0 .0.map_changed.notify();
    }

    fn on_published(&self, published: Vec<crate::apply::command::Publish>) {
        self.0.on_published(published);
    }

    fn snapshot_part(&self, done: super::snapshots::PartDone) {
        self.0.send(SEQUENCER, Msg::SnapshotPart(done));
    }

    fn checkpoint_committed(&self, index: u64) {
        self.0.send(SEQUENCER, Msg::CheckpointCommitted(index));
    }

    fn installed(&self, rev: i64) {
        let l = &self.0 .0;
        let to: Vec<ReactorId> = l.shard.state.borrow().watch_reactors.iter().copied().collect();
        let shard = l.me_shard();
        for r in to {
            self.0.send(r, Msg::WatchResync { shard, upto: rev });
        }
    }

    fn applied_effects(&self, leases: &[LeaseChange], events: Vec<Event>, rev: i64) {
        let l = &self.0 .0;
        if let Some(lessor) = &l.lessor {
            let now = std::time::Instant::now();
            let mut lessor = lessor.borrow_mut();
            for c in leases {
                match *c {
                    LeaseChange::Granted { id, ttl } => lessor.granted(id, ttl, now),
                    LeaseChange::Revoked { id } => lessor.revoked(id),
                }
            }
        }
        let to: Vec<ReactorId> = l.shard.state.borrow().watch_reactors.iter().copied().collect();
        if to.is_empty() {
            return;
        }
        let events = Arc::new(events);
        let shard = l.me_shard();
        for r in to {
            self.0.send(r, Msg::WatchFeed { shard, upto: rev, events: events.clone() });
        }
    }
}
