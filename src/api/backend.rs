//! What the etcd services need from the node: the boundary between `api`
//! (requests and replies) and `node` (the wiring of log, shards and
//! reactors). One implementation per reactor; nothing here is `Send`.

use std::time::Duration;

use crate::api::grpc::LocalBoxFuture;
use crate::apply::command::{Command, Range};
use crate::apply::range::RangeResult;
use crate::apply::{ApplyError, Outcome};
use crate::watch::{Out, Spec};

/// The result of a Range served by the shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The store's revision the read saw (etcd's header revision).
    pub revision: i64,
    /// The merged result.
    pub result: RangeResult,
}

/// Who this member is, for response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's ID.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
}

/// Figures for Maintenance.Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusInfo {
    /// The store's revision.
    pub revision: i64,
    /// Bytes the store holds (all shards).
    pub db_size: u64,
    /// Bytes in use (all shards).
    pub db_size_in_use: u64,
    /// Last log index.
    pub raft_index: u64,
    /// Last log index applied by every shard.
    pub raft_applied_index: u64,
    /// Current Raft term.
    pub raft_term: u64,
    /// The leader's member ID (0: none).
    pub leader: u64,
}

/// The node as the services see it.
pub trait Backend: 'static {
    /// Cluster and member ID.
    fn identity(&self) -> Identity;
    /// The current Raft term, for response headers.
    fn raft_term(&self) -> u64;
    /// Proposes a write and waits for its outcome (durable and applied).
    fn propose(&self, cmd: Command) -> LocalBoxFuture<'static, Outcome>;
    /// Serves a Range; `linearizable` waits for every write acknowledged
    /// before it.
    fn range(&self, req: Range, linearizable: bool) -> LocalBoxFuture<'static, Result<ReadResult, ApplyError>>;
    /// Status figures.
    fn status(&self) -> StatusInfo;
    /// Grants a lease (`id` 0: the node chooses) of at least `ttl` seconds.
    fn lease_grant(&self, id: i64, ttl: i64) -> LocalBoxFuture<'static, Result<LeaseGranted, ApplyError>>;
    /// Revokes a lease, deleting its keys.
    fn lease_revoke(&self, id: i64) -> LocalBoxFuture<'static, Outcome>;
    /// Renews a lease: its TTL, or `None` if it does not exist.
    fn lease_keep_alive(&self, id: i64) -> LocalBoxFuture<'static, Option<i64>>;
    /// A lease's TTLs (and keys, if asked), or `None` if it does not exist.
    fn lease_time_to_live(&self, id: i64, keys: bool) -> LocalBoxFuture<'static, Option<LeaseTtl>>;
    /// Every lease.
    fn lease_ids(&self) -> LocalBoxFuture<'static, Vec<i64>>;
    /// A new watch stream.
    fn watch_session(&self) -> Box<dyn WatchSession>;
    /// etcd's HashKV at `rev` (0: the current revision): the hash, the
    /// compaction revision and the current revision.
    fn hash_kv(&self, rev: i64) -> LocalBoxFuture<'static, Result<(u32, i64, i64), ApplyError>>;
    /// `--experimental-watch-progress-notify-interval`.
    fn progress_interval(&self) -> Duration;
    /// The cluster's members, by ID.
    fn members(&self) -> Vec<MemberInfo>;
    /// etcd's MoveLeader: hands leadership to `target` and waits until it
    /// leads.
    fn move_leader(&self, target: u64) -> LocalBoxFuture<'static, Result<(), ClusterError>>;
    /// etcd's MemberAdd, MemberRemove, MemberUpdate and MemberPromote:
    /// waits until the change is applied here, then answers with the
    /// member it concerns and every member after it.
    fn member_change(&self, req: MemberRequest) -> LocalBoxFuture<'static, Result<MemberChanged, ClusterError>>;
    /// Whether this member is a learner (etcd serves learners' clients only
    /// Status and serializable ranges).
    fn is_learner(&self) -> bool;
}

/// A membership change a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    /// MemberAdd.
    Add {
        /// Its peer URLs.
        peer_urls: Vec<String>,
        /// As a learner.
        learner: bool,
    },
    /// MemberRemove.
    Remove {
        /// The member.
        id: crate::types::MemberId,
    },
    /// MemberUpdate: new peer URLs.
    Update {
        /// The member.
        id: crate::types::MemberId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// MemberPromote: a learner becomes a voter.
    Promote {
        /// The member.
        id: crate::types::MemberId,
    },
}

/// A membership change as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChanged {
    /// The member the change concerned (for MemberAdd's reply).
    pub member: MemberInfo,
    /// Every member after the change.
    pub members: Vec<MemberInfo>,
}

/// One member, as MemberList shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its ID.
    pub id: u64,
    /// Its name; empty until it published its attributes.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs; empty until it published its attributes.
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// Why a cluster operation failed (etcd's errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// This member does not lead.
    NotLeader,
    /// The target is not a voting member.
    BadTransferee,
    /// The transfer did not finish within the request timeout.
    TransferTimeout,
    /// The node is shutting down.
    Stopped,
    /// No such member (or it was removed).
    MemberNotFound,
    /// A member with that ID exists.
    MemberExists,
    /// Another member has one of those peer URLs.
    PeerUrlExists,
    /// The peer URLs are not valid.
    BadUrls,
    /// Only a learner can be promoted.
    NotLearner,
    /// The learner's log is too far behind the leader's to promote it.
    LearnerNotReady,
    /// The cluster has as many learners as it may.
    TooManyLearners,
    /// No leader is known.
    NoLeader,
    /// The change did not apply within the request timeout.
    Timeout,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGranted {
    /// Its ID.
    pub id: i64,
    /// Its TTL, seconds (the minimum TTL if the request asked for less).
    pub ttl: i64,
    /// The store's revision.
    pub revision: i64,
}

/// What LeaseTimeToLive reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    /// TTL granted, seconds.
    pub granted: i64,
    /// Seconds left.
    pub remaining: i64,
    /// Attached keys, in key order (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// One Watch stream's view of the node's watches. Dropping it cancels
/// the stream's watches.
pub trait WatchSession {
    /// Creates a watch; the outcome comes out of [`WatchSession::next`].
    fn create(&self, spec: Spec) -> LocalBoxFuture<'static, ()>;
    /// Cancels a watch.
    fn cancel(&self, id: i64);
    /// etcd's RequestProgress.
    fn request_progress(&self);
    /// The progress-notification interval passed.
    fn progress_tick(&self);
    /// The next response to send.
    fn next(&self) -> LocalBoxFuture<'static, Out>;
}
