//! The consensus core: raft-rs's `RawNode` behind a sans-IO API of plain
//! values (DESIGN §3).
//!
//! Owns: the Raft state machine, the log in memory since the last
//! compaction point ([`LogStore`]), the wire format of Raft messages and
//! its defensive decoding ([`wire`]), and the rules for what may leave the
//! node when (below). Never touches sockets, files, clocks or keys: the
//! caller (the sequencer reactor in `node`) moves bytes to peers, makes
//! entries durable in the WAL, calls [`RaftCore::tick`] every heartbeat
//! interval, and applies committed entries through `apply`. Time is ticks;
//! randomness (the election timeout) comes from [`RaftConfig::seed`], so a
//! simulator replays a run exactly (see `sim`, tests only).
//!
//! # The loop
//!
//! ```text
//! step(sender, bytes) / tick() / propose(..) / read_index(..) / on_persisted(n)
//! while let Some(rd) = ready()? {                   after any of the above
//!     send rd.messages                              now, before or while writing
//!     if let Some(p) = rd.persist {                 install p.snapshot; WAL append p.entries, p.hard_state
//!         ... fdatasync (one per group of readies), then on_persisted(p.number)
//!     }
//!     apply rd.committed; answer rd.read_states once the shards applied up to them
//! }
//! ```
//!
//! This is raft-rs's async-ready protocol: `ready()` hands the Ready's
//! entries to the in-memory log at once and calls `advance_append_async`,
//! so the node keeps stepping messages and taking proposals while the
//! fdatasync runs; `on_persisted` is raft-rs's `on_persist_ready`.
//!
//! # What goes out when (the durability rules)
//!
//! "An entry is acknowledged only after fdatasync returned for it on a
//! quorum" holds because:
//!
//! * A leader's messages (raft-rs `Ready::messages`: appends, heartbeats,
//!   snapshots, timeout-now, read-index responses) are in `rd.messages` and
//!   go out at once, before the leader's own fdatasync: that is leader
//!   pipelining (Raft thesis §10.2.1). They carry entries that may not be
//!   durable on the leader yet, which is safe because the leader counts its
//!   own copy towards the quorum only when `on_persisted` says so
//!   (raft-rs's `on_persist_entries`), exactly like a follower's ack.
//! * Every message a non-leader produces (raft-rs `Ready::persisted_messages`:
//!   append and heartbeat responses, votes and vote requests, pre-votes,
//!   forwarded read-index and transfer requests) is held by `RaftCore` and
//!   released only when `on_persisted` covers the Ready it came with; it
//!   goes out in the next `ready()`. So an append response (the follower's
//!   ack) leaves only after the entries it acks are durable, and a vote only
//!   after the term and vote are durable.
//! * `rd.committed` holds only entries that are committed *and* durable
//!   locally (raft-rs gives entries up to min(commit, persisted)), so
//!   nothing is applied, and no client answered, before its fdatasync
//!   returned here and on a quorum.
//! * Readies are persisted in order; `on_persisted(n)` means every Ready up
//!   to `n` is durable. A Ready whose `persist` is `None` needs no write:
//!   `RaftCore` completes it itself once the ones before it are durable.
//!   With `persist.must_sync == false` only the commit index changed: that
//!   Ready may be reported without waiting for its fdatasync (a lost commit
//!   index is learnt again), but still in order, after every earlier one.
//!
//! # Membership
//!
//! A new cluster's log starts with one conf-change entry per initial member
//! (index 1.., term 1, committed), as etcd bootstraps: the log alone says
//! who the members are, so a restart needs nothing else. `RaftCore` applies
//! committed conf changes itself when it hands them out, and on restart
//! re-applies the committed ones found in the recovered log at once, so a
//! restarted member knows its peers before the first Ready. Committed
//! entries are handed out again from the compaction point on after a
//! restart; the shards skip what their checkpoints already hold.

// raft-rs's protobuf structs carry hidden fields (unknown fields, cached
// size): building them from `default()` and setting fields is their idiom.
#![allow(clippy::field_reassign_with_default)]

mod logger;
pub mod storage;
pub mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    MessageType, SnapshotMetadata,
};
use raft::{RawNode, StateRole};

pub use logger::RaftLogging;
pub use storage::{LogError, LogStore};
pub use wire::WireError;

use crate::types::{MemberId, RaftIndex, Term};
use crate::wal::{self, EntryKind, EntryRef};

/// Most members a conf change may name at once.
pub const CONF_CHANGES_MAX: usize = 16;

/// How a member runs Raft.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This member.
    pub id: MemberId,
    /// The voters of a new cluster (etcd's `--initial-cluster`); used only
    /// when the log is empty and `join_existing` is false.
    pub voters: Vec<MemberId>,
    /// Learners of a new cluster (same rule).
    pub learners: Vec<MemberId>,
    /// etcd's `--initial-cluster-state existing`: start with an empty log
    /// and no configuration and learn both from the leader.
    pub join_existing: bool,
    /// Ticks without hearing from a leader before an election; the actual
    /// timeout is drawn from `[election_tick, 2 * election_tick)`.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Raft's pre-vote phase (thesis §9.6): a partitioned member rejoining
    /// does not disrupt the leader.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an
    /// election timeout.
    pub check_quorum: bool,
    /// Bound on append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Bound on the entry bytes of one append message (at least one entry
    /// is always sent).
    pub max_msg_bytes: u64,
    /// Bound on proposed but uncommitted entry bytes; proposals beyond it
    /// are refused ([`ProposeError::Dropped`]).
    pub max_uncommitted_bytes: u64,
    /// Bound on the committed entry bytes one Ready hands out.
    pub max_committed_bytes_per_ready: u64,
    /// Seed of the election-timeout randomness.
    pub seed: u64,
    /// Where raft-rs's log lines go.
    pub logging: RaftLogging,
}

impl RaftConfig {
    /// etcd's defaults: heartbeat every tick, election after 10 ticks
    /// (100 ms and 1 s with etcd's default flags), pre-vote and
    /// check-quorum on, 1 MiB per append message, 512 appends in flight.
    pub fn new(id: MemberId, voters: Vec<MemberId>) -> RaftConfig {
        RaftConfig {
            id,
            voters,
            learners: Vec::new(),
            join_existing: false,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 512,
            max_msg_bytes: 1 << 20,
            max_uncommitted_bytes: 1 << 30,
            max_committed_bytes_per_ready: 64 << 20,
            seed: id.get() ^ 0x9e37_79b9_7f4a_7c15,
            logging: RaftLogging::Discard,
        }
    }

    /// Sets the ticks from etcd's `--heartbeat-interval` and
    /// `--election-timeout`, as etcd does: one tick per heartbeat interval
    /// (call [`RaftCore::tick`] that often), a heartbeat every tick, an
    /// election after `election_timeout / heartbeat_interval` ticks.
    pub fn with_etcd_timing(
        mut self,
        heartbeat_interval: Duration,
        election_timeout: Duration,
    ) -> Result<Self, RaftError> {
        let hb = heartbeat_interval.as_millis();
        let el = election_timeout.as_millis();
        if hb == 0 || el < 5 * hb {
            return Err(RaftError::Config(format!(
                "--election-timeout ({el} ms) must be at least 5 times --heartbeat-interval ({hb} ms)"
            )));
        }
        self.heartbeat_tick = 1;
        self.election_tick = usize::try_from(el / hb).unwrap_or(usize::MAX);
        Ok(self)
    }
}

/// What the WAL (and the shards' last checkpoint) recovered.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    /// The last durable hard state.
    pub hard_state: wal::HardState,
    /// The durable entries; those at or below the snapshot index are ignored.
    pub entries: Vec<wal::Entry>,
    /// The compaction point the log starts after, if any.
    pub snapshot: Option<SnapshotMeta>,
}

impl From<wal::Recovered> for Boot {
    fn from(r: wal::Recovered) -> Boot {
        Boot { hard_state: r.hard_state, entries: r.entries, snapshot: None }
    }
}

/// A configuration: who votes, who learns (raft-rs's `ConfState`, sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Voters (the incoming ones during a joint change).
    pub voters: Vec<MemberId>,
    /// Learners.
    pub learners: Vec<MemberId>,
    /// During a joint change, the outgoing voters; empty otherwise.
    pub voters_outgoing: Vec<MemberId>,
    /// During a joint change, outgoing voters that become learners.
    pub learners_next: Vec<MemberId>,
    /// Whether raft-rs leaves the joint configuration by itself.
    pub auto_leave: bool,
}

impl Membership {
    /// Whether `id` votes (in either half of a joint configuration).
    pub fn is_voter(&self, id: MemberId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: MemberId) -> bool {
        self.is_voter(id) || self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    fn from_conf(cs: &ConfState) -> Membership {
        let ids = |v: &[u64]| {
            let mut v: Vec<MemberId> = v.iter().copied().map(MemberId).collect();
            v.sort();
            v
        };
        Membership {
            voters: ids(&cs.voters),
            learners: ids(&cs.learners),
            voters_outgoing: ids(&cs.voters_outgoing),
            learners_next: ids(&cs.learners_next),
            auto_leave: cs.auto_leave,
        }
    }

    fn to_conf(&self) -> ConfState {
        let raw = |v: &[MemberId]| v.iter().map(|m| m.get()).collect::<Vec<u64>>();
        let mut cs = ConfState::default();
        cs.voters = raw(&self.voters);
        cs.learners = raw(&self.learners);
        cs.voters_outgoing = raw(&self.voters_outgoing);
        cs.learners_next = raw(&self.learners_next);
        cs.auto_leave = self.auto_leave;
        cs
    }
}

/// A compaction point: the log starts after `index`; the state up to it is
/// in the shards' checkpoint that `data` describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: RaftIndex,
    /// That entry's term.
    pub term: Term,
    /// The configuration at `index`.
    pub membership: Membership,
    /// Opaque descriptor of the checkpoint (what `compact_to` was given).
    pub data: Bytes,
}

/// A Raft role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asking for pre-votes.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads the term.
    Leader,
}

impl Role {
    fn from_raft(r: StateRole) -> Role {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// Volatile state worth telling the node about when it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this member knows of.
    pub leader: Option<MemberId>,
    /// This member's role.
    pub role: Role,
}

/// Identifies a Ready for [`RaftCore::on_persisted`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadyNumber(pub u64);

/// A log entry as the WAL stores it, its payload shared (not copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its index.
    pub index: RaftIndex,
    /// Its term.
    pub term: Term,
    /// Normal or a configuration change.
    pub kind: EntryKind,
    /// The payload.
    pub data: Bytes,
}

impl LogEntry {
    /// The borrowed form `Wal::append` takes.
    pub fn as_wal(&self) -> EntryRef<'_> {
        EntryRef { index: self.index, term: self.term, kind: self.kind, data: &self.data }
    }

    fn from_raft(e: &Entry) -> LogEntry {
        LogEntry {
            index: RaftIndex(e.index),
            term: Term(e.term),
            kind: kind_of(e.get_entry_type()),
            data: e.data.clone(),
        }
    }

    fn to_raft(&self) -> Entry {
        let mut e = Entry::default();
        e.index = self.index.get();
        e.term = self.term.get();
        e.set_entry_type(match self.kind {
            EntryKind::Normal => EntryType::EntryNormal,
            EntryKind::ConfChange => EntryType::EntryConfChange,
            EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
        });
        e.data = self.data.clone();
        e
    }
}

fn kind_of(t: EntryType) -> EntryKind {
    match t {
        EntryType::EntryNormal => EntryKind::Normal,
        EntryType::EntryConfChange => EntryKind::ConfChange,
        EntryType::EntryConfChangeV2 => EntryKind::ConfChangeV2,
    }
}

/// What to make durable for one Ready, then report with
/// [`RaftCore::on_persisted`].
#[derive(Clone, Debug, Default)]
pub struct Persist {
    /// Report this when everything below is durable.
    pub number: ReadyNumber,
    /// A snapshot received from the leader: install the checkpoint its
    /// `data` describes and record the new compaction point (the WAL's log
    /// now starts after its index) before the entries.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append; the first may replace entries from its index on.
    pub entries: Vec<LogEntry>,
    /// The hard state to write with them.
    pub hard_state: Option<wal::HardState>,
    /// False when only the commit index changed: then `on_persisted` may be
    /// called without waiting for the fdatasync (still in order: only once
    /// every earlier Ready was reported).
    pub must_sync: bool,
}

/// Which peer stream a message belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// Ordinary Raft traffic.
    Raft,
    /// A snapshot (`MsgSnapshot`): send it on the snapshot stream, along
    /// with the checkpoint its descriptor names, and call
    /// [`RaftCore::report_snapshot`] when that is done or failed.
    Snapshot,
}

/// An encoded message for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The peer.
    pub to: MemberId,
    /// Which stream.
    pub class: MessageClass,
    /// The encoded `eraftpb.Message`.
    pub bytes: Vec<u8>,
}

/// One side of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Add a voter, or promote a learner.
    AddVoter,
    /// Add a learner, or demote a voter.
    AddLearner,
    /// Remove a member.
    Remove,
}

/// One member added, promoted, demoted or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberChange {
    /// What happens.
    pub kind: ChangeKind,
    /// To whom.
    pub member: MemberId,
}

/// A committed configuration change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChangeOutcome {
    /// The changes (empty: leaving a joint configuration).
    pub changes: Vec<MemberChange>,
    /// The context the proposer attached (corekv: member attributes).
    pub context: Bytes,
    /// The configuration after it, or why raft-rs refused it (then nothing
    /// changed, on every member alike).
    pub result: Result<Membership, String>,
}

/// What a committed entry asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Nothing (a new leader's empty entry): only the index advances.
    Empty,
    /// A proposal's data (corekv: an rkyv command batch).
    Data(Bytes),
    /// A membership change, already applied to Raft.
    ConfChange(ConfChangeOutcome),
}

/// A committed entry, durable here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its index.
    pub index: RaftIndex,
    /// Its term.
    pub term: Term,
    /// What it carries.
    pub payload: Payload,
}

/// A ReadIndex result: once the shards have applied `index`, reads issued
/// before the `read_index` call that carried `context` are linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index the read must wait for.
    pub index: RaftIndex,
    /// The context given to `read_index`.
    pub context: Vec<u8>,
}

/// Everything the node must do now. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Send these now.
    pub messages: Vec<Outbound>,
    /// Make this durable, then call `on_persisted(persist.number)`.
    pub persist: Option<Persist>,
    /// Apply these, in order.
    pub committed: Vec<Committed>,
    /// ReadIndex results.
    pub read_states: Vec<ReadState>,
    /// A follower needs a snapshot newer than the compaction point (it
    /// joined after it): checkpoint the shards and call `compact_to` with
    /// the applied index; raft-rs retries the snapshot meanwhile.
    pub checkpoint_wanted: bool,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.messages.is_empty()
            && self.persist.is_none()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && !self.checkpoint_wanted
    }
}

/// `RaftCore` could not start, or its state broke an invariant.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The configuration is unusable.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// The recovered state is inconsistent (a damaged data directory).
    #[error("recovered raft state is inconsistent: {0}")]
    Recovery(String),
    /// An internal invariant broke (a bug): stop the node.
    #[error("raft invariant broken: {0}")]
    Internal(String),
}

/// Why a proposal was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; forward to `leader` if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<MemberId>,
    },
    /// Empty data is reserved for the leader's no-op entries.
    #[error("empty proposal")]
    Empty,
    /// Leadership is being transferred; retry on the new leader.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// This leader is no longer a member.
    #[error("this member was removed from the cluster")]
    Removed,
    /// Too many uncommitted bytes: back off.
    #[error("proposal dropped: too much uncommitted data")]
    Dropped,
    /// A configuration change is still being applied.
    #[error("another configuration change is in progress")]
    ConfChangePending,
    /// raft-rs would refuse this change.
    #[error("invalid configuration change: {0}")]
    BadConfChange(String),
}

/// Why a peer's message was not stepped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// Malformed or refused bytes (close that peer's connection).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A response from a member not in the configuration (harmless).
    #[error("response from unknown member {0}")]
    UnknownPeer(MemberId),
    /// raft-rs refused it.
    #[error("raft refused the message: {0}")]
    Refused(String),
    /// This member was removed from the cluster.
    #[error("this member was removed from the cluster")]
    Removed,
}

/// Why a ReadIndex could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadIndexError {
    /// No leader is known: etcd answers "no leader".
    #[error("no leader")]
    NoLeader,
    /// This member was removed from the cluster.
    #[error("this member was removed from the cluster")]
    Removed,
}

/// Why a leadership transfer could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can transfer.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<MemberId>,
    },
    /// The target is not a voter.
    #[error("member {0} is not a voter")]
    NotVoter(MemberId),
}

/// A readies handed out and not yet durable.
#[derive(Debug)]
struct Inflight {
    number: u64,
    needs_write: bool,
    /// The snapshot this Ready installs: applied once durable.
    snapshot_index: Option<u64>,
    /// Messages that may leave only once this Ready is durable.
    held: Vec<Outbound>,
}

/// xorshift64*: small, fast, and reproducible from a seed.
#[derive(Clone, Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // splitmix64 spreads every seed bit over the state (which must not
        // be zero).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, n)` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The consensus core of one member. See the module documentation.
pub struct RaftCore {
    raw: RawNode<LogStore>,
    id: MemberId,
    rng: XorShift,
    election_tick: usize,
    inflight: VecDeque<Inflight>,
    /// Held messages released by `on_persisted`, for the next Ready.
    outbox: Vec<Outbound>,
    /// Conf changes up to here are applied to raft-rs.
    conf_applied: u64,
    /// Messages raft-rs produced that could not be encoded (never expected).
    dropped_msgs: u64,
    /// A committed conf change removed this member: it stops (as etcd's
    /// members do), and raft-rs is not driven any further (it assumes a
    /// member outside the configuration is never stepped as a leader).
    removed: bool,
}

impl RaftCore {
    /// Starts from recovered state (or bootstraps a new cluster when the
    /// log is empty; see the module documentation).
    pub fn new(config: RaftConfig, boot: Boot) -> Result<RaftCore, RaftError> {
        let id = config.id;
        if id.get() == 0 {
            return Err(RaftError::Config("member ID 0 is reserved".into()));
        }
        let fresh = boot.entries.is_empty() && boot.hard_state == wal::HardState::default() && boot.snapshot.is_none();
        let store = restore_store(&boot)?;
        let snap_index = store.snapshot_meta().index;
        let rcfg = raft::Config {
            id: id.get(),
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied: snap_index,
            max_size_per_msg: config.max_msg_bytes,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            // Off: raft-rs 0.7's batching appends new entries to an empty
            // MsgAppend in the same Ready without checking that they follow
            // its index (`is_continuous_ents` is true for an empty message),
            // producing a non-contiguous append after a probe rewinds
            // `next`. Found by the simulator; `wire` refuses such messages.
            batch_append: false,
            max_uncommitted_size: config.max_uncommitted_bytes,
            max_committed_size_per_ready: config.max_committed_bytes_per_ready,
            ..raft::Config::default()
        };
        rcfg.validate().map_err(|e| RaftError::Config(e.to_string()))?;
        let logger = logger::logger(config.logging, id.get());
        let raw = RawNode::new(&rcfg, store, &logger).map_err(|e| RaftError::Recovery(e.to_string()))?;
        let mut core = RaftCore {
            raw,
            id,
            rng: XorShift::new(config.seed),
            election_tick: config.election_tick,
            inflight: VecDeque::new(),
            outbox: Vec::new(),
            conf_applied: snap_index,
            dropped_msgs: 0,
            removed: false,
        };
        if fresh && !config.join_existing {
            core.bootstrap(&config)?;
        } else {
            core.reapply_committed_conf_changes()?;
        }
        core.rerandomize();
        Ok(core)
    }

    /// A new cluster: one committed conf change per initial member, at
    /// term 1, identical on every member; persisted with the first Ready.
    fn bootstrap(&mut self, config: &RaftConfig) -> Result<(), RaftError> {
        let mut voters = config.voters.clone();
        voters.sort();
        voters.dedup();
        let mut learners = config.learners.clone();
        learners.sort();
        learners.dedup();
        if voters.is_empty() {
            return Err(RaftError::Config("a new cluster needs at least one voter".into()));
        }
        if voters.first() == Some(&MemberId(0)) || learners.first() == Some(&MemberId(0)) {
            return Err(RaftError::Config("member ID 0 is reserved".into()));
        }
        if learners.iter().any(|l| voters.contains(l)) {
            return Err(RaftError::Config("a member cannot be both voter and learner".into()));
        }
        if !voters.contains(&self.id) && !learners.contains(&self.id) {
            return Err(RaftError::Config(format!("member {} is not in the initial cluster", self.id)));
        }
        let members = voters.iter().map(|v| (*v, ConfChangeType::AddNode));
        let members = members.chain(learners.iter().map(|l| (*l, ConfChangeType::AddLearnerNode)));
        let mut entries = Vec::new();
        let mut changes = Vec::new();
        for (i, (member, ty)) in members.enumerate() {
            let mut cc = ConfChange::default();
            cc.set_change_type(ty);
            cc.node_id = member.get();
            let data = cc.write_to_bytes().map_err(|e| RaftError::Internal(e.to_string()))?;
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = data.into();
            entries.push(e);
            changes.push(cc);
        }
        let n = entries.len() as u64;
        let raft = &mut self.raw.raft;
        raft.become_follower(1, raft::INVALID_ID);
        raft.raft_log.append(&entries);
        raft.raft_log.commit_to(n);
        for (e, cc) in entries.iter().zip(changes) {
            let cs = self.raw.apply_conf_change(&cc).map_err(|e| RaftError::Config(e.to_string()))?;
            self.raw.mut_store().record_conf(e.index, cs);
        }
        self.conf_applied = n;
        Ok(())
    }

    /// On restart: the committed conf changes after the compaction point
    /// take effect at once (they are durable and committed).
    fn reapply_committed_conf_changes(&mut self) -> Result<(), RaftError> {
        let store = self.raw.store();
        let commit = store.hard_state().commit.min(store.last());
        let first = store.first();
        if commit < first {
            return Ok(());
        }
        let ents = store
            .entries_in(first, commit + 1)
            .map_err(|e| RaftError::Recovery(format!("reading entries {first}..={commit}: {e}")))?;
        for e in ents.iter().filter(|e| e.get_entry_type() != EntryType::EntryNormal) {
            let cc = wire::decode_conf_change(kind_of(e.get_entry_type()), &e.data)
                .map_err(|err| RaftError::Recovery(format!("conf change entry {}: {err}", e.index)))?;
            // A change raft-rs refused when it was first applied is refused
            // again, identically: nothing to record.
            if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                self.raw.mut_store().record_conf(e.index, cs);
                self.note_removal(&cc);
            }
            self.conf_applied = e.index;
        }
        Ok(())
    }

    /// This member's ID.
    pub fn id(&self) -> MemberId {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        Term(self.raw.raft.term)
    }

    /// This member's role.
    pub fn role(&self) -> Role {
        Role::from_raft(self.raw.raft.state)
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<MemberId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            l => Some(MemberId(l)),
        }
    }

    /// The commit index known here.
    pub fn commit_index(&self) -> RaftIndex {
        RaftIndex(self.raw.raft.raft_log.committed)
    }

    /// The highest index durable here.
    pub fn persisted_index(&self) -> RaftIndex {
        RaftIndex(self.raw.raft.raft_log.persisted)
    }

    /// The last index in the log (durable or not).
    pub fn last_index(&self) -> RaftIndex {
        RaftIndex(self.raw.store().last().max(self.raw.raft.raft_log.last_index()))
    }

    /// The last index handed out in `Ready::committed`.
    pub fn applied_index(&self) -> RaftIndex {
        RaftIndex(self.raw.raft.raft_log.applied)
    }

    /// The compaction point (0 if the log was never compacted).
    pub fn compacted_index(&self) -> RaftIndex {
        RaftIndex(self.raw.store().snapshot_meta().index)
    }

    /// The compaction point: what the WAL must record after `compact_to`
    /// (its log then starts after `index`).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        let store = self.raw.store();
        let mut meta = snapshot_meta(store.snapshot_meta(), Bytes::new());
        meta.data = store.snapshot_data();
        meta
    }

    /// The configuration in force.
    pub fn membership(&self) -> Membership {
        Membership::from_conf(&self.raw.raft.prs().conf().to_conf_state())
    }

    /// Whether `id` is in the configuration (voter or learner).
    pub fn is_member(&self, id: MemberId) -> bool {
        let conf = self.raw.raft.prs().conf();
        conf.voters().contains(id.get()) || conf.learners().contains(&id.get())
    }

    /// On the leader: the highest index known replicated on `member`
    /// (etcd's learner "in sync" check uses it). `None` elsewhere.
    pub fn matched(&self, member: MemberId) -> Option<RaftIndex> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        self.raw.raft.prs().get(member.get()).map(|p| RaftIndex(p.matched))
    }

    /// Messages raft-rs produced that could not be encoded (expected 0).
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_msgs
    }

    /// Advances the logical clock one tick (one heartbeat interval).
    pub fn tick(&mut self) {
        if self.removed {
            return;
        }
        self.raw.tick();
        self.rerandomize();
    }

    /// Steps a message that the authenticated peer `sender` sent. Malformed
    /// bytes are an error, never a panic; see [`wire`].
    pub fn step(&mut self, sender: MemberId, bytes: &[u8]) -> Result<(), StepError> {
        if self.removed {
            return Err(StepError::Removed);
        }
        let msg = wire::decode(bytes, self.id.get(), sender.get())?;
        if msg.get_msg_type() == MessageType::MsgHeartbeat && msg.commit > self.raw.raft.raft_log.last_index() {
            // raft-rs would panic ("was the raft log lost?"): a leader only
            // sends a commit index this member acknowledged having. Refuse
            // rather than crash; the operator sees the log line.
            return Err(StepError::Refused(format!(
                "heartbeat commits {} beyond this member's last index {}: was its log lost?",
                msg.commit,
                self.raw.raft.raft_log.last_index()
            )));
        }
        let from = msg.from;
        let res = self.raw.step(msg);
        self.rerandomize();
        match res {
            Ok(()) => Ok(()),
            Err(raft::Error::StepPeerNotFound) => Err(StepError::UnknownPeer(MemberId(from))),
            Err(e) => Err(StepError::Refused(e.to_string())),
        }
    }

    /// Proposes `data` (a command batch) for the log. Only the leader takes
    /// proposals; followers forward client requests to it themselves.
    pub fn propose(&mut self, data: &[u8]) -> Result<(), ProposeError> {
        if data.is_empty() {
            return Err(ProposeError::Empty);
        }
        self.check_can_propose()?;
        let res = self.raw.propose(Vec::new(), data.to_vec());
        self.rerandomize();
        res.map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::Dropped,
            other => ProposeError::BadConfChange(other.to_string()),
        })
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.removed {
            return Err(ProposeError::Removed);
        }
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader() });
        }
        if raft.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if raft.prs().get(self.id.get()).is_none() {
            return Err(ProposeError::Removed);
        }
        Ok(())
    }

    /// Proposes a membership change: one change is applied directly; more
    /// go through a joint configuration that raft-rs leaves by itself; no
    /// change leaves a joint configuration. `context` rides along (etcd's
    /// member attributes). Refused up front when raft-rs would turn it
    /// into a no-op (another change pending) or reject it at apply time.
    pub fn propose_conf_change(&mut self, changes: &[MemberChange], context: &[u8]) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        if changes.len() > CONF_CHANGES_MAX {
            return Err(ProposeError::BadConfChange(format!("more than {CONF_CHANGES_MAX} changes")));
        }
        let raft = &self.raw.raft;
        if raft.has_pending_conf() {
            return Err(ProposeError::ConfChangePending);
        }
        if changes.iter().any(|c| c.member == self.id && c.kind == ChangeKind::AddLearner) {
            // raft-rs leaves a demoted leader leading (untested upstream):
            // hand leadership over first.
            return Err(ProposeError::BadConfChange(
                "the leader cannot demote itself; transfer leadership first".into(),
            ));
        }
        let cc = conf_change_v2(changes, context);
        let joint = !raft.prs().conf().to_conf_state().voters_outgoing.is_empty();
        let mut changer = raft::Changer::new(raft.prs());
        let check = if cc.leave_joint() {
            if !joint {
                return Err(ProposeError::BadConfChange("not in a joint configuration".into()));
            }
            changer.leave_joint()
        } else if joint {
            return Err(ProposeError::BadConfChange("leave the joint configuration first".into()));
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, &cc.changes)
        } else {
            changer.simple(&cc.changes)
        };
        check.map_err(|e| ProposeError::BadConfChange(e.to_string()))?;
        let res = self.raw.propose_conf_change(Vec::new(), cc);
        self.rerandomize();
        res.map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::Dropped,
            other => ProposeError::BadConfChange(other.to_string()),
        })
    }

    /// Starts an election now (a lone voter wins it at once).
    pub fn campaign(&mut self) -> Result<(), RaftError> {
        if self.removed {
            return Ok(());
        }
        self.raw.campaign().map_err(|e| RaftError::Internal(e.to_string()))
    }

    /// Whether this member leads and has committed an entry of its term
    /// (only then does raft-rs answer ReadIndex requests).
    pub fn committed_in_term(&self) -> bool {
        self.raw.raft.state == StateRole::Leader && self.raw.raft.commit_to_current_term()
    }

    /// Starts a ReadIndex round; its result comes back in
    /// `Ready::read_states` with the same `context` (unique per request).
    /// On a follower the request goes to the leader. Without a leader it
    /// fails; a request lost on the way never answers, nor does one that
    /// reaches a leader which has not yet committed an entry of its term
    /// (raft-rs 0.7 drops it): time out and retry, as etcd does.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), ReadIndexError> {
        if self.removed {
            return Err(ReadIndexError::Removed);
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(ReadIndexError::NoLeader);
        }
        self.raw.read_index(context);
        self.rerandomize();
        Ok(())
    }

    /// Asks the leader to hand leadership to `to` (etcd's MoveLeader).
    pub fn transfer_leader(&mut self, to: MemberId) -> Result<(), TransferError> {
        if self.removed || self.raw.raft.state != StateRole::Leader {
            return Err(TransferError::NotLeader { leader: self.leader() });
        }
        if !self.raw.raft.prs().conf().voters().contains(to.get()) {
            return Err(TransferError::NotVoter(to));
        }
        self.raw.transfer_leader(to.get());
        self.rerandomize();
        Ok(())
    }

    /// Tells raft-rs a snapshot to `to` was delivered (`ok`) or failed.
    pub fn report_snapshot(&mut self, to: MemberId, ok: bool) {
        let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(to.get(), status);
    }

    /// Tells raft-rs the last message to `to` could not be sent.
    pub fn report_unreachable(&mut self, to: MemberId) {
        self.raw.report_unreachable(to.get());
    }

    /// Drops the log up to and including `index`, once the shards have a
    /// durable checkpoint at `index` that `data` describes (sent to
    /// followers that need entries from before it). `index` must have been
    /// handed out in `Ready::committed`. Below the current compaction point
    /// (a snapshot from the leader overtook the checkpoint) nothing
    /// happens: compare [`RaftCore::compacted_index`] before recording a
    /// new point in the WAL.
    pub fn compact_to(&mut self, index: RaftIndex, data: Bytes) -> Result<(), LogError> {
        if index.get() > self.raw.raft.raft_log.applied {
            return Err(LogError::BadCompaction { index: index.get(), why: "not applied yet" });
        }
        self.raw.mut_store().compact_to(index.get(), data)
    }

    /// What to do now, if anything. See the module documentation.
    pub fn ready(&mut self) -> Result<Option<Ready>, RaftError> {
        if self.removed {
            return Ok(None);
        }
        let checkpoint_wanted = self.raw.store().take_snapshot_wanted();
        if !self.raw.has_ready() {
            if self.outbox.is_empty() && !checkpoint_wanted {
                return Ok(None);
            }
            let messages = std::mem::take(&mut self.outbox);
            return Ok(Some(Ready { messages, checkpoint_wanted, ..Ready::default() }));
        }
        let mut rd = self.raw.ready();
        let number = rd.number();
        let mut out = Ready {
            soft_state: rd.ss().map(|ss| SoftState {
                leader: (ss.leader_id != raft::INVALID_ID).then_some(MemberId(ss.leader_id)),
                role: Role::from_raft(ss.raft_state),
            }),
            read_states: rd
                .take_read_states()
                .into_iter()
                .map(|rs| ReadState { index: RaftIndex(rs.index), context: rs.request_ctx })
                .collect(),
            checkpoint_wanted,
            ..Ready::default()
        };
        let snapshot = if rd.snapshot().is_empty() {
            None
        } else {
            let snap = rd.snapshot().clone();
            let meta = snap.get_metadata().clone();
            self.raw
                .mut_store()
                .install_snapshot(meta.clone(), snap.data.clone())
                .map_err(|e| RaftError::Internal(format!("installing snapshot {}: {e}", meta.index)))?;
            self.conf_applied = self.conf_applied.max(meta.index);
            Some(snapshot_meta(&meta, snap.data.clone()))
        };
        let entries = rd.take_entries();
        self.raw.mut_store().append(&entries).map_err(|e| RaftError::Internal(format!("appending entries: {e}")))?;
        let hard_state = rd.hs().map(|hs| {
            self.raw.mut_store().set_hard_state(hs.clone());
            wal::HardState { term: Term(hs.term), vote: MemberId(hs.vote), commit: RaftIndex(hs.commit) }
        });
        let must_sync = rd.must_sync();
        let now = self.encode_all(rd.take_messages());
        let later = self.encode_all(rd.take_persisted_messages());
        let committed = rd.take_committed_entries();
        self.raw.advance_append_async(rd);
        let last_committed = committed.last().map(|e| e.index);
        out.committed = self.hand_out(committed)?;
        if let Some(last) = last_committed {
            // Not `advance_apply`: after a snapshot raft-rs's cursor is at
            // the snapshot, which counts as applied only once durable.
            self.raw.advance_apply_to(last);
        }

        let needs_write = snapshot.is_some() || !entries.is_empty() || hard_state.is_some();
        let snapshot_index = snapshot.as_ref().map(|s| s.index.get());
        if needs_write {
            out.persist = Some(Persist {
                number: ReadyNumber(number),
                snapshot,
                entries: entries.iter().map(LogEntry::from_raft).collect(),
                hard_state,
                must_sync,
            });
        }
        self.inflight.push_back(Inflight { number, needs_write, snapshot_index, held: later });
        if !needs_write && self.inflight.len() == 1 {
            // Nothing to write and nothing before it in flight: durable now.
            self.complete_through(0);
        }
        out.messages = std::mem::take(&mut self.outbox);
        out.messages.extend(now);
        self.rerandomize();
        Ok(Some(out))
    }

    /// Reports that the Ready numbered `number`, and every one before it,
    /// is durable. Held messages go out with the next `ready()`.
    pub fn on_persisted(&mut self, number: ReadyNumber) {
        self.complete_through(number.0);
    }

    /// Completes the in-flight readies up to `number`, then any that need
    /// no write right behind them.
    fn complete_through(&mut self, number: u64) {
        if self.removed {
            self.inflight.clear();
            return;
        }
        let mut last = None;
        let mut snapshot = None;
        while let Some(front) = self.inflight.front() {
            if front.number > number && front.needs_write {
                break;
            }
            if let Some(done) = self.inflight.pop_front() {
                last = Some(done.number);
                snapshot = done.snapshot_index.or(snapshot);
                self.outbox.extend(done.held);
            }
        }
        if let Some(n) = last {
            self.raw.on_persist_ready(n);
            if let Some(s) = snapshot {
                // The shards hold the snapshot now: it is applied.
                if s > self.raw.raft.raft_log.applied {
                    self.raw.advance_apply_to(s);
                }
            }
            self.rerandomize();
        }
    }

    /// Turns raft-rs's committed entries into `Committed`, applying conf
    /// changes to raft-rs as they go by.
    fn hand_out(&mut self, entries: Vec<Entry>) -> Result<Vec<Committed>, RaftError> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let payload = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => Payload::Empty,
                EntryType::EntryNormal => Payload::Data(e.data.clone()),
                t => Payload::ConfChange(self.apply_conf_entry(&e, kind_of(t))),
            };
            out.push(Committed { index: RaftIndex(e.index), term: Term(e.term), payload });
        }
        Ok(out)
    }

    fn apply_conf_entry(&mut self, e: &Entry, kind: EntryKind) -> ConfChangeOutcome {
        let cc = match wire::decode_conf_change(kind, &e.data) {
            Ok(cc) => cc,
            Err(err) => {
                // Every member reads the same bytes and refuses alike.
                self.conf_applied = self.conf_applied.max(e.index);
                return ConfChangeOutcome { changes: Vec::new(), context: Bytes::new(), result: Err(err.to_string()) };
            }
        };
        let changes = cc.changes.iter().map(member_change).collect();
        let context = cc.context.clone();
        let result = if e.index <= self.conf_applied {
            // Applied at bootstrap or restart already.
            Ok(Membership::from_conf(&self.raw.store().conf_at(e.index)))
        } else {
            self.conf_applied = e.index;
            match self.raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    let m = Membership::from_conf(&cs);
                    self.raw.mut_store().record_conf(e.index, cs);
                    self.note_removal(&cc);
                    Ok(m)
                }
                Err(err) => Err(err.to_string()),
            }
        };
        ConfChangeOutcome { changes, context, result }
    }

    /// Notes whether an applied change removed this member.
    fn note_removal(&mut self, cc: &ConfChangeV2) {
        let removes_me =
            cc.changes.iter().any(|c| c.node_id == self.id.get() && c.get_change_type() == ConfChangeType::RemoveNode);
        if removes_me && self.raw.raft.prs().get(self.id.get()).is_none() {
            self.removed = true;
        }
    }

    /// Whether a committed conf change removed this member: it must stop
    /// (etcd: "the member has been permanently removed from the cluster").
    /// Every input is refused from then on and `ready()` has nothing.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    fn encode_all(&mut self, msgs: Vec<raft::eraftpb::Message>) -> Vec<Outbound> {
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            let class =
                if m.get_msg_type() == MessageType::MsgSnapshot { MessageClass::Snapshot } else { MessageClass::Raft };
            match wire::encode(&m) {
                Ok(bytes) => out.push(Outbound { to: MemberId(m.to), class, bytes }),
                // Raft tolerates a lost message; this never happens for
                // messages raft-rs builds.
                Err(_) => self.dropped_msgs += 1,
            }
        }
        out
    }

    /// raft-rs draws the election timeout from the thread's RNG whenever it
    /// resets (which always zeroes `election_elapsed`). Redrawing it from
    /// our seeded RNG whenever `election_elapsed` is zero replaces every
    /// such draw (and harmlessly redraws at the start of any quiet period),
    /// so a run is a function of its seed.
    fn rerandomize(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let span = self.election_tick as u64;
            let t = self.election_tick + self.rng.below(span) as usize;
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }
}

fn conf_change_v2(changes: &[MemberChange], context: &[u8]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.changes = changes
        .iter()
        .map(|c| {
            let mut s = ConfChangeSingle::default();
            s.set_change_type(match c.kind {
                ChangeKind::AddVoter => ConfChangeType::AddNode,
                ChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
                ChangeKind::Remove => ConfChangeType::RemoveNode,
            });
            s.node_id = c.member.get();
            s
        })
        .collect::<Vec<_>>()
        .into();
    cc.context = Bytes::copy_from_slice(context);
    cc
}

fn member_change(s: &ConfChangeSingle) -> MemberChange {
    let kind = match s.get_change_type() {
        ConfChangeType::AddNode => ChangeKind::AddVoter,
        ConfChangeType::AddLearnerNode => ChangeKind::AddLearner,
        ConfChangeType::RemoveNode => ChangeKind::Remove,
    };
    MemberChange { kind, member: MemberId(s.node_id) }
}

fn snapshot_meta(meta: &SnapshotMetadata, data: Bytes) -> SnapshotMeta {
    SnapshotMeta {
        index: RaftIndex(meta.index),
        term: Term(meta.term),
        membership: Membership::from_conf(meta.get_conf_state()),
        data,
    }
}

/// Builds the in-memory log from what was recovered, refusing what raft-rs
/// would panic on.
fn restore_store(boot: &Boot) -> Result<LogStore, RaftError> {
    let mut meta = SnapshotMetadata::default();
    let mut data = Bytes::new();
    if let Some(s) = &boot.snapshot {
        meta.index = s.index.get();
        meta.term = s.term.get();
        let cs = s.membership.to_conf();
        wire::check_conf_state(&cs).map_err(|e| RaftError::Recovery(format!("snapshot configuration: {e}")))?;
        meta.set_conf_state(cs);
        data = s.data.clone();
    }
    let entries: Vec<Entry> = boot
        .entries
        .iter()
        .filter(|e| e.index.get() > meta.index)
        .map(|e| LogEntry { index: e.index, term: e.term, kind: e.kind, data: Bytes::from(e.data.clone()) }.to_raft())
        .collect();
    if let Some(first) = entries.first() {
        if first.index != meta.index + 1 {
            return Err(RaftError::Recovery(format!(
                "the log resumes at {} after compaction point {}",
                first.index, meta.index
            )));
        }
    }
    let mut prev_term = meta.term;
    for e in &entries {
        if e.term < prev_term {
            return Err(RaftError::Recovery(format!("entry {} has term {} after term {prev_term}", e.index, e.term)));
        }
        prev_term = e.term;
    }
    let hs = &boot.hard_state;
    let last = meta.index + entries.len() as u64;
    let mut raft_hs = raft::eraftpb::HardState::default();
    raft_hs.term = hs.term.get().max(meta.term);
    raft_hs.vote = hs.vote.get();
    raft_hs.commit = hs.commit.get().max(meta.index);
    if raft_hs.commit > last {
        return Err(RaftError::Recovery(format!("commit index {} beyond the last entry {last}", raft_hs.commit)));
    }
    LogStore::restore(raft_hs, meta, data, entries).map_err(|e| RaftError::Recovery(e.to_string()))
}
