//! The messages reactors send each other.

use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::apply::command::{Item, Range};
use crate::apply::range::{RangePart, Shape};
use crate::apply::{ApplyError, Exchange, RangeMap, Reply};
use crate::mvcc::KeyHistory;
use crate::types::{RaftIndex, ReactorId};

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
    /// From the balancer: which key is `n` live keys from an edge of the
    /// receiving shard?
    SplitQuery {
        /// Request number on the balancer's reactor.
        seq: u64,
        /// How many keys to count.
        n: u64,
        /// Count from the high end.
        from_high: bool,
    },
    /// The answer to a `SplitQuery`.
    SplitKey {
        /// The request number it answers.
        seq: u64,
        /// The key, if the shard has enough.
        key: Option<Vec<u8>>,
    },
}
