//! The messages reactors send each other.

use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::apply::command::{Item, Range};
use crate::apply::range::{RangePart, Shape};
use crate::apply::{ApplyError, Exchange, RangeMap, Reply};
use crate::mvcc::{Event, KeyHistory};
use crate::types::{RaftIndex, ReactorId, ShardId};

/// A log entry every shard applies, shared read-only between reactors.
#[derive(Debug)]
pub struct Committed {
    /// Its log index.
    pub index: RaftIndex,
    /// The encoded batch; empty for an entry with no commands.
    pub data: AlignedVec,
}

/// A Range (or the part of one) a shard serves.
#[derive(Clone, Debug)]
pub struct ReadReq {
    /// Request number on the asking reactor.
    pub seq: u64,
    /// The asking reactor.
    pub from: ReactorId,
    /// The keys; the shard reads the part it owns.
    pub key: Vec<u8>,
    /// etcd's `range_end`.
    pub range_end: Vec<u8>,
    /// Read at this revision; 0 for the shard's current one.
    pub rev: i64,
    /// Read at this revision, waiting until the shard has reached it (the
    /// second round of a read that spans shards).
    pub at_least: i64,
    /// Wait for every batch the shard has received before reading.
    pub linearizable: bool,
    /// Wait until the shard has applied this log index (a ReadIndex).
    pub min_index: RaftIndex,
    /// The range map version the reader routed with.
    pub map_version: u64,
    /// How to filter, sort and limit.
    pub shape: Shape,
}

impl ReadReq {
    /// A read of `r` from reactor `from`.
    pub fn of(r: &Range, seq: u64, from: ReactorId, linearizable: bool, map_version: u64) -> ReadReq {
        ReadReq {
            map_version,
            seq,
            from,
            key: r.key.clone(),
            range_end: r.range_end.clone(),
            rev: r.revision.max(0),
            at_least: 0,
            linearizable,
            min_index: RaftIndex(0),
            shape: Shape::of(r),
        }
    }
}

/// A shard's answer to a [`ReadReq`].
#[derive(Clone, Debug)]
pub struct ReadReply {
    /// The request number it answers.
    pub seq: u64,
    /// The shard's revision when it read.
    pub applied_rev: i64,
    /// Its part of the result.
    pub result: Result<RangePart, ReadError>,
}

/// Why a shard did not serve a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The request fails as etcd's would.
    Apply(ApplyError),
    /// History below this compaction revision is gone.
    Compacted(i64),
    /// The shard's range changed: the reader must route again with a map
    /// of at least this version.
    Moved(u64),
}

/// Everything that travels between reactors.
#[derive(Debug)]
pub enum Msg {
    /// A command for the sequencer.
    Propose(Item),
    /// A durable log entry for every shard.
    Committed(Arc<Committed>),
    /// A shard's counts (and barrier state) for a segment of a batch.
    Exchange(Exchange),
    /// A read for a shard.
    Read(ReadReq),
    /// A shard's read answer for the asking reactor.
    ReadDone(ReadReply),
    /// A shard's part of a command's reply for the origin reactor.
    Reply(Reply),
    /// Recovery is queued up to this index: serve clients once applied.
    Serve(RaftIndex),
    /// From the balancer: shards own these ranges from this point of the
    /// log on.
    Remap(Arc<RangeMap>),
    /// Key histories that move to the receiving shard with a remap.
    Transfer {
        /// The map version that moved them.
        version: u64,
        /// The keys with all their versions.
        histories: Vec<KeyHistory>,
    },
    /// A question for another reactor; the answer comes back as `Answer`.
    Ask {
        /// Request number on the asking reactor.
        seq: u64,
        /// The asking reactor.
        from: ReactorId,
        /// The question.
        q: Query,
    },
    /// The answer to an `Ask`.
    Answer {
        /// The request number it answers.
        seq: u64,
        /// The answer.
        a: Answer,
    },
    /// A shard's changes of one applied batch for a reactor with watches,
    /// and the shard's revision after the batch.
    WatchFeed {
        /// The shard.
        shard: ShardId,
        /// Its revision after the batch.
        upto: i64,
        /// The batch's changes to its keys, in revision order.
        events: Arc<Vec<Event>>,
    },
    /// A shard's state was replaced by a snapshot's at revision `upto`:
    /// the reactor's watches catch up from the store past the gap.
    WatchResync {
        /// The shard.
        shard: ShardId,
        /// Its revision after the install.
        upto: i64,
    },
    /// To every shard: write your part of a snapshot.
    Snapshot(Arc<super::snapshots::SnapJob>),
    /// To every shard: replace your state with a snapshot's.
    Install(Arc<super::snapshots::Install>),
    /// To the consensus reactor: a shard prepared its checkpoint (and
    /// wrote its part) of a snapshot.
    SnapshotPart(super::snapshots::PartDone),
    /// To every shard: the snapshot at this index is durable, commit your
    /// checkpoint.
    CheckpointCommit(u64),
    /// To the consensus reactor: a shard committed its checkpoint.
    CheckpointCommitted(u64),
    /// A reactor has no watches left: stop feeding it.
    WatchLeave {
        /// The reactor.
        from: ReactorId,
    },
}

/// Questions reactors ask each other.
#[derive(Clone, Debug)]
pub enum Query {
    /// Balancer to a shard: the key `n` live keys from one of its edges.
    SplitKey {
        /// How many keys to count.
        n: u64,
        /// Count from the high end.
        from_high: bool,
    },
    /// Watch hub to a shard: the changes of a range in a revision window.
    History {
        /// First key.
        key: Vec<u8>,
        /// etcd's `range_end` for the range.
        range_end: Vec<u8>,
        /// First revision.
        from: i64,
        /// Last revision.
        to: i64,
        /// The range map version the hub routed with.
        map_version: u64,
    },
    /// Watch hub to a shard: feed me from now on.
    WatchJoin,
    /// To the lessor: renew a lease.
    LeaseKeepAlive {
        /// The lease.
        id: i64,
    },
    /// To the lessor: a lease's granted and remaining TTL.
    LeaseTimeToLive {
        /// The lease.
        id: i64,
    },
    /// To the lessor: every lease.
    LeaseIds,
    /// To a shard: its keys attached to a lease.
    LeaseKeys {
        /// The lease.
        id: i64,
    },
    /// To the consensus reactor: a ReadIndex for a linearizable read.
    ReadIndex,
    /// To a shard: continue the HashKV CRC over your keys at `rev` (once
    /// applied up to it).
    HashKv {
        /// The revision.
        rev: i64,
        /// The CRC so far (of the shards before).
        crc: u32,
    },
    /// To the consensus reactor: etcd's MoveLeader.
    MoveLeader {
        /// The member to lead.
        target: u64,
    },
    /// To the consensus reactor: a membership change.
    Member(crate::api::backend::MemberRequest),
}

/// Answers to [`Query`]s, in the same order of kinds.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The split key, if the shard has enough keys.
    SplitKey(Option<Vec<u8>>),
    /// The changes, or why not.
    History(Result<Vec<Event>, ReadError>),
    /// The shard feeds the asker from its revision `rev` on.
    Joined {
        /// The shard.
        shard: ShardId,
        /// Its revision when it joined.
        rev: i64,
    },
    /// The renewed lease's TTL, or `None` if it does not exist.
    Ttl(Option<i64>),
    /// Granted and remaining TTL, or `None` if the lease does not exist.
    TimeToLive(Option<(i64, i64)>),
    /// Lease IDs.
    Ids(Vec<i64>),
    /// Keys, in key order.
    Keys(Vec<Vec<u8>>),
    /// The commit index a linearizable read waits for, or why none.
    ReadIndex(Result<RaftIndex, ApplyError>),
    /// The HashKV CRC so far.
    Hash(u32),
    /// MoveLeader's outcome.
    Moved(Result<(), crate::api::backend::ClusterError>),
    /// A membership change's outcome.
    Member(Result<crate::api::backend::MemberChanged, crate::api::backend::ClusterError>),
}
